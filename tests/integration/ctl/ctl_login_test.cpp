// `agent-meshctl login` with the OAuth device flow against a real agent-mesh-server whose --oauth-*
// flags point at tests/support/github-standin.mjs (--interval-ms 50): the CLI prints `Open <uri> and
// enter the code <code>` on stderr, the test plays the person at the browser through the stand-in's
// /_control/approve, /_control/deny and /_control/expire, and the CLI must save the token (or exit 1
// with a clear message and save nothing).
#include "ctl_fixture.hpp"

namespace agent_mesh::test::ctl {
namespace {

class CtlLoginTest : public CtlTest {
 protected:
  MeshServer::Options server_options() override {
    github_ = std::make_unique<GithubStandIn>(std::vector<std::string>{
        "--interval-ms", "50", "--client-id", "ctl-client", "--client-secret", "ctl-secret"});
    EXPECT_FALSE(github_->base_url().empty()) << "the GitHub stand-in did not start";
    const auto secret_file = root_ / "oauth-secret";
    write_text(secret_file, "ctl-secret\n");
    return MeshServer::Options{
        .extra = {"--oauth-client-id", "ctl-client", "--oauth-client-secret-file", secret_file.string(),
                  "--oauth-device-url", github_->url("/login/device/code"), "--oauth-token-url",
                  github_->url("/login/oauth/access_token"), "--oauth-user-url", github_->url("/user")},
        .oauth = false};
  }
  void TearDown() override {
    CtlTest::TearDown();
    github_.reset();
  }

  // The person at the browser: POST /_control/<action> on the stand-in.
  int control(const std::string& action, boost::json::object body) {
    net::HttpRequest request;
    request.method = "POST";
    request.url = github_->url("/_control/" + action);
    request.headers.push_back({"Content-Type", "application/json"});
    request.body = boost::json::serialize(body);
    request.timeout = 10s;
    auto reply = net::http_request(request);
    return reply ? reply->status : 0;
  }

  struct Prompt {
    std::string uri;
    std::string code;
  };
  // Waits for `Open <uri> and enter the code <code>` on the CLI's stderr.
  static std::optional<Prompt> read_prompt(CtlProcess& process) {
    const std::regex pattern("Open (\\S+) and enter the code (\\S+)");
    std::smatch m;
    const bool seen = process.wait_for(
        [&](const std::string&, const std::string& err) { return std::regex_search(err, m, pattern); }, 15s);
    if (!seen) return std::nullopt;
    std::smatch found;
    const std::string err = process.err();
    if (!std::regex_search(err, found, pattern)) return std::nullopt;
    Prompt prompt{found[1], found[2]};
    // Strip trailing punctuation a sentence might add.
    while (!prompt.code.empty() && (prompt.code.back() == '.' || prompt.code.back() == ',')) prompt.code.pop_back();
    return prompt;
  }

  std::unique_ptr<GithubStandIn> github_;
};

TEST_F(CtlLoginTest, DeviceFlowApprovedSavesTheToken) {
  auto home = new_home("a");
  auto process = start_ctl(home, {"login", "--cp-url", server_->base_url()});
  auto prompt = read_prompt(*process);
  ASSERT_TRUE(prompt.has_value()) << process->finish(5s).describe();
  EXPECT_TRUE(prompt->uri.rfind("http", 0) == 0) << prompt->uri;
  EXPECT_TRUE(process->out().empty()) << "the prompt belongs on stderr";
  ASSERT_EQ(control("approve", {{"user_code", prompt->code}, {"login", "dora"}, {"id", 7007}}), 200)
      << "the stand-in does not know the code [" << prompt->code << "]";
  auto r = process->finish(20s);
  ASSERT_TRUE(IsOk(r));
  EXPECT_EQ(r.out_trimmed(), "Logged in as dora") << r.describe();
  const auto token = home.config_value("token");
  ASSERT_FALSE(token.empty()) << home.read_config();
  EXPECT_EQ(home.config_value("cp_url"), server_->base_url()) << home.read_config();
  EXPECT_EQ(file_mode(home.config()), 0600u);
  EXPECT_EQ(file_mode(home.path), 0700u);
  // The token is a real API token of the user dora.
  auto me = server_->as(token, "GET", "/api/v1/users/me");
  ASSERT_EQ(me.status, 200) << me.body;
  EXPECT_EQ(json_string(me.json.at("user"), "login"), "dora");
  // And the CLI uses it from now on.
  auto listed = ctl(home, {"discover"});
  EXPECT_TRUE(IsOk(listed));
}

TEST_F(CtlLoginTest, DeviceFlowJsonPrintsUsersMe) {
  auto home = new_home("a");
  auto process = start_ctl(home, {"login", "--json"}, {{"MESH_CP_URL", server_->base_url()}});
  auto prompt = read_prompt(*process);
  ASSERT_TRUE(prompt.has_value()) << process->finish(5s).describe();
  ASSERT_EQ(control("approve", {{"user_code", prompt->code}, {"login", "erin"}, {"id", 8008}}), 200);
  auto r = process->finish(20s);
  ASSERT_TRUE(IsOk(r));
  auto json = parse_json(r.out);
  ASSERT_TRUE(json && json->is_object()) << r.describe();
  EXPECT_EQ(json_string(json->at("user"), "login"), "erin") << r.describe();
  EXPECT_FALSE(home.config_value("token").empty()) << home.read_config();
}

TEST_F(CtlLoginTest, DeviceFlowDeniedSavesNothing) {
  auto home = new_home("a");
  auto process = start_ctl(home, {"login", "--cp-url", server_->base_url()});
  auto prompt = read_prompt(*process);
  ASSERT_TRUE(prompt.has_value()) << process->finish(5s).describe();
  ASSERT_EQ(control("deny", {{"user_code", prompt->code}}), 200);
  auto r = process->finish(20s);
  EXPECT_EQ(r.exit, 1) << r.describe();
  EXPECT_TRUE(r.out.empty()) << r.describe();
  EXPECT_TRUE(contains(r.err, "error: ")) << r.describe();
  EXPECT_TRUE(contains(lower(r.err), "denied")) << r.describe();
  EXPECT_TRUE(contains(r.err, "hint: ")) << r.describe();
  EXPECT_FALSE(home.config_has("token")) << home.read_config();
}

TEST_F(CtlLoginTest, DeviceFlowExpiredSavesNothing) {
  auto home = new_home("a");
  auto process = start_ctl(home, {"login", "--cp-url", server_->base_url()});
  auto prompt = read_prompt(*process);
  ASSERT_TRUE(prompt.has_value()) << process->finish(5s).describe();
  ASSERT_EQ(control("expire", {{"user_code", prompt->code}}), 200);
  auto r = process->finish(20s);
  EXPECT_EQ(r.exit, 1) << r.describe();
  EXPECT_TRUE(r.out.empty()) << r.describe();
  EXPECT_TRUE(contains(lower(r.err), "expired")) << r.describe();
  EXPECT_TRUE(contains(r.err, "hint: ")) << r.describe();
  EXPECT_FALSE(home.config_has("token")) << home.read_config();
}

TEST_F(CtlLoginTest, DeviceFlowAgainstADeadRegistry) {
  auto home = new_home("a");
  ClosedPort closed;
  auto r = ctl(home, {"login", "--cp-url", closed.url()}, {}, std::nullopt, 20s);
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "unreachable")) << r.describe();
}

// A server without OAuth: the device flow cannot start; the error says so (and what to do instead).
class CtlLoginNoOAuthTest : public CtlTest {
 protected:
  MeshServer::Options server_options() override { return MeshServer::Options{.extra = {}, .oauth = false}; }
};

TEST_F(CtlLoginNoOAuthTest, DeviceFlowWithoutOAuthOnTheServerFails) {
  auto home = new_home("a");
  auto r = ctl(home, {"login", "--cp-url", server_->base_url()}, {}, std::nullopt, 20s);
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "--token-stdin")) << "the way out without OAuth is --token-stdin" << r.describe();
  EXPECT_FALSE(home.config_has("token")) << home.read_config();
}

}  // namespace
}  // namespace agent_mesh::test::ctl
