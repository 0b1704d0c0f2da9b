// SqliteStorage's connection: opening, pragmas, the schema and its migrations, and the small
// statement/transaction/cursor helpers the operations share (sqlite_db.hpp).
#include "registry/sqlite_db.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <boost/json/array.hpp>
#include <boost/json/serialize.hpp>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/json.hpp"
#include "core/sodium_init.hpp"

namespace agent_mesh::registry::sqlite {
namespace {

// ---- Schema: numbered migrations, applied in order at open ----
//
// Never edit a migration that has shipped: add the next one. IDs are text in their canonical form
// (UUIDs, agent IDs, "tok_…") so the file reads clearly in the sqlite3 shell. Lists page by an
// AUTOINCREMENT `seq`, never reused, so a keyset cursor cannot skip a row inserted later.
//
// Integrity the schema itself enforces:
//   - login (case-insensitively), provider subject, token and setup-key hashes are unique;
//   - a user has at most one personal group (groups.personal_user_id UNIQUE);
//   - a rule's target is a card (acl_rules.target → cards.agent_id): deleting the card deletes
//     its rules, renaming it in a rotation renames them (ON UPDATE CASCADE);
//   - capability rows belong to their card (deleted with it, kept through a rotation, which
//     changes agent_id but not seq);
//   - acl_version has exactly one row.
// cards_fts is a plain FTS5 table whose rowid is cards.seq, kept in sync explicitly in the
// transactions that change cards (sqlite_cards.cpp): name, description, capability names and
// capability descriptions are separate columns so bm25 can weigh them.
constexpr const char* kMigrations[] = {
    // 1: the whole registry.
    R"sql(
CREATE TABLE users (
  id TEXT PRIMARY KEY,
  login TEXT NOT NULL UNIQUE COLLATE NOCASE,
  provider_subject TEXT UNIQUE,
  created_at INTEGER NOT NULL
);
CREATE TABLE groups (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  personal_user_id TEXT UNIQUE REFERENCES users (id),
  created_by TEXT NOT NULL REFERENCES users (id),
  created_at INTEGER NOT NULL
);
CREATE TABLE group_members (
  group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
  user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
  added_at INTEGER NOT NULL,
  PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
CREATE INDEX group_members_by_user ON group_members (user_id);
CREATE TABLE api_tokens (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  hash TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  expires_at INTEGER,
  revoked_at INTEGER
);
CREATE INDEX api_tokens_by_user ON api_tokens (user_id, seq);
CREATE TABLE setup_keys (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
  created_by TEXT NOT NULL,
  hash TEXT NOT NULL UNIQUE,
  max_uses INTEGER CHECK (max_uses IS NULL OR max_uses >= 1),
  uses INTEGER NOT NULL DEFAULT 0,
  expires_at INTEGER,
  created_at INTEGER NOT NULL,
  last_used_at INTEGER,
  revoked_at INTEGER
);
CREATE INDEX setup_keys_by_group ON setup_keys (group_id, seq);
CREATE TABLE cards (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  agent_id TEXT NOT NULL UNIQUE,
  group_id TEXT NOT NULL REFERENCES groups (id),
  owner_id TEXT REFERENCES users (id),
  name TEXT NOT NULL,
  description TEXT,
  capabilities TEXT NOT NULL,
  metadata TEXT,
  timestamp_ms INTEGER NOT NULL,
  signature TEXT NOT NULL,
  card_json TEXT NOT NULL,
  registered_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX cards_by_group ON cards (group_id, agent_id);
CREATE TABLE card_capabilities (
  card_seq INTEGER NOT NULL REFERENCES cards (seq) ON DELETE CASCADE,
  name TEXT NOT NULL,
  description TEXT,
  PRIMARY KEY (card_seq, name)
) WITHOUT ROWID;
CREATE INDEX card_capabilities_by_name ON card_capabilities (name, card_seq);
CREATE VIRTUAL TABLE cards_fts USING fts5(
  name, description, capability_names, capability_descriptions,
  tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TABLE acl_rules (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  group_id TEXT NOT NULL REFERENCES groups (id),
  source TEXT NOT NULL,
  target TEXT NOT NULL REFERENCES cards (agent_id) ON DELETE CASCADE ON UPDATE CASCADE,
  allowed_capabilities TEXT NOT NULL,
  created_by TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX acl_rules_by_group ON acl_rules (group_id, seq);
CREATE INDEX acl_rules_by_target ON acl_rules (target, seq);
CREATE INDEX acl_rules_by_source ON acl_rules (source);
CREATE TABLE acl_version (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  version INTEGER NOT NULL
);
INSERT INTO acl_version (id, version) VALUES (1, 1);
CREATE TABLE revocations (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  agent_id TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL CHECK (kind IN ('self', 'admin', 'rotation')),
  reason TEXT NOT NULL,
  timestamp_ms INTEGER NOT NULL,
  effective_at INTEGER NOT NULL,
  document TEXT NOT NULL,
  group_id TEXT,
  recorded_at INTEGER NOT NULL
);
CREATE INDEX revocations_by_group ON revocations (group_id);
CREATE TABLE audit_log (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT NOT NULL,
  detail TEXT NOT NULL
);
)sql",
};
constexpr std::int64_t kSchemaVersion = static_cast<std::int64_t>(std::size(kMigrations));

// Creates the missing directories of `dir` with mode 0700 (existing ones are left alone).
Status create_private_directories(const std::filesystem::path& dir) {
  if (dir.empty()) return {};
  std::error_code ec;
  if (std::filesystem::is_directory(dir, ec)) return {};
  AGENT_MESH_TRY(create_private_directories(dir.parent_path() == dir ? std::filesystem::path{} : dir.parent_path()));
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return fail(Errc::internal, "registry database: cannot create directory " + dir.string() + ": " +
                                    std::strerror(errno));
  }
  return {};
}

// Creates the database file 0600 before SQLite does (SQLite would use 0644 under a usual umask);
// SQLite gives its WAL and shm files the same mode.
Status create_private_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return {};
    return fail(Errc::internal, "registry database: cannot create " + path.string() + ": " + std::strerror(errno));
  }
  ::close(fd);
  return {};
}

}  // namespace

// ---- Connection ----

Error Connection::error(std::string_view what) const {
  std::string message = "registry database " + path_ + ": " + std::string(what) + ": " + sqlite3_errmsg(db_.get());
  if ((sqlite3_errcode(db_.get()) & 0xff) == SQLITE_BUSY) {
    message += " (another process held a lock for longer than busy_timeout)";
  }
  return fail(Errc::internal, std::move(message));
}

Status Connection::exec(const char* sql, std::string_view what) {
  char* message = nullptr;
  if (sqlite3_exec(db_.get(), sql, nullptr, nullptr, &message) != SQLITE_OK) {
    std::string text = message != nullptr ? message : sqlite3_errmsg(db_.get());
    sqlite3_free(message);
    return fail(Errc::internal, "registry database " + path_ + ": " + std::string(what) + ": " + text);
  }
  return {};
}

Result<sqlite3_stmt*> Connection::statement(const std::string& sql) {
  if (auto found = statements_.find(sql); found != statements_.end()) return found->second.get();
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v3(db_.get(), sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr) != SQLITE_OK) {
    return error("prepare");
  }
  StatementPtr owned(raw);
  return statements_.emplace(sql, std::move(owned)).first->second.get();
}

Result<std::unique_ptr<Connection>> Connection::open(const std::filesystem::path& path, const SqliteOptions& options) {
  AGENT_MESH_TRY(create_private_directories(path.parent_path()));
  AGENT_MESH_TRY(create_private_file(path));

  auto connection = std::unique_ptr<Connection>(new Connection());
  connection->path_ = path.string();
  sqlite3* raw = nullptr;
  // NOMUTEX: SqliteStorage serialises every use of the connection with its own mutex.
  const int rc = sqlite3_open_v2(connection->path_.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  connection->db_.reset(raw);  // closed by the deleter even when opening failed
  if (rc != SQLITE_OK) {
    return fail(Errc::internal, "registry database " + connection->path_ + ": open: " +
                                    (raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  }
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, options.busy_timeout_ms);
  {
    Query journal(*connection, "PRAGMA journal_mode = WAL");
    auto row = journal.step();
    if (!row) return std::move(row).error();
    if (!*row || journal.text(0) != "wal") {
      return fail(Errc::internal, "registry database " + connection->path_ +
                                      ": the file system does not support WAL mode");
    }
  }
  // FULL: what a call reports as stored (a token shown once, a counted setup-key use) is on disk,
  // even across an OS crash.
  AGENT_MESH_TRY(connection->exec(options.fsync_commits ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = OFF",
                                  "set synchronous"));
  AGENT_MESH_TRY(connection->exec("PRAGMA foreign_keys = ON", "enable foreign keys"));
  // The schema is ours alone: refuse functions with side effects in views or triggers.
  AGENT_MESH_TRY(connection->exec("PRAGMA trusted_schema = OFF", "set trusted_schema"));
  {
    Query check(*connection, "PRAGMA foreign_keys");
    auto row = check.step();
    if (!row) return std::move(row).error();
    if (!*row || check.integer(0) != 1) {
      return fail(Errc::internal, "registry database " + connection->path_ +
                                      ": this SQLite was built without foreign key support");
    }
  }
  AGENT_MESH_TRY(connection->migrate());
  return connection;
}

Status Connection::migrate() {
  // One IMMEDIATE transaction around the version check and every pending migration: a second
  // process opening the same new file waits (busy_timeout) and then sees the migrated schema.
  Transaction transaction(*this);
  AGENT_MESH_TRY(transaction.begin_write());
  AGENT_MESH_TRY(exec("CREATE TABLE IF NOT EXISTS schema_migrations ("
                      "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
                      "create schema_migrations"));
  std::int64_t version = 0;
  {
    Query query(*this, "SELECT coalesce(max(version), 0) FROM schema_migrations");
    auto row = query.step();
    if (!row) return std::move(row).error();
    version = query.integer(0);
  }
  if (version > kSchemaVersion) {
    return fail(Errc::internal, "registry database " + path_ + ": schema version " + std::to_string(version) +
                                    " is newer than this agent-mesh build understands (" +
                                    std::to_string(kSchemaVersion) + "); run a newer agent-mesh-registry");
  }
  for (std::int64_t next = version + 1; next <= kSchemaVersion; ++next) {
    AGENT_MESH_TRY(exec(kMigrations[next - 1], "migration " + std::to_string(next)));
    // applied_at is for people reading the table; the one place the storage reads a clock.
    Query record(*this,
                 "INSERT INTO schema_migrations (version, applied_at) "
                 "VALUES (?1, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))");
    AGENT_MESH_TRY(record.bind(1, next));
    AGENT_MESH_TRY(record.run());
  }
  return transaction.commit();
}

// ---- Query ----

Query::Query(Connection& db, const std::string& sql) : db_(db) {
  auto statement = db.statement(sql);
  if (statement) {
    statement_ = *statement;
  } else {
    prepare_error_ = std::move(statement).error();
  }
}

Query::~Query() {
  if (statement_ != nullptr) {
    sqlite3_reset(statement_);
    sqlite3_clear_bindings(statement_);
  }
}

Status Query::check(int rc) {
  if (prepare_error_) return *prepare_error_;
  return rc == SQLITE_OK ? Status{} : Status{db_.error("bind")};
}

Status Query::bind(int index, std::int64_t value) {
  if (prepare_error_) return *prepare_error_;
  return check(sqlite3_bind_int64(statement_, index, value));
}

Status Query::bind(int index, std::string_view text) {
  if (prepare_error_) return *prepare_error_;
  // A null data pointer would bind SQL NULL; an empty string must stay an empty string.
  static constexpr char kEmpty[] = "";
  const char* data = text.data() != nullptr ? text.data() : kEmpty;
  return check(sqlite3_bind_text64(statement_, index, data, text.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
}

Status Query::bind(int index, const std::optional<std::string>& text) {
  return text ? bind(index, std::string_view(*text)) : bind_null(index);
}

Status Query::bind(int index, const std::optional<std::int64_t>& value) {
  return value ? bind(index, *value) : bind_null(index);
}

Status Query::bind(int index, const Binding& value) {
  if (const auto* integer_value = std::get_if<std::int64_t>(&value)) return bind(index, *integer_value);
  if (const auto* text_value = std::get_if<std::string>(&value)) return bind(index, std::string_view(*text_value));
  return bind_null(index);
}

Status Query::bind_null(int index) {
  if (prepare_error_) return *prepare_error_;
  return check(sqlite3_bind_null(statement_, index));
}

Status Query::bind_all(const std::vector<Binding>& values) {
  for (std::size_t i = 0; i < values.size(); ++i) AGENT_MESH_TRY(bind(static_cast<int>(i + 1), values[i]));
  return {};
}

Result<bool> Query::step() {
  if (prepare_error_) return *prepare_error_;
  const int rc = sqlite3_step(statement_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  last_rc_ = rc & 0xff;
  return db_.error("step");
}

Status Query::run() {
  for (;;) {
    auto row = step();
    if (!row) return std::move(row).error();
    if (!*row) return {};
  }
}

std::int64_t Query::integer(int column) const noexcept { return sqlite3_column_int64(statement_, column); }

std::string Query::text(int column) const {
  const auto* data = sqlite3_column_text(statement_, column);
  const int size = sqlite3_column_bytes(statement_, column);
  return data == nullptr ? std::string()
                         : std::string(reinterpret_cast<const char*>(data), static_cast<std::size_t>(size));
}

bool Query::is_null(int column) const noexcept { return sqlite3_column_type(statement_, column) == SQLITE_NULL; }

std::optional<std::string> Query::optional_text(int column) const {
  if (is_null(column)) return std::nullopt;
  return text(column);
}

std::optional<std::int64_t> Query::optional_integer(int column) const {
  if (is_null(column)) return std::nullopt;
  return integer(column);
}

// ---- Transaction ----

Transaction::~Transaction() {
  if (open_) {
    // Nothing better to do on failure: the next BEGIN reports a broken connection.
    (void)db_.exec("ROLLBACK", "rollback");
    db_.pending_version = 0;
  }
}

Status Transaction::begin_write() {
  Query query(db_, "BEGIN IMMEDIATE");
  AGENT_MESH_TRY(query.run());
  open_ = true;
  db_.pending_version = 0;
  return {};
}

Status Transaction::begin_read() {
  Query query(db_, "BEGIN");
  AGENT_MESH_TRY(query.run());
  open_ = true;
  db_.pending_version = 0;
  return {};
}

Status Transaction::commit() {
  {
    Query query(db_, "COMMIT");
    AGENT_MESH_TRY(query.run());
  }
  open_ = false;
  if (db_.pending_version != 0) db_.committed_version = db_.pending_version;
  db_.pending_version = 0;
  return {};
}

// ---- Helpers ----

Status bump_acl_version(Connection& db) {
  Query query(db, "UPDATE acl_version SET version = version + 1 WHERE id = 1 RETURNING version");
  auto row = query.step();
  if (!row) return std::move(row).error();
  if (!*row) return fail(Errc::internal, "registry database " + db.path() + ": the acl_version row is missing");
  db.pending_version = query.integer(0);
  return query.run();
}

Result<std::int64_t> read_acl_version(Connection& db) {
  Query query(db, "SELECT version FROM acl_version WHERE id = 1");
  auto row = query.step();
  if (!row) return std::move(row).error();
  if (!*row) return fail(Errc::internal, "registry database " + db.path() + ": the acl_version row is missing");
  return query.integer(0);
}

std::string random_id(std::string_view prefix) {
  agent_mesh::detail::ensure_sodium();
  std::array<std::uint8_t, 16> bytes{};
  randombytes_buf(bytes.data(), bytes.size());
  return std::string(prefix) + base64url_encode(bytes);
}

std::string new_uuid() { return Uuid::generate().to_string(); }

Status check_secret_hash(std::string_view hash) {
  if (hash.size() != 64) return fail(Errc::bad_request, "secret hash must be 64 lower-case hex characters");
  for (const char c : hash) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return fail(Errc::bad_request, "secret hash must be 64 lower-case hex characters");
    }
  }
  return {};
}

Status check_page_limit(std::int64_t limit) {
  if (limit < 1 || limit > kMaxPageLimit) {
    return fail(Errc::bad_request, "limit must be between 1 and " + std::to_string(kMaxPageLimit));
  }
  return {};
}

std::string encode_cursor(std::string_view kind, std::string_view value) {
  std::string text(kind);
  text += ':';
  text += value;
  return base64url_encode(as_bytes(text));
}

Result<std::string> decode_cursor(std::string_view kind, std::string_view cursor) {
  // A cursor is never longer than its kind and an agent ID or a number; refuse anything far larger
  // before decoding it.
  if (cursor.size() > 256) return fail(Errc::bad_request, "cursor: malformed (pass back next_cursor unchanged)");
  auto bytes = base64url_decode(cursor);
  if (!bytes) return fail(Errc::bad_request, "cursor: malformed (pass back next_cursor unchanged)");
  const std::string_view text = as_text(*bytes);
  if (text.size() <= kind.size() || text.substr(0, kind.size()) != kind || text[kind.size()] != ':') {
    return fail(Errc::bad_request, "cursor: not a cursor of this list (pass back next_cursor unchanged)");
  }
  return std::string(text.substr(kind.size() + 1));
}

Result<std::int64_t> decode_integer_cursor(std::string_view kind, std::string_view cursor) {
  auto text = decode_cursor(kind, cursor);
  if (!text) return std::move(text).error();
  std::int64_t value = 0;
  const char* first = text->data();
  const char* last = first + text->size();
  const auto [end, ec] = std::from_chars(first, last, value);
  if (ec != std::errc{} || end != last || value < 0) {
    return fail(Errc::bad_request, "cursor: malformed (pass back next_cursor unchanged)");
  }
  return value;
}

std::string clip(std::string_view text) {
  constexpr std::size_t kMax = 64;
  if (text.size() <= kMax) return std::string(text);
  std::size_t end = kMax;  // back off to a UTF-8 character boundary
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return std::string(text.substr(0, end)) + "...";
}

std::string json_string_array(const std::vector<std::string>& values) {
  boost::json::array array;
  array.reserve(values.size());
  for (const std::string& value : values) array.emplace_back(value);
  return boost::json::serialize(array);
}

Result<std::vector<std::string>> parse_json_string_array(const Connection& db, std::string_view text) {
  auto parsed = json::parse_ijson(text);
  if (!parsed || !parsed->is_array()) {
    return fail(Errc::internal, "registry database " + db.path() + ": a stored name list is not a JSON array");
  }
  std::vector<std::string> values;
  for (const auto& element : parsed->as_array()) {
    if (!element.is_string()) {
      return fail(Errc::internal, "registry database " + db.path() + ": a stored name list holds a non-string");
    }
    values.emplace_back(element.as_string());
  }
  return values;
}

}  // namespace agent_mesh::registry::sqlite

namespace agent_mesh::registry {

std::int64_t SqliteStorage::schema_version() noexcept { return sqlite::kSchemaVersion; }

}  // namespace agent_mesh::registry
