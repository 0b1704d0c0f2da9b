// Key revocation and rotation (protocol §7, registry.md "Revocations and rotation").
//
// Both are signed JSON objects (protocol §1): the signature covers
// "agent-mesh/v1/<purpose>\n" ‖ JCS(object minus its signature member(s)), purpose `revoke` or
// `rotate`. Parsing is strict (unknown members, nulls, wrong types rejected) so the JCS rebuilt from
// the parsed fields is exactly the JCS of the object as received. Checking a signature is a separate
// step (verify()), after parsing, so cheap checks come before the ~50 µs Ed25519 verification.
#pragma once

#include <boost/json/object.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "agent_mesh/identity.hpp"
#include "agent_mesh/limits.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh::limits {

// A revocation's `reason` is a short note for people ("key compromised", "laptop lost"); 1 KiB is
// plenty, and relays persist revocations forever, so each one must stay small.
inline constexpr std::size_t max_revocation_reason_bytes = 1024;
// A revocation or rotation object is a few hundred bytes; this bound on its text lets a relay's
// public `POST /revocations` refuse anything larger before parsing it.
inline constexpr std::size_t max_key_lifecycle_object_bytes = 4 * 1024;

}  // namespace agent_mesh::limits

namespace agent_mesh {

// {"agent_id", "reason", "timestamp", "signature"} (protocol §7).
// Self-signed: `signature` by agent_id's own key, purpose `revoke`; anyone may submit it.
// Admin (lost key): the same object without `signature`, accepted only over an authenticated admin
// channel (registry → relay), which is why parse() takes `require_signature`.
struct Revocation {
  AgentId agent_id;
  std::string reason;  // at most limits::max_revocation_reason_bytes; may be empty
  std::int64_t timestamp = 0;  // Unix ms, not negative
  std::optional<Signature> signature;

  // Strict parse of the object text (I-JSON, at most limits::max_key_lifecycle_object_bytes).
  // With require_signature, a missing `signature` is an error; without it, a present one is still
  // parsed (and must be canonical base64url of 64 bytes) so verify() can check it.
  // Errors: Errc::bad_request naming the member (Errc::too_large for the text bound).
  [[nodiscard]] static Result<Revocation> parse(std::string_view text, bool require_signature = true);
  // The same checks on an already parsed value (e.g. a member of a larger request body).
  [[nodiscard]] static Result<Revocation> from_json(const boost::json::value& value, bool require_signature = true);

  // JCS of the object without `signature`: the message the signature covers.
  [[nodiscard]] std::string signing_input() const;
  // Sets `signature` (purpose `revoke`). Precondition: key.agent_id() == agent_id (aborts otherwise).
  void sign(const KeyPair& key);
  // The signature is present and verifies for agent_id with purpose `revoke`. Error: bad_request.
  [[nodiscard]] Status verify() const;

  [[nodiscard]] boost::json::object to_json(bool with_signature = true) const;
  // JCS text of to_json().
  [[nodiscard]] std::string serialize() const;

  friend bool operator==(const Revocation&, const Revocation&) = default;
};

// {"old", "new", "timestamp", "grace_until", "signature_old", "signature_new"} (protocol §7): both
// keys sign, purpose `rotate`, over JCS of the object without the two signature members (the new
// key proves possession). Until grace_until both IDs route; from then on `old` counts as revoked.
struct Rotation {
  // protocol §7: "default 24 h later".
  static constexpr std::int64_t default_grace_ms = 24LL * 60 * 60 * 1000;
  // protocol §7: grace_until ≤ timestamp + 7 days.
  static constexpr std::int64_t max_grace_ms = 7LL * 24 * 60 * 60 * 1000;

  AgentId old_id;  // "old"
  AgentId new_id;  // "new"
  std::int64_t timestamp = 0;    // Unix ms, not negative
  std::int64_t grace_until = 0;  // Unix ms
  Signature signature_old{};
  Signature signature_new{};

  // A signed rotation from old_key to new_key made at `timestamp`, with grace_until =
  // timestamp + grace_ms. Error: the check_window() error when the keys or the window are invalid.
  [[nodiscard]] static Result<Rotation> create(const KeyPair& old_key, const KeyPair& new_key,
                                               std::int64_t timestamp, std::int64_t grace_ms = default_grace_ms);

  // Strict parse (I-JSON, at most limits::max_key_lifecycle_object_bytes): every member required,
  // unknown members rejected, IDs valid, signatures canonical base64url of 64 bytes, and the window
  // rules of check_window(). Errors: Errc::bad_request naming the member or rule.
  [[nodiscard]] static Result<Rotation> parse(std::string_view text);
  [[nodiscard]] static Result<Rotation> from_json(const boost::json::value& value);

  // protocol §7: old ≠ new, and timestamp < grace_until ≤ timestamp + 7 days, each with its own
  // message. Error: bad_request.
  [[nodiscard]] Status check_window() const;

  // JCS of the object without signature_old and signature_new.
  [[nodiscard]] std::string signing_input() const;
  // Sets both signatures (purpose `rotate`). Precondition: old_key.agent_id() == old_id and
  // new_key.agent_id() == new_id (aborts otherwise).
  void sign(const KeyPair& old_key, const KeyPair& new_key);
  // check_window(), then signature_old by old_id, then signature_new by new_id. Error: bad_request
  // naming the rule or the signature that failed.
  [[nodiscard]] Status verify() const;

  // True while both IDs route: now_ms < grace_until. From grace_until on, `old` is revoked.
  [[nodiscard]] bool is_in_grace(std::int64_t now_ms) const noexcept { return now_ms < grace_until; }

  [[nodiscard]] boost::json::object to_json(bool with_signatures = true) const;
  [[nodiscard]] std::string serialize() const;

  friend bool operator==(const Rotation&, const Rotation&) = default;
};

}  // namespace agent_mesh
