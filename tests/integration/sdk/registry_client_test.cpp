// RegistryClient (include/agent_mesh/registry_client.hpp) against the real agent-mesh-server binary
// on an ephemeral loopback port with --bootstrap: info, registration with a user token and with a
// setup key, discovery, the ACL sync long poll woken by a new rule, card updates, deregistration,
// concurrent signed calls, and the error mapping (registry errors, a dead URL, a bad URL).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../child_process.hpp"
#include "agent_mesh/registry_client.hpp"

namespace agent_mesh::test {
namespace {

using namespace std::chrono_literals;

class RegistryClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_dir_ = std::filesystem::temp_directory_path() /
                ("sdk-registry-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::create_directories(data_dir_);
    server_ = std::make_unique<ChildProcess>(
        binary_path("agent-mesh-server"),
        std::vector<std::string>{"--listen", "127.0.0.1:0", "--data-dir", data_dir_.string(), "--bootstrap",
                                 "--log-level", "warn",
                                 // One connection per request from one IP: lift the per-IP limit.
                                 "--ip-connect-rate", "100000"});
    const int port = server_->wait_listening();
    ASSERT_GT(port, 0) << "agent-mesh-server did not print its listening line";
    base_url_ = "http://127.0.0.1:" + std::to_string(port);
    std::ifstream in(data_dir_ / "bootstrap-token");
    std::getline(in, token_);
    ASSERT_FALSE(token_.empty()) << "no bootstrap token in " << (data_dir_ / "bootstrap-token").string();
  }
  void TearDown() override {
    server_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(data_dir_, ignored);
  }

  std::unique_ptr<RegistryClient> client(const KeyPair& key) {
    return std::make_unique<RegistryClient>(base_url_, key);
  }

  // The bootstrap user's personal group, through call() with its token.
  std::string personal_group(const RegistryClient& registry) {
    auto me = registry.call("GET", "/api/v1/users/me", std::nullopt, token_);
    EXPECT_TRUE(me.ok()) << me.error().describe();
    if (!me) return {};
    for (const auto& group : me->as_object().at("groups").as_array()) {
      if (group.as_object().at("personal").as_bool()) return std::string(group.as_object().at("id").as_string());
    }
    ADD_FAILURE() << "no personal group in " << boost::json::serialize(*me);
    return {};
  }

  static AgentCard card(const std::string& group_id, const std::string& name, const std::vector<std::string>& capabilities) {
    AgentCard c;
    c.group_id = Uuid::parse(group_id).value();
    c.name = name;
    for (const auto& capability : capabilities) {
      CardCapability cap;
      cap.name = capability;
      cap.description = "does " + capability;
      c.capabilities.push_back(std::move(cap));
    }
    return c;
  }

  static std::vector<std::string> ids_of(const boost::json::object& page) {
    std::vector<std::string> out;
    for (const auto& item : page.at("items").as_array()) out.emplace_back(item.as_object().at("agent_id").as_string());
    return out;
  }

  static inline int counter_ = 0;
  std::filesystem::path data_dir_;
  std::unique_ptr<ChildProcess> server_;
  std::string base_url_;
  std::string token_;
};

bool contains(const std::vector<std::string>& ids, const AgentId& id) {
  return std::find(ids.begin(), ids.end(), id.str()) != ids.end();
}

TEST_F(RegistryClientTest, InfoNeedsNoCredentials) {
  auto registry = client(KeyPair::generate());
  auto info = registry->info();
  ASSERT_TRUE(info.ok()) << info.error().describe();
  EXPECT_TRUE(info->at("version").is_string());
  EXPECT_EQ(info->at("relay_url").as_string(), "ws" + base_url_.substr(4) + "/relay/ws");
  EXPECT_TRUE(info->at("oauth").is_bool());
}

TEST_F(RegistryClientTest, RegisterDiscoverUpdateDeregister) {
  const KeyPair alice_key = KeyPair::generate();
  const KeyPair bob_key = KeyPair::generate();
  auto alice = client(alice_key);
  auto bob = client(bob_key);
  const std::string group = personal_group(*alice);
  ASSERT_FALSE(group.empty());

  // Not registered yet: the registry does not know the signer.
  auto early = alice->discover({.capability = "echo"});
  ASSERT_FALSE(early.ok());
  EXPECT_EQ(early.error().code, Errc::unauthorized) << early.error().describe();

  auto stored = alice->register_card(card(group, "alice", {"echo", "summarize"}), token_);
  ASSERT_TRUE(stored.ok()) << stored.error().describe();
  EXPECT_EQ(stored->at("agent_id").as_string(), alice_key.agent_id().str());
  EXPECT_EQ(stored->at("group_id").as_string(), group);
  ASSERT_TRUE(bob->register_card(card(group, "bob", {"translate"}), token_).ok());

  // Discovery, agent-signed: by capability, by full text, paginated.
  auto by_capability = bob->discover({.capability = "echo"});
  ASSERT_TRUE(by_capability.ok()) << by_capability.error().describe();
  EXPECT_EQ(ids_of(*by_capability), std::vector<std::string>{alice_key.agent_id().str()});
  auto by_text = alice->discover({.q = "translate"});
  ASSERT_TRUE(by_text.ok()) << by_text.error().describe();
  EXPECT_TRUE(contains(ids_of(*by_text), bob_key.agent_id()));
  auto first_page = alice->discover({.group = group, .limit = 1});
  ASSERT_TRUE(first_page.ok()) << first_page.error().describe();
  ASSERT_EQ(ids_of(*first_page).size(), 1u);
  ASSERT_TRUE(first_page->contains("next_cursor"));
  auto second_page = alice->discover({.group = group, .limit = 1,
                                      .cursor = std::string(first_page->at("next_cursor").as_string())});
  ASSERT_TRUE(second_page.ok()) << second_page.error().describe();
  ASSERT_EQ(ids_of(*second_page).size(), 1u);
  EXPECT_NE(ids_of(*first_page), ids_of(*second_page));
  auto offline = alice->discover({.capability = "echo", .online = true});
  ASSERT_TRUE(offline.ok()) << offline.error().describe();
  EXPECT_TRUE(ids_of(*offline).empty());

  // The same request twice at once and in a burst: every signature differs (strictly increasing ts).
  std::vector<std::future<Result<boost::json::object>>> burst;
  for (int i = 0; i < 8; ++i) {
    burst.push_back(std::async(std::launch::async, [&] { return bob->discover({.capability = "echo"}); }));
  }
  for (auto& answer : burst) {
    auto page = answer.get();
    ASSERT_TRUE(page.ok()) << page.error().describe();
    EXPECT_EQ(ids_of(*page).size(), 1u);
  }

  // Update with the agent's own signature; the stored card follows.
  AgentCard updated = card(group, "alice", {"echo"});
  updated.description = "now with a description";
  auto put = alice->update_card(updated);
  ASSERT_TRUE(put.ok()) << put.error().describe();
  auto read = bob->call("GET", "/api/v1/agents/" + alice_key.agent_id().str());
  ASSERT_TRUE(read.ok()) << read.error().describe();
  EXPECT_EQ(read->as_object().at("description").as_string(), "now with a description");
  EXPECT_EQ(read->as_object().at("capabilities").as_array().size(), 1u);

  // A card for another key is refused before anything is sent.
  AgentCard foreign = card(group, "mallory", {"echo"});
  foreign.agent_id = bob_key.agent_id();
  auto refused = alice->update_card(foreign);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Errc::bad_request);

  // Deregistration: gone from discovery, and the key no longer authenticates.
  ASSERT_TRUE(alice->deregister().ok());
  auto after = bob->discover({.capability = "echo"});
  ASSERT_TRUE(after.ok()) << after.error().describe();
  EXPECT_TRUE(ids_of(*after).empty());
  auto gone = alice->discover({});
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, Errc::unauthorized);
}

TEST_F(RegistryClientTest, AclSyncWakesOnANewRule) {
  const KeyPair alice_key = KeyPair::generate();
  const KeyPair bob_key = KeyPair::generate();
  auto alice = client(alice_key);
  auto bob = client(bob_key);
  const std::string group = personal_group(*alice);
  ASSERT_TRUE(alice->register_card(card(group, "alice", {"echo"}), token_).ok());
  ASSERT_TRUE(bob->register_card(card(group, "bob", {"ask"}), token_).ok());

  auto initial = alice->acl_sync(0, 0);
  ASSERT_TRUE(initial.ok()) << initial.error().describe();
  EXPECT_FALSE(initial->policy.allows(bob_key.agent_id(), alice_key.agent_id(), "echo"));
  const std::int64_t version = initial->version;

  // A long poll at the current version waits; a new rule wakes it.
  auto poll = std::async(std::launch::async, [&] { return alice->acl_sync(version, 20); });
  EXPECT_EQ(poll.wait_for(300ms), std::future_status::timeout) << "the long poll answered without a change";
  const boost::json::value rule{{"group_id", group},
                                {"source", bob_key.agent_id().str()},
                                {"target", alice_key.agent_id().str()},
                                {"allowed_capabilities", boost::json::array{"echo"}}};
  auto created = alice->call("POST", "/api/v1/acl", rule, token_);
  ASSERT_TRUE(created.ok()) << created.error().describe();
  EXPECT_TRUE(created->as_object().contains("id"));
  ASSERT_EQ(poll.wait_for(10s), std::future_status::ready) << "the long poll did not wake within 10 s";
  auto woke = poll.get();
  ASSERT_TRUE(woke.ok()) << woke.error().describe();
  EXPECT_GT(woke->version, version);
  EXPECT_TRUE(woke->policy.allows(bob_key.agent_id(), alice_key.agent_id(), "echo"));
  EXPECT_FALSE(woke->policy.allows(bob_key.agent_id(), alice_key.agent_id(), "other"));
  EXPECT_TRUE(woke->revoked.empty());

  // Writing rules needs a user's token: the agent signature is refused (the error passes through).
  auto as_agent = alice->call("POST", "/api/v1/acl", rule);
  ASSERT_FALSE(as_agent.ok());
  EXPECT_EQ(as_agent.error().code, Errc::forbidden) << as_agent.error().describe();
}

TEST_F(RegistryClientTest, RegisterWithSetupKey) {
  auto carol = client(KeyPair::generate());
  const std::string group = personal_group(*carol);
  auto key = carol->call("POST", "/api/v1/setup-keys", boost::json::value{{"group_id", group}, {"max_uses", 1}}, token_);
  ASSERT_TRUE(key.ok()) << key.error().describe();
  const std::string setup_key(key->as_object().at("key").as_string());

  auto stored = carol->register_with_setup_key(card(group, "carol", {"echo"}), setup_key);
  ASSERT_TRUE(stored.ok()) << stored.error().describe();
  EXPECT_EQ(stored->at("agent_id").as_string(), carol->agent_id().str());
  auto found = carol->discover({.capability = "echo"});
  ASSERT_TRUE(found.ok()) << found.error().describe();
  EXPECT_TRUE(contains(ids_of(*found), carol->agent_id()));

  // Used up (max_uses 1): another agent cannot use it again.
  auto dave = client(KeyPair::generate());
  auto again = dave->register_with_setup_key(card(group, "dave", {"echo"}), setup_key);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().code, Errc::internal) << again.error().describe();
}

TEST_F(RegistryClientTest, ErrorsAreMapped) {
  const KeyPair key = KeyPair::generate();
  auto registry = client(key);
  const std::string group = personal_group(*registry);

  auto bad_token = registry->register_card(card(group, "x", {"echo"}), "not-a-real-token");
  ASSERT_FALSE(bad_token.ok());
  EXPECT_EQ(bad_token.error().code, Errc::unauthorized) << bad_token.error().describe();
  EXPECT_FALSE(bad_token.error().message.empty());

  ASSERT_TRUE(registry->register_card(card(group, "x", {"echo"}), token_).ok());
  auto missing = registry->call("GET", "/api/v1/agents/" + KeyPair::generate().agent_id().str());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, Errc::not_found) << missing.error().describe();

  auto bad_query = registry->discover({.limit = 100000});
  ASSERT_FALSE(bad_query.ok());
  EXPECT_EQ(bad_query.error().code, Errc::bad_request) << bad_query.error().describe();

  auto bad_target = registry->call("GET", "api/v1/info");
  ASSERT_FALSE(bad_target.ok());
  EXPECT_EQ(bad_target.error().code, Errc::bad_request);

  // Nothing listens on port 1: unreachable, naming the URL.
  RegistryClient dead("http://127.0.0.1:1", key, {.timeout = 3s});
  auto refused = dead.info();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Errc::unreachable) << refused.error().describe();
  EXPECT_NE(refused.error().message.find("http://127.0.0.1:1"), std::string::npos) << refused.error().message;
  auto refused_sync = dead.acl_sync(0, 1);
  ASSERT_FALSE(refused_sync.ok());
  EXPECT_EQ(refused_sync.error().code, Errc::unreachable);

  RegistryClient malformed("ftp://example.com", key);
  auto bad_url = malformed.info();
  ASSERT_FALSE(bad_url.ok());
  EXPECT_EQ(bad_url.error().code, Errc::bad_request) << bad_url.error().describe();

  // A trailing slash on the base URL is fine (the Host and target signed are still what is sent).
  RegistryClient slash(base_url_ + "/", key);
  auto page = slash.discover({.capability = "echo"});
  ASSERT_TRUE(page.ok()) << page.error().describe();
  EXPECT_TRUE(contains(ids_of(*page), key.agent_id()));
}

}  // namespace
}  // namespace agent_mesh::test
