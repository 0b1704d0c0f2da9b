// The Local API server (local_api.hpp): Beast over a Unix stream socket, one I/O thread.
#include "meshd/local_api.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/serialize.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <cerrno>
#include <cstring>
#include <future>
#include <set>
#include <thread>

#include "agent_mesh/envelope.hpp"
#include "agent_mesh/json.hpp"
#include "net/unix_socket_probe.hpp"

namespace agent_mesh::meshd {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace fs = std::filesystem;
using stream_protocol = asio::local::stream_protocol;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// Pipelined bytes a client may send while its request is answered (kept for the next request);
// past it the socket is no longer watched for an early close.
constexpr std::size_t kMaxPipelinedBytes = 64 * 1024;

std::string errno_text(int error) { return std::strerror(error); }

bool is_valid_utf8(std::string_view in) {
  std::size_t i = 0;
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(in[k]); };
  const auto cont = [&](std::size_t k, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return k < in.size() && byte(k) >= lo && byte(k) <= hi;
  };
  while (i < in.size()) {
    const unsigned char b = byte(i);
    if (b < 0x80) {
      i += 1;
    } else if (b >= 0xC2 && b <= 0xDF && cont(i + 1)) {
      i += 2;
    } else if (b >= 0xE0 && b <= 0xEF && cont(i + 1, b == 0xE0 ? 0xA0 : 0x80, b == 0xED ? 0x9F : 0xBF) &&
               cont(i + 2)) {
      i += 3;
    } else if (b >= 0xF0 && b <= 0xF4 && cont(i + 1, b == 0xF0 ? 0x90 : 0x80, b == 0xF4 ? 0x8F : 0xBF) &&
               cont(i + 2) && cont(i + 3)) {
      i += 4;
    } else {
      return false;
    }
  }
  return true;
}

// ---- The socket file ----

Error socket_problem(const fs::path& path, std::string_view what) {
  return fail(Errc::internal, "Local API socket " + path.string() + ": " + std::string(what));
}

// Creates missing directories down to `dir`, each 0700.
Status create_private_directories(const fs::path& dir) {
  fs::path partial;
  for (const auto& part : dir) {
    partial /= part;
    struct stat st {};
    if (::stat(partial.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) return fail(Errc::internal, partial.string() + " is not a directory");
      continue;
    }
    if (errno != ENOENT) return fail(Errc::internal, "cannot inspect " + partial.string() + ": " + errno_text(errno));
    if (::mkdir(partial.c_str(), 0700) != 0 && errno != EEXIST) {
      return fail(Errc::internal, "cannot create directory " + partial.string() + ": " + errno_text(errno));
    }
  }
  if (::chmod(dir.c_str(), 0700) != 0) {
    return fail(Errc::internal, "cannot make " + dir.string() + " private (0700): " + errno_text(errno));
  }
  return {};
}

// The parent directory, then whatever is already at the path (meshd-sdk.md: a 0700 directory).
Status prepare_socket_path(const fs::path& path) {
  if (path.empty() || !path.has_filename()) return fail(Errc::bad_request, "Local API socket path is empty or a directory");
  if (path.native().size() >= sizeof(sockaddr_un::sun_path)) {
    return fail(Errc::bad_request, "Local API socket path " + path.string() + " is longer than " +
                                       std::to_string(sizeof(sockaddr_un::sun_path) - 1) +
                                       " bytes (the limit of a Unix socket address); choose a shorter --socket");
  }
  fs::path parent = path.parent_path();
  if (parent.empty()) parent = ".";
  struct stat st {};
  if (::stat(parent.c_str(), &st) != 0) {
    if (errno != ENOENT) return socket_problem(path, "cannot inspect " + parent.string() + ": " + errno_text(errno));
    if (auto created = create_private_directories(parent); !created) return socket_problem(path, created.error().message);
  } else {
    if (!S_ISDIR(st.st_mode)) return socket_problem(path, parent.string() + " is not a directory");
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && st.st_uid != ::geteuid()) {
      return socket_problem(path, "directory " + parent.string() +
                                      " is writable by other users and not owned by you, so they could replace the "
                                      "socket; use a private directory (mode 0700) for --socket");
    }
  }
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return socket_problem(path, "cannot inspect it: " + errno_text(errno));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return socket_problem(path, "a file that is not a socket is in the way; remove it or choose another --socket");
  }
  // A socket file: in use if something accepts connections on it, stale (left by a crash) if not.
  const auto probe = net::probe_unix_socket(path);
  if (probe.state == net::UnixSocketProbe::State::serving) {
    return socket_problem(path, "another process is serving on it (is meshd already running for this agent?)");
  }
  if (probe.state == net::UnixSocketProbe::State::unknown) {
    return socket_problem(path, "cannot tell whether it is in use: " + errno_text(probe.error));
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return socket_problem(path, "cannot remove the stale socket: " + errno_text(errno));
  }
  return {};
}

// ---- A wake-up for a coroutine on the I/O thread ----

// Callbacks from other threads post to the I/O thread, record what happened and notify(); the
// coroutine re-checks its conditions after every wait().
class Signal {
 public:
  explicit Signal(const asio::any_io_executor& executor) : timer_(executor, asio::steady_timer::time_point::max()) {}
  void notify() {
    notified_ = true;
    timer_.cancel();
  }
  asio::awaitable<void> wait() {
    while (!notified_) {
      auto [ec] = co_await timer_.async_wait(use_tuple);
      (void)ec;
    }
    notified_ = false;
  }

 private:
  asio::steady_timer timer_;
  bool notified_ = false;
};

// One client connection. I/O thread only.
struct Conn {
  explicit Conn(stream_protocol::socket s)
      : socket(std::move(s)), idle(socket.get_executor()), signal(socket.get_executor()) {}

  stream_protocol::socket socket;
  asio::steady_timer idle;
  Signal signal;
  beast::flat_buffer buffer;
  std::uint64_t idle_generation = 0;
  bool busy = false;         // a request is being answered
  bool closed = false;       // closed by stop()
  bool client_gone = false;  // the client closed its connection
  bool half_closed = false;  // the client shut down its sending side only: answer, then close
  // The watch: a read outstanding while an answer is awaited, to notice the client leaving.
  bool watching = false;
  bool watch_pending = false;
  std::array<char, 4096> watch_buffer{};
  std::function<void()> on_gone;  // cancels the mesh request

  void close() {
    beast::error_code ignored;
    socket.shutdown(stream_protocol::socket::shutdown_both, ignored);
    socket.close(ignored);
    idle.cancel();
  }
};

// A client's read side at EOF: gone (both directions closed: POLLHUP on a Unix socket) or only
// half-closed (shutdown(SHUT_WR): it still reads the answer).
bool peer_fully_closed(stream_protocol::socket& socket) {
  pollfd p{};
  p.fd = socket.native_handle();
  p.events = POLLOUT;
  if (::poll(&p, 1, 0) < 0) return true;
  return (p.revents & (POLLHUP | POLLERR)) != 0;
}

void start_watch(const std::shared_ptr<Conn>& c) {
  c->watching = true;
  if (c->watch_pending || c->client_gone || c->half_closed || c->closed) return;
  c->watch_pending = true;
  c->socket.async_read_some(asio::buffer(c->watch_buffer), [c](const beast::error_code& ec, std::size_t n) {
    c->watch_pending = false;
    if (n > 0) {
      // Pipelined bytes: they belong after whatever the buffer already holds.
      auto space = c->buffer.prepare(n);
      std::memcpy(space.data(), c->watch_buffer.data(), n);
      c->buffer.commit(n);
    }
    if (ec && ec != asio::error::operation_aborted) {
      if (ec == asio::error::eof && !peer_fully_closed(c->socket)) {
        c->half_closed = true;
      } else {
        c->client_gone = true;
        if (c->on_gone) std::exchange(c->on_gone, nullptr)();
      }
    } else if (!ec && c->watching && c->buffer.size() < kMaxPipelinedBytes) {
      start_watch(c);
      return;
    }
    c->signal.notify();
  });
}

asio::awaitable<void> stop_watch(std::shared_ptr<Conn> c) {
  c->watching = false;
  c->on_gone = nullptr;
  if (c->watch_pending) {
    beast::error_code ignored;
    c->socket.cancel(ignored);
    while (c->watch_pending) co_await c->signal.wait();
  }
}

// ---- Responses ----

using StringResponse = http::response<http::string_body>;

StringResponse json_response(unsigned version, int status, std::string body) {
  StringResponse res;
  res.version(version);
  res.result(static_cast<unsigned>(status));
  if (status == 499) res.reason("Client Closed Request");
  res.set(http::field::content_type, "application/json");
  res.body() = std::move(body);
  return res;
}

StringResponse error_response(unsigned version, const Error& error, int status = 0) {
  return json_response(version, status != 0 ? status : local_api_status(error.code), error.to_http_json());
}

std::string error_line(const Error& error) { return error.to_http_json() + "\n"; }

// ---- POST /request ----

struct LocalRequest {
  AgentId target;
  std::string capability;
  boost::json::value payload;
  std::optional<std::chrono::milliseconds> timeout;
  bool stream = false;
};

Result<LocalRequest> parse_local_request(std::string_view body) {
  json::ParseOptions options;
  options.max_bytes = kMaxLocalRequestBodyBytes;
  auto parsed = json::parse_ijson(body, options);
  if (!parsed) {
    if (parsed.error().code == Errc::too_large) return std::move(parsed).error();
    return fail(Errc::bad_request, "request body is not valid JSON: " + parsed.error().message);
  }
  auto* object = parsed->if_object();
  if (object == nullptr) return fail(Errc::bad_request, "request body must be a JSON object {target, capability, payload, timeout_ms?, stream?}");
  LocalRequest out;
  bool have_target = false, have_capability = false, have_payload = false;
  for (auto& member : *object) {
    const std::string_view key = member.key();
    auto& value = member.value();
    if (key == "target") {
      if (!value.is_string()) return fail(Errc::bad_request, "target must be an agent ID (a string)");
      auto id = AgentId::parse(std::string_view(value.get_string()));
      if (!id) return fail(Errc::bad_request, "target is not a valid agent ID: " + id.error().message);
      out.target = std::move(*id);
      have_target = true;
    } else if (key == "capability") {
      if (!value.is_string() || !is_valid_capability_name(std::string_view(value.get_string()))) {
        return fail(Errc::bad_request, "capability must be a name matching [A-Za-z0-9_-]{1,54}");
      }
      out.capability = std::string(value.get_string());
      have_capability = true;
    } else if (key == "payload") {
      out.payload = std::move(value);
      have_payload = true;
    } else if (key == "timeout_ms") {
      if (!value.is_int64() || value.get_int64() <= 0) {
        return fail(Errc::bad_request, "timeout_ms must be a positive integer (milliseconds)");
      }
      out.timeout = std::chrono::milliseconds(value.get_int64());
    } else if (key == "stream") {
      if (!value.is_bool()) return fail(Errc::bad_request, "stream must be true or false");
      out.stream = value.get_bool();
    } else {
      std::string name(key.substr(0, 64));
      return fail(Errc::bad_request, "unknown member \"" + name +
                                         "\" in the request; members are target, capability, payload, timeout_ms, stream");
    }
  }
  if (!have_target) return fail(Errc::bad_request, "target is required");
  if (!have_capability) return fail(Errc::bad_request, "capability is required");
  if (!have_payload) return fail(Errc::bad_request, "payload is required");
  return out;
}

}  // namespace

int local_api_status(Errc code) noexcept {
  switch (code) {
    case Errc::acl_denied:
    case Errc::revoked: return 403;
    case Errc::unknown_capability: return 404;
    case Errc::bad_request: return 400;
    case Errc::too_large: return 413;
    case Errc::rate_limited: return 429;
    case Errc::timeout:
    case Errc::expired: return 504;
    case Errc::unreachable:
    case Errc::no_session:
    case Errc::agent_error: return 502;
    case Errc::internal: return 500;
    case Errc::cancelled: return 499;
    default: return http_status(code);
  }
}

// ---- The server ----

struct LocalApiServer::Impl : std::enable_shared_from_this<LocalApiServer::Impl> {
  Impl(fs::path p, Hooks h)
      : path(std::move(p)), hooks(std::move(h)), work(asio::make_work_guard(io)), acceptor(io), workers(2) {}

  fs::path path;
  Hooks hooks;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  stream_protocol::acceptor acceptor;
  asio::thread_pool workers;  // status / agents hooks
  std::thread thread;
  dev_t socket_dev = 0;
  ino_t socket_ino = 0;
  // I/O thread only.
  std::set<std::shared_ptr<Conn>> conns;
  bool stopping = false;
  // Any thread.
  std::atomic<std::size_t> busy{0};
  std::atomic<bool> stopped{false};

  Status listen() {
    AGENT_MESH_TRY(prepare_socket_path(path));
    beast::error_code ec;
    acceptor.open(stream_protocol(), ec);
    if (ec) return socket_problem(path, "cannot create the socket: " + ec.message());
    // umask is process-wide: set only around bind, at start-up (mode 0600 from the first moment,
    // unlike a chmod after bind).
    const mode_t old_mask = ::umask(0177);
    acceptor.bind(stream_protocol::endpoint(path.string()), ec);
    ::umask(old_mask);
    if (ec) return socket_problem(path, "cannot bind: " + ec.message());
    if (::chmod(path.c_str(), 0600) != 0) return socket_problem(path, "cannot set mode 0600: " + errno_text(errno));
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
      socket_dev = st.st_dev;
      socket_ino = st.st_ino;
    }
    acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      remove_socket_file();
      return socket_problem(path, "cannot listen: " + ec.message());
    }
    asio::co_spawn(io, accept_loop(), asio::detached);
    thread = std::thread([this] { io.run(); });
    return {};
  }

  void remove_socket_file() {
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == socket_dev && st.st_ino == socket_ino) {
      ::unlink(path.c_str());
    }
  }

  // Runs `task` on the I/O thread and waits for it.
  void on_io_and_wait(std::function<void()> task) {
    std::promise<void> done;
    auto finished = done.get_future();
    asio::post(io, [&task, &done] {
      task();
      done.set_value();
    });
    finished.wait();
  }

  static void close_conn(const std::shared_ptr<Conn>& c) {
    c->closed = true;
    if (c->on_gone) std::exchange(c->on_gone, nullptr)();
    c->close();
    c->signal.notify();
  }

  void stop(std::chrono::milliseconds grace) {
    if (stopped.exchange(true)) return;
    on_io_and_wait([this] {
      stopping = true;
      beast::error_code ignored;
      acceptor.close(ignored);
      for (const auto& c : conns)
        if (!c->busy) close_conn(c);
    });
    const auto until = std::chrono::steady_clock::now() + grace;
    while (busy.load() > 0 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    on_io_and_wait([this] {
      for (const auto& c : conns) close_conn(c);
    });
    workers.stop();
    workers.join();
    // Let the closed connections' coroutines finish (they only clean up now), then stop for good
    // (the work guard keeps the I/O thread running for on_io_and_wait until then).
    const auto drain_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
    while (!conns_empty() && std::chrono::steady_clock::now() < drain_until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    work.reset();
    io.stop();
    if (thread.joinable()) thread.join();
    remove_socket_file();
  }

  bool conns_empty() {
    bool empty = false;
    on_io_and_wait([this, &empty] { empty = conns.empty(); });
    return empty;
  }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
      if (stopping) co_return;
      if (ec) {
        if (ec == asio::error::operation_aborted) co_return;
        // Out of descriptors or similar: back off rather than spin.
        asio::steady_timer backoff(io, std::chrono::milliseconds(100));
        auto [wait_ec] = co_await backoff.async_wait(use_tuple);
        (void)wait_ec;
        continue;
      }
      if (conns.size() >= kMaxLocalConnections) {
        static const std::string kBusy = [] {
          const std::string body = Error{Errc::rate_limited, "too many Local API connections; retry later"}.to_http_json();
          return "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                 "Connection: close\r\nContent-Length: " +
                 std::to_string(body.size()) + "\r\n\r\n" + body;
        }();
        auto refused = std::make_shared<stream_protocol::socket>(std::move(socket));
        asio::async_write(*refused, asio::buffer(kBusy), [refused](const beast::error_code&, std::size_t) {
          beast::error_code ignored;
          refused->shutdown(stream_protocol::socket::shutdown_both, ignored);
          refused->close(ignored);
        });
        continue;
      }
      auto c = std::make_shared<Conn>(std::move(socket));
      conns.insert(c);
      // `this`, not a shared_ptr: the handler lives in io, which this object owns.
      asio::co_spawn(io, serve(c), [this, c](const std::exception_ptr&) {
        if (c->busy) {
          c->busy = false;
          --busy;
        }
        c->close();
        conns.erase(c);
      });
    }
  }

  void arm_idle(const std::shared_ptr<Conn>& c, std::chrono::steady_clock::duration after) {
    const auto generation = ++c->idle_generation;
    c->idle.expires_after(after);
    c->idle.async_wait([c, generation](const beast::error_code& ec) {
      if (!ec && generation == c->idle_generation) c->close();
    });
  }
  static void disarm_idle(const std::shared_ptr<Conn>& c) {
    ++c->idle_generation;
    c->idle.cancel();
  }

  asio::awaitable<bool> write(std::shared_ptr<Conn> c, StringResponse res, bool keep_alive) {
    res.keep_alive(keep_alive);
    res.prepare_payload();
    auto [ec, n] = co_await http::async_write(c->socket, res, use_tuple);
    (void)n;
    co_return !ec && keep_alive;
  }

  asio::awaitable<void> serve(std::shared_ptr<Conn> c) {
    for (;;) {
      if (c->closed || c->client_gone || c->half_closed || stopping) co_return;
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(kMaxLocalRequestHeaderBytes));
      parser.body_limit(static_cast<std::uint64_t>(kMaxLocalRequestBodyBytes));
      arm_idle(c, kLocalIdleTimeout);
      auto [ec, n] = co_await http::async_read_header(c->socket, c->buffer, parser, use_tuple);
      if (!ec) {
        const auto expect = parser.get()[http::field::expect];
        if (beast::iequals(expect, "100-continue")) {
          static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
          auto [write_ec, written] = co_await asio::async_write(c->socket, asio::buffer(kContinue), use_tuple);
          (void)written;
          ec = write_ec;
        }
      }
      if (!ec && !parser.is_done()) {
        auto [read_ec, read] = co_await http::async_read(c->socket, c->buffer, parser, use_tuple);
        (void)read;
        ec = read_ec;
      }
      (void)n;
      disarm_idle(c);
      if (c->closed) co_return;
      if (ec == http::error::body_limit) {
        co_await refuse_too_large(c, parser.get().version());
        co_return;
      }
      if (ec) {
        // A malformed request gets a 400; a connection that closed or timed out gets nothing.
        if (&ec.category() == &http::make_error_code(http::error::end_of_stream).category() &&
            ec != http::error::end_of_stream && ec != http::error::partial_message) {
          co_await write(c, error_response(11, fail(Errc::bad_request, "malformed HTTP request: " + ec.message())), false);
        }
        co_return;
      }
      auto request = parser.release();
      const bool keep_alive = request.keep_alive();
      c->busy = true;
      ++busy;
      const bool keep = co_await handle(c, std::move(request), keep_alive);
      c->busy = false;
      --busy;
      if (!keep) co_return;
    }
  }

  asio::awaitable<void> refuse_too_large(std::shared_ptr<Conn> c, unsigned version) {
    co_await write(c,
                   error_response(version, fail(Errc::too_large, "request body is larger than " +
                                                                     std::to_string(kMaxLocalRequestBodyBytes) + " bytes")),
                   false);
    // Closing with the body unread would reset the connection and the client could lose the 413:
    // read and discard what is still coming, bounded in bytes and time.
    arm_idle(c, std::chrono::seconds(2));
    std::array<char, 16384> sink{};
    for (std::size_t drained = 0; drained < 4 * kMaxLocalRequestBodyBytes;) {
      auto [ec, read] = co_await c->socket.async_read_some(asio::buffer(sink), use_tuple);
      if (ec) break;
      drained += read;
    }
    disarm_idle(c);
  }

  // Answers one request; true: the connection may serve another.
  asio::awaitable<bool> handle(std::shared_ptr<Conn> c, http::request<http::string_body> request, bool keep_alive) {
    const unsigned version = request.version();
    const std::string_view target = request.target();
    const std::string_view path_part = target.substr(0, target.find('?'));
    const auto method_not_allowed = [&](std::string_view allowed) {
      auto res = error_response(version,
                                fail(Errc::bad_request, std::string(path_part) + " accepts " + std::string(allowed) + " only"),
                                405);
      res.set(http::field::allow, allowed);
      return res;
    };
    if (path_part == "/request") {
      if (request.method() != http::verb::post) co_return co_await write(c, method_not_allowed("POST"), keep_alive);
      auto parsed = parse_local_request(request.body());
      if (!parsed) co_return co_await write(c, error_response(version, parsed.error()), keep_alive);
      if (parsed->stream) co_return co_await serve_stream(c, version, std::move(*parsed), keep_alive);
      co_return co_await serve_unary(c, version, std::move(*parsed), keep_alive);
    }
    if (path_part == "/status") {
      if (request.method() != http::verb::get) co_return co_await write(c, method_not_allowed("GET"), keep_alive);
      // (a named std::function: g++ 12 destroys a lambda temporary in a co_await operand twice)
      std::function<Result<boost::json::value>()> task = [this]() -> Result<boost::json::value> {
        if (!hooks.status) return fail(Errc::internal, "status is not available");
        return boost::json::value(hooks.status());
      };
      auto status = co_await on_worker<boost::json::value>(c, std::move(task));
      if (!status) co_return false;
      co_return co_await write(c, value_response(version, *status), keep_alive);
    }
    if (path_part == "/agents") {
      if (request.method() != http::verb::get) co_return co_await write(c, method_not_allowed("GET"), keep_alive);
      std::optional<std::string> capability, q;
      if (auto problem = parse_agents_query(target, capability, q); !problem) {
        co_return co_await write(c, error_response(version, problem.error()), keep_alive);
      }
      std::function<Result<boost::json::value>()> task = [this, capability, q]() -> Result<boost::json::value> {
        if (!hooks.agents) return fail(Errc::internal, "discovery is not available (meshd has no --cp-url)");
        return hooks.agents(capability, q);
      };
      auto agents = co_await on_worker<boost::json::value>(c, std::move(task));
      if (!agents) co_return false;
      co_return co_await write(c, value_response(version, *agents), keep_alive);
    }
    co_return co_await write(
        c,
        error_response(version, fail(Errc::not_found, "unknown endpoint; the Local API serves POST /request, GET "
                                                      "/status and GET /agents")),
        keep_alive);
  }

  static StringResponse value_response(unsigned version, const Result<boost::json::value>& value) {
    if (!value) return error_response(version, value.error());
    return json_response(version, 200, boost::json::serialize(*value));
  }

  static Status parse_agents_query(std::string_view target, std::optional<std::string>& capability,
                                   std::optional<std::string>& q) {
    auto url = boost::urls::parse_origin_form(target);
    if (!url) return fail(Errc::bad_request, "malformed query string");
    for (const auto& param : url->params(boost::urls::encoding_opts(true))) {
      if (!param.has_value || param.value.empty()) continue;
      if (!is_valid_utf8(param.value)) return fail(Errc::bad_request, "query values must be UTF-8");
      if (param.key == "capability") {
        if (!is_valid_capability_name(param.value)) {
          return fail(Errc::bad_request, "capability must be a name matching [A-Za-z0-9_-]{1,54}");
        }
        capability = param.value;
      } else if (param.key == "q") {
        q = param.value;
      }
    }
    return {};
  }

  // Runs a (possibly blocking) hook on a worker; nullopt when the connection was closed meanwhile.
  template <class T>
  asio::awaitable<std::optional<Result<T>>> on_worker(std::shared_ptr<Conn> c, std::function<Result<T>()> task) {
    auto slot = std::make_shared<std::optional<Result<T>>>();
    asio::post(workers, [this, slot, weak = std::weak_ptr<Conn>(c), task = std::move(task)] {
      std::optional<Result<T>> result;
      try {
        result.emplace(task());
      } catch (const std::exception& e) {
        result.emplace(fail(Errc::internal, std::string("Local API hook failed: ") + e.what()));
      }
      asio::post(io, [slot, weak, result = std::move(result)]() mutable {
        *slot = std::move(result);
        if (auto locked = weak.lock()) locked->signal.notify();
      });
    });
    while (!slot->has_value() && !c->closed) co_await c->signal.wait();
    if (!slot->has_value()) co_return std::nullopt;
    co_return std::move(*slot);
  }

  // Completions from the SDK's threads reach the I/O thread only while the server lives.
  template <class T>
  auto deliver_to(std::shared_ptr<Conn> c, std::shared_ptr<std::optional<Result<T>>> slot) {
    return [weak_impl = weak_from_this(), weak = std::weak_ptr<Conn>(c), slot](Result<T> result) {
      const auto impl = weak_impl.lock();
      if (!impl) return;
      asio::post(impl->io, [weak, slot, result = std::move(result)]() mutable {
        *slot = std::move(result);
        if (auto locked = weak.lock()) locked->signal.notify();
      });
    };
  }

  RequestOptions request_options(const LocalRequest& request, const CancelToken& token) {
    RequestOptions options;
    options.timeout = request.timeout;
    options.cancel = token;
    return options;
  }

  asio::awaitable<bool> serve_unary(std::shared_ptr<Conn> c, unsigned version, LocalRequest request, bool keep_alive) {
    CancelToken token;
    Pending<Response> pending;
    std::optional<Error> failed;  // (no co_await inside a catch block)
    try {
      if (!hooks.request) throw std::runtime_error("no request hook");
      pending = hooks.request(request.target, std::move(request.capability), std::move(request.payload),
                              request_options(request, token));
    } catch (const std::exception& e) {
      failed = fail(Errc::internal, std::string("request failed: ") + e.what());
    }
    if (failed) co_return co_await write(c, error_response(version, *failed), keep_alive);
    auto slot = std::make_shared<std::optional<Result<Response>>>();
    c->on_gone = [token] { token.cancel(); };
    start_watch(c);
    pending.then(deliver_to<Response>(c, slot));
    while (!slot->has_value() && !c->client_gone && !c->closed) co_await c->signal.wait();
    co_await stop_watch(c);
    if (!slot->has_value() || c->client_gone || c->closed) {
      token.cancel();
      co_return false;
    }
    const Result<Response>& result = **slot;
    if (!result) co_return co_await write(c, error_response(version, result.error()), keep_alive && !c->half_closed);
    auto res = json_response(version, 200, boost::json::serialize(result->body));
    res.set("X-Mesh-Encrypted", result->encrypted ? "true" : "false");
    co_return co_await write(c, std::move(res), keep_alive && !c->half_closed);
  }

  asio::awaitable<bool> serve_stream(std::shared_ptr<Conn> c, unsigned version, LocalRequest request, bool keep_alive) {
    CancelToken token;
    std::optional<StreamCall> call;
    std::optional<Error> failed;  // (no co_await inside a catch block)
    try {
      if (!hooks.stream) throw std::runtime_error("no stream hook");
      call.emplace(hooks.stream(request.target, std::move(request.capability), std::move(request.payload),
                                request_options(request, token)));
    } catch (const std::exception& e) {
      failed = fail(Errc::internal, std::string("stream failed: ") + e.what());
    }
    if (failed) co_return co_await write(c, error_response(version, *failed), keep_alive);
    auto cancel = [token, call]() mutable {
      token.cancel();
      call->cancel();
    };
    c->on_gone = cancel;
    start_watch(c);

    // HTTP/1.1: chunked, the connection may go on; HTTP/1.0: the body ends when the connection does.
    const bool chunked = version >= 11;
    if (!chunked) keep_alive = false;
    http::response<http::empty_body> head{http::status::ok, version};
    head.set(http::field::content_type, "application/x-ndjson");
    head.set("X-Mesh-Encrypted", call->encrypted() ? "true" : "false");
    if (chunked) head.chunked(true);
    head.keep_alive(keep_alive);
    http::response_serializer<http::empty_body> serializer{head};
    {
      auto [ec, n] = co_await http::async_write_header(c->socket, serializer, use_tuple);
      (void)n;
      if (ec) {
        cancel();
        co_await stop_watch(c);
        co_return false;
      }
    }
    const auto send = [this, c, chunked](std::string line) -> asio::awaitable<bool> {
      beast::error_code ec;
      if (chunked) {
        auto [write_ec, n] = co_await asio::async_write(c->socket, http::make_chunk(asio::buffer(line)), use_tuple);
        (void)n;
        ec = write_ec;
      } else {
        auto [write_ec, n] = co_await asio::async_write(c->socket, asio::buffer(line), use_tuple);
        (void)n;
        ec = write_ec;
      }
      co_return !ec;
    };

    std::int64_t count = 0;
    for (;;) {
      auto slot = std::make_shared<std::optional<Result<std::optional<boost::json::value>>>>();
      call->next_async().then(deliver_to<std::optional<boost::json::value>>(c, slot));
      while (!slot->has_value() && !c->client_gone && !c->closed) co_await c->signal.wait();
      if (!slot->has_value() || c->client_gone || c->closed) {
        cancel();
        co_await stop_watch(c);
        co_return false;
      }
      const auto& next = **slot;
      std::string line;
      bool last = false;
      if (!next) {
        line = error_line(next.error());
        last = true;
      } else if (!next->has_value()) {
        line = "{\"end\":" + std::to_string(count) + "}\n";
        last = true;
      } else {
        line = "{\"seq\":" + std::to_string(count) + ",\"body\":" + boost::json::serialize(**next) + "}\n";
        ++count;
      }
      // (not a conditional expression around co_await: g++ 12 miscompiles those)
      bool sent = co_await send(std::move(line));
      if (!sent) {
        cancel();
        co_await stop_watch(c);
        co_return false;
      }
      if (last) break;
    }
    co_await stop_watch(c);
    if (chunked) {
      auto [ec, n] = co_await asio::async_write(c->socket, http::make_chunk_last(), use_tuple);
      (void)n;
      if (ec) co_return false;
    }
    co_return keep_alive && !c->half_closed && !c->client_gone;
  }
};

LocalApiServer::LocalApiServer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<LocalApiServer>> LocalApiServer::start(std::filesystem::path socket_path, Hooks hooks) {
  auto impl = std::make_shared<Impl>(std::move(socket_path), std::move(hooks));
  if (auto listening = impl->listen(); !listening) return std::move(listening).error();
  return std::unique_ptr<LocalApiServer>(new LocalApiServer(std::move(impl)));
}

void LocalApiServer::stop(std::chrono::milliseconds grace) { impl_->stop(grace); }

LocalApiServer::~LocalApiServer() { impl_->stop(std::chrono::milliseconds(0)); }

const std::filesystem::path& LocalApiServer::socket_path() const noexcept { return impl_->path; }

}  // namespace agent_mesh::meshd
