// SqliteStorage's internals, shared by its .cpp files (sqlite_db.cpp: connection, schema and
// helpers; sqlite_storage.cpp: users, groups, credentials, audit; sqlite_cards.cpp: cards, search,
// ACL, revocations). Not part of the storage interface: nothing outside src/registry/sqlite_*.cpp
// includes it.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "registry/sqlite_storage.hpp"

namespace agent_mesh::registry::sqlite {

struct StatementDeleter {
  void operator()(sqlite3_stmt* statement) const noexcept { sqlite3_finalize(statement); }
};
using StatementPtr = std::unique_ptr<sqlite3_stmt, StatementDeleter>;

struct DatabaseDeleter {
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
using DatabasePtr = std::unique_ptr<sqlite3, DatabaseDeleter>;

// The one connection, its prepared-statement cache and the ACL version bookkeeping of the
// transaction in progress. Used under SqliteStorage's mutex only.
class Connection {
 public:
  // Opens (creating the file 0600 and its directories 0700), sets the pragmas and migrates.
  [[nodiscard]] static Result<std::unique_ptr<Connection>> open(const std::filesystem::path& path,
                                                                const SqliteOptions& options);

  // Errc::internal naming the database, the step that failed and SQLite's message.
  [[nodiscard]] Error error(std::string_view what) const;
  [[nodiscard]] Status exec(const char* sql, std::string_view what);
  // The cached prepared statement for `sql` (prepared on first use, SQLITE_PREPARE_PERSISTENT).
  [[nodiscard]] Result<sqlite3_stmt*> statement(const std::string& sql);
  [[nodiscard]] sqlite3* handle() const noexcept { return db_.get(); }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

  // ACL version bookkeeping: bump_acl_version() records the new version in the open transaction;
  // Transaction::commit() publishes it as committed_version for SqliteStorage::locked().
  std::int64_t pending_version = 0;
  std::int64_t committed_version = 0;

 private:
  [[nodiscard]] Status migrate();

  // Declared first so it is destroyed last: the cached statements are finalised before it closes.
  DatabasePtr db_;
  std::string path_;
  std::unordered_map<std::string, StatementPtr> statements_;
};

// A value bound to a positional parameter.
using Binding = std::variant<std::monostate, std::int64_t, std::string>;

// One use of a cached statement. A statement that failed to prepare makes every call return that
// error, so call sites need one check, at the first bind or step. Resets the statement and clears
// its bindings when destroyed, whatever path the use took.
class Query {
 public:
  Query(Connection& db, const std::string& sql);
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;
  ~Query();

  [[nodiscard]] Status bind(int index, std::int64_t value);
  [[nodiscard]] Status bind(int index, std::string_view text);  // copied (SQLITE_TRANSIENT)
  [[nodiscard]] Status bind(int index, const std::string& text) { return bind(index, std::string_view(text)); }
  [[nodiscard]] Status bind(int index, const char* text) { return bind(index, std::string_view(text)); }
  [[nodiscard]] Status bind(int index, const std::optional<std::string>& text);
  [[nodiscard]] Status bind(int index, const std::optional<std::int64_t>& value);
  [[nodiscard]] Status bind(int index, const Binding& value);
  [[nodiscard]] Status bind_null(int index);
  // Binds 1..n in order.
  [[nodiscard]] Status bind_all(const std::vector<Binding>& values);

  // true: a row is ready; false: done.
  [[nodiscard]] Result<bool> step();
  // Steps to the end (statements without rows, or whose rows are not needed).
  [[nodiscard]] Status run();
  // Steps once and reports whether there was a row (for lookups of one row).
  [[nodiscard]] Result<bool> row() { return step(); }

  [[nodiscard]] std::int64_t integer(int column) const noexcept;
  [[nodiscard]] std::string text(int column) const;
  [[nodiscard]] bool is_null(int column) const noexcept;
  [[nodiscard]] std::optional<std::string> optional_text(int column) const;
  [[nodiscard]] std::optional<std::int64_t> optional_integer(int column) const;
  // The primary SQLite result code of the last failed step (0 when none failed).
  [[nodiscard]] int last_error_code() const noexcept { return last_rc_; }

 private:
  [[nodiscard]] Status check(int rc);

  Connection& db_;
  sqlite3_stmt* statement_ = nullptr;
  std::optional<Error> prepare_error_;
  int last_rc_ = 0;
};

// BEGIN IMMEDIATE (write) or BEGIN (read snapshot) … COMMIT; rolls back if destroyed before
// commit(), i.e. on every early error return.
class Transaction {
 public:
  explicit Transaction(Connection& db) noexcept : db_(db) {}
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  [[nodiscard]] Status begin_write();
  [[nodiscard]] Status begin_read();
  [[nodiscard]] Status commit();

 private:
  Connection& db_;
  bool open_ = false;
};

// ---- Helpers shared by the operations ----

// Adds one to the ACL version inside the open transaction.
[[nodiscard]] Status bump_acl_version(Connection& db);
[[nodiscard]] Result<std::int64_t> read_acl_version(Connection& db);

// "<prefix>" + base64url of 16 random bytes.
[[nodiscard]] std::string random_id(std::string_view prefix);
[[nodiscard]] std::string new_uuid();

// hash_secret() output: 64 lower-case hex characters. Error: bad_request.
[[nodiscard]] Status check_secret_hash(std::string_view hash);
// limit within 1..kMaxPageLimit. Error: bad_request.
[[nodiscard]] Status check_page_limit(std::int64_t limit);

// Cursors: base64url of "<kind>:<value>". The kind ties a cursor to its list.
[[nodiscard]] std::string encode_cursor(std::string_view kind, std::string_view value);
// The value of a cursor of this kind. Error: bad_request "cursor: ...".
[[nodiscard]] Result<std::string> decode_cursor(std::string_view kind, std::string_view cursor);
[[nodiscard]] Result<std::int64_t> decode_integer_cursor(std::string_view kind, std::string_view cursor);

// JSON text of an array of strings (for json_each parameters and stored name lists).
[[nodiscard]] std::string json_string_array(const std::vector<std::string>& values);
// Parses what json_string_array() wrote. Error: internal (a corrupt row).
[[nodiscard]] Result<std::vector<std::string>> parse_json_string_array(const Connection& db, std::string_view text);

// Hostile text in an error message is clipped to 64 bytes (docs/design.md "Error model").
[[nodiscard]] std::string clip(std::string_view text);

// Finishes a keyset page: `rows` holds up to limit + 1 items; a surplus item means another page
// follows, whose cursor `cursor_of` makes from the last item kept.
template <class T, class CursorOf>
Page<T> finish_page(std::vector<T> rows, std::int64_t limit, CursorOf&& cursor_of) {
  Page<T> page;
  if (static_cast<std::int64_t>(rows.size()) > limit) {
    rows.resize(static_cast<std::size_t>(limit));
    page.next_cursor = cursor_of(rows.back());
  }
  page.items = std::move(rows);
  return page;
}

// ---- Operations used inside another operation's transaction (a write transaction is open) ----

// sqlite_storage.cpp: checks and counts one use of a setup key.
[[nodiscard]] Result<ConsumedSetupKey> consume_setup_key_in(Connection& db, std::string_view hash, std::int64_t now);
// sqlite_cards.cpp: inserts or replaces a card.
[[nodiscard]] Result<PutCardResult> put_card_in(Connection& db, AgentCardRecord card, std::int64_t now);

}  // namespace agent_mesh::registry::sqlite

namespace agent_mesh::registry {

template <class Body>
auto SqliteStorage::locked(Body&& body) -> decltype(body()) {
  std::int64_t committed = 0;
  auto result = [&] {
    std::lock_guard lock(mutex_);
    db_->pending_version = 0;
    db_->committed_version = 0;
    auto value = body();
    committed = db_->committed_version;
    return value;
  }();
  if (committed != 0) {
    std::function<void(std::int64_t)> listener;
    {
      std::lock_guard lock(listener_mutex_);
      listener = listener_;
    }
    if (listener) listener(committed);
  }
  return result;
}

}  // namespace agent_mesh::registry
