// The only translation unit of the SDK that includes Beast: the relay connection (protocol §6).
#include "sdk/relay_link.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
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
#include <cmath>
#include <deque>
#include <random>
#include <thread>

#include "agent_mesh/routing_header.hpp"
#include "agent_mesh/version.hpp"
#include "net/tls_client.hpp"

namespace agent_mesh::sdk {

std::chrono::milliseconds reconnect_delay(std::chrono::milliseconds initial, std::chrono::milliseconds max, unsigned attempt,
                                          double unit) {
  const double base = static_cast<double>(std::max<std::int64_t>(0, initial.count()));
  const double cap = static_cast<double>(std::max<std::int64_t>(0, max.count()));
  // 2^attempt overflows nothing as a double; the cap keeps the product finite and bounded.
  const double ceiling = std::min(cap, base * std::pow(2.0, std::min(attempt, 62u)));
  const double clamped_unit = std::clamp(unit, 0.0, 1.0);
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::floor(ceiling * clamped_unit)));
}

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

// What ended one connection.
struct Ending {
  std::optional<std::uint16_t> close_code;
  std::string reason;
  bool welcomed = false;
};

struct Target {
  bool tls = false;
  std::string host;
  bool host_is_ip = false;
  std::string port;
  std::string path;        // request target, "/relay/ws"
  std::string host_header;
};

Result<Target> parse_target(const std::string& url) {
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) return fail(Errc::bad_request, "relay URL is not an absolute ws:// or wss:// URL: " + url);
  Target t;
  const std::string scheme(parsed->scheme());
  if (scheme == "wss") {
    t.tls = true;
  } else if (scheme != "ws") {
    return fail(Errc::bad_request, "relay URL scheme must be ws or wss: " + url);
  }
  t.host = std::string(parsed->host_address());
  t.host_is_ip = parsed->host_type() == boost::urls::host_type::ipv4 || parsed->host_type() == boost::urls::host_type::ipv6;
  if (t.host.empty()) return fail(Errc::bad_request, "relay URL has no host: " + url);
  t.port = parsed->has_port() ? std::string(parsed->port()) : (t.tls ? "443" : "80");
  t.path = parsed->encoded_target().empty() ? "/" : std::string(parsed->encoded_target());
  t.host_header = std::string(parsed->encoded_host_and_port());
  return t;
}

}  // namespace

struct RelayLink::Impl : std::enable_shared_from_this<Impl> {
  Impl(RelayLinkOptions o, RelayLinkHandlers h) : options(std::move(o)), handlers(std::move(h)), wakeup(io), backoff(io) {}

  RelayLinkOptions options;
  RelayLinkHandlers handlers;
  asio::io_context io{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::thread thread;
  std::atomic<std::thread::id> thread_id{};
  std::atomic<bool> stopped{false};
  asio::steady_timer wakeup;
  std::function<void()> wakeup_fn;
  asio::steady_timer backoff;
  std::mt19937_64 random{std::random_device{}()};

  // ---- I/O thread state ----
  bool connected = false;
  bool closing = false;
  bool gave_up = false;
  bool writing = false;
  std::string url;
  std::deque<std::string> queue;
  std::optional<std::string> resume_token;
  std::size_t url_index = 0;
  unsigned attempt = 0;
  std::int64_t stored_remaining = 0;
  std::vector<Uuid> acks;
  bool challenged = false;  // the last authentication went through a challenge (no resume)
  // Starts the writer of the live connection; closes it (set per connection).
  std::function<void()> kick_writer;
  std::function<void(std::uint16_t)> close_connection;

  void log(LogLevel level, std::string_view event, std::string_view detail) const {
    if (handlers.on_log) handlers.on_log(level, event, detail);
  }
  void state(ConnectionEvent event) const {
    if (handlers.on_state) handlers.on_state(event);
  }

  bool enqueue(std::string frame) {
    if (gave_up || queue.size() >= options.max_queued_frames) return false;
    queue.push_back(std::move(frame));
    if (connected && kick_writer) kick_writer();
    return true;
  }

  void flush_acks() {
    while (!acks.empty()) {
      Ack ack;
      const std::size_t n = std::min(acks.size(), limits::max_ack_ids);
      ack.ids.assign(acks.begin(), acks.begin() + static_cast<std::ptrdiff_t>(n));
      acks.erase(acks.begin(), acks.begin() + static_cast<std::ptrdiff_t>(n));
      // Acks bypass the bound: dropping one only means a redelivery, but they are tiny and few.
      queue.push_back(serialize(ack));
    }
    if (connected && kick_writer) kick_writer();
  }

  // One frame from the relay after welcome.
  void on_frame(std::string_view text) {
    auto kind = classify_frame(text);
    if (!kind) {
      log(LogLevel::warn, "relay.frame_dropped", kind.error().describe());
      return;
    }
    if (*kind == FrameKind::envelope) {
      std::optional<Uuid> stored_id;
      if (stored_remaining > 0) {
        --stored_remaining;
        std::optional<Uuid> any_id;
        auto header = scan_routing_header(text, options.max_frame_bytes, &any_id);
        stored_id = header ? std::optional<Uuid>(header->id) : any_id;
      }
      if (handlers.on_envelope) handlers.on_envelope(text);
      // Processed or dropped, whatever the verdict (§6): ack it so it is not delivered again.
      if (stored_id) {
        acks.push_back(*stored_id);
        if (acks.size() >= limits::max_ack_ids || stored_remaining == 0) flush_acks();
      }
      return;
    }
    auto frame = parse_relay_frame(text, options.max_frame_bytes);
    if (!frame) {
      log(LogLevel::warn, "relay.frame_dropped", frame.error().describe());
      return;
    }
    if (const auto* queued = std::get_if<Queued>(&*frame)) {
      if (handlers.on_queued) handlers.on_queued(*queued);
    } else if (const auto* undeliverable = std::get_if<Undeliverable>(&*frame)) {
      if (handlers.on_undeliverable) handlers.on_undeliverable(*undeliverable);
    } else if (const auto* error = std::get_if<ErrorFrame>(&*frame)) {
      log(LogLevel::warn, "relay.error", std::string(to_string(error->code)) + ": " + error->message);
    }
  }

  template <class Ws>
  asio::awaitable<void> write_loop(std::shared_ptr<Ws> ws, std::shared_ptr<bool> alive) {
    while (*alive && connected && !queue.empty()) {
      // The front stays queued until written, so a connection lost mid-write resends it.
      const std::string frame = queue.front();
      boost::system::error_code ec;
      co_await ws->async_write(asio::buffer(frame), asio::redirect_error(asio::use_awaitable, ec));
      if (ec || !*alive) break;
      if (!queue.empty()) queue.pop_front();
    }
    writing = false;
  }

  // hello → challenge → auth → welcome; returns the welcome or why it failed.
  template <class Ws>
  asio::awaitable<Result<Welcome>> authenticate(Ws& ws, const std::string& dialled) {
    Hello hello;
    hello.agent_id = options.identity.agent_id();
    hello.resume = resume_token;
    challenged = false;
    resume_token.reset();  // single use (§6), whatever happens next
    boost::system::error_code ec;
    co_await ws.async_write(asio::buffer(serialize(hello)), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return fail(Errc::unreachable, "sending hello: " + ec.message());
    for (int step = 0; step < 2; ++step) {
      beast::flat_buffer buffer;
      co_await ws.async_read(buffer, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (ec == websocket::error::closed) {
          co_return fail(Errc::auth_failed, "the relay closed during authentication (" +
                                                std::to_string(ws.reason().code) + " " + std::string(ws.reason().reason.data(), ws.reason().reason.size()) + ")");
        }
        co_return fail(Errc::unreachable, "reading during authentication: " + ec.message());
      }
      const std::string text = beast::buffers_to_string(buffer.data());
      auto frame = parse_relay_frame(text);
      if (!frame) {
        boost::system::error_code ignored;
        const auto code = frame.error().code == Errc::unsupported_version ? close_code::unsupported_version : close_code::bad_request;
        co_await ws.async_close(websocket::close_reason(code), asio::redirect_error(asio::use_awaitable, ignored));
        co_return frame.error();
      }
      if (auto* welcome = std::get_if<Welcome>(&*frame)) co_return *welcome;
      if (auto* error = std::get_if<ErrorFrame>(&*frame)) {
        co_return fail(error->code, "the relay refused: " + error->message);
      }
      auto* challenge = std::get_if<Challenge>(&*frame);
      challenged = true;
      if (challenge == nullptr || step == 1) co_return fail(Errc::bad_request, "unexpected frame during authentication");
      const std::string expected = options.expected_relay_id.value_or(dialled);
      if (!relay_ids_match(expected, challenge->relay_id)) {
        // A signature for another relay_id could be replayed there (§6): abort instead.
        boost::system::error_code ignored;
        co_await ws.async_close(websocket::close_reason(close_code::normal), asio::redirect_error(asio::use_awaitable, ignored));
        co_return fail(Errc::auth_failed, "the relay calls itself " + challenge->relay_id + ", not " + expected +
                                              " (set the expected relay ID if that is right)");
      }
      co_await ws.async_write(asio::buffer(serialize(make_auth(options.identity, *challenge))),
                              asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return fail(Errc::unreachable, "sending auth: " + ec.message());
    }
    co_return fail(Errc::bad_request, "unexpected frame during authentication");
  }

  // One connection over an open WebSocket, from hello to close.
  template <class Ws>
  asio::awaitable<Ending> serve(std::shared_ptr<Ws> ws, const std::string& dialled) {
    Ending ending;
    ws->read_message_max(limits::max_control_frame_bytes);
    ws->text(true);
    auto welcome = co_await authenticate(*ws, dialled);
    if (!welcome) {
      ending.reason = welcome.error().describe();
      if (ws->reason().code != 0) ending.close_code = static_cast<std::uint16_t>(ws->reason().code);
      co_return ending;
    }
    ending.welcomed = true;
    resume_token = welcome->session_token;
    stored_remaining = welcome->buffered;
    acks.clear();
    ws->read_message_max(options.max_frame_bytes);
    // Nothing heard for 3 heartbeat intervals → the relay is presumed dead (§6); Beast pings
    // half-way through, so a live but idle relay answers in time.
    websocket::stream_base::timeout timeouts{};
    timeouts.handshake_timeout = options.connect_timeout;
    timeouts.idle_timeout = std::chrono::milliseconds(3 * std::max<std::int64_t>(1000, welcome->heartbeat_ms));
    timeouts.keep_alive_pings = true;
    ws->set_option(timeouts);

    auto alive = std::make_shared<bool>(true);
    kick_writer = [this, ws, alive] {
      if (writing || queue.empty()) return;
      writing = true;
      asio::co_spawn(io, write_loop(ws, alive), asio::detached);
    };
    close_connection = [this, ws, alive](std::uint16_t code) {
      asio::co_spawn(
          io,
          [ws, code]() -> asio::awaitable<void> {
            boost::system::error_code ignored;
            co_await ws->async_close(websocket::close_reason(code), asio::redirect_error(asio::use_awaitable, ignored));
          },
          asio::detached);
    };
    connected = true;
    attempt = 0;
    log(LogLevel::info, "relay.connected", dialled);
    state(ConnectionEvent{.kind = ConnectionEvent::Kind::connected,
                          .relay_url = dialled,
                          .resumed = !challenged,
                          .buffered = welcome->buffered,
                          .close_code = std::nullopt,
                          .reason = {},
                          .will_retry = false,
                          .retry_in = {}});
    if (stored_remaining == 0) flush_acks();
    kick_writer();

    for (;;) {
      beast::flat_buffer buffer;
      boost::system::error_code ec;
      co_await ws->async_read(buffer, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (ec == websocket::error::closed) {
          ending.close_code = static_cast<std::uint16_t>(ws->reason().code);
          ending.reason = "closed by the relay (" + std::to_string(ws->reason().code) +
                          (ws->reason().reason.empty() ? "" : " " + std::string(ws->reason().reason.data(), ws->reason().reason.size())) + ")";
        } else {
          ending.reason = "connection lost: " + ec.message();
        }
        break;
      }
      on_frame(beast::buffers_to_string(buffer.data()));
    }
    *alive = false;
    connected = false;
    writing = false;
    kick_writer = nullptr;
    close_connection = nullptr;
    co_return ending;
  }

  asio::awaitable<Ending> connect(const std::string& dialled) {
    Ending ending;
    auto target = parse_target(dialled);
    if (!target) {
      ending.reason = target.error().message;
      co_return ending;
    }
    boost::system::error_code ec;
    tcp::resolver resolver(io);
    auto endpoints = co_await resolver.async_resolve(target->host, target->port, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      ending.reason = "cannot resolve " + target->host + ": " + ec.message();
      co_return ending;
    }
    beast::tcp_stream tcp_stream(io);
    tcp_stream.expires_after(options.connect_timeout);
    co_await tcp_stream.async_connect(endpoints, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      ending.reason = "cannot connect to " + dialled + ": " + ec.message();
      co_return ending;
    }
    tcp_stream.socket().set_option(tcp::no_delay(true), ec);
    tcp_stream.expires_never();
    websocket::stream_base::timeout auth_timeouts{};
    auth_timeouts.handshake_timeout = options.connect_timeout;
    auth_timeouts.idle_timeout = options.connect_timeout;  // authentication is bounded too
    auth_timeouts.keep_alive_pings = false;
    auto decorate = [] {
      return websocket::stream_base::decorator([](websocket::request_type& request) {
        request.set(beast::http::field::user_agent, std::string("agent-mesh-sdk/") + std::string(kVersion));
      });
    };
    if (!target->tls) {
      auto ws = std::make_shared<websocket::stream<beast::tcp_stream>>(std::move(tcp_stream));
      ws->set_option(auth_timeouts);
      ws->set_option(decorate());
      co_await ws->async_handshake(target->host_header, target->path, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        ending.reason = "WebSocket handshake with " + dialled + " failed: " + ec.message();
        co_return ending;
      }
      co_return co_await serve(ws, dialled);
    }
    auto context = net::make_tls_client_context(options.ca_file);
    if (!context) {
      ending.reason = context.error().message;
      co_return ending;
    }
    auto ws = std::make_shared<websocket::stream<ssl::stream<beast::tcp_stream>>>(std::move(tcp_stream), **context);
    if (auto prepared = net::prepare_tls_client(ws->next_layer().native_handle(), target->host, target->host_is_ip);
        !prepared) {
      ending.reason = prepared.error().message;
      co_return ending;
    }
    beast::get_lowest_layer(*ws).expires_after(options.connect_timeout);
    co_await ws->next_layer().async_handshake(ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, ec));
    beast::get_lowest_layer(*ws).expires_never();
    if (ec) {
      ending.reason = "TLS handshake with " + dialled + " failed: " + ec.message();
      co_return ending;
    }
    ws->set_option(auth_timeouts);
    ws->set_option(decorate());
    co_await ws->async_handshake(target->host_header, target->path, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      ending.reason = "WebSocket handshake with " + dialled + " failed: " + ec.message();
      co_return ending;
    }
    // The context must outlive the stream: keep it with the coroutine frame.
    auto keep_context = *context;
    co_return co_await serve(ws, dialled);
  }

  asio::awaitable<void> run() {
    while (!closing) {
      url = options.urls[url_index % options.urls.size()];
      log(LogLevel::debug, "relay.connecting", url);
      const Ending ending = co_await connect(url);
      if (closing) break;
      if (ending.close_code == close_code::replaced || ending.close_code == close_code::revoked) {
        gave_up = true;
        queue.clear();
        const std::string reason =
            ending.close_code == close_code::replaced
                ? "replaced: another process connected as this agent (close 4009); not reconnecting"
                : "revoked: the relay refuses this agent's key (close 4003); not reconnecting";
        log(LogLevel::error, "relay.gave_up", reason);
        state(ConnectionEvent{.kind = ConnectionEvent::Kind::gave_up,
                              .relay_url = url,
                              .resumed = false,
                              .buffered = 0,
                              .close_code = ending.close_code,
                              .reason = reason,
                              .will_retry = false,
                              .retry_in = {}});
        co_return;
      }
      // Fail over: the next URL after any close or failed dial (meshd-sdk.md).
      ++url_index;
      const auto delay = reconnect_delay(options.reconnect_initial, options.reconnect_max, attempt++,
                                         std::uniform_real_distribution<double>(0.0, 1.0)(random));
      log(ending.welcomed ? LogLevel::warn : LogLevel::info, "relay.disconnected",
          ending.reason + "; retrying in " + std::to_string(delay.count()) + " ms");
      state(ConnectionEvent{.kind = ConnectionEvent::Kind::disconnected,
                            .relay_url = url,
                            .resumed = false,
                            .buffered = 0,
                            .close_code = ending.close_code,
                            .reason = ending.reason,
                            .will_retry = true,
                            .retry_in = delay});
      backoff.expires_after(delay);
      boost::system::error_code ec;
      co_await backoff.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  // close(): flush (bounded), close 1000, stop the loop.
  asio::awaitable<void> shut_down() {
    closing = true;
    backoff.cancel();
    wakeup.cancel();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    asio::steady_timer pause(io);
    while (connected && !queue.empty() && std::chrono::steady_clock::now() < deadline) {
      pause.expires_after(std::chrono::milliseconds(5));
      boost::system::error_code ignored;
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    }
    if (connected && close_connection) {
      close_connection(close_code::normal);
      // Give the close handshake a moment; the relay answers at once.
      const auto close_deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
      while (connected && std::chrono::steady_clock::now() < close_deadline) {
        pause.expires_after(std::chrono::milliseconds(5));
        boost::system::error_code ignored;
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
      }
    }
    work.reset();
    io.stop();
  }
};

RelayLink::RelayLink(RelayLinkOptions options, RelayLinkHandlers handlers)
    : impl_(std::make_shared<Impl>(std::move(options), std::move(handlers))) {}

RelayLink::~RelayLink() { close(); }

void RelayLink::start() {
  Impl& impl = *impl_;
  impl.work.emplace(impl.io.get_executor());
  asio::co_spawn(impl.io, impl.run(), asio::detached);
  impl.thread = std::thread([&impl] {
    impl.thread_id = std::this_thread::get_id();
    impl.io.run();
  });
}

void RelayLink::post(std::function<void()> fn) {
  if (impl_->stopped) return;
  asio::post(impl_->io, std::move(fn));
}

void RelayLink::set_wakeup(std::chrono::steady_clock::time_point when, std::function<void()> fn) {
  Impl& impl = *impl_;
  if (impl.closing) return;
  impl.wakeup_fn = std::move(fn);
  impl.wakeup.expires_at(when);
  impl.wakeup.async_wait([&impl](boost::system::error_code ec) {
    if (ec || impl.closing) return;
    if (auto due = std::move(impl.wakeup_fn)) due();
  });
}

bool RelayLink::send(std::string frame) { return impl_->enqueue(std::move(frame)); }

bool RelayLink::connected() const { return impl_->connected; }

std::string RelayLink::current_url() const { return impl_->url; }

void RelayLink::close() {
  Impl& impl = *impl_;
  if (impl.stopped.exchange(true)) return;
  if (!impl.thread.joinable()) return;
  asio::co_spawn(impl.io, impl.shut_down(), asio::detached);
  impl.thread.join();
}

bool RelayLink::on_link_thread() const { return std::this_thread::get_id() == impl_->thread_id.load(); }

}  // namespace agent_mesh::sdk
