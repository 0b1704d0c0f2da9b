// A standalone agent-mesh-registry beside an agent-mesh-relay (relay.md "Gate", registry.md
// "Pushing to relays"): the relay lets in only agents registered with the registry, and a
// revocation made at the registry closes the agent's live relay connection.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "../relay_test_client.hpp"
#include "registry_fixture.hpp"

namespace agent_mesh::test {
namespace {

// The two processes must know each other's address at start, so one port is chosen up front: a
// port the kernel just handed out and released (the one place the tests do not pass port 0).
int reserve_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(fd);
  return port;
}

class StandaloneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("standalone-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "registry-admin") << registry_admin_ << "\n";
    std::ofstream(dir_ / "relay-admin") << relay_admin_ << "\n";
    relay_port_ = reserve_port();
    ASSERT_GT(relay_port_, 0);
    registry_ = std::make_unique<ChildProcess>(
        binary_path("agent-mesh-registry"),
        std::vector<std::string>{"--listen", "127.0.0.1:0", "--data-dir", (dir_ / "registry").string(), "--bootstrap",
                                 "--admin-token-file", (dir_ / "registry-admin").string(), "--relay-url",
                                 "http://127.0.0.1:" + std::to_string(relay_port_), "--relay-admin-token-file",
                                 (dir_ / "relay-admin").string(), "--log-level", "warn", "--ip-connect-rate",
                                 "100000"});
    registry_port_ = registry_->wait_listening();
    ASSERT_GT(registry_port_, 0);
    relay_ = std::make_unique<ChildProcess>(
        binary_path("agent-mesh-relay"),
        std::vector<std::string>{"--listen", "127.0.0.1:" + std::to_string(relay_port_), "--data-dir",
                                 (dir_ / "relay").string(), "--admin-token-file", (dir_ / "relay-admin").string(),
                                 "--registry-url", "http://127.0.0.1:" + std::to_string(registry_port_),
                                 "--registry-token-file", (dir_ / "registry-admin").string(), "--log-level", "warn"});
    ASSERT_EQ(relay_->wait_listening(), relay_port_);
    std::ifstream(dir_ / "registry" / "bootstrap-token") >> token_;
  }
  void TearDown() override {
    relay_.reset();
    registry_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  Reply call(const std::string& method, const std::string& target, const std::string& body = "") {
    net::HttpRequest request;
    request.method = method;
    request.url = "http://127.0.0.1:" + std::to_string(registry_port_) + target;
    request.headers.push_back({"Authorization", "Bearer " + token_});
    if (!body.empty()) request.headers.push_back({"Content-Type", "application/json"});
    request.body = body;
    request.timeout = std::chrono::seconds(10);
    return exchange(request);
  }
  std::string relay_id() const { return "ws://127.0.0.1:" + std::to_string(relay_port_) + "/relay/ws"; }

  std::filesystem::path dir_;
  const std::string registry_admin_ = registry::generate_secret();
  const std::string relay_admin_ = registry::generate_secret();
  std::unique_ptr<ChildProcess> registry_;
  std::unique_ptr<ChildProcess> relay_;
  int registry_port_ = 0;
  int relay_port_ = 0;
  std::string token_;
};

TEST_F(StandaloneTest, RelayAdmitsRegisteredAgentsAndEnforcesRegistryRevocations) {
  auto me = call("GET", "/api/v1/users/me");
  ASSERT_EQ(me.status, 200) << me.body;
  const std::string group(me.object().at("groups").as_array()[0].as_object().at("id").as_string());
  auto info = call("GET", "/api/v1/info");
  EXPECT_EQ(info.object().at("relay_url").as_string(), relay_id());

  const KeyPair registered = KeyPair::generate();
  ASSERT_EQ(call("POST", "/api/v1/agents", signed_card(registered, group, "gated", {"work"})).status, 201);

  // An unknown agent is refused by the relay's gate.
  RelayTestClient stranger;
  ASSERT_TRUE(stranger.connect(relay_port_).ok());
  EXPECT_FALSE(stranger.authenticate(KeyPair::generate(), relay_id()).ok());

  // The registered one gets in, and the registry sees it online through the relay's /status.
  RelayTestClient client;
  ASSERT_TRUE(client.connect(relay_port_).ok());
  auto welcome = client.authenticate(registered, relay_id());
  ASSERT_TRUE(welcome.ok()) << welcome.error().describe();
  // (the standalone registry caches the relays' live view for a second: poll with a deadline)
  bool online = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!online && std::chrono::steady_clock::now() < deadline) {
    auto card = call("GET", "/api/v1/agents/" + registered.agent_id().str());
    ASSERT_EQ(card.status, 200) << card.body << card.error;
    online = card.object().at("online").as_bool();
  }
  EXPECT_TRUE(online);

  // A group admin revokes the lost key at the registry: the relay closes the connection (4003).
  auto revoked = call("POST", "/api/v1/agents/" + registered.agent_id().str() + "/revoke", R"({"reason":"lost laptop"})");
  ASSERT_EQ(revoked.status, 200) << revoked.body;
  Received closed;
  for (int i = 0; i < 5 && !closed.close && !closed.connection_lost; ++i) closed = client.receive(std::chrono::seconds(2));
  ASSERT_TRUE(closed.close.has_value()) << "the relay did not close the revoked agent's connection";
  EXPECT_EQ(*closed.close, 4003);
}

}  // namespace
}  // namespace agent_mesh::test
