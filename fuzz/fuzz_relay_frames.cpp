// Fuzzes what a relay connection reads (protocol §6): classify_frame, the control-frame parsers and
// scan_routing_header, on the same input. Invariants:
//   - an accepted control frame serialises to text that parses again to the same frame, with the
//     same text, and that classify_frame calls a control frame;
//   - the directional parsers and parse_hello agree with parse_control_frame;
//   - on input that is I-JSON, classify_frame and scan_routing_header agree with the same checks
//     made on the parsed document (the DOM is the reference the shallow scans must match).
#include <cstdint>
#include <string_view>

#include <boost/json/value.hpp>

#include "agent_mesh/json.hpp"
#include "agent_mesh/relay_protocol.hpp"
#include "agent_mesh/routing_header.hpp"

namespace {

using namespace agent_mesh;

constexpr std::size_t kMaxBytes = 64 * 1024;

void check_round_trip(const Result<ControlFrame>& frame, const Result<ControlFrame>& any) {
  if (!frame.ok()) return;
  if (!any.ok() || !(*any == *frame)) __builtin_trap();
  const std::string text = serialize(*frame);
  auto again = parse_control_frame(text, 1 << 20);
  if (!again.ok() || !(*again == *frame)) __builtin_trap();
  if (serialize(*again) != text) __builtin_trap();
  auto kind = classify_frame(text);
  if (!kind.ok() || *kind != FrameKind::control) __builtin_trap();
}

// The routing checks of §6 made on a parsed document.
bool passes_routing_on_dom(const boost::json::object& object) {
  if (object.contains("type")) return false;
  const auto string_member = [&object](std::string_view name) -> const boost::json::string* {
    const boost::json::value* value = object.if_contains(name);
    return value != nullptr && value->is_string() ? &value->get_string() : nullptr;
  };
  const auto* id = string_member("id");
  const auto* msg_type = string_member("msg_type");
  const auto* from = string_member("from");
  const auto* to = string_member("to");
  if (id == nullptr || msg_type == nullptr || from == nullptr || to == nullptr) return false;
  if (!Uuid::is_valid(*id) || !msg_type_from_string(*msg_type)) return false;
  if (object.contains("in_reply_to")) {
    const auto* reply_to = string_member("in_reply_to");
    if (reply_to == nullptr || !Uuid::is_valid(*reply_to)) return false;
  }
  return AgentId::parse(*from).ok() && AgentId::parse(*to).ok();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  auto any = parse_control_frame(text, kMaxBytes);
  check_round_trip(any, any);
  check_round_trip(parse_client_frame(text, kMaxBytes), any);
  check_round_trip(parse_relay_frame(text, kMaxBytes), any);

  auto hello = parse_hello(text, kMaxBytes);
  auto from_client = parse_client_frame(text, kMaxBytes);
  if (hello.ok()) {
    if (!from_client.ok() || !(std::get<Hello>(*from_client) == *hello)) __builtin_trap();
  } else if (from_client.ok() && std::holds_alternative<Hello>(*from_client)) {
    __builtin_trap();
  }

  auto kind = classify_frame(text);
  std::optional<Uuid> rejected_id;
  auto header = scan_routing_header(text, kMaxBytes, &rejected_id);
  if (header.ok() && (!rejected_id || *rejected_id != header->id)) __builtin_trap();

  auto dom = json::parse_ijson(text, {.max_bytes = kMaxBytes});
  if (!dom.ok()) {
    // Whatever the DOM parser refuses at the top level, the control-frame parsers refuse too.
    if (any.ok() || hello.ok()) __builtin_trap();
    return 0;
  }
  if (!dom->is_object()) {
    if (kind.ok() || header.ok()) __builtin_trap();
    return 0;
  }
  const boost::json::object& object = dom->get_object();
  const bool has_type = object.contains("type");
  const bool has_msg_type = object.contains("msg_type");
  if (has_type == has_msg_type) {
    if (kind.ok()) __builtin_trap();
  } else if (!kind.ok() || (*kind == FrameKind::control) != has_type) {
    __builtin_trap();
  }
  if (header.ok() != passes_routing_on_dom(object)) __builtin_trap();
  if (header.ok()) {
    if (header->id.to_string() != object.at("id").get_string()) __builtin_trap();
    if (header->from.str() != object.at("from").get_string()) __builtin_trap();
    if (header->to.str() != object.at("to").get_string()) __builtin_trap();
    if (to_string(header->msg_type) != object.at("msg_type").get_string()) __builtin_trap();
  }
  return 0;
}
