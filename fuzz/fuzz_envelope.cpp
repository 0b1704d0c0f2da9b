// Fuzzes envelope parsing (protocol §3) and §4 body parsing with a 64 KiB bound. Invariant: an
// accepted envelope serialises to a frame that parses again to the same signing input and
// associated data.
#include <cstdint>
#include <string_view>

#include "agent_mesh/envelope.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view frame(reinterpret_cast<const char*>(data), size);
  auto envelope = agent_mesh::Envelope::parse(frame, 64 * 1024);
  if (!envelope.ok()) return 0;
  auto again = agent_mesh::Envelope::parse(envelope->serialize(), 1 << 20);
  if (!again.ok()) __builtin_trap();
  if (again->signing_input() != envelope->signing_input()) __builtin_trap();
  if (again->associated_data() != envelope->associated_data()) __builtin_trap();
  if (!envelope->encrypted && envelope->msg_type != agent_mesh::MsgType::handshake) {
    (void)agent_mesh::parse_body(envelope->msg_type, envelope->payload);
  }
  (void)envelope->verify();
  return 0;
}
