// End-to-end sessions between agents (protocol §5): Noise IK over identity-derived static keys,
// carried in signed handshake envelopes, then transport messages with explicit counters and the
// envelope header as associated data. Pure: envelopes and time in, envelopes and decisions out.
//
//   LocalIdentity     an agent's Ed25519 key with its derived X25519 static key
//   NoiseSession      one established session: seal/open transport envelopes, replay window,
//                     failure count, lifetime
//   start_handshake / accept_handshake / finish_handshake
//                     the two handshake steps as envelopes
//   SessionTable      every session and pending handshake of one agent, by peer
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "agent_mesh/envelope.hpp"
#include "agent_mesh/identity.hpp"
#include "agent_mesh/noise.hpp"
#include "agent_mesh/replay_window.hpp"

namespace agent_mesh {

// Limits of protocol §5, each configurable (tests shorten them).
struct SessionLimits {
  // After this many envelopes (both directions) the initiator hands new requests to a new session.
  std::uint64_t max_envelopes = std::uint64_t{1} << 20;
  // ... or after this age.
  std::int64_t max_age_ms = 24LL * 60 * 60 * 1000;
  // A retired session still serves replies and cancels in flight for this long.
  std::int64_t retire_grace_ms = 10LL * 60 * 1000;
  // A responder keeps at most this many sessions per peer (the oldest goes).
  std::size_t max_responder_sessions_per_peer = 8;
  // Bound on all sessions of one agent; the oldest goes first. Not in the spec: memory must be
  // bounded even if thousands of peers handshake (each session holds ~700 bytes).
  std::size_t max_sessions_total = 65536;
  // This many consecutive decryption failures drop a session.
  int max_consecutive_failures = 16;
};

inline constexpr std::string_view kNoisePrologue = "agent-mesh/v1";
// Message 1 holds at most 65,439 payload bytes: 65,535 − 32 (e) − 48 (encrypted s) − 16 (tag).
inline constexpr std::size_t kMessage1MaxPayload = 65439;
// Counters are at most 2^53 − 1 (protocol §5).
inline constexpr std::uint64_t kMaxCounter = 9007199254740991ULL;

// An agent's identity with its derived Noise static key pair (protocol §2).
struct LocalIdentity {
  KeyPair key;
  noise::DhKeyPair static_dh;
  explicit LocalIdentity(KeyPair identity);
  [[nodiscard]] const AgentId& id() const noexcept { return key.agent_id(); }
};

// The session ID of a handshake: its hash's first 16 bytes (protocol §5).
[[nodiscard]] SessionId session_id_from_hash(const noise::Hash& handshake_hash) noexcept;

class NoiseSession {
 public:
  NoiseSession(SessionId sid, AgentId peer, bool we_initiated, noise::TransportKeys keys, std::int64_t created_ms);

  [[nodiscard]] const SessionId& sid() const noexcept { return sid_; }
  [[nodiscard]] const AgentId& peer() const noexcept { return peer_; }
  [[nodiscard]] bool we_initiated() const noexcept { return we_initiated_; }
  [[nodiscard]] std::int64_t created_ms() const noexcept { return created_ms_; }
  [[nodiscard]] std::uint64_t envelopes() const noexcept { return envelopes_; }
  [[nodiscard]] std::uint64_t next_send_counter() const noexcept { return next_send_; }
  [[nodiscard]] int consecutive_failures() const noexcept { return consecutive_failures_; }

  // Seals `plaintext` into `envelope`, whose header (id, from, to, msg_type, in_reply_to,
  // timestamp) the caller has set: sets encrypted, sid, n and the ciphertext, in 65,519-byte
  // pieces with consecutive counters. Errors: Errc::expired if the counters are used up.
  [[nodiscard]] Status seal(Envelope& envelope, ByteView plaintext);

  // Why open() refused an envelope. Only `authentication` counts as a decryption failure.
  enum class Refusal : std::uint8_t { none, malformed, replayed, too_old, authentication };
  // Opens an encrypted envelope of this session (from = peer, sid = ours: the caller found us by
  // them). Marks the counters only if every piece verifies. Errors are bad_request; last_refusal()
  // says why.
  [[nodiscard]] Result<Bytes> open(const Envelope& envelope);
  [[nodiscard]] Refusal last_refusal() const noexcept { return last_refusal_; }
  // 16 consecutive decryption failures: the session must go (protocol §5).
  [[nodiscard]] bool broken(const SessionLimits& limits) const noexcept {
    return consecutive_failures_ >= limits.max_consecutive_failures;
  }

  // Retirement (protocol §5 "Lifetime"): a retired session takes no new requests and goes
  // retire_grace_ms later.
  [[nodiscard]] bool worn_out(const SessionLimits& limits, std::int64_t now_ms) const noexcept;
  void retire(std::int64_t now_ms) noexcept {
    if (!retired_at_) retired_at_ = now_ms;
  }
  [[nodiscard]] std::optional<std::int64_t> retired_at() const noexcept { return retired_at_; }

 private:
  SessionId sid_;
  AgentId peer_;
  bool we_initiated_;
  noise::TransportKeys keys_;
  std::int64_t created_ms_;
  std::uint64_t next_send_ = 0;
  std::uint64_t envelopes_ = 0;
  ReplayWindow window_;
  int consecutive_failures_ = 0;
  Refusal last_refusal_ = Refusal::none;
  std::optional<std::int64_t> retired_at_;
};

// An initiator's handshake in flight: step 1 sent, waiting for step 2.
struct PendingHandshake {
  noise::HandshakeState state;
  AgentId peer;
  Uuid step1_id;
  std::int64_t started_ms = 0;
};

// Builds the signed step-1 envelope (id `step1_id`) carrying Noise message 1 with `payload`
// (empty, or the message-1 JSON of at most kMessage1MaxPayload bytes).
struct HandshakeStart {
  Envelope step1;
  PendingHandshake pending;
};
[[nodiscard]] Result<HandshakeStart> start_handshake(const LocalIdentity& self, const AgentId& peer,
                                                     ByteView payload, const Uuid& step1_id, std::int64_t now_ms,
                                                     std::optional<noise::DhKeyPair> fixed_ephemeral = std::nullopt);

// The responder's side: `step1` has passed receive_envelope (signature, freshness, replay). Checks
// that the static key in message 1 is the one derived from `from`, answers with the signed step-2
// envelope (empty payload) and returns the new session and message 1's payload.
struct HandshakeAccept {
  Envelope step2;
  std::unique_ptr<NoiseSession> session;
  Bytes message1_payload;
};
[[nodiscard]] Result<HandshakeAccept> accept_handshake(const LocalIdentity& self, const Envelope& step1,
                                                       const Uuid& step2_id, std::int64_t now_ms,
                                                       std::optional<noise::DhKeyPair> fixed_ephemeral = std::nullopt);

// The initiator's side on step 2: checks it answers `pending` and comes from the agent dialled,
// that message 2 is empty, and returns the session.
[[nodiscard]] Result<std::unique_ptr<NoiseSession>> finish_handshake(PendingHandshake& pending, const Envelope& step2,
                                                                     std::int64_t now_ms);

// All sessions and pending handshakes of one agent.
class SessionTable {
 public:
  explicit SessionTable(SessionLimits limits = {}) : limits_(limits) {}

  [[nodiscard]] const SessionLimits& limits() const noexcept { return limits_; }

  // The session this agent initiated with `peer` that takes new requests, if any (protocol §5: new
  // requests use the session the sender initiated). Retires worn-out ones on the way.
  [[nodiscard]] NoiseSession* session_for_new_requests(const AgentId& peer, std::int64_t now_ms);
  // The session (peer, sid), retired or not.
  [[nodiscard]] NoiseSession* find(const AgentId& peer, const SessionId& sid);

  // Adds an established session. An initiated one retires the previous initiated sessions with
  // that peer; a responder one evicts the peer's oldest beyond max_responder_sessions_per_peer.
  NoiseSession& add(std::unique_ptr<NoiseSession> session, std::int64_t now_ms);
  void remove(const AgentId& peer, const SessionId& sid);

  // Single flight: at most one pending handshake per peer.
  [[nodiscard]] PendingHandshake* pending(const AgentId& peer);
  [[nodiscard]] PendingHandshake* pending_by_step1(const Uuid& step1_id);
  void add_pending(PendingHandshake pending);
  void remove_pending(const AgentId& peer);

  // Drops sessions past their lifetime: retired ones after retire_grace_ms, any session
  // max_age_ms + retire_grace_ms after creation (protocol §5).
  void expire(std::int64_t now_ms);

  [[nodiscard]] std::size_t session_count() const noexcept { return count_; }
  [[nodiscard]] std::size_t session_count(const AgentId& peer) const;

 private:
  void evict_oldest();

  SessionLimits limits_;
  std::unordered_map<AgentId, std::vector<std::unique_ptr<NoiseSession>>> sessions_;
  std::unordered_map<AgentId, PendingHandshake> pending_;
  std::size_t count_ = 0;
};

}  // namespace agent_mesh
