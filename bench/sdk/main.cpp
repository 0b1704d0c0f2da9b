// sdk-bench: end-to-end request latency and throughput through a real relay (issue 15).
//
//   sdk-bench --relay-url ws://127.0.0.1:PORT/relay/ws [--iterations 200] [--duration 3] [--concurrency 16]
//
// 1. cold vs warm: a cold request is the first one between two identities (Noise IK: the request
//    rides in handshake message 1, so one round trip, plus the handshake's DH work); a warm one reuses
//    the session. Each cold sample uses a fresh caller identity; the ratio of medians is the figure
//    (goal ≤ 1.2).
// 2. throughput: encrypted request/response round trips per second through the SDK (MeshClient →
//    relay → MeshAgent and back, `concurrency` requests in flight), against the bare relay in the
//    same run: the SDK's own transport (RelayLink) echoing pre-built envelopes of the same size with
//    no crypto and no protocol engine. The ratio is what Noise, JSON and the SDK cost on top. Then
//    the same through two agent-meshd (in process: Local API on a Unix socket, forwarding to an
//    echo agent over loopback HTTP), the path a daemon-based agent takes.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include "agent_mesh/envelope.hpp"
#include "agent_mesh/mesh_agent.hpp"
#include "agent_mesh/mesh_client.hpp"
#include "echo_agent.hpp"
#include "meshd/daemon.hpp"
#include "sdk/relay_link.hpp"
#include "unix_http.hpp"

namespace {

using namespace agent_mesh;
using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}
double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

ClientOptions client_options(const std::string& url) {
  ClientOptions options;
  options.relay_urls = {url};
  options.default_timeout = std::chrono::seconds(10);
  return options;
}

AclPolicy allow_all(const AgentId& target) {
  AclRule rule;
  rule.target = target;
  rule.allowed_capabilities = {"*"};
  return AclPolicy::from_rules({rule}).value();
}

std::string payload_of(std::size_t bytes) { return std::string(bytes, 'x'); }

void cold_vs_warm(const std::string& url, int iterations) {
  KeyPair bob_key = KeyPair::generate();
  MeshAgent bob(bob_key, client_options(url));
  bob.set_acl(allow_all(bob_key.agent_id()));
  bob.handle("echo", [](const IncomingCall& call) -> Result<boost::json::value> { return call.body; });
  if (!bob.wait_connected(std::chrono::seconds(5))) {
    std::fprintf(stderr, "sdk-bench: bob could not connect\n");
    std::exit(1);
  }
  std::vector<double> cold_us;
  std::vector<double> warm_us;
  const boost::json::value body{{"message", payload_of(200)}};
  for (int i = 0; i < iterations; ++i) {
    MeshClient alice(KeyPair::generate(), client_options(url));
    if (!alice.wait_connected(std::chrono::seconds(5))) continue;
    auto t0 = Clock::now();
    auto cold = alice.request(bob_key.agent_id(), "echo", body).get();
    auto t1 = Clock::now();
    auto warm = alice.request(bob_key.agent_id(), "echo", body).get();
    auto t2 = Clock::now();
    if (!cold || !warm) {
      std::fprintf(stderr, "sdk-bench: request failed: %s\n", (!cold ? cold.error() : warm.error()).describe().c_str());
      std::exit(1);
    }
    cold_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    warm_us.push_back(std::chrono::duration<double, std::micro>(t2 - t1).count());
  }
  const double cold = median(cold_us);
  const double warm = median(warm_us);
  std::printf("cold vs warm request (200 B body, %d samples)\n", iterations);
  std::printf("  cold p50 %8.1f us  p99 %8.1f us\n", cold, percentile(cold_us, 0.99));
  std::printf("  warm p50 %8.1f us  p99 %8.1f us\n", warm, percentile(warm_us, 0.99));
  std::printf("  ratio cold/warm (p50): %.2fx  (goal <= 1.2x)\n", cold / warm);
}

// Round trips per second with `concurrency` requests in flight for `seconds`.
double sdk_throughput(const std::string& url, double seconds, int concurrency, std::size_t bytes) {
  KeyPair bob_key = KeyPair::generate();
  MeshAgent bob(bob_key, client_options(url));
  bob.set_acl(allow_all(bob_key.agent_id()));
  bob.handle_async("echo", [](IncomingCall call, Responder responder) { responder.respond(std::move(call.body)); });
  MeshClient alice(KeyPair::generate(), client_options(url));
  if (!bob.wait_connected(std::chrono::seconds(5)) || !alice.wait_connected(std::chrono::seconds(5))) std::exit(1);
  const boost::json::value body(payload_of(bytes));
  if (!alice.request(bob_key.agent_id(), "echo", body).get()) std::exit(1);  // warm the session
  std::atomic<std::uint64_t> done{0};
  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::condition_variable finished;
  int active = concurrency;
  std::function<void()> issue = [&] {
    if (stop) {
      std::lock_guard lock(mutex);
      if (--active == 0) finished.notify_all();
      return;
    }
    alice.request(bob_key.agent_id(), "echo", body).then([&](Result<Response> reply) {
      if (reply) ++done;
      issue();
    });
  };
  const auto start = Clock::now();
  for (int i = 0; i < concurrency; ++i) issue();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));  // the measurement window
  stop = true;
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double rate = static_cast<double>(done.load()) / elapsed;
  std::unique_lock lock(mutex);
  finished.wait_for(lock, std::chrono::seconds(10), [&] { return active == 0; });
  return rate;
}

// The same round trips over the bare transport: two RelayLinks, pre-built envelopes, no crypto.
double bare_throughput(const std::string& url, double seconds, int concurrency, std::size_t bytes) {
  KeyPair a = KeyPair::generate();
  KeyPair b = KeyPair::generate();
  auto frame_for = [&](const KeyPair& from, const KeyPair& to) {
    Envelope env;
    env.id = Uuid::generate();
    env.from = from.agent_id();
    env.to = to.agent_id();
    env.msg_type = MsgType::response;
    env.in_reply_to = Uuid::generate();
    env.timestamp = 1764000000000;
    env.payload = boost::json::value(payload_of(bytes));
    env.sign(from);
    return env.serialize();
  };
  const std::string a_to_b = frame_for(a, b);
  const std::string b_to_a = frame_for(b, a);
  std::atomic<std::uint64_t> done{0};
  std::atomic<bool> stop{false};
  std::atomic<bool> a_ready{false};
  std::atomic<bool> b_ready{false};
  sdk::RelayLink* a_link_ptr = nullptr;
  sdk::RelayLink* b_link_ptr = nullptr;
  auto options = [&](const KeyPair& key) {
    return sdk::RelayLinkOptions{.identity = key, .urls = {url}, .expected_relay_id = std::nullopt, .ca_file = ""};
  };
  sdk::RelayLinkHandlers b_handlers;
  b_handlers.on_state = [&](const ConnectionEvent& e) { b_ready = e.kind == ConnectionEvent::Kind::connected; };
  b_handlers.on_envelope = [&](std::string_view) { b_link_ptr->send(b_to_a); };
  sdk::RelayLinkHandlers a_handlers;
  a_handlers.on_state = [&](const ConnectionEvent& e) { a_ready = e.kind == ConnectionEvent::Kind::connected; };
  a_handlers.on_envelope = [&](std::string_view) {
    ++done;
    if (!stop) a_link_ptr->send(a_to_b);
  };
  sdk::RelayLink b_link(options(b), b_handlers);
  sdk::RelayLink a_link(options(a), a_handlers);
  b_link_ptr = &b_link;
  a_link_ptr = &a_link;
  b_link.start();
  a_link.start();
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while ((!a_ready || !b_ready) && Clock::now() < deadline) std::this_thread::yield();
  const auto start = Clock::now();
  a_link.post([&] {
    for (int i = 0; i < concurrency; ++i) a_link.send(a_to_b);
  });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));  // the measurement window
  stop = true;
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double rate = static_cast<double>(done.load()) / elapsed;
  a_link.close();
  b_link.close();
  return rate;
}

// The same round trips through two agent-meshd (Bob's forwarding to an echo agent on loopback HTTP,
// Alice's Local API on a Unix socket): `concurrency` threads, one Local API connection per request.
double meshd_throughput(const std::string& url, double seconds, int concurrency, std::size_t bytes) {
  const auto dir = std::filesystem::temp_directory_path() / ("sdk-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const KeyPair alice = KeyPair::generate();
  const KeyPair bob = KeyPair::generate();
  if (!alice.save(dir / "alice.key") || !bob.save(dir / "bob.key")) std::exit(1);
  auto echo = demo::EchoAgent::start("bob");
  if (!echo) std::exit(1);
  auto config = [&](const std::string& name, const KeyPair& key) {
    meshd::MeshdConfig c;
    c.relay_urls = {url};
    c.key_file = dir / (name + ".key");
    c.socket = dir / (name + ".sock");
    c.mesh_home = dir;
    c.log_level = LogLevel::error;
    c.acl.kind = meshd::AclSetting::Kind::inline_object;
    c.acl.inline_text = R"({"default_deny": true, "rules": [{"source": "*", "target": ")" + key.agent_id().str() +
                        R"(", "allowed_capabilities": ["*"]}]})";
    return c;
  };
  meshd::MeshdConfig bob_config = config("bob", bob);
  bob_config.local_agent_url = (*echo)->url();
  auto bob_daemon = meshd::Daemon::start(bob_config);
  auto alice_daemon = meshd::Daemon::start(config("alice", alice));
  if (!bob_daemon || !alice_daemon) std::exit(1);
  const std::string socket = (*alice_daemon)->socket_path().string();
  const std::string body = boost::json::serialize(boost::json::object{
      {"target", bob.agent_id().str()}, {"capability", "echo"}, {"payload", boost::json::object{{"data", payload_of(bytes)}}}});
  if (test::unix_http(socket, "POST", "/request", body).status != 200) {
    std::fprintf(stderr, "sdk-bench: the first request through meshd failed\n");
    std::exit(1);
  }
  std::atomic<std::uint64_t> done{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int i = 0; i < concurrency; ++i) {
    threads.emplace_back([&] {
      while (!stop) {
        if (test::unix_http(socket, "POST", "/request", body).status == 200) ++done;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));  // the measurement window
  stop = true;
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  for (auto& thread : threads) thread.join();
  const double rate = static_cast<double>(done.load()) / elapsed;
  (*alice_daemon)->stop(std::chrono::seconds(1));
  (*bob_daemon)->stop(std::chrono::seconds(1));
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return rate;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sdk-bench: SDK request latency (cold vs warm) and throughput vs the bare relay"};
  std::string url;
  int iterations = 200;
  double duration = 3;
  int concurrency = 16;
  app.add_option("--relay-url", url, "ws://127.0.0.1:PORT/relay/ws")->required();
  app.add_option("--iterations", iterations, "cold/warm samples");
  app.add_option("--duration", duration, "seconds per throughput run");
  app.add_option("--concurrency", concurrency, "requests in flight");
  CLI11_PARSE(app, argc, argv);

  cold_vs_warm(url, iterations);
  for (std::size_t bytes : {256u, 4096u}) {
    const double bare = bare_throughput(url, duration, concurrency, bytes);
    const double sdk = sdk_throughput(url, duration, concurrency, bytes);
    const double through_meshd = meshd_throughput(url, duration, concurrency, bytes);
    std::printf("throughput, %zu B, %d in flight: SDK encrypted %.0f rt/s, bare relay %.0f rt/s, ratio %.2fx\n",
                bytes, concurrency, sdk, bare, sdk / bare);
    std::printf("throughput, %zu B, %d in flight: two agent-meshd + echo agent %.0f rt/s, ratio to the bare relay %.2fx\n",
                bytes, concurrency, through_meshd, through_meshd / bare);
  }
  return 0;
}
