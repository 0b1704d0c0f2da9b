// agent-mesh-relay as a black box: the real binary on an ephemeral loopback port, real WebSocket
// clients (relay_test_client), real SQLite files in a temporary data directory.
#include <gtest/gtest.h>
#include <signal.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "../child_process.hpp"
#include "../relay_test_client.hpp"
#include "agent_mesh/encoding.hpp"
#include "agent_mesh/envelope.hpp"
#include "agent_mesh/key_lifecycle.hpp"

namespace agent_mesh::test {
namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

KeyPair key(std::uint8_t b) { return *KeyPair::from_seed(Bytes(32, b)); }

std::string envelope(const KeyPair& from, const AgentId& to, const std::string& text = "hi") {
  Envelope env;
  env.id = Uuid::generate();
  env.from = from.agent_id();
  env.to = to;
  env.msg_type = MsgType::request;
  env.timestamp = now_ms();
  env.payload = boost::json::object{{"capability", "echo"}, {"body", text}};
  env.sign(from);
  // Not in JCS form on purpose: the relay must forward the bytes unchanged.
  return "{ " + env.serialize().substr(1);
}

boost::json::object parse(const Received& r) {
  EXPECT_TRUE(r.text.has_value()) << "close " << r.close.value_or(0) << " timeout " << r.timed_out;
  return r.text ? boost::json::parse(*r.text).as_object() : boost::json::object{};
}

class RelayTest : public ::testing::Test {
 protected:
  void start(std::vector<std::string> extra = {}) {
    data_dir_ = std::filesystem::temp_directory_path() / ("relay-test-" + std::to_string(::getpid()) + "-" +
                                                         std::to_string(counter_++));
    std::filesystem::create_directories(data_dir_);
    std::vector<std::string> args{"--listen", "127.0.0.1:0", "--data-dir", data_dir_.string(), "--auth-timeout-ms", "2000"};
    args.insert(args.end(), extra.begin(), extra.end());
    relay_ = std::make_unique<ChildProcess>(binary_path("agent-mesh-relay"), args);
    port_ = relay_->wait_listening();
    ASSERT_GT(port_, 0) << "relay did not print its listening line";
    relay_id_ = "ws://127.0.0.1:" + std::to_string(port_) + "/relay/ws";
  }
  void TearDown() override {
    relay_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(data_dir_, ignored);
  }
  std::unique_ptr<RelayTestClient> connected(const KeyPair& k) {
    auto client = std::make_unique<RelayTestClient>();
    EXPECT_TRUE(client->connect(port_).ok());
    auto welcome = client->authenticate(k, relay_id_);
    EXPECT_TRUE(welcome.ok()) << welcome.error().describe();
    return client;
  }

  static inline int counter_ = 0;
  std::filesystem::path data_dir_;
  std::unique_ptr<ChildProcess> relay_;
  int port_ = 0;
  std::string relay_id_;
};

TEST_F(RelayTest, AuthenticatesAndWelcomes) {
  start();
  RelayTestClient client;
  ASSERT_TRUE(client.connect(port_).ok());
  auto welcome = client.authenticate(key(1), relay_id_);
  ASSERT_TRUE(welcome.ok()) << welcome.error().describe();
  auto frame = boost::json::parse(*welcome).as_object();
  EXPECT_EQ(frame.at("v").as_int64(), 1);
  EXPECT_EQ(frame.at("buffered").as_int64(), 0);
  EXPECT_EQ(frame.at("heartbeat_ms").as_int64(), 30000);
  EXPECT_EQ(base64url_decode(frame.at("session_token").as_string())->size(), 32u);
}

TEST_F(RelayTest, HelloRejections) {
  start();
  struct Case {
    std::string hello;
    std::string code;
    std::uint16_t close;
  };
  const std::string alice = key(1).agent_id().str();
  const std::vector<Case> cases{
      {R"({"type":"hello","v":2,"agent_id":")" + alice + "\"}", "unsupported_version", 4002},
      {R"({"type":"hello","agent_id":")" + alice + "\"}", "bad_request", 4000},
      {R"({"type":"hello","v":1,"agent_id":"vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaV"})", "bad_request", 4000},
      {R"({"type":"hello","v":1,"agent_id":")" + alice + R"(","features":[]})", "bad_request", 4000},
      {R"({"type":"ping"})", "bad_request", 4000},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.hello);
    RelayTestClient client;
    ASSERT_TRUE(client.connect(port_).ok());
    client.send(c.hello);
    auto error = parse(client.receive());
    EXPECT_EQ(error.at("type"), "error");
    EXPECT_EQ(std::string(error.at("code").as_string()), c.code);
    EXPECT_EQ(client.receive().close, c.close);
  }
}

TEST_F(RelayTest, BadSignatureWrongRelayIdAndOtherPurposeAreRefused) {
  start();
  const KeyPair alice = key(1);
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE(variant);
    RelayTestClient client;
    ASSERT_TRUE(client.connect(port_).ok());
    client.send(R"({"type":"hello","v":1,"agent_id":")" + alice.agent_id().str() + "\"}");
    auto challenge = parse(client.receive());
    auto nonce = *base64url_decode(challenge.at("nonce").as_string());
    Bytes message = nonce;
    const std::string relay_id = variant == 1 ? "ws://127.0.0.1:1/relay/ws" : relay_id_;
    message.insert(message.end(), relay_id.begin(), relay_id.end());
    const Purpose purpose = variant == 2 ? Purpose::envelope : Purpose::auth;
    const KeyPair signer = variant == 0 ? key(2) : alice;
    client.send(R"({"type":"auth","signature":")" + base64url_encode(signer.sign(purpose, message)) + "\"}");
    auto error = parse(client.receive());
    EXPECT_EQ(error.at("code"), "auth_failed");
    EXPECT_EQ(client.receive().close, 4001);
  }
}

TEST_F(RelayTest, AuthTimeoutClosesWith4001) {
  start({"--auth-timeout-ms", "300"});
  RelayTestClient client;
  ASSERT_TRUE(client.connect(port_).ok());
  auto error = parse(client.receive(std::chrono::seconds(3)));
  EXPECT_EQ(error.at("code"), "auth_timeout");
  EXPECT_EQ(client.receive().close, 4001);
}

TEST_F(RelayTest, LiveDeliveryIsByteIdentical) {
  start();
  const KeyPair alice = key(1), bob = key(2);
  auto a = connected(alice);
  auto b = connected(bob);
  const std::string frame = envelope(alice, bob.agent_id());
  a->send(frame);
  auto received = b->receive();
  ASSERT_TRUE(received.text.has_value());
  EXPECT_EQ(*received.text, frame);
  EXPECT_TRUE(a->receive(std::chrono::milliseconds(200)).timed_out) << "a live delivery gets no frame";
}

TEST_F(RelayTest, OfflineEnvelopesAreQueuedThenDeliveredInOrderUntilAcked) {
  start();
  const KeyPair alice = key(1), bob = key(2);
  auto a = connected(alice);
  std::vector<std::string> frames;
  for (int i = 0; i < 5; ++i) {
    frames.push_back(envelope(alice, bob.agent_id(), "m" + std::to_string(i)));
    a->send(frames.back());
    auto queued = parse(a->receive());
    EXPECT_EQ(queued.at("type"), "queued");
  }
  {
    auto b = connected(bob);
    EXPECT_EQ(b->buffered, 5);
    for (const auto& f : frames) {
      auto got = b->receive();
      ASSERT_TRUE(got.text.has_value());
      EXPECT_EQ(*got.text, f);
    }
    // Ack only the first two, then go away.
    boost::json::array ids;
    for (int i = 0; i < 2; ++i) ids.push_back(boost::json::parse(frames[static_cast<std::size_t>(i)]).at("id"));
    b->send(boost::json::serialize(boost::json::object{{"type", "ack"}, {"ids", ids}}));
    b->send(R"({"type":"ping"})");
    EXPECT_EQ(parse(b->receive()).at("type"), "pong");  // the ack was processed before the ping
    b->close();
  }
  auto again = connected(bob);
  EXPECT_EQ(again->buffered, 3);
  for (int i = 2; i < 5; ++i) EXPECT_EQ(*again->receive().text, frames[static_cast<std::size_t>(i)]);
}

TEST_F(RelayTest, RoutingChecksAnswerUndeliverable) {
  start();
  const KeyPair alice = key(1), bob = key(2);
  auto a = connected(alice);
  // from is not the authenticated agent
  a->send(envelope(bob, alice.agent_id()));
  auto refused = parse(a->receive());
  EXPECT_EQ(refused.at("type"), "undeliverable");
  EXPECT_EQ(refused.at("code"), "bad_envelope");
  // not JSON at all
  a->send("{\"msg_type\":");
  refused = parse(a->receive());
  EXPECT_EQ(refused.at("code"), "bad_envelope");
  EXPECT_TRUE(refused.at("id").is_null());
}

TEST_F(RelayTest, MalformedControlFrameClosesWith4000AndOversizedFrameWith1009) {
  start({"--max-envelope-bytes", "4096", "--write-queue-bytes", "65536"});
  auto a = connected(key(1));
  a->send(R"({"type":"ping","ts":1})");
  EXPECT_EQ(parse(a->receive()).at("code"), "bad_request");
  EXPECT_EQ(a->receive().close, 4000);
  auto b = connected(key(2));
  b->send(std::string(5000, ' ') + "{}");
  EXPECT_EQ(b->receive().close, 1009);
}

TEST_F(RelayTest, RateLimitAnswersRetryAfter) {
  start({"--rate-limit", "1", "--rate-burst", "2"});
  const KeyPair alice = key(1), bob = key(2);
  auto a = connected(alice);
  auto b = connected(bob);
  for (int i = 0; i < 3; ++i) a->send(envelope(alice, bob.agent_id()));
  auto refused = parse(a->receive());
  EXPECT_EQ(refused.at("code"), "rate_limited");
  EXPECT_GT(refused.at("retry_after_ms").as_int64(), 0);
}

TEST_F(RelayTest, ANewConnectionReplacesTheOldOne) {
  start();
  const KeyPair alice = key(1), bob = key(2);
  auto first = connected(bob);
  auto second = connected(bob);
  EXPECT_EQ(first->receive().close, 4009);
  // The old connection's teardown did not remove the new one.
  auto a = connected(alice);
  const std::string frame = envelope(alice, bob.agent_id());
  a->send(frame);
  EXPECT_EQ(*second->receive().text, frame);
}

TEST_F(RelayTest, ResumeTokensAreSingleUse) {
  start();
  const KeyPair bob = key(2);
  std::string token;
  {
    auto b = connected(bob);
    token = b->session_token;
    b->close();
  }
  RelayTestClient resumed;
  ASSERT_TRUE(resumed.connect(port_).ok());
  resumed.send(R"({"type":"hello","v":1,"agent_id":")" + bob.agent_id().str() + R"(","resume":")" + token + "\"}");
  EXPECT_EQ(parse(resumed.receive()).at("type"), "welcome") << "a valid token skips the challenge";
  resumed.close();
  RelayTestClient reused;
  ASSERT_TRUE(reused.connect(port_).ok());
  reused.send(R"({"type":"hello","v":1,"agent_id":")" + bob.agent_id().str() + R"(","resume":")" + token + "\"}");
  EXPECT_EQ(parse(reused.receive()).at("type"), "challenge") << "a used token leads to a normal challenge";
}

TEST_F(RelayTest, HealthStatusAndMetrics) {
  start();
  auto health = http_request(port_, "GET", "/health");
  EXPECT_EQ(health.status, 200);
  auto a = connected(key(1));
  auto status = http_request(port_, "GET", "/status");
  ASSERT_EQ(status.status, 200);
  auto body = boost::json::parse(status.body).as_object();
  EXPECT_EQ(body.at("agents_online").as_int64(), 1);
  for (const char* member : {"version", "uptime_s", "connections", "stored_messages", "store_bytes"}) {
    EXPECT_TRUE(body.contains(member)) << member;
  }
  auto metrics = http_request(port_, "GET", "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("agent_mesh_relay_auth_total{result=\"ok\"} 1"), std::string::npos);
  // The exposition passes Prometheus' own checker (promtool comes with Debian's prometheus).
  const auto metrics_file = data_dir_ / "metrics.txt";
  std::ofstream(metrics_file) << metrics.body;
  const std::string check = "promtool check metrics < " + metrics_file.string() + " > " +
                            (data_dir_ / "promtool.out").string() + " 2>&1";
  EXPECT_EQ(std::system(check.c_str()), 0) << std::ifstream(data_dir_ / "promtool.out").rdbuf();
  EXPECT_EQ(http_request(port_, "GET", "/status?agents=1").status, 401);
  EXPECT_EQ(http_request(port_, "GET", "/nowhere").status, 404);
}

TEST_F(RelayTest, SelfSignedRevocationClosesAndRefuses) {
  start();
  const KeyPair bob = key(2);
  auto b = connected(bob);
  Revocation revocation;
  revocation.agent_id = bob.agent_id();
  revocation.reason = "key compromised";
  revocation.timestamp = now_ms();
  revocation.sign(bob);
  auto posted = http_request(port_, "POST", "/revocations", revocation.serialize());
  EXPECT_EQ(posted.status, 200) << posted.body;
  EXPECT_EQ(b->receive().close, 4003);
  RelayTestClient again;
  ASSERT_TRUE(again.connect(port_).ok());
  again.send(R"({"type":"hello","v":1,"agent_id":")" + bob.agent_id().str() + "\"}");
  EXPECT_EQ(parse(again.receive()).at("code"), "revoked");
  // Forged (unsigned, no admin token) revocations are refused.
  Revocation forged = revocation;
  forged.agent_id = key(3).agent_id();
  forged.signature.reset();
  EXPECT_EQ(http_request(port_, "POST", "/revocations", forged.serialize()).status, 400);
  // Revocations survive a restart.
  relay_->signal(SIGTERM);
  ASSERT_EQ(relay_->wait_exit(std::chrono::seconds(12)), 0);
  relay_ = std::make_unique<ChildProcess>(binary_path("agent-mesh-relay"),
                                          std::vector<std::string>{"--listen", "127.0.0.1:0", "--data-dir", data_dir_.string()});
  port_ = relay_->wait_listening();
  ASSERT_GT(port_, 0);
  RelayTestClient after_restart;
  ASSERT_TRUE(after_restart.connect(port_).ok());
  after_restart.send(R"({"type":"hello","v":1,"agent_id":")" + bob.agent_id().str() + "\"}");
  EXPECT_EQ(parse(after_restart.receive()).at("code"), "revoked");
  EXPECT_EQ(after_restart.receive().close, 4003);
}

TEST_F(RelayTest, SigtermDrainsClientsWith1001AndExits) {
  start();
  auto a = connected(key(1));
  relay_->signal(SIGTERM);
  EXPECT_EQ(a->receive().close, 1001);
  EXPECT_EQ(relay_->wait_exit(std::chrono::seconds(12)), 0);
}

// Polls /status until `member` equals `expected` or the deadline passes (the relay frees state
// asynchronously after a disconnect; there is no event a test could wait on instead).
bool status_reaches(int port, const char* member, std::int64_t expected, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto status = http_request(port, "GET", "/status");
    if (status.status == 200 && boost::json::parse(status.body).at(member).as_int64() == expected) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

TEST_F(RelayTest, BufferBoundsAnswerBufferFull) {
  start({"--buffer-max-messages", "2"});
  const KeyPair alice = key(1), bob = key(2);
  auto a = connected(alice);
  for (int i = 0; i < 2; ++i) {
    a->send(envelope(alice, bob.agent_id()));
    EXPECT_EQ(parse(a->receive()).at("type"), "queued");
  }
  a->send(envelope(alice, bob.agent_id()));
  auto refused = parse(a->receive());
  EXPECT_EQ(refused.at("type"), "undeliverable");
  EXPECT_EQ(refused.at("code"), "buffer_full");
}

TEST_F(RelayTest, ExpiredStoredEnvelopesAreAnsweredToTheirSender) {
  start({"--buffer-ttl-s", "1"});
  const KeyPair alice = key(1), bob = key(2);
  auto a = connected(alice);
  a->send(envelope(alice, bob.agent_id()));
  EXPECT_EQ(parse(a->receive()).at("type"), "queued");
  auto expired = parse(a->receive(std::chrono::seconds(5)));
  EXPECT_EQ(expired.at("type"), "undeliverable");
  EXPECT_EQ(expired.at("code"), "expired");
  auto b = connected(bob);
  EXPECT_EQ(b->buffered, 0);
}

TEST_F(RelayTest, ForeignAndExpiredResumeTokensLeadToAChallenge) {
  start({"--resume-ttl-s", "0"});
  const KeyPair alice = key(1), bob = key(2);
  std::string bob_token;
  {
    auto b = connected(bob);
    bob_token = b->session_token;
    auto a = connected(alice);
    RelayTestClient thief;
    ASSERT_TRUE(thief.connect(port_).ok());
    thief.send(R"({"type":"hello","v":1,"agent_id":")" + alice.agent_id().str() + R"(","resume":")" + bob_token + "\"}");
    EXPECT_EQ(parse(thief.receive()).at("type"), "challenge") << "a token bound to another agent";
  }
  // The foreign presentation consumed bob's token; a fresh one expires at once with a 0 s TTL.
  auto b = connected(bob);
  const std::string token = b->session_token;
  b->close();
  ASSERT_TRUE(status_reaches(port_, "agents_online", 0, std::chrono::seconds(5)));
  RelayTestClient late;
  ASSERT_TRUE(late.connect(port_).ok());
  late.send(R"({"type":"hello","v":1,"agent_id":")" + bob.agent_id().str() + R"(","resume":")" + token + "\"}");
  EXPECT_EQ(parse(late.receive()).at("type"), "challenge") << "an expired token";
}

TEST_F(RelayTest, DeadConnectionsAreClosedAfterThreeSilentHeartbeats) {
  start({"--heartbeat-ms", "100"});
  auto quiet = connected(key(1));
  ASSERT_TRUE(status_reaches(port_, "agents_online", 1, std::chrono::seconds(2)));
  // The client never reads, so it never answers the relay's pings: presumed dead.
  ASSERT_TRUE(status_reaches(port_, "agents_online", 0, std::chrono::seconds(5)));
  auto after = quiet->receive(std::chrono::seconds(2));
  EXPECT_TRUE(after.connection_lost || after.close.has_value());
}

TEST_F(RelayTest, AnIdleClientThatAnswersPingsStaysConnected) {
  start({"--heartbeat-ms", "100"});
  auto idle = connected(key(1));
  // Reading keeps answering the relay's pings (Beast does it inside the read): 6 intervals pass.
  EXPECT_TRUE(idle->receive(std::chrono::milliseconds(600)).timed_out);
  auto status = http_request(port_, "GET", "/status");
  EXPECT_EQ(boost::json::parse(status.body).at("agents_online").as_int64(), 1);
}

TEST_F(RelayTest, ConnectionsDroppedMidHandshakeLeaveNoState) {
  start({"--ip-connect-rate", "10000"});
  std::vector<std::unique_ptr<RelayTestClient>> clients;
  for (int i = 0; i < 200; ++i) {
    auto client = std::make_unique<RelayTestClient>();
    ASSERT_TRUE(client->connect(port_).ok()) << i;
    if (i % 2 == 0) client->send(R"({"type":"hello","v":1,"agent_id":")" + key(static_cast<std::uint8_t>(i % 250 + 1)).agent_id().str() + "\"}");
    clients.push_back(std::move(client));
  }
  ASSERT_TRUE(status_reaches(port_, "connections", 200, std::chrono::seconds(5)));
  for (auto& client : clients) client->drop();
  EXPECT_TRUE(status_reaches(port_, "connections", 0, std::chrono::seconds(5)));
  EXPECT_TRUE(status_reaches(port_, "agents_online", 0, std::chrono::seconds(1)));
}

TEST_F(RelayTest, SlowConsumerIsCutWhileOtherPairsKeepFlowing) {
  start({"--max-envelope-bytes", "131072", "--write-queue-bytes", "1048576", "--rate-limit", "100000",
         "--rate-burst", "100000", "--ip-connect-rate", "1000"});
  const KeyPair sender = key(100), slow = key(101);
  auto s = connected(sender);
  auto stalled = connected(slow);  // never reads from here on
  std::vector<std::pair<std::unique_ptr<RelayTestClient>, std::unique_ptr<RelayTestClient>>> pairs;
  for (std::uint8_t i = 0; i < 10; ++i) {
    pairs.emplace_back(connected(key(static_cast<std::uint8_t>(10 + i))), connected(key(static_cast<std::uint8_t>(30 + i))));
  }
  const std::string big(60000, 'x');
  int pushed = 0;
  for (; pushed < 600; ++pushed) {
    s->send(envelope(sender, slow.agent_id(), big));
    if (pushed % 50 == 49) {
      // Meanwhile every other pair still gets through.
      for (std::uint8_t i = 0; i < 10; ++i) {
        const std::string frame = envelope(key(static_cast<std::uint8_t>(10 + i)), key(static_cast<std::uint8_t>(30 + i)).agent_id());
        pairs[i].first->send(frame);
        auto got = pairs[i].second->receive();
        ASSERT_TRUE(got.text.has_value()) << "pair " << int(i) << " stalled after " << pushed;
        EXPECT_EQ(*got.text, frame);
      }
    }
  }
  // The stalled reader, once it reads again, finds its connection closed: with 4010 if the close
  // frame got through, or cut at the TCP level if its socket stayed full for the 2 s close bound.
  std::optional<std::uint16_t> close;
  bool cut = false;
  for (int i = 0; i < 2000 && !close && !cut; ++i) {
    auto got = stalled->receive(std::chrono::seconds(5));
    if (got.timed_out) break;
    cut = got.connection_lost;
    close = got.close;
  }
  EXPECT_TRUE(close == 4010 || cut) << "close " << close.value_or(0);
  auto metrics = http_request(port_, "GET", "/metrics");
  EXPECT_NE(metrics.body.find("agent_mesh_relay_slow_consumers_total 1"), std::string::npos);
}

TEST_F(RelayTest, KillNineLosesNothingAnsweredQueued) {
  start();
  const KeyPair alice = key(1), bob = key(2);
  std::set<std::string> sent_ids;
  std::vector<std::string> frames;
  for (int i = 0; i < 1000; ++i) {
    frames.push_back(envelope(alice, bob.agent_id(), "n" + std::to_string(i)));
  }
  std::set<std::string> queued;
  {
    auto a = connected(alice);
    // Batches of 100 (within the relay's 256 store operations in flight per sender); the relay is
    // killed in the middle of the fourth batch, while envelopes are being stored.
    for (std::size_t batch = 0; batch < 4; ++batch) {
      for (std::size_t i = 0; i < 100; ++i) a->send(frames[batch * 100 + i]);
      const std::size_t answers = batch < 3 ? 100 : 50;
      for (std::size_t i = 0; i < answers; ++i) {
        auto got = a->receive(std::chrono::seconds(10));
        ASSERT_TRUE(got.text.has_value());
        auto frame = boost::json::parse(*got.text).as_object();
        ASSERT_EQ(frame.at("type"), "queued") << *got.text;
        queued.insert(std::string(frame.at("id").as_string()));
      }
    }
    relay_->signal(SIGKILL);
    // Answers already on the wire count too: they were sent after the commit.
    for (;;) {
      auto got = a->receive(std::chrono::seconds(2));
      if (!got.text) break;
      auto frame = boost::json::parse(*got.text).as_object();
      if (frame.at("type") == "queued") queued.insert(std::string(frame.at("id").as_string()));
    }
  }
  ASSERT_EQ(relay_->wait_exit(std::chrono::seconds(5)), 128 + SIGKILL);
  // Restart on the same data directory.
  relay_ = std::make_unique<ChildProcess>(
      binary_path("agent-mesh-relay"),
      std::vector<std::string>{"--listen", "127.0.0.1:0", "--data-dir", data_dir_.string()});
  port_ = relay_->wait_listening();
  ASSERT_GT(port_, 0);
  relay_id_ = "ws://127.0.0.1:" + std::to_string(port_) + "/relay/ws";
  auto b = connected(bob);
  EXPECT_GE(b->buffered, static_cast<std::int64_t>(queued.size()));
  std::set<std::string> delivered;
  boost::json::array ids;
  for (std::int64_t i = 0; i < b->buffered; ++i) {
    auto got = b->receive();
    ASSERT_TRUE(got.text.has_value());
    const std::string id(boost::json::parse(*got.text).at("id").as_string());
    EXPECT_TRUE(delivered.insert(id).second) << "delivered twice: " << id;
    ids.push_back(boost::json::string(id));
    if (ids.size() == 256) {
      b->send(boost::json::serialize(boost::json::object{{"type", "ack"}, {"ids", ids}}));
      ids.clear();
    }
  }
  if (!ids.empty()) b->send(boost::json::serialize(boost::json::object{{"type", "ack"}, {"ids", ids}}));
  for (const auto& id : queued) EXPECT_TRUE(delivered.contains(id)) << "answered queued but lost: " << id;
  b->send(R"({"type":"ping"})");
  EXPECT_EQ(parse(b->receive()).at("type"), "pong");
  b->close();
  auto again = connected(bob);
  EXPECT_EQ(again->buffered, 0) << "acked envelopes are not delivered again";
}

TEST_F(RelayTest, TlsWithASelfSignedCertificate) {
  const auto dir = std::filesystem::temp_directory_path() / ("relay-tls-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string cert = (dir / "cert.pem").string(), key_file = (dir / "key.pem").string();
  const std::string command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
                              "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout " + key_file +
                              " -out " + cert + " 2>/dev/null";
  ASSERT_EQ(std::system(command.c_str()), 0) << "openssl could not make a certificate";
  start({"--tls-cert", cert, "--tls-key", key_file});
  relay_id_ = "wss://127.0.0.1:" + std::to_string(port_) + "/relay/ws";
  const KeyPair alice = key(1), bob = key(2);
  RelayTestClient a, b;
  ASSERT_TRUE(a.connect(port_, "/relay/ws", cert).ok());
  ASSERT_TRUE(b.connect(port_, "/relay/ws", cert).ok());
  ASSERT_TRUE(a.authenticate(alice, relay_id_).ok()) << "the relay_id is wss://";
  ASSERT_TRUE(b.authenticate(bob, relay_id_).ok());
  const std::string frame = envelope(alice, bob.agent_id());
  a.send(frame);
  EXPECT_EQ(*b.receive().text, frame);
  // A plaintext client gets nowhere on a TLS port.
  RelayTestClient plain;
  EXPECT_FALSE(plain.connect(port_).ok());
  std::filesystem::remove_all(dir);
}

TEST_F(RelayTest, AdminTokenRevokesAndListsAgents) {
  const auto dir = std::filesystem::temp_directory_path() / ("relay-admin-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto token_file = dir / "admin-token";
  std::ofstream(token_file) << "s3cret-admin-token\n";
  start({"--admin-token-file", token_file.string()});
  const KeyPair bob = key(2);
  auto b = connected(bob);
  auto listed = http_request(port_, "GET", "/status?agents=1", "", "Bearer s3cret-admin-token");
  ASSERT_EQ(listed.status, 200) << listed.body;
  const auto agents = boost::json::parse(listed.body).at("agents").as_array();
  ASSERT_EQ(agents.size(), 1u);
  EXPECT_EQ(agents[0].at("agent_id").as_string(), bob.agent_id().str());
  EXPECT_EQ(http_request(port_, "GET", "/status?agents=1", "", "Bearer wrong").status, 401);
  const std::string admin_revocation = R"({"agent_id":")" + bob.agent_id().str() +
                                       R"(","reason":"lost laptop","timestamp":)" + std::to_string(now_ms()) + "}";
  EXPECT_EQ(http_request(port_, "POST", "/revocations", admin_revocation, "Bearer wrong").status, 401);
  EXPECT_EQ(http_request(port_, "POST", "/revocations", admin_revocation).status, 400) << "unsigned needs the token";
  auto revoked = http_request(port_, "POST", "/revocations", admin_revocation, "Bearer s3cret-admin-token");
  EXPECT_EQ(revoked.status, 200) << revoked.body;
  EXPECT_EQ(b->receive().close, 4003);
  std::filesystem::remove_all(dir);
}

TEST(RelayConfigCli, UnknownConfigKeyIsNamed) {
  const auto dir = std::filesystem::temp_directory_path() / ("relay-cfg-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto file = dir / "relay.toml";
  std::ofstream(file) << "listen = \"127.0.0.1:0\"\nbogus_key = 1\n";
  ChildProcess relay(binary_path("agent-mesh-relay"), {"--config", file.string()}, true);
  auto message = relay.read_line(std::chrono::seconds(10));
  ASSERT_TRUE(message.has_value());
  EXPECT_NE(message->find("bogus_key"), std::string::npos) << *message;
  EXPECT_NE(relay.wait_exit(std::chrono::seconds(10)), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace agent_mesh::test

namespace agent_mesh::test {
namespace {

TEST_F(RelayTest, ConnectionsOverThePerIpRateAreAnswered429) {
  start({"--ip-connect-rate", "1"});
  // The bucket holds one connection (burst = rate); the rest within the same second are refused
  // with a JSON 429, not a bare reset.
  int refused = 0;
  std::string body;
  for (int i = 0; i < 5; ++i) {
    auto reply = http_request(port_, "GET", "/health");
    if (reply.status == 429) {
      ++refused;
      body = reply.body;
    }
  }
  ASSERT_GE(refused, 1);
  EXPECT_NE(body.find("\"rate_limited\""), std::string::npos) << body;
}

}  // namespace
}  // namespace agent_mesh::test
