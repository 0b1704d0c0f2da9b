// The relay connection's control frames (protocol §6), sans-IO: what a client and a relay say to each
// other besides envelopes, the bytes an auth signature covers, and the relay_id comparison.
//
// A WebSocket text frame is a control frame if it has a top-level `type` member and an envelope if it
// has `msg_type` (§6); classify_frame tells them apart without parsing an envelope. Envelopes are
// checked by scan_routing_header (routing_header.hpp); control frames by the parse functions below,
// split by who receives them:
//   relay  ← client: parse_client_frame   (hello, auth, ack, ping)
//   client ← relay:  parse_relay_frame    (challenge, welcome, error, queued, undeliverable, pong)
// Every error is Errc::bad_request naming the frame and the member, except the version checks of
// hello and welcome (Errc::unsupported_version) and an oversized frame (Errc::too_large); the caller
// turns an error into its close code with close_code_for() (error.hpp).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "agent_mesh/bytes.hpp"
#include "agent_mesh/encoding.hpp"
#include "agent_mesh/error.hpp"
#include "agent_mesh/identity.hpp"
#include "agent_mesh/limits.hpp"
#include "agent_mesh/result.hpp"
#include "agent_mesh/version.hpp"

namespace agent_mesh::limits {

// protocol §6: the challenge nonce is 32 random bytes.
inline constexpr std::size_t auth_nonce_bytes = 32;
// protocol §6: resume tokens (hello.resume, welcome.session_token) are base64url of 32 random bytes.
inline constexpr std::size_t resume_token_bytes = 32;
// protocol §6: acks are batched, at most 256 IDs per ack frame.
inline constexpr std::size_t max_ack_ids = 256;

}  // namespace agent_mesh::limits

namespace agent_mesh {

using AuthNonce = std::array<std::uint8_t, limits::auth_nonce_bytes>;

// ---- The ten control frames (protocol §6) ----

// client → relay, first frame: {"type":"hello","v":1,"agent_id":...,"resume"?}
struct Hello {
  std::int64_t v = kProtocolVersion;
  AgentId agent_id;
  // A resume token from an earlier welcome, exactly as sent (canonical base64url of 32 bytes).
  std::optional<std::string> resume;
  friend bool operator==(const Hello&, const Hello&) = default;
};

// relay → client: {"type":"challenge","nonce":...,"relay_id":...}
struct Challenge {
  AuthNonce nonce{};
  // The relay's public_url exactly as sent: the signature covers these bytes, not a normalised form.
  std::string relay_id;
  friend bool operator==(const Challenge&, const Challenge&) = default;
};

// client → relay: {"type":"auth","signature":...}
struct Auth {
  Signature signature{};
  friend bool operator==(const Auth&, const Auth&) = default;
};

// relay → client: {"type":"welcome","v":1,"session_token":...,"heartbeat_ms":...,"buffered":...}
struct Welcome {
  std::int64_t v = kProtocolVersion;
  // The resume token for the next connection (canonical base64url of 32 bytes).
  std::string session_token;
  std::int64_t heartbeat_ms = 30000;
  // How many stored envelopes follow before any live traffic.
  std::int64_t buffered = 0;
  friend bool operator==(const Welcome&, const Welcome&) = default;
};

// relay → client, then close: {"type":"error","code":...,"message":...}
struct ErrorFrame {
  Errc code = Errc::internal;
  std::string message;
  friend bool operator==(const ErrorFrame&, const ErrorFrame&) = default;
};

// relay → sender: the envelope `id` for an offline receiver is stored durably.
struct Queued {
  Uuid id;
  friend bool operator==(const Queued&, const Queued&) = default;
};

// relay → sender: {"type":"undeliverable","id":<id or null>,"code":...,"retry_after_ms"?}
struct Undeliverable {
  // nullopt is written as JSON null: the envelope's id could not be read (§6, the one null on the wire).
  std::optional<Uuid> id;
  // One of the six undeliverable codes (is_undeliverable_code).
  Errc code = Errc::unreachable;
  std::optional<std::int64_t> retry_after_ms;
  friend bool operator==(const Undeliverable&, const Undeliverable&) = default;
};

// receiver → relay: the stored envelopes it has processed or dropped (1..256 IDs).
struct Ack {
  std::vector<Uuid> ids;
  friend bool operator==(const Ack&, const Ack&) = default;
};

// Application-level heartbeat for clients that cannot send WebSocket pings (browsers).
struct Ping {
  friend bool operator==(const Ping&, const Ping&) = default;
};
struct Pong {
  friend bool operator==(const Pong&, const Pong&) = default;
};

using ControlFrame =
    std::variant<Hello, Challenge, Auth, Welcome, ErrorFrame, Queued, Undeliverable, Ack, Ping, Pong>;

// The frame's `type` string: "hello", "challenge", ...
[[nodiscard]] std::string_view frame_type(const ControlFrame& frame) noexcept;

// The frame text in JCS form (RFC 8785). No validation: serialising a frame built in code with,
// say, an empty ack gives text the parsers reject.
[[nodiscard]] std::string serialize(const ControlFrame& frame);

// ---- Parsing ----

// Which parser a frame goes to: a control frame has a top-level `type`, an envelope `msg_type` (§6).
enum class FrameKind : std::uint8_t { control, envelope };

// A shallow scan of the top-level member names only: nested values and strings are skipped without
// decoding, nothing is allocated and the JSON is not validated (the parser the answer points to
// does that). Error (Errc::bad_request): not a JSON object, structurally broken at the top level,
// or a frame with both or neither of `type` and `msg_type`.
[[nodiscard]] Result<FrameKind> classify_frame(std::string_view text);

// The relay's parse of a hello, in the order of protocol §6 "Versions": I-JSON within max_bytes (else
// too_large / bad_request), an object whose `type` is "hello", then `v`: missing → bad_request,
// anything but the integer 1 → unsupported_version; then the rest: agent_id (a valid agent ID),
// resume (canonical base64url of 32 bytes), no unknown members → bad_request.
[[nodiscard]] Result<Hello> parse_hello(std::string_view text,
                                        std::size_t max_bytes = limits::max_control_frame_bytes);

// Any of the ten control frames, strictly: unknown members, nulls (except undeliverable's id),
// wrong types and integers with a fraction or exponent are rejected. hello and welcome check `v`
// first, as parse_hello does (welcome's `v` ≠ 1 → unsupported_version, §6).
[[nodiscard]] Result<ControlFrame> parse_control_frame(
    std::string_view text, std::size_t max_bytes = limits::max_control_frame_bytes);
// What a relay accepts from a client: hello, auth, ack, ping. Any other type is bad_request.
[[nodiscard]] Result<ControlFrame> parse_client_frame(
    std::string_view text, std::size_t max_bytes = limits::max_control_frame_bytes);
// What a client accepts from a relay: challenge, welcome, error, queued, undeliverable, pong.
[[nodiscard]] Result<ControlFrame> parse_relay_frame(
    std::string_view text, std::size_t max_bytes = limits::max_control_frame_bytes);

// ---- Authentication (§6 steps 2-3) ----

// nonce ‖ relay_id (UTF-8, exactly as the challenge sent it). sign/verify_signature with
// Purpose::auth add the "agent-mesh/v1/auth\n" prefix.
[[nodiscard]] Bytes auth_signing_message(ByteView nonce, std::string_view relay_id);
// The client's answer to a challenge.
[[nodiscard]] Auth make_auth(const KeyPair& key, const Challenge& challenge);
// The relay's check of an auth frame against the challenge it sent to the agent of the hello.
// Error: Errc::auth_failed (close 4001).
[[nodiscard]] Status verify_auth(const AgentId& agent, const Challenge& challenge, const Auth& auth);

// ---- relay_id comparison (§6) ----

// The comparison form of a ws:// or wss:// URL: scheme and host lower-cased, the scheme's default
// port (ws 80, wss 443) removed, an empty path written "/", and localhost, 127.0.0.1 and [::1]
// written 127.0.0.1. Everything else is kept byte for byte (no percent-decoding, no other address
// spellings). nullopt for anything that is not such a URL: another scheme, userinfo, a fragment, an
// empty or ill-formed host, a port that is empty, zero, over 65535 or has a leading zero, and bytes
// outside printable ASCII.
[[nodiscard]] std::optional<std::string> normalize_relay_url(std::string_view url);
// True if both are relay URLs with the same comparison form. A client aborts unless the challenge's
// relay_id matches the URL it dialled (or a configured expected ID).
[[nodiscard]] bool relay_ids_match(std::string_view dialled, std::string_view relay_id);

}  // namespace agent_mesh
