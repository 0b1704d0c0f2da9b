// The only translation unit of the SDK that includes Asio/Beast: the client side of the relay
// connection (protocol §6). See relay_link.hpp for what RelayLink promises.
//
// Design, in one place:
// - One io_context, one thread, C++20 coroutines. run() is the dial loop: for each URL in turn
//   (wrapping around) it dials, authenticates and serves one connection, then backs off. Everything
//   below runs on that thread, so the state in Impl needs no locks; only the lifecycle members
//   (thread, stop_requested) are touched from other threads.
// - Per connection: a reader (the read loop in serve()) and at most one writer coroutine
//   (write_loop) draining two queues: ack frames first, then the application's envelope frames
//   (bounded by max_queued_frames). A frame leaves its queue when its write starts and goes back to
//   the front if the write fails, so nothing queued is lost to a broken connection.
// - Stored envelopes (welcome's `buffered`) are acked once on_envelope has returned for them, at
//   most 256 IDs per ack frame, flushed when 256 are pending, when the last stored one has been
//   handled, or kAckLinger after the first pending one, whichever comes first.
// - Resume tokens are kept per relay (normalised URL) and only presented to the relay that issued
//   them: a token is a bearer credential, and after a fail-over another relay must not learn it.
// - Timeouts. Dialling (resolve, TCP connect, TLS handshake, WebSocket upgrade) shares one deadline,
//   connect_timeout after the dial starts. During authentication every read must complete within
//   connect_timeout (Beast idle timeout without pings). After welcome Beast's idle timeout is
//   3 × heartbeat_ms with keep-alive pings: when nothing arrives for half of it Beast pings, and when
//   nothing arrives for the other half it drops the connection. A dead relay is therefore noticed
//   after 1.5 to 3 heartbeat intervals of silence, never later than the 3 intervals of §6, while a
//   live relay (it pings every heartbeat_ms, and answers our pings) is never dropped.
// - Lifetime. The io_context belongs to Impl, and close() stops it and joins the thread before Impl
//   can go away, so coroutines and handlers use `this` freely: once the thread is joined nothing of
//   theirs ever runs again, and whatever is still suspended is destroyed with the io_context. The
//   thread itself holds a shared_ptr<Impl>, so even a misuse (close() or destruction on the link
//   thread) cannot free Impl under a running handler.
#include "sdk/relay_link.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <deque>
#include <exception>
#include <mutex>
#include <random>
#include <thread>
#include <variant>

#include "agent_mesh/routing_header.hpp"
#include "agent_mesh/version.hpp"
#include "net/tls_client.hpp"

namespace agent_mesh::sdk {

std::chrono::milliseconds reconnect_delay(std::chrono::milliseconds initial, std::chrono::milliseconds max, unsigned attempt,
                                          double unit) {
  const auto base = static_cast<double>(std::max<std::int64_t>(0, initial.count()));
  const auto cap = static_cast<double>(std::max<std::int64_t>(0, max.count()));
  // In doubles 2^62 is exact and base * 2^62 stays finite; the cap then bounds the product, so no
  // attempt count can overflow or make the ceiling exceed `max`.
  const double ceiling = std::min(cap, std::ldexp(base, static_cast<int>(std::min(attempt, 62u))));
  // NaN fails every comparison: treat it as 0 rather than letting it reach the cast.
  const double u = unit >= 0.0 ? std::min(unit, 1.0) : 0.0;
  const double delay = std::floor(ceiling * u);
  // A cap near INT64_MAX rounds up to 2^63 as a double, which the cast could not represent.
  if (delay >= cap) return std::chrono::milliseconds(std::max<std::int64_t>(0, max.count()));
  return std::chrono::milliseconds(static_cast<std::int64_t>(delay));
}

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

// close(): how long queued frames may take to drain, then how long the close handshake may take.
constexpr auto kCloseFlushBound = std::chrono::seconds(2);
constexpr auto kCloseHandshakeBound = std::chrono::seconds(1);
// Acks of stored envelopes wait at most this long for company (protocol §6: batched, ≤ 256 IDs).
constexpr auto kAckLinger = std::chrono::milliseconds(20);
// A hostile or misconfigured welcome must not make us ping a thousand times a second, nor overflow
// the idle timeout arithmetic.
constexpr std::int64_t kMinHeartbeatMs = 500;
constexpr std::int64_t kMaxHeartbeatMs = 3600 * 1000;

auto redirect(error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); }

// What ended one connection attempt.
struct Ending {
  // The close code of the connection: the relay's, or ours when we closed it for a protocol violation.
  std::optional<std::uint16_t> close_code;
  std::string reason;
};

// The parts of a relay URL the dialler needs.
struct Target {
  bool tls = false;
  std::string host;  // for the resolver and the certificate check; IPv6 without brackets
  bool host_is_ip = false;
  std::string port;
  std::string path;         // the request target, e.g. "/relay/ws"
  std::string host_header;  // host[:port] as written in the URL
};

Result<Target> parse_target(const std::string& url) {
  // normalize_relay_url is the protocol's definition of a relay URL (no userinfo, no fragment,
  // a sane port); a URL it refuses could never match a challenge's relay_id anyway.
  if (!normalize_relay_url(url)) return fail(Errc::bad_request, "not a ws:// or wss:// relay URL: " + url);
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) return fail(Errc::bad_request, "not a ws:// or wss:// relay URL: " + url);
  Target t;
  t.tls = parsed->scheme() == "wss";
  t.host = std::string(parsed->host_address());
  t.host_is_ip = parsed->host_type() == boost::urls::host_type::ipv4 || parsed->host_type() == boost::urls::host_type::ipv6;
  if (parsed->has_port()) {
    t.port = std::string(parsed->port());
  } else {
    t.port = t.tls ? "443" : "80";
  }
  t.path = parsed->encoded_target().empty() ? "/" : std::string(parsed->encoded_target());
  t.host_header = std::string(parsed->encoded_host_and_port());
  return t;
}

std::string describe_close(const websocket::close_reason& reason) {
  std::string text = std::to_string(reason.code);
  if (!reason.reason.empty()) text += " " + std::string(reason.reason.data(), reason.reason.size());
  return text;
}

std::string describe_io_error(const error_code& ec) {
  if (ec == beast::error::timeout) return "timed out";
  return ec.message();
}

std::string_view text_of(const beast::flat_buffer& buffer) {
  return {static_cast<const char*>(buffer.data().data()), buffer.size()};
}

// The `id` of an envelope frame, for its ack: from the routing header when it is valid, otherwise
// whatever UUID `id` the scan could still read (a stored envelope the receiver drops is acked too).
std::optional<Uuid> envelope_id(std::string_view frame, std::size_t max_bytes) {
  std::optional<Uuid> id;
  auto header = scan_routing_header(frame, max_bytes, &id);
  if (header) return header->id;
  return id;
}

// A frame from the relay that ends the connection: we close with `code`.
struct Violation {
  std::uint16_t code = close_code::bad_request;
  std::string reason;
};

Violation malformed(const Error& error) {
  const std::uint16_t code =
      error.code == Errc::unsupported_version ? close_code::unsupported_version : close_code::bad_request;
  return Violation{code, "malformed control frame from the relay: " + error.describe()};
}

// Per connection, shared by its reader and its writer.
struct ConnState {
  bool alive = true;     // false once the reader is done with the connection
  bool writing = false;  // a write_loop runs
  std::string write_error;
  std::string relay_error;  // the last `error` frame, for the reason of the close that follows
};

ConnectionEvent make_event(ConnectionEvent::Kind kind, const std::string& url) {
  ConnectionEvent event;
  event.kind = kind;
  event.relay_url = url;
  return event;
}

}  // namespace

struct RelayLink::Impl {
  Impl(RelayLinkOptions o, RelayLinkHandlers h) : options(std::move(o)), handlers(std::move(h)) {}

  RelayLinkOptions options;
  RelayLinkHandlers handlers;
  // Declared before the io_context so that it outlives the TLS streams the io_context may still own.
  std::shared_ptr<ssl::context> tls_context;
  asio::io_context io{1};

  // ---- lifecycle: start()/close() callers, under `lifecycle` ----
  std::mutex lifecycle;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::thread thread;
  std::atomic<std::thread::id> thread_id{};
  std::atomic<bool> stop_requested{false};

  // ---- link thread only ----
  asio::steady_timer wakeup{io};
  std::uint64_t wakeup_generation = 0;
  std::function<void()> wakeup_fn;
  asio::steady_timer backoff{io};
  asio::steady_timer changed{io};  // wakes shut_down() when the writer or the connection finishes
  std::mt19937_64 random{std::random_device{}()};

  bool connected = false;
  bool closing = false;
  bool gave_up = false;
  std::string url;
  std::size_t url_index = 0;
  unsigned attempt = 0;
  std::deque<std::string> queue;     // the application's envelope frames (bounded)
  std::deque<std::string> acks_out;  // ack frames, written before the envelopes
  // The resume token and the (normalised) relay that issued it: a token is a bearer credential for
  // that relay, so it is never shown to another one.
  struct ResumeToken {
    std::string relay;
    std::string token;
  };
  std::optional<ResumeToken> resume;

  // Acknowledgement of stored envelopes (§6).
  std::int64_t stored_remaining = 0;
  std::vector<Uuid> pending_acks;
  asio::steady_timer ack_timer{io};
  bool ack_timer_armed = false;

  // The live connection (after welcome), if any.
  std::shared_ptr<ConnState> live;
  std::function<void()> kick_writer;
  std::function<void(std::uint16_t)> close_live;

  // ---- handlers, shielded: a throwing application handler must not take the link down ----

  template <class F>
  void guarded(std::string_view what, F&& call) {
    try {
      call();
    } catch (const std::exception& e) {
      log(LogLevel::error, "relay.handler_threw", std::string(what) + ": " + e.what());
    } catch (...) {
      log(LogLevel::error, "relay.handler_threw", std::string(what));
    }
  }
  void log(LogLevel level, std::string_view event, std::string_view detail) {
    if (!handlers.on_log) return;
    try {
      handlers.on_log(level, event, detail);
    } catch (...) {  // nowhere left to report it
    }
  }
  void state(const ConnectionEvent& event) {
    if (handlers.on_state) guarded("on_state", [&] { handlers.on_state(event); });
  }

  void notify() { changed.cancel(); }

  // Waits until done() or the deadline; notify() makes it look again.
  asio::awaitable<void> wait_until(std::function<bool()> done, Clock::time_point deadline) {
    while (!done() && Clock::now() < deadline) {
      changed.expires_at(deadline);
      error_code ignored;
      co_await changed.async_wait(redirect(ignored));
    }
  }

  template <class Awaitable>
  void spawn(Awaitable&& awaitable) {
    asio::co_spawn(io, std::forward<Awaitable>(awaitable), [this](const std::exception_ptr& failure) {
      if (failure) internal_failure(failure);
    });
  }

  // A coroutine died with an exception (only allocation failures are expected here): the link can
  // no longer keep its promises, so it says so and stops.
  void internal_failure(const std::exception_ptr& failure) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    if (closing || gave_up) return;
    give_up(std::nullopt, "internal error in the relay link: " + what);
  }

  // ---- sending ----

  bool enqueue(std::string frame) {
    if (gave_up || closing) return false;
    if (frame.size() > options.max_frame_bytes) {
      // The relay would close the connection for it, and it would be sent again after every reconnect.
      log(LogLevel::warn, "relay.frame_too_large", std::to_string(frame.size()) + " bytes");
      return false;
    }
    if (queue.size() >= options.max_queued_frames) return false;
    queue.push_back(std::move(frame));
    if (kick_writer) kick_writer();
    return true;
  }

  template <class Ws>
  void start_writer(const std::shared_ptr<Ws>& ws, const std::shared_ptr<ConnState>& conn) {
    if (conn->writing || !conn->alive || (queue.empty() && acks_out.empty())) return;
    conn->writing = true;
    spawn(write_loop(ws, conn));
  }

  template <class Ws>
  asio::awaitable<void> write_loop(std::shared_ptr<Ws> ws, std::shared_ptr<ConnState> conn) {
    while (conn->alive) {
      std::deque<std::string>* source = nullptr;
      if (!acks_out.empty()) {
        source = &acks_out;
      } else if (!queue.empty()) {
        source = &queue;
      } else {
        break;
      }
      std::string frame = std::move(source->front());
      source->pop_front();
      error_code ec;
      co_await ws->async_write(asio::buffer(frame), redirect(ec));
      if (ec) {
        // Back to the front: the next connection sends it first (receivers drop duplicate IDs).
        source->push_front(std::move(frame));
        if (conn->alive) {
          conn->write_error = describe_io_error(ec);
          // Wake the reader, which reports the loss and reconnects.
          error_code ignored;
          beast::get_lowest_layer(*ws).socket().close(ignored);
        }
        break;
      }
    }
    conn->writing = false;
    notify();
  }

  // ---- acknowledging stored envelopes ----

  void flush_acks() {
    while (!pending_acks.empty()) {
      const std::size_t n = std::min(pending_acks.size(), limits::max_ack_ids);
      log(LogLevel::debug, "relay.acked", std::to_string(n) + " stored envelopes");
      Ack ack;
      ack.ids.assign(pending_acks.begin(), pending_acks.begin() + static_cast<std::ptrdiff_t>(n));
      pending_acks.erase(pending_acks.begin(), pending_acks.begin() + static_cast<std::ptrdiff_t>(n));
      // Outside the bound of `queue`: acks are few (one per stored envelope) and dropping one would
      // only cause a redelivery.
      acks_out.push_back(serialize(ack));
    }
    if (kick_writer) kick_writer();
  }

  void ack(const Uuid& id) {
    pending_acks.push_back(id);
    if (pending_acks.size() >= limits::max_ack_ids || stored_remaining == 0) {
      flush_acks();
      return;
    }
    arm_ack_timer();
  }

  // Acks left pending are flushed by a timer, at most kAckLinger after the first of them. (Flushing
  // whenever the read loop goes idle gave about one ack frame per 4 envelopes: the relay writes a
  // replay frame by frame, so the reader is idle between most of them. Each ack frame costs the
  // relay a store transaction.)
  void arm_ack_timer() {
    if (ack_timer_armed) return;
    ack_timer_armed = true;
    ack_timer.expires_after(kAckLinger);
    ack_timer.async_wait([this](const error_code& ec) {
      if (ec) return;
      ack_timer_armed = false;
      flush_acks();
    });
  }

  // ---- frames from the relay after welcome ----

  void on_envelope_frame(std::string_view text) {
    const bool stored = stored_remaining > 0;
    std::optional<Uuid> id;
    if (stored) {
      --stored_remaining;
      id = envelope_id(text, options.max_frame_bytes);
    }
    if (handlers.on_envelope) guarded("on_envelope", [&] { handlers.on_envelope(text); });
    if (!stored) return;
    // Processed or dropped, whatever the verdict (§6): acked so that it is not delivered again.
    if (id) {
      ack(*id);
    } else {
      log(LogLevel::warn, "relay.unackable", "a stored envelope without a readable id; the relay will redeliver it");
      if (stored_remaining == 0) flush_acks();
    }
  }

  std::optional<Violation> on_frame(std::string_view text, ConnState& conn) {
    auto kind = classify_frame(text);
    // The relay's routing checks never forward such a frame: whoever sent it is not a working relay.
    if (!kind) return Violation{close_code::bad_request, "unreadable frame from the relay: " + kind.error().describe()};
    if (*kind == FrameKind::envelope) {
      on_envelope_frame(text);
      return std::nullopt;
    }
    auto frame = parse_relay_frame(text);
    if (!frame) return malformed(frame.error());
    if (const auto* queued = std::get_if<Queued>(&*frame)) {
      if (handlers.on_queued) guarded("on_queued", [&] { handlers.on_queued(*queued); });
    } else if (const auto* undeliverable = std::get_if<Undeliverable>(&*frame)) {
      if (handlers.on_undeliverable) guarded("on_undeliverable", [&] { handlers.on_undeliverable(*undeliverable); });
    } else if (const auto* error = std::get_if<ErrorFrame>(&*frame)) {
      // The relay closes right after an error; the close's reason will name it.
      conn.relay_error = std::string(to_string(error->code)) + ": " + error->message;
      log(LogLevel::warn, "relay.error", conn.relay_error);
    } else if (!std::holds_alternative<Pong>(*frame)) {
      return Violation{close_code::bad_request,
                       "unexpected " + std::string(frame_type(*frame)) + " frame from the relay after welcome"};
    }
    return std::nullopt;
  }

  // ---- one connection ----

  template <class Ws>
  asio::awaitable<void> close_ws(std::shared_ptr<Ws> ws, std::uint16_t code) {
    error_code ignored;
    co_await ws->async_close(websocket::close_reason(code), redirect(ignored));
  }

  // Reads one message (the caller checks that it is text: §6 has no binary frames).
  template <class Ws>
  asio::awaitable<error_code> read_message(Ws& ws, beast::flat_buffer& buffer) {
    buffer.clear();
    error_code ec;
    co_await ws.async_read(buffer, redirect(ec));
    co_return ec;
  }

  static Violation binary_frame() { return Violation{close_code::bad_request, "a binary frame from the relay"}; }

  // The close code the relay sent, if it sent one.
  template <class Ws>
  static std::optional<std::uint16_t> received_close_code(const Ws& ws) {
    if (ws.reason().code == 0) return std::nullopt;
    return static_cast<std::uint16_t>(ws.reason().code);
  }

  template <class Ws>
  asio::awaitable<Ending> violation(Ws& ws, Violation v) {
    error_code ignored;
    co_await ws.async_close(websocket::close_reason(v.code), redirect(ignored));
    co_return Ending{v.code, v.reason + " (closed with " + std::to_string(v.code) + ")"};
  }

  // `when`: empty, or " during authentication" and the like.
  template <class Ws>
  Ending read_failure(Ws& ws, const error_code& ec, std::string_view when, const ConnState* conn) {
    Ending ending;
    if (ec == websocket::error::closed) {
      ending.close_code = received_close_code(ws);
      ending.reason = "the relay closed the connection" + std::string(when) + " (" + describe_close(ws.reason()) + ")";
      if (conn != nullptr && !conn->relay_error.empty()) ending.reason += "; relay error " + conn->relay_error;
    } else if (conn != nullptr && !conn->write_error.empty()) {
      ending.reason = "connection lost" + std::string(when) + ": write failed: " + conn->write_error;
    } else {
      ending.reason = "connection lost" + std::string(when) + ": " + describe_io_error(ec);
    }
    return ending;
  }

  // After an `error` frame the relay closes; the close code says whether to retry (4003: never).
  template <class Ws>
  asio::awaitable<Ending> refused(Ws& ws, const ErrorFrame& error) {
    log(LogLevel::warn, "relay.error", std::string(to_string(error.code)) + ": " + error.message);
    Ending ending;
    ending.reason = "the relay refused: " + std::string(to_string(error.code)) + ": " + error.message;
    beast::flat_buffer buffer;
    error_code ec;
    do {
      ec = co_await read_message(ws, buffer);
    } while (!ec);
    if (ec == websocket::error::closed) ending.close_code = received_close_code(ws);
    if (!ending.close_code) ending.close_code = close_code_for(error.code);
    if (ending.close_code) ending.reason += " (close " + std::to_string(*ending.close_code) + ")";
    co_return ending;
  }

  // hello → challenge → auth → welcome (§6). nullopt: `ending` says why not.
  template <class Ws>
  asio::awaitable<std::optional<Welcome>> authenticate(Ws& ws, const std::string& dialled, Ending& ending, bool& resumed) {
    Hello hello;
    hello.agent_id = options.identity.agent_id();
    const auto relay = normalize_relay_url(dialled).value_or(dialled);
    if (resume && resume->relay == relay) {
      hello.resume = std::move(resume->token);
      resume.reset();  // single use (§6): consumed whatever happens next
    }
    const std::string hello_text = serialize(hello);
    error_code ec;
    co_await ws.async_write(asio::buffer(hello_text), redirect(ec));
    if (ec) {
      ending = read_failure(ws, ec, " sending hello", nullptr);
      co_return std::nullopt;
    }
    bool challenged = false;
    beast::flat_buffer buffer;
    for (;;) {
      ec = co_await read_message(ws, buffer);
      if (ec) {
        ending = read_failure(ws, ec, " during authentication", nullptr);
        co_return std::nullopt;
      }
      if (!ws.got_text()) {
        ending = co_await violation(ws, binary_frame());
        co_return std::nullopt;
      }
      auto frame = parse_relay_frame(text_of(buffer));
      if (!frame) {
        ending = co_await violation(ws, malformed(frame.error()));
        co_return std::nullopt;
      }
      if (auto* welcome = std::get_if<Welcome>(&*frame)) {
        if (!challenged && !hello.resume) {
          ending = co_await violation(ws, Violation{close_code::bad_request, "welcome without authentication"});
          co_return std::nullopt;
        }
        resumed = !challenged;
        co_return std::move(*welcome);
      }
      if (const auto* error = std::get_if<ErrorFrame>(&*frame)) {
        ending = co_await refused(ws, *error);
        co_return std::nullopt;
      }
      const auto* challenge = std::get_if<Challenge>(&*frame);
      if (challenge == nullptr || challenged) {
        ending = co_await violation(
            ws, Violation{close_code::bad_request, "unexpected " + std::string(frame_type(*frame)) + " frame during authentication"});
        co_return std::nullopt;
      }
      challenged = true;
      const std::string& expected = options.expected_relay_id ? *options.expected_relay_id : dialled;
      if (!relay_ids_match(expected, challenge->relay_id)) {
        // Signing would hand this relay an auth for another one (§6): abort before signing.
        error_code ignored;
        co_await ws.async_close(websocket::close_reason(close_code::normal), redirect(ignored));
        ending.reason = "relay_id mismatch: expected " + expected + " but the relay calls itself " + challenge->relay_id +
                        " (not authenticating; set the expected relay ID if this relay is right)";
        co_return std::nullopt;
      }
      const std::string auth_text = serialize(make_auth(options.identity, *challenge));
      co_await ws.async_write(asio::buffer(auth_text), redirect(ec));
      if (ec) {
        ending = read_failure(ws, ec, " sending auth", nullptr);
        co_return std::nullopt;
      }
    }
  }

  template <class Ws>
  void go_live(const std::shared_ptr<Ws>& ws, const std::shared_ptr<ConnState>& conn, const std::string& dialled,
               const Welcome& welcome, bool resumed) {
    resume = ResumeToken{normalize_relay_url(dialled).value_or(dialled), welcome.session_token};
    stored_remaining = welcome.buffered;
    ws->read_message_max(options.max_frame_bytes);
    const std::int64_t heartbeat = std::clamp(welcome.heartbeat_ms, kMinHeartbeatMs, kMaxHeartbeatMs);
    websocket::stream_base::timeout timeouts{};
    timeouts.handshake_timeout = options.connect_timeout;  // bounds our close handshake
    timeouts.idle_timeout = std::chrono::milliseconds(3 * heartbeat);
    timeouts.keep_alive_pings = true;
    ws->set_option(timeouts);

    live = conn;
    kick_writer = [this, ws, conn] { start_writer(ws, conn); };
    close_live = [this, ws](std::uint16_t code) { spawn(close_ws(ws, code)); };
    connected = true;
    attempt = 0;
    log(LogLevel::info, "relay.connected",
        dialled + (resumed ? " (resumed)" : "") + ", " + std::to_string(welcome.buffered) + " stored envelopes follow");
    auto event = make_event(ConnectionEvent::Kind::connected, dialled);
    event.resumed = resumed;
    event.buffered = welcome.buffered;
    state(event);
    // Acks left over from the previous connection, then the frames queued meanwhile, in order.
    flush_acks();
  }

  void go_dead(const std::shared_ptr<ConnState>& conn) {
    conn->alive = false;
    connected = false;
    live.reset();
    kick_writer = nullptr;
    close_live = nullptr;
    stored_remaining = 0;
    // Still worth sending on the next connection: the relay deletes what is acked, whichever
    // connection carried the ack.
    flush_acks();
    notify();
  }

  // One connection over an open WebSocket, from hello to close.
  template <class Ws>
  asio::awaitable<Ending> serve(std::shared_ptr<Ws> ws, std::string dialled) {
    Ending ending;
    bool resumed = false;
    auto welcome = co_await authenticate(*ws, dialled, ending, resumed);
    if (!welcome) co_return ending;
    auto conn = std::make_shared<ConnState>();
    go_live(ws, conn, dialled, *welcome, resumed);
    beast::flat_buffer buffer;
    for (;;) {
      const error_code ec = co_await read_message(*ws, buffer);
      if (ec) {
        ending = read_failure(*ws, ec, "", conn.get());
        break;
      }
      std::optional<Violation> violated;
      if (ws->got_text()) {
        violated = on_frame(text_of(buffer), *conn);
      } else {
        violated = binary_frame();
      }
      if (violated) {
        ending = co_await violation(*ws, std::move(*violated));
        break;
      }
    }
    // A write still pending (behind a peer that stopped reading) fails now, so its frame is back at
    // the front of its queue long before the next connection's welcome lets anything be written.
    error_code ignored;
    beast::get_lowest_layer(*ws).socket().close(ignored);
    go_dead(conn);
    co_return ending;
  }

  // The WebSocket upgrade (within the dial deadline), then serve().
  template <class Ws>
  asio::awaitable<Ending> upgrade_and_serve(std::shared_ptr<Ws> ws, Target target, std::string dialled,
                                            Clock::time_point deadline) {
    beast::get_lowest_layer(*ws).expires_never();  // from here on Beast's own timeouts apply
    ws->text(true);
    ws->auto_fragment(false);  // one envelope, one frame
    ws->read_message_max(limits::max_control_frame_bytes);
    websocket::permessage_deflate no_compression;
    no_compression.client_enable = false;
    ws->set_option(no_compression);
    ws->set_option(websocket::stream_base::decorator([](websocket::request_type& request) {
      request.set(beast::http::field::user_agent, "agent-mesh-sdk/" + std::string(kVersion));
    }));
    websocket::stream_base::timeout timeouts{};
    timeouts.handshake_timeout =
        std::max(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()), std::chrono::milliseconds(1));
    // Authentication: every frame of the relay must arrive within connect_timeout.
    timeouts.idle_timeout = options.connect_timeout;
    timeouts.keep_alive_pings = false;
    ws->set_option(timeouts);
    websocket::response_type response;
    error_code ec;
    co_await ws->async_handshake(response, target.host_header, target.path, redirect(ec));
    if (ec) {
      std::string reason = "WebSocket handshake with " + dialled + " failed: " + describe_io_error(ec);
      if (response.result_int() != 0) reason += " (HTTP " + std::to_string(response.result_int()) + ")";
      co_return Ending{std::nullopt, std::move(reason)};
    }
    Ending ending = co_await serve(std::move(ws), std::move(dialled));
    co_return ending;
  }

  Result<std::shared_ptr<ssl::context>> tls() {
    if (!tls_context) {
      auto made = net::make_tls_client_context(options.ca_file);
      if (!made) return made.error();
      tls_context = *made;
    }
    return tls_context;
  }

  asio::awaitable<Result<tcp::resolver::results_type>> resolve(const Target& target, Clock::time_point deadline) {
    auto resolver = std::make_shared<tcp::resolver>(io);
    asio::steady_timer guard(io);
    guard.expires_at(deadline);
    guard.async_wait([resolver](const error_code& ec) {
      if (!ec) resolver->cancel();
    });
    error_code ec;
    auto results = co_await resolver->async_resolve(target.host, target.port, redirect(ec));
    guard.cancel();
    if (ec == asio::error::operation_aborted) co_return fail(Errc::timeout, "resolving " + target.host + " timed out");
    if (ec) co_return fail(Errc::unreachable, "cannot resolve " + target.host + ": " + ec.message());
    co_return results;
  }

  // Dials one URL and serves the connection until it ends.
  asio::awaitable<Ending> dial(std::string dialled) {
    auto target = parse_target(dialled);
    if (!target) co_return Ending{std::nullopt, target.error().message};
    const auto deadline = Clock::now() + options.connect_timeout;
    auto endpoints = co_await resolve(*target, deadline);
    if (!endpoints) co_return Ending{std::nullopt, endpoints.error().message};
    beast::tcp_stream stream(io);
    stream.expires_at(deadline);
    error_code ec;
    co_await stream.async_connect(*endpoints, redirect(ec));
    if (ec) co_return Ending{std::nullopt, "cannot connect to " + dialled + ": " + describe_io_error(ec)};
    // Envelopes are small and latency matters more than segment count.
    stream.socket().set_option(tcp::no_delay(true), ec);
    if (!target->tls) {
      auto ws = std::make_shared<websocket::stream<beast::tcp_stream>>(std::move(stream));
      Ending ending = co_await upgrade_and_serve(std::move(ws), std::move(*target), std::move(dialled), deadline);
      co_return ending;
    }
    auto context = tls();
    if (!context) co_return Ending{std::nullopt, context.error().message};
    auto ws = std::make_shared<websocket::stream<ssl::stream<beast::tcp_stream>>>(std::move(stream), **context);
    if (auto prepared = net::prepare_tls_client(ws->next_layer().native_handle(), target->host, target->host_is_ip);
        !prepared) {
      co_return Ending{std::nullopt, prepared.error().message};
    }
    co_await ws->next_layer().async_handshake(ssl::stream_base::client, redirect(ec));  // within the deadline
    if (ec) co_return Ending{std::nullopt, "TLS handshake with " + dialled + " failed: " + describe_io_error(ec)};
    Ending ending = co_await upgrade_and_serve(std::move(ws), std::move(*target), std::move(dialled), deadline);
    co_return ending;
  }

  void give_up(std::optional<std::uint16_t> code, const std::string& reason) {
    gave_up = true;
    queue.clear();
    acks_out.clear();
    pending_acks.clear();
    log(LogLevel::error, "relay.gave_up", reason);
    auto event = make_event(ConnectionEvent::Kind::gave_up, url);
    event.close_code = code;
    event.reason = reason;
    state(event);
  }

  asio::awaitable<void> run() {
    if (options.urls.empty()) {
      give_up(std::nullopt, "no relay URLs configured; not connecting");
      co_return;
    }
    while (!closing) {
      url = options.urls[url_index % options.urls.size()];
      log(LogLevel::info, "relay.connecting", url);
      const Ending ending = co_await dial(url);
      if (closing) co_return;  // shut_down() reports
      if (ending.close_code == close_code::replaced) {
        give_up(ending.close_code, "replaced: another process connected as this agent (close 4009); not reconnecting");
        co_return;
      }
      if (ending.close_code == close_code::revoked) {
        give_up(ending.close_code, "revoked: the relay refuses this agent's key (close 4003); not reconnecting");
        co_return;
      }
      // Fail over: the next URL after any close or failed dial, wrapping around.
      ++url_index;
      const auto delay = reconnect_delay(options.reconnect_initial, options.reconnect_max, attempt,
                                         std::uniform_real_distribution<double>(0.0, 1.0)(random));
      if (attempt < 64) ++attempt;
      log(LogLevel::warn, "relay.disconnected",
          url + ": " + ending.reason + "; retrying in " + std::to_string(delay.count()) + " ms");
      auto event = make_event(ConnectionEvent::Kind::disconnected, url);
      event.close_code = ending.close_code;
      event.reason = ending.reason;
      event.will_retry = true;
      event.retry_in = delay;
      state(event);
      if (closing) co_return;
      backoff.expires_after(delay);
      error_code ignored;
      co_await backoff.async_wait(redirect(ignored));
    }
  }

  // close(): flush what is queued (bounded), close with 1000, report, stop the io_context.
  asio::awaitable<void> shut_down() {
    const bool was_gave_up = gave_up;
    closing = true;
    backoff.cancel();
    wakeup.cancel();
    wakeup_fn = nullptr;
    const bool was_connected = connected;
    if (connected) {
      flush_acks();
      co_await wait_until([this] { return !connected || (queue.empty() && acks_out.empty() && !(live && live->writing)); },
                          Clock::now() + kCloseFlushBound);
    }
    if (connected && close_live) {
      close_live(close_code::normal);
      co_await wait_until([this] { return !connected; }, Clock::now() + kCloseHandshakeBound);
    }
    log(LogLevel::info, "relay.closed", was_connected ? url + " (close 1000)" : url);
    if (!was_gave_up) {
      auto event = make_event(ConnectionEvent::Kind::gave_up, url);
      if (was_connected) event.close_code = close_code::normal;
      event.reason = "closed: the application closed the link";
      state(event);
    }
    work.reset();
    io.stop();
  }

  void thread_main() {
    thread_id = std::this_thread::get_id();
    // A post()ed function or wake-up that throws escapes io.run(); the loop goes on without it.
    for (;;) {
      try {
        io.run();
        return;
      } catch (const std::exception& e) {
        log(LogLevel::error, "relay.handler_threw", e.what());
      } catch (...) {
        log(LogLevel::error, "relay.handler_threw", "unknown exception");
      }
    }
  }
};

RelayLink::RelayLink(RelayLinkOptions options, RelayLinkHandlers handlers)
    : impl_(std::make_shared<Impl>(std::move(options), std::move(handlers))) {}

RelayLink::~RelayLink() {
  close();
  std::lock_guard lock(impl_->lifecycle);
  // Only when close() ran on the link thread itself: the thread owns a reference to Impl and ends
  // on its own once the shutdown it started completes.
  if (impl_->thread.joinable()) impl_->thread.detach();
}

void RelayLink::start() {
  Impl& impl = *impl_;
  std::lock_guard lock(impl.lifecycle);
  if (impl.stop_requested || impl.thread.joinable()) return;
  impl.work.emplace(impl.io.get_executor());
  impl.spawn(impl.run());
  impl.thread = std::thread([self = impl_] { self->thread_main(); });
}

void RelayLink::post(std::function<void()> fn) {
  if (impl_->stop_requested) return;
  asio::post(impl_->io, std::move(fn));
}

void RelayLink::set_wakeup(std::chrono::steady_clock::time_point when, std::function<void()> fn) {
  Impl& impl = *impl_;
  if (impl.closing) return;
  // A wait that already completed cannot be cancelled: the generation tells its handler it is stale.
  const std::uint64_t generation = ++impl.wakeup_generation;
  impl.wakeup_fn = std::move(fn);
  impl.wakeup.expires_at(when);
  impl.wakeup.async_wait([&impl, generation](const error_code& ec) {
    if (ec || impl.closing || generation != impl.wakeup_generation) return;
    auto due = std::move(impl.wakeup_fn);
    impl.wakeup_fn = nullptr;
    if (due) due();
  });
}

bool RelayLink::send(std::string frame) { return impl_->enqueue(std::move(frame)); }

bool RelayLink::connected() const { return impl_->connected; }

std::string RelayLink::current_url() const { return impl_->url; }

void RelayLink::close() {
  Impl& impl = *impl_;
  std::lock_guard lock(impl.lifecycle);
  const bool first = !impl.stop_requested.exchange(true);
  if (!impl.thread.joinable()) return;
  if (first) impl.spawn(impl.shut_down());
  // Misuse (the header says: not from the link thread): joining would deadlock, so the shutdown
  // just proceeds on its own.
  if (on_link_thread()) return;
  impl.thread.join();
}

bool RelayLink::on_link_thread() const { return std::this_thread::get_id() == impl_->thread_id.load(); }

}  // namespace agent_mesh::sdk
