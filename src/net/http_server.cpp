#include "net/http_server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <array>
#include <deque>
#include <sstream>
#include <mutex>
#include <set>
#include <thread>

#include "agent_mesh/version.hpp"
#include "net/ascii.hpp"

namespace agent_mesh::net {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

bool safe_header_text(std::string_view text) {
  return text.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

std::string head(int status, const std::vector<HttpHeader>& headers, std::optional<std::size_t> content_length) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason_phrase(status)) + "\r\n";
  for (const auto& header : headers) {
    // Handlers build headers from their own constants; a CR/LF here would be a bug, not input.
    if (!safe_header_text(header.name) || !safe_header_text(header.value)) continue;
    out += header.name + ": " + header.value + "\r\n";
  }
  out += "Server: agent-mesh/" + std::string(kVersion) + "\r\nConnection: close\r\n";
  if (content_length) {
    out += "Content-Length: " + std::to_string(*content_length) + "\r\n";
  } else {
    out += "Transfer-Encoding: chunked\r\n";
  }
  return out + "\r\n";
}

}  // namespace

std::optional<std::string_view> ServerRequest::header(std::string_view name) const {
  for (const auto& h : headers) {
    if (equals_ignore_case(h.name, name)) return std::string_view(h.value);  // stored names are lower-case
  }
  return std::nullopt;
}

std::string_view reason_phrase(int status) noexcept {
  switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
  }
}

// One connection: its socket lives on the I/O thread; handlers talk to it through the
// ResponseWriter interface, whose calls queue bytes for the I/O thread.
class Connection final : public ResponseWriter, public std::enable_shared_from_this<Connection> {
 public:
  Connection(asio::io_context& io, tcp::socket socket) : io_(io), stream_(std::move(socket)) {}

  beast::tcp_stream& stream() { return stream_; }

  bool respond(int status, std::vector<HttpHeader> headers, std::string body) override {
    std::string bytes = head(status, headers, body.size());
    bytes += body;
    return enqueue(std::move(bytes), true);
  }
  bool start_stream(int status, std::vector<HttpHeader> headers) override {
    return enqueue(head(status, headers, std::nullopt), false);
  }
  bool write(std::string piece) override {
    if (piece.empty()) return !closed();
    std::ostringstream size;
    size << std::hex << piece.size();
    return enqueue(size.str() + "\r\n" + piece + "\r\n", false);
  }
  void end() override { (void)enqueue("0\r\n\r\n", true); }
  void on_close(std::function<void()> callback) override {
    {
      const std::lock_guard lock(mutex_);
      if (!gone_) {
        close_callbacks_.push_back(std::move(callback));
        return;
      }
      if (complete_) return;
    }
    callback();
  }
  bool closed() const override {
    const std::lock_guard lock(mutex_);
    return gone_;
  }

  // I/O thread: the client went away (or the server stops) before the answer was complete.
  void lost() {
    std::vector<std::function<void()>> callbacks;
    {
      const std::lock_guard lock(mutex_);
      if (gone_) return;
      gone_ = true;
      queue_.clear();
      if (!complete_) callbacks.swap(close_callbacks_);
    }
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
    for (auto& callback : callbacks) callback();
  }

  // I/O thread: watch for the client closing while the handler works.
  void watch() {
    stream_.socket().async_read_some(asio::buffer(watch_buffer_), [self = shared_from_this()](const beast::error_code& ec, std::size_t) {
      if (!ec) return self->watch();  // pipelined bytes: ignored, one request per connection
      self->lost();
    });
  }

 private:
  bool enqueue(std::string bytes, bool last) {
    {
      const std::lock_guard lock(mutex_);
      if (gone_ || finishing_) return false;
      queue_.push_back(std::move(bytes));
      if (last) {
        finishing_ = true;
        complete_ = true;
      }
      if (writing_) return true;
      writing_ = true;
    }
    asio::post(io_, [self = shared_from_this()] { self->write_next(); });
    return true;
  }

  // I/O thread.
  void write_next() {
    std::string* front = nullptr;
    bool finished = false;
    {
      const std::lock_guard lock(mutex_);
      if (gone_ || queue_.empty()) {
        writing_ = false;
        finished = !gone_ && finishing_;
      } else {
        front = &queue_.front();
      }
    }
    if (front == nullptr) {
      if (finished) close_after_flush();
      return;
    }
    asio::async_write(stream_.socket(), asio::buffer(*front), [self = shared_from_this()](const beast::error_code& ec, std::size_t) {
      if (ec) return self->lost();
      {
        const std::lock_guard lock(self->mutex_);
        if (!self->queue_.empty()) self->queue_.pop_front();
      }
      self->write_next();
    });
  }

  void close_after_flush() {
    {
      const std::lock_guard lock(mutex_);
      gone_ = true;
      close_callbacks_.clear();
    }
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.socket().close(ignored);
  }

  asio::io_context& io_;
  beast::tcp_stream stream_;
  std::array<char, 512> watch_buffer_{};
  mutable std::mutex mutex_;
  std::deque<std::string> queue_;
  std::vector<std::function<void()>> close_callbacks_;
  bool writing_ = false;
  bool finishing_ = false;  // the last bytes are queued
  bool complete_ = false;   // the answer is complete (no close callbacks then)
  bool gone_ = false;       // the socket is closed
};

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  HttpServerOptions options;
  RequestHandler handler;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  asio::thread_pool workers;
  std::thread io_thread;
  std::mutex mutex;
  std::set<std::shared_ptr<Connection>> connections;
  bool stopped = false;

  Impl(HttpServerOptions o, RequestHandler h) : options(std::move(o)), handler(std::move(h)), workers(options.handler_threads) {}

  asio::awaitable<void> accept_loop() {
    while (true) {
      beast::error_code ec;
      tcp::socket socket = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
        continue;  // e.g. EMFILE: keep serving the connections we have
      }
      auto connection = std::make_shared<Connection>(io, std::move(socket));
      bool full = false;
      {
        const std::lock_guard lock(mutex);
        for (auto it = connections.begin(); it != connections.end();) {
          it = (*it)->closed() ? connections.erase(it) : std::next(it);
        }
        full = connections.size() >= options.max_connections;
        if (!full) connections.insert(connection);
      }
      if (full) {
        (void)connection->respond(503, {{"Content-Type", "application/json"}},
                                  R"({"error":{"code":"rate_limited","message":"too many connections"}})");
        continue;
      }
      asio::co_spawn(io, serve(connection), asio::detached);
    }
  }

  asio::awaitable<void> serve(std::shared_ptr<Connection> connection) {
    beast::flat_buffer buffer;
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(options.max_header_bytes));
    parser.body_limit(static_cast<std::uint64_t>(options.max_body_bytes));
    connection->stream().expires_after(options.read_timeout);
    beast::error_code ec;
    co_await http::async_read(connection->stream(), buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    connection->stream().expires_never();
    if (ec == http::error::body_limit) {
      (void)connection->respond(413, {{"Content-Type", "application/json"}},
                                R"({"error":{"code":"too_large","message":"request body too large"}})");
    } else if (ec) {
      if (ec != http::error::end_of_stream && ec != beast::error::timeout) {
        (void)connection->respond(400, {{"Content-Type", "application/json"}},
                                  R"({"error":{"code":"bad_request","message":"malformed HTTP request"}})");
      } else {
        connection->lost();
      }
    } else {
      auto message = parser.release();
      ServerRequest request;
      request.method = std::string(message.method_string());
      request.target = std::string(message.target());
      for (const auto& field : message.base()) {
        request.headers.push_back({ascii_lower(field.name_string()), std::string(field.value())});
      }
      request.body = std::move(message.body());
      connection->watch();
      asio::post(workers, [self = shared_from_this(), connection, request = std::move(request)]() mutable {
        self->handler(std::move(request), std::move(connection));
      });
    }
  }

  void stop() {
    {
      const std::lock_guard lock(mutex);
      if (stopped) return;
      stopped = true;
    }
    asio::post(io, [self = shared_from_this()] {
      beast::error_code ignored;
      self->acceptor.close(ignored);
      std::set<std::shared_ptr<Connection>> all;
      {
        const std::lock_guard lock(self->mutex);
        all.swap(self->connections);
      }
      for (const auto& connection : all) connection->lost();
    });
    workers.join();
    io.stop();
    if (io_thread.joinable()) io_thread.join();
  }
};

HttpServer::HttpServer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { stop(); }

Result<std::unique_ptr<HttpServer>> HttpServer::start(HttpServerOptions options, RequestHandler handler) {
  auto impl = std::make_shared<Impl>(std::move(options), std::move(handler));
  const std::string where = impl->options.host + ":" + std::to_string(impl->options.port);
  beast::error_code ec;
  const auto address = asio::ip::make_address(impl->options.host, ec);
  if (ec) return fail(Errc::bad_request, "cannot listen on " + where + ": not an IP address");
  const tcp::endpoint endpoint(address, impl->options.port);
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail(Errc::internal, "cannot listen on " + where + ": " + ec.message());
  impl->options.port = impl->acceptor.local_endpoint().port();
  asio::co_spawn(impl->io, impl->accept_loop(), asio::detached);
  impl->io_thread = std::thread([impl] {
    auto guard = asio::make_work_guard(impl->io);
    impl->io.run();
  });
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

std::uint16_t HttpServer::port() const noexcept { return impl_->options.port; }
const std::string& HttpServer::host() const noexcept { return impl_->options.host; }
void HttpServer::stop() { impl_->stop(); }

}  // namespace agent_mesh::net
