// SqliteStorage: opening, users, groups, API tokens, setup keys, the audit log and status counts.
// Cards, search, ACL, revocations and rotation are in sqlite_cards.cpp; the connection and schema
// in sqlite_db.cpp.
#include <utility>

#include "agent_mesh/json.hpp"
#include "registry/sqlite_db.hpp"

namespace agent_mesh::registry {

using sqlite::Binding;
using sqlite::clip;
using sqlite::Connection;
using sqlite::Query;
using sqlite::Transaction;

namespace {

// ---- Row readers: the column lists and the code reading them side by side ----

constexpr const char* kUserColumns =
    "u.id, u.login, u.provider_subject, u.created_at, "
    "(SELECT g.id FROM groups g WHERE g.personal_user_id = u.id)";

User read_user(const Query& query, int first) {
  User user;
  user.id = query.text(first);
  user.login = query.text(first + 1);
  user.provider_subject = query.optional_text(first + 2);
  user.created_at = query.integer(first + 3);
  user.personal_group_id = query.text(first + 4);
  return user;
}

constexpr const char* kGroupColumns = "g.id, g.name, g.personal_user_id, g.created_by, g.created_at";

Group read_group(const Query& query, int first) {
  Group group;
  group.id = query.text(first);
  group.name = query.text(first + 1);
  group.personal_user_id = query.optional_text(first + 2);
  group.created_by = query.text(first + 3);
  group.created_at = query.integer(first + 4);
  return group;
}

Result<GroupRole> read_role(const Connection& db, const Query& query, int column) {
  const auto role = group_role_from_string(query.text(column));
  if (!role) return fail(Errc::internal, "registry database " + db.path() + ": unknown group role in a row");
  return *role;
}

constexpr const char* kTokenColumns = "t.seq, t.id, t.user_id, t.name, t.created_at, t.expires_at";

ApiToken read_token(const Query& query, int first) {
  ApiToken token;
  token.id = query.text(first + 1);
  token.user_id = query.text(first + 2);
  token.name = query.text(first + 3);
  token.created_at = query.integer(first + 4);
  token.expires_at = query.optional_integer(first + 5);
  return token;
}

constexpr const char* kSetupKeyColumns =
    "k.seq, k.id, k.group_id, k.created_by, k.max_uses, k.uses, k.expires_at, k.created_at, k.last_used_at";

SetupKey read_setup_key(const Query& query, int first) {
  SetupKey key;
  key.id = query.text(first + 1);
  key.group_id = query.text(first + 2);
  key.created_by = query.text(first + 3);
  key.max_uses = query.optional_integer(first + 4);
  key.uses = query.integer(first + 5);
  key.expires_at = query.optional_integer(first + 6);
  key.created_at = query.integer(first + 7);
  key.last_used_at = query.optional_integer(first + 8);
  return key;
}

// One user by a WHERE clause on `u` with one parameter. Error: not_found.
Result<User> find_user_where(Connection& db, const char* where, std::string_view value) {
  Query query(db, std::string("SELECT ") + kUserColumns + " FROM users u WHERE " + where);
  AGENT_MESH_TRY(query.bind(1, value));
  auto row = query.step();
  if (!row) return std::move(row).error();
  if (!*row) return fail(Errc::not_found, "user not found");
  return read_user(query, 0);
}

// True if the single-parameter-per-placeholder query returns a row.
Result<bool> exists(Connection& db, const std::string& sql, const std::vector<Binding>& values) {
  Query query(db, sql);
  AGENT_MESH_TRY(query.bind_all(values));
  return query.step();
}

Status require_group(Connection& db, std::string_view group_id) {
  auto found = exists(db, "SELECT 1 FROM groups WHERE id = ?1", {std::string(group_id)});
  if (!found) return std::move(found).error();
  if (!*found) return fail(Errc::not_found, "group not found");
  return {};
}

Status require_user(Connection& db, std::string_view user_id) {
  auto found = exists(db, "SELECT 1 FROM users WHERE id = ?1", {std::string(user_id)});
  if (!found) return std::move(found).error();
  if (!*found) return fail(Errc::not_found, "user not found");
  return {};
}

Status insert_member(Connection& db, std::string_view group_id, std::string_view user_id, GroupRole role,
                     std::int64_t now) {
  Query insert(db, "INSERT INTO group_members (group_id, user_id, role, added_at) VALUES (?1, ?2, ?3, ?4)");
  AGENT_MESH_TRY(insert.bind(1, group_id));
  AGENT_MESH_TRY(insert.bind(2, user_id));
  AGENT_MESH_TRY(insert.bind(3, to_string(role)));
  AGENT_MESH_TRY(insert.bind(4, now));
  return insert.run();
}

Result<Group> insert_group(Connection& db, std::string_view name, std::string_view creator_id,
                           const std::optional<std::string>& personal_user_id, std::int64_t now) {
  Group group;
  group.id = sqlite::new_uuid();
  group.name = std::string(name);
  group.personal_user_id = personal_user_id;
  group.created_by = std::string(creator_id);
  group.created_at = now;
  Query insert(db, "INSERT INTO groups (id, name, personal_user_id, created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5)");
  AGENT_MESH_TRY(insert.bind(1, group.id));
  AGENT_MESH_TRY(insert.bind(2, group.name));
  AGENT_MESH_TRY(insert.bind(3, group.personal_user_id));
  AGENT_MESH_TRY(insert.bind(4, group.created_by));
  AGENT_MESH_TRY(insert.bind(5, now));
  AGENT_MESH_TRY(insert.run());
  AGENT_MESH_TRY(insert_member(db, group.id, creator_id, GroupRole::owner, now));
  return group;
}

}  // namespace

// ---- Lifetime ----

SqliteStorage::SqliteStorage(std::unique_ptr<sqlite::Connection> connection) noexcept : db_(std::move(connection)) {}
SqliteStorage::~SqliteStorage() = default;

Result<std::unique_ptr<SqliteStorage>> SqliteStorage::open(const std::filesystem::path& path, SqliteOptions options) {
  auto connection = Connection::open(path, options);
  if (!connection) return std::move(connection).error();
  return std::unique_ptr<SqliteStorage>(new SqliteStorage(std::move(connection).value()));
}

void SqliteStorage::set_acl_listener(std::function<void(std::int64_t version)> listener) {
  std::lock_guard lock(listener_mutex_);
  listener_ = std::move(listener);
}

// ---- Users ----

Result<User> SqliteStorage::create_user(const NewUser& new_user, std::int64_t now) {
  if (new_user.login.empty()) return fail(Errc::bad_request, "login must not be empty");
  if (new_user.provider_subject && new_user.provider_subject->empty()) {
    return fail(Errc::bad_request, "provider subject must not be empty when present");
  }
  return locked([&]() -> Result<User> {
    Connection& db = *db_;
    Transaction transaction(db);
    AGENT_MESH_TRY(transaction.begin_write());
    auto taken = exists(db, "SELECT 1 FROM users WHERE login = ?1", {new_user.login});
    if (!taken) return std::move(taken).error();
    if (*taken) return fail(Errc::conflict, "login " + clip(new_user.login) + " is already taken");
    if (new_user.provider_subject) {
      auto linked = exists(db, "SELECT 1 FROM users WHERE provider_subject = ?1", {*new_user.provider_subject});
      if (!linked) return std::move(linked).error();
      if (*linked) return fail(Errc::conflict, "this provider account is already linked to a user");
    }
    User user;
    user.id = sqlite::new_uuid();
    user.login = new_user.login;
    user.provider_subject = new_user.provider_subject;
    user.created_at = now;
    {
      Query insert(db, "INSERT INTO users (id, login, provider_subject, created_at) VALUES (?1, ?2, ?3, ?4)");
      AGENT_MESH_TRY(insert.bind(1, user.id));
      AGENT_MESH_TRY(insert.bind(2, user.login));
      AGENT_MESH_TRY(insert.bind(3, user.provider_subject));
      AGENT_MESH_TRY(insert.bind(4, now));
      AGENT_MESH_TRY(insert.run());
    }
    auto personal = insert_group(db, user.login, user.id, user.id, now);
    if (!personal) return std::move(personal).error();
    user.personal_group_id = personal->id;
    AGENT_MESH_TRY(transaction.commit());
    return user;
  });
}

Result<User> SqliteStorage::find_user(std::string_view user_id) {
  return locked([&] { return find_user_where(*db_, "u.id = ?1", user_id); });
}

Result<User> SqliteStorage::find_user_by_login(std::string_view login) {
  return locked([&] { return find_user_where(*db_, "u.login = ?1", login); });
}

Result<User> SqliteStorage::find_user_by_subject(std::string_view provider_subject) {
  return locked([&] { return find_user_where(*db_, "u.provider_subject = ?1", provider_subject); });
}

Result<std::int64_t> SqliteStorage::count_users() {
  return locked([&]() -> Result<std::int64_t> {
    Query query(*db_, "SELECT count(*) FROM users");
    auto row = query.step();
    if (!row) return std::move(row).error();
    return query.integer(0);
  });
}

Result<std::vector<std::string>> SqliteStorage::all_group_ids() {
  return locked([&]() -> Result<std::vector<std::string>> {
    Query query(*db_, "SELECT id FROM groups ORDER BY id LIMIT ?");
    AGENT_MESH_TRY(query.bind(1, kMaxSnapshotItems));
    std::vector<std::string> ids;
    for (;;) {
      auto row = query.step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      ids.push_back(query.text(0));
    }
    return ids;
  });
}

// ---- Groups ----

Result<Group> SqliteStorage::create_group(std::string_view name, std::string_view creator_id, std::int64_t now) {
  if (name.empty()) return fail(Errc::bad_request, "group name must not be empty");
  return locked([&]() -> Result<Group> {
    Connection& db = *db_;
    Transaction transaction(db);
    AGENT_MESH_TRY(transaction.begin_write());
    AGENT_MESH_TRY(require_user(db, creator_id));
    auto group = insert_group(db, name, creator_id, std::nullopt, now);
    if (!group) return std::move(group).error();
    AGENT_MESH_TRY(transaction.commit());
    return group;
  });
}

Result<Group> SqliteStorage::get_group(std::string_view group_id) {
  return locked([&]() -> Result<Group> {
    Query query(*db_, std::string("SELECT ") + kGroupColumns + " FROM groups g WHERE g.id = ?1");
    AGENT_MESH_TRY(query.bind(1, group_id));
    auto row = query.step();
    if (!row) return std::move(row).error();
    if (!*row) return fail(Errc::not_found, "group not found");
    return read_group(query, 0);
  });
}

Result<std::vector<UserGroup>> SqliteStorage::groups_of_user(std::string_view user_id) {
  return locked([&]() -> Result<std::vector<UserGroup>> {
    Connection& db = *db_;
    Query query(db, std::string("SELECT ") + kGroupColumns +
                        ", m.role, coalesce(g.personal_user_id = ?1, 0) AS personal "
                        "FROM group_members m JOIN groups g ON g.id = m.group_id WHERE m.user_id = ?1 "
                        "ORDER BY personal DESC, g.name, g.id LIMIT ?2");
    AGENT_MESH_TRY(query.bind(1, user_id));
    AGENT_MESH_TRY(query.bind(2, kMaxGroupsPerUserListed));
    std::vector<UserGroup> groups;
    for (;;) {
      auto row = query.step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      UserGroup entry;
      entry.group = read_group(query, 0);
      auto role = read_role(db, query, 5);
      if (!role) return std::move(role).error();
      entry.role = *role;
      entry.personal = query.integer(6) != 0;
      groups.push_back(std::move(entry));
    }
    return groups;
  });
}

Result<std::optional<GroupRole>> SqliteStorage::member_role(std::string_view group_id, std::string_view user_id) {
  return locked([&]() -> Result<std::optional<GroupRole>> {
    Connection& db = *db_;
    Query query(db, "SELECT role FROM group_members WHERE group_id = ?1 AND user_id = ?2");
    AGENT_MESH_TRY(query.bind(1, group_id));
    AGENT_MESH_TRY(query.bind(2, user_id));
    auto row = query.step();
    if (!row) return std::move(row).error();
    if (!*row) return std::optional<GroupRole>{};
    auto role = read_role(db, query, 0);
    if (!role) return std::move(role).error();
    return std::optional<GroupRole>{*role};
  });
}

Status SqliteStorage::add_member(std::string_view group_id, std::string_view user_id, GroupRole role,
                                 std::int64_t now) {
  return locked([&]() -> Status {
    Connection& db = *db_;
    Transaction transaction(db);
    AGENT_MESH_TRY(transaction.begin_write());
    AGENT_MESH_TRY(require_group(db, group_id));
    AGENT_MESH_TRY(require_user(db, user_id));
    auto member = exists(db, "SELECT 1 FROM group_members WHERE group_id = ?1 AND user_id = ?2",
                         {std::string(group_id), std::string(user_id)});
    if (!member) return std::move(member).error();
    if (*member) return fail(Errc::conflict, "the user is already a member of the group");
    AGENT_MESH_TRY(insert_member(db, group_id, user_id, role, now));
    return transaction.commit();
  });
}

Status SqliteStorage::remove_member(std::string_view group_id, std::string_view user_id) {
  return locked([&]() -> Status {
    Connection& db = *db_;
    Transaction transaction(db);
    AGENT_MESH_TRY(transaction.begin_write());
    std::optional<GroupRole> role;
    {
      Query query(db, "SELECT role FROM group_members WHERE group_id = ?1 AND user_id = ?2");
      AGENT_MESH_TRY(query.bind(1, group_id));
      AGENT_MESH_TRY(query.bind(2, user_id));
      auto row = query.step();
      if (!row) return std::move(row).error();
      if (!*row) return fail(Errc::not_found, "the user is not a member of the group");
      auto read = read_role(db, query, 0);
      if (!read) return std::move(read).error();
      role = *read;
    }
    if (role == GroupRole::owner) {
      Query owners(db, "SELECT count(*) FROM group_members WHERE group_id = ?1 AND role = 'owner'");
      AGENT_MESH_TRY(owners.bind(1, group_id));
      auto row = owners.step();
      if (!row) return std::move(row).error();
      if (owners.integer(0) <= 1) {
        return fail(Errc::conflict, "the group's last owner cannot be removed (add another owner first)");
      }
    }
    Query remove(db, "DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2");
    AGENT_MESH_TRY(remove.bind(1, group_id));
    AGENT_MESH_TRY(remove.bind(2, user_id));
    AGENT_MESH_TRY(remove.run());
    return transaction.commit();
  });
}

Result<Page<GroupMember>> SqliteStorage::list_members(std::string_view group_id, const PageRequest& page) {
  AGENT_MESH_TRY(sqlite::check_page_limit(page.limit));
  std::string after;
  if (!page.cursor.empty()) {
    auto decoded = sqlite::decode_cursor("members", page.cursor);
    if (!decoded) return std::move(decoded).error();
    after = std::move(decoded).value();
  }
  return locked([&]() -> Result<Page<GroupMember>> {
    Connection& db = *db_;
    Transaction transaction(db);
    AGENT_MESH_TRY(transaction.begin_read());
    AGENT_MESH_TRY(require_group(db, group_id));
    Query query(db,
                "SELECT m.user_id, u.login, m.role, m.added_at FROM group_members m JOIN users u ON u.id = m.user_id "
                "WHERE m.group_id = ?1 AND m.user_id > ?2 ORDER BY m.user_id LIMIT ?3");
    AGENT_MESH_TRY(query.bind(1, group_id));
    AGENT_MESH_TRY(query.bind(2, after));
    AGENT_MESH_TRY(query.bind(3, page.limit + 1));
    std::vector<GroupMember> members;
    for (;;) {
      auto row = query.step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      GroupMember member;
      member.user_id = query.text(0);
      member.login = query.text(1);
      auto role = read_role(db, query, 2);
      if (!role) return std::move(role).error();
      member.role = *role;
      member.added_at = query.integer(3);
      members.push_back(std::move(member));
    }
    AGENT_MESH_TRY(transaction.commit());
    return sqlite::finish_page(std::move(members), page.limit,
                               [](const GroupMember& last) { return sqlite::encode_cursor("members", last.user_id); });
  });
}

// ---- API tokens ----

Result<ApiToken> SqliteStorage::create_token(const NewApiToken& token, std::int64_t now) {
  AGENT_MESH_TRY(sqlite::check_secret_hash(token.hash));
  return locked([&]() -> Result<ApiToken> {
    Connection& db = *db_;
    Transaction transaction(db);
    AGENT_MESH_TRY(transaction.begin_write());
    AGENT_MESH_TRY(require_user(db, token.user_id));
    auto duplicate = exists(db, "SELECT 1 FROM api_tokens WHERE hash = ?1", {token.hash});
    if (!duplicate) return std::move(duplicate).error();
    if (*duplicate) return fail(Errc::conflict, "an API token with this hash is already stored");
    ApiToken stored;
    stored.id = sqlite::random_id("tok_");
    stored.user_id = token.user_id;
    stored.name = token.name;
    stored.created_at = now;
    stored.expires_at = token.expires_at;
    Query insert(db,
                 "INSERT INTO api_tokens (id, user_id, name, hash, created_at, expires_at) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    AGENT_MESH_TRY(insert.bind(1, stored.id));
    AGENT_MESH_TRY(insert.bind(2, stored.user_id));
    AGENT_MESH_TRY(insert.bind(3, stored.name));
    AGENT_MESH_TRY(insert.bind(4, token.hash));
    AGENT_MESH_TRY(insert.bind(5, now));
    AGENT_MESH_TRY(insert.bind(6, stored.expires_at));
    AGENT_MESH_TRY(insert.run());
    AGENT_MESH_TRY(transaction.commit());
    return stored;
  });
}

Result<Page<ApiToken>> SqliteStorage::list_tokens(std::string_view user_id, const PageRequest& page) {
  AGENT_MESH_TRY(sqlite::check_page_limit(page.limit));
  std::int64_t after = 0;
  if (!page.cursor.empty()) {
    auto decoded = sqlite::decode_integer_cursor("tokens", page.cursor);
    if (!decoded) return std::move(decoded).error();
    after = *decoded;
  }
  return locked([&]() -> Result<Page<ApiToken>> {
    Query query(*db_, std::string("SELECT ") + kTokenColumns +
                          " FROM api_tokens t WHERE t.user_id = ?1 AND t.revoked_at IS NULL AND t.seq > ?2 "
                          "ORDER BY t.seq LIMIT ?3");
    AGENT_MESH_TRY(query.bind(1, user_id));
    AGENT_MESH_TRY(query.bind(2, after));
    AGENT_MESH_TRY(query.bind(3, page.limit + 1));
    std::vector<std::pair<std::int64_t, ApiToken>> rows;
    for (;;) {
      auto row = query.step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      rows.emplace_back(query.integer(0), read_token(query, 0));
    }
    auto keyed = sqlite::finish_page(std::move(rows), page.limit, [](const auto& last) {
      return sqlite::encode_cursor("tokens", std::to_string(last.first));
    });
    Page<ApiToken> result;
    result.next_cursor = std::move(keyed.next_cursor);
    for (auto& [seq, token] : keyed.items) result.items.push_back(std::move(token));
    return result;
  });
}

Status SqliteStorage::revoke_token(std::string_view user_id, std::string_view token_id, std::int64_t now) {
  return locked([&]() -> Status {
    Query query(*db_, "UPDATE api_tokens SET revoked_at = ?3 WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL");
    AGENT_MESH_TRY(query.bind(1, token_id));
    AGENT_MESH_TRY(query.bind(2, user_id));
    AGENT_MESH_TRY(query.bind(3, now));
    AGENT_MESH_TRY(query.run());
    if (sqlite3_changes(db_->handle()) == 0) return fail(Errc::not_found, "token not found");
    return {};
  });
}

Result<TokenMatch> SqliteStorage::find_token(std::string_view hash, std::int64_t now) {
  AGENT_MESH_TRY(sqlite::check_secret_hash(hash));
  return locked([&]() -> Result<TokenMatch> {
    Query query(*db_, std::string("SELECT t.id, t.expires_at, t.revoked_at, ") + kUserColumns +
                          " FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = ?1");
    AGENT_MESH_TRY(query.bind(1, hash));
    auto row = query.step();
    if (!row) return std::move(row).error();
    if (!*row || !query.is_null(2)) return fail(Errc::unauthorized, "API token unknown or revoked");
    const auto expires_at = query.optional_integer(1);
    if (expires_at && now >= *expires_at) return fail(Errc::unauthorized, "API token expired");
    TokenMatch match;
    match.token_id = query.text(0);
    match.user = read_user(query, 3);
    return match;
  });
}

// ---- Setup keys ----

Result<SetupKey> SqliteStorage::create_setup_key(const NewSetupKey& key, std::int64_t now) {
  AGENT_MESH_TRY(sqlite::check_secret_hash(key.hash));
  if (key.max_uses && *key.max_uses < 1) return fail(Errc::bad_request, "max_uses must be at least 1");
  return locked([&]() -> Result<SetupKey> {
    Connection& db = *db_;
    Transaction transaction(db);
    AGENT_MESH_TRY(transaction.begin_write());
    AGENT_MESH_TRY(require_group(db, key.group_id));
    auto duplicate = exists(db, "SELECT 1 FROM setup_keys WHERE hash = ?1", {key.hash});
    if (!duplicate) return std::move(duplicate).error();
    if (*duplicate) return fail(Errc::conflict, "a setup key with this hash is already stored");
    SetupKey stored;
    stored.id = sqlite::random_id("sk_");
    stored.group_id = key.group_id;
    stored.created_by = key.created_by;
    stored.max_uses = key.max_uses;
    stored.expires_at = key.expires_at;
    stored.created_at = now;
    Query insert(db,
                 "INSERT INTO setup_keys (id, group_id, created_by, hash, max_uses, expires_at, created_at) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    AGENT_MESH_TRY(insert.bind(1, stored.id));
    AGENT_MESH_TRY(insert.bind(2, stored.group_id));
    AGENT_MESH_TRY(insert.bind(3, stored.created_by));
    AGENT_MESH_TRY(insert.bind(4, key.hash));
    AGENT_MESH_TRY(insert.bind(5, stored.max_uses));
    AGENT_MESH_TRY(insert.bind(6, stored.expires_at));
    AGENT_MESH_TRY(insert.bind(7, now));
    AGENT_MESH_TRY(insert.run());
    AGENT_MESH_TRY(transaction.commit());
    return stored;
  });
}

Result<SetupKey> SqliteStorage::get_setup_key(std::string_view key_id) {
  return locked([&]() -> Result<SetupKey> {
    Query query(*db_, std::string("SELECT ") + kSetupKeyColumns +
                          " FROM setup_keys k WHERE k.id = ?1 AND k.revoked_at IS NULL");
    AGENT_MESH_TRY(query.bind(1, key_id));
    auto row = query.step();
    if (!row) return std::move(row).error();
    if (!*row) return fail(Errc::not_found, "setup key not found");
    return read_setup_key(query, 0);
  });
}

Result<Page<SetupKey>> SqliteStorage::list_setup_keys(const std::vector<std::string>& group_ids,
                                                      const PageRequest& page) {
  AGENT_MESH_TRY(sqlite::check_page_limit(page.limit));
  std::int64_t after = 0;
  if (!page.cursor.empty()) {
    auto decoded = sqlite::decode_integer_cursor("setup-keys", page.cursor);
    if (!decoded) return std::move(decoded).error();
    after = *decoded;
  }
  const std::string groups = sqlite::json_string_array(group_ids);
  return locked([&]() -> Result<Page<SetupKey>> {
    Query query(*db_, std::string("SELECT ") + kSetupKeyColumns +
                          " FROM setup_keys k WHERE k.group_id IN (SELECT value FROM json_each(?1)) "
                          "AND k.revoked_at IS NULL AND k.seq > ?2 ORDER BY k.seq LIMIT ?3");
    AGENT_MESH_TRY(query.bind(1, groups));
    AGENT_MESH_TRY(query.bind(2, after));
    AGENT_MESH_TRY(query.bind(3, page.limit + 1));
    std::vector<std::pair<std::int64_t, SetupKey>> rows;
    for (;;) {
      auto row = query.step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      rows.emplace_back(query.integer(0), read_setup_key(query, 0));
    }
    auto keyed = sqlite::finish_page(std::move(rows), page.limit, [](const auto& last) {
      return sqlite::encode_cursor("setup-keys", std::to_string(last.first));
    });
    Page<SetupKey> result;
    result.next_cursor = std::move(keyed.next_cursor);
    for (auto& [seq, key] : keyed.items) result.items.push_back(std::move(key));
    return result;
  });
}

Status SqliteStorage::revoke_setup_key(std::string_view key_id, std::int64_t now) {
  return locked([&]() -> Status {
    Query query(*db_, "UPDATE setup_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL");
    AGENT_MESH_TRY(query.bind(1, key_id));
    AGENT_MESH_TRY(query.bind(2, now));
    AGENT_MESH_TRY(query.run());
    if (sqlite3_changes(db_->handle()) == 0) return fail(Errc::not_found, "setup key not found");
    return {};
  });
}

Result<ConsumedSetupKey> sqlite::consume_setup_key_in(Connection& db, std::string_view hash, std::int64_t now) {
  ConsumedSetupKey consumed;
  {
    Query query(db, "SELECT id, group_id, max_uses, uses, expires_at, revoked_at FROM setup_keys WHERE hash = ?1");
    AGENT_MESH_TRY(query.bind(1, hash));
    auto row = query.step();
    if (!row) return std::move(row).error();
    if (!*row) return fail(Errc::unauthorized, "setup key unknown");
    if (!query.is_null(5)) return fail(Errc::unauthorized, "setup key revoked");
    const auto expires_at = query.optional_integer(4);
    if (expires_at && now >= *expires_at) return fail(Errc::unauthorized, "setup key expired");
    const auto max_uses = query.optional_integer(2);
    if (max_uses && query.integer(3) >= *max_uses) return fail(Errc::unauthorized, "setup key used up");
    consumed.setup_key_id = query.text(0);
    consumed.group_id = query.text(1);
  }
  Query count(db, "UPDATE setup_keys SET uses = uses + 1, last_used_at = ?2 WHERE id = ?1");
  AGENT_MESH_TRY(count.bind(1, consumed.setup_key_id));
  AGENT_MESH_TRY(count.bind(2, now));
  AGENT_MESH_TRY(count.run());
  return consumed;
}

Result<ConsumedSetupKey> SqliteStorage::consume_setup_key(std::string_view hash, std::int64_t now) {
  AGENT_MESH_TRY(sqlite::check_secret_hash(hash));
  return locked([&]() -> Result<ConsumedSetupKey> {
    Transaction transaction(*db_);
    AGENT_MESH_TRY(transaction.begin_write());
    auto consumed = sqlite::consume_setup_key_in(*db_, hash, now);
    if (!consumed) return std::move(consumed).error();
    AGENT_MESH_TRY(transaction.commit());
    return consumed;
  });
}

Result<SetupKeyRegistration> SqliteStorage::register_card_with_setup_key(std::string_view hash, AgentCardRecord card,
                                                                         std::int64_t now) {
  AGENT_MESH_TRY(sqlite::check_secret_hash(hash));
  card.owner_id.reset();  // registered by a key, not a user (storage.hpp)
  return locked([&]() -> Result<SetupKeyRegistration> {
    Transaction transaction(*db_);
    AGENT_MESH_TRY(transaction.begin_write());
    auto consumed = sqlite::consume_setup_key_in(*db_, hash, now);
    if (!consumed) return std::move(consumed).error();
    if (consumed->group_id != card.group_id) {
      return fail(Errc::forbidden, "the setup key is for another group than the card's group_id");
    }
    auto put = sqlite::put_card_in(*db_, std::move(card), now);
    if (!put) return std::move(put).error();
    AGENT_MESH_TRY(transaction.commit());
    return SetupKeyRegistration{std::move(consumed).value(), std::move(put).value()};
  });
}

// ---- Audit log and status ----

Result<AuditEntry> SqliteStorage::append_audit(AuditEntry entry) {
  if (entry.detail_json.empty()) entry.detail_json = "{}";
  if (auto detail = json::parse_ijson(entry.detail_json); !detail) {
    return fail(Errc::bad_request, "audit detail is not JSON: " + detail.error().message);
  }
  return locked([&]() -> Result<AuditEntry> {
    Query insert(*db_,
                 "INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5) RETURNING seq");
    AGENT_MESH_TRY(insert.bind(1, entry.at));
    AGENT_MESH_TRY(insert.bind(2, entry.actor));
    AGENT_MESH_TRY(insert.bind(3, entry.action));
    AGENT_MESH_TRY(insert.bind(4, entry.target));
    AGENT_MESH_TRY(insert.bind(5, entry.detail_json));
    auto row = insert.step();
    if (!row) return std::move(row).error();
    entry.id = insert.integer(0);
    AGENT_MESH_TRY(insert.run());
    return std::move(entry);
  });
}

Result<Page<AuditEntry>> SqliteStorage::list_audit(const PageRequest& page) {
  AGENT_MESH_TRY(sqlite::check_page_limit(page.limit));
  std::int64_t before = INT64_MAX;
  if (!page.cursor.empty()) {
    auto decoded = sqlite::decode_integer_cursor("audit", page.cursor);
    if (!decoded) return std::move(decoded).error();
    before = *decoded;
  }
  return locked([&]() -> Result<Page<AuditEntry>> {
    Query query(*db_,
                "SELECT seq, at, actor, action, target, detail FROM audit_log WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2");
    AGENT_MESH_TRY(query.bind(1, before));
    AGENT_MESH_TRY(query.bind(2, page.limit + 1));
    std::vector<AuditEntry> entries;
    for (;;) {
      auto row = query.step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      AuditEntry entry;
      entry.id = query.integer(0);
      entry.at = query.integer(1);
      entry.actor = query.text(2);
      entry.action = query.text(3);
      entry.target = query.text(4);
      entry.detail_json = query.text(5);
      entries.push_back(std::move(entry));
    }
    return sqlite::finish_page(std::move(entries), page.limit, [](const AuditEntry& last) {
      return sqlite::encode_cursor("audit", std::to_string(last.id));
    });
  });
}

Result<StatusCounts> SqliteStorage::status_counts() {
  return locked([&]() -> Result<StatusCounts> {
    Query query(*db_,
                "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM groups), (SELECT count(*) FROM cards), "
                "(SELECT count(*) FROM acl_rules), (SELECT count(*) FROM revocations)");
    auto row = query.step();
    if (!row) return std::move(row).error();
    StatusCounts counts;
    counts.users = query.integer(0);
    counts.groups = query.integer(1);
    counts.agents = query.integer(2);
    counts.rules = query.integer(3);
    counts.revocations = query.integer(4);
    return counts;
  });
}

}  // namespace agent_mesh::registry
