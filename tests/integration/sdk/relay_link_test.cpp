// RelayLink against the real agent-mesh-relay binary (ephemeral loopback port, temporary data
// directory): connecting, live and stored delivery with acks, frames queued before the welcome,
// resuming after a relay restart, fail-over to the next URL, replacement (4009) and revocation
// (4003), a relay_id mismatch, a relay that goes silent, wss:// with a private CA, and close().
// HostileRelay (which forwards whatever a test injects) stands in for a relay that sends control
// frames the real one never would; no relay at all is needed for the queue bound and the wake-up.
// Every wait has a deadline; nothing sleeps.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <boost/json.hpp>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <numeric>
#include <regex>

#include "../child_process.hpp"
#include "../relay_test_client.hpp"
#include "agent_mesh/envelope.hpp"
#include "agent_mesh/key_lifecycle.hpp"
#include "hostile_relay.hpp"
#include "sdk/relay_link.hpp"

namespace agent_mesh::test {
namespace {

using namespace std::chrono_literals;
using sdk::RelayLink;
using sdk::RelayLinkHandlers;
using sdk::RelayLinkOptions;
using Kind = ConnectionEvent::Kind;

constexpr auto kDeadline = 10s;

KeyPair key(std::uint8_t b) { return *KeyPair::from_seed(Bytes(32, b)); }

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A signed plaintext request: enough for the relay's routing checks, which is all a link needs.
std::string envelope(const KeyPair& from, const AgentId& to, const std::string& text = "hi") {
  Envelope env;
  env.id = Uuid::generate();
  env.from = from.agent_id();
  env.to = to;
  env.msg_type = MsgType::request;
  env.timestamp = now_ms();
  env.payload = boost::json::object{{"capability", "echo"}, {"body", text}};
  env.sign(from);
  // Not in JCS form on purpose: the link must hand up the relay's bytes unchanged.
  return "{ " + env.serialize().substr(1);
}

std::string id_of(const std::string& frame) {
  return std::string(boost::json::parse(frame).as_object().at("id").as_string());
}

// Records what one RelayLink reports, for the test thread to wait on.
class Probe {
 public:
  struct State {
    std::vector<ConnectionEvent> events;
    std::vector<std::string> envelopes;
    std::vector<std::string> queued;  // ids
    std::vector<Undeliverable> undeliverable;
    std::vector<std::string> logs;  // "event detail"

    [[nodiscard]] std::size_t count(Kind kind) const {
      return static_cast<std::size_t>(std::count_if(events.begin(), events.end(), [&](const auto& e) { return e.kind == kind; }));
    }
    [[nodiscard]] std::vector<ConnectionEvent> of(Kind kind) const {
      std::vector<ConnectionEvent> out;
      std::copy_if(events.begin(), events.end(), std::back_inserter(out), [&](const auto& e) { return e.kind == kind; });
      return out;
    }
    [[nodiscard]] bool logged(std::string_view event) const {
      return std::any_of(logs.begin(), logs.end(), [&](const std::string& line) { return line.rfind(event, 0) == 0; });
    }
  };

  RelayLinkHandlers handlers() {
    RelayLinkHandlers h;
    h.on_state = [this](const ConnectionEvent& event) { record([&](State& s) { s.events.push_back(event); }); };
    h.on_envelope = [this](std::string_view frame) { record([&](State& s) { s.envelopes.emplace_back(frame); }); };
    h.on_queued = [this](const Queued& queued) { record([&](State& s) { s.queued.push_back(queued.id.to_string()); }); };
    h.on_undeliverable = [this](const Undeliverable& u) { record([&](State& s) { s.undeliverable.push_back(u); }); };
    h.on_log = [this](LogLevel, std::string_view event, std::string_view detail) {
      record([&](State& s) { s.logs.push_back(std::string(event) + " " + std::string(detail)); });
    };
    return h;
  }

  // Waits until `predicate(state)` holds (checked under the lock).
  template <class Predicate>
  bool wait(Predicate predicate, std::chrono::milliseconds timeout = kDeadline) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return predicate(static_cast<const State&>(state_)); });
  }
  bool wait_events(Kind kind, std::size_t count, std::chrono::milliseconds timeout = kDeadline) {
    return wait([&](const State& s) { return s.count(kind) >= count; }, timeout);
  }
  bool wait_envelopes(std::size_t count) {
    return wait([&](const State& s) { return s.envelopes.size() >= count; });
  }

  State snapshot() {
    std::lock_guard lock(mutex_);
    return state_;
  }
  std::vector<ConnectionEvent> events() { return snapshot().events; }
  std::vector<ConnectionEvent> events(Kind kind) { return snapshot().of(kind); }
  std::vector<std::string> envelopes() { return snapshot().envelopes; }

 private:
  template <class F>
  void record(F f) {
    {
      std::lock_guard lock(mutex_);
      f(state_);
    }
    changed_.notify_all();
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  State state_;
};

// Runs `f` on the link thread and returns its result (send(), connected() are link-thread only).
template <class F>
auto on_link(RelayLink& link, F f) -> decltype(f()) {
  using T = decltype(f());
  auto promise = std::make_shared<std::promise<T>>();
  auto future = promise->get_future();
  link.post([promise, f = std::move(f)]() mutable {
    if constexpr (std::is_void_v<T>) {
      f();
      promise->set_value();
    } else {
      promise->set_value(f());
    }
  });
  if (future.wait_for(kDeadline) != std::future_status::ready) {
    ADD_FAILURE() << "the link thread did not run a posted function";
    if constexpr (!std::is_void_v<T>) return T{};
  }
  return future.get();
}

class RelayLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_dir_ = std::filesystem::temp_directory_path() /
                ("relay-link-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::create_directories(data_dir_);
  }
  void TearDown() override {
    relay_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(data_dir_, ignored);
  }
  void start_relay(const std::string& listen = "127.0.0.1:0", std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--listen", listen, "--data-dir", data_dir_.string(),
                                  // Tests connect several links from one IP at once.
                                  "--ip-connect-rate", "100000"};
    args.insert(args.end(), extra.begin(), extra.end());
    relay_ = std::make_unique<ChildProcess>(binary_path("agent-mesh-relay"), args);
    port_ = relay_->wait_listening();
    ASSERT_GT(port_, 0) << "relay did not print its listening line";
    url_ = "ws://127.0.0.1:" + std::to_string(port_) + "/relay/ws";
  }
  RelayLinkOptions options(const KeyPair& k, std::vector<std::string> urls = {}) const {
    RelayLinkOptions o{.identity = k, .urls = {}, .expected_relay_id = std::nullopt, .ca_file = {}};
    o.urls = urls.empty() ? std::vector<std::string>{url_} : std::move(urls);
    o.connect_timeout = 2s;
    o.reconnect_initial = 20ms;
    o.reconnect_max = 200ms;
    return o;
  }
  // A started link and its probe (the probe outlives the link: it is declared first by callers).
  std::unique_ptr<RelayLink> link(Probe& probe, RelayLinkOptions o) {
    auto l = std::make_unique<RelayLink>(std::move(o), probe.handlers());
    l->start();
    return l;
  }
  std::unique_ptr<RelayLink> connected_link(Probe& probe, RelayLinkOptions o) {
    auto l = link(probe, std::move(o));
    EXPECT_TRUE(probe.wait_events(Kind::connected, 1)) << "no connected event";
    return l;
  }

  static inline int counter_ = 0;
  std::filesystem::path data_dir_;
  std::unique_ptr<ChildProcess> relay_;
  int port_ = 0;
  std::string url_;
  KeyPair alice_ = key(1);
  KeyPair bob_ = key(2);
};

TEST_F(RelayLinkTest, ConnectsAndReportsConnected) {
  start_relay();
  Probe probe;
  auto l = connected_link(probe, options(alice_));
  const auto events = probe.events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, Kind::connected);
  EXPECT_EQ(events[0].relay_url, url_);
  EXPECT_FALSE(events[0].resumed) << "the first connection authenticates with a challenge";
  EXPECT_EQ(events[0].buffered, 0);
  EXPECT_FALSE(l->on_link_thread());
  EXPECT_TRUE(on_link(*l, [&] { return l->on_link_thread() && l->connected(); }));
  EXPECT_EQ(on_link(*l, [&] { return l->current_url(); }), url_);
  // No secret reaches the log: nothing shaped like a resume token (43 base64url characters) or a
  // signature (86).
  const std::regex secret("[A-Za-z0-9_-]{43,}");
  for (const auto& line : probe.snapshot().logs) EXPECT_FALSE(std::regex_search(line, secret)) << line;
  EXPECT_FALSE(probe.snapshot().logs.empty());
}

TEST_F(RelayLinkTest, TwoLinksExchangeAnEnvelopeByteForByte) {
  start_relay();
  Probe a_probe, b_probe;
  auto a = connected_link(a_probe, options(alice_));
  auto b = connected_link(b_probe, options(bob_));
  const std::string frame = envelope(alice_, bob_.agent_id());
  EXPECT_TRUE(on_link(*a, [&] { return a->send(frame); }));
  ASSERT_TRUE(b_probe.wait_envelopes(1));
  EXPECT_EQ(b_probe.envelopes().at(0), frame);
  // And back, on the same connections.
  const std::string reply = envelope(bob_, alice_.agent_id(), "back");
  EXPECT_TRUE(on_link(*b, [&] { return b->send(reply); }));
  ASSERT_TRUE(a_probe.wait_envelopes(1));
  EXPECT_EQ(a_probe.envelopes().at(0), reply);
  EXPECT_TRUE(a_probe.snapshot().queued.empty()) << "a live delivery gets no frame";
}

TEST_F(RelayLinkTest, FramesSentBeforeTheWelcomeGoOutAfterItInOrder) {
  start_relay();
  Probe b_probe, a_probe;
  auto b = connected_link(b_probe, options(bob_));
  std::vector<std::string> frames;
  for (int i = 0; i < 3; ++i) frames.push_back(envelope(alice_, bob_.agent_id(), "early " + std::to_string(i)));
  RelayLink a(options(alice_), a_probe.handlers());
  // Posted before start(): it runs on the link thread before the first dial can even complete.
  std::promise<std::vector<bool>> sent;
  a.post([&] {
    std::vector<bool> results{a.connected()};
    for (const auto& f : frames) results.push_back(a.send(f));
    sent.set_value(results);
  });
  a.start();
  auto future = sent.get_future();
  ASSERT_EQ(future.wait_for(kDeadline), std::future_status::ready);
  EXPECT_EQ(future.get(), (std::vector<bool>{false, true, true, true}));
  ASSERT_TRUE(b_probe.wait_envelopes(3));
  EXPECT_EQ(b_probe.envelopes(), frames);
  EXPECT_EQ(a_probe.events(Kind::connected).size(), 1u);
}

TEST_F(RelayLinkTest, StoredEnvelopesAreDeliveredThenAckedSoNotRedelivered) {
  start_relay();
  Probe a_probe;
  auto a = connected_link(a_probe, options(alice_));
  std::vector<std::string> frames;
  for (int i = 0; i < 5; ++i) frames.push_back(envelope(alice_, bob_.agent_id(), "stored " + std::to_string(i)));
  for (const auto& f : frames) EXPECT_TRUE(on_link(*a, [&] { return a->send(f); }));
  ASSERT_TRUE(a_probe.wait([](const Probe::State& s) { return s.queued.size() >= 5; }));
  std::vector<std::string> ids;
  for (const auto& f : frames) ids.push_back(id_of(f));
  EXPECT_EQ(a_probe.snapshot().queued, ids) << "queued answers name the envelopes, in order";

  Probe b_probe;
  {
    auto b = link(b_probe, options(bob_));
    ASSERT_TRUE(b_probe.wait_events(Kind::connected, 1));
    EXPECT_EQ(b_probe.events(Kind::connected).at(0).buffered, 5);
    ASSERT_TRUE(b_probe.wait_envelopes(5));
    EXPECT_EQ(b_probe.envelopes(), frames);
    // The acks went out without a close: after a frame that left later has come back, the relay
    // has read them (one connection's frames are handled in order).
    ASSERT_TRUE(b_probe.wait([](const Probe::State& s) { return s.logged("relay.acked"); }));
    const std::string marker = envelope(bob_, bob_.agent_id(), "marker");
    EXPECT_TRUE(on_link(*b, [&] { return b->send(marker); }));
    ASSERT_TRUE(b_probe.wait_envelopes(6));
    EXPECT_EQ(b_probe.envelopes().back(), marker);
    // A second process as bob replaces this link: its welcome counts what is still stored.
    Probe again_probe;
    auto again = link(again_probe, options(bob_));
    ASSERT_TRUE(again_probe.wait_events(Kind::connected, 1));
    EXPECT_EQ(again_probe.events(Kind::connected).at(0).buffered, 0) << "acked envelopes are not delivered again";
    EXPECT_TRUE(b_probe.wait_events(Kind::gave_up, 1));
  }
}

TEST_F(RelayLinkTest, ManyStoredEnvelopesAreAckedInBatchesOfAtMost256) {
  start_relay("127.0.0.1:0", {"--rate-limit", "100000", "--rate-burst", "100000"});
  constexpr std::size_t kCount = 300;
  Probe a_probe;
  auto a = connected_link(a_probe, options(alice_));
  std::vector<std::string> frames;
  for (std::size_t i = 0; i < kCount; ++i) frames.push_back(envelope(alice_, bob_.agent_id(), std::to_string(i)));
  // In two halves: the relay refuses more than 256 stores in flight per connection.
  for (std::size_t half = 0; half < 2; ++half) {
    EXPECT_TRUE(on_link(*a, [&] {
      bool all = true;
      for (std::size_t i = half * kCount / 2; i < (half + 1) * kCount / 2; ++i) all = a->send(frames[i]) && all;
      return all;
    }));
    ASSERT_TRUE(a_probe.wait([&](const Probe::State& s) { return s.queued.size() >= (half + 1) * kCount / 2; }));
  }
  ASSERT_TRUE(a_probe.snapshot().undeliverable.empty());

  Probe b_probe;
  auto b = link(b_probe, options(bob_));
  ASSERT_TRUE(b_probe.wait_events(Kind::connected, 1));
  EXPECT_EQ(b_probe.events(Kind::connected).at(0).buffered, static_cast<std::int64_t>(kCount));
  ASSERT_TRUE(b_probe.wait_envelopes(kCount));
  EXPECT_EQ(b_probe.envelopes(), frames);
  // Every ack frame names at most 256 IDs, and together they name every stored envelope.
  std::vector<std::size_t> batches;
  ASSERT_TRUE(b_probe.wait([&](const Probe::State& s) {
    batches.clear();
    for (const auto& line : s.logs) {
      if (line.rfind("relay.acked ", 0) == 0) batches.push_back(std::stoul(line.substr(std::string("relay.acked ").size())));
    }
    return std::accumulate(batches.begin(), batches.end(), std::size_t{0}) >= kCount;
  }));
  EXPECT_EQ(std::accumulate(batches.begin(), batches.end(), std::size_t{0}), kCount);
  for (const auto n : batches) EXPECT_LE(n, 256u);
  EXPECT_GE(batches.size(), 2u);
  const std::string marker = envelope(bob_, bob_.agent_id(), "marker");
  EXPECT_TRUE(on_link(*b, [&] { return b->send(marker); }));
  ASSERT_TRUE(b_probe.wait_envelopes(kCount + 1));
  Probe again_probe;
  auto again = link(again_probe, options(bob_));
  ASSERT_TRUE(again_probe.wait_events(Kind::connected, 1));
  EXPECT_EQ(again_probe.events(Kind::connected).at(0).buffered, 0);
}

TEST_F(RelayLinkTest, ReconnectsAfterARelayRestartWithTheResumeToken) {
  start_relay();
  Probe probe;
  auto l = connected_link(probe, options(alice_));
  EXPECT_FALSE(probe.events(Kind::connected).at(0).resumed);
  const int port = port_;
  relay_->signal(SIGTERM);  // drain: every connection is closed with 1001, resume tokens are kept
  ASSERT_NE(relay_->wait_exit(kDeadline), -1) << "the relay did not drain";
  ASSERT_TRUE(probe.wait_events(Kind::disconnected, 1));
  const auto lost = probe.events(Kind::disconnected).at(0);
  EXPECT_EQ(lost.close_code, close_code::draining);
  EXPECT_TRUE(lost.will_retry);
  EXPECT_LE(lost.retry_in, 20ms);
  start_relay("127.0.0.1:" + std::to_string(port));
  ASSERT_EQ(port_, port);
  ASSERT_TRUE(probe.wait_events(Kind::connected, 2));
  const auto back = probe.events(Kind::connected).at(1);
  EXPECT_TRUE(back.resumed) << "the welcome came without a challenge";
  EXPECT_EQ(back.relay_url, url_);
  EXPECT_TRUE(on_link(*l, [&] { return l->connected(); }));
}

TEST_F(RelayLinkTest, FailsOverToTheNextUrl) {
  start_relay();
  const std::string closed = "ws://127.0.0.1:1/relay/ws";
  Probe probe;
  auto l = connected_link(probe, options(alice_, {closed, url_}));
  const auto events = probe.events();
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[0].kind, Kind::disconnected);
  EXPECT_EQ(events[0].relay_url, closed);
  EXPECT_TRUE(events[0].will_retry);
  EXPECT_NE(events[0].reason.find("cannot connect"), std::string::npos) << events[0].reason;
  EXPECT_EQ(events.back().kind, Kind::connected);
  EXPECT_EQ(events.back().relay_url, url_);
  EXPECT_EQ(on_link(*l, [&] { return l->current_url(); }), url_);
}

TEST_F(RelayLinkTest, ASecondLinkWithTheSameIdentityReplacesTheFirstForGood) {
  start_relay();
  Probe first_probe, second_probe;
  auto first = connected_link(first_probe, options(alice_));
  auto second = connected_link(second_probe, options(alice_));
  ASSERT_TRUE(first_probe.wait_events(Kind::gave_up, 1));
  const auto gave_up = first_probe.events(Kind::gave_up).at(0);
  EXPECT_EQ(gave_up.close_code, close_code::replaced);
  EXPECT_FALSE(gave_up.will_retry);
  EXPECT_NE(gave_up.reason.find("another process"), std::string::npos) << gave_up.reason;
  EXPECT_FALSE(on_link(*first, [&] { return first->send(envelope(alice_, bob_.agent_id())); }))
      << "a link that gave up refuses frames";
  // Had the first link dialled again, it would have replaced the second one in turn.
  EXPECT_FALSE(second_probe.wait(
      [](const Probe::State& s) { return s.count(Kind::disconnected) + s.count(Kind::gave_up) > 0; }, 500ms));
  EXPECT_EQ(first_probe.events(Kind::connected).size(), 1u);
  EXPECT_TRUE(on_link(*second, [&] { return second->connected(); }));
}

TEST_F(RelayLinkTest, ARevokedAgentGivesUp) {
  start_relay();
  Probe probe;
  auto l = connected_link(probe, options(bob_));
  Revocation revocation;
  revocation.agent_id = bob_.agent_id();
  revocation.reason = "key compromised";
  revocation.timestamp = now_ms();
  revocation.sign(bob_);
  auto posted = http_request(port_, "POST", "/revocations", revocation.serialize());
  ASSERT_EQ(posted.status, 200) << posted.body;
  ASSERT_TRUE(probe.wait_events(Kind::gave_up, 1));
  const auto gave_up = probe.events(Kind::gave_up).at(0);
  EXPECT_EQ(gave_up.close_code, close_code::revoked);
  EXPECT_NE(gave_up.reason.find("revoked"), std::string::npos) << gave_up.reason;
  EXPECT_EQ(probe.events(Kind::connected).size(), 1u);
  // Dialling again: the relay answers the hello with an error frame and 4003, and the link stops.
  Probe again_probe;
  auto again = link(again_probe, options(bob_));
  ASSERT_TRUE(again_probe.wait_events(Kind::gave_up, 1));
  const auto refused = again_probe.events(Kind::gave_up).at(0);
  EXPECT_EQ(refused.close_code, close_code::revoked);
  EXPECT_TRUE(again_probe.events(Kind::connected).empty());
  EXPECT_TRUE(again_probe.wait([](const Probe::State& s) { return s.logged("relay.error revoked"); }))
      << "the relay's error frame is reported with its code";
}

TEST_F(RelayLinkTest, ARelayIdMismatchNeverAuthenticates) {
  start_relay();
  Probe probe;
  auto o = options(alice_);
  o.expected_relay_id = "ws://127.0.0.1:1/relay/ws";
  auto l = link(probe, o);
  ASSERT_TRUE(probe.wait_events(Kind::disconnected, 2)) << "it keeps retrying, with backoff";
  for (const auto& event : probe.events(Kind::disconnected)) {
    EXPECT_TRUE(event.will_retry);
    EXPECT_NE(event.reason.find("relay_id mismatch"), std::string::npos) << event.reason;
  }
  EXPECT_TRUE(probe.events(Kind::connected).empty());
  // The same relay under another spelling of its URL is accepted (§6 normalisation).
  Probe ok_probe;
  auto ok = connected_link(ok_probe, options(bob_, {"ws://localhost:" + std::to_string(port_) + "/relay/ws"}));
}

TEST_F(RelayLinkTest, ASilentRelayIsDroppedAndTheLinkComesBack) {
  // A 500 ms heartbeat: the link pings after 750 ms of silence and gives up 750 ms later.
  start_relay("127.0.0.1:0", {"--heartbeat-ms", "500"});
  Probe probe;
  auto o = options(alice_);
  o.connect_timeout = 1s;
  auto l = connected_link(probe, o);
  relay_->signal(SIGSTOP);
  const bool dropped = probe.wait_events(Kind::disconnected, 1, 5s);
  relay_->signal(SIGCONT);
  ASSERT_TRUE(dropped) << "a relay silent for 3 heartbeat intervals is presumed dead";
  const auto lost = probe.events(Kind::disconnected).at(0);
  EXPECT_TRUE(lost.will_retry);
  EXPECT_NE(lost.reason.find("timed out"), std::string::npos) << lost.reason;
  ASSERT_TRUE(probe.wait_events(Kind::connected, 2));
}

TEST_F(RelayLinkTest, WssVerifiesTheRelayAgainstTheCaFile) {
  const auto dir = data_dir_ / "tls";
  std::filesystem::create_directories(dir);
  const std::string cert = (dir / "cert.pem").string(), key_file = (dir / "key.pem").string();
  const std::string command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
                              "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout " + key_file +
                              " -out " + cert + " 2>/dev/null";
  ASSERT_EQ(std::system(command.c_str()), 0) << "openssl could not make a certificate";
  start_relay("127.0.0.1:0", {"--tls-cert", cert, "--tls-key", key_file});
  const std::string wss = "wss://127.0.0.1:" + std::to_string(port_) + "/relay/ws";

  Probe untrusting_probe;
  auto untrusting = link(untrusting_probe, options(alice_, {wss}));
  ASSERT_TRUE(untrusting_probe.wait_events(Kind::disconnected, 1));
  const auto refused = untrusting_probe.events(Kind::disconnected).at(0);
  EXPECT_NE(refused.reason.find("TLS handshake"), std::string::npos) << refused.reason;
  untrusting->close();
  EXPECT_TRUE(untrusting_probe.events(Kind::connected).empty());

  Probe a_probe, b_probe;
  auto trusting_options = [&](const KeyPair& k) {
    auto o = options(k, {wss});
    o.ca_file = cert;
    return o;
  };
  auto a = connected_link(a_probe, trusting_options(alice_));
  auto b = connected_link(b_probe, trusting_options(bob_));
  EXPECT_EQ(a_probe.events(Kind::connected).at(0).relay_url, wss);
  const std::string frame = envelope(alice_, bob_.agent_id());
  EXPECT_TRUE(on_link(*a, [&] { return a->send(frame); }));
  ASSERT_TRUE(b_probe.wait_envelopes(1));
  EXPECT_EQ(b_probe.envelopes().at(0), frame);
}

TEST_F(RelayLinkTest, CloseFlushesWhatIsQueuedAndStopsForGood) {
  start_relay();
  Probe a_probe, b_probe;
  auto b = connected_link(b_probe, options(bob_));
  auto a = connected_link(a_probe, options(alice_));
  std::vector<std::string> frames;
  for (int i = 0; i < 50; ++i) frames.push_back(envelope(alice_, bob_.agent_id(), "last words " + std::to_string(i)));
  // Queued and closed at once, from the link thread's point of view back to back.
  on_link(*a, [&] {
    for (const auto& f : frames) a->send(f);
  });
  a->close();
  const auto after_close = a_probe.events().size();
  a->close();  // idempotent
  ASSERT_TRUE(b_probe.wait_envelopes(frames.size())) << "close() writes what was queued first";
  EXPECT_EQ(b_probe.envelopes(), frames);
  const auto events = a_probe.events();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().kind, Kind::gave_up);
  EXPECT_EQ(events.back().close_code, close_code::normal);
  // Nothing runs after close(): a posted function is dropped, and no event follows.
  bool ran = false;
  a->post([&] { ran = true; });
  a.reset();
  EXPECT_FALSE(ran);
  EXPECT_EQ(a_probe.events().size(), after_close);
}

TEST_F(RelayLinkTest, NoUrlsMeansGivingUpAtOnce) {
  Probe probe;
  RelayLinkOptions o{.identity = alice_, .urls = {}, .expected_relay_id = std::nullopt, .ca_file = {}};
  RelayLink l(o, probe.handlers());
  l.start();
  ASSERT_TRUE(probe.wait_events(Kind::gave_up, 1));
  EXPECT_FALSE(on_link(l, [&] { return l.send("{}"); }));
}

RelayLinkOptions bare_options(const KeyPair& k, std::string url) {
  RelayLinkOptions o{.identity = k, .urls = {std::move(url)}, .expected_relay_id = std::nullopt, .ca_file = {}};
  o.connect_timeout = 2s;
  o.reconnect_initial = 20ms;
  o.reconnect_max = 200ms;
  return o;
}

TEST(RelayLinkControlFrames, AreHandedUpIgnoredOrCloseTheConnection) {
  HostileRelay relay;
  const KeyPair alice = key(1);
  Probe probe;
  RelayLink l(bare_options(alice, relay.url()), probe.handlers());
  l.start();
  ASSERT_TRUE(probe.wait_events(Kind::connected, 1));
  ASSERT_TRUE(relay.wait_connected(alice.agent_id(), kDeadline));
  const Uuid queued = Uuid::generate(), refused = Uuid::generate();
  ASSERT_TRUE(relay.inject(alice.agent_id(), R"({"type":"pong"})"));
  ASSERT_TRUE(relay.inject(alice.agent_id(), R"({"type":"queued","id":")" + queued.to_string() + "\"}"));
  ASSERT_TRUE(relay.inject(alice.agent_id(), R"({"type":"undeliverable","id":")" + refused.to_string() +
                                                 R"(","code":"rate_limited","retry_after_ms":250})"));
  ASSERT_TRUE(probe.wait([](const Probe::State& s) { return !s.queued.empty() && !s.undeliverable.empty(); }));
  auto state = probe.snapshot();
  EXPECT_EQ(state.queued, std::vector<std::string>{queued.to_string()});
  EXPECT_EQ(state.undeliverable.at(0).id, refused);
  EXPECT_EQ(state.undeliverable.at(0).code, Errc::rate_limited);
  EXPECT_EQ(state.undeliverable.at(0).retry_after_ms, 250);
  EXPECT_EQ(state.count(Kind::disconnected), 0u) << "pong is ignored";

  // A malformed control frame: we close with 4000 and dial again.
  ASSERT_TRUE(relay.inject(alice.agent_id(), R"({"type":"queued","id":"not-a-uuid"})"));
  ASSERT_TRUE(probe.wait_events(Kind::disconnected, 1));
  auto lost = probe.events(Kind::disconnected).at(0);
  EXPECT_EQ(lost.close_code, close_code::bad_request);
  EXPECT_TRUE(lost.will_retry);
  EXPECT_NE(lost.reason.find("malformed control frame"), std::string::npos) << lost.reason;
  ASSERT_TRUE(probe.wait_events(Kind::connected, 2));

  // A welcome of another protocol version: 4002.
  ASSERT_TRUE(relay.wait_connected(alice.agent_id(), kDeadline));
  ASSERT_TRUE(relay.inject(alice.agent_id(), R"({"type":"welcome","v":2,"session_token":")" + frame::random_b64(32) +
                                                 R"(","heartbeat_ms":30000,"buffered":0})"));
  ASSERT_TRUE(probe.wait_events(Kind::disconnected, 2));
  lost = probe.events(Kind::disconnected).at(1);
  EXPECT_EQ(lost.close_code, close_code::unsupported_version) << lost.reason;
  ASSERT_TRUE(probe.wait_events(Kind::connected, 3));
}

TEST(RelayLinkOffline, QueueIsBoundedAndOversizedFramesAreRefused) {
  Probe probe;
  auto o = bare_options(key(1), "ws://127.0.0.1:1/relay/ws");
  o.max_queued_frames = 2;
  o.max_frame_bytes = 64;
  RelayLink l(o, probe.handlers());
  l.start();
  const auto sent = on_link(l, [&] {
    return std::vector<bool>{l.send(std::string(65, 'x')), l.send("a"), l.send("b"), l.send("c")};
  });
  EXPECT_EQ(sent, (std::vector<bool>{false, true, true, false}));
  ASSERT_TRUE(probe.wait_events(Kind::disconnected, 2)) << "it keeps dialling";
  for (const auto& event : probe.events(Kind::disconnected)) {
    EXPECT_TRUE(event.will_retry);
    EXPECT_LE(event.retry_in, 200ms);
  }
}

TEST(RelayLinkOffline, TheWakeupTimerIsReArmed) {
  Probe probe;
  RelayLink l(bare_options(key(1), "ws://127.0.0.1:1/relay/ws"), probe.handlers());
  l.start();
  std::atomic<int> first{0};
  auto second = std::make_shared<std::promise<bool>>();
  on_link(l, [&] {
    // The first wait may already have completed when it is replaced: it must not run anyway.
    l.set_wakeup(std::chrono::steady_clock::now(), [&] { ++first; });
    l.set_wakeup(std::chrono::steady_clock::now() + 30ms, [&, second] { second->set_value(l.on_link_thread()); });
  });
  auto future = second->get_future();
  ASSERT_EQ(future.wait_for(kDeadline), std::future_status::ready);
  EXPECT_TRUE(future.get()) << "the wake-up runs on the link thread";
  EXPECT_EQ(first.load(), 0);
}

}  // namespace
}  // namespace agent_mesh::test
