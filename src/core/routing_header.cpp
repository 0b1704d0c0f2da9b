// scan_routing_header: one SAX pass over an envelope frame (protocol §6 "Routing checks").
//
// The handler below applies parse_ijson's number rules (json_numbers.hpp) but keeps nothing of the document
// except the few top-level strings the relay routes by, held in fixed buffers: a typical envelope is
// scanned without a single allocation.
#include "agent_mesh/routing_header.hpp"

#include <boost/json/basic_parser_impl.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "agent_mesh/json.hpp"
#include "json_fields.hpp"
#include "json_numbers.hpp"

namespace agent_mesh {
namespace {

namespace bj = boost::json;

// The top-level members of an envelope (§3), plus `type`, whose presence makes a control frame.
// The first five are captured; the others only count for duplicate detection.
enum class Member : std::uint8_t {
  id,
  from,
  to,
  msg_type,
  in_reply_to,
  type,
  timestamp,
  encrypted,
  sid,
  n,
  payload,
  signature,
  other,
};
constexpr std::array<std::string_view, 12> kMemberNames{
    "id", "from", "to", "msg_type", "in_reply_to", "type", "timestamp", "encrypted", "sid", "n", "payload", "signature"};
constexpr std::size_t kCapturedMembers = 5;

Member member_named(std::string_view name) noexcept {
  for (std::size_t i = 0; i < kMemberNames.size(); ++i) {
    if (kMemberNames[i] == name) return static_cast<Member>(i);
  }
  return Member::other;
}

// Hostile text quoted in a message: clipped, then JSON-escaped so it cannot forge log lines.
std::string quote(std::string_view hostile) {
  return json::serialize_jcs(bj::value(bj::string_view(detail::clip(hostile))));
}

// The value of a captured member. The longest valid one is an agent ID (43 characters); a longer
// value is invalid whatever it holds, so only its length is remembered.
class CapturedString {
 public:
  enum class State : std::uint8_t { absent, string, not_string };

  void append(bj::string_view part) noexcept {
    if (too_long_ || part.size() > text_.size() - size_) {
      too_long_ = true;
      return;
    }
    std::copy(part.begin(), part.end(), text_.begin() + static_cast<std::ptrdiff_t>(size_));
    size_ += part.size();
  }
  void set_state(State state) noexcept { state_ = state; }
  [[nodiscard]] State state() const noexcept { return state_; }
  [[nodiscard]] bool too_long() const noexcept { return too_long_; }
  [[nodiscard]] std::string_view text() const noexcept { return {text_.data(), size_}; }

 private:
  std::array<char, 64> text_{};
  std::size_t size_ = 0;
  bool too_long_ = false;
  State state_ = State::absent;
};

class RoutingHeaderHandler {
 public:
  static constexpr std::size_t max_object_size = bj::object::max_size();
  static constexpr std::size_t max_array_size = bj::array::max_size();
  static constexpr std::size_t max_key_size = bj::string::max_size();
  static constexpr std::size_t max_string_size = bj::string::max_size();

  explicit RoutingHeaderHandler(std::string_view input) : input_(input) {}

  [[nodiscard]] bool not_an_object() const noexcept { return not_an_object_; }
  [[nodiscard]] const std::string& rejection() const noexcept { return rejection_; }
  [[nodiscard]] const CapturedString& captured(Member member) const noexcept {
    return captured_[static_cast<std::size_t>(member)];
  }
  [[nodiscard]] bool has(Member member) const noexcept {
    return (seen_ & (1u << static_cast<unsigned>(member))) != 0;
  }

  // Member names outside kMemberNames are rare (receivers reject them, §3) but legal JSON; a
  // duplicate among them is found here, after the pass. A hostile frame can hold ~100,000 of them:
  // sorting those took 3× the parse itself, so they go into a hash table keyed with the process's
  // secret SipHash key (keyed_hash), which no sender can steer into collisions.
  [[nodiscard]] std::optional<std::string_view> duplicate_other_name() {
    std::vector<std::string_view> names = other_names_;
    for (const std::string& name : owned_other_names_) names.push_back(name);
    if (names.size() < 2) return std::nullopt;
    std::size_t capacity = 16;
    while (capacity < 2 * names.size()) capacity *= 2;
    // Slot value: 1 + index into `names`, 0 for empty. Linear probing; at most half full.
    std::vector<std::uint32_t> slots(capacity, 0);
    for (std::size_t i = 0; i < names.size(); ++i) {
      std::size_t slot = keyed_hash(as_bytes(names[i])) & (capacity - 1);
      while (slots[slot] != 0) {
        if (names[slots[slot] - 1] == names[i]) return names[i];
        slot = (slot + 1) & (capacity - 1);
      }
      slots[slot] = static_cast<std::uint32_t>(i + 1);
    }
    return std::nullopt;
  }

  bool on_document_begin(bj::error_code&) { return true; }
  bool on_document_end(bj::error_code&) { return true; }

  bool on_object_begin(bj::error_code&) {
    if (depth_ == 1) mark_not_string();
    ++depth_;
    return true;
  }
  bool on_object_end(std::size_t, bj::error_code&) {
    --depth_;
    return true;
  }
  bool on_array_begin(bj::error_code& ec) {
    if (depth_ == 0) return stop_not_object(ec);
    if (depth_ == 1) mark_not_string();
    ++depth_;
    return true;
  }
  bool on_array_end(std::size_t, bj::error_code&) {
    --depth_;
    return true;
  }

  bool on_key_part(bj::string_view part, std::size_t, bj::error_code&) {
    if (depth_ == 1) key_.append(part.data(), part.size());
    return true;
  }
  bool on_key(bj::string_view last_part, std::size_t, bj::error_code& ec) {
    if (depth_ != 1) return true;
    std::string_view name(last_part.data(), last_part.size());
    // In one piece and inside the input: Boost passes unescaped names as views of the input, which
    // outlive the pass; escaped ones come from its scratch buffer and are copied.
    const bool view_of_input = key_.empty() && std::less_equal<const char*>()(input_.data(), name.data()) &&
                               std::less_equal<const char*>()(name.data() + name.size(), input_.data() + input_.size());
    if (!key_.empty()) {
      key_.append(name);
      name = key_;
    }
    current_ = member_named(name);
    if (current_ == Member::other) {
      if (view_of_input) {
        other_names_.push_back(name);
      } else {
        owned_other_names_.emplace_back(name);
      }
    } else {
      const unsigned bit = 1u << static_cast<unsigned>(current_);
      if ((seen_ & bit) != 0) {
        rejection_ = "envelope: duplicate member " + quote(name) + " (I-JSON)";
        return stop(ec);
      }
      seen_ |= bit;
    }
    key_.clear();
    return true;
  }

  bool on_string_part(bj::string_view part, std::size_t, bj::error_code&) {
    if (depth_ == 1 && is_captured(current_)) captured_[index(current_)].append(part);
    return true;
  }
  bool on_string(bj::string_view last_part, std::size_t, bj::error_code& ec) {
    if (depth_ == 0) return stop_not_object(ec);
    if (depth_ == 1 && is_captured(current_)) {
      CapturedString& value = captured_[index(current_)];
      value.append(last_part);
      value.set_state(CapturedString::State::string);
    }
    return true;
  }

  // Numbers: the rules of parse_ijson (protocol §1), applied at every depth because the relay
  // forwards the payload too, and a receiver must never be handed what it has to reject as JSON.
  bool on_number_part(bj::string_view part, bj::error_code&) {
    number_.append_part(part);
    return true;
  }
  bool on_int64(std::int64_t value, bj::string_view text, bj::error_code& ec) {
    if (!detail::is_safe_integer(value)) return reject_unsafe_integer(text, ec);
    return scalar(ec);
  }
  // Boost makes a uint64 only above INT64_MAX: always beyond 2^53−1.
  bool on_uint64(std::uint64_t, bj::string_view text, bj::error_code& ec) { return reject_unsafe_integer(text, ec); }
  bool on_double(double boost_value, bj::string_view last_part, bj::error_code& ec) {
    const detail::CheckedDouble number = number_.check_double(boost_value, last_part);
    switch (number.verdict) {
      case detail::NumberVerdict::ok: break;
      case detail::NumberVerdict::unsafe_integer: return reject_unsafe_integer(number.text, ec);
      case detail::NumberVerdict::does_not_fit_double:
        rejection_ = "envelope: number " + quote(number.text) + " does not fit a double (I-JSON)";
        return stop(ec);
      case detail::NumberVerdict::integer_in_jcs_form:
        rejection_ = "envelope: number " + quote(number.text) +
                     " is an integer outside +/-(2^53-1) in canonical (JCS) form (protocol section 1)";
        return stop(ec);
    }
    return scalar(ec);
  }
  bool on_bool(bool, bj::error_code& ec) { return scalar(ec); }
  bool on_null(bj::error_code& ec) { return scalar(ec); }
  bool on_comment_part(bj::string_view, bj::error_code&) { return true; }
  bool on_comment(bj::string_view, bj::error_code&) { return true; }

 private:
  static bool is_captured(Member member) noexcept { return static_cast<std::size_t>(member) < kCapturedMembers; }
  static std::size_t index(Member member) noexcept { return static_cast<std::size_t>(member); }

  void mark_not_string() noexcept {
    if (is_captured(current_)) captured_[index(current_)].set_state(CapturedString::State::not_string);
  }
  bool scalar(bj::error_code& ec) {
    number_.clear();
    if (depth_ == 0) return stop_not_object(ec);
    if (depth_ == 1) mark_not_string();
    return true;
  }
  bool reject_unsafe_integer(std::string_view text, bj::error_code& ec) {
    rejection_ = "envelope: integer " + quote(text) + " is outside the I-JSON safe range +/-(2^53-1) (protocol section 1)";
    return stop(ec);
  }
  // A top-level value that is not an object: stop at once, there is nothing to route.
  bool stop_not_object(bj::error_code& ec) {
    not_an_object_ = true;
    return stop(ec);
  }
  // The parser stops when a handler returns false; it wants some error code, the message is ours.
  static bool stop(bj::error_code& ec) {
    ec = bj::error::syntax;
    return false;
  }

  std::string_view input_;
  std::size_t depth_ = 0;
  Member current_ = Member::other;
  unsigned seen_ = 0;
  std::array<CapturedString, kCapturedMembers> captured_{};
  std::string key_;
  std::vector<std::string_view> other_names_;
  std::vector<std::string> owned_other_names_;
  detail::NumberText number_;
  std::string rejection_;
  bool not_an_object_ = false;
};

Error bad_envelope(std::string message) { return fail(Errc::bad_envelope, std::move(message)); }

// A captured member that must be a string.
Result<std::string_view> required_string(const RoutingHeaderHandler& handler, Member member) {
  const std::string_view name = kMemberNames[static_cast<std::size_t>(member)];
  const CapturedString& value = handler.captured(member);
  switch (value.state()) {
    case CapturedString::State::absent:
      return bad_envelope("envelope: missing member \"" + std::string(name) + "\"");
    case CapturedString::State::not_string:
      return bad_envelope("envelope: " + std::string(name) + " must be a string");
    case CapturedString::State::string: break;
  }
  if (value.too_long()) return bad_envelope("envelope: " + std::string(name) + " is too long to be valid");
  return value.text();
}

Result<Uuid> uuid_member(const RoutingHeaderHandler& handler, Member member) {
  auto text = required_string(handler, member);
  if (!text) return std::move(text).error();
  auto id = Uuid::parse(*text);
  if (!id) {
    return bad_envelope("envelope: " + std::string(kMemberNames[static_cast<std::size_t>(member)]) + ": " +
                        id.error().message);
  }
  return id;
}

Result<AgentId> agent_member(const RoutingHeaderHandler& handler, Member member, const AgentIdResolver& resolve) {
  auto text = required_string(handler, member);
  if (!text) return std::move(text).error();
  auto id = resolve ? resolve(*text) : AgentId::parse(*text);
  if (!id) {
    return bad_envelope("envelope: " + std::string(kMemberNames[static_cast<std::size_t>(member)]) + ": " +
                        id.error().message);
  }
  return id;
}

std::string describe_json_error(std::string_view frame, std::size_t offset, const bj::error_code& ec) {
  const std::string at = " at byte " + std::to_string(offset);
  if (ec == bj::error::incomplete) return "envelope: invalid JSON: unexpected end of input" + at;
  if (ec == bj::error::too_deep) {
    return "envelope: invalid JSON: nesting deeper than " + std::to_string(limits::max_json_depth) + " levels" + at;
  }
  if (ec == bj::error::extra_data) return "envelope: invalid JSON: unexpected content after the object" + at;
  if (offset < frame.size() && static_cast<unsigned char>(frame[offset]) >= 0x80) {
    return "envelope: invalid JSON: invalid UTF-8" + at;
  }
  return "envelope: invalid JSON: " + ec.message() + at;
}

}  // namespace

Result<RoutingHeader> scan_routing_header(std::string_view frame, std::size_t max_bytes, std::optional<Uuid>* rejected_id,
                                          const AgentIdResolver& resolve) {
  if (rejected_id != nullptr) rejected_id->reset();
  if (frame.size() > max_bytes) {
    return fail(Errc::too_large, "envelope of " + std::to_string(frame.size()) + " bytes exceeds the limit of " +
                                     std::to_string(max_bytes) + " bytes");
  }
  // Strict RFC 8259 (no comments, no trailing commas, UTF-8 validated), parse_ijson's depth bound.
  bj::parse_options options;
  options.max_depth = limits::max_json_depth;
  bj::basic_parser<RoutingHeaderHandler> parser(options, frame);
  bj::error_code ec;
  const std::size_t consumed = parser.write_some(false, frame.data(), frame.size(), ec);
  if (!ec && consumed != frame.size()) ec = bj::error::extra_data;
  RoutingHeaderHandler& scan = parser.handler();
  if (ec) {
    if (scan.not_an_object()) return bad_envelope("envelope must be a JSON object");
    if (!scan.rejection().empty()) return bad_envelope(scan.rejection());
    return bad_envelope(describe_json_error(frame, consumed, ec));
  }

  if (scan.has(Member::type)) {
    return bad_envelope("envelope: has a \"type\" member, which makes it a control frame (protocol section 6)");
  }
  RoutingHeader header;
  auto id = uuid_member(scan, Member::id);
  if (!id) return std::move(id).error();
  header.id = *id;
  if (rejected_id != nullptr) *rejected_id = header.id;

  if (const auto duplicate = scan.duplicate_other_name()) {
    return bad_envelope("envelope: duplicate member " + quote(*duplicate) + " (I-JSON)");
  }

  auto type_text = required_string(scan, Member::msg_type);
  if (!type_text) return std::move(type_text).error();
  const auto type = msg_type_from_string(*type_text);
  if (!type) return bad_envelope("envelope: unknown msg_type " + quote(*type_text));
  header.msg_type = *type;

  if (scan.captured(Member::in_reply_to).state() != CapturedString::State::absent) {
    auto reply_to = uuid_member(scan, Member::in_reply_to);
    if (!reply_to) return std::move(reply_to).error();
    header.in_reply_to = *reply_to;
  }

  // Last: each agent ID costs a curve point validation unless the resolver knows it.
  auto from = agent_member(scan, Member::from, resolve);
  if (!from) return std::move(from).error();
  header.from = std::move(from).value();
  auto to = agent_member(scan, Member::to, resolve);
  if (!to) return std::move(to).error();
  header.to = std::move(to).value();
  return header;
}

}  // namespace agent_mesh
