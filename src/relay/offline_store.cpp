#include "relay/offline_store.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "agent_mesh/bytes.hpp"
#include "core/sodium_init.hpp"

namespace agent_mesh::relay {
namespace {

// ---- Schema: numbered migrations, applied in order, each in its own transaction ----
//
// Agent IDs and envelope IDs are kept in their canonical text form (43 and 36 characters) so the
// database reads clearly with the sqlite3 shell; frames are BLOBs, stored and returned unchanged.
// `seq` is AUTOINCREMENT so it is never reused after deletions: paging by `seq > after_seq` can
// never skip an envelope stored later.
constexpr const char* kMigrations[] = {
    // 1: envelopes, resume tokens, revocations.
    R"sql(
CREATE TABLE envelopes (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  recipient TEXT NOT NULL,
  sender TEXT NOT NULL,
  id TEXT NOT NULL,
  timestamp_ms INTEGER NOT NULL,
  stored_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  frame BLOB NOT NULL,
  UNIQUE (recipient, id)
);
CREATE INDEX envelopes_by_recipient ON envelopes (recipient, seq);
CREATE INDEX envelopes_by_sender ON envelopes (sender);
CREATE INDEX envelopes_by_expiry ON envelopes (expires_ms);
CREATE TABLE resume_tokens (
  hash BLOB NOT NULL UNIQUE,
  agent TEXT NOT NULL,
  expires_ms INTEGER NOT NULL
);
CREATE INDEX resume_tokens_by_agent ON resume_tokens (agent);
CREATE INDEX resume_tokens_by_expiry ON resume_tokens (expires_ms);
CREATE TABLE revocations (
  agent TEXT NOT NULL PRIMARY KEY,
  reason TEXT NOT NULL,
  timestamp_ms INTEGER NOT NULL,
  document TEXT NOT NULL
);
)sql",
};
constexpr std::int64_t kSchemaVersion = static_cast<std::int64_t>(std::size(kMigrations));

// ---- SQLite helpers ----

struct StatementDeleter {
  void operator()(sqlite3_stmt* statement) const noexcept { sqlite3_finalize(statement); }
};
using StatementPtr = std::unique_ptr<sqlite3_stmt, StatementDeleter>;

struct DatabaseDeleter {
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
using DatabasePtr = std::unique_ptr<sqlite3, DatabaseDeleter>;

// Hash for agent-ID strings: keyed SipHash (identity.hpp), because agent IDs are chosen by
// clients and could otherwise be ground into one bucket.
struct AgentTextHash {
  std::size_t operator()(const std::string& text) const noexcept { return keyed_hash(as_bytes(text)); }
};

struct Mailbox {
  std::int64_t messages = 0;
  std::int64_t bytes = 0;
};
using Mailboxes = std::unordered_map<std::string, Mailbox, AgentTextHash>;

std::int64_t saturating_add(std::int64_t a, std::int64_t b) noexcept {
  std::int64_t sum = 0;
  if (__builtin_add_overflow(a, b, &sum)) return b > 0 ? INT64_MAX : INT64_MIN;
  return sum;
}

// Creates the missing directories of `dir` with mode 0700 (existing ones are left alone).
Status create_private_directories(const std::filesystem::path& dir) {
  if (dir.empty()) return {};
  std::error_code ec;
  if (std::filesystem::is_directory(dir, ec)) return {};
  AGENT_MESH_TRY(create_private_directories(dir.parent_path() == dir ? std::filesystem::path{} : dir.parent_path()));
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return fail(Errc::internal, "offline store: cannot create directory " + dir.string() + ": " + std::strerror(errno));
  }
  return {};
}

// Creates the database file 0600 before SQLite does (SQLite would use 0644 under a usual umask);
// SQLite gives its WAL file the same mode.
Status create_private_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return {};
    return fail(Errc::internal, "offline store: cannot create " + path.string() + ": " + std::strerror(errno));
  }
  ::close(fd);
  return {};
}

}  // namespace

struct OfflineStore::Impl {
  // Declared first so it is destroyed last: every statement below is finalised before it closes.
  DatabasePtr db;
  std::string path;
  StoreLimits limits;

  StatementPtr begin;
  StatementPtr commit;
  StatementPtr rollback;
  StatementPtr insert_envelope;
  StatementPtr envelope_exists;
  StatementPtr load_page;
  StatementPtr delete_acked;
  StatementPtr delete_expired;
  StatementPtr delete_expired_tokens;
  StatementPtr delete_agent_envelopes;
  StatementPtr delete_agent_tokens;
  StatementPtr insert_token;
  StatementPtr trim_tokens;
  StatementPtr consume_token;
  StatementPtr set_token_expiry;
  StatementPtr close_open_tokens;
  StatementPtr count_tokens;
  StatementPtr insert_revocation;
  StatementPtr select_revocations;

  // Counters mirror the envelopes table; every change to it goes through this object and the
  // counters change only after the transaction commits.
  Mailboxes mailboxes;
  std::int64_t total_messages = 0;
  std::int64_t total_bytes = 0;
  std::unordered_set<std::string, AgentTextHash> revoked;

  [[nodiscard]] Error error(std::string_view what) const {
    return fail(Errc::internal, "offline store " + path + ": " + std::string(what) + ": " + sqlite3_errmsg(db.get()) +
                                    busy_hint());
  }
  // The store is opened EXCLUSIVE and never shared, so "busy" means a second process.
  [[nodiscard]] std::string busy_hint() const {
    return (sqlite3_errcode(db.get()) & 0xff) == SQLITE_BUSY ? " (is another agent-mesh-relay using this store?)" : "";
  }

  [[nodiscard]] Status exec(const char* sql, std::string_view what) {
    char* message = nullptr;
    if (sqlite3_exec(db.get(), sql, nullptr, nullptr, &message) != SQLITE_OK) {
      std::string text = message != nullptr ? message : sqlite3_errmsg(db.get());
      sqlite3_free(message);
      return fail(Errc::internal, "offline store " + path + ": " + std::string(what) + ": " + text + busy_hint());
    }
    return {};
  }

  [[nodiscard]] Status prepare(StatementPtr& statement, const char* sql) {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v3(db.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr) != SQLITE_OK) {
      return error("prepare");
    }
    statement.reset(raw);
    return {};
  }

  [[nodiscard]] Status migrate();
  [[nodiscard]] Status prepare_all();
  [[nodiscard]] Status load_state();
  void remove_from_mailbox(const std::string& recipient, std::int64_t bytes) noexcept;
};

namespace {

// One use of a cached statement: binds, steps, and resets it (clearing bindings) when done, so the
// next use starts clean whatever path this one took.
class Query {
 public:
  Query(OfflineStore::Impl& store, sqlite3_stmt* statement) noexcept : store_(store), statement_(statement) {}
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;
  ~Query() {
    sqlite3_reset(statement_);
    sqlite3_clear_bindings(statement_);
  }

  [[nodiscard]] Status bind(int index, std::int64_t value) {
    return check(sqlite3_bind_int64(statement_, index, value));
  }
  // The text must outlive the query (SQLITE_STATIC: no copy on the hot path).
  [[nodiscard]] Status bind_text(int index, std::string_view text) {
    return check(sqlite3_bind_text64(statement_, index, text.data(), text.size(), SQLITE_STATIC, SQLITE_UTF8));
  }
  [[nodiscard]] Status bind_blob(int index, ByteView bytes) {
    // A null pointer would bind SQL NULL; an empty blob is a zero-length zeroblob.
    if (bytes.empty()) return check(sqlite3_bind_zeroblob(statement_, index, 0));
    return check(sqlite3_bind_blob64(statement_, index, bytes.data(), bytes.size(), SQLITE_STATIC));
  }
  // true: a row is ready; false: done.
  [[nodiscard]] Result<bool> step() {
    const int rc = sqlite3_step(statement_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return store_.error("step");
  }
  // Steps to the end, for statements without rows (or whose rows are not needed).
  [[nodiscard]] Status run() {
    for (;;) {
      auto row = step();
      if (!row) return std::move(row).error();
      if (!*row) return {};
    }
  }

  [[nodiscard]] std::int64_t integer(int column) const noexcept { return sqlite3_column_int64(statement_, column); }
  [[nodiscard]] std::string text(int column) const {
    const auto* data = sqlite3_column_text(statement_, column);
    const int size = sqlite3_column_bytes(statement_, column);
    return data == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(data), static_cast<std::size_t>(size));
  }
  [[nodiscard]] std::string blob(int column) const {
    const void* data = sqlite3_column_blob(statement_, column);
    const int size = sqlite3_column_bytes(statement_, column);
    return data == nullptr ? std::string() : std::string(static_cast<const char*>(data), static_cast<std::size_t>(size));
  }

 private:
  [[nodiscard]] Status check(int rc) { return rc == SQLITE_OK ? Status{} : Status{store_.error("bind")}; }

  OfflineStore::Impl& store_;
  sqlite3_stmt* statement_;
};

// BEGIN IMMEDIATE … COMMIT; rolls back if destroyed before commit() (any early error return).
class Transaction {
 public:
  explicit Transaction(OfflineStore::Impl& store) noexcept : store_(store) {}
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    if (open_) {
      Query rollback(store_, store_.rollback.get());
      (void)rollback.run();  // nothing better to do: the next BEGIN reports a broken connection
    }
  }

  [[nodiscard]] Status begin() {
    Query query(store_, store_.begin.get());
    AGENT_MESH_TRY(query.run());
    open_ = true;
    return {};
  }
  [[nodiscard]] Status commit() {
    Query query(store_, store_.commit.get());
    AGENT_MESH_TRY(query.run());
    open_ = false;
    return {};
  }

 private:
  OfflineStore::Impl& store_;
  bool open_ = false;
};

// Resume tokens are a shortcut, not state anyone loses by missing: a token gone after an OS crash
// or power loss only means one full challenge-response login (protocol §6 falls back to it). So
// their writes commit with synchronous=NORMAL — still safe against kill -9, and with no fsync on the
// login path (it was two fsyncs per login and capped the authentication rate). The next FULL commit
// (an envelope, a revocation) fsyncs the whole WAL, these frames included.
class RelaxedDurability {
 public:
  explicit RelaxedDurability(OfflineStore::Impl& store) noexcept : store_(store) {
    ok_ = store_.exec("PRAGMA synchronous = NORMAL", "relax synchronous").ok();
  }
  RelaxedDurability(const RelaxedDurability&) = delete;
  RelaxedDurability& operator=(const RelaxedDurability&) = delete;
  ~RelaxedDurability() {
    // Must not fail silently: a store left at NORMAL would answer `queued` before the fsync. If
    // even this pragma fails the connection is broken and the next statement reports it.
    if (ok_) (void)store_.exec("PRAGMA synchronous = FULL", "restore synchronous");
  }

 private:
  OfflineStore::Impl& store_;
  bool ok_ = false;
};

Result<Uuid> uuid_column(const OfflineStore::Impl& store, const Query& query, int column) {
  auto id = Uuid::parse(query.text(column));
  if (!id) return fail(Errc::internal, "offline store " + store.path + ": corrupt envelope id in the database");
  return std::move(id).value();
}

}  // namespace

Status OfflineStore::Impl::migrate() {
  AGENT_MESH_TRY(exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", "create schema_version"));
  std::int64_t version = 0;
  {
    StatementPtr select;
    AGENT_MESH_TRY(prepare(select, "SELECT version FROM schema_version"));
    Query query(*this, select.get());
    auto row = query.step();
    if (!row) return std::move(row).error();
    if (*row) version = query.integer(0);
  }
  if (version > kSchemaVersion) {
    return fail(Errc::internal, "offline store " + path + ": schema version " + std::to_string(version) +
                                    " is newer than this relay understands (" + std::to_string(kSchemaVersion) +
                                    "); run a newer agent-mesh-relay");
  }
  for (std::int64_t next = version + 1; next <= kSchemaVersion; ++next) {
    AGENT_MESH_TRY(exec("BEGIN IMMEDIATE", "begin migration"));
    auto applied = exec(kMigrations[next - 1], "migration " + std::to_string(next));
    if (applied) {
      const std::string record = next == 1 ? "INSERT INTO schema_version (version) VALUES (1)"
                                           : "UPDATE schema_version SET version = " + std::to_string(next);
      applied = exec(record.c_str(), "record schema version");
    }
    if (!applied) {
      (void)exec("ROLLBACK", "rollback migration");
      return applied;
    }
    AGENT_MESH_TRY(exec("COMMIT", "commit migration"));
  }
  return {};
}

Status OfflineStore::Impl::prepare_all() {
  AGENT_MESH_TRY(prepare(begin, "BEGIN IMMEDIATE"));
  AGENT_MESH_TRY(prepare(commit, "COMMIT"));
  AGENT_MESH_TRY(prepare(rollback, "ROLLBACK"));
  AGENT_MESH_TRY(prepare(insert_envelope,
                         "INSERT INTO envelopes (recipient, sender, id, timestamp_ms, stored_ms, expires_ms, frame) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (recipient, id) DO NOTHING"));
  AGENT_MESH_TRY(prepare(envelope_exists, "SELECT 1 FROM envelopes WHERE recipient = ?1 AND id = ?2"));
  AGENT_MESH_TRY(prepare(load_page,
                         "SELECT seq, id, frame FROM envelopes WHERE recipient = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"));
  AGENT_MESH_TRY(prepare(delete_acked,
                         "DELETE FROM envelopes WHERE recipient = ?1 AND id = ?2 RETURNING length(frame)"));
  AGENT_MESH_TRY(prepare(delete_expired,
                         "DELETE FROM envelopes WHERE seq IN (SELECT seq FROM envelopes WHERE expires_ms < ?1 "
                         "ORDER BY expires_ms LIMIT ?2) RETURNING sender, recipient, id, length(frame)"));
  AGENT_MESH_TRY(prepare(delete_expired_tokens, "DELETE FROM resume_tokens WHERE expires_ms < ?1"));
  AGENT_MESH_TRY(prepare(delete_agent_envelopes,
                         "DELETE FROM envelopes WHERE recipient = ?1 OR sender = ?1 RETURNING recipient, length(frame)"));
  AGENT_MESH_TRY(prepare(delete_agent_tokens, "DELETE FROM resume_tokens WHERE agent = ?1"));
  AGENT_MESH_TRY(prepare(insert_token,
                         "INSERT INTO resume_tokens (hash, agent, expires_ms) VALUES (?1, ?2, ?3) "
                         "ON CONFLICT (hash) DO UPDATE SET agent = excluded.agent, expires_ms = excluded.expires_ms"));
  AGENT_MESH_TRY(prepare(trim_tokens,
                         "DELETE FROM resume_tokens WHERE agent = ?1 AND rowid NOT IN "
                         "(SELECT rowid FROM resume_tokens WHERE agent = ?1 ORDER BY rowid DESC LIMIT ?2)"));
  AGENT_MESH_TRY(prepare(consume_token, "DELETE FROM resume_tokens WHERE hash = ?1 RETURNING agent, expires_ms"));
  AGENT_MESH_TRY(prepare(set_token_expiry, "UPDATE resume_tokens SET expires_ms = ?2 WHERE hash = ?1"));
  AGENT_MESH_TRY(prepare(close_open_tokens, "UPDATE resume_tokens SET expires_ms = ?1 WHERE expires_ms = ?2"));
  AGENT_MESH_TRY(prepare(count_tokens, "SELECT count(*) FROM resume_tokens"));
  AGENT_MESH_TRY(prepare(insert_revocation,
                         "INSERT INTO revocations (agent, reason, timestamp_ms, document) VALUES (?1, ?2, ?3, ?4) "
                         "ON CONFLICT (agent) DO NOTHING"));
  AGENT_MESH_TRY(prepare(select_revocations, "SELECT document FROM revocations ORDER BY rowid"));
  return {};
}

Status OfflineStore::Impl::load_state() {
  StatementPtr totals;
  AGENT_MESH_TRY(prepare(totals, "SELECT recipient, count(*), sum(length(frame)) FROM envelopes GROUP BY recipient"));
  {
    Query query(*this, totals.get());
    for (;;) {
      auto row = query.step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      const Mailbox mailbox{query.integer(1), query.integer(2)};
      mailboxes[query.text(0)] = mailbox;
      total_messages += mailbox.messages;
      total_bytes += mailbox.bytes;
    }
  }
  StatementPtr agents;
  AGENT_MESH_TRY(prepare(agents, "SELECT agent FROM revocations"));
  Query query(*this, agents.get());
  for (;;) {
    auto row = query.step();
    if (!row) return std::move(row).error();
    if (!*row) break;
    revoked.insert(query.text(0));
  }
  return {};
}

StoreLimits store_limits_of(const RelayConfig& config) {
  StoreLimits limits;
  limits.buffer_max_messages = config.buffer_max_messages;
  limits.buffer_max_bytes = config.buffer_max_bytes;
  limits.buffer_ttl_ms = config.buffer_ttl_s * 1000;
  limits.store_max_bytes = config.store_max_bytes;
  return limits;
}

// ---- Resume tokens ----

ResumeToken ResumeToken::generate() {
  detail::ensure_sodium();
  std::array<std::uint8_t, 32> secret{};
  randombytes_buf(secret.data(), secret.size());
  ResumeToken token;
  token.text = base64url_encode(secret);
  crypto_hash_sha256(token.hash.data(), secret.data(), secret.size());
  sodium_memzero(secret.data(), secret.size());
  return token;
}

std::optional<ResumeTokenHash> ResumeToken::hash_of(std::string_view text) {
  detail::ensure_sodium();
  std::array<std::uint8_t, 32> secret{};
  if (!base64url_decode_exact(text, secret)) return std::nullopt;
  ResumeTokenHash hash{};
  crypto_hash_sha256(hash.data(), secret.data(), secret.size());
  sodium_memzero(secret.data(), secret.size());
  return hash;
}

// ---- OfflineStore ----

OfflineStore::OfflineStore(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
OfflineStore::OfflineStore(OfflineStore&&) noexcept = default;
OfflineStore& OfflineStore::operator=(OfflineStore&&) noexcept = default;
OfflineStore::~OfflineStore() = default;

Result<OfflineStore> OfflineStore::open(const std::filesystem::path& path, StoreLimits limits) {
  AGENT_MESH_TRY(create_private_directories(path.parent_path()));
  AGENT_MESH_TRY(create_private_file(path));

  auto impl = std::make_unique<Impl>();
  impl->path = path.string();
  impl->limits = limits;
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(impl->path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  impl->db.reset(raw);  // closed by the deleter even when opening failed
  if (rc != SQLITE_OK) {
    return fail(Errc::internal, "offline store " + impl->path + ": open: " +
                                    (raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  }
  sqlite3_extended_result_codes(raw, 1);
  // EXCLUSIVE before WAL: the WAL index then lives in this process's memory and the file stays
  // locked for as long as the relay runs (see the header: one owner per store).
  AGENT_MESH_TRY(impl->exec("PRAGMA locking_mode = EXCLUSIVE", "set locking_mode"));
  {
    StatementPtr journal;
    AGENT_MESH_TRY(impl->prepare(journal, "PRAGMA journal_mode = WAL"));
    Query query(*impl, journal.get());
    auto row = query.step();
    if (!row) return std::move(row).error();
    if (!*row || query.text(0) != "wal") {
      return fail(Errc::internal, "offline store " + impl->path + ": the file system does not support WAL mode");
    }
  }
  // FULL: a commit is on disk before `queued` is answered, even across an OS crash (header).
  AGENT_MESH_TRY(impl->exec("PRAGMA synchronous = FULL", "set synchronous"));
  // The schema is ours alone: refuse functions with side effects in views or triggers.
  AGENT_MESH_TRY(impl->exec("PRAGMA trusted_schema = OFF", "set trusted_schema"));
  AGENT_MESH_TRY(impl->migrate());
  AGENT_MESH_TRY(impl->prepare_all());
  AGENT_MESH_TRY(impl->load_state());
  return OfflineStore(std::move(impl));
}

void OfflineStore::Impl::remove_from_mailbox(const std::string& recipient, std::int64_t bytes) noexcept {
  if (auto found = mailboxes.find(recipient); found != mailboxes.end()) {
    found->second.messages -= 1;
    found->second.bytes -= bytes;
    if (found->second.messages <= 0) mailboxes.erase(found);
  }
  total_messages -= 1;
  total_bytes -= bytes;
}

Status OfflineStore::store(const AgentId& to, const AgentId& from, const Uuid& id, std::int64_t timestamp_ms,
                           std::int64_t now_ms, std::string_view frame) {
  const EnvelopeToStore envelope{to, from, id, timestamp_ms, frame};
  auto results = store_batch(std::span(&envelope, 1), now_ms);
  if (!results) return std::move(results).error();
  return std::move(results->front());
}

Result<std::vector<Status>> OfflineStore::store_batch(std::span<const EnvelopeToStore> envelopes, std::int64_t now_ms) {
  Impl& s = *impl_;
  std::vector<Status> results;
  results.reserve(envelopes.size());
  if (envelopes.empty()) return results;

  // Counters as they will be after the commit; applied only if it succeeds.
  Mailboxes changed;
  std::int64_t total_messages = s.total_messages;
  std::int64_t total_bytes = s.total_bytes;

  Transaction transaction(s);
  AGENT_MESH_TRY(transaction.begin());
  for (const EnvelopeToStore& envelope : envelopes) {
    const std::string& recipient = envelope.to.str();
    if (s.revoked.contains(recipient) || s.revoked.contains(envelope.from.str())) {
      results.emplace_back(fail(Errc::revoked, "the sender or the recipient is revoked"));
      continue;
    }
    // relay.md: the TTL counts from the timestamp, or from now if that is earlier (a timestamp in
    // the future buys no extra time).
    const std::int64_t expires_ms = saturating_add(std::min(envelope.timestamp_ms, now_ms), s.limits.buffer_ttl_ms);
    if (expires_ms < now_ms) {
      results.emplace_back(fail(Errc::expired, "the envelope is older than the buffer TTL"));
      continue;
    }
    auto [slot, inserted] = changed.try_emplace(recipient);
    if (inserted) {
      const auto current = s.mailboxes.find(recipient);
      if (current != s.mailboxes.end()) slot->second = current->second;
    }
    Mailbox& mailbox = slot->second;
    const auto frame_bytes = static_cast<std::int64_t>(envelope.frame.size());
    const char* bound = nullptr;
    if (mailbox.messages + 1 > s.limits.buffer_max_messages) {
      bound = "the recipient's buffer holds buffer_max_messages envelopes";
    } else if (mailbox.bytes + frame_bytes > s.limits.buffer_max_bytes) {
      bound = "the recipient's buffer would exceed buffer_max_bytes";
    } else if (total_bytes + frame_bytes > s.limits.store_max_bytes) {
      bound = "the relay's store would exceed store_max_bytes";
    }
    if (bound != nullptr) {
      // Idempotent even when full: a duplicate of a stored envelope is already queued.
      Query exists(s, s.envelope_exists.get());
      AGENT_MESH_TRY(exists.bind_text(1, recipient));
      const std::string id_text = envelope.id.to_string();
      AGENT_MESH_TRY(exists.bind_text(2, id_text));
      auto row = exists.step();
      if (!row) return std::move(row).error();
      results.emplace_back(*row ? Status{} : Status{fail(Errc::buffer_full, bound)});
      continue;
    }
    Query insert(s, s.insert_envelope.get());
    const std::string id_text = envelope.id.to_string();
    AGENT_MESH_TRY(insert.bind_text(1, recipient));
    AGENT_MESH_TRY(insert.bind_text(2, envelope.from.str()));
    AGENT_MESH_TRY(insert.bind_text(3, id_text));
    AGENT_MESH_TRY(insert.bind(4, envelope.timestamp_ms));
    AGENT_MESH_TRY(insert.bind(5, now_ms));
    AGENT_MESH_TRY(insert.bind(6, expires_ms));
    AGENT_MESH_TRY(insert.bind_blob(7, as_bytes(envelope.frame)));
    AGENT_MESH_TRY(insert.run());
    if (sqlite3_changes(s.db.get()) == 1) {  // 0: a duplicate, kept once
      mailbox.messages += 1;
      mailbox.bytes += frame_bytes;
      total_messages += 1;
      total_bytes += frame_bytes;
    }
    results.emplace_back();
  }
  AGENT_MESH_TRY(transaction.commit());

  for (auto& [recipient, mailbox] : changed) {
    if (mailbox.messages > 0) s.mailboxes[recipient] = mailbox;
  }
  s.total_messages = total_messages;
  s.total_bytes = total_bytes;
  return results;
}

Result<std::vector<StoredEnvelope>> OfflineStore::load(const AgentId& to, std::int64_t after_seq,
                                                       std::size_t max_messages, std::size_t max_bytes) {
  Impl& s = *impl_;
  std::vector<StoredEnvelope> page;
  if (max_messages == 0) return page;
  Query query(s, s.load_page.get());
  AGENT_MESH_TRY(query.bind_text(1, to.str()));
  AGENT_MESH_TRY(query.bind(2, after_seq));
  AGENT_MESH_TRY(query.bind(3, static_cast<std::int64_t>(std::min<std::size_t>(max_messages, INT64_MAX))));
  std::size_t bytes = 0;
  for (;;) {
    auto row = query.step();
    if (!row) return std::move(row).error();
    if (!*row) break;
    StoredEnvelope envelope;
    envelope.seq = query.integer(0);
    auto id = uuid_column(s, query, 1);
    if (!id) return std::move(id).error();
    envelope.id = *id;
    envelope.frame = query.blob(2);
    if (!page.empty() && envelope.frame.size() > max_bytes - std::min(bytes, max_bytes)) break;
    bytes += envelope.frame.size();
    page.push_back(std::move(envelope));
  }
  return page;
}

Result<std::int64_t> OfflineStore::ack(const AgentId& to, std::span<const Uuid> ids) {
  Impl& s = *impl_;
  if (ids.empty()) return std::int64_t{0};
  std::int64_t deleted = 0;
  std::int64_t deleted_bytes = 0;
  Transaction transaction(s);
  AGENT_MESH_TRY(transaction.begin());
  for (const Uuid& id : ids) {
    Query query(s, s.delete_acked.get());
    const std::string id_text = id.to_string();
    AGENT_MESH_TRY(query.bind_text(1, to.str()));
    AGENT_MESH_TRY(query.bind_text(2, id_text));
    for (;;) {
      auto row = query.step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      deleted += 1;
      deleted_bytes += query.integer(0);
    }
  }
  AGENT_MESH_TRY(transaction.commit());
  if (deleted > 0) {
    auto found = s.mailboxes.find(to.str());
    if (found != s.mailboxes.end()) {
      found->second.messages -= deleted;
      found->second.bytes -= deleted_bytes;
      if (found->second.messages <= 0) s.mailboxes.erase(found);
    }
    s.total_messages -= deleted;
    s.total_bytes -= deleted_bytes;
  }
  return deleted;
}

Result<std::vector<ExpiredEnvelope>> OfflineStore::expire(std::int64_t now_ms, std::size_t max_envelopes) {
  Impl& s = *impl_;
  std::vector<ExpiredEnvelope> expired;
  struct Removed {
    std::string recipient;
    std::int64_t bytes;
  };
  std::vector<Removed> removed;
  Transaction transaction(s);
  AGENT_MESH_TRY(transaction.begin());
  {
    Query query(s, s.delete_expired.get());
    AGENT_MESH_TRY(query.bind(1, now_ms));
    AGENT_MESH_TRY(query.bind(2, static_cast<std::int64_t>(std::min<std::size_t>(max_envelopes, INT64_MAX))));
    for (;;) {
      auto row = query.step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      removed.push_back({query.text(1), query.integer(3)});
      auto from = AgentId::parse(query.text(0));
      auto to = AgentId::parse(removed.back().recipient);
      auto id = Uuid::parse(query.text(2));
      // Rows are written only from parsed values; one that no longer parses is deleted unreported.
      if (from && to && id) expired.push_back({std::move(from).value(), std::move(to).value(), *id});
    }
  }
  {
    Query query(s, s.delete_expired_tokens.get());
    AGENT_MESH_TRY(query.bind(1, now_ms));
    AGENT_MESH_TRY(query.run());
  }
  AGENT_MESH_TRY(transaction.commit());
  for (const Removed& row : removed) s.remove_from_mailbox(row.recipient, row.bytes);
  return expired;
}

namespace {

// Deletes the agent's envelopes (both directions) and resume tokens inside the caller's
// transaction; returns (recipient, bytes) of each deleted envelope for the counters.
Result<std::vector<std::pair<std::string, std::int64_t>>> delete_agent_rows(OfflineStore::Impl& s,
                                                                            const AgentId& agent) {
  std::vector<std::pair<std::string, std::int64_t>> removed;
  {
    Query query(s, s.delete_agent_envelopes.get());
    AGENT_MESH_TRY(query.bind_text(1, agent.str()));
    for (;;) {
      auto row = query.step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      removed.emplace_back(query.text(0), query.integer(1));
    }
  }
  Query tokens(s, s.delete_agent_tokens.get());
  AGENT_MESH_TRY(tokens.bind_text(1, agent.str()));
  AGENT_MESH_TRY(tokens.run());
  return removed;
}

}  // namespace

Result<std::int64_t> OfflineStore::drop_agent(const AgentId& agent) {
  Impl& s = *impl_;
  Transaction transaction(s);
  AGENT_MESH_TRY(transaction.begin());
  auto removed = delete_agent_rows(s, agent);
  if (!removed) return std::move(removed).error();
  AGENT_MESH_TRY(transaction.commit());
  for (const auto& [recipient, bytes] : *removed) s.remove_from_mailbox(recipient, bytes);
  return static_cast<std::int64_t>(removed->size());
}

std::int64_t OfflineStore::stored_messages() const noexcept { return impl_->total_messages; }
std::int64_t OfflineStore::store_bytes() const noexcept { return impl_->total_bytes; }

std::int64_t OfflineStore::messages_for(const AgentId& to) const noexcept {
  const auto found = impl_->mailboxes.find(to.str());
  return found == impl_->mailboxes.end() ? 0 : found->second.messages;
}

std::int64_t OfflineStore::bytes_for(const AgentId& to) const noexcept {
  const auto found = impl_->mailboxes.find(to.str());
  return found == impl_->mailboxes.end() ? 0 : found->second.bytes;
}

// ---- Resume tokens ----

Status OfflineStore::put_resume_token(const ResumeTokenHash& hash, const AgentId& agent, std::int64_t expires_ms) {
  Impl& s = *impl_;
  const RelaxedDurability relaxed(s);
  Transaction transaction(s);
  AGENT_MESH_TRY(transaction.begin());
  {
    Query insert(s, s.insert_token.get());
    AGENT_MESH_TRY(insert.bind_blob(1, hash));
    AGENT_MESH_TRY(insert.bind_text(2, agent.str()));
    AGENT_MESH_TRY(insert.bind(3, expires_ms));
    AGENT_MESH_TRY(insert.run());
  }
  {
    Query trim(s, s.trim_tokens.get());
    AGENT_MESH_TRY(trim.bind_text(1, agent.str()));
    AGENT_MESH_TRY(trim.bind(2, std::max<std::int64_t>(1, s.limits.max_resume_tokens_per_agent)));
    AGENT_MESH_TRY(trim.run());
  }
  return transaction.commit();
}

Status OfflineStore::write_resume_tokens(std::span<const ResumeTokenWrite> writes) {
  Impl& s = *impl_;
  const RelaxedDurability relaxed(s);
  Transaction transaction(s);
  AGENT_MESH_TRY(transaction.begin());
  for (const auto& write : writes) {
    if (write.agent) {
      Query insert(s, s.insert_token.get());
      AGENT_MESH_TRY(insert.bind_blob(1, write.hash));
      AGENT_MESH_TRY(insert.bind_text(2, write.agent->str()));
      AGENT_MESH_TRY(insert.bind(3, write.expires_ms));
      AGENT_MESH_TRY(insert.run());
      Query trim(s, s.trim_tokens.get());
      AGENT_MESH_TRY(trim.bind_text(1, write.agent->str()));
      AGENT_MESH_TRY(trim.bind(2, std::max<std::int64_t>(1, s.limits.max_resume_tokens_per_agent)));
      AGENT_MESH_TRY(trim.run());
    } else {
      Query query(s, s.set_token_expiry.get());
      AGENT_MESH_TRY(query.bind_blob(1, write.hash));
      AGENT_MESH_TRY(query.bind(2, write.expires_ms));
      AGENT_MESH_TRY(query.run());
    }
  }
  return transaction.commit();
}

Result<std::optional<AgentId>> OfflineStore::consume_resume_token(const ResumeTokenHash& hash, std::int64_t now_ms) {
  Impl& s = *impl_;
  const RelaxedDurability relaxed(s);
  std::string agent_text;
  std::int64_t expires_ms = 0;
  bool found = false;
  {
    Query query(s, s.consume_token.get());
    AGENT_MESH_TRY(query.bind_blob(1, hash));
    for (;;) {
      auto row = query.step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      found = true;
      agent_text = query.text(0);
      expires_ms = query.integer(1);
    }
  }
  if (!found || expires_ms <= now_ms) return std::optional<AgentId>{};
  auto agent = AgentId::parse(agent_text);
  if (!agent) return std::optional<AgentId>{};
  return std::optional<AgentId>{std::move(agent).value()};
}

Status OfflineStore::set_resume_token_expiry(const ResumeTokenHash& hash, std::int64_t expires_ms) {
  Impl& s = *impl_;
  const RelaxedDurability relaxed(s);
  Query query(s, s.set_token_expiry.get());
  AGENT_MESH_TRY(query.bind_blob(1, hash));
  AGENT_MESH_TRY(query.bind(2, expires_ms));
  return query.run();
}

Status OfflineStore::close_open_resume_tokens(std::int64_t expires_ms) {
  Impl& s = *impl_;
  Query query(s, s.close_open_tokens.get());
  AGENT_MESH_TRY(query.bind(1, expires_ms));
  AGENT_MESH_TRY(query.bind(2, kResumeTokenOpen));
  return query.run();
}

Result<std::int64_t> OfflineStore::resume_token_count() const {
  Query query(*impl_, impl_->count_tokens.get());
  auto row = query.step();
  if (!row) return std::move(row).error();
  return *row ? query.integer(0) : 0;
}

// ---- Revocations ----

Result<RevocationResult> OfflineStore::add_revocation(const Revocation& revocation) {
  Impl& s = *impl_;
  RevocationResult result;
  Transaction transaction(s);
  AGENT_MESH_TRY(transaction.begin());
  {
    Query insert(s, s.insert_revocation.get());
    const std::string document = revocation.serialize();
    AGENT_MESH_TRY(insert.bind_text(1, revocation.agent_id.str()));
    AGENT_MESH_TRY(insert.bind_text(2, revocation.reason));
    AGENT_MESH_TRY(insert.bind(3, revocation.timestamp));
    AGENT_MESH_TRY(insert.bind_text(4, document));
    AGENT_MESH_TRY(insert.run());
    result.newly_revoked = sqlite3_changes(s.db.get()) == 1;
  }
  // Dropped even when already revoked: cheap, and it leaves nothing behind whatever happened before.
  auto removed = delete_agent_rows(s, revocation.agent_id);
  if (!removed) return std::move(removed).error();
  AGENT_MESH_TRY(transaction.commit());
  s.revoked.insert(revocation.agent_id.str());
  for (const auto& [recipient, bytes] : *removed) s.remove_from_mailbox(recipient, bytes);
  result.dropped_messages = static_cast<std::int64_t>(removed->size());
  return result;
}

bool OfflineStore::is_revoked(const AgentId& agent) const noexcept { return impl_->revoked.contains(agent.str()); }

std::size_t OfflineStore::revocation_count() const noexcept { return impl_->revoked.size(); }

Result<std::vector<Revocation>> OfflineStore::load_revocations() const {
  std::vector<Revocation> revocations;
  Query query(*impl_, impl_->select_revocations.get());
  for (;;) {
    auto row = query.step();
    if (!row) return std::move(row).error();
    if (!*row) break;
    auto revocation = Revocation::parse(query.text(0), /*require_signature=*/false);
    if (!revocation) {
      return fail(Errc::internal, "offline store " + impl_->path + ": a stored revocation no longer parses: " +
                                      revocation.error().message);
    }
    revocations.push_back(std::move(revocation).value());
  }
  return revocations;
}

}  // namespace agent_mesh::relay
