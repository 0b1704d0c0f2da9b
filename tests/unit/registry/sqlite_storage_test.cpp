// The registry's SQLite storage (registry.md "Storage", storage.hpp for the contracts) on real
// database files in a temporary directory, including close-and-reopen tests that show a restart
// keeps everything. Time is passed in: no test sleeps.
#include "registry/sqlite_storage.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <fstream>
#include <mutex>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/identity.hpp"

namespace agent_mesh::registry {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

constexpr std::int64_t kNow = 1'700'000'000'000;  // a plausible Unix time in ms

template <class T>
void expect_error(const Result<T>& result, Errc code, std::string_view message = {}) {
  ASSERT_FALSE(result.ok()) << "expected " << to_string(code);
  EXPECT_EQ(result.error().code, code) << result.error().describe();
  if (!message.empty()) {
    EXPECT_THAT(result.error().message, HasSubstr(std::string(message)));
  }
}

template <class T>
const T& ok(const Result<T>& result) {
  if (!result.ok()) {
    ADD_FAILURE() << result.error().describe();
    std::abort();
  }
  return result.value();
}

void ok(const Status& status) {
  if (!status.ok()) {
    ADD_FAILURE() << status.error().describe();
    std::abort();
  }
}

// hash_secret()'s shape: SHA-256 as 64 lower-case hex characters.
std::string hash_of(std::string_view secret) {
  std::array<std::uint8_t, crypto_hash_sha256_BYTES> digest{};
  crypto_hash_sha256(digest.data(), reinterpret_cast<const unsigned char*>(secret.data()), secret.size());
  return hex_encode(digest);
}

std::string new_agent_id() { return KeyPair::generate().agent_id().str(); }

struct Capability {
  std::string name;
  std::string description;
};

std::string capabilities_json(const std::vector<Capability>& capabilities) {
  std::string json = "[";
  for (const Capability& capability : capabilities) {
    if (json.size() > 1) json += ",";
    json += R"({"name":")" + capability.name + R"(","description":")" + capability.description +
            R"(","input_schema":{"type":"object"}})";
  }
  return json + "]";
}

AgentCardRecord make_card(const std::string& agent_id, const std::string& group_id, const std::string& name,
                          const std::string& description, const std::vector<Capability>& capabilities,
                          std::int64_t timestamp = kNow) {
  AgentCardRecord card;
  card.agent_id = agent_id;
  card.group_id = group_id;
  card.name = name;
  card.description = description;
  card.capabilities_json = capabilities_json(capabilities);
  card.metadata_json = R"({"version":"1.2.3"})";
  card.timestamp = timestamp;
  card.signature = std::string(86, 'A');
  card.card_json = R"({"agent_id":")" + agent_id + R"(","name":")" + name + R"("})";
  return card;
}

class SqliteStorageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "registry-storage-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    path_ = dir_ / "data" / std::string(kDefaultDbFileName);
    store_ = open();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::unique_ptr<SqliteStorage> open() {
    auto store = SqliteStorage::open(path_);
    if (!store.ok()) {
      ADD_FAILURE() << store.error().describe();
      std::abort();
    }
    return std::move(store).value();
  }
  // A restart: the connection is closed and the file opened again.
  void reopen() {
    store_.reset();
    store_ = open();
  }

  User user(const std::string& login) { return ok(store_->create_user({login, "github:" + login}, kNow)); }

  // Runs SQL on the file through a second, raw connection (for checks the interface does not offer).
  void raw_exec(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    char* message = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &message), SQLITE_OK) << (message ? message : "");
    sqlite3_free(message);
    sqlite3_close(db);
  }
  std::string raw_text(const std::string& sql) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    sqlite3_stmt* statement = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &statement, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    std::string text;
    if (sqlite3_step(statement) == SQLITE_ROW && sqlite3_column_text(statement, 0) != nullptr) {
      text = reinterpret_cast<const char*>(sqlite3_column_text(statement, 0));
    }
    sqlite3_finalize(statement);
    sqlite3_close(db);
    return text;
  }

  std::vector<std::string> ids(const std::vector<AgentCardRecord>& cards) {
    std::vector<std::string> result;
    for (const auto& card : cards) result.push_back(card.agent_id);
    return result;
  }

  std::vector<std::string> search_ids(CardQuery query) { return ids(ok(store_->search_cards(query)).items); }

  std::int64_t version() { return ok(store_->acl_version()); }

  std::filesystem::path dir_;
  std::filesystem::path path_;
  std::unique_ptr<SqliteStorage> store_;
};

// ---- Opening and migrations ----

TEST_F(SqliteStorageTest, OpensWithWalForeignKeysAndRecordedMigrations) {
  EXPECT_EQ(SqliteStorage::schema_version(), 1);
  EXPECT_EQ(raw_text("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(raw_text("SELECT group_concat(version) FROM schema_migrations"), "1");
  struct stat info {};
  ASSERT_EQ(::stat(path_.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600U);
  ASSERT_EQ(::stat(path_.parent_path().c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0700U);
  // Foreign keys are on for the storage's connection: a rule can never name a missing card (the
  // raw connection here has them off, so the check goes through the interface).
  const User alice = user("alice");
  expect_error(store_->create_rule({alice.personal_group_id, "*", new_agent_id(), {"*"}, "admin"}, kNow),
               Errc::not_found);
}

TEST_F(SqliteStorageTest, ReopeningAppliesNoMigrationTwice) {
  const User alice = user("alice");
  reopen();
  reopen();
  EXPECT_EQ(raw_text("SELECT count(*) FROM schema_migrations"), "1");
  EXPECT_EQ(ok(store_->find_user(alice.id)).login, "alice");
}

TEST_F(SqliteStorageTest, RefusesADatabaseFromANewerVersion) {
  store_.reset();
  raw_exec("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)");
  auto reopened = SqliteStorage::open(path_);
  expect_error(reopened, Errc::internal, "schema version 99 is newer than this agent-mesh build understands (1)");
}

TEST_F(SqliteStorageTest, OpenFailsWithAMessageNamingThePath) {
  const auto blocked = dir_ / "file";
  { std::ofstream(blocked.string()) << "x"; }
  auto opened = SqliteStorage::open(blocked / "mesh.db");
  expect_error(opened, Errc::internal, blocked.string());
}

// ---- Users and groups ----

TEST_F(SqliteStorageTest, CreatingAUserCreatesItsPersonalGroupWithItAsOwner) {
  const User alice = ok(store_->create_user({"alice", std::nullopt}, kNow));
  EXPECT_TRUE(Uuid::is_valid(alice.id));
  EXPECT_EQ(alice.login, "alice");
  EXPECT_FALSE(alice.provider_subject);
  EXPECT_EQ(alice.created_at, kNow);
  ASSERT_TRUE(Uuid::is_valid(alice.personal_group_id));

  const Group personal = ok(store_->get_group(alice.personal_group_id));
  EXPECT_EQ(personal.name, "alice");
  EXPECT_EQ(personal.personal_user_id, alice.id);
  EXPECT_EQ(personal.created_by, alice.id);
  EXPECT_EQ(ok(store_->member_role(personal.id, alice.id)), GroupRole::owner);
  EXPECT_EQ(ok(store_->count_users()), 1);
}

TEST_F(SqliteStorageTest, UserLoginAndSubjectAreUnique) {
  const User alice = user("alice");
  expect_error(store_->create_user({"Alice", std::nullopt}, kNow), Errc::conflict, "already taken");
  expect_error(store_->create_user({"alice2", "github:alice"}, kNow), Errc::conflict, "already linked");
  expect_error(store_->create_user({"", std::nullopt}, kNow), Errc::bad_request);
  expect_error(store_->create_user({"bob", ""}, kNow), Errc::bad_request);
  EXPECT_EQ(ok(store_->count_users()), 1);
  // Nothing of a refused user was left behind (its personal group neither).
  EXPECT_EQ(ok(store_->status_counts()).groups, 1);
  (void)alice;
}

TEST_F(SqliteStorageTest, FindsUsersByIdLoginAndSubject) {
  const User alice = user("alice");
  const User bob = ok(store_->create_user({"bob", std::nullopt}, kNow + 1));
  EXPECT_EQ(ok(store_->find_user(alice.id)).login, "alice");
  EXPECT_EQ(ok(store_->find_user_by_login("ALICE")).id, alice.id);
  EXPECT_EQ(ok(store_->find_user_by_subject("github:alice")).id, alice.id);
  EXPECT_EQ(ok(store_->find_user(bob.id)).personal_group_id, bob.personal_group_id);
  expect_error(store_->find_user("00000000-0000-4000-8000-000000000000"), Errc::not_found);
  expect_error(store_->find_user_by_login("carol"), Errc::not_found);
  expect_error(store_->find_user_by_subject("github:bob"), Errc::not_found);
  EXPECT_EQ(ok(store_->count_users()), 2);
}

TEST_F(SqliteStorageTest, GroupsOfAUserListPersonalFirstWithRoles) {
  const User alice = user("alice");
  const User bob = user("bob");
  const Group team = ok(store_->create_group("team", alice.id, kNow));
  EXPECT_EQ(team.created_by, alice.id);
  EXPECT_FALSE(team.personal_user_id);
  ok(store_->add_member(team.id, bob.id, GroupRole::member, kNow));
  ok(store_->add_member(alice.personal_group_id, bob.id, GroupRole::admin, kNow));

  const auto groups = ok(store_->groups_of_user(bob.id));
  ASSERT_EQ(groups.size(), 3U);
  EXPECT_EQ(groups[0].group.id, bob.personal_group_id);
  EXPECT_TRUE(groups[0].personal);
  EXPECT_EQ(groups[0].role, GroupRole::owner);
  // Then by name: alice's personal group ("alice") is not personal for bob.
  EXPECT_EQ(groups[1].group.id, alice.personal_group_id);
  EXPECT_FALSE(groups[1].personal);
  EXPECT_EQ(groups[1].role, GroupRole::admin);
  EXPECT_EQ(groups[2].group.id, team.id);
  EXPECT_EQ(groups[2].role, GroupRole::member);

  EXPECT_EQ(ok(store_->member_role(team.id, bob.id)), GroupRole::member);
  EXPECT_EQ(ok(store_->member_role(bob.personal_group_id, alice.id)), std::nullopt);
  EXPECT_EQ(ok(store_->member_role("no-such-group", alice.id)), std::nullopt);
  EXPECT_TRUE(ok(store_->groups_of_user("nobody")).empty());
}

TEST_F(SqliteStorageTest, CreateGroupErrors) {
  const User alice = user("alice");
  expect_error(store_->create_group("", alice.id, kNow), Errc::bad_request);
  expect_error(store_->create_group("team", "no-such-user", kNow), Errc::not_found);
  expect_error(store_->get_group("no-such-group"), Errc::not_found);
}

TEST_F(SqliteStorageTest, AddMemberConflictsAndNotFound) {
  const User alice = user("alice");
  const User bob = user("bob");
  const Group team = ok(store_->create_group("team", alice.id, kNow));
  ok(store_->add_member(team.id, bob.id, GroupRole::admin, kNow));
  expect_error(store_->add_member(team.id, bob.id, GroupRole::member, kNow), Errc::conflict, "already a member");
  expect_error(store_->add_member(team.id, alice.id, GroupRole::member, kNow), Errc::conflict);
  expect_error(store_->add_member("no-such-group", bob.id, GroupRole::member, kNow), Errc::not_found, "group");
  expect_error(store_->add_member(team.id, "no-such-user", GroupRole::member, kNow), Errc::not_found, "user");
  EXPECT_EQ(ok(store_->member_role(team.id, bob.id)), GroupRole::admin);
}

TEST_F(SqliteStorageTest, RemovingTheLastOwnerIsRefused) {
  const User alice = user("alice");
  const User bob = user("bob");
  const Group team = ok(store_->create_group("team", alice.id, kNow));
  expect_error(store_->remove_member(team.id, alice.id), Errc::conflict, "last owner");
  expect_error(store_->remove_member(team.id, bob.id), Errc::not_found);

  ok(store_->add_member(team.id, bob.id, GroupRole::owner, kNow));
  ok(store_->remove_member(team.id, alice.id));
  EXPECT_EQ(ok(store_->member_role(team.id, alice.id)), std::nullopt);
  expect_error(store_->remove_member(team.id, bob.id), Errc::conflict, "last owner");
  // Members and admins can always go.
  ok(store_->add_member(team.id, alice.id, GroupRole::member, kNow));
  ok(store_->remove_member(team.id, alice.id));
}

TEST_F(SqliteStorageTest, ListMembersPaginates) {
  const User owner = user("owner");
  const Group team = ok(store_->create_group("team", owner.id, kNow));
  std::set<std::string> expected{owner.id};
  for (int i = 0; i < 6; ++i) {
    const User member = user("member" + std::to_string(i));
    ok(store_->add_member(team.id, member.id, GroupRole::member, kNow));
    expected.insert(member.id);
  }
  std::set<std::string> seen;
  std::vector<std::string> order;
  PageRequest page{3, ""};
  int pages = 0;
  for (;;) {
    const auto result = ok(store_->list_members(team.id, page));
    ++pages;
    for (const auto& member : result.items) {
      EXPECT_TRUE(seen.insert(member.user_id).second);
      order.push_back(member.user_id);
      EXPECT_FALSE(member.login.empty());
    }
    if (!result.next_cursor) break;
    page.cursor = *result.next_cursor;
  }
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen, expected);
  EXPECT_TRUE(std::is_sorted(order.begin(), order.end()));
  expect_error(store_->list_members("no-such-group", {}), Errc::not_found);
  expect_error(store_->list_members(team.id, {10, "!!"}), Errc::bad_request);
}

// ---- API tokens ----

TEST_F(SqliteStorageTest, TokensAreFoundByHashUntilRevokedOrExpired) {
  const User alice = user("alice");
  const User bob = user("bob");
  const ApiToken forever = ok(store_->create_token({alice.id, "laptop", hash_of("secret-1"), std::nullopt}, kNow));
  const ApiToken brief = ok(store_->create_token({alice.id, "ci", hash_of("secret-2"), kNow + 1000}, kNow));
  EXPECT_THAT(forever.id, ::testing::StartsWith("tok_"));
  EXPECT_EQ(forever.id.size(), 4U + 22U);
  EXPECT_NE(forever.id, brief.id);
  EXPECT_EQ(forever.user_id, alice.id);
  EXPECT_EQ(forever.name, "laptop");

  const TokenMatch match = ok(store_->find_token(hash_of("secret-1"), kNow + 5));
  EXPECT_EQ(match.token_id, forever.id);
  EXPECT_EQ(match.user.id, alice.id);
  EXPECT_EQ(match.user.personal_group_id, alice.personal_group_id);
  EXPECT_EQ(ok(store_->find_token(hash_of("secret-2"), kNow + 999)).token_id, brief.id);
  expect_error(store_->find_token(hash_of("secret-2"), kNow + 1000), Errc::unauthorized, "expired");
  expect_error(store_->find_token(hash_of("unknown"), kNow), Errc::unauthorized, "unknown");
  expect_error(store_->find_token("not-hex", kNow), Errc::bad_request);
  expect_error(store_->find_token(std::string(64, 'A'), kNow), Errc::bad_request);

  // Only the owner revokes, once.
  expect_error(store_->revoke_token(bob.id, forever.id, kNow), Errc::not_found);
  ok(store_->revoke_token(alice.id, forever.id, kNow + 10));
  expect_error(store_->revoke_token(alice.id, forever.id, kNow + 11), Errc::not_found);
  expect_error(store_->revoke_token(alice.id, "tok_unknown", kNow), Errc::not_found);
  expect_error(store_->find_token(hash_of("secret-1"), kNow + 20), Errc::unauthorized, "revoked");

  const auto listed = ok(store_->list_tokens(alice.id, {}));
  ASSERT_EQ(listed.items.size(), 1U);
  EXPECT_EQ(listed.items[0].id, brief.id);
  EXPECT_EQ(listed.items[0].expires_at, kNow + 1000);
  EXPECT_FALSE(listed.next_cursor);
  EXPECT_TRUE(ok(store_->list_tokens(bob.id, {})).items.empty());
}

TEST_F(SqliteStorageTest, CreateTokenErrors) {
  const User alice = user("alice");
  expect_error(store_->create_token({"no-such-user", "x", hash_of("a"), std::nullopt}, kNow), Errc::not_found);
  expect_error(store_->create_token({alice.id, "x", "short", std::nullopt}, kNow), Errc::bad_request);
  ok(store_->create_token({alice.id, "x", hash_of("a"), std::nullopt}, kNow));
  expect_error(store_->create_token({alice.id, "y", hash_of("a"), std::nullopt}, kNow), Errc::conflict);
}

TEST_F(SqliteStorageTest, TokenListPaginatesOldestFirst) {
  const User alice = user("alice");
  std::vector<std::string> created;
  for (int i = 0; i < 7; ++i) {
    created.push_back(ok(store_->create_token({alice.id, "t" + std::to_string(i), hash_of(std::to_string(i)),
                                               std::nullopt}, kNow + i)).id);
  }
  std::vector<std::string> listed;
  PageRequest page{2, ""};
  for (;;) {
    const auto result = ok(store_->list_tokens(alice.id, page));
    for (const auto& token : result.items) listed.push_back(token.id);
    if (!result.next_cursor) break;
    page.cursor = *result.next_cursor;
  }
  EXPECT_EQ(listed, created);
}

// ---- Setup keys ----

TEST_F(SqliteStorageTest, SetupKeysCountUsesUntilUsedUp) {
  const User alice = user("alice");
  const SetupKey key = ok(store_->create_setup_key({alice.personal_group_id, "user:" + alice.id, hash_of("key"), 2,
                                                    std::nullopt}, kNow));
  EXPECT_THAT(key.id, ::testing::StartsWith("sk_"));
  EXPECT_EQ(key.uses, 0);
  EXPECT_EQ(key.max_uses, 2);

  const auto first = ok(store_->consume_setup_key(hash_of("key"), kNow + 1));
  EXPECT_EQ(first.group_id, alice.personal_group_id);
  EXPECT_EQ(first.setup_key_id, key.id);
  ok(store_->consume_setup_key(hash_of("key"), kNow + 2));
  expect_error(store_->consume_setup_key(hash_of("key"), kNow + 3), Errc::unauthorized, "used up");

  const SetupKey after = ok(store_->get_setup_key(key.id));
  EXPECT_EQ(after.uses, 2);
  EXPECT_EQ(after.last_used_at, kNow + 2);
}

TEST_F(SqliteStorageTest, SetupKeysExpireAndRevoke) {
  const User alice = user("alice");
  const SetupKey expiring =
      ok(store_->create_setup_key({alice.personal_group_id, "admin", hash_of("exp"), std::nullopt, kNow + 100}, kNow));
  const SetupKey unlimited =
      ok(store_->create_setup_key({alice.personal_group_id, "admin", hash_of("unl"), std::nullopt, std::nullopt}, kNow));
  ok(store_->consume_setup_key(hash_of("exp"), kNow + 99));
  expect_error(store_->consume_setup_key(hash_of("exp"), kNow + 100), Errc::unauthorized, "expired");
  for (int i = 0; i < 5; ++i) ok(store_->consume_setup_key(hash_of("unl"), kNow + i));
  ok(store_->revoke_setup_key(unlimited.id, kNow + 10));
  expect_error(store_->consume_setup_key(hash_of("unl"), kNow + 11), Errc::unauthorized, "revoked");
  expect_error(store_->revoke_setup_key(unlimited.id, kNow + 12), Errc::not_found);
  expect_error(store_->get_setup_key(unlimited.id), Errc::not_found);
  expect_error(store_->consume_setup_key(hash_of("nope"), kNow), Errc::unauthorized, "unknown");
  expect_error(store_->consume_setup_key("zz", kNow), Errc::bad_request);
  EXPECT_EQ(ok(store_->get_setup_key(expiring.id)).uses, 1);
}

TEST_F(SqliteStorageTest, CreateSetupKeyErrors) {
  const User alice = user("alice");
  expect_error(store_->create_setup_key({"no-such-group", "admin", hash_of("k"), std::nullopt, std::nullopt}, kNow),
               Errc::not_found);
  expect_error(store_->create_setup_key({alice.personal_group_id, "admin", hash_of("k"), 0, std::nullopt}, kNow),
               Errc::bad_request);
  expect_error(store_->create_setup_key({alice.personal_group_id, "admin", "nothex", 1, std::nullopt}, kNow),
               Errc::bad_request);
  ok(store_->create_setup_key({alice.personal_group_id, "admin", hash_of("k"), 1, std::nullopt}, kNow));
  expect_error(store_->create_setup_key({alice.personal_group_id, "admin", hash_of("k"), 1, std::nullopt}, kNow),
               Errc::conflict);
}

TEST_F(SqliteStorageTest, SetupKeyListIsScopedToGroups) {
  const User alice = user("alice");
  const User bob = user("bob");
  std::vector<std::string> alices;
  for (int i = 0; i < 5; ++i) {
    alices.push_back(ok(store_->create_setup_key({alice.personal_group_id, "admin", hash_of("a" + std::to_string(i)),
                                                  std::nullopt, std::nullopt}, kNow)).id);
  }
  const SetupKey bobs =
      ok(store_->create_setup_key({bob.personal_group_id, "admin", hash_of("b"), std::nullopt, std::nullopt}, kNow));
  ok(store_->revoke_setup_key(alices[4], kNow));
  alices.pop_back();

  std::vector<std::string> listed;
  PageRequest page{3, ""};
  for (;;) {
    const auto result = ok(store_->list_setup_keys({alice.personal_group_id}, page));
    for (const auto& key : result.items) {
      EXPECT_EQ(key.group_id, alice.personal_group_id);
      listed.push_back(key.id);
    }
    if (!result.next_cursor) break;
    page.cursor = *result.next_cursor;
  }
  EXPECT_EQ(listed, alices);
  const auto both = ok(store_->list_setup_keys({alice.personal_group_id, bob.personal_group_id}, {200, ""}));
  EXPECT_EQ(both.items.size(), 5U);
  EXPECT_EQ(both.items.back().id, bobs.id);
  EXPECT_TRUE(ok(store_->list_setup_keys({}, {})).items.empty());
}

TEST_F(SqliteStorageTest, RegisteringWithASetupKeyIsOneTransaction) {
  const User alice = user("alice");
  const User bob = user("bob");
  ok(store_->create_setup_key({alice.personal_group_id, "admin", hash_of("key"), 1, std::nullopt}, kNow));

  // The card is for another group: refused, and the single use is not spent.
  const std::string agent = new_agent_id();
  expect_error(store_->register_card_with_setup_key(
                   hash_of("key"), make_card(agent, bob.personal_group_id, "a", "d", {{"echo", "e"}}), kNow),
               Errc::forbidden);
  // The card itself is refused: the use is rolled back with it.
  AgentCardRecord broken = make_card(agent, alice.personal_group_id, "a", "d", {{"echo", "e"}});
  broken.capabilities_json = "{}";
  expect_error(store_->register_card_with_setup_key(hash_of("key"), broken, kNow), Errc::bad_request);

  AgentCardRecord card = make_card(agent, alice.personal_group_id, "a", "d", {{"echo", "e"}});
  card.owner_id = alice.id;  // ignored: a key registers ownerless cards
  const auto registered = ok(store_->register_card_with_setup_key(hash_of("key"), card, kNow + 1));
  EXPECT_EQ(registered.key.group_id, alice.personal_group_id);
  EXPECT_TRUE(registered.put.created);
  EXPECT_FALSE(registered.put.card.owner_id);
  EXPECT_FALSE(ok(store_->get_card(agent)).owner_id);
  expect_error(store_->register_card_with_setup_key(
                   hash_of("key"), make_card(new_agent_id(), alice.personal_group_id, "b", "d", {{"x", "y"}}), kNow),
               Errc::unauthorized, "used up");
  EXPECT_EQ(ok(store_->status_counts()).agents, 1);
}

// ---- Cards ----

TEST_F(SqliteStorageTest, PutCardInsertsThenReplacesKeepingRegisteredAt) {
  const User alice = user("alice");
  const std::string agent = new_agent_id();
  AgentCardRecord card = make_card(agent, alice.personal_group_id, "Translator", "Translates", {{"translate", "t"}});
  card.owner_id = alice.id;
  const auto first = ok(store_->put_card(card, kNow + 10));
  EXPECT_TRUE(first.created);
  EXPECT_EQ(first.card.registered_at, kNow + 10);
  EXPECT_EQ(first.card.updated_at, kNow + 10);

  const AgentCardRecord stored = ok(store_->get_card(agent));
  EXPECT_EQ(stored.agent_id, agent);
  EXPECT_EQ(stored.group_id, alice.personal_group_id);
  EXPECT_EQ(stored.owner_id, alice.id);
  EXPECT_EQ(stored.name, "Translator");
  EXPECT_EQ(stored.description, "Translates");
  EXPECT_EQ(stored.capabilities_json, card.capabilities_json);
  EXPECT_EQ(stored.metadata_json, card.metadata_json);
  EXPECT_EQ(stored.timestamp, kNow);
  EXPECT_EQ(stored.signature, card.signature);
  EXPECT_EQ(stored.card_json, card.card_json);

  AgentCardRecord newer = make_card(agent, alice.personal_group_id, "Translator 2", "", {{"translate", "t2"}}, kNow + 1);
  newer.description.reset();
  newer.metadata_json.reset();
  const auto second = ok(store_->put_card(newer, kNow + 20));
  EXPECT_FALSE(second.created);
  EXPECT_FALSE(second.moved_from_group);
  const AgentCardRecord replaced = ok(store_->get_card(agent));
  EXPECT_EQ(replaced.name, "Translator 2");
  EXPECT_FALSE(replaced.description);
  EXPECT_FALSE(replaced.metadata_json);
  EXPECT_EQ(replaced.registered_at, kNow + 10);
  EXPECT_EQ(replaced.updated_at, kNow + 20);
  EXPECT_EQ(replaced.owner_id, alice.id) << "an absent owner_id keeps the stored owner";

  // No replay, no rollback.
  expect_error(store_->put_card(newer, kNow + 30), Errc::conflict, "not newer");
  expect_error(store_->put_card(make_card(agent, alice.personal_group_id, "old", "", {{"a", "b"}}, kNow - 1), kNow),
               Errc::conflict);
  EXPECT_EQ(ok(store_->get_card(agent)).name, "Translator 2");
}

TEST_F(SqliteStorageTest, PutCardErrors) {
  const User alice = user("alice");
  const std::string agent = new_agent_id();
  expect_error(store_->put_card(make_card(agent, "no-such-group", "a", "d", {{"c", "d"}}), kNow), Errc::not_found,
               "group");
  AgentCardRecord card = make_card(agent, alice.personal_group_id, "a", "d", {{"c", "d"}});
  card.owner_id = "no-such-user";
  expect_error(store_->put_card(card, kNow), Errc::not_found, "owner");
  for (const char* capabilities : {"", "{}", "[1]", R"([{"description":"x"}])", R"([{"name":""}])",
                                   R"([{"name":"a","description":7}])", "[{\"name\":\"a\""}) {
    card = make_card(agent, alice.personal_group_id, "a", "d", {});
    card.capabilities_json = capabilities;
    expect_error(store_->put_card(card, kNow), Errc::bad_request, "capabilities");
  }
  card = make_card(agent, alice.personal_group_id, "a", "d", {{"c", "d"}});
  card.metadata_json = "[]";
  expect_error(store_->put_card(card, kNow), Errc::bad_request, "metadata");
  card = make_card(agent, alice.personal_group_id, "", "d", {{"c", "d"}});
  expect_error(store_->put_card(card, kNow), Errc::bad_request, "name");
  expect_error(store_->get_card(agent), Errc::not_found);
  EXPECT_EQ(ok(store_->status_counts()).agents, 0);
}

TEST_F(SqliteStorageTest, DeletingACardDeletesItsRulesAndIndexEntries) {
  const User alice = user("alice");
  const std::string group = alice.personal_group_id;
  const std::string agent = new_agent_id();
  const std::string other = new_agent_id();
  ok(store_->put_card(make_card(agent, group, "Zebra", "stripes", {{"gallop", "runs fast"}}), kNow));
  ok(store_->put_card(make_card(other, group, "Horse", "plain", {{"trot", "walks"}}), kNow));
  const AclRule rule = ok(store_->create_rule({group, "*", agent, {"gallop"}, "admin"}, kNow));
  const AclRule kept = ok(store_->create_rule({group, agent, other, {"*"}, "admin"}, kNow));

  ok(store_->delete_card(agent));
  expect_error(store_->get_card(agent), Errc::not_found);
  expect_error(store_->get_rule(rule.id), Errc::not_found);
  EXPECT_EQ(ok(store_->get_rule(kept.id)).source, agent) << "rules from the agent stay until deleted";
  EXPECT_TRUE(search_ids({{group}, std::nullopt, std::nullopt, "zebra", std::nullopt, {}}).empty());
  EXPECT_TRUE(search_ids({{group}, std::nullopt, "gallop", std::nullopt, std::nullopt, {}}).empty());
  expect_error(store_->delete_card(agent), Errc::not_found);
  // The card may come back (it was deleted, not revoked).
  ok(store_->put_card(make_card(agent, group, "Zebra", "stripes", {{"gallop", "runs fast"}}, kNow + 1), kNow + 1));
}

TEST_F(SqliteStorageTest, MovingACardToAnotherGroupDropsItsOldGroupsRules) {
  const User alice = user("alice");
  const Group team = ok(store_->create_group("team", alice.id, kNow));
  const std::string agent = new_agent_id();
  ok(store_->put_card(make_card(agent, alice.personal_group_id, "A", "", {{"c", ""}}), kNow));
  const AclRule rule = ok(store_->create_rule({alice.personal_group_id, "*", agent, {"*"}, "admin"}, kNow));
  const std::int64_t before = version();
  const auto moved = ok(store_->put_card(make_card(agent, team.id, "A", "", {{"c", ""}}, kNow + 1), kNow + 1));
  EXPECT_EQ(moved.moved_from_group, alice.personal_group_id);
  EXPECT_EQ(version(), before + 1);
  expect_error(store_->get_rule(rule.id), Errc::not_found);
  EXPECT_EQ(ok(store_->get_card(agent)).group_id, team.id);
}

// ---- Search ----

class SqliteSearchTest : public SqliteStorageTest {
 protected:
  void SetUp() override {
    SqliteStorageTest::SetUp();
    alice_ = user("alice");
    bob_ = user("bob");
    team_ = ok(store_->create_group("team", alice_.id, kNow));
  }
  std::string put(const std::string& group, const std::string& name, const std::string& description,
                  const std::vector<Capability>& capabilities) {
    const std::string agent = new_agent_id();
    ok(store_->put_card(make_card(agent, group, name, description, capabilities), kNow));
    return agent;
  }
  CardQuery in(std::vector<std::string> groups) {
    CardQuery query;
    query.visible_groups = std::move(groups);
    return query;
  }
  User alice_;
  User bob_;
  Group team_;
};

TEST_F(SqliteSearchTest, NeverReturnsCardsOfGroupsNotVisible) {
  const std::string a1 = put(alice_.personal_group_id, "alpha", "shared words", {{"echo", "shared"}});
  const std::string a2 = put(team_.id, "beta", "shared words", {{"echo", "shared"}});
  const std::string b1 = put(bob_.personal_group_id, "gamma", "shared words", {{"echo", "shared"}});

  EXPECT_THAT(search_ids(in({alice_.personal_group_id, team_.id})), UnorderedElementsAre(a1, a2));
  EXPECT_THAT(search_ids(in({bob_.personal_group_id})), ElementsAre(b1));
  EXPECT_TRUE(search_ids(in({})).empty());
  EXPECT_TRUE(search_ids(in({"no-such-group"})).empty());

  for (const auto& variant : {std::optional<std::string>{}, std::optional<std::string>{"shared"}}) {
    CardQuery query = in({alice_.personal_group_id, team_.id});
    query.q = variant;
    query.capability = "echo";
    EXPECT_THAT(search_ids(query), UnorderedElementsAre(a1, a2));
    // One group narrows; a group outside the visible set gives nothing, never its cards.
    query.group = team_.id;
    EXPECT_THAT(search_ids(query), ElementsAre(a2));
    query.group = bob_.personal_group_id;
    EXPECT_TRUE(search_ids(query).empty());
  }
}

TEST_F(SqliteSearchTest, CapabilityFilterMatchesNamesExactly) {
  const std::string translator = put(team_.id, "t", "", {{"translate", "x"}, {"summarize", "y"}});
  const std::string other = put(team_.id, "o", "", {{"translate_text", "x"}});
  CardQuery query = in({team_.id});
  query.capability = "translate";
  EXPECT_THAT(search_ids(query), ElementsAre(translator));
  query.capability = "summarize";
  EXPECT_THAT(search_ids(query), ElementsAre(translator));
  query.capability = "translate_text";
  EXPECT_THAT(search_ids(query), ElementsAre(other));
  query.capability = "Translate";
  EXPECT_TRUE(search_ids(query).empty());
  query.capability = "transl";
  EXPECT_TRUE(search_ids(query).empty());
}

TEST_F(SqliteSearchTest, NameMatchesRankAboveCapabilityDescriptionMatches) {
  const std::string by_description =
      put(team_.id, "Assistant", "general helper", {{"lookup", "finds a weather report for a city"}});
  const std::string by_name = put(team_.id, "Weather", "forecasts", {{"forecast", "tomorrow"}});
  const std::string unrelated = put(team_.id, "Calculator", "adds numbers", {{"add", "sum"}});
  const std::string by_card_description = put(team_.id, "Helper", "knows the weather", {{"ask", "answers"}});
  (void)unrelated;

  CardQuery query = in({team_.id});
  query.q = "weather";
  EXPECT_THAT(search_ids(query), ElementsAre(by_name, by_card_description, by_description));
  query.q = "WEATHER";  // case-insensitive
  EXPECT_THAT(search_ids(query), ElementsAre(by_name, by_card_description, by_description));
  query.q = "weather city";  // terms are ANDed
  EXPECT_THAT(search_ids(query), ElementsAre(by_description));
  query.q = "forecasting";  // porter stemming: forecasting ~ forecasts ~ forecast
  EXPECT_THAT(search_ids(query), ElementsAre(by_name));
  query.q = "wea*";  // prefix
  EXPECT_EQ(search_ids(query).size(), 3U);
}

TEST_F(SqliteSearchTest, IndexFollowsReplacedCards) {
  const std::string agent = new_agent_id();
  ok(store_->put_card(make_card(agent, team_.id, "Old name", "", {{"oldcap", "aardvark"}}), kNow));
  ok(store_->put_card(make_card(agent, team_.id, "New name", "", {{"newcap", "zeppelin"}}, kNow + 1), kNow + 1));
  CardQuery query = in({team_.id});
  for (const char* gone : {"old", "aardvark", "oldcap"}) {
    query.q = gone;
    EXPECT_TRUE(search_ids(query).empty()) << gone;
  }
  for (const char* found : {"new", "zeppelin", "newcap"}) {
    query.q = found;
    EXPECT_THAT(search_ids(query), ElementsAre(agent)) << found;
  }
  query.q.reset();
  query.capability = "oldcap";
  EXPECT_TRUE(search_ids(query).empty());
  query.capability = "newcap";
  EXPECT_THAT(search_ids(query), ElementsAre(agent));
}

TEST_F(SqliteSearchTest, OnlineFilterUsesTheGivenSet) {
  const std::string a = put(team_.id, "a", "", {{"c", ""}});
  const std::string b = put(team_.id, "b", "", {{"c", ""}});
  const std::string c = put(team_.id, "c", "", {{"c", ""}});
  CardQuery query = in({team_.id});
  query.online = OnlineFilter{true, {a, c, "someone-elsewhere"}};
  EXPECT_THAT(search_ids(query), UnorderedElementsAre(a, c));
  query.online = OnlineFilter{false, {a, c}};
  EXPECT_THAT(search_ids(query), ElementsAre(b));
  query.online = OnlineFilter{true, {}};
  EXPECT_TRUE(search_ids(query).empty());
  query.online = OnlineFilter{false, {}};
  EXPECT_EQ(search_ids(query).size(), 3U);
  query.online = OnlineFilter{true, {R"(it's "quoted")", a}};
  EXPECT_THAT(search_ids(query), ElementsAre(a));
}

TEST_F(SqliteSearchTest, KeysetPagesHaveNoDuplicatesAndNoGaps) {
  std::set<std::string> expected;
  for (int i = 0; i < 23; ++i) expected.insert(put(team_.id, "agent " + std::to_string(i), "", {{"c", ""}}));
  put(bob_.personal_group_id, "not visible", "", {{"c", ""}});

  CardQuery query = in({team_.id});
  query.page.limit = 5;
  std::vector<std::string> seen;
  int pages = 0;
  for (;;) {
    const auto page = ok(store_->search_cards(query));
    ++pages;
    EXPECT_LE(page.items.size(), 5U);
    for (const auto& card : page.items) seen.push_back(card.agent_id);
    if (!page.next_cursor) break;
    query.page.cursor = *page.next_cursor;
    // A card deleted before the cursor does not disturb the pages after it.
    if (pages == 2) {
      ok(store_->delete_card(seen.front()));
      expected.erase(seen.front());
      seen.erase(seen.begin());
    }
  }
  EXPECT_EQ(pages, 5);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), seen.size()) << "duplicates";
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()), expected) << "gaps";
}

TEST_F(SqliteSearchTest, FullTextPagesHaveNoDuplicatesAndNoGaps) {
  std::set<std::string> expected;
  for (int i = 0; i < 12; ++i) {
    // Different lengths give different bm25 scores; some tie, so agent_id breaks ties.
    expected.insert(put(team_.id, "robot " + std::string(static_cast<std::size_t>(i % 4), 'x'), "", {{"c", ""}}));
  }
  put(team_.id, "human", "", {{"c", ""}});
  CardQuery query = in({team_.id});
  query.q = "robot";
  const std::vector<std::string> all = search_ids([&] {
    CardQuery everything = query;
    everything.page.limit = 200;
    return everything;
  }());
  ASSERT_EQ(all.size(), 12U);

  query.page.limit = 5;
  std::vector<std::string> paged;
  for (;;) {
    const auto page = ok(store_->search_cards(query));
    for (const auto& card : page.items) paged.push_back(card.agent_id);
    if (!page.next_cursor) break;
    query.page.cursor = *page.next_cursor;
  }
  EXPECT_EQ(paged, all);
  EXPECT_EQ(std::set<std::string>(paged.begin(), paged.end()), expected);
}

TEST_F(SqliteSearchTest, MalformedCursorsAndLimitsAreBadRequests) {
  put(team_.id, "a", "", {{"c", ""}});
  const std::string rules_cursor = [&] {
    const std::string agent = put(team_.id, "b", "", {{"c", ""}});
    ok(store_->create_rule({team_.id, "*", agent, {"*"}, "admin"}, kNow));
    ok(store_->create_rule({team_.id, "*", agent, {"*"}, "admin"}, kNow));
    return *ok(store_->list_rules({team_.id}, {1, ""})).next_cursor;
  }();
  CardQuery query = in({team_.id});
  query.page.limit = 1;
  const std::string keyset_cursor = *ok(store_->search_cards(query)).next_cursor;
  CardQuery full_text = query;
  full_text.q = "c*";

  for (const std::string& cursor :
       {std::string("!!!"), std::string("a"), std::string("YQ=="), std::string(300, 'A'), rules_cursor,
        base64url_encode(as_bytes("cards-q:-5")), base64url_encode(as_bytes("cards-q:12x")),
        base64url_encode(as_bytes("cards-q:99999999999999999999")), base64url_encode(as_bytes("cards"))}) {
    query.page.cursor = cursor;
    expect_error(store_->search_cards(query), Errc::bad_request, "cursor");
    full_text.page.cursor = cursor;
    expect_error(store_->search_cards(full_text), Errc::bad_request, "cursor");
  }
  // A cursor of the other ordering is refused rather than misread.
  full_text.page.cursor = keyset_cursor;
  expect_error(store_->search_cards(full_text), Errc::bad_request, "cursor");

  query.page.cursor.clear();
  for (const std::int64_t limit : {0, -1, 201}) {
    query.page.limit = limit;
    expect_error(store_->search_cards(query), Errc::bad_request, "limit");
  }
  query.page.limit = 200;
  EXPECT_EQ(ok(store_->search_cards(query)).items.size(), 2U);
  for (auto list : {0, 1, 2, 3, 4}) {
    const PageRequest bad{10, "%%%"};
    switch (list) {
      case 0: expect_error(store_->list_rules({team_.id}, bad), Errc::bad_request); break;
      case 1: expect_error(store_->list_revocations(bad), Errc::bad_request); break;
      case 2: expect_error(store_->list_audit(bad), Errc::bad_request); break;
      case 3: expect_error(store_->list_tokens(alice_.id, bad), Errc::bad_request); break;
      case 4: expect_error(store_->list_setup_keys({team_.id}, bad), Errc::bad_request); break;
    }
  }
}

TEST_F(SqliteSearchTest, HostileFullTextInputNeverFails) {
  const std::string agent = put(team_.id, "Quote \"master\" NEAR parens (x)", "AND OR NOT", {{"c", "d"}});
  const std::vector<std::string> hostile = {
      "\"",          "\"\"",         "'",           "a\"b",        "NEAR",        "NEAR(a b)",   "NEAR(a b, 5)",
      "a NEAR b",    "*",            "**",          "a*b",         "*a",          "(",           ")",
      "((a)",        "a OR",         "OR",          "AND",         "NOT",         "NOT a",       "a AND NOT",
      "-a",          "+a",           "^a",          "name:a",      "{name}: a",   "col:",        ":",
      "a:b:c",       "\\",           "%",           "_",           ";DROP TABLE cards;--",       "\x01\x02",
      std::string("a\0b", 3),        "\t\n\r",      " ",           "",            "é",           "日本語",
      "😀",          "\xff\xfe",     "\"master\"",  "quote master", "(x)",        std::string(1024, 'a'),
  };
  CardQuery query = in({team_.id});
  for (const std::string& q : hostile) {
    query.q = q;
    auto result = store_->search_cards(query);
    EXPECT_TRUE(result.ok()) << "q=" << q << ": " << (result.ok() ? "" : result.error().describe());
  }
  // Operators and quotes are searched for as text.
  for (const char* q : {"\"master\"", "NEAR", "(x)", "AND", "quote* master"}) {
    query.q = q;
    EXPECT_THAT(search_ids(query), ElementsAre(agent)) << q;
  }
  query.q = std::string(1025, 'a');
  expect_error(store_->search_cards(query), Errc::bad_request, "q");
  std::string many_terms;
  for (int i = 0; i < 33; ++i) many_terms += "t" + std::to_string(i) + " ";
  query.q = many_terms;
  expect_error(store_->search_cards(query), Errc::bad_request, "terms");
  // No terms at all is no full-text filter.
  query.q = "  * ** ";
  EXPECT_THAT(search_ids(query), ElementsAre(agent));
}

// ---- ACL ----

TEST_F(SqliteStorageTest, AclRulesCreateGetDeleteAndList) {
  const User alice = user("alice");
  const User bob = user("bob");
  const std::string group = alice.personal_group_id;
  const std::string target = new_agent_id();
  const std::string foreign = new_agent_id();
  ok(store_->put_card(make_card(target, group, "t", "", {{"c", ""}}), kNow));
  ok(store_->put_card(make_card(foreign, bob.personal_group_id, "f", "", {{"c", ""}}), kNow));

  const AclRule rule = ok(store_->create_rule({group, "*", target, {"translate", "summarize"}, "user:" + alice.id},
                                              kNow + 5));
  EXPECT_THAT(rule.id, ::testing::StartsWith("acl_"));
  const AclRule fetched = ok(store_->get_rule(rule.id));
  EXPECT_EQ(fetched.group_id, group);
  EXPECT_EQ(fetched.source, "*");
  EXPECT_EQ(fetched.target, target);
  EXPECT_THAT(fetched.allowed_capabilities, ElementsAre("translate", "summarize"));
  EXPECT_EQ(fetched.created_by, "user:" + alice.id);
  EXPECT_EQ(fetched.created_at, kNow + 5);

  expect_error(store_->create_rule({group, "*", foreign, {"*"}, "admin"}, kNow), Errc::not_found, "not registered");
  expect_error(store_->create_rule({group, "*", new_agent_id(), {"*"}, "admin"}, kNow), Errc::not_found);
  expect_error(store_->create_rule({"no-such-group", "*", target, {"*"}, "admin"}, kNow), Errc::not_found, "group");
  expect_error(store_->create_rule({group, "*", target, {}, "admin"}, kNow), Errc::bad_request);
  expect_error(store_->create_rule({group, "", target, {"*"}, "admin"}, kNow), Errc::bad_request);

  std::vector<std::string> created{rule.id};
  for (int i = 0; i < 4; ++i) {
    created.push_back(ok(store_->create_rule({group, new_agent_id(), target, {"*"}, "admin"}, kNow)).id);
  }
  const AclRule bobs = ok(store_->create_rule({bob.personal_group_id, "*", foreign, {"*"}, "admin"}, kNow));
  std::vector<std::string> listed;
  PageRequest page{2, ""};
  for (;;) {
    const auto result = ok(store_->list_rules({group}, page));
    for (const auto& item : result.items) listed.push_back(item.id);
    if (!result.next_cursor) break;
    page.cursor = *result.next_cursor;
  }
  EXPECT_EQ(listed, created);
  EXPECT_EQ(ok(store_->rules_for_target(target)).size(), 5U);
  EXPECT_EQ(ok(store_->rules_for_target(foreign)).front().id, bobs.id);

  ok(store_->delete_rule(rule.id));
  expect_error(store_->get_rule(rule.id), Errc::not_found);
  expect_error(store_->delete_rule(rule.id), Errc::not_found);
  EXPECT_EQ(ok(store_->rules_for_target(target)).size(), 4U);
}

TEST_F(SqliteStorageTest, AclVersionGrowsWithEveryChangeThatAltersSync) {
  const User alice = user("alice");
  const Group team = ok(store_->create_group("team", alice.id, kNow));
  std::vector<std::int64_t> heard;
  std::mutex heard_mutex;
  store_->set_acl_listener([&](std::int64_t v) {
    std::lock_guard lock(heard_mutex);
    heard.push_back(v);
  });
  const std::string group = alice.personal_group_id;
  std::int64_t expected = version();
  EXPECT_EQ(expected, 1);
  auto expect_bump = [&](const char* what, bool bumped) {
    if (bumped) ++expected;
    EXPECT_EQ(version(), expected) << what;
  };

  const std::string a = new_agent_id();
  const std::string b = new_agent_id();
  ok(store_->put_card(make_card(a, group, "a", "", {{"c", ""}}), kNow));
  expect_bump("card registered", true);
  ok(store_->put_card(make_card(b, group, "b", "", {{"c", ""}}), kNow));
  expect_bump("card registered", true);
  ok(store_->put_card(make_card(a, group, "a2", "", {{"c", ""}}, kNow + 1), kNow));
  expect_bump("card updated in place", false);
  const AclRule rule = ok(store_->create_rule({group, "*", a, {"*"}, "admin"}, kNow));
  expect_bump("rule created", true);
  expect_error(store_->create_rule({group, "*", "nobody", {"*"}, "admin"}, kNow), Errc::not_found);
  expect_bump("refused rule", false);
  ok(store_->delete_rule(rule.id));
  expect_bump("rule deleted", true);
  ok(store_->put_card(make_card(b, team.id, "b", "", {{"c", ""}}, kNow + 1), kNow));
  expect_bump("card moved", true);
  ok(store_->delete_card(b));
  expect_bump("card deleted", true);
  ok(store_->add_member(team.id, user("bob").id, GroupRole::member, kNow));
  expect_bump("user membership", false);
  ok(store_->store_revocation({a, RevocationKind::self, "lost", kNow, kNow, "{}"}, kNow));
  expect_bump("revocation stored", true);
  ok(store_->store_revocation({a, RevocationKind::admin, "again", kNow + 5, kNow + 5, "{}"}, kNow + 5));
  expect_bump("repeated revocation", false);

  std::lock_guard lock(heard_mutex);
  std::vector<std::int64_t> all(expected - 1);
  std::iota(all.begin(), all.end(), 2);
  EXPECT_EQ(heard, all) << "the listener hears every committed version, once";
}

TEST_F(SqliteStorageTest, AclSnapshotHasRulesGroupAgentsAndRevocations) {
  const User alice = user("alice");
  const std::string group = alice.personal_group_id;
  const std::string a = new_agent_id();
  const std::string b = new_agent_id();
  const std::string gone = new_agent_id();
  ok(store_->put_card(make_card(a, group, "a", "", {{"c", ""}}), kNow));
  ok(store_->put_card(make_card(b, group, "b", "", {{"c", ""}}), kNow));
  ok(store_->put_card(make_card(gone, group, "g", "", {{"c", ""}}), kNow));
  const AclRule star = ok(store_->create_rule({group, "*", a, {"echo"}, "admin"}, kNow));
  const AclRule from_b = ok(store_->create_rule({group, b, a, {"*"}, "admin"}, kNow));
  ok(store_->create_rule({group, a, b, {"*"}, "admin"}, kNow));
  ok(store_->store_revocation({gone, RevocationKind::admin, "lost", kNow, kNow, R"({"agent_id":"x"})"}, kNow));

  const AclSnapshot snapshot = ok(store_->acl_snapshot(a, kNow));
  EXPECT_EQ(snapshot.version, version());
  EXPECT_EQ(snapshot.group_id, group);
  ASSERT_EQ(snapshot.rules.size(), 2U);
  EXPECT_EQ(snapshot.rules[0].id, star.id);
  EXPECT_EQ(snapshot.rules[1].id, from_b.id);
  std::vector<std::string> agents{a, b};
  std::sort(agents.begin(), agents.end());
  EXPECT_EQ(snapshot.group_agents, agents);
  EXPECT_THAT(snapshot.revoked, ElementsAre(gone));
  EXPECT_FALSE(snapshot.next_revocation_at);
  expect_error(store_->acl_snapshot(gone, kNow), Errc::not_found);
}

// ---- Revocations ----

TEST_F(SqliteStorageTest, RevocationsAreIdempotentKeepingTheEarliest) {
  const User alice = user("alice");
  const std::string agent = new_agent_id();
  ok(store_->put_card(make_card(agent, alice.personal_group_id, "a", "", {{"c", ""}}), kNow));
  const AclRule rule = ok(store_->create_rule({alice.personal_group_id, "*", agent, {"*"}, "admin"}, kNow));

  const std::string document = R"({"agent_id":")" + agent + R"(","reason":"lost","timestamp":1})";
  const auto first = ok(store_->store_revocation({agent, RevocationKind::self, "lost", kNow, kNow, document}, kNow));
  EXPECT_TRUE(first.changed);
  EXPECT_EQ(first.revocation.group_id, alice.personal_group_id);
  EXPECT_EQ(first.revocation.document_json, document);
  // The revoked agent is gone from discovery and from rule targets, and cannot come back.
  expect_error(store_->get_card(agent), Errc::not_found);
  expect_error(store_->get_rule(rule.id), Errc::not_found);
  expect_error(store_->put_card(make_card(agent, alice.personal_group_id, "a", "", {{"c", ""}}, kNow + 9), kNow + 9),
               Errc::revoked);

  const auto later = ok(store_->store_revocation({agent, RevocationKind::admin, "again", kNow + 5, kNow + 5, "{}"},
                                                 kNow + 5));
  EXPECT_FALSE(later.changed);
  EXPECT_EQ(later.revocation.kind, RevocationKind::self);
  EXPECT_EQ(later.revocation.reason, "lost");
  const RevocationRecord stored = ok(store_->get_revocation(agent));
  EXPECT_EQ(stored.effective_at, kNow);
  EXPECT_EQ(stored.document_json, document);
  EXPECT_TRUE(ok(store_->is_revoked(agent, kNow)));
  EXPECT_FALSE(ok(store_->is_revoked(agent, kNow - 1)));
  EXPECT_FALSE(ok(store_->is_revoked(new_agent_id(), kNow)));
  expect_error(store_->get_revocation(new_agent_id()), Errc::not_found);
  expect_error(store_->store_revocation({agent, RevocationKind::self, "", kNow, kNow, "not json"}, kNow),
               Errc::bad_request);
  EXPECT_EQ(ok(store_->status_counts()).revocations, 1);
}

TEST_F(SqliteStorageTest, AnEarlierRevocationReplacesAPendingOne) {
  const std::string agent = new_agent_id();
  ok(store_->store_revocation({agent, RevocationKind::rotation, "rotated", kNow, kNow + 1000, "{}"}, kNow));
  EXPECT_FALSE(ok(store_->is_revoked(agent, kNow + 10)));
  const auto earlier = ok(store_->store_revocation({agent, RevocationKind::self, "stolen", kNow + 10, kNow + 10,
                                                    R"({"reason":"stolen"})"}, kNow + 10));
  EXPECT_TRUE(earlier.changed);
  EXPECT_TRUE(ok(store_->is_revoked(agent, kNow + 10)));
  EXPECT_EQ(ok(store_->get_revocation(agent)).kind, RevocationKind::self);
  EXPECT_EQ(ok(store_->list_revocations({})).items.size(), 1U);
}

TEST_F(SqliteStorageTest, RevocationListPaginatesInArrivalOrder) {
  std::vector<std::string> agents;
  for (int i = 0; i < 7; ++i) {
    agents.push_back(new_agent_id());
    ok(store_->store_revocation({agents.back(), RevocationKind::self, "r", kNow + i, kNow + i, "{}"}, kNow + i));
  }
  std::vector<std::string> listed;
  PageRequest page{3, ""};
  for (;;) {
    const auto result = ok(store_->list_revocations(page));
    for (const auto& item : result.items) listed.push_back(item.agent_id);
    if (!result.next_cursor) break;
    page.cursor = *result.next_cursor;
  }
  EXPECT_EQ(listed, agents);
}

TEST_F(SqliteStorageTest, RevokedInGroupCoversItsAgentsAndRuleSources) {
  const User alice = user("alice");
  const User bob = user("bob");
  const std::string group = alice.personal_group_id;
  const std::string member = new_agent_id();
  const std::string target = new_agent_id();
  const std::string outsider = new_agent_id();  // never registered, named as a rule source
  const std::string elsewhere = new_agent_id();
  ok(store_->put_card(make_card(member, group, "m", "", {{"c", ""}}), kNow));
  ok(store_->put_card(make_card(target, group, "t", "", {{"c", ""}}), kNow));
  ok(store_->put_card(make_card(elsewhere, bob.personal_group_id, "e", "", {{"c", ""}}), kNow));
  ok(store_->create_rule({group, outsider, target, {"*"}, "admin"}, kNow));
  ok(store_->store_revocation({member, RevocationKind::admin, "", kNow, kNow, "{}"}, kNow));
  ok(store_->store_revocation({outsider, RevocationKind::self, "", kNow, kNow, "{}"}, kNow));
  ok(store_->store_revocation({elsewhere, RevocationKind::self, "", kNow, kNow, "{}"}, kNow));
  ok(store_->store_revocation({target, RevocationKind::rotation, "", kNow, kNow + 500, "{}"}, kNow));

  std::vector<std::string> expected{member, outsider};
  std::sort(expected.begin(), expected.end());
  const RevokedAgents now = ok(store_->revoked_in_group(group, kNow));
  EXPECT_EQ(now.agent_ids, expected);
  EXPECT_EQ(now.next_effective_at, kNow + 500);
  const RevokedAgents later = ok(store_->revoked_in_group(group, kNow + 500));
  EXPECT_EQ(later.agent_ids.size(), 3U);
  EXPECT_FALSE(later.next_effective_at);
  EXPECT_THAT(ok(store_->revoked_in_group(bob.personal_group_id, kNow)).agent_ids, ElementsAre(elsewhere));
}

// ---- Rotation ----

TEST_F(SqliteStorageTest, RotationMovesTheCardAndEveryRuleAndRevokesTheOldId) {
  const User alice = user("alice");
  const std::string group = alice.personal_group_id;
  const std::string old_id = new_agent_id();
  const std::string new_id = new_agent_id();
  const std::string peer = new_agent_id();
  AgentCardRecord card = make_card(old_id, group, "Rotating", "", {{"oldcap", "before"}});
  card.owner_id = alice.id;
  ok(store_->put_card(card, kNow));
  ok(store_->put_card(make_card(peer, group, "Peer", "", {{"c", ""}}), kNow));
  const AclRule to_old = ok(store_->create_rule({group, peer, old_id, {"*"}, "admin"}, kNow));
  const AclRule from_old = ok(store_->create_rule({group, old_id, peer, {"c"}, "admin"}, kNow));
  const AclRule untouched = ok(store_->create_rule({group, "*", peer, {"*"}, "admin"}, kNow));
  const std::int64_t before = version();

  CardRotation rotation;
  rotation.old_agent_id = old_id;
  rotation.new_card = make_card(new_id, group, "Rotated", "", {{"newcap", "after"}}, kNow + 1);
  rotation.timestamp = kNow + 1;
  rotation.grace_until = kNow + 1 + 86'400'000;
  rotation.rotation_json = R"({"old":")" + old_id + R"(","new":")" + new_id + R"("})";
  const RotationResult rotated = ok(store_->rotate_card(rotation, kNow + 100));
  EXPECT_EQ(rotated.moved_rules, 2);
  EXPECT_EQ(rotated.card.agent_id, new_id);
  EXPECT_EQ(rotated.card.owner_id, alice.id);
  EXPECT_EQ(rotated.card.registered_at, kNow);
  EXPECT_EQ(rotated.old_revocation.kind, RevocationKind::rotation);
  EXPECT_EQ(rotated.old_revocation.effective_at, rotation.grace_until);
  EXPECT_EQ(rotated.old_revocation.group_id, group);
  EXPECT_EQ(version(), before + 1);

  expect_error(store_->get_card(old_id), Errc::not_found);
  const AgentCardRecord moved = ok(store_->get_card(new_id));
  EXPECT_EQ(moved.name, "Rotated");
  EXPECT_EQ(moved.registered_at, kNow);
  EXPECT_EQ(moved.updated_at, kNow + 100);
  EXPECT_EQ(ok(store_->get_rule(to_old.id)).target, new_id);
  EXPECT_EQ(ok(store_->get_rule(from_old.id)).source, new_id);
  EXPECT_EQ(ok(store_->get_rule(untouched.id)).source, "*");
  EXPECT_TRUE(ok(store_->rules_for_target(old_id)).empty());
  EXPECT_EQ(ok(store_->rules_for_target(new_id)).size(), 1U);

  // The old ID routes until grace_until, then counts as revoked.
  EXPECT_FALSE(ok(store_->is_revoked(old_id, rotation.grace_until - 1)));
  EXPECT_TRUE(ok(store_->is_revoked(old_id, rotation.grace_until)));
  const AclSnapshot snapshot = ok(store_->acl_snapshot(peer, kNow + 100));
  EXPECT_TRUE(snapshot.revoked.empty());
  EXPECT_EQ(snapshot.next_revocation_at, rotation.grace_until);
  EXPECT_THAT(ok(store_->acl_snapshot(peer, rotation.grace_until)).revoked, ElementsAre(old_id));

  // The index follows the card.
  CardQuery query;
  query.visible_groups = {group};
  query.q = "after";
  EXPECT_THAT(search_ids(query), ElementsAre(new_id));
  query.q = "before";
  EXPECT_TRUE(search_ids(query).empty());
  query.q.reset();
  query.capability = "newcap";
  EXPECT_THAT(search_ids(query), ElementsAre(new_id));

  // The old ID can neither register again nor rotate again.
  expect_error(store_->put_card(make_card(old_id, group, "x", "", {{"c", ""}}, kNow + 5), kNow + 5), Errc::revoked);
  rotation.old_agent_id = new_id;
  rotation.new_card = make_card(old_id, group, "Back", "", {{"c", ""}}, kNow + 2);
  expect_error(store_->rotate_card(rotation, kNow + 200), Errc::revoked);
}

TEST_F(SqliteStorageTest, RotationErrorsChangeNothing) {
  const User alice = user("alice");
  const User bob = user("bob");
  const std::string group = alice.personal_group_id;
  const std::string old_id = new_agent_id();
  const std::string taken = new_agent_id();
  ok(store_->put_card(make_card(old_id, group, "old", "", {{"c", ""}}), kNow));
  ok(store_->put_card(make_card(taken, group, "taken", "", {{"c", ""}}), kNow));
  const std::int64_t before = version();

  CardRotation rotation;
  rotation.old_agent_id = new_agent_id();
  rotation.new_card = make_card(new_agent_id(), group, "n", "", {{"c", ""}}, kNow + 1);
  rotation.timestamp = kNow;
  rotation.grace_until = kNow + 1000;
  rotation.rotation_json = "{}";
  expect_error(store_->rotate_card(rotation, kNow), Errc::not_found);
  rotation.old_agent_id = old_id;
  rotation.new_card.agent_id = taken;
  expect_error(store_->rotate_card(rotation, kNow), Errc::conflict);
  rotation.new_card = make_card(new_agent_id(), bob.personal_group_id, "n", "", {{"c", ""}}, kNow + 1);
  expect_error(store_->rotate_card(rotation, kNow), Errc::bad_request, "group");
  rotation.new_card = make_card(old_id, group, "n", "", {{"c", ""}}, kNow + 1);
  expect_error(store_->rotate_card(rotation, kNow), Errc::bad_request, "differ");
  rotation.new_card = make_card(new_agent_id(), group, "n", "", {{"c", ""}}, kNow + 1);
  rotation.rotation_json = "nope";
  expect_error(store_->rotate_card(rotation, kNow), Errc::bad_request);
  rotation.rotation_json = "{}";
  const std::string revoked_new = new_agent_id();
  ok(store_->store_revocation({revoked_new, RevocationKind::self, "", kNow, kNow, "{}"}, kNow));
  rotation.new_card.agent_id = revoked_new;
  expect_error(store_->rotate_card(rotation, kNow), Errc::revoked);

  EXPECT_EQ(version(), before + 1) << "only the revocation above changed anything";
  EXPECT_EQ(ok(store_->get_card(old_id)).name, "old");
  EXPECT_FALSE(ok(store_->is_revoked(old_id, kNow + 10'000)));
}

// ---- Audit and status ----

TEST_F(SqliteStorageTest, AuditLogListsNewestFirstAcrossPages) {
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 5; ++i) {
    const AuditEntry entry = ok(store_->append_audit(
        {0, kNow + i, "user:u" + std::to_string(i), "card.register", "agent-" + std::to_string(i), R"({"n":1})"}));
    EXPECT_GT(entry.id, ids.empty() ? 0 : ids.back());
    ids.push_back(entry.id);
  }
  std::reverse(ids.begin(), ids.end());
  std::vector<std::int64_t> listed;
  PageRequest page{2, ""};
  for (;;) {
    const auto result = ok(store_->list_audit(page));
    for (const auto& entry : result.items) listed.push_back(entry.id);
    if (!result.next_cursor) break;
    page.cursor = *result.next_cursor;
  }
  EXPECT_EQ(listed, ids);
  const AuditEntry newest = ok(store_->list_audit({1, ""})).items.at(0);
  EXPECT_EQ(newest.at, kNow + 4);
  EXPECT_EQ(newest.actor, "user:u4");
  EXPECT_EQ(newest.action, "card.register");
  EXPECT_EQ(newest.target, "agent-4");
  EXPECT_EQ(newest.detail_json, R"({"n":1})");
  expect_error(store_->append_audit({0, kNow, "admin", "x", "y", "{broken"}), Errc::bad_request);
  EXPECT_EQ(ok(store_->append_audit({0, kNow, "admin", "x", "y", ""})).detail_json, "{}");
}

TEST_F(SqliteStorageTest, StatusCountsEverything) {
  const User alice = user("alice");
  user("bob");
  ok(store_->create_group("team", alice.id, kNow));
  const std::string a = new_agent_id();
  ok(store_->put_card(make_card(a, alice.personal_group_id, "a", "", {{"c", ""}}), kNow));
  ok(store_->create_rule({alice.personal_group_id, "*", a, {"*"}, "admin"}, kNow));
  ok(store_->store_revocation({new_agent_id(), RevocationKind::self, "", kNow, kNow, "{}"}, kNow));
  const StatusCounts counts = ok(store_->status_counts());
  EXPECT_EQ(counts.users, 2);
  EXPECT_EQ(counts.groups, 3);
  EXPECT_EQ(counts.agents, 1);
  EXPECT_EQ(counts.rules, 1);
  EXPECT_EQ(counts.revocations, 1);
}

// ---- Restart and threads ----

TEST_F(SqliteStorageTest, ARestartKeepsEverything) {
  const User alice = user("alice");
  const User bob = user("bob");
  const Group team = ok(store_->create_group("team", alice.id, kNow));
  ok(store_->add_member(team.id, bob.id, GroupRole::admin, kNow));
  const ApiToken token = ok(store_->create_token({alice.id, "laptop", hash_of("tok"), kNow + 1'000'000}, kNow));
  const SetupKey key = ok(store_->create_setup_key({team.id, "user:" + alice.id, hash_of("sk"), 3, std::nullopt}, kNow));
  ok(store_->consume_setup_key(hash_of("sk"), kNow));
  const std::string agent = new_agent_id();
  const std::string peer = new_agent_id();
  const std::string revoked = new_agent_id();
  AgentCardRecord card = make_card(agent, team.id, "Persistent Parrot", "repeats", {{"echo", "says it back"}});
  card.owner_id = alice.id;
  ok(store_->put_card(card, kNow));
  ok(store_->put_card(make_card(peer, team.id, "Peer", "", {{"c", ""}}), kNow));
  const AclRule rule = ok(store_->create_rule({team.id, peer, agent, {"echo"}, "user:" + alice.id}, kNow));
  ok(store_->store_revocation({revoked, RevocationKind::admin, "lost", kNow, kNow, R"({"agent_id":"r"})"}, kNow));
  ok(store_->append_audit({0, kNow, "admin", "acl.create", rule.id, "{}"}));
  const std::int64_t acl_version = version();

  reopen();

  EXPECT_EQ(ok(store_->count_users()), 2);
  EXPECT_EQ(ok(store_->find_user_by_subject("github:alice")).id, alice.id);
  EXPECT_EQ(ok(store_->find_user(bob.id)).personal_group_id, bob.personal_group_id);
  EXPECT_EQ(ok(store_->member_role(team.id, bob.id)), GroupRole::admin);
  EXPECT_EQ(ok(store_->groups_of_user(alice.id)).size(), 2U);
  EXPECT_EQ(ok(store_->find_token(hash_of("tok"), kNow + 1)).token_id, token.id);
  const SetupKey key_after = ok(store_->get_setup_key(key.id));
  EXPECT_EQ(key_after.uses, 1);
  EXPECT_EQ(key_after.max_uses, 3);
  const AgentCardRecord card_after = ok(store_->get_card(agent));
  EXPECT_EQ(card_after.name, "Persistent Parrot");
  EXPECT_EQ(card_after.owner_id, alice.id);
  EXPECT_EQ(card_after.card_json, card.card_json);
  const AclRule rule_after = ok(store_->get_rule(rule.id));
  EXPECT_EQ(rule_after.source, peer);
  EXPECT_THAT(rule_after.allowed_capabilities, ElementsAre("echo"));
  EXPECT_TRUE(ok(store_->is_revoked(revoked, kNow)));
  EXPECT_EQ(ok(store_->get_revocation(revoked)).document_json, R"({"agent_id":"r"})");
  EXPECT_EQ(version(), acl_version);
  EXPECT_EQ(ok(store_->list_audit({})).items.size(), 1U);
  // The search index and the capability table survived too.
  CardQuery query;
  query.visible_groups = {team.id};
  query.q = "parrot";
  EXPECT_THAT(search_ids(query), ElementsAre(agent));
  query.q.reset();
  query.capability = "echo";
  EXPECT_THAT(search_ids(query), ElementsAre(agent));
  // And writing continues where it left off.
  ok(store_->create_rule({team.id, "*", peer, {"*"}, "admin"}, kNow));
  EXPECT_EQ(version(), acl_version + 1);
}

TEST_F(SqliteStorageTest, IsSafeToCallFromSeveralThreads) {
  const User alice = user("alice");
  const std::string group = alice.personal_group_id;
  const SetupKey key = ok(store_->create_setup_key({group, "admin", hash_of("shared"), 20, std::nullopt}, kNow));
  std::atomic<int> consumed{0};
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        const std::string agent = new_agent_id();
        auto registered = store_->register_card_with_setup_key(
            hash_of("shared"), make_card(agent, group, "t" + std::to_string(t), "", {{"c", ""}}), kNow);
        if (registered.ok()) {
          ++consumed;
        } else {
          EXPECT_EQ(registered.error().code, Errc::unauthorized) << registered.error().describe();
          ++refused;
        }
        CardQuery query;
        query.visible_groups = {group};
        query.q = "t" + std::to_string(t);
        EXPECT_TRUE(store_->search_cards(query).ok());
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(consumed.load(), 20);
  EXPECT_EQ(refused.load(), 20);
  EXPECT_EQ(ok(store_->get_setup_key(key.id)).uses, 20);
  EXPECT_EQ(ok(store_->status_counts()).agents, 20);
}

}  // namespace
}  // namespace agent_mesh::registry
