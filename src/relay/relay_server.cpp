// The relay's network layer: Boost.Beast WebSocket and HTTP on Asio, C++20 coroutines.
//
// Threading (docs/design.md): one io_context run by N threads; every connection lives on its own
// strand, so its state needs no lock. Routing looks the receiver up in a read-mostly table
// (shared_mutex, held for a hash lookup only) and posts the frame — an immutable shared buffer — to
// the receiver's strand. SQLite is touched only by the store thread; envelopes for offline agents
// go there and the sender hears `queued` after the commit. A sender with store operations in flight
// sends its later envelopes through the store thread too, which keeps one sender's envelopes to one
// receiver in order while that receiver comes online (protocol §6 "Delivery").
#include "relay_server.hpp"

#include <sodium.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/json.hpp"
#include "agent_mesh/key_lifecycle.hpp"
#include "agent_mesh/relay_protocol.hpp"
#include "agent_mesh/routing_header.hpp"
#include "agent_mesh/secret_compare.hpp"
#include "agent_mesh/version.hpp"
#include "offline_store.hpp"
#include "rate_limiter.hpp"
#include "fifo_queue.hpp"
#include "registry_gate.hpp"
#include "relay_log.hpp"
#include "relay_metrics.hpp"

namespace agent_mesh::relay {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

namespace {

// Store operations one connection may have queued before it is told to retry, and in all: the
// store thread commits a few thousand envelopes per second, so these bound its queue to seconds.
constexpr int kMaxStoreOpsPerConnection = 256;
// Beast copies a frame through its write buffer only to mask or fragment it; a server does neither.
constexpr std::size_t kWebSocketWriteBufferBytes = 512;
constexpr std::int64_t kMaxStoreBacklog = 20000;

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}
// Rate limiters need a clock that never steps back (rate_limiter.hpp).
std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string read_secret_file(const std::string& path) {
  std::ifstream in(path);
  std::string token;
  std::getline(in, token);
  return token;
}

// Constant-time comparison of a presented bearer token with the configured one.
bool token_matches(std::string_view presented, const std::string& expected) { return secrets_equal(expected, presented); }

}  // namespace

// What the rest of the relay may do with a connection, from any thread. Connections are templated
// on their transport (plain TCP or TLS); the routing table holds this interface.
class ConnectionBase {
 public:
  virtual ~ConnectionBase() = default;
  // Each posts onto the connection's strand.
  virtual void deliver_live(std::shared_ptr<const std::string> frame) = 0;
  virtual void close_with(std::uint16_t code, std::string reason) = 0;
  virtual void send_control_threadsafe(std::string frame) = 0;
  // The outcome of an envelope this connection sent that went to the store (posts to the strand).
  virtual void on_store_result(Uuid id, Status result) = 0;
  // Set once on the store thread when the receiver may get live traffic (see the file comment).
  std::atomic<bool> live_ready{false};
  // Written on the connection's strand before it is published in the routing table.
  [[nodiscard]] std::int64_t connected_at_ms() const noexcept { return connected_at_ms_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::int64_t last_seen_ms() const noexcept { return last_seen_ms_.load(std::memory_order_relaxed); }

 protected:
  std::atomic<std::int64_t> connected_at_ms_{0};
  std::atomic<std::int64_t> last_seen_ms_{0};
};

// The read buffer of a connection. Beast's websocket read prepares tcp_frame_size (1,536) bytes
// before the first byte of a message arrives, so with a plain flat_buffer every idle connection
// pins 1.5 KiB it is not using. This one hands out at most kFirstRead bytes until the message has
// begun (Beast then asks for exactly the rest of the frame) and is emptied after each message: an
// idle connection holds kFirstRead bytes, a busy one allocates about once per message (the frame
// is copied into its own string anyway).
class FrugalReadBuffer {
 public:
  using const_buffers_type = beast::flat_buffer::const_buffers_type;
  using mutable_buffers_type = beast::flat_buffer::mutable_buffers_type;

  [[nodiscard]] std::size_t size() const noexcept { return buffer_.size(); }
  [[nodiscard]] std::size_t max_size() const noexcept { return buffer_.max_size(); }
  [[nodiscard]] std::size_t capacity() const noexcept { return buffer_.capacity(); }
  [[nodiscard]] const_buffers_type data() const noexcept { return buffer_.data(); }
  [[nodiscard]] mutable_buffers_type prepare(std::size_t n) {
    return buffer_.prepare(buffer_.size() == 0 ? std::min(n, kFirstRead) : n);
  }
  void commit(std::size_t n) noexcept { buffer_.commit(n); }
  void consume(std::size_t n) noexcept { buffer_.consume(n); }
  // Drops the message and gives the memory back.
  void release() {
    buffer_.consume(buffer_.size());
    buffer_.shrink_to_fit();
  }

 private:
  static constexpr std::size_t kFirstRead = 128;  // most control frames fit whole
  beast::flat_buffer buffer_;
};

// ---- shared relay state ----

struct RelayServer::Impl {
  explicit Impl(RelayConfig cfg) : config(std::move(cfg)), store_guard(net::make_work_guard(store_ioc)) {}

  RelayConfig config;
  net::io_context ioc;
  net::io_context store_ioc;  // the store thread: the only place SQLite is touched
  net::executor_work_guard<net::io_context::executor_type> store_guard;
  std::thread store_thread;
  std::optional<tcp::acceptor> acceptor;
  std::optional<OfflineStore> store;
  RelayMetrics metrics;
  std::string relay_id_text;
  std::string listening;
  std::string admin_token;
  std::int64_t started_ms = wall_ms();
  std::atomic<bool> draining{false};
  std::atomic<std::int64_t> store_backlog{0};  // store operations queued by connections
  bool serve_relay = true;                      // false: HTTP front only (agent-mesh-registry)
  agent_mesh::http::Handler http_handler;
  std::function<bool(const AgentId&)> registration_gate;  // relay.md "Gate" in-process; empty: everyone
  std::unique_ptr<RegistryGate> remote_gate;              // relay.md "Gate" with registry_url

  // Routing table: agent ID → its one authenticated connection (relay.md "Routing").
  std::shared_mutex routes_mutex;
  // Keyed by the ID's canonical text (one text per key), so an envelope's `to` is looked up as the
  // bytes it arrived as: a connected receiver's ID was validated at its login and needs no second
  // curve check (~40 µs) per envelope.
  struct Route {
    AgentId agent;
    std::shared_ptr<ConnectionBase> connection;
  };
  struct TextHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
  };
  std::unordered_map<std::string, Route, TextHash, std::equal_to<>> routes;
  // Every open WebSocket connection, for drain and /status.
  std::mutex connections_mutex;
  std::unordered_set<ConnectionBase*> connections;

  // Revoked agents, read on every envelope (in memory; persisted by the store).
  std::shared_mutex revoked_mutex;
  std::unordered_set<AgentId> revoked;

  // Per source IP limits (connections and failed authentications), guarded by one mutex: they
  // are consulted once per connection, not per message.
  std::mutex ip_mutex;
  std::mutex agent_rate_mutex;
  std::optional<RateLimiter<AgentId>> agent_rates;
  std::optional<RateLimiter<std::string>> ip_connects;
  std::optional<RateLimiter<std::string>> ip_auth_failures;

  bool is_revoked(const AgentId& id) {
    std::shared_lock lock(revoked_mutex);
    return revoked.contains(id);
  }
  std::shared_ptr<ConnectionBase> route(const AgentId& id) {
    std::shared_lock lock(routes_mutex);
    auto it = routes.find(std::string_view(id.str()));
    return it == routes.end() ? nullptr : it->second.connection;
  }
  // `to` of an envelope: a connected agent's already validated ID, else a full parse (with the
  // curve check, cached per thread for repeats).
  Result<AgentId> resolve_receiver(std::string_view text) {
    {
      std::shared_lock lock(routes_mutex);
      if (auto it = routes.find(text); it != routes.end()) return it->second.agent;
    }
    return AgentId::parse(text);
  }
  template <class F>
  void on_store_thread(F&& f) {
    net::post(store_ioc, std::forward<F>(f));
  }
  // A live envelope a connection could not send (it closed, was replaced or cut as a slow
  // consumer): handed to the receiver's newer connection if there is one, otherwise stored.
  void keep_for_later(std::shared_ptr<const std::string> frame);

  // Group commit: envelopes for offline agents queue here and the store thread writes everything
  // queued in one transaction, so N senders pay one fsync instead of N (the queue is bounded by
  // kMaxStoreBacklog and the per-connection limit in route_envelope).
  struct PendingStore {
    std::shared_ptr<ConnectionBase> sender;  // null for keep_for_later's frames: nobody to answer
    RoutingHeader header;
    std::shared_ptr<const std::string> frame;
    std::int64_t started_ns = 0;
  };
  std::mutex pending_stores_mutex;
  std::vector<PendingStore> pending_stores;
  void store_later(PendingStore item);
  void write_pending_stores();

  // The same for resume tokens issued at login and given their expiry at close: a login does not
  // wait for its token's commit (a token lost to a crash costs one normal challenge), and the
  // tokens of concurrent logins share one transaction. A later consume is posted after the flush
  // that holds the token, so it always sees it.
  std::mutex pending_tokens_mutex;
  std::vector<OfflineStore::ResumeTokenWrite> pending_tokens;
  void write_token_later(OfflineStore::ResumeTokenWrite write);

  void accept_loop();
  net::awaitable<void> serve_http(tcp::socket socket);
  template <class Transport>
  net::awaitable<void> serve_stream(Transport stream, std::string peer_ip, std::chrono::steady_clock::time_point accepted);
  std::optional<net::ssl::context> tls;  // set when tls_cert/tls_key are configured (wss)
  http::response<http::string_body> handle_http(const http::request<http::string_body>& request, const std::string& peer_ip);
  http::response<http::string_body> post_revocation(const http::request<http::string_body>& request);
  [[nodiscard]] bool is_relay_endpoint(std::string_view target) const;
  // Hands a request to the embedding handler and waits (without blocking a thread) for its answer.
  net::awaitable<http::response<http::string_body>> handle_elsewhere(http::request<http::string_body> request,
                                                                     std::string client_ip);
  [[nodiscard]] Status persist_and_apply(const Revocation& revocation);
  void apply_revocation(const AgentId& agent);
  void expire_store_periodically(std::shared_ptr<net::steady_timer> timer);
};

// ---- one WebSocket connection ----

template <class Transport>  // beast::tcp_stream or beast::ssl_stream<beast::tcp_stream>
class Connection final : public ConnectionBase, public std::enable_shared_from_this<Connection<Transport>> {
 public:
  using Stream = websocket::stream<Transport>;
  using std::enable_shared_from_this<Connection<Transport>>::shared_from_this;
  using std::enable_shared_from_this<Connection<Transport>>::weak_from_this;

  Connection(RelayServer::Impl& relay, Stream ws, std::string peer_ip, std::chrono::steady_clock::time_point accepted)
      : relay_(relay),
        ws_(std::move(ws)),
        peer_ip_(std::move(peer_ip)),
        auth_timer_(ws_.get_executor()),
        heartbeat_timer_(ws_.get_executor()),
        accepted_(accepted) {}

  net::awaitable<void> run(http::request<http::string_body> upgrade);

  // Thread-safe: each posts onto this connection's strand.
  void deliver_live(std::shared_ptr<const std::string> frame) override {
    net::post(ws_.get_executor(), [self = shared_from_this(), frame = std::move(frame)]() mutable {
      self->enqueue_live(std::move(frame));
    });
  }
  void close_with(std::uint16_t code, std::string reason) override {
    net::post(ws_.get_executor(), [self = shared_from_this(), code, reason = std::move(reason)]() mutable {
      self->begin_close(code, std::move(reason));
    });
  }
  void send_control_threadsafe(std::string frame) override {
    net::post(ws_.get_executor(), [self = shared_from_this(), frame = std::move(frame)]() mutable {
      if (!self->closed_) self->send_control(std::move(frame));
    });
  }
  void on_store_result(Uuid id, Status result) override {
    net::post(ws_.get_executor(), [self = shared_from_this(), id, result = std::move(result)]() mutable {
      self->finish_store(id, std::move(result));
    });
  }

  const AgentId& agent() const noexcept { return agent_; }
  Stream& stream() noexcept { return ws_; }

 private:
  // Live envelopes count against write_queue_bytes; the relay's own answers against a bound of the
  // same size (a client that never reads cannot grow them without end); frames fed from the store
  // do not count (relay.md).
  enum class Kind : std::uint8_t { control, live, replay };
  struct Outgoing {
    std::shared_ptr<const std::string> frame;
    Kind kind = Kind::control;
  };

  void send_control(std::string frame) {
    if (closed_ || close_after_writes_) return;
    // Nothing may precede `welcome` once authenticated (answers to envelopes sent before the
    // client saw it wait until it is queued).
    if (phase_ == Phase::replaying && !welcome_sent_) {
      before_welcome_.push_back(std::move(frame));
      return;
    }
    queued_control_bytes_ += frame.size();
    queue_.push_back({std::make_shared<const std::string>(std::move(frame)), Kind::control});
    if (queued_control_bytes_ > static_cast<std::size_t>(relay_.config.write_queue_bytes)) {
      relay_.metrics.write_queue_drops.fetch_add(1, std::memory_order_relaxed);
      log_event(LogLevel::warn, "connection.slow_consumer", {{"agent", agent_.str()}, {"ip", peer_ip_}});
      begin_close(close_code::slow_consumer, "slow_consumer");
      return;
    }
    pump_writes();
  }
  void fail_and_close(Errc code, std::string message);
  void log_refusal(const std::string& reason) {
    log_event(LogLevel::info, "connection.gate_refused", {{"agent", agent_.str()}, {"ip", peer_ip_}, {"reason", reason}});
  }
  void begin_close(std::uint16_t code, std::string reason);
  void enqueue_live(std::shared_ptr<const std::string> frame);
  void pump_writes();
  void on_authenticated(bool resumed);
  // Proven key: asks the remote registry gate first when there is one, then on_authenticated.
  void admit(bool resumed);
  void request_stored_batch();
  void finish_store(const Uuid& id, Status result);
  void handle_frame(std::string text);
  void handle_control(std::string_view text);
  void handle_envelope(std::shared_ptr<const std::string> frame);
  void undeliverable(std::optional<Uuid> id, Errc code, std::optional<std::int64_t> retry_after_ms = std::nullopt);
  void teardown();
  void leave_routes();
  void schedule_heartbeat();
  void on_heartbeat();

  RelayServer::Impl& relay_;
  Stream ws_;
  std::string peer_ip_;
  net::steady_timer auth_timer_;
  net::steady_timer heartbeat_timer_;
  std::chrono::steady_clock::time_point accepted_;

  enum class Phase { hello, resuming, auth, replaying, live, closing } phase_ = Phase::hello;
  AgentId agent_;
  std::array<std::uint8_t, 32> nonce_{};
  std::chrono::steady_clock::time_point last_read_ = std::chrono::steady_clock::now();
  std::optional<ResumeTokenHash> resume_hash_;

  FifoQueue<Outgoing> queue_;
  std::size_t queued_live_bytes_ = 0;
  std::size_t queued_control_bytes_ = 0;
  std::vector<std::string> before_welcome_;
  bool writing_ = false;
  bool ws_open_ = false;      // async_accept completed: WebSocket frames may be written
  bool ping_pending_ = false;
  bool torn_down_ = false;
  net::steady_timer close_timer_{ws_.get_executor()};
  std::optional<std::pair<std::uint16_t, std::string>> close_after_writes_;
  bool closed_ = false;

  // Replay of stored envelopes (protocol §6 "Delivery"): the first `buffered` frames.
  std::int64_t replay_cursor_ = 0;
  std::int64_t replay_remaining_ = 0;
  bool replay_requested_ = false;
  bool welcome_sent_ = false;
  FifoQueue<std::shared_ptr<const std::string>> held_live_;
  std::size_t held_live_bytes_ = 0;

  int store_ops_in_flight_ = 0;
};

template <class Transport>
void Connection<Transport>::fail_and_close(Errc code, std::string message) {
  log_event(code == Errc::bad_request ? LogLevel::info : LogLevel::warn, "connection.refused",
            {{"ip", peer_ip_}, {"agent", agent_.str()}, {"code", std::string(to_string(code))}, {"reason", message}});
  send_control(serialize(ControlFrame{ErrorFrame{code, message}}));
  begin_close(close_code_for(code).value_or(close_code::bad_request), std::string(to_string(code)));
}

template <class Transport>
void Connection<Transport>::begin_close(std::uint16_t code, std::string reason) {
  if (closed_ || close_after_writes_) return;
  phase_ = Phase::closing;
  if (!ws_open_) {
    // Before the WebSocket handshake completed nothing may be written: close the TCP connection.
    closed_ = true;
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().close(ignored);
    return;
  }
  close_after_writes_ = {code, std::move(reason)};
  // Leave the routing table now, so nothing more is routed here while the close completes, and
  // hand the live frames not yet started to the agent's next connection or the store. Frames fed
  // from the store stay there until acked. Our own answers (e.g. the error frame before this close)
  // still go out first.
  leave_routes();
  FifoQueue<Outgoing> keep;
  for (std::size_t i = 0; i < queue_.size(); ++i) {
    Outgoing& out = queue_[i];
    const bool in_flight = i == 0 && writing_;
    if (in_flight || out.kind == Kind::control) {
      keep.push_back(std::move(out));
    } else if (out.kind == Kind::live) {
      relay_.keep_for_later(std::move(out.frame));
    }
  }
  queue_ = std::move(keep);
  queued_live_bytes_ = 0;
  for (auto& frame : held_live_) relay_.keep_for_later(std::move(frame));
  held_live_.clear();
  held_live_bytes_ = 0;
  // A peer that stops reading never lets the close go out: cut the TCP connection after 2 s.
  close_timer_.expires_after(std::chrono::seconds(2));
  close_timer_.async_wait([weak = this->weak_from_this()](beast::error_code ec) {
    auto connection = weak.lock();
    if (ec || !connection || connection->closed_) return;
    connection->closed_ = true;
    beast::error_code ignored;
    beast::get_lowest_layer(connection->ws_).socket().close(ignored);
  });
  pump_writes();
}

template <class Transport>
void Connection<Transport>::leave_routes() {
  live_ready.store(false);
  if (agent_.empty()) return;
  bool was_routed = false;
  {
    std::unique_lock lock(relay_.routes_mutex);
    auto it = relay_.routes.find(std::string_view(agent_.str()));
    if (it != relay_.routes.end() && it->second.connection.get() == this) {
      relay_.routes.erase(it);
      was_routed = true;
    }
  }
  if (was_routed) relay_.metrics.agents_online.fetch_sub(1, std::memory_order_relaxed);
}

template <class Transport>
void Connection<Transport>::enqueue_live(std::shared_ptr<const std::string> frame) {
  if (closed_ || close_after_writes_) {
    // Too late for this connection: keep the envelope for the agent's next connection.
    relay_.keep_for_later(std::move(frame));
    return;
  }
  if (phase_ == Phase::replaying) {
    held_live_bytes_ += frame->size();
    held_live_.push_back(std::move(frame));
    if (held_live_bytes_ > static_cast<std::size_t>(relay_.config.write_queue_bytes)) {
      relay_.metrics.write_queue_drops.fetch_add(1, std::memory_order_relaxed);
      log_event(LogLevel::warn, "connection.slow_consumer", {{"agent", agent_.str()}, {"ip", peer_ip_}});
      begin_close(close_code::slow_consumer, "slow_consumer");
    }
    return;
  }
  queued_live_bytes_ += frame->size();
  queue_.push_back({std::move(frame), Kind::live});
  if (queued_live_bytes_ > static_cast<std::size_t>(relay_.config.write_queue_bytes)) {
    // relay.md: a slow reader never stalls anyone else; past the bound it is cut with 4010 and
    // what it could not be sent is stored (teardown does that).
    relay_.metrics.write_queue_drops.fetch_add(1, std::memory_order_relaxed);
    log_event(LogLevel::warn, "connection.slow_consumer", {{"agent", agent_.str()}, {"ip", peer_ip_}});
    begin_close(close_code::slow_consumer, "slow_consumer");
    return;
  }
  relay_.metrics.envelopes_routed.fetch_add(1, std::memory_order_relaxed);
  pump_writes();
}

template <class Transport>
void Connection<Transport>::pump_writes() {
  if (writing_ || closed_ || !ws_open_) return;
  if (queue_.empty()) {
    if (close_after_writes_) {
      writing_ = true;
      auto [code, reason] = *close_after_writes_;
      ws_.async_close(websocket::close_reason(static_cast<websocket::close_code>(code), reason),
                      [self = shared_from_this()](beast::error_code) {
        self->writing_ = false;
        self->closed_ = true;
        beast::error_code ignored;
        beast::get_lowest_layer(self->ws_).socket().close(ignored);
      });
      return;
    }
    if (phase_ == Phase::replaying && !replay_requested_) request_stored_batch();
    return;
  }
  writing_ = true;
  auto frame = queue_.front().frame;
  ws_.text(true);
  ws_.async_write(net::buffer(*frame), [self = shared_from_this(), frame](beast::error_code ec, std::size_t n) {
    self->writing_ = false;
    if (ec) {
      self->closed_ = true;
      return;
    }
    self->relay_.metrics.bytes_out.fetch_add(n, std::memory_order_relaxed);
    const Outgoing& sent = self->queue_.front();
    if (sent.kind == Kind::live) self->queued_live_bytes_ -= sent.frame->size();
    if (sent.kind == Kind::control) self->queued_control_bytes_ -= sent.frame->size();
    self->queue_.pop_front();
    self->pump_writes();
  });
}

template <class Transport>
void Connection<Transport>::undeliverable(std::optional<Uuid> id, Errc code, std::optional<std::int64_t> retry_after_ms) {
  relay_.metrics.count_refused(code);
  send_control(serialize(ControlFrame{Undeliverable{id, code, retry_after_ms}}));
}

template <class Transport>
net::awaitable<void> Connection<Transport>::run(http::request<http::string_body> upgrade) {
  auto self = shared_from_this();
  // Whatever ends this coroutine — its end, an exception, or the destruction of its frame at
  // shutdown — the connection leaves every table exactly once.
  struct TeardownOnExit {
    Connection* connection;
    ~TeardownOnExit() { connection->teardown(); }
  } teardown_on_exit{this};
  relay_.metrics.connections.fetch_add(1, std::memory_order_relaxed);
  relay_.metrics.connections_total.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard lock(relay_.connections_mutex);
    relay_.connections.insert(this);
  }
  // Before authentication every frame is a control frame of at most 64 KiB (protocol §3).
  ws_.read_message_max(limits::max_control_frame_bytes);
  // Latency over batching: each frame goes out at once (without TCP_NODELAY the tail of a frame
  // waits for the peer's delayed ACK, ~40 ms per hop, measured by bench/relay), and whole, not in
  // Beast's default 4 KiB fragments.
  {
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().set_option(tcp::no_delay(true), ignored);
  }
  ws_.auto_fragment(false);
  ws_.set_option(websocket::stream_base::decorator([](websocket::response_type& response) {
    response.set(http::field::server, std::string("agent-mesh-relay/") + std::string(kVersion));
  }));
  beast::get_lowest_layer(ws_).expires_never();
  // Beast's handshake timeout bounds the opening and the closing handshake: a peer that never
  // answers our close frame (e.g. one that stopped reading) is cut at the TCP level after 2 s, so
  // closes and drains never wait on it.
  websocket::stream_base::timeout timeouts{};
  timeouts.handshake_timeout = std::chrono::seconds(2);
  timeouts.idle_timeout = websocket::stream_base::none();  // the heartbeat loop handles idleness
  timeouts.keep_alive_pings = false;
  ws_.set_option(timeouts);
  auth_timer_.expires_at(accepted_ + std::chrono::milliseconds(relay_.config.auth_timeout_ms));
  auth_timer_.async_wait([weak = weak_from_this()](beast::error_code ec) {
    auto connection = weak.lock();
    if (ec || !connection) return;
    if (connection->phase_ == Phase::hello || connection->phase_ == Phase::resuming || connection->phase_ == Phase::auth) {
      connection->relay_.metrics.count_auth(AuthResult::timeout);
      connection->fail_and_close(Errc::auth_timeout, "no successful authentication within the auth timeout");
    }
  });
  // A server's frames go out unmasked and whole (auto_fragment off), so Beast never copies them
  // through its write buffer: keep that buffer small instead of the default 4 KiB per connection.
  ws_.write_buffer_bytes(kWebSocketWriteBufferBytes);
  auto [accept_ec] = co_await ws_.async_accept(upgrade, use_tuple);
  upgrade = {};  // its headers would otherwise stay allocated for the connection's whole life
  if (!accept_ec && !closed_) {
    ws_open_ = true;
    // Pongs and other control frames count as life: Beast answers and consumes them inside
    // async_read, which completes only for data messages.
    ws_.control_callback([this](websocket::frame_type, beast::string_view) { last_read_ = std::chrono::steady_clock::now(); });
    if (relay_.draining.load()) begin_close(close_code::draining, "draining");
    schedule_heartbeat();
    pump_writes();  // anything queued while the handshake was in progress (e.g. an auth timeout)
    FrugalReadBuffer buffer;
    for (;;) {
      auto [ec, n] = co_await ws_.async_read(buffer, use_tuple);
      if (ec) {
        if (ec == websocket::error::message_too_big) {
          // Beast has already answered 1009 (protocol §3).
        }
        break;
      }
      last_read_ = std::chrono::steady_clock::now();
      last_seen_ms_.store(wall_ms(), std::memory_order_relaxed);
      relay_.metrics.bytes_in.fetch_add(n, std::memory_order_relaxed);
      if (!ws_.got_text()) {
        fail_and_close(Errc::bad_request, "frames are JSON text");
      } else if (phase_ != Phase::closing) {
        handle_frame(beast::buffers_to_string(buffer.data()));
      }
      buffer.release();
    }
  }
}

template <class Transport>
void Connection<Transport>::schedule_heartbeat() {
  // protocol §6: a WebSocket ping every heartbeat_ms; a connection silent for three intervals is
  // presumed dead and closed at the TCP level. A timer callback rather than a coroutine: an idle
  // connection then holds one small wait operation instead of two coroutine frames (bench/relay
  // "idle" measures the difference).
  heartbeat_timer_.expires_after(std::chrono::milliseconds(relay_.config.heartbeat_ms));
  heartbeat_timer_.async_wait([weak = weak_from_this()](beast::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->closed_) return;
    self->on_heartbeat();
  });
}

template <class Transport>
void Connection<Transport>::on_heartbeat() {
  const auto interval = std::chrono::milliseconds(relay_.config.heartbeat_ms);
  if (std::chrono::steady_clock::now() - last_read_ >= 3 * interval) {
    closed_ = true;
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(ws_).socket().close(ignored);
    return;
  }
  // One ping at a time (a stalled write holds it, silence ends it); none once closing.
  if (!close_after_writes_ && !ping_pending_) {
    ping_pending_ = true;
    ws_.async_ping({}, [weak = this->weak_from_this()](beast::error_code) {
      if (auto connection = weak.lock()) connection->ping_pending_ = false;
    });
  }
  schedule_heartbeat();
}

template <class Transport>
void Connection<Transport>::handle_frame(std::string text) {
  if (phase_ == Phase::hello) {
    auto hello = parse_hello(text);
    if (!hello) {
      relay_.metrics.count_auth(hello.error().code == Errc::unsupported_version ? AuthResult::unsupported_version
                                                                               : AuthResult::bad_hello);
      fail_and_close(hello.error().code, hello.error().message);
      return;
    }
    agent_ = hello->agent_id;
    {
      // Too many failed authentications from this address recently (relay.md): refuse early.
      std::lock_guard lock(relay_.ip_mutex);
      if (relay_.ip_auth_failures->retry_after_ms(ip_rate_key(peer_ip_), steady_ms()) > 0) {
        relay_.metrics.count_auth(AuthResult::rate_limited);
        fail_and_close(Errc::rate_limited, "too many failed authentications from this address; try later");
        return;
      }
    }
    if (relay_.is_revoked(agent_)) {
      relay_.metrics.count_auth(AuthResult::revoked);
      fail_and_close(Errc::revoked, "this agent ID is revoked");
      return;
    }
    auto issue_challenge = [this] {
      randombytes_buf(nonce_.data(), nonce_.size());
      phase_ = Phase::auth;
      send_control(serialize(ControlFrame{Challenge{nonce_, relay_.relay_id_text}}));
    };
    if (!hello->resume) {
      issue_challenge();
      return;
    }
    // Resume tokens are single use, consumed whenever presented (protocol §6).
    const auto hash = ResumeToken::hash_of(*hello->resume);
    if (!hash) {
      issue_challenge();
      return;
    }
    phase_ = Phase::resuming;  // no other frame is accepted while the token is checked
    relay_.on_store_thread([self = shared_from_this(), hash = *hash, issue_challenge]() mutable {
      auto consumed = self->relay_.store->consume_resume_token(hash, wall_ms());
      std::optional<AgentId> owner;
      if (consumed) owner = *consumed;
      net::post(self->ws_.get_executor(), [self, owner, issue_challenge]() mutable {
        if (self->phase_ != Phase::resuming) return;
        if (owner && *owner == self->agent_) {
          self->relay_.metrics.count_auth(AuthResult::resumed);
          self->admit(true);
        } else {
          issue_challenge();  // unknown, used, expired or foreign: a normal challenge
        }
      });
    });
    return;
  }
  if (phase_ == Phase::resuming) {
    fail_and_close(Errc::bad_request, "wait for the relay's answer to hello");
    return;
  }
  if (phase_ == Phase::auth) {
    auto frame = parse_client_frame(text, limits::max_control_frame_bytes);
    if (!frame || !std::holds_alternative<Auth>(*frame)) {
      relay_.metrics.count_auth(AuthResult::bad_hello);
      fail_and_close(Errc::bad_request, frame ? "expected an auth frame" : frame.error().message);
      return;
    }
    const auto& auth = std::get<Auth>(*frame);
    const Bytes message = auth_signing_message(nonce_, relay_.relay_id_text);
    if (!verify_signature(agent_, Purpose::auth, message, auth.signature)) {
      relay_.metrics.count_auth(AuthResult::bad_signature);
      {
        // Failed authentications per source IP (relay.md): counted here, refused at the next hello.
        std::lock_guard lock(relay_.ip_mutex);
        (void)relay_.ip_auth_failures->take(ip_rate_key(peer_ip_), steady_ms());
      }
      fail_and_close(Errc::auth_failed, "the signature does not verify for this agent ID and relay");
      return;
    }
    relay_.metrics.count_auth(AuthResult::ok);
    admit(false);
    return;
  }
  // Authenticated: envelopes and control frames.
  auto kind = classify_frame(text);
  if (!kind) {
    // Neither a control frame nor a readable envelope: answered like a broken envelope (the id
    // is null because it could not be read, protocol §6), and the connection stays up.
    undeliverable(std::nullopt, Errc::bad_envelope);
    return;
  }
  if (*kind == FrameKind::envelope) {
    handle_envelope(std::make_shared<const std::string>(std::move(text)));
  } else {
    handle_control(text);
  }
}

template <class Transport>
void Connection<Transport>::admit(bool resumed) {
  if (!relay_.remote_gate) {
    on_authenticated(resumed);
    return;
  }
  phase_ = Phase::resuming;  // nothing else is accepted until the registry has answered
  relay_.remote_gate->check(agent_, [weak = this->weak_from_this(), resumed](bool registered, std::string reason) {
    auto self = weak.lock();
    if (!self) return;
    net::post(self->ws_.get_executor(), [self, registered, resumed, reason = std::move(reason)]() mutable {
      if (self->phase_ != Phase::resuming || self->closed_) return;
      if (!registered) {
        self->relay_.metrics.count_auth(AuthResult::not_registered);
        self->log_refusal(reason);
        self->fail_and_close(Errc::auth_failed, "this agent ID is not registered with the registry (or is revoked there)");
        return;
      }
      self->on_authenticated(resumed);
    });
  });
}

template <class Transport>
void Connection<Transport>::on_authenticated(bool resumed) {
  log_event(LogLevel::info, "connection.authenticated",
            {{"agent", agent_.str()}, {"ip", peer_ip_}, {"resumed", resumed ? "true" : "false"}});
  auth_timer_.cancel();
  if (relay_.registration_gate && !relay_.registration_gate(agent_)) {
    relay_.metrics.count_auth(AuthResult::not_registered);
    fail_and_close(Errc::auth_failed, "this agent ID is not registered with the registry (or is revoked there)");
    return;
  }
  phase_ = Phase::replaying;
  connected_at_ms_.store(wall_ms(), std::memory_order_relaxed);
  last_seen_ms_.store(connected_at_ms(), std::memory_order_relaxed);
  ws_.read_message_max(static_cast<std::size_t>(relay_.config.max_envelope_bytes));
  // One connection per agent: a newer one replaces the older (4009), whose teardown never
  // removes the new one (relay.md "Routing").
  std::shared_ptr<ConnectionBase> previous;
  {
    std::unique_lock lock(relay_.routes_mutex);
    auto& slot = relay_.routes[agent_.str()];
    slot.agent = agent_;
    previous = std::exchange(slot.connection, shared_from_this());
  }
  if (previous) previous->close_with(close_code::replaced, "replaced by a newer connection");
  else relay_.metrics.agents_online.fetch_add(1, std::memory_order_relaxed);
  // A revocation applied between hello and now found no route to close: check again now that we
  // are routed (apply_revocation marks before it looks the route up, so one side sees the other).
  if (relay_.is_revoked(agent_)) {
    fail_and_close(Errc::revoked, "this agent ID is revoked");
    return;
  }

  const ResumeToken token = ResumeToken::generate();
  resume_hash_ = token.hash;
  relay_.write_token_later({token.hash, agent_, kResumeTokenOpen});
  relay_.on_store_thread([self = shared_from_this(), token_text = token.text]() {
    auto& store = *self->relay_.store;
    const std::int64_t buffered = store.messages_for(self->agent_);
    // From here on, envelopes for this agent are handed to the connection (held until the
    // replay ends) instead of being stored; everything stored before is the replay.
    self->live_ready.store(true);
    net::post(self->ws_.get_executor(), [self, token_text, buffered] {
      self->replay_remaining_ = buffered;
      self->welcome_sent_ = true;
      self->send_control(serialize(ControlFrame{Welcome{kProtocolVersion, token_text, self->relay_.config.heartbeat_ms,
                                                        buffered}}));
      for (auto& frame : std::exchange(self->before_welcome_, {})) self->send_control(std::move(frame));
      self->request_stored_batch();
    });
  });
}

template <class Transport>
void Connection<Transport>::request_stored_batch() {
  // Not before `welcome` has been queued: until then replay_remaining_ is not known, and a write
  // completing in between (the challenge) must not end a replay that has not begun.
  if (phase_ != Phase::replaying || !welcome_sent_ || replay_requested_) return;
  if (replay_remaining_ <= 0) {
    // Replay done: release the live frames held meanwhile, in their order.
    phase_ = Phase::live;
    auto held = std::exchange(held_live_, {});
    held_live_bytes_ = 0;
    for (auto& frame : held) enqueue_live(std::move(frame));
    return;
  }
  replay_requested_ = true;
  const auto max = static_cast<std::size_t>(std::min<std::int64_t>(replay_remaining_, 64));
  relay_.on_store_thread([self = shared_from_this(), after = replay_cursor_, max] {
    auto loaded = self->relay_.store->load(self->agent_, after, max,
                                           static_cast<std::size_t>(self->relay_.config.write_queue_bytes));
    std::vector<StoredEnvelope> batch;
    if (loaded) batch = std::move(loaded).value();
    net::post(self->ws_.get_executor(), [self, batch = std::move(batch)]() mutable {
      self->replay_requested_ = false;
      // Fewer than asked (expired meanwhile): the replay ends early.
      if (batch.empty()) self->replay_remaining_ = 0;
      for (auto& stored : batch) {
        self->replay_cursor_ = stored.seq;
        --self->replay_remaining_;
        self->queue_.push_back({std::make_shared<const std::string>(std::move(stored.frame)), Kind::replay});
      }
      self->pump_writes();
    });
  });
}

template <class Transport>
void Connection<Transport>::handle_control(std::string_view text) {
  RateDecision decision;
  {
    std::lock_guard lock(relay_.agent_rate_mutex);
    decision = relay_.agent_rates->take(agent_, steady_ms());
  }
  if (decision.verdict == RateVerdict::abusive) {
    fail_and_close(Errc::rate_limited, "sustained rate limit abuse");
    return;
  }
  if (!decision.allowed()) {
    // Control frames have no id to refuse: an over-limit ping or ack is dropped (an unacked
    // stored envelope is simply delivered again next time).
    return;
  }
  auto frame = parse_client_frame(text, limits::max_control_frame_bytes);
  if (!frame) {
    fail_and_close(Errc::bad_request, frame.error().message);
    return;
  }
  if (std::holds_alternative<Ping>(*frame)) {
    send_control(serialize(ControlFrame{Pong{}}));
  } else if (const auto* ack = std::get_if<Ack>(&*frame)) {
    relay_.on_store_thread([self = shared_from_this(), ids = ack->ids] {
      (void)self->relay_.store->ack(self->agent_, ids);
    });
  } else {
    fail_and_close(Errc::bad_request, "unexpected control frame after authentication");
  }
}

template <class Transport>
void Connection<Transport>::handle_envelope(std::shared_ptr<const std::string> frame) {
  const std::int64_t started = steady_ns();
  // The rate limit comes before anything costly (relay.md), even before reading the header.
  RateDecision decision;
  {
    std::lock_guard lock(relay_.agent_rate_mutex);
    decision = relay_.agent_rates->take(agent_, steady_ms());
  }
  std::optional<Uuid> readable_id;
  // `from` must be the authenticated agent, validated at login: no curve check for it (the
  // subgroup check costs ~40 µs, bench/relay).
  const AgentIdResolver resolve = [this](std::string_view text) -> Result<AgentId> {
    if (text == agent_.str()) return agent_;
    return relay_.resolve_receiver(text);
  };
  auto header = scan_routing_header(*frame, static_cast<std::size_t>(relay_.config.max_envelope_bytes), &readable_id,
                                    resolve);
  if (!header) {
    undeliverable(readable_id, Errc::bad_envelope);
    return;
  }
  if (header->from != agent_) {
    undeliverable(header->id, Errc::bad_envelope);
    return;
  }
  if (decision.verdict == RateVerdict::abusive) {
    fail_and_close(Errc::rate_limited, "sustained rate limit abuse");
    return;
  }
  if (!decision.allowed()) {
    undeliverable(header->id, Errc::rate_limited, decision.retry_after_ms);
    return;
  }
  if (relay_.is_revoked(header->to) || relay_.is_revoked(header->from)) {
    undeliverable(header->id, Errc::revoked);
    return;
  }
  auto target = relay_.route(header->to);
  if (target && target->live_ready.load() && store_ops_in_flight_ == 0) {
    // (the common case: a live hand-off, no store involved)
    target->deliver_live(std::move(frame));
    relay_.metrics.observe_latency_ns(static_cast<std::uint64_t>(steady_ns() - started));
    return;
  }
  // Bounded work for the store thread, per sender and in all (relay.md: bounded queues
  // everywhere): past either bound the sender is asked to retry.
  if (store_ops_in_flight_ >= kMaxStoreOpsPerConnection ||
      relay_.store_backlog.load(std::memory_order_relaxed) >= kMaxStoreBacklog) {
    undeliverable(header->id, Errc::rate_limited, 100);
    return;
  }
  ++store_ops_in_flight_;
  relay_.store_backlog.fetch_add(1, std::memory_order_relaxed);
  relay_.store_later({shared_from_this(), *header, std::move(frame), started});
}

template <class Transport>
void Connection<Transport>::finish_store(const Uuid& id, Status result) {
  --store_ops_in_flight_;
  relay_.store_backlog.fetch_sub(1, std::memory_order_relaxed);
  if (result.ok()) {
    relay_.metrics.envelopes_stored.fetch_add(1, std::memory_order_relaxed);
    send_control(serialize(ControlFrame{Queued{id}}));
  } else if (result.error().message == "live") {
    // Delivered live after all: a live delivery gets no frame.
  } else {
    const Errc code = result.error().code;
    undeliverable(id, is_undeliverable_code(code) ? code : Errc::unreachable);
  }
}

template <class Transport>
void Connection<Transport>::teardown() {
  if (torn_down_) return;
  torn_down_ = true;
  closed_ = true;
  auth_timer_.cancel();
  heartbeat_timer_.cancel();
  close_timer_.cancel();
  leave_routes();
  log_event(LogLevel::info, "connection.closed",
            {{"ip", peer_ip_}, {"agent", agent_.str()}, {"unsent", std::to_string(queue_.size() + held_live_.size())}});
  // Live frames this connection could not send are kept for the agent's next connection.
  std::vector<std::shared_ptr<const std::string>> unsent;
  for (auto& out : queue_) {
    if (out.kind == Kind::live) unsent.push_back(out.frame);
  }
  for (auto& frame : held_live_) unsent.push_back(frame);
  queue_.clear();
  held_live_.clear();
  for (auto& frame : unsent) relay_.keep_for_later(std::move(frame));
  if (resume_hash_) {
    // The resume token stays valid until 5 min after this connection closes (protocol §6).
    relay_.write_token_later({*resume_hash_, std::nullopt, wall_ms() + relay_.config.resume_ttl_s * 1000});
  }
  {
    std::lock_guard lock(relay_.connections_mutex);
    relay_.connections.erase(this);
  }
  relay_.metrics.connections.fetch_sub(1, std::memory_order_relaxed);
}

void RelayServer::Impl::keep_for_later(std::shared_ptr<const std::string> frame) {
  auto header = scan_routing_header(*frame, static_cast<std::size_t>(config.max_envelope_bytes));
  if (!header) return;  // it was routed once, so it scans; nothing sensible to do otherwise
  store_later({nullptr, *header, std::move(frame), steady_ns()});
}

void RelayServer::Impl::store_later(PendingStore item) {
  bool first = false;
  {
    std::lock_guard lock(pending_stores_mutex);
    first = pending_stores.empty();
    pending_stores.push_back(std::move(item));
  }
  // One write task per batch: whoever makes the queue non-empty schedules it; everything queued
  // until it runs joins the same transaction.
  if (first) on_store_thread([this] { write_pending_stores(); });
}

void RelayServer::Impl::write_token_later(OfflineStore::ResumeTokenWrite write) {
  bool first = false;
  {
    std::lock_guard lock(pending_tokens_mutex);
    first = pending_tokens.empty();
    pending_tokens.push_back(std::move(write));
  }
  if (!first) return;
  on_store_thread([this] {
    std::vector<OfflineStore::ResumeTokenWrite> batch;
    {
      std::lock_guard lock(pending_tokens_mutex);
      batch.swap(pending_tokens);
    }
    if (auto written = store->write_resume_tokens(batch); !written) {
      log_event(LogLevel::warn, "store.resume_tokens_failed", {{"error", written.error().message}});
    }
  });
}

void RelayServer::Impl::write_pending_stores() {
  std::vector<PendingStore> batch;
  {
    std::lock_guard lock(pending_stores_mutex);
    batch.swap(pending_stores);
  }
  // The receiver may have come online since: hand those over live (a live delivery gets no frame).
  std::vector<EnvelopeToStore> to_store;
  std::vector<std::size_t> stored_index;  // to_store[i] came from batch[stored_index[i]]
  to_store.reserve(batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i) {
    auto& item = batch[i];
    if (auto receiver = route(item.header.to); receiver && receiver->live_ready.load()) {
      receiver->deliver_live(item.frame);
      if (item.sender) item.sender->on_store_result(item.header.id, fail(Errc::internal, "live"));
      continue;
    }
    to_store.push_back({item.header.to, item.header.from, item.header.id, 0, *item.frame});
    stored_index.push_back(i);
  }
  if (to_store.empty()) return;
  const std::int64_t now = wall_ms();
  // The relay's clock stands for the envelope's timestamp: the TTL counts from arrival.
  for (auto& envelope : to_store) envelope.timestamp_ms = now;
  auto results = store->store_batch(to_store, now);
  const auto finished = steady_ns();
  for (std::size_t i = 0; i < to_store.size(); ++i) {
    auto& item = batch[stored_index[i]];
    Status result = results ? std::move((*results)[i]) : Status{results.error()};
    if (!item.sender) continue;
    metrics.observe_latency_ns(static_cast<std::uint64_t>(finished - item.started_ns));
    item.sender->on_store_result(item.header.id, std::move(result));
  }
}

// ---- HTTP ----

http::response<http::string_body> json_response(http::status status, std::string body, unsigned version) {
  http::response<http::string_body> response{status, version};
  response.set(http::field::server, std::string("agent-mesh-relay/") + std::string(kVersion));
  response.set(http::field::content_type, "application/json");
  response.body() = std::move(body);
  response.prepare_payload();
  return response;
}

http::response<http::string_body> error_response(http::status status, Errc code, std::string message, unsigned version) {
  return json_response(status, Error{code, std::move(message)}.to_http_json(), version);
}

http::response<http::string_body> RelayServer::Impl::handle_http(const http::request<http::string_body>& request,
                                                                  const std::string& peer_ip) {
  const std::string_view target = request.target();
  const std::string_view path = target.substr(0, target.find('?'));
  if (path == "/health") {
    if (draining.load()) return json_response(http::status::service_unavailable, R"({"status":"draining"})", request.version());
    return json_response(http::status::ok, R"({"status":"ok"})", request.version());
  }
  if (path == "/metrics" && request.method() == http::verb::get) {
    auto response = json_response(http::status::ok, metrics.render(), request.version());
    response.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    return response;
  }
  if (path == "/status" && request.method() == http::verb::get) {
    boost::json::object status;
    status["version"] = kVersion;
    status["uptime_s"] = (wall_ms() - started_ms) / 1000;
    status["connections"] = metrics.connections.load();
    status["agents_online"] = metrics.agents_online.load();
    status["stored_messages"] = metrics.store_depth.load();
    status["store_bytes"] = metrics.store_bytes.load();
    const bool wants_agents = target.find("agents=1") != std::string_view::npos;
    if (wants_agents) {
      const auto auth = request[http::field::authorization];
      const std::string_view prefix = "Bearer ";
      if (!auth.starts_with(prefix) || !token_matches(auth.substr(prefix.size()), admin_token)) {
        return error_response(http::status::unauthorized, Errc::unauthorized, "agents=1 needs the admin token", request.version());
      }
      boost::json::array agents;
      std::shared_lock lock(routes_mutex);
      for (const auto& [id, route] : routes) {
        agents.push_back(boost::json::object{{"agent_id", id},
                                             {"connected_at", route.connection->connected_at_ms()},
                                             {"last_seen", route.connection->last_seen_ms()}});
      }
      status["agents"] = std::move(agents);
    }
    return json_response(http::status::ok, json::serialize_jcs(status), request.version());
  }
  if (path == "/revocations" && request.method() == http::verb::post) {
    // Anyone may post a self-signed revocation of a fresh key: each costs an fsync, so it is
    // limited per client address like connection attempts.
    bool allowed = true;
    {
      std::lock_guard lock(ip_mutex);
      allowed = ip_connects->take(ip_rate_key(peer_ip), steady_ms()).allowed();
    }
    if (!allowed) {
      return error_response(http::status::too_many_requests, Errc::rate_limited, "too many requests", request.version());
    }
    return post_revocation(request);
  }
  return error_response(http::status::not_found, Errc::not_found, "no such endpoint", request.version());
}

http::response<http::string_body> RelayServer::Impl::post_revocation(const http::request<http::string_body>& request) {
  const auto auth = request[http::field::authorization];
  const std::string_view prefix = "Bearer ";
  const bool is_admin = auth.starts_with(prefix) && token_matches(auth.substr(prefix.size()), admin_token);
  if (!auth.empty() && !is_admin) {
    return error_response(http::status::unauthorized, Errc::unauthorized, "invalid admin token", request.version());
  }
  // Self-signed revocations need no credential (protocol §7); admin ones need the admin token.
  auto revocation = Revocation::parse(request.body(), /*require_signature=*/!is_admin);
  if (!revocation) {
    return error_response(http::status::bad_request, Errc::bad_request, revocation.error().message, request.version());
  }
  if (revocation->signature) {
    if (auto verified = revocation->verify(); !verified) {
      return error_response(http::status::bad_request, Errc::bad_request, verified.error().message, request.version());
    }
  }
  if (Status result = persist_and_apply(*revocation); !result) {
    return error_response(http::status::internal_server_error, Errc::internal, result.error().message, request.version());
  }
  return json_response(http::status::ok, R"({"revoked":true})", request.version());
}

Status RelayServer::Impl::persist_and_apply(const Revocation& revocation) {
  // Persisted (and the agent's stored envelopes dropped) before the answer, so it survives a
  // restart the moment the caller hears 200.
  std::promise<Status> persisted;
  auto done = persisted.get_future();
  on_store_thread([this, &persisted, &revocation] {
    auto added = store->add_revocation(revocation);
    persisted.set_value(added ? Status{} : Status{std::move(added).error()});
  });
  Status result = done.get();
  if (!result) return result;
  apply_revocation(revocation.agent_id);
  return {};
}

bool RelayServer::Impl::is_relay_endpoint(std::string_view target) const {
  if (!serve_relay) return false;
  const std::string_view path = target.substr(0, target.find('?'));
  return path == "/health" || path == "/status" || path == "/metrics" || path == "/revocations" || path == "/relay/ws";
}

net::awaitable<http::response<http::string_body>> RelayServer::Impl::handle_elsewhere(
    http::request<http::string_body> request, std::string client_ip) {
  const unsigned version = request.version();
  if (!http_handler) {
    co_return error_response(http::status::not_found, Errc::not_found, "no such endpoint", version);
  }
  agent_mesh::http::Request plain;
  plain.method = std::string(request.method_string());
  plain.target = std::string(request.target());
  for (const auto& field : request) plain.fields.emplace_back(std::string(field.name_string()), std::string(field.value()));
  plain.body = std::move(request.body());
  plain.client_ip = std::move(client_ip);
  // The handler may answer from any thread and at any time (long polls): the answer is posted
  // back here and a timer that never expires on its own is cancelled to resume this coroutine.
  struct Pending {
    explicit Pending(net::any_io_executor executor) : wake(std::move(executor), std::chrono::steady_clock::time_point::max()) {}
    net::steady_timer wake;
    std::optional<agent_mesh::http::Response> answer;
  };
  const auto executor = co_await net::this_coro::executor;
  auto pending = std::make_shared<Pending>(executor);
  http_handler(std::move(plain), [pending, executor](agent_mesh::http::Response answer) {
    net::post(executor, [pending, answer = std::move(answer)]() mutable {
      if (pending->answer) return;  // answered twice: the first answer stands
      pending->answer = std::move(answer);
      pending->wake.cancel();
    });
  });
  while (!pending->answer) {
    auto [ec] = co_await pending->wake.async_wait(use_tuple);
    (void)ec;
  }
  http::response<http::string_body> response{static_cast<http::status>(pending->answer->status), version};
  response.set(http::field::server, std::string("agent-mesh/") + std::string(kVersion));
  for (auto& [name, value] : pending->answer->fields) response.set(name, value);
  response.body() = std::move(pending->answer->body);
  response.prepare_payload();
  co_return response;
}

void RelayServer::Impl::apply_revocation(const AgentId& agent) {
  {
    std::unique_lock lock(revoked_mutex);
    revoked.insert(agent);
  }
  log_event(LogLevel::warn, "revocation.applied", {{"agent", agent.str()}});
  if (auto connection = route(agent)) connection->close_with(close_code::revoked, "revoked");
}

// The client's address for per-IP limits: the peer, or — when the peer is a trusted reverse
// proxy — the rightmost X-Forwarded-For entry that is not itself a trusted proxy (relay.md).
std::string client_address(const RelayConfig& config, const std::string& peer_ip, std::string_view forwarded_for) {
  if (forwarded_for.empty() || !config.is_trusted_proxy(peer_ip)) return peer_ip;
  std::string_view rest = forwarded_for;
  while (!rest.empty()) {
    const auto comma = rest.rfind(',');
    std::string_view entry = comma == std::string_view::npos ? rest : rest.substr(comma + 1);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(0, comma);
    while (!entry.empty() && entry.front() == ' ') entry.remove_prefix(1);
    while (!entry.empty() && entry.back() == ' ') entry.remove_suffix(1);
    if (entry.empty()) continue;
    const std::string candidate(entry);
    if (!config.is_trusted_proxy(candidate)) return candidate;
  }
  return peer_ip;
}

net::awaitable<void> RelayServer::Impl::serve_http(tcp::socket socket) {
  const auto accepted = std::chrono::steady_clock::now();
  beast::error_code ignored;
  const std::string peer_ip = socket.remote_endpoint(ignored).address().to_string();
  if (!tls) {
    co_await serve_stream(beast::tcp_stream(std::move(socket)), peer_ip, accepted);
    co_return;
  }
  beast::ssl_stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(socket)), *tls);
  // The TLS handshake counts against the auth deadline, like everything before `welcome`.
  beast::get_lowest_layer(stream).expires_at(accepted + std::chrono::milliseconds(config.auth_timeout_ms));
  auto [ec] = co_await stream.async_handshake(net::ssl::stream_base::server, use_tuple);
  if (ec) co_return;
  co_await serve_stream(std::move(stream), peer_ip, accepted);
}

template <class Transport>
net::awaitable<void> RelayServer::Impl::serve_stream(Transport stream, std::string peer_ip,
                                                     std::chrono::steady_clock::time_point accepted) {
  beast::flat_buffer buffer;
  // A keep-alive HTTP connection (health checks, scrapes) serves a bounded number of requests, so
  // idle sockets that never upgrade cannot accumulate (they do not count as connections).
  for (int served = 0; served < 100; ++served) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(16 * 1024);
    // The relay's own bodies (revocations) are small; an embedded handler (the registry) takes
    // up to 1 MiB (registry.md).
    const std::size_t body_limit = http_handler ? RelayServer::kMaxHandlerBodyBytes : 64 * 1024;
    parser.body_limit(body_limit);
    beast::get_lowest_layer(stream).expires_after(std::chrono::milliseconds(config.auth_timeout_ms));
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_tuple);
    if (ec == http::error::body_limit) {
      // Answered, not just dropped: the client learns what was wrong (registry.md: 413).
      auto response = error_response(
          http::status::payload_too_large, Errc::too_large,
          "request body is larger than " + std::to_string(body_limit) + " bytes", parser.get().version());
      response.keep_alive(false);
      co_await http::async_write(stream, response, use_tuple);
      // Closing with the rest of the body unread would make the kernel reset the connection, and
      // the client would lose the 413 it has not read yet: read and discard what is still coming,
      // bounded in bytes and time, before closing.
      beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
      std::array<char, 16384> sink{};
      for (std::size_t drained = 0; drained < 4 * RelayServer::kMaxHandlerBodyBytes;) {
        auto [read_ec, read] = co_await beast::get_lowest_layer(stream).async_read_some(net::buffer(sink), use_tuple);
        if (read_ec) break;
        drained += read;
      }
      co_return;
    }
    if (ec) co_return;
    auto request = parser.release();
    const bool keep_alive = request.keep_alive();
    const std::string client_ip = client_address(config, peer_ip, request["X-Forwarded-For"]);
    if (client_ip != peer_ip) {
      // Behind a trusted proxy the accept-time limit saw the proxy; apply it to the client now.
      bool allowed = true;
      {
        std::lock_guard lock(ip_mutex);
        allowed = ip_connects->take(ip_rate_key(client_ip), steady_ms()).allowed();
      }
      if (!allowed) co_return;
    }
    if (websocket::is_upgrade(request)) {
      const std::string_view target = request.target();
      if (target != "/relay/ws" || draining.load() || !serve_relay) {
        auto response = error_response(draining.load() ? http::status::service_unavailable : http::status::not_found,
                                       draining.load() ? Errc::unreachable : Errc::not_found,
                                       draining.load() ? "relay is draining" : "WebSocket endpoint is /relay/ws",
                                       request.version());
        co_await http::async_write(stream, response, use_tuple);
        co_return;
      }
      beast::get_lowest_layer(stream).expires_never();
      using Conn = Connection<Transport>;
      auto connection = std::make_shared<Conn>(*this, typename Conn::Stream(std::move(stream)), client_ip, accepted);
      // The connection runs in its own coroutine so that this one's frame (HTTP buffer, parser)
      // is freed now rather than held for the connection's life.
      auto executor = beast::get_lowest_layer(connection->stream()).get_executor();
      net::co_spawn(executor, connection->run(std::move(request)), net::detached);
      co_return;
    }
    // (not a conditional expression: g++ 12 miscompiles co_await inside one)
    http::response<http::string_body> response;
    if (is_relay_endpoint(request.target())) {
      response = handle_http(request, client_ip);
    } else {
      response = co_await handle_elsewhere(std::move(request), client_ip);
    }
    response.keep_alive(keep_alive);
    auto [write_ec, written] = co_await http::async_write(stream, response, use_tuple);
    if (write_ec || !response.keep_alive()) co_return;
  }
}

void RelayServer::Impl::accept_loop() {
  acceptor->async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == net::error::operation_aborted || draining.load()) return;
      // Out of file descriptors (or similar): back off instead of spinning on accept.
      auto backoff = std::make_shared<net::steady_timer>(acceptor->get_executor(), std::chrono::milliseconds(100));
      backoff->async_wait([this, backoff](beast::error_code) { accept_loop(); });
      return;
    }
    beast::error_code endpoint_ec;
    const std::string ip = socket.remote_endpoint(endpoint_ec).address().to_string();
    bool allowed = true;
    {
      std::lock_guard lock(ip_mutex);
      allowed = config.is_trusted_proxy(ip) || ip_connects->take(ip_rate_key(ip), steady_ms()).allowed();
    }
    if (allowed) {
      auto executor = socket.get_executor();
      net::co_spawn(executor, serve_http(std::move(socket)), net::detached);
    } else {
      metrics.count_auth(AuthResult::rate_limited);
      // Refused with a reason rather than a bare reset (relay.md: 429 with Retry-After), written
      // once without reading the request; the socket closes when the write completes or fails.
      static const std::string kTooManyConnections = [] {
        const std::string body = Error{Errc::rate_limited, "too many connections from this address; retry later"}.to_http_json();
        return "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
               "Connection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
      }();
      auto refused = std::make_shared<tcp::socket>(std::move(socket));
      net::async_write(*refused, net::buffer(kTooManyConnections), [refused](beast::error_code, std::size_t) {
        beast::error_code ignored;
        refused->shutdown(tcp::socket::shutdown_both, ignored);
        refused->close(ignored);
      });
    }
    accept_loop();
  });
}

void RelayServer::Impl::expire_store_periodically(std::shared_ptr<net::steady_timer> timer) {
  timer->expires_after(std::chrono::seconds(1));
  timer->async_wait([this, timer](beast::error_code ec) {
    if (ec) return;
    on_store_thread([this] {
      auto expired = store->expire(wall_ms());
      metrics.store_depth.store(store->stored_messages());
      metrics.store_bytes.store(store->store_bytes());
      if (!expired) return;
      for (const auto& gone : *expired) {
        // Answered to its sender if connected (relay.md "Offline buffering").
        metrics.count_refused(Errc::expired);
        if (auto sender = route(gone.from)) sender->send_control_threadsafe(serialize(ControlFrame{Undeliverable{gone.id, Errc::expired, std::nullopt}}));
      }
    });
    expire_store_periodically(timer);
  });
}

// ---- RelayServer ----

RelayServer::RelayServer(RelayConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}

RelayServer::~RelayServer() {
  // Let the store thread finish what is queued (frames handed over at teardown), then stop.
  impl_->store_guard.reset();
  if (impl_->store_thread.joinable()) impl_->store_thread.join();
}

Status RelayServer::start() {
  Impl& s = *impl_;
  if (s.serve_relay) {
    std::error_code dir_ec;
    std::filesystem::create_directories(s.config.data_dir, dir_ec);
    if (dir_ec) return fail(Errc::internal, "data_dir " + s.config.data_dir.string() + ": " + dir_ec.message());
    auto store = OfflineStore::open(s.config.data_dir / std::string(kStoreFileName), store_limits_of(s.config));
    if (!store) return std::move(store).error();
    s.store.emplace(std::move(store).value());
    auto revocations = s.store->load_revocations();
    if (!revocations) return std::move(revocations).error();
    for (const auto& revocation : *revocations) s.revoked.insert(revocation.agent_id);
    // Tokens left open by a crash expire resume_ttl_s from now (the connection is gone).
    (void)s.store->close_open_resume_tokens(wall_ms() + s.config.resume_ttl_s * 1000);
    s.metrics.store_depth.store(s.store->stored_messages());
    s.metrics.store_bytes.store(s.store->store_bytes());
  }
  if (!s.config.admin_token_file.empty()) s.admin_token = read_secret_file(s.config.admin_token_file.string());
  if (s.serve_relay && !s.config.registry_url.empty()) {
    RegistryGate::Options gate;
    gate.registry_url = s.config.registry_url;
    gate.token = read_secret_file(s.config.registry_token_file.string());
    if (gate.token.empty()) {
      return fail(Errc::bad_request, "registry_token_file " + s.config.registry_token_file.string() +
                                         " is empty or unreadable");
    }
    s.remote_gate = std::make_unique<RegistryGate>(std::move(gate));
  }
  s.agent_rates.emplace(RateLimitOptions{.rate_per_s = s.config.rate_limit, .burst = s.config.rate_burst});
  s.ip_connects.emplace(RateLimitOptions{.rate_per_s = s.config.ip_connect_rate, .burst = s.config.ip_connect_rate});
  s.ip_auth_failures.emplace(
      RateLimitOptions{.rate_per_s = s.config.ip_auth_failures / 60.0, .burst = s.config.ip_auth_failures});

  if (s.config.tls_enabled()) {
    s.tls.emplace(net::ssl::context::tls_server);
    s.tls->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                       net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 | net::ssl::context::no_tlsv1_1 |
                       net::ssl::context::single_dh_use);
    beast::error_code tls_ec;
    s.tls->use_certificate_chain_file(s.config.tls_cert.string(), tls_ec);
    if (tls_ec) return fail(Errc::bad_request, "tls_cert " + s.config.tls_cert.string() + ": " + tls_ec.message());
    s.tls->use_private_key_file(s.config.tls_key.string(), net::ssl::context::pem, tls_ec);
    if (tls_ec) return fail(Errc::bad_request, "tls_key " + s.config.tls_key.string() + ": " + tls_ec.message());
  }

  beast::error_code ec;
  const auto address = net::ip::make_address(s.config.listen.host, ec);
  if (ec) return fail(Errc::bad_request, "listen: invalid address \"" + s.config.listen.host + "\"");
  tcp::endpoint bind_to(address, s.config.listen.port);
  // The acceptor lives on a strand: accept_loop and drain's close never run at once.
  s.acceptor.emplace(net::make_strand(s.ioc));
  s.acceptor->open(bind_to.protocol(), ec);
  if (!ec) s.acceptor->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor->bind(bind_to, ec);
  if (!ec) s.acceptor->listen(net::socket_base::max_listen_connections, ec);
  if (ec) return fail(Errc::internal, "listen on " + s.config.listen.authority(s.config.listen.port) + ": " + ec.message());
  const auto bound = s.acceptor->local_endpoint();
  // The first stdout line keeps the spec's "listening http://" form even with TLS (tests and
  // scripts parse it); the relay_id says wss://.
  s.listening = "http://" + s.config.listen.authority(bound.port());
  s.relay_id_text = s.config.relay_id(bound.port());
  s.store_thread = std::thread([&s] { s.store_ioc.run(); });
  s.accept_loop();
  if (!s.serve_relay) return {};
  log_event(LogLevel::info, "relay.started",
            {{"listen", s.listening}, {"relay_id", s.relay_id_text}, {"stored", std::to_string(s.store->stored_messages())},
             {"revoked", std::to_string(s.revoked.size())}});
  s.expire_store_periodically(std::make_shared<net::steady_timer>(s.ioc));
  return {};
}

void RelayServer::set_http_handler(agent_mesh::http::Handler handler) { impl_->http_handler = std::move(handler); }
void RelayServer::disable_relay() { impl_->serve_relay = false; }
void RelayServer::set_registration_gate(std::function<bool(const AgentId&)> gate) {
  impl_->registration_gate = std::move(gate);
}

Status RelayServer::revoke(const Revocation& revocation) {
  if (!impl_->serve_relay) return {};
  return impl_->persist_and_apply(revocation);
}

std::vector<RelayServer::Presence> RelayServer::online_agents() const {
  std::vector<Presence> online;
  std::shared_lock lock(impl_->routes_mutex);
  online.reserve(impl_->routes.size());
  for (const auto& [text, route] : impl_->routes) {
    online.push_back({route.agent, route.connection->connected_at_ms(), route.connection->last_seen_ms()});
  }
  return online;
}

std::optional<RelayServer::Presence> RelayServer::presence(const AgentId& agent) const {
  std::shared_lock lock(impl_->routes_mutex);
  auto it = impl_->routes.find(std::string_view(agent.str()));
  if (it == impl_->routes.end()) return std::nullopt;
  return Presence{it->second.agent, it->second.connection->connected_at_ms(), it->second.connection->last_seen_ms()};
}

std::string RelayServer::listening_url() const { return impl_->listening; }
std::string RelayServer::relay_id() const { return impl_->relay_id_text; }

void RelayServer::run(unsigned threads) {
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back([this] { impl_->ioc.run(); });
  impl_->ioc.run();
  for (auto& t : pool) t.join();
}

void RelayServer::drain() {
  Impl& s = *impl_;
  if (s.draining.exchange(true)) return;
  log_event(LogLevel::info, "relay.draining", {{"timeout_s", std::to_string(s.config.drain_timeout_s)}});
  net::post(s.acceptor->get_executor(), [&s] {
    beast::error_code ignored;
    s.acceptor->close(ignored);
    {
      std::lock_guard lock(s.connections_mutex);
      for (ConnectionBase* connection : s.connections) connection->close_with(close_code::draining, "draining");
    }
    // Exit once every connection is gone, or at drain_timeout_s whatever remains.
    auto deadline = std::make_shared<std::chrono::steady_clock::time_point>(
        std::chrono::steady_clock::now() + std::chrono::seconds(s.config.drain_timeout_s));
    auto timer = std::make_shared<net::steady_timer>(s.ioc);
    auto check = std::make_shared<std::function<void()>>();
    *check = [&s, deadline, timer, check] {
      const bool empty = s.metrics.connections.load() == 0;
      if (empty || std::chrono::steady_clock::now() >= *deadline) {
        // Let the store thread finish what teardown queued, then stop.
        auto flushed = std::make_shared<std::promise<void>>();
        auto done = flushed->get_future();
        s.on_store_thread([flushed] { flushed->set_value(); });
        done.wait_for(std::chrono::seconds(2));
        s.ioc.stop();
        return;
      }
      timer->expires_after(std::chrono::milliseconds(20));
      timer->async_wait([check](beast::error_code) { (*check)(); });
    };
    (*check)();
  });
}

}  // namespace agent_mesh::relay
