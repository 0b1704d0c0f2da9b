// ACL rules, the daemons' ACL sync (long poll), revocations and key rotation through the real
// agent-mesh-server (registry.md "ACL", "Revocations and rotation"; protocol §7): every endpoint's
// success and error paths, who may write which rule, group isolation, agent signatures beyond their
// rights, the long poll's wake-up latency, revocations closing live relay connections, rotation
// moving rules and revoking the old ID at grace_until, and persistence across a restart.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>

#include "../relay_test_client.hpp"
#include "agent_mesh/acl.hpp"
#include "agent_mesh/key_lifecycle.hpp"
#include "registry_fixture.hpp"

namespace agent_mesh::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

std::string to_json(const boost::json::value& value) { return boost::json::serialize(value); }

// --admin-token-file for the server under test (created before the server starts).
struct AdminTokenFile {
  std::filesystem::path path;
  std::string token = registry::generate_secret();
  AdminTokenFile() {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("acl-test-admin-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::ofstream(path) << token << "\n";
    std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  }
  ~AdminTokenFile() {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
};

std::int64_t elapsed_ms(steady_clock::time_point from, steady_clock::time_point to) {
  return std::chrono::duration_cast<milliseconds>(to - from).count();
}

class AclTest : public ::testing::Test {
 protected:
  AdminTokenFile admin_file;
  // Every test request is a new connection: lift the per-IP connection rate (20/s by default).
  MeshServer server{MeshServer::Options{
      .extra = {"--admin-token-file", admin_file.path.string(), "--ip-connect-rate", "100000"}}};
  std::string owner = server.bootstrap_token();  // the bootstrap user: owner of its personal group
  std::string group = server.personal_group(owner);

  const std::string& admin() const { return admin_file.token; }

  Reply register_card(const std::string& token, const KeyPair& key, const std::string& in_group,
                      const std::vector<std::string>& caps = {"echo"}) {
    return server.as(token, "POST", "/api/v1/agents", signed_card(key, in_group, "agent", caps));
  }
  KeyPair registered(const std::string& token, const std::string& in_group,
                     const std::vector<std::string>& caps = {"echo"}) {
    KeyPair key = KeyPair::generate();
    auto reply = register_card(token, key, in_group, caps);
    EXPECT_EQ(reply.status, 201) << reply.body;
    return key;
  }
  static std::string rule_body(const std::string& in_group, const std::string& source, const KeyPair& target,
                               boost::json::array caps = {"echo"}) {
    return to_json(boost::json::object{{"group_id", in_group},
                                       {"source", source},
                                       {"target", target.agent_id().str()},
                                       {"allowed_capabilities", std::move(caps)}});
  }
  Reply create_rule(const std::string& token, const std::string& in_group, const std::string& source,
                    const KeyPair& target, boost::json::array caps = {"echo"}) {
    return server.as(token, "POST", "/api/v1/acl", rule_body(in_group, source, target, std::move(caps)));
  }
  std::string user_id(const std::string& token) {
    return std::string(server.as(token, "GET", "/api/v1/users/me").object().at("user").as_object().at("id").as_string());
  }
  static std::string sync_target(const KeyPair& key, std::int64_t since, int wait_s) {
    return "/api/v1/acl/sync?agent_id=" + key.agent_id().str() + "&since=" + std::to_string(since) +
           "&wait_s=" + std::to_string(wait_s);
  }
  Reply sync(const KeyPair& key, std::int64_t since = 0, int wait_s = 0) {
    return server.as_agent(key, "GET", sync_target(key, since, wait_s));
  }
  // The sync answer as daemons read it.
  static AclSync parse_sync(const Reply& reply) {
    auto parsed = AclSync::parse(reply.body);
    EXPECT_TRUE(parsed.ok()) << (parsed.ok() ? "" : parsed.error().describe()) << "\n" << reply.body;
    return parsed.ok() ? std::move(parsed).value() : AclSync{};
  }
  static bool contains_id(const std::vector<AgentId>& ids, const KeyPair& key) {
    return std::find(ids.begin(), ids.end(), key.agent_id()) != ids.end();
  }
  std::size_t rule_count(const std::string& token, const std::string& query = "") {
    auto listed = server.as(token, "GET", "/api/v1/acl" + query);
    EXPECT_EQ(listed.status, 200) << listed.body;
    return listed.object().contains("items") ? listed.object().at("items").as_array().size() : 0;
  }
  std::optional<boost::json::object> find_revocation(const std::string& token, const KeyPair& key) {
    auto listed = server.as(token, "GET", "/api/v1/revocations?limit=200");
    EXPECT_EQ(listed.status, 200) << listed.body;
    if (!listed.object().contains("items")) return std::nullopt;
    for (const auto& item : listed.object().at("items").as_array()) {
      if (item.as_object().at("agent_id").as_string() == key.agent_id().str()) return item.as_object();
    }
    return std::nullopt;
  }
  // A relay connection logged in as `key`.
  std::unique_ptr<RelayTestClient> connect_relay(const KeyPair& key) {
    auto client = std::make_unique<RelayTestClient>();
    EXPECT_TRUE(client->connect(server.port()).ok());
    auto welcome = client->authenticate(key, server.relay_id());
    EXPECT_TRUE(welcome.ok()) << (welcome.ok() ? "" : welcome.error().describe());
    return client;
  }
  // Reads frames until the relay closes the connection; the close code (0 if none came in time).
  static std::uint16_t close_code_within(RelayTestClient& client, milliseconds timeout) {
    const auto deadline = steady_clock::now() + timeout;
    while (steady_clock::now() < deadline) {
      auto received = client.receive(std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now()));
      if (received.close) return *received.close;
      if (received.timed_out || received.connection_lost) return 0;
    }
    return 0;
  }
};

// ---- rules ----

TEST_F(AclTest, CreateListDeleteRules) {
  const KeyPair a = registered(owner, group);
  const KeyPair b = registered(owner, group);
  auto created = create_rule(owner, group, b.agent_id().str(), a, {"echo", "upper"});
  ASSERT_EQ(created.status, 201) << created.body;
  const auto& rule = created.object();
  EXPECT_TRUE(rule.at("id").as_string().starts_with("acl_"));
  EXPECT_EQ(rule.at("group_id").as_string(), group);
  EXPECT_EQ(rule.at("source").as_string(), b.agent_id().str());
  EXPECT_EQ(rule.at("target").as_string(), a.agent_id().str());
  EXPECT_EQ(rule.at("allowed_capabilities"), (boost::json::array{"echo", "upper"}));
  EXPECT_TRUE(rule.at("created_at").as_string().ends_with("Z"));
  auto star = create_rule(owner, group, "*", a, {"*"});
  ASSERT_EQ(star.status, 201) << star.body;

  // Listing, narrowed to a group, paged.
  EXPECT_EQ(rule_count(owner), 2u);
  EXPECT_EQ(rule_count(owner, "?group=" + group), 2u);
  auto first = server.as(owner, "GET", "/api/v1/acl?limit=1");
  ASSERT_EQ(first.status, 200);
  ASSERT_EQ(first.object().at("items").as_array().size(), 1u);
  ASSERT_TRUE(first.object().contains("next_cursor"));
  auto second = server.as(owner, "GET",
                          "/api/v1/acl?limit=1&cursor=" + std::string(first.object().at("next_cursor").as_string()));
  ASSERT_EQ(second.status, 200);
  ASSERT_EQ(second.object().at("items").as_array().size(), 1u);
  EXPECT_FALSE(second.object().contains("next_cursor"));
  EXPECT_NE(first.object().at("items").as_array()[0].as_object().at("id"),
            second.object().at("items").as_array()[0].as_object().at("id"));
  EXPECT_EQ(server.as(owner, "GET", "/api/v1/acl?limit=0").status, 400);

  // Deletion.
  const std::string id(rule.at("id").as_string());
  EXPECT_EQ(server.as(owner, "DELETE", "/api/v1/acl/" + id).status, 204);
  EXPECT_EQ(server.as(owner, "DELETE", "/api/v1/acl/" + id).status, 404);
  EXPECT_EQ(rule_count(owner), 1u);

  // Every write is audited.
  auto log = server.as(admin(), "GET", "/api/v1/audit?limit=200");
  ASSERT_EQ(log.status, 200) << log.body;
  std::set<std::string> actions;
  for (const auto& entry : log.object().at("items").as_array()) {
    if (entry.as_object().at("target").as_string() == id) actions.emplace(entry.as_object().at("action").as_string());
  }
  EXPECT_EQ(actions, (std::set<std::string>{"acl.create", "acl.delete"}));
}

TEST_F(AclTest, RuleValidation) {
  const KeyPair a = registered(owner, group);
  auto expect_400 = [&](const std::string& body, const std::string& mentions) {
    auto reply = server.as(owner, "POST", "/api/v1/acl", body);
    EXPECT_EQ(reply.status, 400) << body << " → " << reply.body;
    EXPECT_EQ(reply.error_code(), "bad_request");
    EXPECT_NE(reply.body.find(mentions), std::string::npos) << reply.body;
  };
  const std::string target = a.agent_id().str();
  auto body = [&](boost::json::object changes) {
    boost::json::object rule{{"group_id", group}, {"source", "*"}, {"target", target}, {"allowed_capabilities", {"echo"}}};
    for (auto& [key, value] : changes) {
      if (value.is_null()) {
        rule.erase(key);
      } else {
        rule[key] = value;
      }
    }
    return to_json(rule);
  };
  expect_400(body({{"priority", 1}}), "priority");
  expect_400(body({{"target", nullptr}}), "target");
  expect_400(body({{"group_id", nullptr}}), "group_id");
  expect_400(body({{"allowed_capabilities", nullptr}}), "allowed_capabilities");
  expect_400(body({{"allowed_capabilities", boost::json::array{}}}), "allowed_capabilities");
  expect_400(body({{"allowed_capabilities", "echo"}}), "allowed_capabilities");
  expect_400(body({{"allowed_capabilities", {"echo", "echo"}}}), "twice");
  expect_400(body({{"allowed_capabilities", {"*", "echo"}}}), "only entry");
  expect_400(body({{"allowed_capabilities", {"not a name"}}}), "capability name");
  expect_400(body({{"allowed_capabilities", {1}}}), "must be a string");
  expect_400(body({{"source", "bob"}}), "source");
  expect_400(body({{"target", "not-an-agent"}}), "target");
  expect_400(body({{"source", 7}}), "source");
  expect_400("{\"group_id\":", "");
  expect_400("[]", "");

  // Names that do not exist (in this group): 404.
  auto unknown_target = create_rule(owner, group, "*", KeyPair::generate());
  EXPECT_EQ(unknown_target.status, 404) << unknown_target.body;
  EXPECT_NE(unknown_target.body.find("target"), std::string::npos);
  auto unknown_source = create_rule(owner, group, KeyPair::generate().agent_id().str(), a);
  EXPECT_EQ(unknown_source.status, 404) << unknown_source.body;
  EXPECT_NE(unknown_source.body.find("source"), std::string::npos);
  EXPECT_EQ(create_rule(owner, Uuid::generate().to_string(), "*", a).status, 404);

  // No credentials.
  EXPECT_EQ(server.request("POST", "/api/v1/acl", rule_body(group, "*", a)).status, 401);
  EXPECT_EQ(server.request("GET", "/api/v1/acl").status, 401);
  EXPECT_EQ(server.request("DELETE", "/api/v1/acl/acl_xxxxxxxxxxxxxxxxxxxxxx").status, 401);
  EXPECT_EQ(rule_count(owner), 0u);
}

TEST_F(AclTest, WhoMayWriteWhichRuleAndGroupIsolation) {
  const std::string bob = server.login_user("bob", 101);
  const std::string carol = server.login_user("carol", 102);
  const std::string dave = server.login_user("dave", 103);
  ASSERT_FALSE(bob.empty());
  ASSERT_FALSE(carol.empty());
  ASSERT_FALSE(dave.empty());
  auto team_reply = server.as(owner, "POST", "/api/v1/groups", R"({"name":"team"})");
  ASSERT_EQ(team_reply.status, 201) << team_reply.body;
  const std::string team(team_reply.object().at("id").as_string());
  auto add = [&](const std::string& token, const std::string& role) {
    auto reply = server.as(owner, "POST", "/api/v1/groups/" + team + "/members",
                           to_json(boost::json::object{{"user_id", user_id(token)}, {"role", role}}));
    ASSERT_EQ(reply.status, 201) << reply.body;
  };
  add(bob, "member");
  add(carol, "admin");

  const KeyPair bobs = registered(bob, team);      // owned by bob, a plain member
  const KeyPair owners = registered(owner, team);  // owned by the group owner
  const KeyPair daves = registered(dave, server.personal_group(dave));

  // A member writes rules for his own agent only.
  auto mine = create_rule(bob, team, "*", bobs);
  ASSERT_EQ(mine.status, 201) << mine.body;
  const std::string mine_id(mine.object().at("id").as_string());
  auto not_mine = create_rule(bob, team, "*", owners);
  EXPECT_EQ(not_mine.status, 403) << not_mine.body;
  EXPECT_EQ(not_mine.error_code(), "forbidden");
  // A group admin writes and deletes anyone's.
  auto carols = create_rule(carol, team, bobs.agent_id().str(), owners);
  ASSERT_EQ(carols.status, 201) << carols.body;
  const std::string carols_id(carols.object().at("id").as_string());
  EXPECT_EQ(server.as(bob, "DELETE", "/api/v1/acl/" + carols_id).status, 403);
  EXPECT_EQ(server.as(carol, "DELETE", "/api/v1/acl/" + mine_id).status, 204);
  // The group owner too.
  auto again = create_rule(bob, team, "*", bobs);
  ASSERT_EQ(again.status, 201);
  EXPECT_EQ(server.as(owner, "DELETE", "/api/v1/acl/" + std::string(again.object().at("id").as_string())).status, 204);
  // Members all see the group's rules.
  EXPECT_EQ(rule_count(bob, "?group=" + team), 1u);
  EXPECT_EQ(rule_count(carol, "?group=" + team), 1u);

  // Another group's rules do not exist for dave.
  EXPECT_EQ(rule_count(dave), 0u);
  EXPECT_EQ(server.as(dave, "GET", "/api/v1/acl?group=" + team).status, 404);
  EXPECT_EQ(create_rule(dave, team, "*", owners).status, 404);
  EXPECT_EQ(server.as(dave, "DELETE", "/api/v1/acl/" + carols_id).status, 404);
  // Rules never cross groups: a source or target of another group is refused.
  auto foreign_source = create_rule(owner, team, daves.agent_id().str(), owners);
  EXPECT_EQ(foreign_source.status, 404) << foreign_source.body;
  EXPECT_NE(foreign_source.body.find("source"), std::string::npos);
  EXPECT_EQ(create_rule(owner, team, "*", daves).status, 404);

  // The admin token may do everything, in every group.
  EXPECT_GE(rule_count(admin()), 1u);
  auto by_admin = create_rule(admin(), server.personal_group(dave), "*", daves);
  ASSERT_EQ(by_admin.status, 201) << by_admin.body;
  EXPECT_EQ(rule_count(dave), 1u);
  EXPECT_EQ(server.as(admin(), "DELETE", "/api/v1/acl/" + std::string(by_admin.object().at("id").as_string())).status,
            204);

  // An agent signature is for the agent's own sync, not for rules.
  auto agent_list = server.as_agent(bobs, "GET", "/api/v1/acl");
  EXPECT_EQ(agent_list.status, 403) << agent_list.body;
  EXPECT_EQ(server.as_agent(bobs, "POST", "/api/v1/acl", rule_body(team, "*", bobs)).status, 403);
  EXPECT_EQ(server.as_agent(owners, "DELETE", "/api/v1/acl/" + carols_id).status, 403);

  // Revoking an agent (lost key) is for group owners/admins only.
  EXPECT_EQ(server.as(bob, "POST", "/api/v1/agents/" + bobs.agent_id().str() + "/revoke", "{}").status, 403);
  EXPECT_EQ(server.as(dave, "POST", "/api/v1/agents/" + bobs.agent_id().str() + "/revoke", "{}").status, 404);
  EXPECT_EQ(server.as_agent(bobs, "POST", "/api/v1/agents/" + bobs.agent_id().str() + "/revoke", "{}").status, 403);
  EXPECT_EQ(server.request("POST", "/api/v1/agents/" + bobs.agent_id().str() + "/revoke", "{}").status, 401);
  EXPECT_EQ(server.as(carol, "POST", "/api/v1/agents/" + bobs.agent_id().str() + "/revoke", R"({"why":"x"})").status,
            400);
  auto revoked = server.as(carol, "POST", "/api/v1/agents/" + bobs.agent_id().str() + "/revoke", R"({"reason":"lost"})");
  EXPECT_EQ(revoked.status, 200) << revoked.body;
  // Dave sees the revocation (they are global) but not its details.
  auto seen_by_dave = find_revocation(dave, bobs);
  ASSERT_TRUE(seen_by_dave.has_value());
  EXPECT_FALSE(seen_by_dave->contains("reason"));
  EXPECT_FALSE(seen_by_dave->contains("group_id"));
  auto seen_by_bob = find_revocation(bob, bobs);
  ASSERT_TRUE(seen_by_bob.has_value());
  EXPECT_EQ(seen_by_bob->at("reason").as_string(), "lost");
  EXPECT_EQ(seen_by_bob->at("kind").as_string(), "admin");
}

// ---- sync ----

TEST_F(AclTest, SyncExpandsStarAndIsWhatDaemonsParse) {
  const KeyPair a = registered(owner, group);
  const KeyPair b = registered(owner, group);
  const KeyPair c = registered(owner, group);
  ASSERT_EQ(create_rule(owner, group, "*", a, {"*"}).status, 201);
  ASSERT_EQ(create_rule(owner, group, b.agent_id().str(), a, {"echo"}).status, 201);
  ASSERT_EQ(create_rule(owner, group, a.agent_id().str(), b, {"upper"}).status, 201);

  auto reply = sync(a);
  ASSERT_EQ(reply.status, 200) << reply.body;
  const AclSync parsed = parse_sync(reply);
  EXPECT_GT(parsed.version, 0);
  // `*` became one rule per agent of the group (3), plus the rule from b.
  ASSERT_EQ(parsed.policy.rules().size(), 4u);
  for (const auto& rule : parsed.policy.rules()) {
    EXPECT_EQ(rule.target, a.agent_id());
    EXPECT_FALSE(rule.source.is_any());
    ASSERT_TRUE(rule.group_id.has_value());
    EXPECT_EQ(rule.group_id->to_string(), group);
  }
  EXPECT_TRUE(parsed.policy.allows(c.agent_id(), a.agent_id(), "anything"));
  EXPECT_TRUE(parsed.policy.allows(b.agent_id(), a.agent_id(), "echo"));
  EXPECT_FALSE(parsed.policy.allows(KeyPair::generate().agent_id(), a.agent_id(), "echo"));
  EXPECT_FALSE(parsed.policy.allows(a.agent_id(), b.agent_id(), "upper"));  // b's rules are b's
  EXPECT_TRUE(parsed.revoked.empty());
  // b sees its own.
  const AclSync for_b = parse_sync(sync(b));
  ASSERT_EQ(for_b.policy.rules().size(), 1u);
  EXPECT_TRUE(for_b.policy.allows(a.agent_id(), b.agent_id(), "upper"));
  // The admin token may read any agent's sync (debugging); users may not.
  EXPECT_EQ(server.as(admin(), "GET", sync_target(a, 0, 0)).status, 200);
  EXPECT_EQ(server.as(admin(), "GET", sync_target(KeyPair::generate(), 0, 0)).status, 404);
  auto by_user = server.as(owner, "GET", sync_target(a, 0, 0));
  EXPECT_EQ(by_user.status, 403) << by_user.body;
  EXPECT_EQ(server.request("GET", sync_target(a, 0, 0)).status, 401);
}

TEST_F(AclTest, SyncRefusesBadParametersAndSignaturesBeyondTheirRights) {
  const KeyPair a = registered(owner, group);
  const KeyPair b = registered(owner, group);
  const std::string id = a.agent_id().str();
  // b's signature does not read a's sync.
  auto foreign = server.as_agent(b, "GET", sync_target(a, 0, 0));
  EXPECT_EQ(foreign.status, 403) << foreign.body;
  EXPECT_EQ(foreign.error_code(), "forbidden");
  const std::vector<std::string> bad_queries{"", "agent_id=nope", "agent_id=" + id + "&since=-1", "agent_id=" + id + "&since=x",
                                  "agent_id=" + id + "&since=1.5", "agent_id=" + id + "&wait_s=31",
                                  "agent_id=" + id + "&wait_s=-1", "agent_id=" + id + "&wait_s="};
  for (const auto& query : bad_queries) {
    auto reply = server.as_agent(a, "GET", "/api/v1/acl/sync?" + query);
    EXPECT_EQ(reply.status, 400) << query << " → " << reply.body;
  }
  // Defaults: since 0 (answers at once), wait_s 25.
  EXPECT_EQ(server.as_agent(a, "GET", "/api/v1/acl/sync?agent_id=" + id).status, 200);

  // An expired signature (older than 2 min) and a replayed one.
  const std::string target = sync_target(a, 0, 0);
  const std::string stale = registry::make_agent_authorization(a, "GET", target, server.host(), wall_ms() - 3 * 60 * 1000);
  auto expired = server.request("GET", target, "", {{"Authorization", stale}});
  EXPECT_EQ(expired.status, 401) << expired.body;
  const std::string fresh = registry::make_agent_authorization(a, "GET", target, server.host(), wall_ms());
  EXPECT_EQ(server.request("GET", target, "", {{"Authorization", fresh}}).status, 200);
  auto replayed = server.request("GET", target, "", {{"Authorization", fresh}});
  EXPECT_EQ(replayed.status, 401) << replayed.body;
  // A signature for another target does not carry over.
  const std::string other = registry::make_agent_authorization(a, "GET", "/api/v1/agents", server.host(), wall_ms());
  EXPECT_EQ(server.request("GET", target, "", {{"Authorization", other}}).status, 401);
}

TEST_F(AclTest, LongPollAnswersAChangeWithinTwoSecondsOrAtItsDeadline) {
  const KeyPair a = registered(owner, group);
  const std::int64_t version = parse_sync(sync(a)).version;

  // Nothing changes: the answer comes after wait_s, with the same version.
  const auto started = steady_clock::now();
  auto idle = sync(a, version, 1);
  const auto idle_ms = elapsed_ms(started, steady_clock::now());
  ASSERT_EQ(idle.status, 200) << idle.body;
  EXPECT_EQ(parse_sync(idle).version, version);
  EXPECT_GE(idle_ms, 900);
  EXPECT_LT(idle_ms, 5000);

  // A `since` behind (or ahead of) the registry is answered at once.
  const auto behind_started = steady_clock::now();
  EXPECT_EQ(parse_sync(sync(a, version - 1, 20)).version, version);
  EXPECT_EQ(parse_sync(sync(a, version + 1000, 20)).version, version);
  EXPECT_LT(elapsed_ms(behind_started, steady_clock::now()), 5000);

  // A change wakes a waiting poll.
  auto poll = std::async(std::launch::async, [&] {
    Reply reply = sync(a, version, 20);
    return std::make_pair(std::move(reply), steady_clock::now());
  });
  ASSERT_EQ(poll.wait_for(milliseconds(300)), std::future_status::timeout) << "the poll did not wait";
  auto created = create_rule(owner, group, "*", a);
  ASSERT_EQ(created.status, 201) << created.body;
  const auto changed = steady_clock::now();
  ASSERT_EQ(poll.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  auto [reply, answered] = poll.get();
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_LT(elapsed_ms(changed, answered), 2000);
  const AclSync woke = parse_sync(reply);
  EXPECT_GT(woke.version, version);
  EXPECT_TRUE(woke.policy.allows(a.agent_id(), a.agent_id(), "echo"));
}

// ---- revocations ----

TEST_F(AclTest, RevocationsCloseLiveConnectionsAndReachDaemons) {
  const KeyPair a = registered(owner, group);
  const KeyPair b = registered(owner, group);
  ASSERT_EQ(create_rule(owner, group, b.agent_id().str(), a).status, 201);
  const std::int64_t version = parse_sync(sync(a)).version;
  auto live_b = connect_relay(b);

  // a's daemon is waiting when b is revoked by a group owner (lost key).
  auto poll = std::async(std::launch::async, [&] {
    Reply reply = sync(a, version, 20);
    return std::make_pair(std::move(reply), steady_clock::now());
  });
  ASSERT_EQ(poll.wait_for(milliseconds(300)), std::future_status::timeout);
  auto revoked = server.as(owner, "POST", "/api/v1/agents/" + b.agent_id().str() + "/revoke", R"({"reason":"laptop lost"})");
  const auto revoked_at = steady_clock::now();
  ASSERT_EQ(revoked.status, 200) << revoked.body;
  EXPECT_TRUE(revoked.object().at("revoked").as_bool());
  EXPECT_EQ(revoked.object().at("agent_id").as_string(), b.agent_id().str());
  const std::string effective_at(revoked.object().at("effective_at").as_string());
  EXPECT_FALSE(revoked.object().contains("relay_error")) << revoked.body;
  // The relay closes b's connection (4003) ...
  EXPECT_EQ(close_code_within(*live_b, milliseconds(5000)), close_code::revoked);
  // ... and a's daemon hears of it within 2 s.
  ASSERT_EQ(poll.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  auto [reply, answered] = poll.get();
  EXPECT_LT(elapsed_ms(revoked_at, answered), 2000);
  EXPECT_TRUE(contains_id(parse_sync(reply).revoked, b)) << reply.body;
  // b is gone from discovery and may not log in again; revoking again changes nothing.
  EXPECT_EQ(server.as(owner, "GET", "/api/v1/agents/" + b.agent_id().str()).status, 404);
  RelayTestClient again;
  ASSERT_TRUE(again.connect(server.port()).ok());
  EXPECT_FALSE(again.authenticate(b, server.relay_id()).ok());
  auto twice = server.as(owner, "POST", "/api/v1/agents/" + b.agent_id().str() + "/revoke", "");
  ASSERT_EQ(twice.status, 200) << twice.body;
  EXPECT_EQ(twice.object().at("effective_at").as_string(), effective_at);
  // A revoked key never registers again.
  EXPECT_EQ(register_card(owner, b, group).status, 403);
  auto listed = find_revocation(owner, b);
  ASSERT_TRUE(listed.has_value());
  EXPECT_EQ(listed->at("kind").as_string(), "admin");
  EXPECT_EQ(listed->at("reason").as_string(), "laptop lost");
  EXPECT_EQ(listed->at("effective_at").as_string(), effective_at);
  EXPECT_EQ(listed->at("group_id").as_string(), group);

  // A self-signed revocation needs no credential.
  const KeyPair c = registered(owner, group);
  auto live_c = connect_relay(c);
  Revocation self;
  self.agent_id = c.agent_id();
  self.reason = "key compromised";
  self.timestamp = wall_ms();
  self.sign(c);
  auto posted = server.request("POST", "/api/v1/revocations", self.serialize());
  ASSERT_EQ(posted.status, 200) << posted.body;
  EXPECT_EQ(close_code_within(*live_c, milliseconds(5000)), close_code::revoked);
  EXPECT_EQ(find_revocation(owner, c)->at("kind").as_string(), "self");
  EXPECT_TRUE(contains_id(parse_sync(sync(a)).revoked, c));  // its card was in a's group

  // Refusals.
  Revocation forged = self;
  const KeyPair d = registered(owner, group);
  forged.agent_id = d.agent_id();  // c's signature over another agent
  EXPECT_EQ(server.request("POST", "/api/v1/revocations", forged.serialize()).status, 400);
  Revocation unsigned_one;
  unsigned_one.agent_id = d.agent_id();
  unsigned_one.reason = "admin";
  unsigned_one.timestamp = wall_ms();
  EXPECT_EQ(server.request("POST", "/api/v1/revocations", unsigned_one.serialize()).status, 400);
  EXPECT_EQ(server.as(owner, "POST", "/api/v1/revocations", unsigned_one.serialize()).status, 403);
  EXPECT_EQ(server.request("POST", "/api/v1/revocations", R"({"agent_id":"x","reason":"","timestamp":1})").status, 400);
  auto extra = self.to_json();
  extra["note"] = "hi";
  EXPECT_EQ(server.request("POST", "/api/v1/revocations", to_json(extra)).status, 400);
  EXPECT_EQ(server.request("GET", "/api/v1/revocations").status, 401);
  EXPECT_EQ(server.as_agent(a, "GET", "/api/v1/revocations").status, 403);
  EXPECT_EQ(server.as(owner, "POST", "/api/v1/agents/" + KeyPair::generate().agent_id().str() + "/revoke", "").status,
            404);
  // The admin token may post an unsigned (admin) revocation.
  auto by_admin = server.as(admin(), "POST", "/api/v1/revocations", unsigned_one.serialize());
  ASSERT_EQ(by_admin.status, 200) << by_admin.body;
  EXPECT_EQ(find_revocation(owner, d)->at("kind").as_string(), "admin");
}

// ---- rotation ----

TEST_F(AclTest, RotationMovesRulesAndRevokesTheOldIdAtGraceUntil) {
  const KeyPair old_key = registered(owner, group);
  const KeyPair peer = registered(owner, group);
  const KeyPair new_key = KeyPair::generate();
  ASSERT_EQ(create_rule(owner, group, peer.agent_id().str(), old_key, {"echo"}).status, 201);
  ASSERT_EQ(create_rule(owner, group, old_key.agent_id().str(), peer, {"*"}).status, 201);
  const std::string path = "/api/v1/agents/" + old_key.agent_id().str() + "/rotate";

  const std::int64_t grace_ms = 2500;
  auto rotation = Rotation::create(old_key, new_key, wall_ms(), grace_ms);
  ASSERT_TRUE(rotation.ok()) << rotation.error().describe();
  auto card_json = boost::json::parse(signed_card(new_key, group, "renewed", {"echo"}));
  auto body = [&](const boost::json::value& rot, const boost::json::value& card) {
    return to_json(boost::json::object{{"rotation", rot}, {"card", card}});
  };
  const std::string good = body(rotation->to_json(), card_json);

  // Refusals, before anything changes.
  EXPECT_EQ(server.request("POST", path, good).status, 401);
  EXPECT_EQ(server.as_agent(peer, "POST", path, good).status, 403);
  const std::string bob = server.login_user("bob", 201);
  EXPECT_EQ(server.as(bob, "POST", path, good).status, 404);
  EXPECT_EQ(server.as(owner, "POST", "/api/v1/agents/" + peer.agent_id().str() + "/rotate", good).status, 400);
  auto tampered = rotation->to_json();
  tampered["grace_until"] = rotation->grace_until + 1;
  EXPECT_EQ(server.as(owner, "POST", path, body(tampered, card_json)).status, 400);
  const KeyPair stranger = KeyPair::generate();
  EXPECT_EQ(server.as(owner, "POST", path, body(rotation->to_json(), boost::json::parse(signed_card(stranger, group, "x", {"echo"}))))
                .status,
            400);
  EXPECT_EQ(server.as(owner, "POST", path,
                      body(rotation->to_json(),
                           boost::json::parse(signed_card(new_key, Uuid::generate().to_string(), "x", {"echo"}))))
                .status,
            400);
  EXPECT_EQ(server.as(owner, "POST", path,
                      body(rotation->to_json(), boost::json::parse(signed_card(new_key, group, "x", {"echo"},
                                                                                wall_ms() - 11 * 60 * 1000))))
                .status,
            400);
  EXPECT_EQ(server.as(owner, "POST", path, to_json(boost::json::object{{"rotation", rotation->to_json()}})).status, 400);
  auto extra = boost::json::parse(good).as_object();
  extra["grace"] = 1;
  auto unknown = server.as(owner, "POST", path, to_json(extra));
  EXPECT_EQ(unknown.status, 400);
  EXPECT_NE(unknown.body.find("grace"), std::string::npos);

  // The old agent is online when it rotates its own key.
  auto live_old = connect_relay(old_key);
  auto rotated = server.as_agent(old_key, "POST", path, good);
  ASSERT_EQ(rotated.status, 200) << rotated.body;
  const auto rotated_at = steady_clock::now();
  EXPECT_EQ(rotated.object().at("agent_id").as_string(), new_key.agent_id().str());
  EXPECT_EQ(rotated.object().at("group_id").as_string(), group);
  EXPECT_EQ(rotated.object().at("name").as_string(), "renewed");

  // The rules moved to the new ID.
  auto listed = server.as(owner, "GET", "/api/v1/acl");
  ASSERT_EQ(listed.object().at("items").as_array().size(), 2u);
  for (const auto& item : listed.object().at("items").as_array()) {
    const auto& rule = item.as_object();
    EXPECT_NE(rule.at("source").as_string(), old_key.agent_id().str());
    EXPECT_NE(rule.at("target").as_string(), old_key.agent_id().str());
  }
  const AclSync for_new = parse_sync(sync(new_key));
  EXPECT_TRUE(for_new.policy.allows(peer.agent_id(), new_key.agent_id(), "echo"));
  const AclSync for_peer = parse_sync(sync(peer));
  EXPECT_TRUE(for_peer.policy.allows(new_key.agent_id(), peer.agent_id(), "anything"));
  // The old ID is listed as a pending rotation, not yet revoked.
  auto pending = find_revocation(owner, old_key);
  ASSERT_TRUE(pending.has_value());
  EXPECT_EQ(pending->at("kind").as_string(), "rotation");
  EXPECT_FALSE(contains_id(for_peer.revoked, old_key));
  // The same rotation again: the old card is gone.
  EXPECT_EQ(server.as(owner, "POST", path, good).status, 404);

  // At grace_until the peer's waiting daemon learns the old ID is revoked, and the relay closes the
  // old key's connection.
  auto poll = sync(peer, for_peer.version, 20);
  const auto answered = steady_clock::now();
  ASSERT_EQ(poll.status, 200) << poll.body;
  EXPECT_TRUE(contains_id(parse_sync(poll).revoked, old_key)) << poll.body;
  EXPECT_LT(elapsed_ms(rotated_at, answered), grace_ms + 2000);
  EXPECT_EQ(close_code_within(*live_old, milliseconds(grace_ms + 5000)), close_code::revoked);
}

// ---- persistence ----

TEST_F(AclTest, RestartKeepsRulesAndRevocations) {
  const KeyPair a = registered(owner, group);
  const KeyPair b = registered(owner, group);
  auto rule = create_rule(owner, group, b.agent_id().str(), a);
  ASSERT_EQ(rule.status, 201);
  ASSERT_EQ(server.as(owner, "POST", "/api/v1/agents/" + b.agent_id().str() + "/revoke", "").status, 200);
  // A rotation whose grace period outlives the restart.
  const KeyPair old_key = registered(owner, group);
  const KeyPair new_key = KeyPair::generate();
  ASSERT_EQ(create_rule(owner, group, old_key.agent_id().str(), a).status, 201);
  const std::int64_t grace_ms = 3000;
  auto rotation = Rotation::create(old_key, new_key, wall_ms(), grace_ms);
  ASSERT_TRUE(rotation.ok());
  const auto rotated_at = steady_clock::now();
  auto rotated = server.as(owner, "POST", "/api/v1/agents/" + old_key.agent_id().str() + "/rotate",
                           to_json(boost::json::object{{"rotation", rotation->to_json()},
                                                       {"card", boost::json::parse(signed_card(new_key, group, "n", {"echo"}))}}));
  ASSERT_EQ(rotated.status, 200) << rotated.body;
  const std::int64_t version = parse_sync(sync(a)).version;

  server.restart();

  auto listed = server.as(owner, "GET", "/api/v1/acl");
  ASSERT_EQ(listed.status, 200) << listed.body;
  ASSERT_EQ(listed.object().at("items").as_array().size(), 2u);
  EXPECT_EQ(listed.object().at("items").as_array()[0].as_object().at("id"), rule.object().at("id"));
  EXPECT_EQ(listed.object().at("items").as_array()[1].as_object().at("source").as_string(), new_key.agent_id().str());
  auto revocation = find_revocation(owner, b);
  ASSERT_TRUE(revocation.has_value());
  EXPECT_EQ(revocation->at("kind").as_string(), "admin");
  const AclSync after = parse_sync(sync(a));
  EXPECT_GE(after.version, version);
  EXPECT_TRUE(after.policy.allows(b.agent_id(), a.agent_id(), "echo"));
  EXPECT_TRUE(contains_id(after.revoked, b));
  EXPECT_TRUE(after.policy.allows(new_key.agent_id(), a.agent_id(), "echo"));
  EXPECT_EQ(find_revocation(owner, old_key)->at("kind").as_string(), "rotation");
  RelayTestClient relay;
  ASSERT_TRUE(relay.connect(server.port()).ok());
  EXPECT_FALSE(relay.authenticate(b, server.relay_id()).ok());
  // The pending rotation still takes effect at grace_until: a waiting daemon hears of it.
  auto poll = sync(a, after.version, 20);
  ASSERT_EQ(poll.status, 200) << poll.body;
  EXPECT_TRUE(contains_id(parse_sync(poll).revoked, old_key)) << poll.body;
  EXPECT_LT(elapsed_ms(rotated_at, steady_clock::now()), grace_ms + 2000);
}

}  // namespace
}  // namespace agent_mesh::test
