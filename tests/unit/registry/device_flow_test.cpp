// DeviceFlowProvider: the protocol logic through a scripted transport (every answer shape GitHub
// and RFC 8628 allow, and the broken ones), then the real thing against the local GitHub stand-in
// (tests/support/github-standin.mjs) with net::http_request.
#include "registry/device_flow.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <deque>
#include <regex>

#include "github_standin.hpp"

namespace agent_mesh::registry {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kSecret = "csecret-0123456789";
constexpr std::string_view kDeviceCode = "dc-secret-3584d83530557fdd1f46af8289938c8ef79f9dc5";
constexpr std::string_view kAccessToken = "gho_tok-secret-16C7e42F292c6912E7710c838347Ae178B4a";

DeviceFlowConfig fake_config() {
  DeviceFlowConfig config;
  config.device_url = "https://provider.test/login/device/code";
  config.token_url = "https://provider.test/login/oauth/access_token";
  config.user_url = "https://api.provider.test/user";
  config.client_id = "cid-1";
  config.client_secret = std::string(kSecret);
  return config;
}

net::HttpResponse json_response(int status, const std::string& body) {
  net::HttpResponse response;
  response.status = status;
  response.headers = {{"content-type", "application/json; charset=utf-8"}};
  response.body = body;
  return response;
}

// Answers requests from a script, in order, and keeps what it was asked.
struct ScriptedTransport {
  std::deque<Result<net::HttpResponse>> answers;
  std::vector<net::HttpRequest> requests;

  HttpTransport transport() {
    return [this](const net::HttpRequest& request) -> Result<net::HttpResponse> {
      requests.push_back(request);
      if (answers.empty()) return fail(Errc::internal, "script: no more answers");
      auto answer = std::move(answers.front());
      answers.pop_front();
      return answer;
    };
  }
};

std::string header(const net::HttpRequest& request, std::string_view name) {
  for (const auto& h : request.headers)
    if (h.name == name) return h.value;
  return "<absent>";
}

void expect_no_secret(const Error& error) {
  EXPECT_EQ(error.message.find(kSecret), std::string::npos) << error.message;
  EXPECT_EQ(error.message.find(kDeviceCode), std::string::npos) << error.message;
  EXPECT_EQ(error.message.find(kAccessToken), std::string::npos) << error.message;
}

const std::string kStarted = R"({"device_code":"3584d83530557fdd1f46af8289938c8ef79f9dc5","user_code":"WDJB-MJHT",)"
                             R"("verification_uri":"https://github.com/login/device","expires_in":900,"interval":5})";

// ---- start() ----

TEST(DeviceFlow, StartPostsTheClientIdAsAFormAndReadsGithubsAnswer) {
  ScriptedTransport script;
  script.answers.push_back(json_response(200, kStarted));
  const DeviceFlowProvider provider(fake_config(), script.transport());
  auto started = provider.start();
  ASSERT_TRUE(started.ok()) << started.error().describe();
  EXPECT_EQ(started->device_code, "3584d83530557fdd1f46af8289938c8ef79f9dc5");
  EXPECT_EQ(started->user_code, "WDJB-MJHT");
  EXPECT_EQ(started->verification_uri, "https://github.com/login/device");
  EXPECT_EQ(started->expires_in, 900s);
  EXPECT_EQ(started->interval, 5s);

  ASSERT_EQ(script.requests.size(), 1u);
  const auto& request = script.requests[0];
  EXPECT_EQ(request.method, "POST");
  EXPECT_EQ(request.url, "https://provider.test/login/device/code");
  EXPECT_EQ(header(request, "Accept"), "application/json");
  EXPECT_EQ(header(request, "Content-Type"), "application/x-www-form-urlencoded");
  EXPECT_EQ(header(request, "User-Agent"), "agent-mesh-registry");
  EXPECT_EQ(request.body, "client_id=cid-1") << "no scope by default, and never the secret";
}

TEST(DeviceFlow, StartSendsTheScopeWhenConfigured) {
  ScriptedTransport script;
  script.answers.push_back(json_response(200, kStarted));
  auto config = fake_config();
  config.scope = "read:user user:email";
  ASSERT_TRUE(DeviceFlowProvider(config, script.transport()).start().ok());
  EXPECT_EQ(script.requests[0].body, "client_id=cid-1&scope=read%3Auser+user%3Aemail");
}

TEST(DeviceFlow, StartTakesFractionalAndMissingIntervals) {
  ScriptedTransport script;
  script.answers.push_back(json_response(
      200, R"({"device_code":"d","user_code":"u","verification_uri":"v","expires_in":0.5,"interval":0.05})"));
  script.answers.push_back(json_response(200, R"({"device_code":"d","user_code":"u","verification_uri":"v","expires_in":60})"));
  script.answers.push_back(json_response(200, R"({"device_code":"d","user_code":"u","verification_url":"v2","expires_in":60})"));
  const DeviceFlowProvider provider(fake_config(), script.transport());
  auto started = provider.start();
  ASSERT_TRUE(started.ok()) << started.error().describe();
  EXPECT_EQ(started->expires_in, 500ms);
  EXPECT_EQ(started->interval, 50ms);
  started = provider.start();
  ASSERT_TRUE(started.ok()) << started.error().describe();
  EXPECT_EQ(started->interval, 5s) << "RFC 8628 §3.2: 5 s when the provider gives none";
  started = provider.start();
  ASSERT_TRUE(started.ok()) << started.error().describe();
  EXPECT_EQ(started->verification_uri, "v2");
}

TEST(DeviceFlow, StartRefusesBrokenAnswers) {
  const std::vector<std::pair<net::HttpResponse, Errc>> cases{
      {json_response(200, R"({"user_code":"u","verification_uri":"v","expires_in":60,"interval":5})"), Errc::internal},
      {json_response(200, R"({"device_code":"","user_code":"u","verification_uri":"v","expires_in":60})"), Errc::internal},
      {json_response(200, R"({"device_code":"d","user_code":"u","verification_uri":"v"})"), Errc::internal},
      {json_response(200, R"({"device_code":"d","user_code":"u","verification_uri":"v","expires_in":"60"})"), Errc::internal},
      {json_response(200, R"({"device_code":"d","user_code":"u","verification_uri":"v","expires_in":60,"interval":-1})"),
       Errc::internal},
      {json_response(200, R"({"device_code":"d","user_code":"u","verification_uri":"v","expires_in":1e12})"), Errc::internal},
      {json_response(200, "device_code=d&user_code=u"), Errc::internal},
      {json_response(200, "[1,2]"), Errc::internal},
      {json_response(200, R"({"error":"incorrect_client_credentials"})"), Errc::internal},
      {json_response(200, R"({"error":"device_flow_disabled"})"), Errc::internal},
      {json_response(404, R"({"error":"Not Found"})"), Errc::internal},
      {json_response(502, "<html>bad gateway</html>"), Errc::unreachable},
      {json_response(429, "slow"), Errc::rate_limited},
  };
  for (const auto& [answer, code] : cases) {
    SCOPED_TRACE(answer.body);
    ScriptedTransport script;
    script.answers.push_back(answer);
    auto started = DeviceFlowProvider(fake_config(), script.transport()).start();
    ASSERT_FALSE(started.ok());
    EXPECT_EQ(started.error().code, code) << started.error().message;
    EXPECT_EQ(started.error().message.rfind("oauth: device code request: ", 0), 0u) << started.error().message;
    expect_no_secret(started.error());
  }
}

TEST(DeviceFlow, StartPassesTransportFailuresOn) {
  ScriptedTransport script;
  script.answers.push_back(fail(Errc::unreachable, "http_client: connect to 127.0.0.1:9 failed: Connection refused"));
  auto started = DeviceFlowProvider(fake_config(), script.transport()).start();
  ASSERT_FALSE(started.ok());
  EXPECT_EQ(started.error().code, Errc::unreachable);
  EXPECT_EQ(started.error().message,
            "oauth: device code request: http_client: connect to 127.0.0.1:9 failed: Connection refused");
}

// ---- poll() ----

TEST(DeviceFlow, PollPostsTheDeviceGrantWithTheClientCredentials) {
  ScriptedTransport script;
  script.answers.push_back(json_response(200, R"({"error":"authorization_pending"})"));
  const DeviceFlowProvider provider(fake_config(), script.transport());
  auto polled = provider.poll(kDeviceCode);
  ASSERT_TRUE(polled.ok()) << polled.error().describe();
  ASSERT_EQ(script.requests.size(), 1u);
  const auto& request = script.requests[0];
  EXPECT_EQ(request.method, "POST");
  EXPECT_EQ(request.url, "https://provider.test/login/oauth/access_token");
  EXPECT_EQ(header(request, "Accept"), "application/json");
  EXPECT_EQ(header(request, "Content-Type"), "application/x-www-form-urlencoded");
  EXPECT_EQ(request.body, "client_id=cid-1&client_secret=" + std::string(kSecret) +
                              "&device_code=" + std::string(kDeviceCode) +
                              "&grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code");
}

TEST(DeviceFlow, PollMapsTheFourRfc8628CodesWithGithubs200AndTheRfcs400) {
  const std::vector<std::pair<std::string, Errc>> codes{{"authorization_pending", Errc::authorization_pending},
                                                        {"slow_down", Errc::slow_down},
                                                        {"expired_token", Errc::expired_token},
                                                        {"token_expired", Errc::expired_token},
                                                        {"access_denied", Errc::access_denied}};
  for (const int status : {200, 400}) {
    for (const auto& [wire, code] : codes) {
      SCOPED_TRACE(wire + " " + std::to_string(status));
      ScriptedTransport script;
      script.answers.push_back(json_response(
          status, R"({"error":")" + wire + R"(","error_description":"x","error_uri":"https://docs.github.com"})"));
      auto polled = DeviceFlowProvider(fake_config(), script.transport()).poll(kDeviceCode);
      ASSERT_TRUE(polled.ok()) << polled.error().describe();
      EXPECT_FALSE(polled->approved());
      EXPECT_EQ(polled->code, code);
      EXPECT_FALSE(polled->interval.has_value());
      EXPECT_EQ(script.requests.size(), 1u) << "no user request without a token";
    }
  }
}

TEST(DeviceFlow, SlowDownCarriesTheNewInterval) {
  ScriptedTransport script;
  script.answers.push_back(json_response(200, R"({"error":"slow_down","interval":10})"));
  script.answers.push_back(json_response(200, R"({"error":"slow_down","interval":5.25})"));
  script.answers.push_back(json_response(200, R"({"error":"slow_down","interval":"ten"})"));
  const DeviceFlowProvider provider(fake_config(), script.transport());
  auto polled = provider.poll(kDeviceCode);
  ASSERT_TRUE(polled.ok());
  EXPECT_EQ(polled->code, Errc::slow_down);
  EXPECT_EQ(polled->interval, 10s);
  polled = provider.poll(kDeviceCode);
  ASSERT_TRUE(polled.ok());
  EXPECT_EQ(polled->interval, 5250ms);
  polled = provider.poll(kDeviceCode);
  ASSERT_FALSE(polled.ok());
  EXPECT_EQ(polled.error().code, Errc::internal);
}

TEST(DeviceFlow, AnApprovedPollReadsTheUserWithTheNewToken) {
  ScriptedTransport script;
  script.answers.push_back(json_response(
      200, R"({"access_token":")" + std::string(kAccessToken) + R"(","token_type":"bearer","scope":""})"));
  script.answers.push_back(json_response(
      200, R"({"login":"octocat","id":583231,"node_id":"MDQ6VXNlcjE=","type":"User","name":null,"site_admin":false})"));
  auto polled = DeviceFlowProvider(fake_config(), script.transport()).poll(kDeviceCode);
  ASSERT_TRUE(polled.ok()) << polled.error().describe();
  ASSERT_TRUE(polled->approved());
  EXPECT_EQ(polled->identity->provider_subject, "github:583231");
  EXPECT_EQ(polled->identity->login, "octocat");

  ASSERT_EQ(script.requests.size(), 2u);
  const auto& user = script.requests[1];
  EXPECT_EQ(user.method, "GET");
  EXPECT_EQ(user.url, "https://api.provider.test/user");
  EXPECT_EQ(header(user, "Authorization"), "Bearer " + std::string(kAccessToken));
  EXPECT_EQ(header(user, "Accept"), "application/vnd.github+json");
  EXPECT_EQ(header(user, "User-Agent"), "agent-mesh-registry") << "GitHub's API refuses requests without one";
  EXPECT_TRUE(user.body.empty());
}

TEST(DeviceFlow, RefusalsAndBrokenAnswersAreErrorsWithoutSecrets) {
  const std::string token_answer = R"({"access_token":")" + std::string(kAccessToken) + R"(","token_type":"bearer"})";
  struct Case {
    std::vector<net::HttpResponse> answers;
    Errc code;
  };
  const std::vector<Case> cases{
      {{json_response(200, R"({"error":"incorrect_client_credentials"})")}, Errc::internal},
      {{json_response(401, R"({"error":"invalid_client"})")}, Errc::internal},
      {{json_response(200, R"({"error":"unsupported_grant_type"})")}, Errc::internal},
      {{json_response(200, R"({"error":"incorrect_device_code"})")}, Errc::bad_request},
      {{json_response(400, R"({"error":"invalid_grant"})")}, Errc::bad_request},
      {{json_response(200, R"({"error":"something_new"})")}, Errc::internal},
      {{json_response(200, R"({"error":"<script>\n"})")}, Errc::internal},
      {{json_response(200, R"({"token_type":"bearer"})")}, Errc::internal},
      {{json_response(200, R"({"access_token":""})")}, Errc::internal},
      {{json_response(200, "access_token=" + std::string(kAccessToken))}, Errc::internal},
      {{json_response(503, "")}, Errc::unreachable},
      {{json_response(200, token_answer), json_response(401, R"({"message":"Bad credentials"})")}, Errc::internal},
      {{json_response(200, token_answer), json_response(500, "oops")}, Errc::unreachable},
      {{json_response(200, token_answer), json_response(200, R"({"login":"octocat"})")}, Errc::internal},
      {{json_response(200, token_answer), json_response(200, R"({"login":"octocat","id":"583231"})")}, Errc::internal},
      {{json_response(200, token_answer), json_response(200, R"({"login":"octocat","id":-1})")}, Errc::internal},
      {{json_response(200, token_answer), json_response(200, R"({"login":"octocat","id":1.5})")}, Errc::internal},
      {{json_response(200, token_answer), json_response(200, R"({"id":1})")}, Errc::internal},
      {{json_response(200, token_answer), json_response(200, R"({"id":1,"login":"a\u0000b"})")}, Errc::internal},
      {{json_response(200, token_answer), json_response(200, R"({"id":1,"login":")" + std::string(300, 'a') + "\"}")},
       Errc::internal},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.answers.back().body.substr(0, 80));
    ScriptedTransport script;
    for (const auto& answer : c.answers) script.answers.push_back(answer);
    auto polled = DeviceFlowProvider(fake_config(), script.transport()).poll(kDeviceCode);
    ASSERT_FALSE(polled.ok());
    EXPECT_EQ(polled.error().code, c.code) << polled.error().message;
    EXPECT_EQ(polled.error().message.rfind("oauth: ", 0), 0u) << polled.error().message;
    expect_no_secret(polled.error());
  }
}

TEST(DeviceFlow, TheMessageForBadClientCredentialsPointsAtTheFlags) {
  ScriptedTransport script;
  script.answers.push_back(json_response(200, R"({"error":"incorrect_client_credentials"})"));
  auto polled = DeviceFlowProvider(fake_config(), script.transport()).poll(kDeviceCode);
  ASSERT_FALSE(polled.ok());
  EXPECT_EQ(polled.error().message,
            "oauth: token request: the provider refused the registry's OAuth app (incorrect_client_credentials); "
            "check --oauth-client-id, --oauth-client-secret-file and that the app has the device flow enabled");
}

TEST(DeviceFlow, PollPassesTransportFailuresOnAndRefusesAnEmptyCode) {
  ScriptedTransport script;
  script.answers.push_back(fail(Errc::timeout, "http_client: POST to github.com:443 timed out after 10000 ms connecting"));
  const DeviceFlowProvider provider(fake_config(), script.transport());
  auto polled = provider.poll(kDeviceCode);
  ASSERT_FALSE(polled.ok());
  EXPECT_EQ(polled.error().code, Errc::timeout);
  EXPECT_EQ(polled.error().message.rfind("oauth: token request: http_client: ", 0), 0u);

  polled = provider.poll("");
  ASSERT_FALSE(polled.ok());
  EXPECT_EQ(polled.error().code, Errc::bad_request);
  EXPECT_EQ(script.requests.size(), 1u) << "an empty code is not sent";
}

// ---- Against the stand-in, over real HTTP ----

class DeviceFlowStandInTest : public ::testing::Test {
 protected:
  void start(const std::vector<std::string>& flags = {"--interval-ms", "0"}) {
    standin_ = std::make_unique<test::GithubStandIn>(flags);
    ASSERT_FALSE(standin_->base_url().empty()) << "the stand-in did not start (node?)";
  }
  DeviceFlowConfig config() const {
    DeviceFlowConfig c;
    c.device_url = standin_->url("/login/device/code");
    c.token_url = standin_->url("/login/oauth/access_token");
    c.user_url = standin_->url("/user");
    c.client_id = "standin-client-id";
    c.client_secret = "standin-client-secret";
    c.timeout = 5s;
    return c;
  }
  // The person at the browser.
  void browser(const std::string& action, const boost::json::object& body) const {
    net::HttpRequest request;
    request.method = "POST";
    request.url = standin_->url("/_control/" + action);
    request.headers = {{"Content-Type", "application/json"}};
    request.body = boost::json::serialize(body);
    request.timeout = 5s;
    auto response = net::http_request(request);
    ASSERT_TRUE(response.ok()) << response.error().describe();
    ASSERT_EQ(response->status, 200) << response->body;
  }
  std::unique_ptr<test::GithubStandIn> standin_;
};

TEST_F(DeviceFlowStandInTest, TheWholeLoginPendingThenApprovedThenTheCodeIsSpent) {
  start();
  const DeviceFlowProvider provider(config());
  auto started = provider.start();
  ASSERT_TRUE(started.ok()) << started.error().describe();
  EXPECT_EQ(started->device_code.size(), 40u);
  EXPECT_TRUE(std::regex_match(started->user_code, std::regex("[A-Z]{4}-[A-Z]{4}"))) << started->user_code;
  EXPECT_EQ(started->verification_uri, standin_->url("/login/device"));
  EXPECT_EQ(started->expires_in, 900s);
  EXPECT_EQ(started->interval, 0ms);

  auto polled = provider.poll(started->device_code);
  ASSERT_TRUE(polled.ok()) << polled.error().describe();
  EXPECT_EQ(polled->code, Errc::authorization_pending);

  browser("approve", {{"user_code", started->user_code}, {"login", "octocat"}, {"id", 583231}});
  polled = provider.poll(started->device_code);
  ASSERT_TRUE(polled.ok()) << polled.error().describe();
  ASSERT_TRUE(polled->approved());
  EXPECT_EQ(polled->identity->provider_subject, "github:583231");
  EXPECT_EQ(polled->identity->login, "octocat");

  polled = provider.poll(started->device_code);
  ASSERT_FALSE(polled.ok()) << "a device code gives one token";
  EXPECT_EQ(polled.error().code, Errc::bad_request);
}

TEST_F(DeviceFlowStandInTest, ADeniedLoginStaysDenied) {
  start();
  const DeviceFlowProvider provider(config());
  auto started = provider.start();
  ASSERT_TRUE(started.ok()) << started.error().describe();
  browser("deny", {{"user_code", started->user_code}});
  for (int i = 0; i < 2; ++i) {
    auto polled = provider.poll(started->device_code);
    ASSERT_TRUE(polled.ok()) << polled.error().describe();
    EXPECT_EQ(polled->code, Errc::access_denied);
  }
}

TEST_F(DeviceFlowStandInTest, AnExpiredCodeIsExpiredToken) {
  start();
  const DeviceFlowProvider provider(config());
  auto started = provider.start();
  ASSERT_TRUE(started.ok()) << started.error().describe();
  browser("expire", {{"user_code", started->user_code}});
  auto polled = provider.poll(started->device_code);
  ASSERT_TRUE(polled.ok()) << polled.error().describe();
  EXPECT_EQ(polled->code, Errc::expired_token);

  // The same through the flag: a code that lives 0 s is expired at its first poll.
  start({"--interval-ms", "0", "--expires-s", "0"});
  const DeviceFlowProvider short_lived(config());
  started = short_lived.start();
  ASSERT_TRUE(started.ok()) << started.error().describe();
  EXPECT_EQ(started->expires_in, 0ms);
  polled = short_lived.poll(started->device_code);
  ASSERT_TRUE(polled.ok()) << polled.error().describe();
  EXPECT_EQ(polled->code, Errc::expired_token);
}

TEST_F(DeviceFlowStandInTest, PollingFasterThanTheIntervalIsSlowDownWithFiveMoreSeconds) {
  start({"--interval-ms", "60000"});
  const DeviceFlowProvider provider(config());
  auto started = provider.start();
  ASSERT_TRUE(started.ok()) << started.error().describe();
  EXPECT_EQ(started->interval, 60s);
  auto polled = provider.poll(started->device_code);
  ASSERT_TRUE(polled.ok()) << polled.error().describe();
  EXPECT_EQ(polled->code, Errc::authorization_pending) << "the first poll is never early";
  polled = provider.poll(started->device_code);
  ASSERT_TRUE(polled.ok()) << polled.error().describe();
  EXPECT_EQ(polled->code, Errc::slow_down);
  EXPECT_EQ(polled->interval, 65s);
  polled = provider.poll(started->device_code);
  ASSERT_TRUE(polled.ok()) << polled.error().describe();
  EXPECT_EQ(polled->interval, 70s) << "the interval keeps growing for every early poll";
}

TEST_F(DeviceFlowStandInTest, TheRfcErrorStatusIsUnderstoodToo) {
  start({"--interval-ms", "0", "--error-status", "400"});
  const DeviceFlowProvider provider(config());
  auto started = provider.start();
  ASSERT_TRUE(started.ok()) << started.error().describe();
  auto polled = provider.poll(started->device_code);
  ASSERT_TRUE(polled.ok()) << polled.error().describe();
  EXPECT_EQ(polled->code, Errc::authorization_pending);
}

TEST_F(DeviceFlowStandInTest, WrongClientCredentialsAreAConfigurationErrorWithoutTheSecret) {
  start();
  auto wrong = config();
  wrong.client_secret = "wrong-client-secret-value";
  const DeviceFlowProvider provider(wrong);
  auto started = provider.start();
  ASSERT_TRUE(started.ok()) << "the device endpoint does not take the secret";
  auto polled = provider.poll(started->device_code);
  ASSERT_FALSE(polled.ok());
  EXPECT_EQ(polled.error().code, Errc::internal);
  EXPECT_NE(polled.error().message.find("incorrect_client_credentials"), std::string::npos);
  EXPECT_EQ(polled.error().message.find("wrong-client-secret-value"), std::string::npos);
  EXPECT_EQ(polled.error().message.find(started->device_code), std::string::npos);

  auto unknown = config();
  unknown.client_id = "someone-else";
  started = DeviceFlowProvider(unknown).start();
  ASSERT_FALSE(started.ok());
  EXPECT_EQ(started.error().code, Errc::internal);
}

TEST_F(DeviceFlowStandInTest, AnUnreachableProviderIsUnreachable) {
  start();
  auto c = config();
  standin_.reset();  // killed and reaped: its port now refuses connections
  auto started = DeviceFlowProvider(c).start();
  ASSERT_FALSE(started.ok());
  EXPECT_EQ(started.error().code, Errc::unreachable) << started.error().message;
}

}  // namespace
}  // namespace agent_mesh::registry
