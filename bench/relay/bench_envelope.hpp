// The traffic of the relay benchmarks: encrypted envelopes (protocol §3) as a Noise session would
// produce them, without the cryptography. The relay never decrypts a payload (it forwards the frame's
// bytes unchanged), so random bytes of the ciphertext's length cost it exactly what a real AEAD
// output costs; leaving Noise out keeps the load generator's CPU for the relay on a 2-core machine.
// The same text travels through NATS, so both targets carry identical bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/identity.hpp"

namespace agent_mesh::bench {

std::int64_t wall_ms() noexcept;
std::uint64_t steady_ns() noexcept;

// One direction of one session between two agents: builds the frames that `from` sends to `to`.
class EnvelopeWriter {
 public:
  // `payload_bytes` random bytes become the base64url `payload` (a fresh draw per writer; the
  // relay's cost does not depend on the bytes, only on their length).
  EnvelopeWriter(const AgentId& from, const AgentId& to, std::size_t payload_bytes);

  // A `request` envelope with a fresh UUID v4; `id_out` receives its id (36 characters).
  std::string request(std::string& id_out);
  // The reply to `request_id`: msg_type `response`, `in_reply_to` set, the same payload size.
  std::string response(std::string_view request_id);

 private:
  std::string build(std::string_view msg_type, std::string_view id, std::string_view in_reply_to);

  std::string from_;
  std::string to_;
  std::string sid_;
  std::string payload_;
  std::uint64_t counter_ = 0;  // the Noise counter `n`: one per payload, as §5 requires
};

// The `id` of an envelope frame built by EnvelopeWriter (a string search: the members are in JCS
// order and no other member value contains `"id":"`). Empty if absent.
std::string_view envelope_id(std::string_view frame) noexcept;
// The `in_reply_to` of such a frame, empty if absent.
std::string_view envelope_in_reply_to(std::string_view frame) noexcept;

// Checks once, before a run, that what EnvelopeWriter builds is an envelope every receiver accepts
// (Envelope::parse: §3 structure, per-msg_type rules) and that the relay's routing scan reads it.
// Returns an empty string on success, or what is wrong.
std::string self_check_envelopes();

}  // namespace agent_mesh::bench
