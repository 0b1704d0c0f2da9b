// relay-bench: the load generator of the relay benchmarks (issue 13; scripts/bench-relay drives it).
// Each invocation runs one pattern against one target and prints one machine-readable line,
//   RESULT key=value ...
// which the script turns into tables of ours / anchor / ratio. Human-readable notes go to stderr.
//
//   relay-bench rr     --target relay|nats --port P --pairs N --size BYTES [--rate R] [--threads T]
//   relay-bench slow   --port P --pairs N --size BYTES --stall 0|1 [--flood-rate R] [--flood-size BYTES]
//   relay-bench auth   --port P [--concurrency C]
//   relay-bench idle   --port P --server-pid PID [--connections N] [--concurrency C] [--settle SECONDS]
//   relay-bench verify                 crypto_sign_verify_detached per second, one thread
//   relay-bench free-port              a free loopback TCP port (for nats-server)
// Common: --warmup SECONDS (0.5) --duration SECONDS (3); --server-pid PID adds the server's CPU
// use over the window (server_cores).
#include <netinet/in.h>
#include <sodium.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <string>

#include "agent_mesh/identity.hpp"
#include "agent_mesh/relay_protocol.hpp"
#include "bench_envelope.hpp"
#include "load.hpp"

namespace {

using namespace agent_mesh;
using namespace agent_mesh::bench;

struct Args {
  std::map<std::string, std::string> values;
  std::string get(const std::string& key, const std::string& fallback) const {
    auto it = values.find(key);
    return it == values.end() ? fallback : it->second;
  }
  double number(const std::string& key, double fallback) const {
    auto it = values.find(key);
    if (it == values.end()) return fallback;
    char* end = nullptr;
    const double v = std::strtod(it->second.c_str(), &end);
    if (end == it->second.c_str() || *end != '\0') throw std::runtime_error("--" + key + " wants a number");
    return v;
  }
  int integer(const std::string& key, int fallback) const { return static_cast<int>(number(key, fallback)); }
};

Window window_of(const Args& args) { return {args.number("warmup", 0.5), args.number("duration", 3.0)}; }

double us(std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; }

void print_latency(const LatencyHistogram& h) {
  std::printf(" p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f", us(h.quantile(0.5)), us(h.quantile(0.99)),
              us(h.quantile(0.999)), us(h.max()));
}

void print_error(std::uint64_t errors, const std::string& first) {
  std::printf(" errors=%llu", static_cast<unsigned long long>(errors));
  if (!first.empty()) std::fprintf(stderr, "relay-bench: first error: %s\n", first.c_str());
}

int request_reply(const Args& args) {
  RequestReplyOptions options;
  const std::string target = args.get("target", "relay");
  options.port = args.integer("port", 0);
  options.pairs = args.integer("pairs", 1);
  options.payload_bytes = static_cast<std::size_t>(args.integer("size", 256));
  options.window = window_of(args);
  options.rate = args.number("rate", 0);
  options.threads = args.integer("threads", 1);
  options.server_pid = args.integer("server-pid", 0);
  const RequestReplyResult r =
      target == "nats" ? run_nats_request_reply(options) : run_relay_request_reply(options);
  std::printf("RESULT target=%s pairs=%d size=%zu rate=%.0f rt=%llu rt_per_s=%.1f", target.c_str(), options.pairs,
              options.payload_bytes, options.rate, static_cast<unsigned long long>(r.round_trips),
              static_cast<double>(r.round_trips) / r.seconds);
  print_latency(r.latency);
  std::printf(" server_cores=%.2f generator_cores=%.2f", r.server_cores, r.generator_cores);
  print_error(r.errors, r.first_error);
  std::printf("\n");
  return r.errors == 0 && r.round_trips > 0 ? 0 : 1;
}

int slow_consumer(const Args& args) {
  SlowConsumerOptions options;
  options.port = args.integer("port", 0);
  options.pairs = args.integer("pairs", 10);
  options.payload_bytes = static_cast<std::size_t>(args.integer("size", 256));
  options.window = window_of(args);
  options.stall = args.integer("stall", 0) != 0;
  options.flood_rate = args.number("flood-rate", 2000);
  options.flood_bytes = static_cast<std::size_t>(args.integer("flood-size", 4096));
  options.server_pid = args.integer("server-pid", 0);
  const SlowConsumerResult r = run_relay_slow_consumer(options);
  std::printf("RESULT stall=%d pairs=%d size=%zu rt_per_s=%.1f", options.stall ? 1 : 0, options.pairs,
              options.payload_bytes, static_cast<double>(r.others.round_trips) / r.others.seconds);
  print_latency(r.others.latency);
  std::printf(" flood_sent=%llu flood_queued=%llu flood_refused=%llu detected_ms=%.0f cut_ms=%.0f"
              " flood_mib_stall_to_detect=%.2f close_code=%d",
              static_cast<unsigned long long>(r.flood_sent), static_cast<unsigned long long>(r.flood_queued),
              static_cast<unsigned long long>(r.flood_refused), r.detected_ms, r.cut_ms,
              r.detected_ms < 0 ? 0.0
                                : static_cast<double>(r.flood_bytes_at_detect - r.flood_bytes_at_stall) / 1048576.0,
              r.close_code);
  std::printf(" server_cores=%.2f generator_cores=%.2f", r.others.server_cores, r.others.generator_cores);
  print_error(r.others.errors, r.others.first_error);
  std::printf("\n");
  return r.others.errors == 0 ? 0 : 1;
}

int auth_rate(const Args& args) {
  AuthOptions options;
  options.port = args.integer("port", 0);
  options.concurrency = args.integer("concurrency", 8);
  options.window = window_of(args);
  options.server_pid = args.integer("server-pid", 0);
  const AuthResult r = run_relay_auth(options);
  std::printf("RESULT auth=%llu auth_per_s=%.1f", static_cast<unsigned long long>(r.authenticated),
              static_cast<double>(r.authenticated) / r.seconds);
  print_latency(r.latency);
  std::printf(" server_cores=%.2f generator_cores=%.2f", r.server_cores, r.generator_cores);
  print_error(r.errors, r.first_error);
  std::printf("\n");
  return r.errors == 0 && r.authenticated > 0 ? 0 : 1;
}

int idle_memory(const Args& args) {
  IdleOptions options;
  options.port = args.integer("port", 0);
  options.connections = args.integer("connections", 10000);
  options.concurrency = args.integer("concurrency", 64);
  options.server_pid = args.integer("server-pid", 0);
  options.settle_s = args.number("settle", 1.0);
  const IdleResult r = run_relay_idle(options);
  const double n = r.connected > 0 ? r.connected : 1;
  std::printf("RESULT connections=%d rss_before=%lld rss_after=%lld rss_per_conn=%.0f kernel_tcp_per_conn=%.0f",
              r.connected, static_cast<long long>(r.rss_before), static_cast<long long>(r.rss_after),
              static_cast<double>(r.rss_after - r.rss_before) / n,
              static_cast<double>(r.kernel_tcp_after - r.kernel_tcp_before) / n);
  print_error(r.errors, r.first_error);
  std::printf("\n");
  return r.errors == 0 && r.connected == options.connections ? 0 : 1;
}

// The ceiling of benchmark 5: what one core verifies per second, on exactly the bytes a relay
// verifies for an auth frame (prefix ‖ 32-byte nonce ‖ relay_id).
int verify_rate(const Args& args) {
  const KeyPair key = KeyPair::generate();
  AuthNonce nonce{};
  randombytes_buf(nonce.data(), nonce.size());
  const Bytes message = auth_signing_message(nonce, "ws://127.0.0.1:9800/relay/ws");
  const Signature signature = key.sign(Purpose::auth, message);
  const Bytes signed_bytes = signing_input(Purpose::auth, message);
  const auto& public_key = key.agent_id().public_key();
  const double seconds = args.number("duration", 1.0);
  const std::uint64_t end = steady_ns() + static_cast<std::uint64_t>(seconds * 1e9);
  std::uint64_t verified = 0;
  std::uint64_t failed = 0;
  const std::uint64_t started = steady_ns();
  std::uint64_t now = started;
  // Batches of 64 keep the clock reads out of the measurement; the loop ends at `end`.
  while (now < end) {
    for (int i = 0; i < 64; ++i) {
      if (crypto_sign_verify_detached(signature.data(), signed_bytes.data(), signed_bytes.size(), public_key.data()) ==
          0) {
        ++verified;
      } else {
        ++failed;
      }
    }
    now = steady_ns();
  }
  const double elapsed = static_cast<double>(now - started) / 1e9;
  std::printf("RESULT verify_per_s=%.1f", static_cast<double>(verified) / elapsed);
  print_error(failed, failed != 0 ? "a valid signature failed to verify" : "");
  std::printf("\n");
  return failed == 0 ? 0 : 1;
}

// Binds 127.0.0.1:0 and prints the port the kernel chose. The port is free again on exit; the
// caller starts its server on it at once (a race only with other programs doing the same).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 1;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(fd);
    return 1;
  }
  std::printf("%d\n", ntohs(address.sin_port));
  ::close(fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (sodium_init() < 0) {
    std::fprintf(stderr, "relay-bench: libsodium failed to initialise\n");
    return 2;
  }
  if (argc < 2) {
    std::fprintf(stderr, "usage: relay-bench rr|slow|auth|idle|verify|free-port [--key value ...]\n");
    return 2;
  }
  const std::string command = argv[1];
  Args args;
  for (int i = 2; i < argc; ++i) {
    const std::string key = argv[i];
    if (key.rfind("--", 0) != 0 || i + 1 >= argc) {
      std::fprintf(stderr, "relay-bench: expected --key value, got %s\n", key.c_str());
      return 2;
    }
    args.values[key.substr(2)] = argv[++i];
  }
  try {
    if (const std::string problem = self_check_envelopes(); !problem.empty()) {
      std::fprintf(stderr, "relay-bench: %s\n", problem.c_str());
      return 1;
    }
    if (command == "rr") return request_reply(args);
    if (command == "slow") return slow_consumer(args);
    if (command == "auth") return auth_rate(args);
    if (command == "idle") return idle_memory(args);
    if (command == "verify") return verify_rate(args);
    if (command == "free-port") return free_port();
    std::fprintf(stderr, "relay-bench: unknown command %s\n", command.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "relay-bench: %s\n", e.what());
    return 1;
  }
}
