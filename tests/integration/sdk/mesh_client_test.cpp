// MeshClient and MeshAgent end to end through the real agent-mesh-relay binary: encrypted requests,
// streams, cancellation reaching the handler, ACL and capability refusals, handlers that call
// other agents, offline targets, a responder restart (no_session and the transparent retry), a relay
// restart, replacement (4009) and plaintext peers. Deadlines everywhere, no sleeps.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/json.hpp>
#include <filesystem>
#include <future>
#include <thread>

#include "../child_process.hpp"
#include "agent_mesh/mesh_agent.hpp"
#include "agent_mesh/mesh_client.hpp"

namespace agent_mesh::test {
namespace {

using namespace std::chrono_literals;

KeyPair key(std::uint8_t b) { return *KeyPair::from_seed(Bytes(32, b)); }

AclPolicy allow(const AgentId& source, const AgentId& target, const std::string& capability = "*") {
  AclRule rule;
  rule.source = AclSource::agent(source);
  rule.target = target;
  rule.allowed_capabilities = {capability};
  return AclPolicy::from_rules({rule}).value();
}

class MeshClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_dir_ = std::filesystem::temp_directory_path() /
                ("sdk-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::create_directories(data_dir_);
    start_relay("127.0.0.1:0");
  }
  void start_relay(const std::string& listen) {
    relay_ = std::make_unique<ChildProcess>(binary_path("agent-mesh-relay"),
                                            std::vector<std::string>{"--listen", listen, "--data-dir", data_dir_.string(),
                                                                     // Tests connect many clients from one IP at once.
                                                                     "--ip-connect-rate", "100000"});
    port_ = relay_->wait_listening();
    ASSERT_GT(port_, 0);
    url_ = "ws://127.0.0.1:" + std::to_string(port_) + "/relay/ws";
  }
  void TearDown() override {
    relay_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(data_dir_, ignored);
  }
  ClientOptions options() const {
    ClientOptions o;
    o.relay_urls = {url_};
    o.reconnect_initial = 20ms;
    o.reconnect_max = 200ms;
    o.default_timeout = 5s;
    return o;
  }
  std::unique_ptr<MeshAgent> agent(const KeyPair& k, ClientOptions o) {
    auto a = std::make_unique<MeshAgent>(k, std::move(o));
    EXPECT_TRUE(a->wait_connected(5s).ok());
    return a;
  }
  std::unique_ptr<MeshAgent> agent(const KeyPair& k) { return agent(k, options()); }

  // Bob serves echo (unary), count (stream) and wait (until cancelled) to Alice.
  std::unique_ptr<MeshAgent> bob_agent(ClientOptions o) {
    auto bob = std::make_unique<MeshAgent>(bob_key_, std::move(o));
    bob->set_acl(allow(alice_key_.agent_id(), bob_key_.agent_id()));
    bob->handle("echo", [this](const IncomingCall& call) -> Result<boost::json::value> {
      ++echo_calls_;
      return boost::json::value{{"agent", "bob"}, {"echo", call.body}, {"from", call.from.str()}};
    });
    bob->handle_stream("count", [](const IncomingCall& call, const ChunkWriter& write) -> Status {
      const auto n = call.body.as_object().at("n").as_int64();
      for (std::int64_t i = 0; i < n; ++i) AGENT_MESH_TRY(write(boost::json::value(i)));
      return {};
    });
    bob->handle("wait", [this](const IncomingCall& call) -> Result<boost::json::value> {
      // Shared: the token may fire after this handler has returned.
      auto stopped = std::make_shared<std::promise<void>>();
      auto stopped_future = stopped->get_future();
      call.cancelled.on_cancel([stopped] { stopped->set_value(); });
      started_waiting_.set_value();
      if (stopped_future.wait_for(10s) == std::future_status::ready) handler_saw_cancel_ = true;
      handler_done_.set_value();
      return boost::json::value("late");
    });
    bob->handle("fail", [](const IncomingCall&) -> Result<boost::json::value> {
      return fail(Errc::agent_error, "bob could not do it");
    });
    EXPECT_TRUE(bob->wait_connected(5s).ok());
    return bob;
  }
  std::unique_ptr<MeshAgent> bob_agent() { return bob_agent(options()); }

  static inline int counter_ = 0;
  std::filesystem::path data_dir_;
  std::unique_ptr<ChildProcess> relay_;
  int port_ = 0;
  std::string url_;
  KeyPair alice_key_ = key(1);
  KeyPair bob_key_ = key(2);
  KeyPair carol_key_ = key(3);
  std::atomic<int> echo_calls_{0};
  std::promise<void> started_waiting_;
  std::promise<void> handler_done_;
  std::atomic<bool> handler_saw_cancel_{false};
};

TEST_F(MeshClientTest, EncryptedRequestRoundTrip) {
  auto bob = bob_agent();
  MeshClient alice(alice_key_, options());
  auto reply = alice.request(bob_key_.agent_id(), "echo", {{"message", "hello from alice"}}).get();
  ASSERT_TRUE(reply.ok()) << reply.error().describe();
  EXPECT_TRUE(reply->encrypted);
  EXPECT_EQ(reply->body.at("echo").at("message"), "hello from alice");
  EXPECT_EQ(reply->body.at("from"), boost::json::value(alice_key_.agent_id().str()));
  // A warm request reuses the session.
  auto again = alice.request(bob_key_.agent_id(), "echo", {{"n", 2}}).get();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(alice.status().sessions, 1u);
}

TEST_F(MeshClientTest, StreamDeliversChunksInOrder) {
  auto bob = bob_agent();
  MeshClient alice(alice_key_, options());
  auto stream = alice.stream(bob_key_.agent_id(), "count", {{"n", 50}});
  for (std::int64_t i = 0; i < 50; ++i) {
    auto chunk = stream.next();
    ASSERT_TRUE(chunk.ok()) << chunk.error().describe();
    ASSERT_TRUE(chunk->has_value());
    EXPECT_EQ(**chunk, boost::json::value(i));
  }
  auto end = stream.next();
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(end->has_value());
}

TEST_F(MeshClientTest, CancelReachesTheRemoteHandler) {
  auto bob = bob_agent();
  MeshClient alice(alice_key_, options());
  CancelToken cancel;
  auto pending = alice.request(bob_key_.agent_id(), "wait", {}, RequestOptions{.timeout = 10s, .cancel = cancel});
  ASSERT_EQ(started_waiting_.get_future().wait_for(5s), std::future_status::ready);
  cancel.cancel();
  auto reply = pending.wait_for(5s);
  ASSERT_TRUE(reply.has_value());
  ASSERT_FALSE(reply->ok());
  EXPECT_EQ(reply->error().code, Errc::cancelled);
  ASSERT_EQ(handler_done_.get_future().wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(handler_saw_cancel_);
}

TEST_F(MeshClientTest, RefusalsCarryProtocolCodes) {
  auto bob = bob_agent();
  MeshClient alice(alice_key_, options());
  MeshClient carol(carol_key_, options());
  auto denied = carol.request(bob_key_.agent_id(), "echo", {}).get();
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.error().code, Errc::acl_denied);
  auto unknown = alice.request(bob_key_.agent_id(), "nothing", {}).get();
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, Errc::unknown_capability);
  auto failed = alice.request(bob_key_.agent_id(), "fail", {}).get();
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code, Errc::agent_error);
  EXPECT_EQ(failed.error().message, "bob could not do it");
  auto bad_name = alice.request(bob_key_.agent_id(), "no spaces", {}).get();
  ASSERT_FALSE(bad_name.ok());
  EXPECT_EQ(bad_name.error().code, Errc::bad_request);
  bob->set_revoked({alice_key_.agent_id()});
  auto revoked = alice.request(bob_key_.agent_id(), "echo", {}).get();
  ASSERT_FALSE(revoked.ok());
  EXPECT_EQ(revoked.error().code, Errc::revoked);
}

TEST_F(MeshClientTest, DeadlineIsSentAndEnforced) {
  auto bob = bob_agent();
  MeshClient alice(alice_key_, options());
  auto reply = alice.request(bob_key_.agent_id(), "wait", {}, RequestOptions{.timeout = 300ms, .cancel = std::nullopt}).get();
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.error().code, Errc::timeout);
  // Bob's handler learns that the caller stopped waiting (timeout_ms travelled with the request).
  ASSERT_EQ(handler_done_.get_future().wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(handler_saw_cancel_);
}

TEST_F(MeshClientTest, HandlersRunConcurrentlyAndMayCallOtherAgents) {
  auto bob = bob_agent();
  auto carol = agent(carol_key_);
  carol->set_acl(allow(alice_key_.agent_id(), carol_key_.agent_id()));
  // Carol's handler asks Bob (Bob allows Alice only, so Carol calls as... itself: add a rule).
  bob->set_acl([&] {
    auto policy = allow(alice_key_.agent_id(), bob_key_.agent_id());
    policy.add(allow(carol_key_.agent_id(), bob_key_.agent_id()));
    return policy;
  }());
  MeshAgent* carol_raw = carol.get();
  const AgentId bob_id = bob_key_.agent_id();
  carol->handle("relay-echo", [carol_raw, bob_id](const IncomingCall& call) -> Result<boost::json::value> {
    auto inner = carol_raw->request(bob_id, "echo", call.body).get();
    if (!inner) return inner.error();
    return boost::json::value{{"via", "carol"}, {"inner", inner->body}};
  });
  MeshClient alice(alice_key_, options());
  std::vector<Pending<Response>> pendings;
  for (int i = 0; i < 20; ++i) {
    pendings.push_back(alice.request(carol_key_.agent_id(), "relay-echo", {{"i", i}}));
  }
  for (int i = 0; i < 20; ++i) {
    auto reply = pendings[static_cast<std::size_t>(i)].get();
    ASSERT_TRUE(reply.ok()) << reply.error().describe();
    EXPECT_EQ(reply->body.at("inner").at("echo").at("i"), i);
  }
}

TEST_F(MeshClientTest, OfflineTargetIsQueuedThenAnswered) {
  MeshClient alice(alice_key_, options());
  ASSERT_TRUE(alice.wait_connected(5s).ok());
  auto pending = alice.request(bob_key_.agent_id(), "echo", {{"late", true}}, RequestOptions{.timeout = 10s, .cancel = std::nullopt});
  // Bob connects after the handshake envelope was stored by the relay.
  EXPECT_FALSE(pending.wait_for(200ms).has_value());
  auto bob = bob_agent();
  auto reply = pending.get();
  ASSERT_TRUE(reply.ok()) << reply.error().describe();
  EXPECT_EQ(reply->body.at("echo").at("late"), true);
}

TEST_F(MeshClientTest, ResponderRestartForcesNoSessionAndATransparentRetry) {
  auto bob = bob_agent();
  MeshClient alice(alice_key_, options());
  ASSERT_TRUE(alice.request(bob_key_.agent_id(), "echo", {}).get().ok());
  bob.reset();  // Bob's sessions die with it
  bob = bob_agent();
  auto reply = alice.request(bob_key_.agent_id(), "echo", {{"after", "restart"}}).get();
  ASSERT_TRUE(reply.ok()) << reply.error().describe();
  EXPECT_EQ(reply->body.at("echo").at("after"), "restart");
}

TEST_F(MeshClientTest, RelayRestartMidTraffic) {
  auto bob = bob_agent();
  MeshClient alice(alice_key_, options());
  ASSERT_TRUE(alice.request(bob_key_.agent_id(), "echo", {}).get().ok());
  const int port = port_;
  relay_.reset();  // SIGKILL: both agents lose the connection
  start_relay("127.0.0.1:" + std::to_string(port));
  ASSERT_EQ(port_, port);
  // Both reconnect on their own; the sessions survive (the relay is only a pipe).
  auto reply = alice.request(bob_key_.agent_id(), "echo", {{"after", "relay restart"}}, RequestOptions{.timeout = 10s, .cancel = std::nullopt}).get();
  ASSERT_TRUE(reply.ok()) << reply.error().describe();
  EXPECT_EQ(reply->body.at("echo").at("after"), "relay restart");
}

TEST_F(MeshClientTest, FailsOverToTheNextRelayUrl) {
  ClientOptions o = options();
  o.relay_urls = {"ws://127.0.0.1:1/relay/ws", url_};
  MeshClient alice(alice_key_, o);
  EXPECT_TRUE(alice.wait_connected(5s).ok());
  EXPECT_EQ(alice.status().relay_url, url_);
}

TEST_F(MeshClientTest, ASecondProcessWithTheSameIdentityReplacesTheFirst) {
  std::promise<ConnectionEvent> gave_up;
  std::atomic<bool> reported{false};
  ClientOptions o = options();
  o.on_connection = [&](const ConnectionEvent& event) {
    if (event.kind == ConnectionEvent::Kind::gave_up && !reported.exchange(true)) gave_up.set_value(event);
  };
  MeshClient first(alice_key_, o);
  ASSERT_TRUE(first.wait_connected(5s).ok());
  MeshClient second(alice_key_, options());
  ASSERT_TRUE(second.wait_connected(5s).ok());
  auto future = gave_up.get_future();
  ASSERT_EQ(future.wait_for(5s), std::future_status::ready);
  const auto event = future.get();
  EXPECT_EQ(event.close_code, close_code::replaced);
  EXPECT_NE(event.reason.find("another process"), std::string::npos) << event.reason;
  auto refused = first.request(bob_key_.agent_id(), "echo", {}).get();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Errc::unreachable);
}

TEST_F(MeshClientTest, PlaintextPeersConfiguredOnBothEnds) {
  ClientOptions bob_options = options();
  bob_options.plaintext_peers = {alice_key_.agent_id()};
  auto bob = bob_agent(bob_options);
  ClientOptions alice_options = options();
  alice_options.plaintext_peers = {bob_key_.agent_id()};
  MeshClient alice(alice_key_, alice_options);
  auto reply = alice.request(bob_key_.agent_id(), "echo", {{"clear", 1}}).get();
  ASSERT_TRUE(reply.ok()) << reply.error().describe();
  EXPECT_FALSE(reply->encrypted);
  EXPECT_EQ(reply->body.at("echo").at("clear"), 1);
  // Without the setting on Alice's side the request is encrypted (never downgraded at run time).
  MeshClient alice2(key(9), options());
  bob->set_acl(allow(key(9).agent_id(), bob_key_.agent_id()));
  auto encrypted = alice2.request(bob_key_.agent_id(), "echo", {}).get();
  ASSERT_TRUE(encrypted.ok()) << encrypted.error().describe();
  EXPECT_TRUE(encrypted->encrypted);
}

TEST_F(MeshClientTest, ManyThreadsShareOneClient) {
  auto bob = bob_agent();
  MeshClient alice(alice_key_, options());
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        auto reply = alice.request(bob_key_.agent_id(), "echo", {{"t", t}, {"i", i}}).get();
        if (reply.ok() && reply->body.at("echo").at("i") == i) ++ok;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(ok.load(), 200);
  EXPECT_EQ(echo_calls_.load(), 200);
}

TEST_F(MeshClientTest, CloseFailsWhatIsInFlightAndRefusesNewWork) {
  auto bob = bob_agent();
  auto alice = std::make_unique<MeshClient>(alice_key_, options());
  // A warm session first: a cancel is sent encrypted, which needs the handshake's answer; with a cold
  // request the close can come before it (seen under TSan), and the cancel cannot be sent.
  ASSERT_TRUE(alice->request(bob_key_.agent_id(), "echo", {}).get().ok());
  auto pending = alice->request(bob_key_.agent_id(), "wait", {}, RequestOptions{.timeout = 10s, .cancel = std::nullopt});
  ASSERT_EQ(started_waiting_.get_future().wait_for(5s), std::future_status::ready);
  alice->close();
  auto reply = pending.wait_for(2s);
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->error().code, Errc::cancelled);
  auto after = alice->request(bob_key_.agent_id(), "echo", {}).get();
  EXPECT_EQ(after.error().code, Errc::cancelled);
  alice.reset();
  EXPECT_EQ(handler_done_.get_future().wait_for(5s), std::future_status::ready);
}

}  // namespace
}  // namespace agent_mesh::test
