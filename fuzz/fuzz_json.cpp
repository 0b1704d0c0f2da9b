// libFuzzer target for the I-JSON parser and the JCS serialiser (protocol §1, RFC 8785).
//
// Any input: parse_ijson must return a value or an error, never crash, hang or leak. Accepted
// input: its canonical form must be accepted too and canonicalise to the same bytes (JCS is a
// fixed point), which checks escaping, member order and number formatting against the parser.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent_mesh/json.hpp"

namespace {

// A control frame's bound (protocol §3): large enough for every interesting structure, small
// enough to keep executions fast.
constexpr std::size_t kMaxInputBytes = 64 * 1024;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const agent_mesh::json::ParseOptions options{.max_bytes = kMaxInputBytes};
  auto parsed = agent_mesh::json::parse_ijson(text, options);
  if (!parsed.ok()) return 0;

  const std::string canonical = agent_mesh::json::serialize_jcs(*parsed);
  // Canonical text can be longer than the input ("1e-6" becomes "0.000001"), so its own length
  // is the bound.
  auto reparsed = agent_mesh::json::parse_ijson(canonical, {.max_bytes = canonical.size()});
  if (!reparsed.ok()) __builtin_trap();
  if (agent_mesh::json::serialize_jcs(*reparsed) != canonical) __builtin_trap();
  return 0;
}
