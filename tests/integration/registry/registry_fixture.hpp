// agent-mesh-server as a black box for the registry's integration tests: the real binary on an
// ephemeral loopback port with a temporary data directory and --bootstrap, driven over HTTP by the
// project's own client (net::http_request) and over WebSocket by relay_test_client.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "../../unit/github_standin.hpp"
#include "../child_process.hpp"
#include "agent_mesh/agent_card.hpp"
#include "agent_mesh/encoding.hpp"
#include "agent_mesh/identity.hpp"
#include "net/http_client.hpp"
#include "registry/credentials.hpp"

namespace agent_mesh::test {

inline std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// One HTTP answer, with the body parsed when it is JSON.
struct Reply {
  int status = 0;
  std::string body;
  boost::json::value json;  // null when the body is not JSON
  std::vector<net::HttpHeader> headers;
  std::string error;  // the client's error when no answer came

  // `name` in lower case (the client lowercases received names).
  [[nodiscard]] std::string header(std::string_view name) const {
    for (const auto& h : headers) {
      if (h.name == name) return h.value;
    }
    return {};
  }
  // {"error":{"code":...}} → code
  [[nodiscard]] std::string error_code() const {
    if (!json.is_object()) return {};
    const auto* e = json.as_object().if_contains("error");
    if (e == nullptr || !e->is_object()) return {};
    const auto* c = e->as_object().if_contains("code");
    return c && c->is_string() ? std::string(c->as_string()) : std::string();
  }
  [[nodiscard]] const boost::json::object& object() const {
    static const boost::json::object empty;
    return json.is_object() ? json.as_object() : empty;
  }
};

struct MeshServerOptions {
  std::vector<std::string> extra;  // more flags
  // Start the GitHub stand-in and point the --oauth-* flags at it, so tests can log users in
  // with the device flow (login_user): the registry has no other way to create users.
  bool oauth = true;
};

// Performs a request and parses a JSON answer.
inline Reply exchange(const net::HttpRequest& request) {
  Reply reply;
  auto response = net::http_request(request);
  if (!response) {
    reply.error = response.error().message;
    return reply;
  }
  reply.status = response->status;
  reply.body = response->body;
  reply.headers = response->headers;
  boost::system::error_code ec;
  auto parsed = boost::json::parse(reply.body, ec);
  if (!ec) reply.json = std::move(parsed);
  return reply;
}

class MeshServer {
 public:
  using Options = MeshServerOptions;

  MeshServer() : MeshServer(Options{}) {}
  // Starts agent-mesh-server --listen 127.0.0.1:0 --data-dir <fresh dir> --bootstrap [extra...].
  explicit MeshServer(Options options) : extra_(std::move(options.extra)) {
    data_dir_ = std::filesystem::temp_directory_path() /
                ("mesh-server-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    std::filesystem::create_directories(data_dir_);
    if (options.oauth) {
      github_ = std::make_unique<GithubStandIn>(std::vector<std::string>{
          "--interval-ms", "0", "--client-id", "test-client", "--client-secret", "test-secret"});
      EXPECT_FALSE(github_->base_url().empty()) << "the GitHub stand-in did not start";
      const auto secret_file = data_dir_ / "oauth-secret";
      std::ofstream(secret_file) << "test-secret\n";
      extra_.insert(extra_.end(), {"--oauth-client-id", "test-client", "--oauth-client-secret-file",
                                   secret_file.string(), "--oauth-device-url", github_->url("/login/device/code"),
                                   "--oauth-token-url", github_->url("/login/oauth/access_token"),
                                   "--oauth-user-url", github_->url("/user")});
    }
    start();
    std::ifstream in(data_dir_ / "bootstrap-token");
    std::getline(in, admin_user_token_);
  }
  ~MeshServer() {
    process_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(data_dir_, ignored);
  }
  MeshServer(const MeshServer&) = delete;
  MeshServer& operator=(const MeshServer&) = delete;

  // Stops (SIGTERM, drain) and starts again with the same data directory, on a new port or (for
  // clients that must reconnect to the URL they know) on the same one.
  void restart(bool same_port = false) {
    process_->signal(SIGTERM);
    EXPECT_EQ(process_->wait_exit(std::chrono::seconds(15)), 0);
    process_.reset();
    start(same_port ? port_ : 0);
  }

  [[nodiscard]] int port() const noexcept { return port_; }
  [[nodiscard]] std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] std::string relay_id() const { return "ws://127.0.0.1:" + std::to_string(port_) + "/relay/ws"; }
  [[nodiscard]] const std::filesystem::path& data_dir() const noexcept { return data_dir_; }
  // The bootstrap user "admin"'s API token (an ordinary user token, owner of its personal group).
  [[nodiscard]] const std::string& bootstrap_token() const noexcept { return admin_user_token_; }

  // A request to this server; `target` is the path and query, e.g. "/api/v1/agents?limit=2".
  [[nodiscard]] Reply request(const std::string& method, const std::string& target, const std::string& body = "",
                              std::vector<net::HttpHeader> headers = {}) const {
    net::HttpRequest request;
    request.method = method;
    request.url = base_url() + target;
    request.headers = std::move(headers);
    if (!body.empty()) request.headers.push_back({"Content-Type", "application/json"});
    request.body = body;
    request.timeout = std::chrono::seconds(40);  // above the longest long poll a test asks for
    return exchange(request);
  }
  // With `Authorization: Bearer <token>`.
  [[nodiscard]] Reply as(const std::string& token, const std::string& method, const std::string& target,
                         const std::string& body = "") const {
    return request(method, target, body, {{"Authorization", "Bearer " + token}});
  }
  // Agent-signed (registry.md "Credentials"): the signature covers method, target and Host.
  [[nodiscard]] Reply as_agent(const KeyPair& key, const std::string& method, const std::string& target,
                               const std::string& body = "") const {
    return request(method, target, body,
                   {{"Authorization", registry::make_agent_authorization(key, method, target, host(), wall_ms())}});
  }

  // A new user through the device flow (the stand-in approves as GitHub user `id`/`login`);
  // returns the API token the registry issued, or "" on failure (with a test failure recorded).
  [[nodiscard]] std::string login_user(const std::string& login, int id) const {
    if (!github_) {
      ADD_FAILURE() << "login_user needs Options::oauth";
      return {};
    }
    auto started = request("POST", "/api/v1/oauth/device", "{}");
    if (started.status != 200) {
      ADD_FAILURE() << "oauth/device: " << started.status << " " << started.body << started.error;
      return {};
    }
    const std::string device_code(started.object().at("device_code").as_string());
    const std::string user_code(started.object().at("user_code").as_string());
    net::HttpRequest approve;
    approve.method = "POST";
    approve.url = github_->url("/_control/approve");
    approve.headers.push_back({"Content-Type", "application/json"});
    approve.body = boost::json::serialize(boost::json::object{{"user_code", user_code}, {"login", login}, {"id", id}});
    auto approved = net::http_request(approve);
    if (!approved || approved->status != 200) {
      ADD_FAILURE() << "the stand-in refused the approval";
      return {};
    }
    const std::string body = boost::json::serialize(boost::json::object{
        {"device_code", device_code}, {"grant_type", "urn:ietf:params:oauth:grant-type:device_code"}});
    // The interval is 0 here, so one poll after the approval is enough; allow a few for slow_down.
    for (int attempt = 0; attempt < 20; ++attempt) {
      auto token = request("POST", "/api/v1/oauth/token", body);
      if (token.status == 200) return std::string(token.object().at("access_token").as_string());
      const auto* error = token.object().if_contains("error");
      if (error == nullptr || !error->is_string() ||
          (error->as_string() != "authorization_pending" && error->as_string() != "slow_down")) {
        ADD_FAILURE() << "oauth/token: " << token.status << " " << token.body;
        return {};
      }
    }
    ADD_FAILURE() << "oauth/token kept answering pending";
    return {};
  }

  // The bootstrap user's personal group id (GET /users/me).
  [[nodiscard]] std::string personal_group(const std::string& token) const {
    auto me = as(token, "GET", "/api/v1/users/me");
    for (const auto& group : me.object().at("groups").as_array()) {
      if (group.as_object().at("personal").as_bool()) return std::string(group.as_object().at("id").as_string());
    }
    return {};
  }

 private:
  void start(int port = 0) {
    // The per-IP connection limit (20/s by default) is a production setting; the client here opens
    // a connection per request, so tests raise it (relay.md: tests set their own limits by flag).
    std::vector<std::string> args{"--listen", "127.0.0.1:" + std::to_string(port), "--data-dir", data_dir_.string(), "--bootstrap",
                                  "--log-level", "warn", "--ip-connect-rate", "100000"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    process_ = std::make_unique<ChildProcess>(binary_path("agent-mesh-server"), args);
    port_ = process_->wait_listening();
    ASSERT_GT(port_, 0) << "agent-mesh-server did not print its listening line";
  }
  static int& counter() {
    static int value = 0;
    return value;
  }

  std::vector<std::string> extra_;
  std::unique_ptr<GithubStandIn> github_;
  std::filesystem::path data_dir_;
  std::unique_ptr<ChildProcess> process_;
  int port_ = 0;
  std::string admin_user_token_;
};

// A signed card body (registry.md "Agent cards") for `key` in `group_id`.
inline std::string signed_card(const KeyPair& key, const std::string& group_id, const std::string& name,
                               const std::vector<std::string>& capabilities, std::int64_t timestamp = wall_ms(),
                               const std::string& description = "") {
  AgentCard card;
  card.agent_id = key.agent_id();
  card.group_id = Uuid::parse(group_id).value();
  card.name = name;
  if (!description.empty()) card.description = description;
  for (const auto& capability : capabilities) {
    CardCapability c;
    c.name = capability;
    c.description = "does " + capability;
    card.capabilities.push_back(std::move(c));
  }
  card.timestamp = timestamp;
  card.sign(key);
  return card.serialize();
}

}  // namespace agent_mesh::test
