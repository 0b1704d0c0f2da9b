// The registry's credentials (registry.md "Credentials"), socket-free: header parsing, signing
// messages, the agent-signature verifier with its replay memory, and the secrets behind API tokens,
// setup keys and the admin token. Time is always a parameter (Unix ms, the wall clock: agent
// signatures carry wall-clock timestamps).
//
// Who uses what:
//   HTTP layer   parse_bearer → hash_secret → storage lookup by hash (tokens, setup keys);
//                secrets_equal for the admin token; AgentRequestVerifier::verify for
//                `Authorization: MeshAgent ...`, then its own check that the agent is registered
//                and may do what it asks.
//   SDK/daemon   make_agent_authorization (agent_mesh/agent_auth.hpp) for every agent-signed request.
//   token issue  generate_secret (shown once) and hash_secret (stored).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "agent_mesh/agent_auth.hpp"
#include "agent_mesh/identity.hpp"
#include "agent_mesh/result.hpp"
#include "agent_mesh/secret_compare.hpp"

namespace agent_mesh::registry {

// ---- Agent signatures: Authorization: MeshAgent agent_id=<id>,ts=<decimal ms>,sig=<b64url> ----

// registry.md: an agent signature is valid ±2 min around the registry's clock.
inline constexpr std::int64_t kAgentSignatureSkewMs = 2 * 60 * 1000;
// registry.md: the registry remembers signatures for 4 min. A signature can pass the ±2 min
// check for at most 4 min (from ts − 2 min to ts + 2 min), so it is remembered until ts + 2 min:
// never less than it could be replayed, never more than 4 min after it was accepted.
inline constexpr std::int64_t kAgentSignatureMemoryMs = 4 * 60 * 1000;

struct AgentAuthorization {
  AgentId agent_id;
  std::int64_t ts = 0;  // Unix ms, 0 ..= 2^53 − 1
  Signature sig{};
};

// Parses exactly `MeshAgent agent_id=<id>,ts=<decimal ms>,sig=<b64url>`: scheme `MeshAgent`
// (case-sensitive) and one space, then the three fields in this order, separated by single commas,
// no spaces anywhere else, nothing before or after. `agent_id` must parse as an AgentId (protocol
// §1); `ts` is canonical decimal (no sign, no leading zeros, "0" alone allowed) of at most 2^53 − 1;
// `sig` is canonical base64url of exactly 64 bytes.
// Error: Errc::unauthorized, "MeshAgent authorization: <the defect>".
[[nodiscard]] Result<AgentAuthorization> parse_agent_authorization(std::string_view header);

// The signing message and the header an agent sends live in the core (agent_mesh/agent_auth.hpp),
// so the SDK signs without linking the registry; the verifier below checks the same message.
using agent_mesh::http_signing_message;
using agent_mesh::make_agent_authorization;

// Verifies agent-signed requests and refuses replays. Thread-safe (one mutex, held for a few map
// operations; the Ed25519 verification runs outside it).
//
// verify() runs, in order: parse the header → reject a method/target/host that could not have come
// from an HTTP request line (control characters, spaces) → the clock check (|ts − now| ≤ 2 min) →
// "already used?" lookup → Ed25519 verification with purpose `http` → remember. Only signatures
// that verified enter the memory, so forged ones cannot fill it.
//
// Memory bound (the choice): nothing that could still be replayed is ever forgotten early, since
// that would reopen the replay. Each remembered signature leaves at ts + 2 min (pruned on every
// call). When the memory is full (max_remembered) a new signature is refused with
// Errc::rate_limited until entries expire, and one agent may hold at most max_per_agent entries,
// so a single (compromised or buggy) agent that signs in a loop is refused on its own without
// locking out everyone else. With clocks in sync an entry lives about 2 min, so 200,000 entries
// carry ~1,600 signed requests per second sustained (~830/s if every client ran 2 min ahead), and
// 20,000 per agent ~160/s; at ~250 bytes an entry the memory stays near 50 MB at most. Per-agent
// rate limits in the HTTP layer should refuse long before these bounds.
//
// Clock steps: the memory forgets by the highest `now_ms` seen so far. A timestamp older than that
// high-water mark minus 2 min is refused even if `now_ms` went backwards, so a signature that was
// forgotten can never be accepted again.
class AgentRequestVerifier {
 public:
  struct Options {
    std::int64_t skew_ms = kAgentSignatureSkewMs;
    std::size_t max_remembered = 200000;
    std::size_t max_per_agent = 20000;
  };

  AgentRequestVerifier() : AgentRequestVerifier(Options{}) {}
  explicit AgentRequestVerifier(Options options) : options_(options) {}

  // The agent that signed this request. Errors:
  //   Errc::unauthorized  malformed header, timestamp outside ±2 min, bad signature, or
  //                       "signature already used" (a replay);
  //   Errc::bad_request   method/target/host that no HTTP parser would have produced;
  //   Errc::rate_limited  the replay memory is full (for everyone, or for this agent); retry
  //                       after retry_after_ms(now_ms).
  [[nodiscard]] Result<AgentId> verify(std::string_view method, std::string_view request_target,
                                       std::string_view host, std::string_view authorization,
                                       std::int64_t now_ms);

  // Milliseconds until the earliest remembered signature is forgotten (≥ 1), 0 when nothing is
  // remembered: a Retry-After hint for Errc::rate_limited.
  [[nodiscard]] std::int64_t retry_after_ms(std::int64_t now_ms) const;
  // Remembered signatures (for /metrics and tests).
  [[nodiscard]] std::size_t remembered() const;

 private:
  // Keyed SipHash (identity.hpp): signatures and keys are chosen by clients, so an unkeyed hash
  // would let them grind entries into one bucket.
  struct BytesHash {
    template <std::size_t N>
    std::size_t operator()(const std::array<std::uint8_t, N>& bytes) const noexcept {
      return keyed_hash(bytes);
    }
  };
  struct Entry {
    std::int64_t forget_at;
    PublicKey agent;  // the key, not the AgentId: no heap string per entry
  };

  void prune_locked(std::int64_t now_ms);

  Options options_;
  mutable std::mutex mutex_;
  std::int64_t high_water_ms_ = INT64_MIN;
  std::unordered_map<Signature, Entry, BytesHash> remembered_;
  std::set<std::pair<std::int64_t, Signature>> by_expiry_;  // (forget_at, sig), earliest first
  std::unordered_map<PublicKey, std::size_t, BytesHash> per_agent_;
};

// ---- API tokens, setup keys, the admin token ----

// A fresh secret: 32 bytes from libsodium's CSPRNG as base64url (43 characters). Used for API
// tokens and setup keys; shown once, stored only as hash_secret().
[[nodiscard]] std::string generate_secret();

// SHA-256 (libsodium crypto_hash_sha256) of the secret's bytes as 64 lower-case hex characters:
// what storage keeps and looks up by. Hex rather than base64url because it is what `sqlite3`,
// `sha256sum` and every operator tool print, so a stored hash can be checked by hand.
// A plain, unsalted hash is enough: the secrets are 256 random bits, not passwords.
[[nodiscard]] std::string hash_secret(std::string_view secret);

// The most a bearer token may be: ours are 43 characters; an admin token file may hold a longer
// operator-chosen one.
inline constexpr std::size_t kMaxBearerTokenBytes = 512;

// Parses exactly `Bearer <token>`: scheme `Bearer` (case-sensitive) and one space, then a token68
// (RFC 9110 §11.2: ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/", then any "=") of 1 to
// kMaxBearerTokenBytes characters. Returns a view into `header`.
// Error: Errc::unauthorized naming the defect; the token itself never appears in the message.
[[nodiscard]] Result<std::string_view> parse_bearer(std::string_view header);

// Constant-time equality of two secrets (agent_mesh/secret_compare.hpp).
using agent_mesh::secrets_equal;

// Constant-time check of a presented secret against a stored hash_secret() value.
[[nodiscard]] bool secret_matches_hash(std::string_view presented, std::string_view stored_hash_hex) noexcept;

}  // namespace agent_mesh::registry
