// A small HTTP/1.1 server on a TCP address for handlers that may block: meshctl's MCP adapter
// (Streamable HTTP) and its receive endpoint for meshd. One request per connection (every answer
// carries `Connection: close`); a handler runs on a worker thread and answers through a
// ResponseWriter, either with one response or with a stream (chunked: SSE), and learns through
// on_close() when the client goes away (to cancel what it waits for).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent_mesh/result.hpp"
#include "net/http_client.hpp"

namespace agent_mesh::net {

struct ServerRequest {
  std::string method;
  std::string target;  // path and query as sent
  std::vector<HttpHeader> headers;  // names lowercased
  std::string body;
  [[nodiscard]] std::optional<std::string_view> header(std::string_view name) const;
  [[nodiscard]] std::string path() const { return target.substr(0, target.find('?')); }
};

// Thread-safe; every call after the connection closed is a no-op returning false.
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;
  // A complete response (Content-Length); the connection closes after it.
  virtual bool respond(int status, std::vector<HttpHeader> headers, std::string body) = 0;
  // A streamed response: the status and headers now (chunked), then write() pieces, then end().
  virtual bool start_stream(int status, std::vector<HttpHeader> headers) = 0;
  virtual bool write(std::string piece) = 0;
  virtual void end() = 0;
  // Runs once when the client closes its connection before the answer is complete (at once if it
  // already has). Not run after a complete answer.
  virtual void on_close(std::function<void()> callback) = 0;
  [[nodiscard]] virtual bool closed() const = 0;
};

// Must answer every request, at once or later from any thread (keeping the writer), e.g. an SSE
// stream kept open by whoever holds the writer.
using RequestHandler = std::function<void(ServerRequest request, std::shared_ptr<ResponseWriter> writer)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;  // 0: any free port (HttpServer::port() tells which)
  std::size_t max_body_bytes = 1024 * 1024;
  std::size_t max_header_bytes = 16 * 1024;
  // Connections at once; past it a new one is answered 503 and closed.
  std::size_t max_connections = 128;
  // Handlers running at once (they may block for a whole mesh call).
  std::size_t handler_threads = 32;
  // Reading one request must finish within this.
  std::chrono::milliseconds read_timeout{30000};
};

class HttpServer {
 public:
  // Binds and starts accepting. Errors: Errc::internal naming the address (in use, not local ...).
  [[nodiscard]] static Result<std::unique_ptr<HttpServer>> start(HttpServerOptions options, RequestHandler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  [[nodiscard]] std::uint16_t port() const noexcept;
  [[nodiscard]] const std::string& host() const noexcept;
  // Stops accepting, closes every connection (their on_close callbacks run), waits for handlers.
  void stop();

 private:
  struct Impl;
  explicit HttpServer(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

// "200 OK" reason phrases for the statuses the servers use.
[[nodiscard]] std::string_view reason_phrase(int status) noexcept;

}  // namespace agent_mesh::net
