// The load patterns of the relay benchmarks (issue 13). Each function opens its connections,
// runs one timed pattern and returns what it measured; main.cpp prints it. Every loop stops by
// itself at the end of its window, and a hard deadline closes whatever is still open.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "latency_histogram.hpp"

namespace agent_mesh::bench {

struct Window {
  double warmup_s = 0.5;    // traffic flows but is not measured (connections warm, caches filled)
  double duration_s = 3.0;  // the measured window
};

// Request/reply between `pairs` agent pairs with one request in flight per pair.
struct RequestReplyOptions {
  int port = 0;
  int pairs = 1;
  std::size_t payload_bytes = 256;
  Window window;
  // 0: closed loop (the next request leaves as soon as the reply arrives). Otherwise the total
  // request rate across all pairs, spread evenly; a request held back by a late reply then counts
  // from its scheduled time, so a stall also charges the requests it delayed (no coordinated
  // omission), while one sent on time counts from when it left.
  double rate = 0;
  int threads = 1;  // load-generator threads (relay target only)
  int server_pid = 0;  // if set, the server's CPU use over the window is reported
};

struct RequestReplyResult {
  std::uint64_t round_trips = 0;  // replies received inside the window
  double seconds = 0;             // the window's length
  LatencyHistogram latency;       // round-trip time per request, ns
  std::uint64_t errors = 0;       // refusals, unexpected frames, broken connections
  std::string first_error;
  double server_cores = -1;       // the server's average CPU use over the window, in cores
  double generator_cores = -1;    // the load generator's (this process), likewise
};

// Slow-consumer isolation: `pairs` request/reply pairs plus one sender flooding a sink agent
// with one-way envelopes at `flood_rate`; with `stall` the sink stops reading when the window opens.
struct SlowConsumerOptions {
  int port = 0;
  int pairs = 10;
  std::size_t payload_bytes = 256;  // the well-behaved pairs' payloads
  Window window;
  bool stall = false;
  double flood_rate = 2000;         // envelopes per second to the sink
  std::size_t flood_bytes = 4096;   // their payloads: large, so the sink's queue fills in the window
  int server_pid = 0;
};

struct SlowConsumerResult {
  RequestReplyResult others;            // the well-behaved pairs
  std::uint64_t flood_sent = 0;         // envelopes the flooder wrote
  std::uint64_t flood_bytes_at_stall = 0;
  std::uint64_t sink_bytes_read_at_stall = 0;
  // From the stall (window start) to the relay's slow_consumers_total rising, and to its
  // connections gauge falling (the TCP connection really gone); negative: not seen in the window.
  double detected_ms = -1;
  double cut_ms = -1;
  std::uint64_t flood_bytes_at_detect = 0;  // flooder bytes written by the detection
  int close_code = 0;                        // what the sink read once it resumed (0: none)
  std::uint64_t flood_queued = 0;            // `queued` answers the flooder got
  std::uint64_t flood_refused = 0;           // `undeliverable` answers the flooder got
};

// Authentication rate: `concurrency` clients each connecting, authenticating (hello, challenge,
// Ed25519 auth, welcome) and disconnecting in a loop.
struct AuthOptions {
  int port = 0;
  int concurrency = 8;
  Window window;
  int server_pid = 0;
};

struct AuthResult {
  std::uint64_t authenticated = 0;
  double seconds = 0;
  LatencyHistogram latency;  // TCP connect to welcome, ns
  std::uint64_t errors = 0;
  std::string first_error;
  double server_cores = -1;
  double generator_cores = -1;
};

// Idle memory: `connections` agents authenticate (at most `concurrency` logins in flight) and then
// sit idle; the relay's resident memory and the kernel's TCP memory are read before and after.
struct IdleOptions {
  int port = 0;
  int connections = 10000;
  int concurrency = 64;
  int server_pid = 0;     // required: whose RSS to read
  double settle_s = 1.0;  // idle time before the second reading (heartbeats, allocator settling)
};

struct IdleResult {
  int connected = 0;
  std::int64_t rss_before = 0;  // relay VmRSS, bytes
  std::int64_t rss_after = 0;
  std::int64_t kernel_tcp_before = 0;  // /proc/net/sockstat "TCP: mem" pages × page size, bytes
  std::int64_t kernel_tcp_after = 0;
  std::uint64_t errors = 0;
  std::string first_error;
};

RequestReplyResult run_relay_request_reply(const RequestReplyOptions& options);
RequestReplyResult run_nats_request_reply(const RequestReplyOptions& options);
SlowConsumerResult run_relay_slow_consumer(const SlowConsumerOptions& options);
AuthResult run_relay_auth(const AuthOptions& options);
IdleResult run_relay_idle(const IdleOptions& options);

}  // namespace agent_mesh::bench
