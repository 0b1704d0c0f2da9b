// Agent cards through the real agent-mesh-server: registration with proof of key possession,
// replay and rollback refusal, group isolation, discovery (capability, full text, pagination), the
// A2A view, liveness from the relay inside, the registration gate, and persistence across restart.
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

#include "../relay_test_client.hpp"
#include "registry_fixture.hpp"

namespace agent_mesh::test {
namespace {

class AgentsTest : public ::testing::Test {
 protected:
  MeshServer server;
  std::string token = server.bootstrap_token();
  std::string group = server.personal_group(token);

  Reply register_card(const KeyPair& key, const std::string& name, const std::vector<std::string>& caps,
                      std::int64_t ts = wall_ms(), const std::string& description = "") {
    return server.as(token, "POST", "/api/v1/agents", signed_card(key, group, name, caps, ts, description));
  }
};

TEST_F(AgentsTest, InfoHealthStatusAndMetrics) {
  auto info = server.request("GET", "/api/v1/info");
  ASSERT_EQ(info.status, 200) << info.body;
  EXPECT_EQ(info.object().at("relay_url").as_string(), server.relay_id());
  EXPECT_TRUE(info.object().at("oauth").as_bool());  // the fixture configures the GitHub stand-in
  EXPECT_EQ(server.request("GET", "/api/v1/health").status, 200);
  auto status = server.request("GET", "/api/v1/status");
  ASSERT_EQ(status.status, 200);
  EXPECT_EQ(status.object().at("users").as_int64(), 1);
  auto metrics = server.request("GET", "/api/v1/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("agent_mesh_registry_users 1"), std::string::npos) << metrics.body;
  const auto metrics_file = server.data_dir() / "metrics.txt";
  std::ofstream(metrics_file) << metrics.body;
  const std::string check = "promtool check metrics < '" + metrics_file.string() + "'";
  EXPECT_EQ(std::system(check.c_str()), 0) << metrics.body;
  EXPECT_EQ(server.request("GET", "/api/v1/nothing-here").status, 404);
  auto wrong_method = server.request("PATCH", "/api/v1/agents");
  EXPECT_EQ(wrong_method.status, 405);
  EXPECT_NE(wrong_method.header("allow").find("GET"), std::string::npos);
}

TEST_F(AgentsTest, RegisterReplaceAndRefuseReplayRollbackAndForgery) {
  const KeyPair key = KeyPair::generate();
  const std::int64_t t0 = wall_ms() - 1000;
  auto created = register_card(key, "echo bot", {"echo"}, t0);
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(created.object().at("agent_id").as_string(), key.agent_id().str());
  EXPECT_FALSE(created.object().at("online").as_bool());
  // The same signed body again: a replay (timestamp not newer).
  auto replay = server.as(token, "POST", "/api/v1/agents", signed_card(key, group, "echo bot", {"echo"}, t0));
  EXPECT_EQ(replay.status, 409) << replay.body;
  // Newer: replaces.
  auto replaced = register_card(key, "echo bot 2", {"echo", "upper"}, t0 + 500);
  EXPECT_EQ(replaced.status, 200) << replaced.body;
  // Older than the stored one: a rollback.
  EXPECT_EQ(register_card(key, "old", {"echo"}, t0 + 100).status, 409);
  // Older than 10 minutes.
  auto stale = register_card(KeyPair::generate(), "stale", {"echo"}, wall_ms() - 11 * 60 * 1000);
  EXPECT_EQ(stale.status, 400);
  // A signature by another key.
  std::string forged = signed_card(key, group, "forged", {"echo"}, wall_ms());
  const KeyPair other = KeyPair::generate();
  std::string by_other = signed_card(other, group, "forged", {"echo"}, wall_ms());
  auto sig_at = by_other.find("\"signature\":\"");
  auto own_at = forged.find("\"signature\":\"");
  forged.replace(own_at, 100, by_other.substr(sig_at, 100));
  auto bad = server.as(token, "POST", "/api/v1/agents", forged);
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(bad.error_code(), "bad_request");
  // Malformed JSON, no credentials, an oversized body.
  EXPECT_EQ(server.as(token, "POST", "/api/v1/agents", "{\"agent_id\":").status, 400);
  EXPECT_EQ(server.request("POST", "/api/v1/agents", signed_card(KeyPair::generate(), group, "x", {"echo"})).status,
            401);
  auto huge = server.as(token, "POST", "/api/v1/agents", std::string(1024 * 1024 + 10, ' '));
  EXPECT_EQ(huge.status, 413);
  EXPECT_EQ(huge.error_code(), "too_large");
}

TEST_F(AgentsTest, AnotherUserNeverSeesOrTakesOverTheCard) {
  const KeyPair key = KeyPair::generate();
  ASSERT_EQ(register_card(key, "private bot", {"secret"}).status, 201);
  const std::string bob = server.login_user("bob", 4242);
  ASSERT_FALSE(bob.empty());
  const std::string bob_group = server.personal_group(bob);
  // Invisible through every read endpoint.
  EXPECT_EQ(server.as(bob, "GET", "/api/v1/agents/" + key.agent_id().str()).status, 404);
  EXPECT_EQ(server.as(bob, "GET", "/api/v1/agents/" + key.agent_id().str() + "/agent-card.json").status, 404);
  auto search = server.as(bob, "GET", "/api/v1/agents?capability=secret");
  ASSERT_EQ(search.status, 200);
  EXPECT_TRUE(search.object().at("items").as_array().empty());
  EXPECT_EQ(server.as(bob, "GET", "/api/v1/agents?group=" + group).status, 404);
  // Cannot register the same key in his group, nor delete it.
  auto takeover = server.as(bob, "POST", "/api/v1/agents", signed_card(key, bob_group, "mine now", {"x"}));
  EXPECT_EQ(takeover.status, 409) << takeover.body;
  EXPECT_EQ(server.as(bob, "DELETE", "/api/v1/agents/" + key.agent_id().str()).status, 404);
  // Nor register a card into a group he is not a member of.
  auto foreign_group = server.as(bob, "POST", "/api/v1/agents", signed_card(KeyPair::generate(), group, "x", {"x"}));
  EXPECT_EQ(foreign_group.status, 403);
}

TEST_F(AgentsTest, DiscoveryByCapabilityFullTextAndPages) {
  std::vector<KeyPair> keys;
  for (int i = 0; i < 5; ++i) {
    keys.push_back(KeyPair::generate());
    ASSERT_EQ(register_card(keys.back(), "worker " + std::to_string(i), {"compute", "cap" + std::to_string(i)}).status,
              201);
  }
  const KeyPair translator = KeyPair::generate();
  ASSERT_EQ(register_card(translator, "translator", {"translate"}, wall_ms(), "turns french into english").status, 201);
  const KeyPair mentions = KeyPair::generate();
  ASSERT_EQ(register_card(mentions, "helper", {"assist"}, wall_ms(), "can call the translator sometimes").status, 201);

  auto by_capability = server.as(token, "GET", "/api/v1/agents?capability=compute");
  ASSERT_EQ(by_capability.status, 200);
  EXPECT_EQ(by_capability.object().at("items").as_array().size(), 5u);

  // Full text: the card named "translator" ranks above the one that only mentions it.
  auto text = server.as(token, "GET", "/api/v1/agents?q=translator");
  ASSERT_EQ(text.status, 200) << text.body;
  const auto& items = text.object().at("items").as_array();
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].as_object().at("agent_id").as_string(), translator.agent_id().str());
  // Hostile full-text syntax is searched literally.
  EXPECT_EQ(server.as(token, "GET", "/api/v1/agents?q=%22NEAR(a%20b)*%20OR").status, 200);

  // Pages of 2 across all 7 cards: no duplicates, no gaps.
  std::set<std::string> seen;
  std::string cursor;
  int pages = 0;
  do {
    auto page = server.as(token, "GET", "/api/v1/agents?limit=2" + (cursor.empty() ? "" : "&cursor=" + cursor));
    ASSERT_EQ(page.status, 200) << page.body;
    for (const auto& item : page.object().at("items").as_array()) {
      EXPECT_TRUE(seen.insert(std::string(item.as_object().at("agent_id").as_string())).second);
    }
    const auto* next = page.object().if_contains("next_cursor");
    cursor = next ? std::string(next->as_string()) : std::string();
    ASSERT_LT(++pages, 10);
  } while (!cursor.empty());
  EXPECT_EQ(seen.size(), 7u);
  EXPECT_EQ(server.as(token, "GET", "/api/v1/agents?cursor=garbage!").status, 400);
  EXPECT_EQ(server.as(token, "GET", "/api/v1/agents?limit=0").status, 400);
  EXPECT_EQ(server.as(token, "GET", "/api/v1/agents?limit=201").status, 400);
}

TEST_F(AgentsTest, A2aViewWithEtag) {
  const KeyPair key = KeyPair::generate();
  ASSERT_EQ(register_card(key, "a2a bot", {"summarize"}, wall_ms(), "summarizes text").status, 201);
  const std::string target = "/api/v1/agents/" + key.agent_id().str() + "/agent-card.json";
  auto card = server.as(token, "GET", target);
  ASSERT_EQ(card.status, 200) << card.body;
  EXPECT_EQ(card.object().at("name").as_string(), "a2a bot");
  EXPECT_EQ(card.object().at("skills").as_array().size(), 1u);
  const std::string etag = card.header("etag");
  ASSERT_FALSE(etag.empty());
  EXPECT_FALSE(card.header("cache-control").empty());
  auto again = server.request("GET", target, "", {{"Authorization", "Bearer " + token}, {"If-None-Match", etag}});
  EXPECT_EQ(again.status, 304);
  // The live card round-trips through @a2a-js/sdk's own AgentCard types (tests/a2a, npm).
  const auto file = server.data_dir() / "a2a-card.json";
  std::ofstream(file) << card.body;
  ChildProcess node("/usr/bin/env", {"node", std::string(AGENT_MESH_A2A_DIR) + "/validate-card.mjs", file.string()},
                    /*capture_stderr=*/true);
  std::string output;
  while (auto line = node.read_line(std::chrono::seconds(20))) output += *line + "\n";
  EXPECT_EQ(node.wait_exit(std::chrono::seconds(20)), 0) << output;
}

TEST_F(AgentsTest, LivenessFollowsTheRelayAndTheGateRefusesUnknownAgents) {
  const KeyPair key = KeyPair::generate();
  ASSERT_EQ(register_card(key, "live bot", {"ping"}).status, 201);
  const std::string target = "/api/v1/agents/" + key.agent_id().str();
  EXPECT_FALSE(server.as(token, "GET", target).object().at("online").as_bool());
  {
    RelayTestClient client;
    ASSERT_TRUE(client.connect(server.port()).ok());
    auto welcome = client.authenticate(key, server.relay_id());
    ASSERT_TRUE(welcome.ok()) << welcome.error().describe();
    auto online = server.as(token, "GET", target);
    EXPECT_TRUE(online.object().at("online").as_bool());
    EXPECT_TRUE(online.object().contains("last_seen"));
    auto listed = server.as(token, "GET", "/api/v1/agents?online=true");
    EXPECT_EQ(listed.object().at("items").as_array().size(), 1u);
    client.close();
    // The relay drops the route when the close completes: poll with a deadline.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    bool offline = false;
    while (!offline && std::chrono::steady_clock::now() < deadline) {
      offline = !server.as(token, "GET", target).object().at("online").as_bool();
    }
    EXPECT_TRUE(offline);
  }
  // An agent without a card may not log in to the relay (relay.md "Gate").
  RelayTestClient stranger;
  ASSERT_TRUE(stranger.connect(server.port()).ok());
  auto refused = stranger.authenticate(KeyPair::generate(), server.relay_id());
  EXPECT_FALSE(refused.ok());
}

TEST_F(AgentsTest, AgentSignedUpdatesOwnCardOnlyAndSignaturesDoNotReplay) {
  const KeyPair key = KeyPair::generate();
  const KeyPair other = KeyPair::generate();
  ASSERT_EQ(register_card(key, "self", {"a"}).status, 201);
  ASSERT_EQ(register_card(other, "other", {"b"}).status, 201);
  const std::string own = "/api/v1/agents/" + key.agent_id().str();
  // Reads its group's discovery.
  auto listed = server.as_agent(key, "GET", "/api/v1/agents");
  ASSERT_EQ(listed.status, 200) << listed.body;
  EXPECT_EQ(listed.object().at("items").as_array().size(), 2u);
  // Updates its own card, not another's; cannot register new cards or use user endpoints.
  EXPECT_EQ(server.as_agent(key, "PUT", own, signed_card(key, group, "self v2", {"a"}, wall_ms() + 1)).status, 200);
  EXPECT_EQ(server.as_agent(key, "PUT", "/api/v1/agents/" + other.agent_id().str(),
                            signed_card(other, group, "hijack", {"b"}, wall_ms() + 1))
                .status,
            403);
  EXPECT_EQ(server.as_agent(key, "POST", "/api/v1/agents", signed_card(KeyPair::generate(), group, "n", {"c"})).status,
            403);
  EXPECT_EQ(server.as_agent(key, "GET", "/api/v1/tokens").status, 403);
  // A replayed signature header, and one too old.
  const std::string header = registry::make_agent_authorization(key, "GET", own, server.host(), wall_ms());
  EXPECT_EQ(server.request("GET", own, "", {{"Authorization", header}}).status, 200);
  EXPECT_EQ(server.request("GET", own, "", {{"Authorization", header}}).status, 401);
  const std::string old = registry::make_agent_authorization(key, "GET", own, server.host(), wall_ms() - 3 * 60 * 1000);
  EXPECT_EQ(server.request("GET", own, "", {{"Authorization", old}}).status, 401);
  // Deletes its own card; afterwards its signature opens nothing.
  EXPECT_EQ(server.as_agent(key, "DELETE", own).status, 204);
  EXPECT_EQ(server.as_agent(key, "GET", "/api/v1/agents").status, 401);
}

TEST_F(AgentsTest, CardsSurviveARestart) {
  const KeyPair key = KeyPair::generate();
  ASSERT_EQ(register_card(key, "durable", {"keep"}).status, 201);
  server.restart();
  auto card = server.as(token, "GET", "/api/v1/agents/" + key.agent_id().str());
  ASSERT_EQ(card.status, 200) << card.body;
  EXPECT_EQ(card.object().at("name").as_string(), "durable");
}

TEST(ServerCors, OffUnlessTheOriginIsAllowListed) {
  MeshServer plain;
  auto no_cors = plain.request("GET", "/api/v1/info", "", {{"Origin", "https://app.example.com"}});
  EXPECT_EQ(no_cors.status, 200);
  EXPECT_TRUE(no_cors.header("access-control-allow-origin").empty());
  EXPECT_EQ(plain.request("OPTIONS", "/api/v1/agents", "", {{"Origin", "https://app.example.com"}}).status, 403);

  MeshServer::Options options;
  options.extra = {"--cors-origin", "https://app.example.com"};
  MeshServer allowing(options);
  auto allowed = allowing.request("GET", "/api/v1/info", "", {{"Origin", "https://app.example.com"}});
  EXPECT_EQ(allowed.header("access-control-allow-origin"), "https://app.example.com");
  EXPECT_EQ(allowed.header("vary"), "Origin");
  auto preflight = allowing.request("OPTIONS", "/api/v1/agents", "",
                                    {{"Origin", "https://app.example.com"},
                                     {"Access-Control-Request-Method", "POST"},
                                     {"Access-Control-Request-Headers", "authorization, content-type"}});
  EXPECT_EQ(preflight.status, 204);
  EXPECT_NE(preflight.header("access-control-allow-headers").find("Authorization"), std::string::npos);
  auto other = allowing.request("GET", "/api/v1/info", "", {{"Origin", "https://evil.example.com"}});
  EXPECT_TRUE(other.header("access-control-allow-origin").empty());
  EXPECT_EQ(allowing.request("OPTIONS", "/api/v1/agents", "", {{"Origin", "https://evil.example.com"}}).status, 403);
}

TEST(ServerCommandLine, WildcardListenNeedsPublicUrlAndHelpListsTheFlags) {
  ChildProcess wildcard(binary_path("agent-mesh-server"),
                        {"--listen", "0.0.0.0:0", "--data-dir", std::filesystem::temp_directory_path().string()},
                        /*capture_stderr=*/true);
  std::string output;
  while (auto line = wildcard.read_line(std::chrono::seconds(10))) output += *line + "\n";
  EXPECT_EQ(wildcard.wait_exit(std::chrono::seconds(10)), 2);
  EXPECT_NE(output.find("--public-url https://"), std::string::npos) << output;

  ChildProcess help(binary_path("agent-mesh-server"), {"--help"});
  std::string text;
  while (auto line = help.read_line(std::chrono::seconds(10))) text += *line + "\n";
  EXPECT_EQ(help.wait_exit(std::chrono::seconds(10)), 0);
  for (const char* flag : {"--public-url", "--web-root", "--bootstrap", "--db-path", "--cors-origin",
                           "--oauth-client-id", "--admin-token-file", "--rate-limit", "--listen"}) {
    EXPECT_NE(text.find(flag), std::string::npos) << flag;
  }
}

TEST(ServerCommandLine, BootstrapTokenFileIsPrivateAndASecondBootstrapDoesNothing) {
  MeshServer server;
  const auto path = server.data_dir() / "bootstrap-token";
  const auto perms = std::filesystem::status(path).permissions();
  EXPECT_EQ(perms & std::filesystem::perms::all, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  const std::string before = server.bootstrap_token();
  server.restart();  // --bootstrap again, users exist: nothing changes
  std::string after;
  std::ifstream(path) >> after;
  EXPECT_EQ(after, before);
  EXPECT_EQ(server.as(before, "GET", "/api/v1/users/me").status, 200);
}

}  // namespace
}  // namespace agent_mesh::test
