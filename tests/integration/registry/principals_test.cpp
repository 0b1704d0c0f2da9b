// Principals through the real agent-mesh-server (registry.md "Principals"): GET /users/me,
// groups and their members, API tokens, setup keys (with POST /register-with-key), and the
// device-flow login against the GitHub stand-in, with an authorisation matrix over the owner, a
// group admin, a member, another user, the admin token, an agent signature and no credentials.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <set>
#include <thread>

#include "registry/time_format.hpp"
#include "registry_fixture.hpp"

namespace agent_mesh::test {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;

constexpr std::string_view kDeviceGrant = "urn:ietf:params:oauth:grant-type:device_code";
const std::string kAdminToken = "principals-test-admin-token-0123456789";

std::string body(const json::object& object) { return json::serialize(object); }

std::string str(const Reply& reply, std::string_view key) {
  const auto* value = reply.object().if_contains(key);
  return value != nullptr && value->is_string() ? std::string(value->as_string()) : std::string();
}

const json::array& items(const Reply& reply) {
  static const json::array empty;
  const auto* value = reply.object().if_contains("items");
  return value != nullptr && value->is_array() ? value->as_array() : empty;
}

std::set<std::string> ids_of(const Reply& reply, std::string_view key = "id") {
  std::set<std::string> out;
  for (const auto& item : items(reply)) out.insert(std::string(item.as_object().at(key).as_string()));
  return out;
}

// The error message of {"error":{"code","message"}}.
std::string message_of(const Reply& reply) {
  const auto* error = reply.object().if_contains("error");
  if (error == nullptr || !error->is_object()) return {};
  const auto* message = error->as_object().if_contains("message");
  return message != nullptr && message->is_string() ? std::string(message->as_string()) : std::string();
}

// RFC 8628 / RFC 6749 §5.2 error shape: {"error": "<code>"} with the code a string.
std::string oauth_error(const Reply& reply) {
  const auto* error = reply.object().if_contains("error");
  return error != nullptr && error->is_string() ? std::string(error->as_string()) : std::string();
}

bool is_rfc3339_ms(std::string_view text) { return registry::parse_rfc3339(text).ok() && text.size() == 24; }

std::string in_ms(std::int64_t delta_ms) { return registry::format_rfc3339_ms(wall_ms() + delta_ms); }

// A file holding the admin token (mode 0600), removed with the fixture.
class AdminTokenFile {
 public:
  AdminTokenFile() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("principals-admin-token-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::ofstream(path_) << kAdminToken << "\n";
    ::chmod(path_.c_str(), 0600);
  }
  ~AdminTokenFile() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  AdminTokenFile(const AdminTokenFile&) = delete;
  AdminTokenFile& operator=(const AdminTokenFile&) = delete;
  [[nodiscard]] std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

class PrincipalsTest : public ::testing::Test {
 protected:
  AdminTokenFile admin_file;
  MeshServer server{MeshServer::Options{{"--admin-token-file", admin_file.path()}, true}};
  // The bootstrap user "admin": an ordinary user, owner of its personal group.
  std::string owner = server.bootstrap_token();

  Reply as_admin(const std::string& method, const std::string& target, const std::string& text = "") {
    return server.as(kAdminToken, method, target, text);
  }
  std::string user_id(const std::string& token) {
    auto me = server.as(token, "GET", "/api/v1/users/me");
    EXPECT_EQ(me.status, 200) << me.body;
    return std::string(me.object().at("user").as_object().at("id").as_string());
  }
  std::string create_group(const std::string& token, const std::string& name) {
    auto created = server.as(token, "POST", "/api/v1/groups", body({{"name", name}}));
    EXPECT_EQ(created.status, 201) << created.body;
    return str(created, "id");
  }
  // An agent with a card in `group` (registered with `token`), for requests signed by it.
  KeyPair registered_agent(const std::string& token, const std::string& group) {
    KeyPair key = KeyPair::generate();
    auto registered = server.as(token, "POST", "/api/v1/agents", signed_card(key, group, "probe", {"probe"}));
    EXPECT_EQ(registered.status, 201) << registered.body;
    return key;
  }
  Reply register_with_key(const std::string& key, const std::string& group) {
    const std::string card = signed_card(KeyPair::generate(), group, "unattended", {"work"});
    return server.request("POST", "/api/v1/register-with-key",
                          "{\"setup_key\":" + json::serialize(json::value(key)) + ",\"card\":" + card + "}");
  }
};

// ---- users/me ----

TEST_F(PrincipalsTest, UsersMeForUsersOnly) {
  auto me = server.as(owner, "GET", "/api/v1/users/me");
  ASSERT_EQ(me.status, 200) << me.body;
  const auto& user = me.object().at("user").as_object();
  EXPECT_EQ(user.at("login").as_string(), "admin");
  EXPECT_TRUE(Uuid::is_valid(user.at("id").as_string()));
  EXPECT_TRUE(is_rfc3339_ms(user.at("created_at").as_string())) << user.at("created_at");
  EXPECT_EQ(user.size(), 3u) << me.body;
  const auto& groups = me.object().at("groups").as_array();
  ASSERT_EQ(groups.size(), 1u);
  const auto& personal = groups[0].as_object();
  EXPECT_EQ(personal.at("role").as_string(), "owner");
  EXPECT_TRUE(personal.at("personal").as_bool());
  EXPECT_EQ(personal.at("name").as_string(), "admin");

  auto anonymous = server.request("GET", "/api/v1/users/me");
  EXPECT_EQ(anonymous.status, 401);
  EXPECT_EQ(anonymous.error_code(), "unauthorized");
  auto bad_token = server.as("not-a-real-token", "GET", "/api/v1/users/me");
  EXPECT_EQ(bad_token.status, 401);
  auto admin = as_admin("GET", "/api/v1/users/me");
  EXPECT_EQ(admin.status, 403) << admin.body;
  EXPECT_EQ(admin.error_code(), "forbidden");
  EXPECT_NE(message_of(admin).find("the admin token has no user"), std::string::npos) << admin.body;

  const KeyPair agent = registered_agent(owner, server.personal_group(owner));
  auto signed_by_agent = server.as_agent(agent, "GET", "/api/v1/users/me");
  EXPECT_EQ(signed_by_agent.status, 403) << signed_by_agent.body;
  EXPECT_EQ(signed_by_agent.error_code(), "forbidden");
}

TEST_F(PrincipalsTest, AgentSignaturesAreRefusedOnEveryPrincipalEndpoint) {
  const std::string group = server.personal_group(owner);
  const KeyPair agent = registered_agent(owner, group);
  const std::vector<std::pair<std::string, std::string>> endpoints{
      {"GET", "/api/v1/groups"},
      {"POST", "/api/v1/groups"},
      {"POST", "/api/v1/groups/" + group + "/members"},
      {"DELETE", "/api/v1/groups/" + group + "/members/" + user_id(owner)},
      {"GET", "/api/v1/tokens"},
      {"POST", "/api/v1/tokens"},
      {"DELETE", "/api/v1/tokens/tok_AAAAAAAAAAAAAAAAAAAAAA"},
      {"GET", "/api/v1/setup-keys"},
      {"POST", "/api/v1/setup-keys"},
      {"DELETE", "/api/v1/setup-keys/sk_AAAAAAAAAAAAAAAAAAAAAA"},
  };
  for (const auto& [method, target] : endpoints) {
    const std::string text = method == "POST" ? body({{"name", "x"}}) : std::string();
    auto reply = server.as_agent(agent, method, target, text);
    EXPECT_EQ(reply.status, 403) << method << " " << target << ": " << reply.body;
    EXPECT_EQ(reply.error_code(), "forbidden") << method << " " << target;
    auto anonymous = server.request(method, target, text);
    EXPECT_EQ(anonymous.status, 401) << method << " " << target << ": " << anonymous.body;
  }
}

// ---- groups ----

TEST_F(PrincipalsTest, CreateAndListGroups) {
  auto created = server.as(owner, "POST", "/api/v1/groups", body({{"name", "zeta team"}}));
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_TRUE(Uuid::is_valid(str(created, "id")));
  EXPECT_EQ(str(created, "name"), "zeta team");
  EXPECT_EQ(str(created, "role"), "owner");
  EXPECT_FALSE(created.object().at("personal").as_bool());
  EXPECT_TRUE(is_rfc3339_ms(str(created, "created_at")));
  const std::string alpha = create_group(owner, "alpha team");

  auto listed = server.as(owner, "GET", "/api/v1/groups");
  ASSERT_EQ(listed.status, 200) << listed.body;
  const auto& list = items(listed);
  ASSERT_EQ(list.size(), 3u);
  // Personal group first, then by name.
  EXPECT_TRUE(list[0].as_object().at("personal").as_bool());
  EXPECT_EQ(list[1].as_object().at("id").as_string(), alpha);
  EXPECT_EQ(list[2].as_object().at("name").as_string(), "zeta team");
  for (const auto& item : list) {
    EXPECT_EQ(item.as_object().at("role").as_string(), "owner");
    EXPECT_TRUE(is_rfc3339_ms(item.as_object().at("created_at").as_string()));
  }
  EXPECT_EQ(listed.object().if_contains("next_cursor"), nullptr);

  // The creator appears as owner in /users/me too.
  auto me = server.as(owner, "GET", "/api/v1/users/me");
  EXPECT_EQ(me.object().at("groups").as_array().size(), 3u);

  // Another user sees only their own groups.
  const std::string bob = server.login_user("bob", 1001);
  ASSERT_FALSE(bob.empty());
  auto bobs = server.as(bob, "GET", "/api/v1/groups");
  ASSERT_EQ(bobs.status, 200);
  ASSERT_EQ(items(bobs).size(), 1u);
  EXPECT_EQ(items(bobs)[0].as_object().at("name").as_string(), "bob");

  // The admin token sees every group, as owner, with users' personal groups marked.
  auto all = as_admin("GET", "/api/v1/groups");
  ASSERT_EQ(all.status, 200) << all.body;
  EXPECT_EQ(items(all).size(), 4u);
  int personal = 0;
  for (const auto& item : items(all)) {
    EXPECT_EQ(item.as_object().at("role").as_string(), "owner");
    personal += item.as_object().at("personal").as_bool() ? 1 : 0;
  }
  EXPECT_EQ(personal, 2);
  // ... but owns none itself: it cannot create one.
  auto admin_create = as_admin("POST", "/api/v1/groups", body({{"name", "by admin"}}));
  EXPECT_EQ(admin_create.status, 403) << admin_create.body;
}

TEST_F(PrincipalsTest, GroupListPages) {
  for (int i = 0; i < 4; ++i) create_group(owner, "group " + std::to_string(i));
  std::set<std::string> seen;
  std::string cursor;
  int pages = 0;
  do {
    auto page = server.as(owner, "GET", "/api/v1/groups?limit=2" + (cursor.empty() ? "" : "&cursor=" + cursor));
    ASSERT_EQ(page.status, 200) << page.body;
    EXPECT_LE(items(page).size(), 2u);
    for (const auto& id : ids_of(page)) EXPECT_TRUE(seen.insert(id).second) << id;
    cursor = str(page, "next_cursor");
    ASSERT_LT(++pages, 10);
  } while (!cursor.empty());
  EXPECT_EQ(seen.size(), 5u);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(server.as(owner, "GET", "/api/v1/groups?limit=0").status, 400);
  EXPECT_EQ(server.as(owner, "GET", "/api/v1/groups?limit=201").status, 400);
  auto bad_cursor = server.as(owner, "GET", "/api/v1/groups?cursor=not-a-cursor");
  EXPECT_EQ(bad_cursor.status, 400);
  EXPECT_EQ(bad_cursor.error_code(), "bad_request");
}

TEST_F(PrincipalsTest, GroupBodiesAreCheckedStrictly) {
  auto post = [&](const std::string& text) { return server.as(owner, "POST", "/api/v1/groups", text); };
  auto malformed = post("{\"name\": ");
  EXPECT_EQ(malformed.status, 400);
  EXPECT_EQ(malformed.error_code(), "bad_request");
  EXPECT_EQ(post("[\"name\"]").status, 400);
  EXPECT_EQ(post("{}").status, 400);
  EXPECT_EQ(post(body({{"name", ""}})).status, 400);
  EXPECT_EQ(post(body({{"name", 42}})).status, 400);
  EXPECT_EQ(post("{\"name\":null}").status, 400);
  EXPECT_EQ(post(body({{"name", std::string(129, 'n')}})).status, 400);
  EXPECT_EQ(post(body({{"name", std::string(128, 'n')}})).status, 201);
  EXPECT_EQ(post(body({{"name", "tab\there"}})).status, 400);
  EXPECT_EQ(post("{\"name\":\"a\",\"name\":\"b\"}").status, 400);  // I-JSON: no duplicate members
  auto unknown = post(body({{"name", "ok"}, {"colour", "blue"}}));
  EXPECT_EQ(unknown.status, 400);
  EXPECT_NE(message_of(unknown).find("colour"), std::string::npos) << unknown.body;
}

// ---- members ----

TEST_F(PrincipalsTest, MembershipAuthorisationMatrix) {
  const std::string bob = server.login_user("bob", 2001);      // will be a group admin
  const std::string carol = server.login_user("carol", 2002);  // a member
  const std::string dave = server.login_user("dave", 2003);    // another user
  ASSERT_FALSE(bob.empty() || carol.empty() || dave.empty());
  const std::string bob_id = user_id(bob), carol_id = user_id(carol), dave_id = user_id(dave);
  const std::string owner_id = user_id(owner);
  const std::string group = create_group(owner, "shared");
  const std::string members = "/api/v1/groups/" + group + "/members";
  auto add = [&](const std::string& token, const std::string& who, const std::string& role) {
    return server.as(token, "POST", members, body({{"user_id", who}, {"role", role}}));
  };

  auto added = add(owner, bob_id, "admin");
  ASSERT_EQ(added.status, 201) << added.body;
  EXPECT_EQ(str(added, "login"), "bob");
  EXPECT_EQ(str(added, "role"), "admin");
  EXPECT_EQ(str(added, "group_id"), group);
  EXPECT_EQ(str(added, "user_id"), bob_id);
  EXPECT_TRUE(is_rfc3339_ms(str(added, "added_at")));
  // Duplicate member.
  auto duplicate = add(owner, bob_id, "member");
  EXPECT_EQ(duplicate.status, 409) << duplicate.body;
  EXPECT_EQ(duplicate.error_code(), "conflict");
  // A group admin adds members and admins, but no owner.
  EXPECT_EQ(add(bob, carol_id, "member").status, 201);
  auto admin_grants_owner = add(bob, dave_id, "owner");
  EXPECT_EQ(admin_grants_owner.status, 403) << admin_grants_owner.body;
  // A member adds nobody.
  auto member_adds = add(carol, dave_id, "member");
  EXPECT_EQ(member_adds.status, 403) << member_adds.body;
  // Another user does not learn that the group exists.
  auto outsider = add(dave, dave_id, "owner");
  EXPECT_EQ(outsider.status, 404) << outsider.body;
  EXPECT_EQ(outsider.error_code(), "not_found");
  EXPECT_EQ(server.as(dave, "POST", "/api/v1/groups/" + Uuid::generate().to_string() + "/members",
                      body({{"user_id", dave_id}, {"role", "member"}}))
                .status,
            404);
  // The group shows up for the new members, with their roles.
  for (const auto& [token, role] : std::vector<std::pair<std::string, std::string>>{{bob, "admin"}, {carol, "member"}}) {
    auto listed = server.as(token, "GET", "/api/v1/groups");
    bool found = false;
    for (const auto& item : items(listed)) {
      if (item.as_object().at("id").as_string() == group) {
        found = true;
        EXPECT_EQ(item.as_object().at("role").as_string(), role);
        EXPECT_FALSE(item.as_object().at("personal").as_bool());
      }
    }
    EXPECT_TRUE(found) << role;
  }
  EXPECT_EQ(ids_of(server.as(dave, "GET", "/api/v1/groups")).count(group), 0u);
  // Bad bodies.
  EXPECT_EQ(add(owner, Uuid::generate().to_string(), "member").status, 404);  // no such user
  EXPECT_EQ(add(owner, "not-a-uuid", "member").status, 400);
  EXPECT_EQ(add(owner, dave_id, "superuser").status, 400);
  EXPECT_EQ(server.as(owner, "POST", members, body({{"user_id", dave_id}})).status, 400);
  auto unknown = server.as(owner, "POST", members, body({{"user_id", dave_id}, {"role", "member"}, {"why", "x"}}));
  EXPECT_EQ(unknown.status, 400);
  EXPECT_NE(message_of(unknown).find("why"), std::string::npos);
  EXPECT_EQ(server.as(owner, "POST", members, "{\"user_id\":").status, 400);
  // The admin token may grant owner.
  auto by_admin = as_admin("POST", members, body({{"user_id", dave_id}, {"role", "owner"}}));
  EXPECT_EQ(by_admin.status, 201) << by_admin.body;

  // Removal.
  auto remove = [&](const std::string& token, const std::string& who) {
    return server.as(token, "DELETE", members + "/" + who);
  };
  EXPECT_EQ(remove(carol, bob_id).status, 403);   // a member removes nobody else
  EXPECT_EQ(remove(bob, dave_id).status, 403);    // an admin removes no owner
  auto removed = remove(bob, carol_id);           // an admin removes a member
  EXPECT_EQ(removed.status, 204) << removed.body;
  EXPECT_TRUE(removed.body.empty());
  EXPECT_EQ(ids_of(server.as(carol, "GET", "/api/v1/groups")).count(group), 0u);
  EXPECT_EQ(remove(carol, carol_id).status, 404);  // no longer a member
  EXPECT_EQ(remove(bob, carol_id).status, 404);    // not a member any more
  EXPECT_EQ(remove(owner, dave_id).status, 204);   // an owner removes an owner
  EXPECT_EQ(remove(bob, bob_id).status, 204);      // anyone may leave
  // The last owner cannot leave or be removed.
  auto last_owner = remove(owner, owner_id);
  EXPECT_EQ(last_owner.status, 409) << last_owner.body;
  EXPECT_EQ(last_owner.error_code(), "conflict");
  auto admin_last_owner = as_admin("DELETE", members + "/" + owner_id);
  EXPECT_EQ(admin_last_owner.status, 409) << admin_last_owner.body;
  // Outsiders and unknown groups: 404.
  EXPECT_EQ(remove(dave, owner_id).status, 404);
  EXPECT_EQ(as_admin("DELETE", "/api/v1/groups/" + Uuid::generate().to_string() + "/members/" + owner_id).status, 404);
  // Everything above that changed something is in the audit log.
  auto audit = as_admin("GET", "/api/v1/audit?limit=200");
  ASSERT_EQ(audit.status, 200) << audit.body;
  std::multiset<std::string> actions;
  for (const auto& item : items(audit)) actions.insert(std::string(item.as_object().at("action").as_string()));
  EXPECT_EQ(actions.count("group.create"), 1u);
  EXPECT_EQ(actions.count("group.member.add"), 3u);
  EXPECT_EQ(actions.count("group.member.remove"), 3u);
  EXPECT_EQ(actions.count("user.create"), 3u);
  EXPECT_EQ(actions.count("user.login"), 3u);
}

// ---- tokens ----

TEST_F(PrincipalsTest, TokensCreateListUseAndRevoke) {
  auto listed = server.as(owner, "GET", "/api/v1/tokens");
  ASSERT_EQ(listed.status, 200) << listed.body;
  ASSERT_EQ(items(listed).size(), 1u);
  const auto& bootstrap = items(listed)[0].as_object();
  EXPECT_EQ(bootstrap.at("name").as_string(), "bootstrap");
  EXPECT_TRUE(bootstrap.at("current").as_bool());
  EXPECT_FALSE(bootstrap.at("expired").as_bool());
  EXPECT_EQ(bootstrap.if_contains("token"), nullptr);

  auto created = server.as(owner, "POST", "/api/v1/tokens", body({{"name", "ci"}}));
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string token = str(created, "token");
  const std::string token_id = str(created, "id");
  EXPECT_EQ(token.size(), 43u);
  EXPECT_TRUE(token_id.starts_with("tok_")) << token_id;
  EXPECT_EQ(str(created, "name"), "ci");
  EXPECT_EQ(created.object().if_contains("expires_at"), nullptr);
  EXPECT_EQ(created.header("cache-control"), "no-store");
  // The new token works and is the current one when used.
  auto with_new = server.as(token, "GET", "/api/v1/tokens");
  ASSERT_EQ(with_new.status, 200);
  ASSERT_EQ(items(with_new).size(), 2u);
  for (const auto& item : items(with_new)) {
    EXPECT_EQ(item.as_object().at("current").as_bool(), item.as_object().at("id").as_string() == token_id);
    EXPECT_EQ(item.as_object().if_contains("token"), nullptr);
  }
  // With an expiry.
  const std::string expiry = in_ms(24 * 3600 * 1000);
  auto expiring = server.as(owner, "POST", "/api/v1/tokens", body({{"name", "tomorrow"}, {"expires_at", expiry}}));
  ASSERT_EQ(expiring.status, 201) << expiring.body;
  EXPECT_EQ(str(expiring, "expires_at"), expiry);

  // Bad bodies.
  auto post = [&](const std::string& text) { return server.as(owner, "POST", "/api/v1/tokens", text); };
  EXPECT_EQ(post("{").status, 400);
  EXPECT_EQ(post("{}").status, 400);
  EXPECT_EQ(post(body({{"name", ""}})).status, 400);
  EXPECT_EQ(post(body({{"name", std::string(129, 'x')}})).status, 400);
  EXPECT_EQ(post(body({{"name", "x"}, {"expires_at", in_ms(-60000)}})).status, 400);
  EXPECT_EQ(post(body({{"name", "x"}, {"expires_at", "tomorrow"}})).status, 400);
  EXPECT_EQ(post(body({{"name", "x"}, {"expires_at", 1893456000000}})).status, 400);
  auto unknown = post(body({{"name", "x"}, {"scope", "all"}}));
  EXPECT_EQ(unknown.status, 400);
  EXPECT_NE(message_of(unknown).find("scope"), std::string::npos);

  // Another user can neither see nor revoke it.
  const std::string bob = server.login_user("bob", 3001);
  ASSERT_FALSE(bob.empty());
  auto bobs = server.as(bob, "GET", "/api/v1/tokens");
  ASSERT_EQ(bobs.status, 200);
  ASSERT_EQ(items(bobs).size(), 1u);
  EXPECT_EQ(items(bobs)[0].as_object().at("name").as_string(), "device login");
  EXPECT_EQ(ids_of(bobs).count(token_id), 0u);
  EXPECT_EQ(server.as(bob, "DELETE", "/api/v1/tokens/" + token_id).status, 404);
  EXPECT_EQ(server.as(token, "GET", "/api/v1/users/me").status, 200);

  // Revoked: 204, then the token no longer authenticates, and a second revoke is 404.
  auto revoked = server.as(owner, "DELETE", "/api/v1/tokens/" + token_id);
  EXPECT_EQ(revoked.status, 204) << revoked.body;
  EXPECT_EQ(server.as(token, "GET", "/api/v1/users/me").status, 401);
  EXPECT_EQ(server.as(owner, "DELETE", "/api/v1/tokens/" + token_id).status, 404);
  EXPECT_EQ(server.as(owner, "DELETE", "/api/v1/tokens/tok_nothing").status, 404);
  EXPECT_EQ(ids_of(server.as(owner, "GET", "/api/v1/tokens")).count(token_id), 0u);

  // The admin token has no tokens of its own.
  EXPECT_EQ(as_admin("GET", "/api/v1/tokens").status, 403);
  EXPECT_EQ(as_admin("POST", "/api/v1/tokens", body({{"name", "x"}})).status, 403);
  EXPECT_EQ(as_admin("DELETE", "/api/v1/tokens/" + token_id).status, 403);
}

TEST_F(PrincipalsTest, AnExpiredTokenStopsWorking) {
  auto created = server.as(owner, "POST", "/api/v1/tokens", body({{"name", "short"}, {"expires_at", in_ms(1500)}}));
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string token = str(created, "token");
  EXPECT_EQ(server.as(token, "GET", "/api/v1/users/me").status, 200);
  // Poll (with a deadline) until the expiry has passed.
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  int status = 200;
  while (status == 200 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
    status = server.as(token, "GET", "/api/v1/users/me").status;
  }
  EXPECT_EQ(status, 401);
  auto listed = server.as(owner, "GET", "/api/v1/tokens");
  bool found = false;
  for (const auto& item : items(listed)) {
    if (item.as_object().at("id").as_string() == str(created, "id")) {
      found = true;
      EXPECT_TRUE(item.as_object().at("expired").as_bool());
    }
  }
  EXPECT_TRUE(found) << "expired tokens stay listed until revoked";
}

// ---- setup keys ----

TEST_F(PrincipalsTest, SetupKeysAuthorisationAndListing) {
  const std::string bob = server.login_user("bob", 4001);      // group admin
  const std::string carol = server.login_user("carol", 4002);  // member
  const std::string dave = server.login_user("dave", 4003);    // another user
  ASSERT_FALSE(bob.empty() || carol.empty() || dave.empty());
  const std::string group = create_group(owner, "fleet");
  ASSERT_EQ(server.as(owner, "POST", "/api/v1/groups/" + group + "/members",
                      body({{"user_id", user_id(bob)}, {"role", "admin"}}))
                .status,
            201);
  ASSERT_EQ(server.as(owner, "POST", "/api/v1/groups/" + group + "/members",
                      body({{"user_id", user_id(carol)}, {"role", "member"}}))
                .status,
            201);
  auto create = [&](const std::string& token, const json::object& object) {
    return server.as(token, "POST", "/api/v1/setup-keys", body(object));
  };

  const std::string expiry = in_ms(3600 * 1000);
  auto by_owner = create(owner, {{"group_id", group}, {"max_uses", 3}, {"expires_at", expiry}});
  ASSERT_EQ(by_owner.status, 201) << by_owner.body;
  EXPECT_TRUE(str(by_owner, "id").starts_with("sk_"));
  EXPECT_EQ(str(by_owner, "key").size(), 43u);
  EXPECT_EQ(str(by_owner, "group_id"), group);
  EXPECT_EQ(by_owner.object().at("max_uses").as_int64(), 3);
  EXPECT_EQ(by_owner.object().at("uses").as_int64(), 0);
  EXPECT_EQ(str(by_owner, "expires_at"), expiry);
  EXPECT_TRUE(by_owner.object().at("usable").as_bool());
  EXPECT_EQ(by_owner.header("cache-control"), "no-store");
  auto by_admin = create(bob, {{"group_id", group}});
  ASSERT_EQ(by_admin.status, 201) << by_admin.body;
  EXPECT_EQ(by_admin.object().if_contains("max_uses"), nullptr);
  auto by_admin_token = as_admin("POST", "/api/v1/setup-keys", body({{"group_id", group}}));
  ASSERT_EQ(by_admin_token.status, 201) << by_admin_token.body;
  EXPECT_EQ(str(by_admin_token, "created_by"), "admin");
  auto by_member = create(carol, {{"group_id", group}});
  EXPECT_EQ(by_member.status, 403) << by_member.body;
  auto by_outsider = create(dave, {{"group_id", group}});
  EXPECT_EQ(by_outsider.status, 404) << by_outsider.body;
  EXPECT_EQ(as_admin("POST", "/api/v1/setup-keys", body({{"group_id", Uuid::generate().to_string()}})).status, 404);

  // Bad bodies.
  EXPECT_EQ(server.as(owner, "POST", "/api/v1/setup-keys", "{\"group_id\"").status, 400);
  EXPECT_EQ(create(owner, {}).status, 400);
  EXPECT_EQ(create(owner, {{"group_id", "fleet"}}).status, 400);
  EXPECT_EQ(create(owner, {{"group_id", group}, {"max_uses", 0}}).status, 400);
  EXPECT_EQ(create(owner, {{"group_id", group}, {"max_uses", -1}}).status, 400);
  EXPECT_EQ(create(owner, {{"group_id", group}, {"max_uses", 1.5}}).status, 400);
  EXPECT_EQ(create(owner, {{"group_id", group}, {"max_uses", "2"}}).status, 400);
  EXPECT_EQ(create(owner, {{"group_id", group}, {"expires_at", in_ms(-1000)}}).status, 400);
  auto unknown = create(owner, {{"group_id", group}, {"name", "ci"}});
  EXPECT_EQ(unknown.status, 400);
  EXPECT_NE(message_of(unknown).find("name"), std::string::npos);

  // Listing: owners and admins of the group see its keys, never the key text.
  const std::set<std::string> all_three{str(by_owner, "id"), str(by_admin, "id"), str(by_admin_token, "id")};
  for (const auto& token : {owner, bob}) {
    auto listed = server.as(token, "GET", "/api/v1/setup-keys?group_id=" + group);
    ASSERT_EQ(listed.status, 200) << listed.body;
    EXPECT_EQ(ids_of(listed), all_three);
    for (const auto& item : items(listed)) EXPECT_EQ(item.as_object().if_contains("key"), nullptr);
  }
  EXPECT_EQ(ids_of(as_admin("GET", "/api/v1/setup-keys")), all_three);
  EXPECT_TRUE(items(server.as(carol, "GET", "/api/v1/setup-keys")).empty());
  EXPECT_TRUE(items(server.as(dave, "GET", "/api/v1/setup-keys")).empty());
  EXPECT_EQ(server.as(carol, "GET", "/api/v1/setup-keys?group_id=" + group).status, 404);
  // Pages.
  auto first = server.as(owner, "GET", "/api/v1/setup-keys?limit=2");
  ASSERT_EQ(first.status, 200);
  EXPECT_EQ(items(first).size(), 2u);
  ASSERT_FALSE(str(first, "next_cursor").empty());
  auto second = server.as(owner, "GET", "/api/v1/setup-keys?limit=2&cursor=" + str(first, "next_cursor"));
  EXPECT_EQ(items(second).size(), 1u);
  EXPECT_EQ(second.object().if_contains("next_cursor"), nullptr);

  // Revocation: a member may not, another user does not see it, an admin may.
  const std::string key_id = str(by_owner, "id");
  EXPECT_EQ(server.as(carol, "DELETE", "/api/v1/setup-keys/" + key_id).status, 403);
  EXPECT_EQ(server.as(dave, "DELETE", "/api/v1/setup-keys/" + key_id).status, 404);
  auto revoked = server.as(bob, "DELETE", "/api/v1/setup-keys/" + key_id);
  EXPECT_EQ(revoked.status, 204) << revoked.body;
  EXPECT_EQ(server.as(bob, "DELETE", "/api/v1/setup-keys/" + key_id).status, 404);
  EXPECT_EQ(ids_of(server.as(owner, "GET", "/api/v1/setup-keys")).count(key_id), 0u);
  EXPECT_EQ(as_admin("DELETE", "/api/v1/setup-keys/" + str(by_admin, "id")).status, 204);
  // A revoked key registers nothing.
  auto with_revoked = register_with_key(str(by_owner, "key"), group);
  EXPECT_EQ(with_revoked.status, 401) << with_revoked.body;
}

TEST_F(PrincipalsTest, SetupKeysAreUsedUpAndExpire) {
  const std::string group = server.personal_group(owner);
  auto once = server.as(owner, "POST", "/api/v1/setup-keys", body({{"group_id", group}, {"max_uses", 1}}));
  ASSERT_EQ(once.status, 201) << once.body;
  auto first = register_with_key(str(once, "key"), group);
  ASSERT_EQ(first.status, 201) << first.body;
  auto second = register_with_key(str(once, "key"), group);
  EXPECT_EQ(second.status, 401) << second.body;
  EXPECT_NE(message_of(second).find("used up"), std::string::npos) << second.body;
  auto listed = server.as(owner, "GET", "/api/v1/setup-keys");
  ASSERT_EQ(items(listed).size(), 1u);
  const auto& item = items(listed)[0].as_object();
  EXPECT_EQ(item.at("uses").as_int64(), 1);
  EXPECT_FALSE(item.at("usable").as_bool());
  EXPECT_TRUE(is_rfc3339_ms(item.at("last_used_at").as_string()));
  // A key for another group: the card's group must be the key's.
  const std::string other = create_group(owner, "other");
  auto other_key = server.as(owner, "POST", "/api/v1/setup-keys", body({{"group_id", other}}));
  ASSERT_EQ(other_key.status, 201);
  EXPECT_EQ(register_with_key(str(other_key, "key"), group).status, 403);
  EXPECT_EQ(register_with_key("not-a-key", group).status, 401);

  // Expiry: poll the listing (with a deadline) until the key is no longer usable, then use it.
  auto expiring = server.as(owner, "POST", "/api/v1/setup-keys", body({{"group_id", group}, {"expires_at", in_ms(1000)}}));
  ASSERT_EQ(expiring.status, 201) << expiring.body;
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  bool usable = true;
  while (usable && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
    const Reply listing = server.as(owner, "GET", "/api/v1/setup-keys?group_id=" + group);
    for (const auto& key : items(listing)) {
      if (key.as_object().at("id").as_string() == str(expiring, "id")) usable = key.as_object().at("usable").as_bool();
    }
  }
  ASSERT_FALSE(usable);
  auto expired = register_with_key(str(expiring, "key"), group);
  EXPECT_EQ(expired.status, 401) << expired.body;
  EXPECT_NE(message_of(expired).find("expired"), std::string::npos) << expired.body;
}

// ---- device flow ----

// A server whose OAuth provider is a stand-in this test controls (pacing, lifetimes).
class DeviceFlowTest : public ::testing::Test {
 protected:
  explicit DeviceFlowTest(std::vector<std::string> standin_flags = {"--interval-ms", "300"})
      : github_(with_credentials(std::move(standin_flags))) {
    EXPECT_FALSE(github_.base_url().empty()) << "the GitHub stand-in did not start";
    secret_file_ = std::filesystem::temp_directory_path() /
                   ("principals-oauth-secret-" + std::to_string(::getpid()) + "-" + std::to_string(github_.port()));
    std::ofstream(secret_file_) << "flow-secret\n";
    server_ = std::make_unique<MeshServer>(MeshServer::Options{
        {"--oauth-client-id", "flow-client", "--oauth-client-secret-file", secret_file_.string(), "--oauth-device-url",
         github_.url("/login/device/code"), "--oauth-token-url", github_.url("/login/oauth/access_token"),
         "--oauth-user-url", github_.url("/user")},
        false});
  }
  ~DeviceFlowTest() override {
    server_.reset();
    std::error_code ignored;
    std::filesystem::remove(secret_file_, ignored);
  }

  static std::vector<std::string> with_credentials(std::vector<std::string> flags) {
    flags.insert(flags.end(), {"--client-id", "flow-client", "--client-secret", "flow-secret"});
    return flags;
  }

  MeshServer& server() { return *server_; }

  struct Started {
    std::string device_code;
    std::string user_code;
    Reply reply;
  };
  Started start() {
    Started started;
    started.reply = server().request("POST", "/api/v1/oauth/device");
    EXPECT_EQ(started.reply.status, 200) << started.reply.body << started.reply.error;
    started.device_code = str(started.reply, "device_code");
    started.user_code = str(started.reply, "user_code");
    return started;
  }
  Reply poll(const std::string& device_code) {
    return server().request("POST", "/api/v1/oauth/token",
                            body({{"device_code", device_code}, {"grant_type", kDeviceGrant}}));
  }
  // The person at the browser, through the stand-in's control endpoints.
  void control(const std::string& action, json::object object) {
    net::HttpRequest request;
    request.method = "POST";
    request.url = github_.url("/_control/" + action);
    request.headers.push_back({"Content-Type", "application/json"});
    request.body = body(object);
    auto answer = net::http_request(request);
    ASSERT_TRUE(answer.ok()) << answer.error().message;
    ASSERT_EQ(answer->status, 200) << answer->body;
  }
  void approve(const std::string& user_code, const std::string& login, int id) {
    control("approve", {{"user_code", user_code}, {"login", login}, {"id", id}});
  }

  GithubStandIn github_;
  std::filesystem::path secret_file_;
  std::unique_ptr<MeshServer> server_;
};

TEST_F(DeviceFlowTest, StartAnswersInRfc8628ShapeWithOurOwnHandle) {
  auto started = start();
  const auto& object = started.reply.object();
  EXPECT_EQ(started.device_code.size(), 43u) << "an opaque handle, not the provider's device code";
  EXPECT_FALSE(started.user_code.empty());
  EXPECT_NE(str(started.reply, "verification_uri").find("http"), std::string::npos);
  EXPECT_GT(object.at("expires_in").to_number<double>(), 0);
  EXPECT_DOUBLE_EQ(object.at("interval").to_number<double>(), 0.3);
  EXPECT_EQ(started.reply.header("cache-control"), "no-store");
  // RFC 8628 §3.1's client_id/scope parameters are accepted (and ignored); anything else is not.
  net::HttpRequest form;
  form.method = "POST";
  form.url = server().base_url() + "/api/v1/oauth/device";
  form.headers.push_back({"Content-Type", "application/x-www-form-urlencoded"});
  form.body = "client_id=whatever&scope=";
  auto with_form = net::http_request(form);
  ASSERT_TRUE(with_form.ok());
  EXPECT_EQ(with_form->status, 200) << with_form->body;
  auto unknown = server().request("POST", "/api/v1/oauth/device", body({{"redirect_uri", "x"}}));
  EXPECT_EQ(unknown.status, 400);
  EXPECT_EQ(unknown.error_code(), "bad_request");
}

TEST_F(DeviceFlowTest, PendingSlowDownAndApproval) {
  auto started = start();
  // The first poll is never early.
  auto pending = poll(started.device_code);
  EXPECT_EQ(pending.status, 400) << pending.body;
  EXPECT_EQ(oauth_error(pending), "authorization_pending") << pending.body;
  EXPECT_EQ(pending.header("cache-control"), "no-store");
  // At once again: too early, the registry says slow_down without asking the provider.
  auto early = poll(started.device_code);
  EXPECT_EQ(early.status, 400);
  EXPECT_EQ(oauth_error(early), "slow_down") << early.body;

  // Another login, approved before its first poll: one poll logs in.
  auto second = start();
  approve(second.user_code, "octocat", 583231);
  auto token = poll(second.device_code);
  ASSERT_EQ(token.status, 200) << token.body;
  EXPECT_EQ(str(token, "token_type"), "Bearer");
  EXPECT_EQ(token.header("cache-control"), "no-store");
  const std::string access_token = str(token, "access_token");
  const auto& user = token.object().at("user").as_object();
  EXPECT_EQ(user.at("login").as_string(), "octocat");
  auto me = server().as(access_token, "GET", "/api/v1/users/me");
  ASSERT_EQ(me.status, 200) << me.body;
  EXPECT_EQ(me.object().at("user").as_object().at("id"), user.at("id"));
  EXPECT_EQ(me.object().at("groups").as_array().size(), 1u);
  auto tokens = server().as(access_token, "GET", "/api/v1/tokens");
  ASSERT_EQ(items(tokens).size(), 1u);
  EXPECT_EQ(items(tokens)[0].as_object().at("name").as_string(), "device login");
  // The login is over: its handle is forgotten.
  auto again = poll(second.device_code);
  EXPECT_EQ(again.status, 400);
  EXPECT_EQ(oauth_error(again), "invalid_grant") << again.body;

  // The same GitHub account again: the same user, a second token.
  auto third = start();
  approve(third.user_code, "octocat", 583231);
  auto relogin = poll(third.device_code);
  ASSERT_EQ(relogin.status, 200) << relogin.body;
  EXPECT_EQ(relogin.object().at("user").as_object().at("id"), user.at("id"));
  EXPECT_NE(str(relogin, "access_token"), access_token);
  // Another account with a login already taken: login-<account id>.
  auto fourth = start();
  approve(fourth.user_code, "octocat", 999);
  auto namesake = poll(fourth.device_code);
  ASSERT_EQ(namesake.status, 200) << namesake.body;
  EXPECT_EQ(namesake.object().at("user").as_object().at("login").as_string(), "octocat-999");
  EXPECT_NE(namesake.object().at("user").as_object().at("id"), user.at("id"));
  // The bootstrap user's login is taken too.
  auto fifth = start();
  approve(fifth.user_code, "admin", 7);
  auto admin_namesake = poll(fifth.device_code);
  ASSERT_EQ(admin_namesake.status, 200) << admin_namesake.body;
  EXPECT_EQ(admin_namesake.object().at("user").as_object().at("login").as_string(), "admin-7");
}

TEST_F(DeviceFlowTest, DeniedExpiredAndBadPolls) {
  auto denied = start();
  control("deny", {{"user_code", denied.user_code}});
  auto refused = poll(denied.device_code);
  EXPECT_EQ(refused.status, 400);
  EXPECT_EQ(oauth_error(refused), "access_denied") << refused.body;
  EXPECT_EQ(oauth_error(poll(denied.device_code)), "invalid_grant");

  auto expired = start();
  control("expire", {{"user_code", expired.user_code}});
  auto late = poll(expired.device_code);
  EXPECT_EQ(late.status, 400);
  EXPECT_EQ(oauth_error(late), "expired_token") << late.body;

  // Form encoding, as OAuth clients send it.
  auto formed = start();
  approve(formed.user_code, "formuser", 31337);
  net::HttpRequest form;
  form.method = "POST";
  form.url = server().base_url() + "/api/v1/oauth/token";
  form.headers.push_back({"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"});
  form.body = net::form_urlencode(
      {{"grant_type", std::string(kDeviceGrant)}, {"device_code", formed.device_code}, {"client_id", "flow-client"}});
  auto answer = net::http_request(form);
  ASSERT_TRUE(answer.ok());
  EXPECT_EQ(answer->status, 200) << answer->body;
  EXPECT_NE(answer->body.find("\"login\":\"formuser\""), std::string::npos) << answer->body;

  // Malformed polls, each in the RFC's shape.
  auto expect_oauth_error = [&](const std::string& text, const std::string& code) {
    auto reply = server().request("POST", "/api/v1/oauth/token", text);
    EXPECT_EQ(reply.status, 400) << text;
    EXPECT_EQ(oauth_error(reply), code) << text << " → " << reply.body;
  };
  expect_oauth_error(body({{"device_code", "nope"}, {"grant_type", kDeviceGrant}}), "invalid_grant");
  expect_oauth_error(body({{"grant_type", kDeviceGrant}}), "invalid_request");
  expect_oauth_error(body({{"device_code", "nope"}}), "invalid_request");
  expect_oauth_error(body({{"device_code", "nope"}, {"grant_type", "password"}}), "unsupported_grant_type");
  expect_oauth_error(body({{"device_code", "nope"}, {"grant_type", kDeviceGrant}, {"extra", "1"}}), "invalid_request");
  expect_oauth_error(body({{"device_code", 5}, {"grant_type", kDeviceGrant}}), "invalid_request");
  expect_oauth_error("{\"device_code\":", "invalid_request");
  expect_oauth_error("", "invalid_request");
  form.body = "device_code=a&device_code=b&grant_type=x";
  auto twice = net::http_request(form);
  ASSERT_TRUE(twice.ok());
  EXPECT_EQ(twice->status, 400);
  EXPECT_NE(twice->body.find("invalid_request"), std::string::npos) << twice->body;
}

class ShortLivedDeviceFlowTest : public DeviceFlowTest {
 protected:
  ShortLivedDeviceFlowTest() : DeviceFlowTest({"--interval-ms", "0", "--expires-s", "0.5"}) {}
};

TEST_F(ShortLivedDeviceFlowTest, APendingLoginExpires) {
  auto started = start();
  EXPECT_DOUBLE_EQ(started.reply.object().at("expires_in").to_number<double>(), 0.5);
  // Poll (interval 0) until the login expires: pending first, then expired_token, never more.
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  std::string code = "authorization_pending";
  while (code == "authorization_pending" && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
    code = oauth_error(poll(started.device_code));
  }
  EXPECT_EQ(code, "expired_token");
}

TEST(DeviceFlowOff, OauthEndpointsAre404WithoutAProvider) {
  MeshServer server{MeshServer::Options{{}, false}};
  auto device = server.request("POST", "/api/v1/oauth/device");
  EXPECT_EQ(device.status, 404) << device.body;
  EXPECT_EQ(device.error_code(), "not_found");
  auto token = server.request("POST", "/api/v1/oauth/token",
                              body({{"device_code", "x"}, {"grant_type", kDeviceGrant}}));
  EXPECT_EQ(token.status, 404) << token.body;
  EXPECT_FALSE(server.request("GET", "/api/v1/info").object().at("oauth").as_bool());
}

}  // namespace
}  // namespace agent_mesh::test
