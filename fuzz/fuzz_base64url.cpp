// Fuzzes the canonical base64url decoder: anything accepted must re-encode to the same text
// (exactly one text form per byte string, protocol §1), and decode_exact must agree with decode.
#include <cstdint>
#include <cstring>
#include <string_view>

#include "agent_mesh/encoding.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto decoded = agent_mesh::base64url_decode(text);
  if (decoded.ok()) {
    if (agent_mesh::base64url_encode(*decoded) != text) __builtin_trap();
    agent_mesh::Bytes exact(decoded->size());
    if (!agent_mesh::base64url_decode_exact(text, exact).ok() || exact != *decoded) __builtin_trap();
  }
  auto uuid = agent_mesh::Uuid::parse(text);
  if (uuid.ok() && uuid->to_string() != text) __builtin_trap();
  auto hex = agent_mesh::hex_decode(text);
  if (hex.ok() && agent_mesh::hex_decode(agent_mesh::hex_encode(*hex)).value() != *hex) __builtin_trap();
  return 0;
}
