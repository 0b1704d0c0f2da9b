// The Endpoint engine: two (or more) agents wired through an in-memory relay, no sockets, time
// passed in. Covers §4/§5 behaviour end to end, then a seeded simulation of a hostile link.
#include "agent_mesh/endpoint.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <map>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <tuple>
#include <utility>

#include "agent_mesh/encoding.hpp"
#include "test_vectors.hpp"

namespace agent_mesh {
namespace {

KeyPair key_from_byte(std::uint8_t b) { return *KeyPair::from_seed(Bytes(32, b)); }

template <class T>
std::vector<T> events_of(std::vector<EndpointEvent>& events) {
  std::vector<T> out;
  for (auto& e : events) {
    if (auto* x = std::get_if<T>(&e)) out.push_back(*x);
  }
  return out;
}

// Takes all of `e`'s events and keeps those of type T.
template <class T>
std::vector<T> take_events_of(Endpoint& e) {
  auto events = e.take_events();
  return events_of<T>(events);
}

// Two endpoints and a perfect in-order relay.
struct Mesh {
  std::map<AgentId, Endpoint*> agents;
  std::vector<OutgoingFrame> in_flight;
  std::int64_t now = 1764000000000;

  void add(Endpoint& e) { agents[e.id()] = &e; }
  void collect() {
    for (auto& [id, e] : agents) {
      for (auto& f : e->take_outgoing()) in_flight.push_back(std::move(f));
    }
  }
  // Delivers until quiet; returns how many frames moved.
  int pump() {
    int moved = 0;
    collect();
    while (!in_flight.empty()) {
      auto frames = std::exchange(in_flight, {});
      for (auto& f : frames) {
        auto it = agents.find(f.to);
        if (it != agents.end()) it->second->receive(f.frame, now);
        ++moved;
      }
      collect();
    }
    return moved;
  }
};

// Serves "echo" on an endpoint: answers every IncomingRequest at once.
void serve_echo(Endpoint& e, std::int64_t now, std::vector<IncomingRequest>* seen = nullptr) {
  auto events = e.take_events();
  for (auto& req : events_of<IncomingRequest>(events)) {
    if (seen) seen->push_back(req);
    if (req.stream) {
      for (int i = 0; i < 3; ++i) ASSERT_TRUE(e.send_chunk(req.from, req.id, i, now).ok());
      ASSERT_TRUE(e.end_stream(req.from, req.id, now).ok());
    } else {
      ASSERT_TRUE(e.respond(req.from, req.id, boost::json::object{{"echo", req.body}}, now).ok());
    }
  }
}

// Delivers `out`, lets `server` answer it with serve_echo, and returns what then reached `client`.
std::vector<EndpointEvent> serve_round_trip(Mesh& mesh, Endpoint& client, Endpoint& server,
                                            std::vector<OutgoingFrame> out) {
  mesh.in_flight = std::move(out);
  mesh.pump();
  serve_echo(server, mesh.now);
  mesh.pump();
  return client.take_events();
}

// The handles of the responses among `events`.
std::vector<RequestHandle> response_handles(std::vector<EndpointEvent>& events) {
  std::vector<RequestHandle> out;
  for (const auto& r : events_of<ResponseEvent>(events)) out.push_back(r.handle);
  return out;
}

// (handle, error code) of each failure among `events`, in order.
using Failures = std::vector<std::pair<RequestHandle, Errc>>;
Failures failures_of(std::vector<EndpointEvent>& events) {
  Failures out;
  for (const auto& f : events_of<FailureEvent>(events)) out.emplace_back(f.handle, f.error.code);
  return out;
}

// (handle, error code, retry_after_ms) of each failure among `events`, in order.
using RetriedFailures = std::vector<std::tuple<RequestHandle, Errc, std::optional<std::int64_t>>>;
RetriedFailures failures_with_retry_of(std::vector<EndpointEvent>& events) {
  RetriedFailures out;
  for (const auto& f : events_of<FailureEvent>(events)) out.emplace_back(f.handle, f.error.code, f.retry_after_ms);
  return out;
}

// One round trip, so that `client` has a session with `server`.
void warm_up(Mesh& mesh, Endpoint& client, Endpoint& server) {
  client.request(server.id(), "echo", 0, false, 5000, mesh.now);
  mesh.pump();
  serve_echo(server, mesh.now);
  mesh.pump();
  (void)client.take_events();
}

// Alice and Bob on a perfect relay.
class EndpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mesh.add(alice);
    mesh.add(bob);
  }
  // One round trip, so that Alice has a session with Bob.
  void warm_up() { agent_mesh::warm_up(mesh, alice, bob); }
  Endpoint alice{key_from_byte(1)};
  Endpoint bob{key_from_byte(2)};
  Mesh mesh;
};

TEST_F(EndpointTest, ColdThenWarmRequest) {
  const auto h1 = alice.request(bob.id(), "echo", "hi", false, 5000, mesh.now);
  auto out = alice.take_outgoing();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_NE(out[0].frame.find("\"handshake\""), std::string::npos) << "a cold request rides in message 1";
  mesh.in_flight = out;
  mesh.pump();
  std::vector<IncomingRequest> seen;
  serve_echo(bob, mesh.now, &seen);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].capability, "echo");
  EXPECT_EQ(seen[0].deadline_ms, mesh.now + 5000);
  mesh.pump();
  auto events = alice.take_events();
  auto responses = events_of<ResponseEvent>(events);
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_EQ(responses[0].handle, h1);
  EXPECT_EQ(boost::json::serialize(responses[0].body), R"({"echo":"hi"})");
  EXPECT_EQ(alice.stats().handshakes_completed, 1u);

  // Warm: no handshake, one encrypted envelope.
  const auto h2 = alice.request(bob.id(), "echo", 2, false, std::nullopt, mesh.now);
  out = alice.take_outgoing();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_NE(out[0].frame.find("\"encrypted\":true"), std::string::npos);
  EXPECT_EQ(out[0].frame.find("\"echo\""), std::string::npos) << "the capability is not visible to the relay";
  events = serve_round_trip(mesh, alice, bob, out);
  EXPECT_EQ(response_handles(events), std::vector<RequestHandle>{h2});
  EXPECT_EQ(alice.outstanding_count(), 0u);
  EXPECT_EQ(bob.served_count(), 0u);
}

TEST_F(EndpointTest, SingleFlightHandshakeForConcurrentColdRequests) {
  for (int i = 0; i < 5; ++i) alice.request(bob.id(), "echo", i, false, 5000, mesh.now);
  auto out = alice.take_outgoing();
  ASSERT_EQ(out.size(), 1u) << "one handshake for all five";
  mesh.in_flight = out;
  mesh.pump();
  serve_echo(bob, mesh.now);
  mesh.pump();
  serve_echo(bob, mesh.now);
  mesh.pump();
  auto events = alice.take_events();
  EXPECT_EQ(events_of<ResponseEvent>(events).size(), 5u);
  EXPECT_EQ(alice.stats().handshakes_started, 1u);
}

TEST_F(EndpointTest, RequestTooLargeForMessageOneWaitsForTheSession) {
  alice.request(bob.id(), "echo", boost::json::string(std::string(100000, 'x')), false, 5000, mesh.now);
  mesh.pump();
  serve_echo(bob, mesh.now);
  mesh.pump();
  auto events = alice.take_events();
  auto responses = events_of<ResponseEvent>(events);
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_EQ(responses[0].body.at("echo").as_string().size(), 100000u);
}

TEST_F(EndpointTest, StreamChunksArriveInOrderEvenWhenReordered) {
  warm_up();
  const auto h = alice.request(bob.id(), "count", 3, true, 5000, mesh.now);
  mesh.pump();
  serve_echo(bob, mesh.now);  // 3 chunks + end
  auto replies = bob.take_outgoing();
  ASSERT_EQ(replies.size(), 4u);
  std::reverse(replies.begin(), replies.end());
  for (auto& f : replies) alice.receive(f.frame, mesh.now);
  auto events = alice.take_events();
  auto chunks = events_of<ChunkEvent>(events);
  ASSERT_EQ(chunks.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(chunks[static_cast<std::size_t>(i)].seq, i);
    EXPECT_EQ(chunks[static_cast<std::size_t>(i)].body.as_int64(), i);
    EXPECT_EQ(chunks[static_cast<std::size_t>(i)].handle, h);
  }
  EXPECT_EQ(events_of<StreamEndEvent>(events).size(), 1u);
  EXPECT_TRUE(std::holds_alternative<StreamEndEvent>(events.back()));
}

TEST_F(EndpointTest, CancelStopsTheResponder) {
  warm_up();
  const auto h = alice.request(bob.id(), "slow", 1, false, 5000, mesh.now);
  mesh.pump();
  auto requests = take_events_of<IncomingRequest>(bob);
  ASSERT_EQ(requests.size(), 1u);
  alice.cancel(h, mesh.now);
  auto alice_events = alice.take_events();
  auto failures = events_of<FailureEvent>(alice_events);
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0].error.code, Errc::cancelled);
  mesh.pump();
  ASSERT_EQ(take_events_of<PeerCancelled>(bob).size(), 1u);
  auto late = bob.respond(alice.id(), requests[0].id, 1, mesh.now);
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.error().code, Errc::cancelled);
}

TEST_F(EndpointTest, TimeoutsOnBothSides) {
  const auto h = alice.request(bob.id(), "echo", 0, false, 100, mesh.now);
  mesh.pump();
  auto requests = take_events_of<IncomingRequest>(bob);
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(alice.next_deadline(), mesh.now + 100);
  mesh.now += 100;
  alice.tick(mesh.now);
  auto events = alice.take_events();
  EXPECT_EQ(failures_of(events), (Failures{{h, Errc::timeout}}));
  // After timeout_ms the responder sends nothing more.
  auto late = bob.respond(alice.id(), requests[0].id, 1, mesh.now);
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.error().code, Errc::timeout);
  EXPECT_TRUE(bob.take_outgoing().empty());
}

TEST_F(EndpointTest, LateReplyIsDecryptedAndDropped) {
  alice.request(bob.id(), "echo", 0, false, 1000, mesh.now);
  mesh.pump();
  auto requests = take_events_of<IncomingRequest>(bob);
  ASSERT_TRUE(bob.respond(alice.id(), requests[0].id, 1, mesh.now).ok());
  auto reply = bob.take_outgoing();
  mesh.now += 1000;
  alice.tick(mesh.now);
  (void)alice.take_events();
  for (auto& f : reply) alice.receive(f.frame, mesh.now);
  EXPECT_TRUE(alice.take_events().empty());
  EXPECT_EQ(alice.stats().dropped.at("reply to no outstanding request"), 1u);
}

TEST(EndpointRestartTest, RestartedResponderAnswersNoSessionAndTheRequestIsRetriedOnce) {
  Endpoint alice(key_from_byte(1));
  auto bob = std::make_unique<Endpoint>(key_from_byte(2));
  Mesh mesh;
  mesh.add(alice);
  mesh.add(*bob);
  warm_up(mesh, alice, *bob);
  // Bob restarts: sessions are not persisted.
  mesh.agents.erase(bob->id());
  bob = std::make_unique<Endpoint>(key_from_byte(2));
  mesh.add(*bob);
  const auto h = alice.request(bob->id(), "echo", "after restart", false, 5000, mesh.now);
  mesh.pump();
  EXPECT_EQ(bob->stats().no_session_sent, 1u);
  EXPECT_EQ(alice.stats().retries, 1u);
  std::vector<IncomingRequest> seen;
  serve_echo(*bob, mesh.now, &seen);
  mesh.pump();
  EXPECT_EQ(seen.size(), 1u);
  auto events = alice.take_events();
  auto responses = events_of<ResponseEvent>(events);
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_EQ(responses[0].handle, h);
  EXPECT_TRUE(events_of<FailureEvent>(events).empty());
}

TEST_F(EndpointTest, SimultaneousInitiationKeepsBothSessions) {
  alice.request(bob.id(), "echo", "from alice", false, 5000, mesh.now);
  bob.request(alice.id(), "echo", "from bob", false, 5000, mesh.now);
  mesh.pump();
  serve_echo(alice, mesh.now);
  serve_echo(bob, mesh.now);
  mesh.pump();
  auto a_events = alice.take_events();
  auto b_events = bob.take_events();
  EXPECT_EQ(events_of<ResponseEvent>(a_events).size(), 1u);
  EXPECT_EQ(events_of<ResponseEvent>(b_events).size(), 1u);
  EXPECT_EQ(alice.sessions().session_count(bob.id()), 2u);
  EXPECT_EQ(bob.sessions().session_count(alice.id()), 2u);
}

TEST_F(EndpointTest, InvalidRequestBodyIsAnsweredBadRequest) {
  const auto h = alice.request(bob.id(), "bad name!", 0, false, 5000, mesh.now);
  auto events = alice.take_events();
  EXPECT_EQ(failures_of(events), (Failures{{h, Errc::bad_request}}));
  EXPECT_TRUE(alice.take_outgoing().empty());
}

TEST_F(EndpointTest, ResponderRejectsMisuse) {
  alice.request(bob.id(), "count", 0, true, 5000, mesh.now);
  mesh.pump();
  auto requests = take_events_of<IncomingRequest>(bob);
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(bob.respond(alice.id(), requests[0].id, 1, mesh.now).error().code, Errc::bad_request);
  EXPECT_EQ(bob.respond(alice.id(), Uuid::generate(), 1, mesh.now).error().code, Errc::cancelled);
}

// ---- the simulation ----

// A seeded, hostile link: every frame may be lost, duplicated or delayed (so reordered); agents
// restart now and then. Invariants: every request ends exactly once; no logical request is served
// twice by one incarnation of an agent; echoes match their requests; after the chaos, a clean link works at once for new requests
// (no desynchronised session survives).
class Simulation {
 public:
  struct Options {
    std::uint32_t seed;
    double loss = 0.05;
    double duplicate = 0.05;
    std::int64_t max_delay_ms = 40;
    double restart = 0.002;  // per step, per agent
  };

  explicit Simulation(Options options) : options_(options), rng_(options.seed) {
    for (std::uint8_t i = 0; i < 3; ++i) {
      keys_.push_back(key_from_byte(static_cast<std::uint8_t>(10 + i)));
      agents_.push_back(make_endpoint(i));
    }
  }

  void run(int steps) {
    for (int step = 0; step < steps; ++step) {
      now_ += 1;
      // Agents start requests to random peers.
      if (chance(0.3)) {
        const std::size_t from = pick(agents_.size());
        std::size_t to = pick(agents_.size() - 1);
        if (to >= from) ++to;
        start_request(from, to, chance(0.2));
      }
      deliver_due();
      for (std::size_t i = 0; i < agents_.size(); ++i) {
        agents_[i]->tick(now_);
        drain(i);
        if (chance(options_.restart)) restart(i);
      }
    }
  }

  // Lets everything in flight land or time out.
  void settle() {
    options_.loss = 0;
    options_.duplicate = 0;
    options_.restart = 0;
    for (int i = 0; i < 40000 && (!queue_.empty() || outstanding() > 0); ++i) {
      now_ += 1;
      deliver_due();
      for (std::size_t a = 0; a < agents_.size(); ++a) {
        agents_[a]->tick(now_);
        drain(a);
      }
    }
  }

  // After the chaos, on a clean link, every agent reaches every other at once: no session is left
  // desynchronised. Returns the number of requests of this round that did not succeed.
  std::size_t clean_round() {
    const std::size_t succeeded_before = succeeded_;
    std::size_t started = 0;
    for (std::size_t from = 0; from < agents_.size(); ++from) {
      for (std::size_t to = 0; to < agents_.size(); ++to) {
        if (from == to) continue;
        start_request(from, to, false);
        ++started;
      }
    }
    std::vector<std::map<std::string, std::uint64_t>> before;
    for (auto& a : agents_) before.push_back(a->stats().dropped);
    settle();
    if (getenv("SIM_DEBUG")) {
      for (std::size_t a = 0; a < agents_.size(); ++a) {
        for (auto& [reason, n] : agents_[a]->stats().dropped) {
          if (n != before[a][reason]) std::printf("agent %zu dropped %s x%llu\n", a, reason.c_str(), (unsigned long long)(n - before[a][reason]));
        }
      }
    }
    return started - (succeeded_ - succeeded_before);
  }

  std::size_t outstanding() const {
    std::size_t n = 0;
    for (const auto& a : agents_) n += a->outstanding_count();
    return n;
  }

  void check_invariants() {
    for (const auto& [k, ends] : terminal_events_) {
      EXPECT_EQ(ends, 1) << "request " << std::get<2>(k) << " of agent " << std::get<0>(k) << " ended " << ends
                         << " times";
    }
    for (const auto& [nonce, count] : served_) {
      EXPECT_EQ(count, 1) << "logical request " << nonce << " served " << count << " times";
    }
    EXPECT_EQ(terminal_events_.size(), started_);
  }

  std::size_t started_ = 0;
  std::size_t succeeded_ = 0;
  std::map<std::string, std::size_t> failures_by_code_;

 private:
  using Key = std::tuple<std::size_t, int, RequestHandle>;  // agent, incarnation, handle
  struct InFlight {
    std::int64_t at;
    std::uint64_t order;
    OutgoingFrame frame;
    bool operator>(const InFlight& other) const { return std::tie(at, order) > std::tie(other.at, other.order); }
  };

  std::unique_ptr<Endpoint> make_endpoint(std::size_t i) {
    EndpointOptions options;
    options.default_timeout_ms = 500;
    return std::make_unique<Endpoint>(keys_[i], options);
  }

  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  std::size_t pick(std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_); }

  void start_request(std::size_t from, std::size_t to, bool stream) {
    const std::string nonce = std::to_string(from) + ":" + std::to_string(next_nonce_++);
    const auto handle = agents_[from]->request(agents_[to]->id(), "echo", boost::json::string(nonce), stream, 300, now_);
    requests_[key(from, handle)] = nonce;
    ++started_;
    drain(from);
  }

  void send(OutgoingFrame frame) {
    if (chance(options_.loss)) return;
    const int copies = chance(options_.duplicate) ? 2 : 1;
    for (int c = 0; c < copies; ++c) {
      const auto delay = std::uniform_int_distribution<std::int64_t>(0, options_.max_delay_ms)(rng_);
      queue_.push(InFlight{now_ + delay, order_++, frame});
    }
  }

  void deliver_due() {
    while (!queue_.empty() && queue_.top().at <= now_) {
      InFlight next = queue_.top();
      queue_.pop();
      for (std::size_t i = 0; i < agents_.size(); ++i) {
        if (agents_[i]->id() == next.frame.to) {
          agents_[i]->receive(next.frame.frame, now_);
          drain(i);
        }
      }
    }
  }

  void drain(std::size_t i) {
    Endpoint& e = *agents_[i];
    for (auto& event : e.take_events()) {
      if (auto* req = std::get_if<IncomingRequest>(&event)) {
        // Per server incarnation: memory of seen IDs dies with a restart, and protocol §6 accepts
        // that a request may run again after a receiver crash.
        ++served_[std::to_string(i) + "/" + std::to_string(incarnation_[i]) + "/" + std::string(req->body.as_string())];
        if (req->stream) {
          (void)e.send_chunk(req->from, req->id, req->body, now_);
          (void)e.end_stream(req->from, req->id, now_);
        } else {
          (void)e.respond(req->from, req->id, req->body, now_);
        }
      } else if (auto* resp = std::get_if<ResponseEvent>(&event)) {
        EXPECT_EQ(resp->body.as_string(), requests_.at(key(i, resp->handle)));
        end(i, resp->handle);
        ++succeeded_;
      } else if (auto* chunk = std::get_if<ChunkEvent>(&event)) {
        EXPECT_EQ(chunk->body.as_string(), requests_.at(key(i, chunk->handle)));
      } else if (auto* stream_end = std::get_if<StreamEndEvent>(&event)) {
        end(i, stream_end->handle);
        ++succeeded_;
      } else if (auto* failure = std::get_if<FailureEvent>(&event)) {
        end(i, failure->handle);
        ++failures_by_code_[std::string(to_string(failure->error.code))];
        if (getenv("SIM_DEBUG")) std::printf("t=%lld agent %zu handle %llu: %s (%s)\n", (long long)now_, i, (unsigned long long)failure->handle, failure->error.describe().c_str(), requests_.at(key(i, failure->handle)).c_str());
      }
    }
    for (auto& frame : e.take_outgoing()) send(std::move(frame));
  }

  Key key(std::size_t agent, RequestHandle handle) const { return {agent, incarnation_[agent], handle}; }
  void end(std::size_t agent, RequestHandle handle) { ++terminal_events_[key(agent, handle)]; }

  void restart(std::size_t i) {
    // The requests of the old incarnation end with it: count each as ended once.
    for (const auto& [k, nonce] : requests_) {
      if (std::get<0>(k) == i && std::get<1>(k) == incarnation_[i] && !terminal_events_.contains(k)) {
        ++terminal_events_[k];
        ++failures_by_code_["restart"];
      }
    }
    ++incarnation_[i];
    agents_[i] = make_endpoint(i);
  }

  Options options_;
  std::mt19937 rng_;
  std::vector<KeyPair> keys_;
  std::vector<std::unique_ptr<Endpoint>> agents_;
  std::priority_queue<InFlight, std::vector<InFlight>, std::greater<>> queue_;
  std::uint64_t order_ = 0;
  std::int64_t now_ = 1764000000000;
  std::uint64_t next_nonce_ = 0;
  std::map<Key, std::string> requests_;
  std::map<Key, int> terminal_events_;
  std::map<std::string, int> served_;
  std::vector<int> incarnation_ = std::vector<int>(3, 0);
};

// Alice and Bob on a perfect relay, each configured to exchange plaintext with the other.
class EndpointPlaintextTest : public ::testing::Test {
 protected:
  static EndpointOptions plaintext_with(std::uint8_t peer) {
    EndpointOptions options;
    options.plaintext_peers = {key_from_byte(peer).agent_id()};
    return options;
  }
  void SetUp() override {
    mesh.add(alice);
    mesh.add(bob);
  }
  Endpoint alice{key_from_byte(1), plaintext_with(2)};
  Endpoint bob{key_from_byte(2), plaintext_with(1)};
  Mesh mesh;
};

TEST_F(EndpointPlaintextTest, PeersConfiguredOnBothEndsExchangeSignedPlaintext) {
  const auto unary = alice.request(bob.id(), "echo", "clear", false, 5000, mesh.now);
  const auto stream = alice.request(bob.id(), "echo", "s", true, 5000, mesh.now);
  auto out = alice.take_outgoing();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_NE(out[0].frame.find("\"signature\""), std::string::npos);
  EXPECT_EQ(out[0].frame.find("\"encrypted\""), std::string::npos);
  EXPECT_NE(out[0].frame.find("\"capability\":\"echo\""), std::string::npos) << "plaintext: the body is visible";
  auto events = serve_round_trip(mesh, alice, bob, out);
  EXPECT_EQ(response_handles(events), std::vector<RequestHandle>{unary});
  auto chunks = events_of<ChunkEvent>(events);
  EXPECT_EQ(chunks.size(), 3u);
  auto ends = events_of<StreamEndEvent>(events);
  ASSERT_EQ(ends.size(), 1u);
  EXPECT_EQ(ends[0].handle, stream);
  EXPECT_EQ(alice.stats().handshakes_started, 0u);

  // A peer that is not configured for plaintext: its plaintext request is dropped, never served.
  Endpoint carol(key_from_byte(3));
  mesh.add(carol);
  EndpointOptions carol_plain;
  carol_plain.plaintext_peers = {bob.id()};
  Endpoint carol_sender(key_from_byte(3), carol_plain);
  mesh.agents[carol.id()] = &carol_sender;
  (void)carol_sender.request(bob.id(), "echo", 1, false, 5000, mesh.now);
  mesh.pump();
  EXPECT_TRUE(take_events_of<IncomingRequest>(bob).empty());
  EXPECT_EQ(bob.stats().dropped.count("plaintext envelope from a peer not configured for plaintext"), 1u);
}

TEST_F(EndpointTest, UndeliverableFailsTheRequestThatSentTheEnvelope) {
  warm_up();
  const auto handle = alice.request(bob.id(), "echo", 1, false, 5000, mesh.now);
  auto out = alice.take_outgoing();
  ASSERT_EQ(out.size(), 1u);
  const auto id = boost::json::parse(out[0].frame).at("id").as_string();
  alice.undeliverable(*Uuid::parse(std::string(id)), Errc::rate_limited, 1500, mesh.now);
  auto events = alice.take_events();
  EXPECT_EQ(failures_with_retry_of(events), (RetriedFailures{{handle, Errc::rate_limited, 1500}}));
  EXPECT_EQ(alice.outstanding_count(), 0u);
  // Unknown IDs are ignored.
  alice.undeliverable(Uuid::generate(), Errc::unreachable, std::nullopt, mesh.now);
  EXPECT_TRUE(alice.take_events().empty());
}

TEST(EndpointTooLargeTest, AReplyThatDoesNotFitIsAnsweredTooLarge) {
  EndpointOptions small;
  small.max_envelope_bytes = 4096;
  Endpoint alice(key_from_byte(1));
  Endpoint bob(key_from_byte(2), small);
  Mesh mesh;
  mesh.add(alice);
  mesh.add(bob);
  const auto handle = alice.request(bob.id(), "echo", 1, false, 5000, mesh.now);
  mesh.pump();
  auto requests = take_events_of<IncomingRequest>(bob);
  ASSERT_EQ(requests.size(), 1u);
  auto sent = bob.respond(requests[0].from, requests[0].id, boost::json::value(std::string(8000, 'x')), mesh.now);
  ASSERT_FALSE(sent.ok());
  EXPECT_EQ(sent.error().code, Errc::too_large);
  mesh.pump();
  auto alice_events = alice.take_events();
  EXPECT_EQ(failures_of(alice_events), (Failures{{handle, Errc::too_large}}));
  EXPECT_EQ(bob.served_count(), 0u);
}

TEST(EndpointUndeliverableTest, AnUndeliverableHandshakeLetsTheNextRequestStartANewOne) {
  Endpoint alice(key_from_byte(1));
  const AgentId bob = key_from_byte(2).agent_id();
  const std::int64_t now = 1764000000000;
  const auto first = alice.request(bob, "echo", 1, false, 5000, now);
  const auto second = alice.request(bob, "echo", 2, false, 5000, now);
  auto out = alice.take_outgoing();
  ASSERT_EQ(out.size(), 1u) << "single flight";
  const auto id = boost::json::parse(out[0].frame).at("id").as_string();
  alice.undeliverable(*Uuid::parse(std::string(id)), Errc::unreachable, std::nullopt, now);
  auto events = alice.take_events();
  auto failures = events_of<FailureEvent>(events);
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0].handle, first);
  out = alice.take_outgoing();
  ASSERT_EQ(out.size(), 1u) << "the waiting request starts its own handshake";
  EXPECT_NE(out[0].frame.find("\"handshake\""), std::string::npos);
  EXPECT_EQ(alice.outstanding_count(), 1u);
  (void)second;
}

TEST(EndpointSimulation, LossyReorderingDuplicatingLinkWithRestarts) {
  // scripts/test-long raises the number of seeds (AGENT_MESH_SIM_SEEDS).
  const char* seeds_env = std::getenv("AGENT_MESH_SIM_SEEDS");
  const std::uint32_t seeds = seeds_env ? static_cast<std::uint32_t>(std::atoi(seeds_env)) : 4u;
  for (std::uint32_t seed = 1; seed <= seeds; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Simulation sim({.seed = seed});
    sim.run(6000);
    sim.settle();
    EXPECT_EQ(sim.outstanding(), 0u);
    EXPECT_EQ(sim.clean_round(), 0u);
    sim.check_invariants();
    std::string failures;
    for (const auto& [code, n] : sim.failures_by_code_) failures += " " + code + "=" + std::to_string(n);
    std::printf("seed %u: %zu requests, %zu succeeded, failures:%s\n", seed, sim.started_, sim.succeeded_,
                failures.c_str());
    EXPECT_GT(sim.started_, 1000u);
    // Most requests succeed despite 5 % loss each way.
    EXPECT_GT(sim.succeeded_, sim.started_ * 6 / 10);
    for (const auto& [code, n] : sim.failures_by_code_) {
      EXPECT_TRUE(code == "timeout" || code == "restart" || code == "no_session") << code << " x" << n;
    }
  }
}

// ---- handshake lifetime, retries and terminal events (review of the engine) ----

Uuid frame_id(const std::string& frame) {
  return *Uuid::parse(std::string(boost::json::parse(frame).at("id").as_string()));
}

bool is_handshake_frame(const OutgoingFrame& frame) {
  return frame.frame.find("\"msg_type\":\"handshake\"") != std::string::npos;
}

// A signed plaintext envelope from `key` (what a peer or a hostile test writes by hand).
std::string signed_frame(const KeyPair& key, const AgentId& to, MsgType type, std::optional<Uuid> in_reply_to,
                         boost::json::value payload, std::int64_t now) {
  Envelope env;
  env.id = Uuid::generate();
  env.from = key.agent_id();
  env.to = to;
  env.msg_type = type;
  env.in_reply_to = in_reply_to;
  env.timestamp = now;
  env.payload = std::move(payload);
  env.sign(key);
  return env.serialize();
}

std::string signed_error(const KeyPair& key, const AgentId& to, const Uuid& in_reply_to, Errc code,
                         std::optional<std::int64_t> retry_after_ms, std::int64_t now) {
  return signed_frame(key, to, MsgType::error, in_reply_to,
                      body_to_json(ErrorBody{code, "refused by the peer", retry_after_ms}), now);
}

TEST_F(EndpointTest, CancellingAColdRequestTooLargeForMessageOneDoesNotBlockThePeer) {
  // Message 1 cannot carry it, so it waits for the session; its step 1 is lost.
  const boost::json::string too_big_for_message1(std::string(100000, 'x'));
  const auto big = alice.request(bob.id(), "echo", too_big_for_message1, false, 5000, mesh.now);
  auto lost = alice.take_outgoing();
  ASSERT_EQ(lost.size(), 1u);
  ASSERT_TRUE(is_handshake_frame(lost[0]));
  alice.cancel(big, mesh.now);
  auto events = alice.take_events();
  ASSERT_EQ(events_of<FailureEvent>(events).size(), 1u);
  EXPECT_EQ(alice.outstanding_count(), 0u);
  // The next request to Bob starts its own handshake at once instead of queueing behind the dead one.
  const auto next = alice.request(bob.id(), "echo", 2, false, 5000, mesh.now);
  auto out = alice.take_outgoing();
  ASSERT_EQ(out.size(), 1u) << "a new handshake goes out";
  EXPECT_TRUE(is_handshake_frame(out[0]));
  events = serve_round_trip(mesh, alice, bob, out);
  EXPECT_EQ(response_handles(events), std::vector<RequestHandle>{next});
}

TEST_F(EndpointTest, CancellingTheStarterRestartsTheHandshakeForTheRequestsWaitingOnIt) {
  const boost::json::string too_big_for_message1(std::string(100000, 'x'));
  const auto big = alice.request(bob.id(), "echo", too_big_for_message1, false, 5000, mesh.now);
  const auto small = alice.request(bob.id(), "echo", 2, false, 5000, mesh.now);
  auto lost = alice.take_outgoing();
  ASSERT_EQ(lost.size(), 1u) << "single flight";
  alice.cancel(big, mesh.now);
  auto events = alice.take_events();
  EXPECT_EQ(failures_of(events), (Failures{{big, Errc::cancelled}}));
  auto out = alice.take_outgoing();
  ASSERT_EQ(out.size(), 1u) << "the waiting request starts a fresh handshake";
  EXPECT_TRUE(is_handshake_frame(out[0]));
  EXPECT_NE(frame_id(out[0].frame), frame_id(lost[0].frame));
  events = serve_round_trip(mesh, alice, bob, out);
  EXPECT_EQ(response_handles(events), std::vector<RequestHandle>{small});
  EXPECT_TRUE(events_of<FailureEvent>(events).empty());
}

TEST_F(EndpointTest, APlaintextErrorAnsweringStepOneAbandonsTheHandshake) {
  const auto first = alice.request(bob.id(), "echo", 1, false, 5000, mesh.now);
  const auto second = alice.request(bob.id(), "echo", 2, false, 5000, mesh.now);
  auto out = alice.take_outgoing();
  ASSERT_EQ(out.size(), 1u);
  const Uuid step1 = frame_id(out[0].frame);
  // The peer refuses the request carried in message 1 with a signed plaintext error (§5).
  alice.receive(signed_error(key_from_byte(2), alice.id(), step1, Errc::rate_limited, 700, mesh.now), mesh.now);
  auto events = alice.take_events();
  EXPECT_EQ(failures_with_retry_of(events), (RetriedFailures{{first, Errc::rate_limited, 700}}));
  out = alice.take_outgoing();
  ASSERT_EQ(out.size(), 1u) << "the waiting request starts a fresh handshake";
  EXPECT_TRUE(is_handshake_frame(out[0]));
  events = serve_round_trip(mesh, alice, bob, out);
  EXPECT_EQ(response_handles(events), std::vector<RequestHandle>{second});
  // With nobody waiting, the handshake is simply dropped: a later cold request is not blocked.
  Endpoint carol(key_from_byte(3));
  mesh.add(carol);
  const auto lone = alice.request(carol.id(), "echo", 3, false, 5000, mesh.now);
  out = alice.take_outgoing();
  ASSERT_EQ(out.size(), 1u);
  alice.receive(signed_error(key_from_byte(3), alice.id(), frame_id(out[0].frame), Errc::acl_denied, std::nullopt,
                             mesh.now),
                mesh.now);
  events = alice.take_events();
  ASSERT_EQ(events_of<FailureEvent>(events).size(), 1u);
  EXPECT_EQ(events_of<FailureEvent>(events)[0].handle, lone);
  EXPECT_TRUE(alice.take_outgoing().empty());
  const auto again = alice.request(carol.id(), "echo", 4, false, 5000, mesh.now);
  out = alice.take_outgoing();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(is_handshake_frame(out[0]));
  events = serve_round_trip(mesh, alice, carol, out);
  EXPECT_EQ(response_handles(events), std::vector<RequestHandle>{again});
}

TEST(EndpointUndeliverableTest, AnUndeliverableStepOneThatCarriedNoRequestFailsTheRequestsWaitingOnIt) {
  Endpoint alice(key_from_byte(1));
  const AgentId bob = key_from_byte(2).agent_id();
  const std::int64_t now = 1764000000000;
  const auto big = alice.request(bob, "echo", boost::json::string(std::string(100000, 'x')), false, 5000, now);
  const auto small = alice.request(bob, "echo", 2, false, 5000, now);
  auto out = alice.take_outgoing();
  ASSERT_EQ(out.size(), 1u);
  alice.undeliverable(frame_id(out[0].frame), Errc::rate_limited, 1500, now);
  auto events = alice.take_events();
  auto failures = events_of<FailureEvent>(events);
  ASSERT_EQ(failures.size(), 2u) << "at once, not at their deadline";
  std::set<RequestHandle> failed;
  for (const auto& f : failures) {
    failed.insert(f.handle);
    EXPECT_EQ(f.error.code, Errc::rate_limited);
    EXPECT_EQ(f.retry_after_ms, 1500);
  }
  EXPECT_EQ(failed, (std::set<RequestHandle>{big, small}));
  EXPECT_EQ(alice.outstanding_count(), 0u);
  EXPECT_TRUE(alice.take_outgoing().empty());
  // The handshake is gone: the next request starts a new one.
  (void)alice.request(bob, "echo", 3, false, 5000, now);
  out = alice.take_outgoing();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(is_handshake_frame(out[0]));
}

TEST_F(EndpointTest, NoSessionAfterAStreamStartedFailsInsteadOfSplicingTwoRuns) {
  warm_up();
  const auto h = alice.request(bob.id(), "count", 0, true, 5000, mesh.now);
  auto out = alice.take_outgoing();
  ASSERT_EQ(out.size(), 1u);
  const std::string original = out[0].frame;
  mesh.in_flight = out;
  mesh.pump();
  auto requests = take_events_of<IncomingRequest>(bob);
  ASSERT_EQ(requests.size(), 1u);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(bob.send_chunk(alice.id(), requests[0].id, i, mesh.now).ok());
  mesh.pump();
  auto events = alice.take_events();
  ASSERT_EQ(events_of<ChunkEvent>(events).size(), 2u);
  // A hostile relay replays the request under a made-up sid; Bob answers a genuine no_session.
  auto forged = boost::json::parse(original).as_object();
  forged["sid"] = base64url_encode(Bytes(16, 0x5a));
  bob.receive(boost::json::serialize(forged), mesh.now);
  EXPECT_EQ(bob.stats().no_session_sent, 1u);
  mesh.pump();
  EXPECT_EQ(alice.stats().retries, 0u) << "part of the reply has arrived: no retry";
  events = alice.take_events();
  EXPECT_EQ(failures_of(events), (Failures{{h, Errc::no_session}}));
  // Whatever Bob still sends for the first run goes nowhere; no second run is served.
  EXPECT_TRUE(take_events_of<IncomingRequest>(bob).empty());
  (void)bob.send_chunk(alice.id(), requests[0].id, 2, mesh.now);
  (void)bob.end_stream(alice.id(), requests[0].id, mesh.now);
  mesh.pump();
  serve_echo(bob, mesh.now);
  mesh.pump();
  events = alice.take_events();
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(alice.outstanding_count(), 0u);
}

TEST_F(EndpointPlaintextTest, ReorderOverflowOnAPlaintextStreamFailsItAndSendsCancel) {
  const auto h = alice.request(bob.id(), "count", 0, true, 5000, mesh.now);
  mesh.pump();
  auto requests = take_events_of<IncomingRequest>(bob);
  ASSERT_EQ(requests.size(), 1u);
  for (int i = 0; i <= 257; ++i) ASSERT_TRUE(bob.send_chunk(alice.id(), requests[0].id, i, mesh.now).ok());
  auto chunks = bob.take_outgoing();
  ASSERT_EQ(chunks.size(), 258u);
  // Chunk 0 is lost: 257 wait for the gap.
  for (std::size_t i = 1; i < chunks.size(); ++i) alice.receive(chunks[i].frame, mesh.now);
  auto events = alice.take_events();
  EXPECT_TRUE(events_of<ChunkEvent>(events).empty());
  EXPECT_EQ(failures_of(events), (Failures{{h, Errc::internal}}));
  auto out = alice.take_outgoing();
  ASSERT_EQ(out.size(), 1u) << "a signed plaintext cancel";
  EXPECT_NE(out[0].frame.find("\"msg_type\":\"cancel\""), std::string::npos);
  EXPECT_EQ(out[0].frame.find("\"encrypted\""), std::string::npos);
  mesh.in_flight = out;
  mesh.pump();
  ASSERT_EQ(take_events_of<PeerCancelled>(bob).size(), 1u);
  EXPECT_EQ(bob.served_count(), 0u);
}

// A cold request cancelled while its handshake is in flight is reported cancelled once; nothing
// that later ends it (undeliverable, a failed step 2, the peer's error, its deadline, a second
// cancel) reports it again.
TEST(EndpointCancelTest, ARequestCancelledDuringItsHandshakeEndsExactlyOnce) {
  enum class Then { undeliverable, bad_step2, plaintext_error, timeout, cancel_again };
  for (Then then : {Then::undeliverable, Then::bad_step2, Then::plaintext_error, Then::timeout, Then::cancel_again}) {
    SCOPED_TRACE("case " + std::to_string(static_cast<int>(then)));
    Endpoint alice(key_from_byte(1));
    const KeyPair bob_key = key_from_byte(2);
    const AgentId bob = bob_key.agent_id();
    std::int64_t now = 1764000000000;
    const auto h = alice.request(bob, "echo", 1, false, 5000, now);
    auto out = alice.take_outgoing();
    ASSERT_EQ(out.size(), 1u);
    const Uuid step1 = frame_id(out[0].frame);
    alice.cancel(h, now);
    auto events = alice.take_events();
    auto failures = events_of<FailureEvent>(events);
    ASSERT_EQ(failures.size(), 1u);
    EXPECT_EQ(failures[0].error.code, Errc::cancelled);
    switch (then) {
      case Then::undeliverable:
        alice.undeliverable(step1, Errc::unreachable, std::nullopt, now);
        break;
      case Then::bad_step2: {
        boost::json::object payload{{"step", 2}, {"noise", base64url_encode(Bytes(48, 0x42))}};
        alice.receive(signed_frame(bob_key, alice.id(), MsgType::handshake, step1, payload, now), now);
        EXPECT_EQ(alice.stats().dropped.count("handshake step 2 refused"), 1u);
        break;
      }
      case Then::plaintext_error:
        alice.receive(signed_error(bob_key, alice.id(), step1, Errc::agent_error, std::nullopt, now), now);
        break;
      case Then::timeout:
        now += 5000;
        alice.tick(now);
        break;
      case Then::cancel_again:
        alice.cancel(h, now);
        break;
    }
    events = alice.take_events();
    EXPECT_TRUE(events_of<FailureEvent>(events).empty()) << "reported twice";
    EXPECT_EQ(alice.outstanding_count(), then == Then::cancel_again ? 1u : 0u);
  }
}

}  // namespace
}  // namespace agent_mesh
