// The relay side of the load generator: Beast WebSocket clients on Asio C++20 coroutines. Every
// agent authenticates as protocol §6 says (hello, challenge, Ed25519 auth, welcome) with its own
// fresh key, then the pattern runs. One io_context per load-generator thread drives many
// connections (epoll), so the generator spends its CPU on frames rather than on thread switches.
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "agent_mesh/identity.hpp"
#include "agent_mesh/relay_protocol.hpp"
#include "bench_envelope.hpp"
#include "load.hpp"
#include "server_cpu.hpp"

namespace agent_mesh::bench {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
using Ws = websocket::stream<tcp::socket>;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

namespace {

// The benchmark's frames are at most a few KiB; this only has to exceed them.
constexpr std::size_t kReadMax = 2 * 1024 * 1024;
// After the window, stragglers get this long before their sockets are closed under them.
constexpr auto kGrace = std::chrono::seconds(5);

tcp::endpoint relay_endpoint(int port) {
  return {net::ip::make_address_v4("127.0.0.1"), static_cast<unsigned short>(port)};
}
std::string dialled_url(int port) { return "ws://127.0.0.1:" + std::to_string(port) + "/relay/ws"; }

std::string_view frame_text(const beast::flat_buffer& buffer) {
  return {static_cast<const char*>(buffer.cdata().data()), buffer.size()};
}

// The measured window in steady-clock ns, fixed once every connection is open.
struct Schedule {
  std::uint64_t start = 0;
  std::uint64_t measure_from = 0;
  std::uint64_t measure_to = 0;
  static Schedule from_now(const Window& window) {
    Schedule s;
    s.start = steady_ns();
    s.measure_from = s.start + static_cast<std::uint64_t>(window.warmup_s * 1e9);
    s.measure_to = s.measure_from + static_cast<std::uint64_t>(window.duration_s * 1e9);
    return s;
  }
  [[nodiscard]] bool in_window(std::uint64_t t) const noexcept { return t >= measure_from && t <= measure_to; }
};

void close_socket(Ws& ws) {
  beast::error_code ignored;
  ws.next_layer().shutdown(tcp::socket::shutdown_both, ignored);
  ws.next_layer().close(ignored);
}

// TCP, WebSocket upgrade and the §6 authentication. Throws std::runtime_error naming the step.
net::awaitable<void> open_agent(Ws& ws, int port, const KeyPair& key) {
  co_await ws.next_layer().async_connect(relay_endpoint(port), net::use_awaitable);
  // Request/reply latency must not wait on Nagle's algorithm for the previous frame's ACK.
  ws.next_layer().set_option(tcp::no_delay(true));
  // One frame per message (a client must mask; Beast masks through this buffer, so a larger
  // buffer means fewer write calls for a 4 KiB payload).
  ws.auto_fragment(false);
  ws.write_buffer_bytes(64 * 1024);
  ws.read_message_max(limits::max_control_frame_bytes);
  co_await ws.async_handshake("127.0.0.1:" + std::to_string(port), "/relay/ws", net::use_awaitable);
  ws.text(true);
  const std::string hello = serialize(ControlFrame{Hello{kProtocolVersion, key.agent_id(), std::nullopt}});
  co_await ws.async_write(net::buffer(hello), net::use_awaitable);
  beast::flat_buffer buffer;
  co_await ws.async_read(buffer, net::use_awaitable);
  auto first = parse_relay_frame(frame_text(buffer));
  const auto* challenge = first ? std::get_if<Challenge>(&*first) : nullptr;
  if (challenge == nullptr) throw std::runtime_error("expected a challenge, got " + std::string(frame_text(buffer)));
  // §6: a client signs only for the relay it dialled, so a signature can't be relayed elsewhere.
  if (!relay_ids_match(dialled_url(port), challenge->relay_id)) {
    throw std::runtime_error("relay_id mismatch: " + challenge->relay_id);
  }
  const std::string auth = serialize(ControlFrame{make_auth(key, *challenge)});
  buffer.consume(buffer.size());
  co_await ws.async_write(net::buffer(auth), net::use_awaitable);
  co_await ws.async_read(buffer, net::use_awaitable);
  auto second = parse_relay_frame(frame_text(buffer));
  const auto* welcome = second ? std::get_if<Welcome>(&*second) : nullptr;
  if (welcome == nullptr) throw std::runtime_error("expected welcome, got " + std::string(frame_text(buffer)));
  if (welcome->buffered != 0) throw std::runtime_error("fresh agent has stored envelopes");
  ws.read_message_max(kReadMax);
}

std::string describe(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception";
  }
}

struct Agent {
  explicit Agent(net::io_context& ioc) : key(KeyPair::generate()), ws(ioc) {}
  KeyPair key;
  Ws ws;
};

struct Pair {
  explicit Pair(net::io_context& ioc) : requester(ioc), responder(ioc) {}
  Agent requester;
  Agent responder;
  LatencyHistogram latency;
  std::uint64_t round_trips = 0;
  std::uint64_t errors = 0;
  std::string first_error;
  void error(std::string what) {
    ++errors;
    if (first_error.empty()) first_error = std::move(what);
  }
};

// One load-generator thread: its io_context and the pairs it drives. Pairs never cross shards,
// so their state needs no lock.
struct Shard {
  net::io_context ioc{1};
  std::vector<std::unique_ptr<Pair>> pairs;
};

// Runs every shard's io_context to completion, one thread each, then makes them reusable.
void run_shards(std::vector<std::unique_ptr<Shard>>& shards) {
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < shards.size(); ++i) threads.emplace_back([&shard = *shards[i]] { shard.ioc.run(); });
  shards[0]->ioc.run();
  for (auto& t : threads) t.join();
  for (auto& shard : shards) shard->ioc.restart();
}

// The responder answers each request with a response of the same size, until its socket closes.
net::awaitable<void> responder_loop(Pair& pair, std::size_t payload_bytes) {
  EnvelopeWriter writer(pair.responder.key.agent_id(), pair.requester.key.agent_id(), payload_bytes);
  beast::flat_buffer buffer;
  for (;;) {
    auto [read_error, read_bytes] = co_await pair.responder.ws.async_read(buffer, use_tuple);
    if (read_error) co_return;  // closed at the end of the run
    const std::string_view text = frame_text(buffer);
    const std::string_view id = envelope_id(text);
    if (id.empty()) {
      pair.error("responder got a non-envelope frame: " + std::string(text.substr(0, 200)));
      buffer.consume(buffer.size());
      continue;
    }
    std::string reply = writer.response(id);
    buffer.consume(buffer.size());
    auto [write_error, written] = co_await pair.responder.ws.async_write(net::buffer(reply), use_tuple);
    if (write_error) co_return;
  }
}

// One request in flight: send, wait for its reply (or a refusal), repeat until the window ends.
net::awaitable<void> requester_loop(Pair& pair, const Schedule& schedule, std::size_t payload_bytes,
                                    std::uint64_t interval_ns, std::uint64_t phase_ns) {
  EnvelopeWriter writer(pair.requester.key.agent_id(), pair.responder.key.agent_id(), payload_bytes);
  beast::flat_buffer buffer;
  net::steady_timer timer(co_await net::this_coro::executor);
  std::string id;
  std::uint64_t next_send = schedule.start + phase_ns;
  while (steady_ns() < schedule.measure_to) {
    std::uint64_t sent_at = 0;
    if (interval_ns != 0) {
      const std::uint64_t slot = next_send;
      next_send += interval_ns;
      if (const std::uint64_t now = steady_ns(); slot > now) {
        // On time: wait for the slot. The clock starts when the request leaves, so the load
        // generator's own timer lateness is not charged to the server.
        timer.expires_after(std::chrono::nanoseconds(slot - now));
        co_await timer.async_wait(use_tuple);
        sent_at = steady_ns();
      } else {
        // Late because the previous reply came after this slot: that delay is the server's, so
        // this request counts from its slot (no coordinated omission).
        sent_at = slot;
      }
    } else {
      sent_at = steady_ns();
    }
    const std::string request = writer.request(id);
    auto [write_error, written] = co_await pair.requester.ws.async_write(net::buffer(request), use_tuple);
    if (write_error) {
      pair.error("requester write: " + write_error.message());
      co_return;
    }
    for (;;) {
      auto [read_error, read_bytes] = co_await pair.requester.ws.async_read(buffer, use_tuple);
      if (read_error) {
        pair.error("requester read: " + read_error.message());
        co_return;
      }
      const std::string_view text = frame_text(buffer);
      if (envelope_in_reply_to(text) == id) {
        const std::uint64_t received = steady_ns();
        if (schedule.in_window(received)) {
          pair.latency.record(received - sent_at);
          ++pair.round_trips;
        }
        buffer.consume(buffer.size());
        break;
      }
      // Anything else is a refusal (`undeliverable`, e.g. rate_limited) or a stray frame: the
      // benchmark is then not measuring what it claims, so it is counted and reported.
      pair.error("requester got: " + std::string(text.substr(0, 200)));
      const bool refused = text.find(R"("type":"undeliverable")") != std::string_view::npos;
      buffer.consume(buffer.size());
      if (refused) break;  // no reply will come for this request
    }
  }
}

// Opens every pair (responder first, so no request is ever stored for an offline agent). A relay
// that does not answer within kOpenTimeout gets its sockets closed, which fails the opening.
constexpr auto kOpenTimeout = std::chrono::seconds(15);

void open_pairs(std::vector<std::unique_ptr<Shard>>& shards, int port) {
  std::string failure;
  std::mutex failure_mutex;
  for (auto& shard : shards) {
    auto remaining = std::make_shared<std::size_t>(shard->pairs.size());
    auto guard = std::make_shared<net::steady_timer>(shard->ioc, kOpenTimeout);
    guard->async_wait([&shard = *shard](beast::error_code ec) {
      if (ec) return;
      for (auto& pair : shard.pairs) {
        close_socket(pair->requester.ws);
        close_socket(pair->responder.ws);
      }
    });
    for (auto& pair : shard->pairs) {
      net::co_spawn(
          shard->ioc,
          [&pair = *pair, port]() -> net::awaitable<void> {
            co_await open_agent(pair.responder.ws, port, pair.responder.key);
            co_await open_agent(pair.requester.ws, port, pair.requester.key);
          },
          [&, remaining, guard](std::exception_ptr error) {
            if (--*remaining == 0) guard->cancel();
            if (!error) return;
            std::lock_guard lock(failure_mutex);
            if (failure.empty()) failure = describe(error);
          });
    }
    if (shard->pairs.empty()) guard->cancel();
  }
  run_shards(shards);
  if (!failure.empty()) throw std::runtime_error("opening connections: " + failure);
}

RequestReplyResult collect(std::vector<std::unique_ptr<Shard>>& shards, const Window& window) {
  RequestReplyResult result;
  result.seconds = window.duration_s;
  for (auto& shard : shards) {
    for (auto& pair : shard->pairs) {
      result.latency.merge(pair->latency);
      result.round_trips += pair->round_trips;
      result.errors += pair->errors;
      if (result.first_error.empty()) result.first_error = pair->first_error;
    }
  }
  return result;
}

// Starts the request/reply loops of a shard. When the last requester of the shard is done, or at
// the hard deadline, every socket of the shard is closed, which ends the responders.
void start_request_reply(Shard& shard, const Schedule& schedule, const RequestReplyOptions& options,
                         int total_pairs, int& first_index) {
  auto remaining = std::make_shared<std::size_t>(shard.pairs.size());
  auto deadline = std::make_shared<net::steady_timer>(shard.ioc);
  auto close_all = [&shard] {
    for (auto& pair : shard.pairs) {
      close_socket(pair->requester.ws);
      close_socket(pair->responder.ws);
    }
  };
  deadline->expires_at(std::chrono::steady_clock::time_point(std::chrono::nanoseconds(schedule.measure_to)) + kGrace);
  deadline->async_wait([close_all](beast::error_code ec) {
    if (!ec) close_all();
  });
  const std::uint64_t interval_ns =
      options.rate > 0 ? static_cast<std::uint64_t>(1e9 * total_pairs / options.rate) : 0;
  for (auto& pair : shard.pairs) {
    // Spread the paced pairs evenly over one interval, so the load is smooth, not in bursts.
    const std::uint64_t phase_ns = interval_ns * static_cast<std::uint64_t>(first_index++) /
                                   static_cast<std::uint64_t>(total_pairs);
    net::co_spawn(shard.ioc, responder_loop(*pair, options.payload_bytes), net::detached);
    net::co_spawn(shard.ioc, requester_loop(*pair, schedule, options.payload_bytes, interval_ns, phase_ns),
                  [remaining, deadline, close_all, &pair = *pair](std::exception_ptr error) {
                    if (error) pair.error(describe(error));
                    if (--*remaining == 0) {
                      deadline->cancel();
                      close_all();
                    }
                  });
  }
}

std::vector<std::unique_ptr<Shard>> make_shards(int threads, int pairs) {
  std::vector<std::unique_ptr<Shard>> shards;
  const int count = std::max(1, std::min(threads, pairs));
  for (int i = 0; i < count; ++i) shards.push_back(std::make_unique<Shard>());
  for (int i = 0; i < pairs; ++i) {
    auto& shard = *shards[static_cast<std::size_t>(i % count)];
    shard.pairs.push_back(std::make_unique<Pair>(shard.ioc));
  }
  return shards;
}

// ---- the relay's own view, for the slow-consumer benchmark ----

// One GET, bounded by 1 s in all (tcp_stream's expiry covers every step), so a busy relay delays
// the monitor's next sample rather than hanging the benchmark.
net::awaitable<std::string> http_get(int port, const std::string& target) {
  beast::tcp_stream stream(co_await net::this_coro::executor);
  stream.expires_after(std::chrono::seconds(1));
  co_await stream.async_connect(relay_endpoint(port), net::use_awaitable);
  http::request<http::empty_body> request{http::verb::get, target, 11};
  request.set(http::field::host, "127.0.0.1:" + std::to_string(port));
  co_await http::async_write(stream, request, net::use_awaitable);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  co_await http::async_read(stream, buffer, response, net::use_awaitable);
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  co_return response.body();
}

// The value of an unlabelled Prometheus sample, or -1.
double metric(const std::string& text, const std::string& name) {
  const std::string key = "\n" + name + " ";
  const auto at = text.find(key);
  if (at == std::string::npos) return -1;
  return std::strtod(text.c_str() + at + key.size(), nullptr);
}

}  // namespace

RequestReplyResult run_relay_request_reply(const RequestReplyOptions& options) {
  auto shards = make_shards(options.threads, options.pairs);
  open_pairs(shards, options.port);
  const Schedule schedule = Schedule::from_now(options.window);
  ServerCpuSampler cpu(options.server_pid, schedule.measure_from, schedule.measure_to);
  int index = 0;
  for (auto& shard : shards) start_request_reply(*shard, schedule, options, options.pairs, index);
  run_shards(shards);
  auto result = collect(shards, options.window);
  result.server_cores = cpu.cores();
  result.generator_cores = cpu.generator_cores();
  return result;
}

SlowConsumerResult run_relay_slow_consumer(const SlowConsumerOptions& options) {
  // One thread: the flood and the monitor share the pairs' io_context, so the only thing that
  // differs between the stalled run and the reference run is the sink's reading.
  auto shards = make_shards(1, options.pairs);
  Shard& shard = *shards[0];
  open_pairs(shards, options.port);
  Agent flooder(shard.ioc);
  Agent sink(shard.ioc);
  {
    std::string failure;
    net::steady_timer guard(shard.ioc, kOpenTimeout);
    guard.async_wait([&](beast::error_code ec) {
      if (ec) return;
      close_socket(sink.ws);
      close_socket(flooder.ws);
    });
    net::co_spawn(
        shard.ioc,
        [&]() -> net::awaitable<void> {
          co_await open_agent(sink.ws, options.port, sink.key);
          co_await open_agent(flooder.ws, options.port, flooder.key);
        },
        [&](std::exception_ptr error) {
          guard.cancel();
          if (error) failure = describe(error);
        });
    run_shards(shards);
    if (!failure.empty()) throw std::runtime_error("opening the flooder and sink: " + failure);
  }

  SlowConsumerResult result;
  const Schedule schedule = Schedule::from_now(options.window);
  ServerCpuSampler cpu(options.server_pid, schedule.measure_from, schedule.measure_to);
  std::uint64_t flood_bytes = 0;
  std::uint64_t sink_bytes = 0;
  bool sink_stalled = false;

  // The flood: one-way envelopes at a fixed rate (paced, so both runs offer the relay the same load).
  net::co_spawn(
      shard.ioc,
      [&]() -> net::awaitable<void> {
        EnvelopeWriter writer(flooder.key.agent_id(), sink.key.agent_id(), options.flood_bytes);
        net::steady_timer timer(co_await net::this_coro::executor);
        const auto interval = static_cast<std::uint64_t>(1e9 / options.flood_rate);
        std::uint64_t next = schedule.start;
        std::string id;
        while (steady_ns() < schedule.measure_to) {
          const std::uint64_t now = steady_ns();
          if (next > now) {
            timer.expires_after(std::chrono::nanoseconds(next - now));
            co_await timer.async_wait(use_tuple);
          }
          next += interval;
          const std::string frame = writer.request(id);
          auto [ec, n] = co_await flooder.ws.async_write(net::buffer(frame), use_tuple);
          if (ec) break;
          flood_bytes += n;
          ++result.flood_sent;
        }
      },
      net::detached);
  // The flooder reads the relay's answers (queued / undeliverable), or it would become a slow
  // consumer itself.
  net::co_spawn(
      shard.ioc,
      [&]() -> net::awaitable<void> {
        beast::flat_buffer buffer;
        for (;;) {
          auto [ec, n] = co_await flooder.ws.async_read(buffer, use_tuple);
          if (ec) co_return;
          const std::string_view text = frame_text(buffer);
          if (text.find(R"("type":"queued")") != std::string_view::npos) ++result.flood_queued;
          else if (text.find(R"("type":"undeliverable")") != std::string_view::npos) ++result.flood_refused;
          buffer.consume(buffer.size());
        }
      },
      net::detached);
  // The sink reads and drops, until the window opens in the stalled run.
  net::co_spawn(
      shard.ioc,
      [&]() -> net::awaitable<void> {
        beast::flat_buffer buffer;
        for (;;) {
          if (options.stall && steady_ns() >= schedule.measure_from) {
            sink_stalled = true;
            result.flood_bytes_at_stall = flood_bytes;
            result.sink_bytes_read_at_stall = sink_bytes;
            co_return;  // stops reading; the socket stays open
          }
          auto [ec, n] = co_await sink.ws.async_read(buffer, use_tuple);
          if (ec) co_return;
          sink_bytes += n;
          buffer.consume(buffer.size());
        }
      },
      net::detached);
  // The monitor: the relay's /metrics every 10 ms, for when it flags the sink and when the
  // connection is really gone.
  net::co_spawn(
      shard.ioc,
      [&]() -> net::awaitable<void> {
        net::steady_timer timer(co_await net::this_coro::executor);
        double slow_before = -1;
        double connections_before = -1;
        while (steady_ns() < schedule.measure_to) {
          std::string text;
          try {
            text = co_await http_get(options.port, "/metrics");
          } catch (const std::exception&) {
            text.clear();
          }
          const double slow = metric(text, "agent_mesh_relay_slow_consumers_total");
          const double connections = metric(text, "agent_mesh_relay_connections");
          const std::uint64_t now = steady_ns();
          if (now < schedule.measure_from || slow_before < 0) {
            slow_before = slow;
            connections_before = connections;
          } else {
            const double since_stall_ms = static_cast<double>(now - schedule.measure_from) / 1e6;
            if (result.detected_ms < 0 && slow > slow_before) {
              result.detected_ms = since_stall_ms;
              result.flood_bytes_at_detect = flood_bytes;
            }
            if (result.cut_ms < 0 && connections >= 0 && connections < connections_before) {
              result.cut_ms = since_stall_ms;
            }
          }
          timer.expires_after(std::chrono::milliseconds(10));
          co_await timer.async_wait(use_tuple);
        }
      },
      net::detached);
  // The flood and the reference sink end with the window (a write blocked by the relay included).
  net::steady_timer flood_end(shard.ioc);
  flood_end.expires_at(std::chrono::steady_clock::time_point(std::chrono::nanoseconds(schedule.measure_to)) +
                       std::chrono::milliseconds(100));
  flood_end.async_wait([&](beast::error_code) {
    close_socket(flooder.ws);
    if (!sink_stalled) close_socket(sink.ws);
  });
  int index = 0;
  start_request_reply(shard, schedule, RequestReplyOptions{options.port, options.pairs, options.payload_bytes,
                                                           options.window, 0, 1},
                      options.pairs, index);
  run_shards(shards);

  // The stalled sink now reads again, for at most 3 s: what the relay last said to it tells
  // whether it was cut as a slow consumer (4010).
  if (sink_stalled) {
    net::steady_timer limit(shard.ioc);
    limit.expires_after(std::chrono::seconds(3));
    limit.async_wait([&](beast::error_code ec) {
      if (!ec) close_socket(sink.ws);
    });
    net::co_spawn(
        shard.ioc,
        [&]() -> net::awaitable<void> {
          beast::flat_buffer buffer;
          for (;;) {
            auto [ec, n] = co_await sink.ws.async_read(buffer, use_tuple);
            if (ec == websocket::error::closed) result.close_code = static_cast<int>(sink.ws.reason().code);
            if (ec) break;
            buffer.consume(buffer.size());
          }
          limit.cancel();
        },
        net::detached);
    run_shards(shards);
  }
  close_socket(flooder.ws);
  close_socket(sink.ws);
  result.others = collect(shards, options.window);
  result.others.server_cores = cpu.cores();
  result.others.generator_cores = cpu.generator_cores();
  return result;
}

AuthResult run_relay_auth(const AuthOptions& options) {
  net::io_context ioc{1};
  AuthResult result;
  result.seconds = options.window.duration_s;
  // One key per client, generated before the clock starts: key generation is not what is measured.
  std::vector<KeyPair> keys;
  for (int i = 0; i < options.concurrency; ++i) keys.push_back(KeyPair::generate());
  const Schedule schedule = Schedule::from_now(options.window);
  ServerCpuSampler cpu(options.server_pid, schedule.measure_from, schedule.measure_to);
  for (int i = 0; i < options.concurrency; ++i) {
    net::co_spawn(
        ioc,
        [&, &key = keys[static_cast<std::size_t>(i)]]() -> net::awaitable<void> {
          while (steady_ns() < schedule.measure_to) {
            Ws ws(ioc);
            const std::uint64_t started = steady_ns();
            // A relay that stops answering fails the attempt instead of hanging the benchmark.
            net::steady_timer guard(ioc, kOpenTimeout);
            guard.async_wait([&ws](beast::error_code ec) {
              if (!ec) close_socket(ws);
            });
            try {
              co_await open_agent(ws, options.port, key);
              const std::uint64_t done = steady_ns();
              if (schedule.in_window(done)) {
                ++result.authenticated;
                result.latency.record(done - started);
              }
            } catch (const std::exception& e) {
              ++result.errors;
              if (result.first_error.empty()) result.first_error = e.what();
            }
            guard.cancel();
            // Hang up at once: the next iteration is a new connection of the same agent.
            close_socket(ws);
          }
        },
        net::detached);
  }
  ioc.run();
  result.server_cores = cpu.cores();
  result.generator_cores = cpu.generator_cores();
  return result;
}

namespace {

// VmRSS of `pid` in bytes (from /proc/<pid>/status), or -1.
std::int64_t resident_bytes(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;  // "VmRSS:  1234 kB"
  }
  return -1;
}

// The kernel's memory for all TCP sockets (both ends of every loopback connection), in bytes.
std::int64_t kernel_tcp_bytes() {
  std::ifstream in("/proc/net/sockstat");
  std::string word;
  while (in >> word) {
    if (word != "TCP:") continue;
    std::string key;
    std::int64_t value = 0;
    while (in >> key >> value) {
      if (key == "mem") return value * sysconf(_SC_PAGESIZE);
    }
  }
  return -1;
}

}  // namespace

IdleResult run_relay_idle(const IdleOptions& options) {
  if (options.server_pid <= 0) throw std::runtime_error("idle needs --server-pid");
  net::io_context ioc{1};
  IdleResult result;
  result.rss_before = resident_bytes(options.server_pid);
  result.kernel_tcp_before = kernel_tcp_bytes();
  std::vector<std::unique_ptr<Agent>> agents;
  agents.reserve(static_cast<std::size_t>(options.connections));
  for (int i = 0; i < options.connections; ++i) agents.push_back(std::make_unique<Agent>(ioc));
  int next = 0;
  int opened = 0;
  net::steady_timer all_open(ioc, std::chrono::steady_clock::time_point::max());
  // `concurrency` workers take agents off the list in turn, so at most that many logins are in
  // flight (the relay's listen backlog is not what is measured).
  for (int w = 0; w < std::min(options.concurrency, options.connections); ++w) {
    net::co_spawn(
        ioc,
        [&]() -> net::awaitable<void> {
          while (next < options.connections) {
            Agent& agent = *agents[static_cast<std::size_t>(next++)];
            try {
              co_await open_agent(agent.ws, options.port, agent.key);
              ++result.connected;
              // A pending read answers the relay's heartbeat pings while the agent idles.
              net::co_spawn(
                  ioc,
                  [&agent]() -> net::awaitable<void> {
                    beast::flat_buffer buffer;
                    for (;;) {
                      auto [ec, n] = co_await agent.ws.async_read(buffer, use_tuple);
                      if (ec) co_return;
                      buffer.consume(n);
                    }
                  },
                  net::detached);
            } catch (const std::exception& e) {
              ++result.errors;
              if (result.first_error.empty()) result.first_error = e.what();
            }
            if (++opened == options.connections) all_open.cancel();
          }
        },
        net::detached);
  }
  net::co_spawn(
      ioc,
      [&]() -> net::awaitable<void> {
        co_await all_open.async_wait(use_tuple);
        net::steady_timer settle(ioc, std::chrono::milliseconds(static_cast<int>(options.settle_s * 1000)));
        co_await settle.async_wait(use_tuple);
        result.rss_after = resident_bytes(options.server_pid);
        result.kernel_tcp_after = kernel_tcp_bytes();
        for (auto& agent : agents) close_socket(agent->ws);
      },
      net::detached);
  ioc.run();
  return result;
}

}  // namespace agent_mesh::bench
