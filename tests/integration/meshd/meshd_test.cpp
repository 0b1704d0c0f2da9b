// agent-meshd end to end, every part real: agent-mesh-server (registry + relay), two agent-meshd
// processes, two scripts/echo_server.py local agents, requests through meshd's Local API on its Unix
// socket. Covers meshd-sdk.md: forwarding (the seed's echo JSON), ACL allow / deny / no rule / hot
// reload / registry sync, streams, cancellation seen by the local agent, an offline target, a relay
// restart and a responder restart (no_session, transparent retry).
#include <gtest/gtest.h>
#include <signal.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "../registry/registry_fixture.hpp"
#include "unix_http.hpp"

namespace agent_mesh::test {
namespace {

using namespace std::chrono_literals;

// Polls `condition` until it holds or `timeout` passes (for effects in other processes: a file
// watcher, a long poll). Returns whether it held.
template <class F>
bool eventually(F condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return condition();
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  const auto tmp = path.string() + ".tmp";
  std::ofstream(tmp) << text;
  std::filesystem::rename(tmp, path);  // atomic, as editors and config tools do
}

std::string acl_json(const std::vector<std::tuple<std::string, std::string, std::vector<std::string>>>& rules) {
  boost::json::array array;
  for (const auto& [source, target, capabilities] : rules) {
    boost::json::array caps;
    for (const auto& c : capabilities) caps.push_back(boost::json::value(c));
    array.push_back(boost::json::object{{"source", source}, {"target", target}, {"allowed_capabilities", caps}});
  }
  return boost::json::serialize(boost::json::object{{"default_deny", true}, {"rules", array}});
}

struct Meshd {
  std::unique_ptr<ChildProcess> process;
  std::string agent;
  std::string socket;
};

class MeshdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<MeshServer>(MeshServer::Options{.extra = {}, .oauth = false});
    token_ = server_->bootstrap_token();
    group_ = server_->personal_group(token_);
    ASSERT_FALSE(group_.empty());
    dir_ = server_->data_dir() / "agents";
    std::filesystem::create_directories(dir_);
    ASSERT_TRUE(alice_.save(dir_ / "alice.key").ok());
    ASSERT_TRUE(bob_.save(dir_ / "bob.key").ok());
    for (const auto& [key, name, capability] : {std::tuple{&alice_, "alice", "chat"}, std::tuple{&bob_, "bob", "echo"}}) {
      auto registered = server_->as(token_, "POST", "/api/v1/agents", signed_card(*key, group_, name, {capability}));
      ASSERT_EQ(registered.status, 201) << registered.body;
    }
    events_file_ = dir_ / "echo-events";
    bob_echo_ = start_echo("bob", bob_echo_port_);
    alice_echo_ = start_echo("alice", alice_echo_port_);
  }

  std::unique_ptr<ChildProcess> start_echo(const std::string& name, int& port) {
    auto process = std::make_unique<ChildProcess>(
        "/usr/bin/env", std::vector<std::string>{"ECHO_EVENTS_FILE=" + events_file_.string(), "python3",
                                                 std::string(AGENT_MESH_SCRIPTS_DIR) + "/echo_server.py", "0", name});
    port = process->wait_listening();
    EXPECT_GT(port, 0) << "echo_server.py did not start";
    return process;
  }

  std::string relay_url() const { return server_->relay_id(); }

  Meshd start_meshd(const std::string& name, int echo_port, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--relay", relay_url(), "--local-agent", "http://127.0.0.1:" + std::to_string(echo_port),
                                  "--key-file", (dir_ / (name + ".key")).string(), "--socket",
                                  (dir_ / (name + ".sock")).string(), "--log-level", "warn"};
    args.insert(args.end(), extra.begin(), extra.end());
    Meshd meshd;
    meshd.process = std::make_unique<ChildProcess>(binary_path("agent-meshd"), args);
    auto line = meshd.process->read_line(10s);
    EXPECT_TRUE(line.has_value()) << "agent-meshd printed nothing";
    if (!line) return meshd;
    // "agent <agent_id> socket <path>"
    std::istringstream words(*line);
    std::string agent_word;
    std::string socket_word;
    words >> agent_word >> meshd.agent >> socket_word >> meshd.socket;
    EXPECT_EQ(agent_word, "agent") << *line;
    EXPECT_EQ(socket_word, "socket") << *line;
    return meshd;
  }

  // Bob's meshd with an ACL file (rules given), Alice's without an ACL (she only calls).
  void start_pair(const std::string& bob_acl, std::vector<std::string> bob_extra = {}) {
    acl_file_ = dir_ / "bob-acl.json";
    write_file(acl_file_, bob_acl);
    bob_extra.insert(bob_extra.end(), {"--acl", acl_file_.string()});
    bob_meshd_ = start_meshd("bob", bob_echo_port_, bob_extra);
    alice_meshd_ = start_meshd("alice", alice_echo_port_);
    ASSERT_EQ(bob_meshd_.agent, bob_.agent_id().str());
    ASSERT_EQ(alice_meshd_.agent, alice_.agent_id().str());
  }

  std::string allow_alice_echo() const {
    return acl_json({{alice_.agent_id().str(), bob_.agent_id().str(), {"echo"}}});
  }

  UnixReply ask_bob(const boost::json::value& payload, std::optional<std::int64_t> timeout_ms = std::nullopt,
                    bool stream = false) {
    boost::json::object body{{"target", bob_.agent_id().str()}, {"capability", "echo"}, {"payload", payload}};
    if (timeout_ms) body["timeout_ms"] = *timeout_ms;
    if (stream) body["stream"] = true;
    return unix_http(alice_meshd_.socket, "POST", "/request", boost::json::serialize(body));
  }

  static std::string error_code(const UnixReply& reply) {
    boost::system::error_code ec;
    auto json = boost::json::parse(reply.body, ec);
    if (ec || !json.is_object() || !json.as_object().contains("error")) return {};
    return std::string(json.at("error").at("code").as_string());
  }

  std::unique_ptr<MeshServer> server_;
  std::string token_;
  std::string group_;
  std::filesystem::path dir_;
  std::filesystem::path events_file_;
  std::filesystem::path acl_file_;
  KeyPair alice_ = KeyPair::generate();
  KeyPair bob_ = KeyPair::generate();
  int bob_echo_port_ = 0;
  int alice_echo_port_ = 0;
  std::unique_ptr<ChildProcess> bob_echo_;
  std::unique_ptr<ChildProcess> alice_echo_;
  Meshd bob_meshd_;
  Meshd alice_meshd_;
};

TEST_F(MeshdTest, RequestReturnsTheSeedsEchoJson) {
  start_pair(allow_alice_echo());
  auto reply = ask_bob(boost::json::parse(R"({"message": "hello from alice"})"));
  ASSERT_EQ(reply.status, 200) << reply.body << reply.error;
  EXPECT_EQ(boost::json::parse(reply.body),
            boost::json::parse(R"({"agent": "bob", "echo": {"capability": "echo", "message": "hello from alice"}})"));
  EXPECT_TRUE(reply.has_header("X-Mesh-Encrypted: true")) << reply.headers;
  // meshd told the local agent who called, what and which request.
  const std::string events = read_file(events_file_);
  EXPECT_NE(events.find(" " + alice_.agent_id().str() + " echo"), std::string::npos) << events;
}

TEST_F(MeshdTest, AclAllowDenyNoRuleAndHotReload) {
  // A rule for another capability only: echo is denied.
  start_pair(acl_json({{alice_.agent_id().str(), bob_.agent_id().str(), {"other"}}}));
  auto denied = ask_bob(boost::json::object{{"message", "x"}});
  EXPECT_EQ(denied.status, 403) << denied.body;
  EXPECT_EQ(error_code(denied), "acl_denied");
  // No rules at all: denied too.
  write_file(acl_file_, acl_json({}));
  // Hot reload: the file now allows echo; applied within a second, no restart.
  write_file(acl_file_, allow_alice_echo());
  EXPECT_TRUE(eventually([&] { return ask_bob(boost::json::object{{"n", 1}}).status == 200; }, 3s));
  // An invalid edit keeps the previous policy.
  write_file(acl_file_, R"({"default_deny": false, "rules": []})");
  std::this_thread::sleep_for(1500ms);  // longer than the watcher's 1 s: the edit must have been seen
  EXPECT_EQ(ask_bob(boost::json::object{{"n", 2}}).status, 200);
  // Back to no rules: denied within a second.
  write_file(acl_file_, acl_json({}));
  EXPECT_TRUE(eventually([&] { return error_code(ask_bob(boost::json::object{{"n", 3}})) == "acl_denied"; }, 3s));
}

TEST_F(MeshdTest, RegistryRulesArriveThroughTheSync) {
  start_pair(acl_json({}), {"--cp-url", server_->base_url()});
  EXPECT_EQ(error_code(ask_bob(boost::json::object{{"before", true}})), "acl_denied");
  const std::string rule = boost::json::serialize(boost::json::object{
      {"group_id", group_},
      {"source", alice_.agent_id().str()},
      {"target", bob_.agent_id().str()},
      {"allowed_capabilities", boost::json::array{"echo"}}});
  auto created = server_->as(token_, "POST", "/api/v1/acl", rule);
  ASSERT_EQ(created.status, 201) << created.body;
  const auto granted_at = std::chrono::steady_clock::now();
  EXPECT_TRUE(eventually([&] { return ask_bob(boost::json::object{{"after", true}}).status == 200; }, 4s));
  // registry.md: a change reaches every connected daemon within 2 s (plus our polling step).
  EXPECT_LT(std::chrono::steady_clock::now() - granted_at, 2500ms);
}

TEST_F(MeshdTest, StreamsArriveAsNdjson) {
  start_pair(allow_alice_echo());
  auto reply = ask_bob(boost::json::object{{"stream", 3}}, std::nullopt, true);
  ASSERT_EQ(reply.status, 200) << reply.body << reply.error;
  std::istringstream lines(reply.body);
  std::string line;
  std::vector<boost::json::value> parsed;
  while (std::getline(lines, line)) {
    if (!line.empty()) parsed.push_back(boost::json::parse(line));
  }
  ASSERT_EQ(parsed.size(), 4u) << reply.body;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(parsed[static_cast<std::size_t>(i)].at("seq"), i);
    EXPECT_EQ(parsed[static_cast<std::size_t>(i)].at("body").at("seq"), i);
    EXPECT_EQ(parsed[static_cast<std::size_t>(i)].at("body").at("agent"), "bob");
  }
  EXPECT_EQ(parsed[3], boost::json::parse(R"({"end": 3})"));
}

TEST_F(MeshdTest, ClosingTheLocalApiConnectionCancelsAndTheLocalAgentSeesIt) {
  start_pair(allow_alice_echo());
  boost::json::object body{{"target", bob_.agent_id().str()},
                           {"capability", "echo"},
                           {"payload", boost::json::object{{"sleep_ms", 5000}}}};
  auto abandoned = unix_http(alice_meshd_.socket, "POST", "/request", boost::json::serialize(body), 10s, 500ms);
  EXPECT_EQ(abandoned.error, "abandoned");
  EXPECT_TRUE(eventually([&] { return read_file(events_file_).find("cancelled ") != std::string::npos; }, 4s))
      << read_file(events_file_);
}

TEST_F(MeshdTest, DeadlineBoundsTheLocalCall) {
  start_pair(allow_alice_echo());
  auto reply = ask_bob(boost::json::object{{"sleep_ms", 3000}}, 500);
  EXPECT_EQ(reply.status, 504) << reply.body;
  EXPECT_EQ(error_code(reply), "timeout");
}

TEST_F(MeshdTest, OfflineTargetIsQueuedThenAnsweredWhenItConnects) {
  start_pair(allow_alice_echo());
  bob_meshd_.process->signal(SIGTERM);
  ASSERT_EQ(bob_meshd_.process->wait_exit(15s), 0);
  auto pending = std::async(std::launch::async, [&] { return ask_bob(boost::json::object{{"queued", true}}, 20000); });
  EXPECT_EQ(pending.wait_for(500ms), std::future_status::timeout);
  bob_meshd_ = start_meshd("bob", bob_echo_port_, {"--acl", acl_file_.string()});
  auto reply = pending.get();
  ASSERT_EQ(reply.status, 200) << reply.body << reply.error;
  EXPECT_EQ(boost::json::parse(reply.body).at("echo").at("queued"), true);
}

TEST_F(MeshdTest, RelayRestartMidTraffic) {
  start_pair(allow_alice_echo());
  ASSERT_EQ(ask_bob(boost::json::object{{"n", 1}}).status, 200);
  server_->restart(/*same_port=*/true);
  EXPECT_TRUE(eventually([&] { return ask_bob(boost::json::object{{"n", 2}}, 2000).status == 200; }, 15s));
}

TEST_F(MeshdTest, ResponderRestartIsRetriedTransparently) {
  start_pair(allow_alice_echo());
  ASSERT_EQ(ask_bob(boost::json::object{{"n", 1}}).status, 200);
  bob_meshd_.process->signal(SIGTERM);
  ASSERT_EQ(bob_meshd_.process->wait_exit(15s), 0);
  bob_meshd_ = start_meshd("bob", bob_echo_port_, {"--acl", acl_file_.string()});
  // Alice still holds the old session; Bob answers no_session and Alice re-handshakes once.
  auto reply = ask_bob(boost::json::object{{"n", 2}}, 10000);
  ASSERT_EQ(reply.status, 200) << reply.body << reply.error;
  EXPECT_EQ(boost::json::parse(reply.body).at("echo").at("n"), 2);
}

TEST_F(MeshdTest, StatusAndBadInput) {
  start_pair(allow_alice_echo());
  auto status = unix_http(alice_meshd_.socket, "GET", "/status");
  ASSERT_EQ(status.status, 200) << status.body;
  EXPECT_EQ(boost::json::parse(status.body).at("agent_id"), boost::json::value(alice_.agent_id().str()));
  auto bad = unix_http(alice_meshd_.socket, "POST", "/request", R"({"target": "nope", "capability": "echo", "payload": {}})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(error_code(bad), "bad_request");
  auto not_json = unix_http(alice_meshd_.socket, "POST", "/request", "{");
  EXPECT_EQ(not_json.status, 400);
  // The socket is private to its user.
  EXPECT_EQ(std::filesystem::status(alice_meshd_.socket).permissions() &
                (std::filesystem::perms::group_all | std::filesystem::perms::others_all),
            std::filesystem::perms::none);
  // SIGTERM: a clean exit.
  alice_meshd_.process->signal(SIGTERM);
  EXPECT_EQ(alice_meshd_.process->wait_exit(15s), 0);
}

}  // namespace
}  // namespace agent_mesh::test
