// The relay's durable state (relay.md "Offline buffering", "Revocation"; protocol §6, §7) in one
// SQLite database: envelopes stored for offline agents, resume tokens (hashed) and revocations.
//
// Durability: WAL journal with synchronous=FULL, so every call that returns success has committed
// and fsynced the WAL. `queued` may be answered as soon as store() returns: neither kill -9 (which
// WAL survives even with synchronous=NORMAL) nor an OS crash or power loss (which NORMAL does not
// survive) loses it. The fsync per commit is amortised by store_batch(). Resume-token writes are
// the exception: they commit without an fsync (a lost token costs one full login, see
// RelaxedDurability in the .cpp).
//
// Ownership: the database is opened with locking_mode=EXCLUSIVE, so a second relay pointed at the
// same data_dir fails to open it instead of sharing a store whose counters it does not own.
//
// Threading: synchronous calls, not synchronised; the server calls them from one dedicated store
// thread (docs/design.md "Threading plan"). Time is passed in (Unix ms, the envelopes' clock).
//
// Errors: Errc::internal with SQLite's message for database failures; the policy outcomes are
// Errc::buffer_full, Errc::expired and Errc::revoked (the `undeliverable` codes to answer).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/identity.hpp"
#include "agent_mesh/key_lifecycle.hpp"
#include "agent_mesh/result.hpp"
#include "relay/relay_config.hpp"

namespace agent_mesh::relay {

// The database file inside data_dir.
inline constexpr std::string_view kStoreFileName = "relay.sqlite3";

struct StoreLimits {
  std::int64_t buffer_max_messages = defaults::buffer_max_messages;  // per recipient
  std::int64_t buffer_max_bytes = defaults::buffer_max_bytes;        // per recipient, frame bytes
  std::int64_t buffer_ttl_ms = defaults::buffer_ttl_s * 1000;
  std::int64_t store_max_bytes = defaults::store_max_bytes;  // all frames together
  // Live resume tokens per agent: one is issued per welcome and lives 5 min after its connection
  // closes, so only a reconnect loop reaches 16; beyond it the oldest go (the bound is ours).
  std::int64_t max_resume_tokens_per_agent = 16;
};

[[nodiscard]] StoreLimits store_limits_of(const RelayConfig& config);

// One envelope to store (the arguments of store()).
struct EnvelopeToStore {
  AgentId to;
  AgentId from;
  Uuid id;
  std::int64_t timestamp_ms = 0;  // the envelope's `timestamp`
  std::string_view frame;         // the frame's bytes, stored and later sent unchanged
};

struct StoredEnvelope {
  std::int64_t seq = 0;  // arrival order, strictly increasing across the whole store, never reused
  Uuid id;
  std::string frame;
};

// An envelope deleted by expire(): answer `undeliverable expired` to `from` if it is connected.
struct ExpiredEnvelope {
  AgentId from;
  AgentId to;
  Uuid id;
};

// SHA-256 of a resume token's 32 random bytes (protocol §6: "stored hashed").
using ResumeTokenHash = std::array<std::uint8_t, 32>;

// A fresh resume token: `text` goes to the client in `welcome`, only `hash` is stored.
struct ResumeToken {
  std::string text;  // base64url of 32 random bytes
  ResumeTokenHash hash;

  [[nodiscard]] static ResumeToken generate();
  // The hash of a presented token; nullopt if it is not base64url of 32 bytes (then: challenge).
  [[nodiscard]] static std::optional<ResumeTokenHash> hash_of(std::string_view text);
};

// A token's expiry while the connection that received it is open (protocol §6: valid until 5 min
// after that connection closes); set_resume_token_expiry() gives it a real one on close.
inline constexpr std::int64_t kResumeTokenOpen = std::numeric_limits<std::int64_t>::max();

struct RevocationResult {
  bool newly_revoked = false;        // false: the agent was already revoked (the call changed nothing)
  std::int64_t dropped_messages = 0;  // stored envelopes to or from the agent, now deleted
};

class OfflineStore {
 public:
  // Opens or creates the database at `path` (missing parent directories are created 0700, a new
  // file 0600: it holds who talks to whom) and migrates its schema. Errors: internal (with
  // SQLite's message; "database is locked" when another relay holds it); a schema newer than this
  // binary knows is refused rather than misread.
  [[nodiscard]] static Result<OfflineStore> open(const std::filesystem::path& path, StoreLimits limits = {});

  OfflineStore(OfflineStore&&) noexcept;
  OfflineStore& operator=(OfflineStore&&) noexcept;
  ~OfflineStore();

  // ---- Envelopes ----

  // Stores one envelope durably; on success answer `queued`. A duplicate (same `to` and `id` as a
  // stored envelope) succeeds without storing anything twice, even when the buffer is full.
  // Errors: buffer_full (the recipient's message or byte bound, or the whole store's byte bound),
  // expired (older than the TTL already: the receiver would drop it), revoked (to or from a revoked
  // agent), internal.
  [[nodiscard]] Status store(const AgentId& to, const AgentId& from, const Uuid& id, std::int64_t timestamp_ms,
                             std::int64_t now_ms, std::string_view frame);
  // Stores several envelopes in one transaction (one fsync). The outer error (internal) means
  // nothing was stored; otherwise one Status per envelope, in order, as store() would answer.
  [[nodiscard]] Result<std::vector<Status>> store_batch(std::span<const EnvelopeToStore> envelopes,
                                                        std::int64_t now_ms);

  // The recipient's stored envelopes with seq > after_seq in arrival order: at most max_messages,
  // and stopping once max_bytes of frames are collected (always at least one if any is left), so
  // the server can feed a backlog page by page as its write queue drains. Expired envelopes not
  // yet removed by expire() are included: they are counted in messages_for().
  [[nodiscard]] Result<std::vector<StoredEnvelope>> load(const AgentId& to, std::int64_t after_seq = 0,
                                                         std::size_t max_messages = 256,
                                                         std::size_t max_bytes = std::numeric_limits<std::size_t>::max());
  // Deletes acknowledged envelopes (protocol §6 `ack`); unknown IDs are ignored. Returns how many
  // were deleted.
  [[nodiscard]] Result<std::int64_t> ack(const AgentId& to, std::span<const Uuid> ids);
  // Deletes envelopes whose TTL has passed, counted from their timestamp or from when they were
  // stored if that is earlier (relay.md), at most `max_envelopes` per call (call again while the
  // result is full), and purges expired resume tokens. An envelope is expired once now_ms is past
  // base + buffer_ttl_ms.
  [[nodiscard]] Result<std::vector<ExpiredEnvelope>> expire(std::int64_t now_ms, std::size_t max_envelopes = 10000);
  // Deletes every envelope to or from `agent` and its resume tokens. Returns the envelopes deleted.
  [[nodiscard]] Result<std::int64_t> drop_agent(const AgentId& agent);

  [[nodiscard]] std::int64_t stored_messages() const noexcept;
  [[nodiscard]] std::int64_t store_bytes() const noexcept;
  [[nodiscard]] std::int64_t messages_for(const AgentId& to) const noexcept;
  [[nodiscard]] std::int64_t bytes_for(const AgentId& to) const noexcept;

  // ---- Resume tokens (protocol §6) ----

  // Records a token issued in `welcome`; expires_ms is normally kResumeTokenOpen. Beyond
  // max_resume_tokens_per_agent for the agent, its oldest tokens are deleted.
  [[nodiscard]] Status put_resume_token(const ResumeTokenHash& hash, const AgentId& agent, std::int64_t expires_ms);
  // Consumes the token whoever presents it (single use): deletes it and returns its agent if it
  // existed and had not expired. The caller compares the agent with the hello's agent_id; nullopt
  // or a foreign agent → a normal challenge.
  [[nodiscard]] Result<std::optional<AgentId>> consume_resume_token(const ResumeTokenHash& hash, std::int64_t now_ms);
  // Sets the expiry of a token (on close: now + resume_ttl). A consumed token is not an error.
  [[nodiscard]] Status set_resume_token_expiry(const ResumeTokenHash& hash, std::int64_t expires_ms);
  // Several put_resume_token / set_resume_token_expiry calls in one transaction, in order (the
  // relay batches the tokens of concurrent logins and closes: one commit instead of one each).
  struct ResumeTokenWrite {
    ResumeTokenHash hash{};
    std::optional<AgentId> agent;  // set: put (issue) the token; absent: set its expiry
    std::int64_t expires_ms = 0;
  };
  [[nodiscard]] Status write_resume_tokens(std::span<const ResumeTokenWrite> writes);
  // Gives every still-open token the expiry `expires_ms`. Call once at start with now +
  // resume_ttl: connections open when the relay stopped have closed by then.
  [[nodiscard]] Status close_open_resume_tokens(std::int64_t expires_ms);
  [[nodiscard]] Result<std::int64_t> resume_token_count() const;

  // ---- Revocations (protocol §7: persisted, never expire) ----

  // Persists a verified revocation (self-signed or admin) and, in the same transaction, drops the
  // stored envelopes to and from the agent and its resume tokens. Revoking twice keeps the first.
  [[nodiscard]] Result<RevocationResult> add_revocation(const Revocation& revocation);
  [[nodiscard]] bool is_revoked(const AgentId& agent) const noexcept;
  // Every persisted revocation, in the order they were added.
  [[nodiscard]] Result<std::vector<Revocation>> load_revocations() const;
  [[nodiscard]] std::size_t revocation_count() const noexcept;

  struct Impl;  // defined in offline_store.cpp

 private:
  explicit OfflineStore(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

}  // namespace agent_mesh::relay
