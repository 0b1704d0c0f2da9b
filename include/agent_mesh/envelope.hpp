// The envelope (protocol §3) and the §4/§5 objects carried in its payload.
//
// Receiving is a pipeline of pure steps, each returning a specific Error:
//   Envelope::parse            structure, types, IDs, per-msg_type rules (§3, §5 handshake payload)
//   check_addressed_to         `to` is the receiver's own ID
//   Envelope::verify           signature of signed envelopes (purpose `envelope`)
//   FreshnessPolicy::check     clock window for signed envelopes (time passed in)
//   ReplayCache::remember      duplicate IDs of signed envelopes per sender
// `receive_envelope` runs them all in that order.
#pragma once

#include <array>
#include <boost/json/value.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "agent_mesh/bytes.hpp"
#include "agent_mesh/encoding.hpp"
#include "agent_mesh/identity.hpp"
#include "agent_mesh/limits.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh {

class ReplayCache;

enum class MsgType : std::uint8_t {
  request,
  stream_request,
  response,
  error,
  stream_chunk,
  stream_end,
  cancel,
  handshake,
};

[[nodiscard]] std::string_view to_string(MsgType type) noexcept;
[[nodiscard]] std::optional<MsgType> msg_type_from_string(std::string_view text) noexcept;
// response, error, stream_chunk, stream_end: they answer a request.
[[nodiscard]] bool is_reply(MsgType type) noexcept;

using SessionId = std::array<std::uint8_t, limits::sid_bytes>;

// The §5 handshake object in a handshake envelope's payload.
struct HandshakePayload {
  int step = 1;  // 1 or 2
  Bytes noise;
  friend bool operator==(const HandshakePayload&, const HandshakePayload&) = default;
};

struct Envelope {
  Uuid id;
  AgentId from;
  AgentId to;
  MsgType msg_type = MsgType::request;
  std::optional<Uuid> in_reply_to;
  std::int64_t timestamp = 0;
  // Encrypted envelopes: sid and n are set, `ciphertext` holds the payload, `payload` is unused.
  bool encrypted = false;
  std::optional<SessionId> sid;
  std::optional<std::uint64_t> n;
  Bytes ciphertext;
  // Plaintext and handshake envelopes: the payload JSON (a §4 body or the §5 handshake object).
  boost::json::value payload;
  std::optional<Signature> signature;

  // Parses and validates one envelope frame (protocol §3): I-JSON within `max_bytes`, no unknown
  // members, every field well-typed and canonical, the per-msg_type rules for in_reply_to,
  // encrypted/sid/n and signature, and for handshakes the §5 payload object. Does not check `to`,
  // the signature or the clock.
  [[nodiscard]] static Result<Envelope> parse(std::string_view frame,
                                              std::size_t max_bytes = limits::default_max_envelope_bytes);

  // True for plaintext and handshake envelopes, which carry a signature (§3).
  [[nodiscard]] bool is_signed() const noexcept { return !encrypted; }

  // The envelope as a JSON object. `with_payload`/`with_signature` let callers build the signing
  // input and the AEAD associated data from the same code.
  [[nodiscard]] boost::json::object to_json(bool with_payload = true, bool with_signature = true) const;
  // The frame text (JCS form, which is also valid I-JSON).
  [[nodiscard]] std::string serialize() const;
  // JCS of the envelope without `signature`: the message the signature covers (§1).
  [[nodiscard]] std::string signing_input() const;
  // JCS of the envelope without `payload` and `signature`: the Noise AEAD associated data (§5).
  [[nodiscard]] std::string associated_data() const;

  // Sets `signature` (purpose `envelope`). Precondition: a signed kind and key.agent_id() == from.
  void sign(const KeyPair& key);
  // Verifies the signature of a signed envelope against `from`.
  [[nodiscard]] Status verify() const;
  // The handshake payload of a handshake envelope.
  [[nodiscard]] Result<HandshakePayload> handshake_payload() const;
};

// `to` must be the receiver's own ID (§3). Error: bad_request.
[[nodiscard]] Status check_addressed_to(const Envelope& envelope, const AgentId& self);

// The clock window for signed envelopes (§3). Encrypted envelopes are not checked against the
// clock: the Noise counter window protects them.
struct FreshnessPolicy {
  std::int64_t max_future_ms = limits::default_max_future_ms;
  std::int64_t max_age_ms = limits::default_max_age_ms;
  // Error: Errc::expired, saying whether the envelope is too old or too far in the future.
  [[nodiscard]] Status check(const Envelope& envelope, std::int64_t now_ms) const;
};

// Everything a receiver checks (§3) before acting on a frame, in order: parse, addressed to `self`,
// signature, freshness, replay. Only a fully verified envelope is remembered in `replay`.
[[nodiscard]] Result<Envelope> receive_envelope(std::string_view frame, const AgentId& self,
                                                std::int64_t now_ms, const FreshnessPolicy& freshness,
                                                ReplayCache& replay,
                                                std::size_t max_bytes = limits::default_max_envelope_bytes);

// ---- §4 bodies ----

// Capability names match [A-Za-z0-9_-]{1,54}.
[[nodiscard]] bool is_valid_capability_name(std::string_view name) noexcept;

struct RequestBody {
  std::string capability;
  boost::json::value body;
  std::optional<std::int64_t> timeout_ms;
};
struct ResponseBody {
  boost::json::value body;
};
struct ErrorBody {
  Errc code = Errc::internal;
  std::string message;
  std::optional<std::int64_t> retry_after_ms;
};
struct StreamChunkBody {
  std::int64_t seq = 0;
  boost::json::value body;
};
struct StreamEndBody {
  std::int64_t seq = 0;  // the number of chunks sent
};
struct CancelBody {};

using Body = std::variant<RequestBody, ResponseBody, ErrorBody, StreamChunkBody, StreamEndBody, CancelBody>;

// Validates the §4 body object for `type` (request and stream_request share RequestBody). Unknown
// members, missing members, nulls, wrong types and non-integer integer fields are rejected with
// Errc::bad_request naming the member. Handshakes have no §4 body: bad_request.
[[nodiscard]] Result<Body> parse_body(MsgType type, const boost::json::value& payload);
[[nodiscard]] boost::json::value body_to_json(const Body& body);

}  // namespace agent_mesh
