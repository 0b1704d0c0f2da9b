#include "hostile_relay.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <future>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/limits.hpp"
#include "agent_mesh/relay_protocol.hpp"
#include "agent_mesh/routing_header.hpp"

namespace agent_mesh::test {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

Bytes random_bytes(std::size_t n) {
  thread_local std::mt19937_64 generator{std::random_device{}()};
  Bytes out(n);
  for (auto& b : out) b = static_cast<std::uint8_t>(generator());
  return out;
}

struct Conn {
  explicit Conn(tcp::socket socket) : ws(std::move(socket)) {}
  websocket::stream<beast::tcp_stream> ws;
  AgentId agent;
  std::deque<std::string> queue;
  bool writing = false;
  bool closed = false;
};

}  // namespace

struct HostileRelay::Impl {
  // Declared before the io_context: coroutine frames destroyed with it (if the thread had to be
  // stopped) still reach these.
  // ---- shared, under mutex ----
  mutable std::mutex mutex;
  mutable std::condition_variable changed;
  // Held while the hook runs (recursive: the hook may call set_tamper()).
  std::recursive_mutex hook_mutex;
  Tamper tamper;
  std::vector<Held> held;
  std::vector<std::string> received;
  std::vector<std::string> forwarded;
  std::unordered_set<AgentId> connected;

  // ---- I/O thread only ----
  std::unordered_map<AgentId, std::shared_ptr<Conn>> conns;
  std::set<std::shared_ptr<Conn>> all;

  net::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  std::thread thread;
  std::thread::id io_thread_id;
  int port = 0;
  std::string url;

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  // The thread has been joined: no socket may outlive the io_context.
  ~Impl() {
    conns.clear();
    all.clear();
  }

  [[nodiscard]] bool on_io_thread() const { return std::this_thread::get_id() == io_thread_id; }

  // Runs fn on the I/O thread and waits for it (at once when already there).
  template <class F>
  auto run_on_io(F fn) -> decltype(fn()) {
    using R = decltype(fn());
    if (on_io_thread()) return fn();
    auto task = std::make_shared<std::packaged_task<R()>>(std::move(fn));
    auto result = task->get_future();
    net::post(ioc, [task] { (*task)(); });
    if (result.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      std::fprintf(stderr, "HostileRelay: the I/O thread did not run a task within 10 s\n");
      std::abort();
    }
    return result.get();
  }

  void notify() { changed.notify_all(); }

  // ---- writing (I/O thread) ----
  void send(const std::shared_ptr<Conn>& conn, std::string text) {
    if (conn->closed) return;
    conn->queue.push_back(std::move(text));
    pump(conn);
  }
  void pump(const std::shared_ptr<Conn>& conn) {
    if (conn->writing || conn->closed || conn->queue.empty()) return;
    conn->writing = true;
    conn->ws.text(true);
    conn->ws.async_write(net::buffer(conn->queue.front()), [this, conn](beast::error_code ec, std::size_t) {
      conn->writing = false;
      if (ec) {
        conn->closed = true;
        conn->queue.clear();
        return;
      }
      conn->queue.pop_front();
      pump(conn);
    });
  }
  // Sends an envelope to `to` and records it. false: not connected.
  bool deliver(const AgentId& to, std::string frame) {
    auto found = conns.find(to);
    if (found == conns.end() || found->second->closed) return false;
    {
      std::lock_guard lock(mutex);
      forwarded.push_back(frame);
    }
    notify();
    send(found->second, std::move(frame));
    return true;
  }

  // ---- reading (I/O thread) ----
  net::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
      if (ec) {
        if (ec == net::error::operation_aborted || !acceptor.is_open()) co_return;
        continue;
      }
      net::co_spawn(ioc, serve(std::move(socket)), net::detached);
    }
  }

  net::awaitable<void> write_now(Conn& conn, const std::string& text) {
    conn.ws.text(true);
    auto [ec, n] = co_await conn.ws.async_write(net::buffer(text), use_tuple);
    (void)n;
    if (ec) conn.closed = true;
  }

  net::awaitable<void> refuse(Conn& conn, Errc code, std::string message) {
    co_await write_now(conn, serialize(ControlFrame{ErrorFrame{code, std::move(message)}}));
    const std::uint16_t close = close_code_for(code).value_or(close_code::bad_request);
    auto [ec] = co_await conn.ws.async_close(websocket::close_reason(close), use_tuple);
    (void)ec;
  }

  // One text frame; nullopt when the connection ended.
  static net::awaitable<std::optional<std::string>> read_text(Conn& conn, beast::flat_buffer& buffer) {
    auto [ec, n] = co_await conn.ws.async_read(buffer, use_tuple);
    (void)n;
    if (ec) co_return std::nullopt;
    std::string text = beast::buffers_to_string(buffer.data());
    buffer.consume(buffer.size());
    co_return text;
  }

  net::awaitable<void> serve(tcp::socket socket) {
    auto conn = std::make_shared<Conn>(std::move(socket));
    all.insert(conn);
    struct Cleanup {
      Impl* impl;
      std::shared_ptr<Conn> conn;
      ~Cleanup() {
        conn->closed = true;
        impl->all.erase(conn);
        auto found = impl->conns.find(conn->agent);
        if (!conn->agent.empty() && found != impl->conns.end() && found->second == conn) {
          impl->conns.erase(found);
          {
            std::lock_guard lock(impl->mutex);
            impl->connected.erase(conn->agent);
          }
          impl->notify();
        }
      }
    } cleanup{this, conn};

    {
      beast::error_code ignored;
      beast::get_lowest_layer(conn->ws).socket().set_option(tcp::no_delay(true), ignored);
    }
    beast::flat_buffer buffer;
    http::request<http::string_body> upgrade;
    {
      auto [ec, n] = co_await http::async_read(conn->ws.next_layer(), buffer, upgrade, use_tuple);
      (void)n;
      if (ec) co_return;
    }
    if (!websocket::is_upgrade(upgrade) || upgrade.target() != "/relay/ws") {
      http::response<http::string_body> response{http::status::not_found, upgrade.version()};
      response.body() = "not found\n";
      response.prepare_payload();
      auto [ec, n] = co_await http::async_write(conn->ws.next_layer(), response, use_tuple);
      (void)ec;
      (void)n;
      co_return;
    }
    beast::get_lowest_layer(conn->ws).expires_never();
    conn->ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    conn->ws.read_message_max(limits::default_max_envelope_bytes);
    conn->ws.auto_fragment(false);
    {
      auto [ec] = co_await conn->ws.async_accept(upgrade, use_tuple);
      if (ec) co_return;
    }
    buffer.consume(buffer.size());

    // protocol §6: hello → challenge → auth → welcome.
    auto hello_text = co_await read_text(*conn, buffer);
    if (!hello_text) co_return;
    auto hello = parse_hello(*hello_text);
    if (!hello) {
      co_await refuse(*conn, hello.error().code, hello.error().message);
      co_return;
    }
    Challenge challenge;
    const Bytes nonce = random_bytes(challenge.nonce.size());
    std::copy(nonce.begin(), nonce.end(), challenge.nonce.begin());
    challenge.relay_id = url;
    co_await write_now(*conn, serialize(ControlFrame{challenge}));
    if (conn->closed) co_return;
    auto auth_text = co_await read_text(*conn, buffer);
    if (!auth_text) co_return;
    auto auth_frame = parse_client_frame(*auth_text);
    if (!auth_frame || !std::holds_alternative<Auth>(*auth_frame)) {
      co_await refuse(*conn, Errc::bad_request, "expected an auth frame");
      co_return;
    }
    if (auto verified = verify_auth(hello->agent_id, challenge, std::get<Auth>(*auth_frame)); !verified) {
      co_await refuse(*conn, Errc::auth_failed, verified.error().message);
      co_return;
    }
    Welcome welcome;
    welcome.session_token = base64url_encode(random_bytes(limits::resume_token_bytes));
    welcome.heartbeat_ms = 30000;
    welcome.buffered = 0;
    conn->agent = hello->agent_id;
    if (auto old = conns.find(conn->agent); old != conns.end()) {
      // A newer connection of the same agent replaces the old one (the real relay says 4009).
      old->second->closed = true;
      beast::error_code ignored;
      beast::get_lowest_layer(old->second->ws).socket().close(ignored);
    }
    // Registered before the welcome is written, and everything from now on goes through the
    // connection's queue: no envelope reaches the agent before its welcome, and none is refused as
    // unreachable once the agent has been welcomed.
    conns[conn->agent] = conn;
    send(conn, serialize(ControlFrame{welcome}));
    {
      std::lock_guard lock(mutex);
      connected.insert(conn->agent);
    }
    notify();

    for (;;) {
      auto text = co_await read_text(*conn, buffer);
      if (!text) co_return;
      on_frame(conn, std::move(*text));
    }
  }

  void on_frame(const std::shared_ptr<Conn>& conn, std::string text) {
    auto kind = classify_frame(text);
    if (!kind) {
      send(conn, serialize(ControlFrame{Undeliverable{std::nullopt, Errc::bad_envelope, std::nullopt}}));
      return;
    }
    if (*kind == FrameKind::control) {
      auto control = parse_client_frame(text);
      if (control && std::holds_alternative<Ping>(*control)) send(conn, serialize(ControlFrame{Pong{}}));
      return;  // acks (nothing is stored) and anything else: ignored
    }
    std::optional<Uuid> rejected_id;
    auto header = scan_routing_header(text, limits::default_max_envelope_bytes, &rejected_id);
    if (!header || header->from != conn->agent) {
      send(conn, serialize(ControlFrame{Undeliverable{rejected_id, Errc::bad_envelope, std::nullopt}}));
      return;
    }
    {
      std::lock_guard lock(mutex);
      received.push_back(text);
    }
    notify();
    std::vector<std::string> out;
    {
      // Held while the hook runs, so set_tamper() returns only once no call of the old hook is in
      // progress (a test's hook may capture its locals).
      std::lock_guard hook_lock(hook_mutex);
      Tamper hook;
      {
        std::lock_guard lock(mutex);
        hook = tamper;
      }
      if (hook) {
        try {
          out = hook(text, header->from, header->to);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "HostileRelay: the tamper hook threw (%s); frame dropped\n", e.what());
        }
      } else {
        out.push_back(text);
      }
    }
    bool undelivered = false;
    for (auto& frame : out) undelivered |= !deliver(header->to, std::move(frame));
    if (undelivered) {
      send(conn, serialize(ControlFrame{Undeliverable{header->id, Errc::unreachable, std::nullopt}}));
    }
  }

  void shutdown() {
    acceptor.close();
    for (const auto& conn : all) {
      conn->closed = true;
      beast::error_code ignored;
      beast::get_lowest_layer(conn->ws).socket().close(ignored);
    }
  }
};

HostileRelay::HostileRelay() : impl_(std::make_shared<Impl>()) {
  Impl& s = *impl_;
  tcp::endpoint endpoint(net::ip::make_address("127.0.0.1"), 0);
  s.acceptor.open(endpoint.protocol());
  s.acceptor.set_option(tcp::acceptor::reuse_address(true));
  s.acceptor.bind(endpoint);
  s.acceptor.listen();
  s.port = s.acceptor.local_endpoint().port();
  s.url = "ws://127.0.0.1:" + std::to_string(s.port) + "/relay/ws";
  net::co_spawn(s.ioc, s.accept_loop(), net::detached);
  std::promise<void> started;
  auto started_future = started.get_future();
  s.thread = std::thread([&s, &started] {
    s.io_thread_id = std::this_thread::get_id();
    started.set_value();
    s.ioc.run();
  });
  started_future.wait();
}

HostileRelay::~HostileRelay() {
  Impl& s = *impl_;
  net::post(s.ioc, [&s] { s.shutdown(); });
  // Every coroutine ends once its socket is closed; stop anyway if one lingers.
  auto done = std::async(std::launch::async, [&s] { s.thread.join(); });
  if (done.wait_for(std::chrono::seconds(3)) != std::future_status::ready) {
    s.ioc.stop();
    done.wait();
  }
}

int HostileRelay::port() const { return impl_->port; }
const std::string& HostileRelay::url() const { return impl_->url; }

void HostileRelay::set_tamper(Tamper tamper) {
  std::lock_guard hook_lock(impl_->hook_mutex);
  std::lock_guard lock(impl_->mutex);
  impl_->tamper = std::move(tamper);
}

void HostileRelay::hold(const AgentId& to, std::string frame) {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->held.push_back({to, std::move(frame)});
  }
  impl_->notify();
}

std::size_t HostileRelay::held_count() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->held.size();
}

bool HostileRelay::wait_held(std::size_t count, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mutex);
  return impl_->changed.wait_for(lock, timeout, [&] { return impl_->held.size() >= count; });
}

std::vector<HostileRelay::Held> HostileRelay::take_held() {
  std::lock_guard lock(impl_->mutex);
  return std::exchange(impl_->held, {});
}

void HostileRelay::release() {
  auto frames = take_held();
  impl_->run_on_io([&] {
    for (auto& held : frames) impl_->deliver(held.to, std::move(held.frame));
  });
}

void HostileRelay::release_reversed() {
  auto frames = take_held();
  impl_->run_on_io([&] {
    for (auto it = frames.rbegin(); it != frames.rend(); ++it) impl_->deliver(it->to, std::move(it->frame));
  });
}

bool HostileRelay::inject(const AgentId& to, std::string frame) {
  return impl_->run_on_io([&] { return impl_->deliver(to, std::move(frame)); });
}

bool HostileRelay::connected(const AgentId& agent) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->connected.contains(agent);
}

bool HostileRelay::wait_connected(const AgentId& agent, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mutex);
  return impl_->changed.wait_for(lock, timeout, [&] { return impl_->connected.contains(agent); });
}

std::vector<std::string> HostileRelay::received() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->received;
}

std::vector<std::string> HostileRelay::forwarded() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->forwarded;
}

std::vector<std::string> HostileRelay::all_frames() const {
  std::lock_guard lock(impl_->mutex);
  std::vector<std::string> out = impl_->received;
  out.insert(out.end(), impl_->forwarded.begin(), impl_->forwarded.end());
  return out;
}

bool HostileRelay::wait_received(const std::function<bool(const std::vector<std::string>&)>& predicate,
                                 std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mutex);
  return impl_->changed.wait_for(lock, timeout, [&] { return predicate(impl_->received); });
}

bool HostileRelay::wait_forwarded(const std::function<bool(const std::vector<std::string>&)>& predicate,
                                  std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mutex);
  return impl_->changed.wait_for(lock, timeout, [&] { return predicate(impl_->forwarded); });
}

// ---- frame helpers ----

namespace frame {

boost::json::object parse(const std::string& text) { return boost::json::parse(text).as_object(); }

std::string dump(const boost::json::object& object) { return boost::json::serialize(object); }

std::string edit(const std::string& text, const std::function<void(boost::json::object&)>& change) {
  auto object = parse(text);
  change(object);
  return dump(object);
}

std::string str(const std::string& text, const std::string& member) {
  auto object = parse(text);
  const auto* value = object.if_contains(member);
  if (value == nullptr || !value->is_string()) return "";
  return std::string(value->as_string());
}

std::string msg_type(const std::string& text) { return str(text, "msg_type"); }

bool encrypted(const std::string& text) {
  auto object = parse(text);
  const auto* value = object.if_contains("encrypted");
  return value != nullptr && value->is_bool() && value->as_bool();
}

std::string flip_ciphertext_byte(const std::string& text, std::ptrdiff_t index) {
  return edit(text, [index](boost::json::object& object) {
    auto bytes = base64url_decode(object.at("payload").as_string()).value();
    const auto size = static_cast<std::ptrdiff_t>(bytes.size());
    const std::ptrdiff_t at = index < 0 ? size + index : index;
    bytes.at(static_cast<std::size_t>(at)) ^= 0x01;
    object["payload"] = base64url_encode(bytes);
  });
}

std::string new_uuid() { return Uuid::generate().to_string(); }
std::string random_sid() { return random_b64(limits::sid_bytes); }
std::string random_b64(std::size_t bytes) { return base64url_encode(random_bytes(bytes)); }

}  // namespace frame

}  // namespace agent_mesh::test
