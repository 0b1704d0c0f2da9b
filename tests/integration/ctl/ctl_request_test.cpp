// `agent-meshctl request` end to end: alice (the CLI's configured agent) calls bob, whose agent-meshd
// forwards to scripts/echo_server.py. Daemonless (the CLI connects to the relay with alice's key, the
// relay URL from GET /api/v1/info or the config) and through alice's own agent-meshd when its socket
// answers ($MESH_HOME/meshd-<agent_id>.sock or meshd_socket); a stale socket falls back to
// daemonless. Streams, mesh errors (acl_denied, timeout, unreachable, revoked), a malformed
// --payload, ACL rules added with `acl add` reaching bob's meshd, status and discover --online.
#include "ctl_fixture.hpp"

namespace agent_mesh::test::ctl {
namespace {

class CtlRequestTest : public CtlTest {
 protected:
  void SetUp() override {
    CtlTest::SetUp();
    if (HasFatalFailure()) return;
    alice_home_ = logged_in_home("alice");
    alice_ = register_agent(alice_home_, "alice", "chat");
    bob_home_ = logged_in_home("bob");
    bob_ = register_agent(bob_home_, "bob", "echo");
    ASSERT_TRUE(is_agent_id(alice_) && is_agent_id(bob_));
    bob_echo_port_ = start_echo("bob");
    // bob's meshd allows alice → echo only.
    const auto acl = root_ / "bob-acl.json";
    write_text(acl, boost::json::serialize(boost::json::object{
                        {"default_deny", true},
                        {"rules", boost::json::array{boost::json::object{
                                      {"source", alice_},
                                      {"target", bob_},
                                      {"allowed_capabilities", boost::json::array{"echo"}}}}}}));
    auto* meshd = start_meshd(bob_home_.key_path(bob_), root_ / "bob.sock", bob_echo_port_, {"--acl", acl.string()});
    ASSERT_EQ(meshd->agent, bob_);
    ASSERT_TRUE(wait_online(bob_)) << "bob's meshd did not come online";
  }

  // alice's own meshd (no local agent) on `socket` (default: the socket the CLI looks for).
  Meshd* start_alice_meshd(std::optional<std::filesystem::path> socket = std::nullopt) {
    auto* meshd = start_meshd(alice_home_.key_path(alice_), socket.value_or(alice_home_.meshd_socket(alice_)), std::nullopt);
    EXPECT_EQ(meshd->agent, alice_);
    EXPECT_TRUE(wait_online(alice_)) << "alice's meshd did not come online";
    return meshd;
  }

  CtlResult request(const std::string& payload, std::vector<std::string> extra = {}, const Env& env = {},
                    const std::string& capability = "echo", std::chrono::milliseconds timeout = 25s) {
    std::vector<std::string> args{"request", "--target", bob_, "--capability", capability, "--payload", payload};
    args.insert(args.end(), extra.begin(), extra.end());
    return ctl(alice_home_, args, env, std::nullopt, timeout);
  }

  static boost::json::value seed_echo() {
    return boost::json::parse(R"({"agent": "bob", "echo": {"capability": "echo", "message": "hello from alice"}})");
  }

  // stdout is exactly one line of JSON equal to `expected`.
  static ::testing::AssertionResult PrintsBody(const CtlResult& r, const boost::json::value& expected) {
    if (r.exit != 0) return ::testing::AssertionFailure() << "exit " << r.exit << r.describe();
    const auto lines = r.out_lines();
    if (lines.size() != 1 || r.out.back() != '\n') {
      return ::testing::AssertionFailure() << "stdout must be one JSON line" << r.describe();
    }
    auto json = parse_json(lines[0]);
    if (!json) return ::testing::AssertionFailure() << "stdout is not JSON" << r.describe();
    if (*json != expected) {
      return ::testing::AssertionFailure() << "expected " << boost::json::serialize(expected) << r.describe();
    }
    return ::testing::AssertionSuccess();
  }

  MeshHome alice_home_;
  MeshHome bob_home_;
  std::string alice_;
  std::string bob_;
  int bob_echo_port_ = 0;
};

const char* kHello = R"({"message": "hello from alice"})";

// ---------------------------------------------------------------------------------------------
// Daemonless

TEST_F(CtlRequestTest, DaemonlessRequestPrintsTheResponseBody) {
  ASSERT_FALSE(std::filesystem::exists(alice_home_.meshd_socket(alice_)));
  auto r = request(kHello);
  EXPECT_TRUE(PrintsBody(r, seed_echo()));
}

TEST_F(CtlRequestTest, ResponseIsPrintedOnOneLineWhateverItHolds) {
  // A multi-line payload with an escaped newline and non-ASCII text: stdout is still one JSON line.
  auto r = request("{\n  \"message\": \"h\u00e9llo\\nworld \u2603\"\n}");
  EXPECT_TRUE(PrintsBody(r, boost::json::parse(
                                "{\"agent\": \"bob\", \"echo\": {\"capability\": \"echo\", \"message\": \"h\u00e9llo\\nworld \u2603\"}}")));
}

TEST_F(CtlRequestTest, DaemonlessNonObjectPayload) {
  auto r = request("[1, 2, 3]");
  EXPECT_TRUE(PrintsBody(r, boost::json::parse(R"({"agent": "bob", "echo": {"capability": "echo", "data": [1, 2, 3]}})")));
}

TEST_F(CtlRequestTest, DaemonlessJsonFlagPrintsTheSameBody) {
  auto r = request(kHello, {"--json"});
  EXPECT_TRUE(PrintsBody(r, seed_echo()));
}

TEST_F(CtlRequestTest, DaemonlessStream) {
  auto r = request(R"({"stream": 3})", {"--stream"});
  ASSERT_TRUE(IsOk(r));
  const auto lines = r.out_lines();
  ASSERT_EQ(lines.size(), 3u) << r.describe();
  for (std::size_t i = 0; i < lines.size(); ++i) {
    auto json = parse_json(lines[i]);
    ASSERT_TRUE(json.has_value()) << r.describe();
    EXPECT_EQ(*json, (boost::json::value(boost::json::object{{"seq", i}, {"agent", "bob"}}))) << r.describe();
  }
}

TEST_F(CtlRequestTest, RelayUrlPrecedence) {
  ClosedPort closed;
  // A dead relay URL in the config: used (no silent fallback to /info), so the request fails...
  auto home_with_dead_relay = alice_home_.read_config() + toml_line("relay_url", closed.ws_url());
  alice_home_.write_config(home_with_dead_relay);
  // (--timeout 3: a direct call keeps retrying the relay connection up to min(--timeout, 10 s).)
  auto from_file = request(kHello, {"--timeout", "3"}, {}, "echo", 20s);
  EXPECT_TRUE(IsCliError(from_file, 1));
  EXPECT_TRUE(contains(from_file.err, "unreachable")) << from_file.describe();
  // ...the environment beats the file...
  EXPECT_TRUE(PrintsBody(request(kHello, {}, {{"MESH_RELAY_URL", server_->relay_id()}}), seed_echo()));
  // ...and the flag beats the environment.
  EXPECT_TRUE(PrintsBody(request(kHello, {"--relay-url", server_->relay_id()}, {{"MESH_RELAY_URL", closed.ws_url()}}),
                         seed_echo()));
  auto flag_dead = request(kHello, {"--relay-url", closed.ws_url(), "--timeout", "3"},
                           {{"MESH_RELAY_URL", server_->relay_id()}}, "echo", 20s);
  EXPECT_TRUE(IsCliError(flag_dead, 1));
}

TEST_F(CtlRequestTest, DaemonlessWithAConfiguredRelayNeedsNoRegistry) {
  ClosedPort closed;
  auto r = request(kHello, {"--cp-url", closed.url(), "--relay-url", server_->relay_id()});
  EXPECT_TRUE(PrintsBody(r, seed_echo()));
}

TEST_F(CtlRequestTest, DaemonlessWithRegistryDownAndNoRelayUrlSaysUnreachable) {
  ClosedPort closed;
  auto r = request(kHello, {"--cp-url", closed.url()}, {}, "echo", 20s);
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "unreachable")) << r.describe();
}

TEST_F(CtlRequestTest, DaemonlessWithTheKeyFromTheEnvironment) {
  auto bare = new_home("bare");
  auto r = ctl(bare, {"request", "--target", bob_, "--capability", "echo", "--payload", kHello},
               {{"MESH_CP_URL", server_->base_url()}, {"MESH_KEY_FILE", alice_home_.key_path(alice_).string()},
                {"MESH_AGENT_ID", alice_}});
  EXPECT_TRUE(PrintsBody(r, seed_echo()));
}

// ---------------------------------------------------------------------------------------------
// Through meshd

TEST_F(CtlRequestTest, ThroughMeshdWhenItsSocketAnswers) {
  start_alice_meshd();
  // A dead relay URL: only meshd can have carried this request.
  ClosedPort closed;
  auto r = request(kHello, {"--relay-url", closed.ws_url()});
  EXPECT_TRUE(PrintsBody(r, seed_echo()));
  // meshd still holds alice's relay connection (a daemonless call would have replaced it: 4009).
  auto again = request(kHello, {"--relay-url", closed.ws_url()});
  EXPECT_TRUE(PrintsBody(again, seed_echo()));
}

TEST_F(CtlRequestTest, ThroughMeshdStream) {
  start_alice_meshd();
  ClosedPort closed;
  auto r = request(R"({"stream": 4})", {"--stream", "--relay-url", closed.ws_url()});
  ASSERT_TRUE(IsOk(r));
  const auto lines = r.out_lines();
  ASSERT_EQ(lines.size(), 4u) << r.describe();
  for (std::size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(parse_json(lines[i]).value_or(nullptr), (boost::json::value(boost::json::object{{"seq", i}, {"agent", "bob"}})))
        << r.describe();
  }
}

TEST_F(CtlRequestTest, ThroughMeshdAtAConfiguredSocket) {
  const auto custom = root_ / "custom-meshd.sock";
  start_alice_meshd(custom);
  ClosedPort closed;
  // --meshd-socket flag
  EXPECT_TRUE(PrintsBody(request(kHello, {"--relay-url", closed.ws_url(), "--meshd-socket", custom.string()}), seed_echo()));
  // MESH_MESHD_SOCKET
  EXPECT_TRUE(PrintsBody(request(kHello, {"--relay-url", closed.ws_url()}, {{"MESH_MESHD_SOCKET", custom.string()}}),
                         seed_echo()));
  // meshd_socket in config.toml
  alice_home_.write_config(alice_home_.read_config() + toml_line("meshd_socket", custom.string()));
  EXPECT_TRUE(PrintsBody(request(kHello, {"--relay-url", closed.ws_url()}), seed_echo()));
}

TEST_F(CtlRequestTest, ThroughMeshdErrorsCarryTheProtocolCode) {
  start_alice_meshd();
  ClosedPort closed;
  auto denied = request(kHello, {"--relay-url", closed.ws_url()}, {}, "chat");
  EXPECT_TRUE(IsCliError(denied, 1));
  EXPECT_TRUE(contains(denied.err, "acl_denied")) << denied.describe();
  auto slow = request(R"({"sleep_ms": 5000})", {"--relay-url", closed.ws_url(), "--timeout", "1"});
  EXPECT_TRUE(IsCliError(slow, 1));
  EXPECT_TRUE(contains(slow.err, "timeout")) << slow.describe();
}

TEST_F(CtlRequestTest, StreamErrorsCarryTheProtocolCode) {
  // Daemonless...
  auto direct = request(R"({"stream": 2})", {"--stream"}, {}, "chat");
  EXPECT_TRUE(IsCliError(direct, 1));
  EXPECT_TRUE(contains(direct.err, "acl_denied")) << direct.describe();
  // ...and through meshd.
  start_alice_meshd();
  ClosedPort closed;
  auto via_meshd = request(R"({"stream": 2})", {"--stream", "--relay-url", closed.ws_url()}, {}, "chat");
  EXPECT_TRUE(IsCliError(via_meshd, 1));
  EXPECT_TRUE(contains(via_meshd.err, "acl_denied")) << via_meshd.describe();
}

TEST_F(CtlRequestTest, StaleSocketFallsBackToDaemonless) {
  std::filesystem::create_directories(alice_home_.path);
  make_stale_socket(alice_home_.meshd_socket(alice_));
  ASSERT_TRUE(std::filesystem::exists(alice_home_.meshd_socket(alice_)));
  auto r = request(kHello);
  EXPECT_TRUE(PrintsBody(r, seed_echo()));
  // The same with a socket path given explicitly that nobody serves.
  auto missing = request(kHello, {"--meshd-socket", (root_ / "nobody.sock").string()});
  EXPECT_TRUE(PrintsBody(missing, seed_echo()));
}

// ---------------------------------------------------------------------------------------------
// Errors

TEST_F(CtlRequestTest, MalformedPayloadIsRefusedBeforeAnythingIsSent) {
  for (const std::string& payload : {std::string("{not json"), std::string(""), std::string("{\"a\": 1} trailing")}) {
    auto r = request(payload, {}, {}, "echo", 10s);
    EXPECT_TRUE(IsCliError(r, 1)) << "payload [" << payload << "]";
    EXPECT_TRUE(contains(r.err, "error: --payload is not valid JSON")) << r.describe();
  }
}

TEST_F(CtlRequestTest, AclDeniedDaemonless) {
  auto r = request(kHello, {}, {}, "chat");
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "acl_denied")) << r.describe();
}

TEST_F(CtlRequestTest, TimeoutDaemonless) {
  const auto started = std::chrono::steady_clock::now();
  auto r = request(R"({"sleep_ms": 8000})", {"--timeout", "1"}, {}, "echo", 15s);
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "timeout")) << r.describe();
  EXPECT_LT(took, 6s) << "--timeout 1 should end the call after about a second" << r.describe();
  // stderr is not a terminal here: no spinner or progress bar (no carriage returns, no escapes).
  EXPECT_FALSE(contains(r.err, "\r")) << r.describe();
  EXPECT_FALSE(contains(r.err, "\x1b")) << r.describe();
}

TEST_F(CtlRequestTest, UnknownTargetFails) {
  const auto started = std::chrono::steady_clock::now();
  auto r = ctl(alice_home_, {"request", "--target", random_agent_id(), "--capability", "echo", "--payload", kHello,
                             "--timeout", "2"},
               {}, std::nullopt, 20s);
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "unreachable") || contains(r.err, "timeout")) << r.describe();
  EXPECT_LT(took, 10s) << r.describe();
}

TEST_F(CtlRequestTest, UnregisteredCallerIsToldToRegister) {
  // A key that was never registered: the relay's registration gate refuses it (auth_failed). The
  // error must say that (not "unreachable"/"target not connected") and point at `register`.
  auto home = logged_in_home("fresh");
  ASSERT_TRUE(IsOk(ctl(home, {"keygen", "--save"})));
  auto r = ctl(home, {"request", "--target", bob_, "--capability", "echo", "--payload", kHello, "--timeout", "3"},
               {}, std::nullopt, 20s);
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "auth_failed") || contains(lower(r.err), "not registered")) << r.describe();
  EXPECT_TRUE(contains(r.err, "agent-meshctl register")) << r.describe();
}

TEST_F(CtlRequestTest, RelayErrorsNameTheRelayUrl) {
  ClosedPort closed;
  auto r = request(kHello, {"--relay-url", closed.ws_url(), "--timeout", "2"}, {}, "echo", 20s);
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "unreachable")) << r.describe();
  EXPECT_TRUE(contains(r.err, "127.0.0.1:" + std::to_string(closed.port()))) << "which relay?" << r.describe();
  EXPECT_FALSE(contains(r.err, "relay at :")) << r.describe();
}

TEST_F(CtlRequestTest, InvalidTargetFails) {
  auto r = ctl(alice_home_, {"request", "--target", "not-an-agent-id", "--capability", "echo", "--payload", kHello});
  EXPECT_TRUE(r.exit == 1 || r.exit == 2) << r.describe();
  EXPECT_TRUE(r.out.empty()) << r.describe();
  EXPECT_TRUE(r.err.rfind("error: ", 0) == 0) << r.describe();
}

TEST_F(CtlRequestTest, NoKeyConfiguredSaysWhatToDo) {
  auto home = logged_in_home("nokey");
  auto r = ctl(home, {"request", "--target", bob_, "--capability", "echo", "--payload", kHello});
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "register") || contains(r.err, "keygen")) << r.describe();
}

TEST_F(CtlRequestTest, RevokedCallerIsRefused) {
  ASSERT_TRUE(IsOk(ctl(alice_home_, {"revoke", "--agent-id", alice_, "--reason", "test"})));
  auto r = request(kHello, {"--timeout", "5"}, {}, "echo", 20s);
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "revoked")) << r.describe();
}

// ---------------------------------------------------------------------------------------------
// Registry ACL rules reach bob's meshd

TEST_F(CtlRequestTest, AclAddedWithTheCliReachesTheDaemon) {
  // carl: a meshd that takes its rules from the registry only.
  auto carl_home = logged_in_home("carl");
  const auto carl = register_agent(carl_home, "carl", "echo");
  const auto empty_acl = root_ / "carl-acl.json";
  write_text(empty_acl, R"({"default_deny": true, "rules": []})");
  const int carl_echo = start_echo("carl");
  start_meshd(carl_home.key_path(carl), root_ / "carl.sock", carl_echo,
              {"--acl", empty_acl.string(), "--cp-url", server_->base_url()});
  ASSERT_TRUE(wait_online(carl));
  auto ask_carl = [&] {
    return ctl(alice_home_, {"request", "--target", carl, "--capability", "echo", "--payload", R"({"n": 1})", "--timeout", "5"},
               {}, std::nullopt, 20s);
  };
  auto denied = ask_carl();
  EXPECT_TRUE(IsCliError(denied, 1));
  EXPECT_TRUE(contains(denied.err, "acl_denied")) << denied.describe();

  auto added = ctl(alice_home_, {"acl", "add", "--source", alice_, "--target", carl, "--capabilities", "echo"});
  ASSERT_TRUE(IsOk(added));
  CtlResult last;
  EXPECT_TRUE(eventually(
      [&] {
        last = ask_carl();
        return last.exit == 0;
      },
      8s))
      << last.describe();
  EXPECT_EQ(parse_json(last.out).value_or(nullptr),
            boost::json::parse(R"({"agent": "carl", "echo": {"capability": "echo", "n": 1}})"))
      << last.describe();

  ASSERT_TRUE(IsOk(ctl(alice_home_, {"acl", "remove", added.out_trimmed()})));
  EXPECT_TRUE(eventually(
      [&] {
        last = ask_carl();
        return contains(last.err, "acl_denied");
      },
      8s))
      << last.describe();
}

// ---------------------------------------------------------------------------------------------
// status and discover --online with daemons running

TEST_F(CtlRequestTest, StatusReportsARunningMeshd) {
  start_alice_meshd();
  auto r = ctl(alice_home_, {"status", "--json"});
  ASSERT_TRUE(IsOk(r));
  auto json = parse_json(r.out);
  ASSERT_TRUE(json && json->is_object()) << r.describe();
  ASSERT_TRUE(json->at("meshd").is_object()) << r.describe();
  EXPECT_FALSE(json->at("meshd").as_object().contains("error")) << r.describe();
  EXPECT_TRUE(contains(boost::json::serialize(json->at("meshd")), alice_)) << r.describe();
  auto text = ctl(alice_home_, {"status"});
  ASSERT_TRUE(IsOk(text));
  EXPECT_TRUE(contains(text.out, alice_)) << text.describe();
}

TEST_F(CtlRequestTest, DiscoverOnlineListsConnectedAgentsOnly) {
  auto r = ctl(alice_home_, {"discover", "--online", "--json"});
  ASSERT_TRUE(IsOk(r));
  auto json = parse_json(r.out).value_or(nullptr);
  ASSERT_TRUE(json.is_object()) << r.describe();
  std::vector<std::string> ids;
  for (const auto& item : json.at("items").as_array()) ids.push_back(json_string(item, "agent_id"));
  EXPECT_EQ(ids, std::vector<std::string>{bob_}) << r.describe();
  auto table = ctl(alice_home_, {"discover"});
  ASSERT_TRUE(IsOk(table));
  for (const auto& line : table.out_lines()) {
    if (contains(line, bob_)) {
      EXPECT_TRUE(contains(lower(line), "yes") || contains(lower(line), "true") || contains(lower(line), "online"))
          << line;
    }
  }
}

}  // namespace
}  // namespace agent_mesh::test::ctl
