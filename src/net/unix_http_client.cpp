#include "net/unix_http_client.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/asio/post.hpp>
#include <mutex>
#include <optional>

#include "agent_mesh/version.hpp"

namespace agent_mesh::net {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Stream = beast::basic_stream<asio::local::stream_protocol>;

// What a cancel from another thread may touch: the io_context while the exchange runs, nothing after.
struct CancelHook {
  std::mutex mutex;
  asio::io_context* io = nullptr;
  Stream* stream = nullptr;
  bool cancelled = false;
};

struct Exchange {
  const UnixHttpRequest& request;
  std::optional<Result<HttpResponse>> outcome;

  Error failed(std::string_view doing, const beast::error_code& ec) const {
    if (ec == beast::error::timeout) {
      return fail(Errc::timeout, "unix_http: " + request.method + " " + request.target + " on " + request.socket_path +
                                     " timed out after " + std::to_string(request.timeout.count()) + " ms");
    }
    if (ec == http::error::body_limit) {
      return fail(Errc::too_large, "unix_http: the answer from " + request.socket_path + " exceeds " +
                                       std::to_string(request.max_response_body_bytes) + " bytes");
    }
    return fail(Errc::unreachable, "unix_http: " + std::string(doing) + " " + request.socket_path + " failed: " + ec.message());
  }

  asio::awaitable<void> run(Stream& stream) {
    beast::error_code ec;
    stream.expires_after(request.timeout);
    co_await stream.async_connect(asio::local::stream_protocol::endpoint(request.socket_path),
                                  asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      outcome = failed("connect to", ec);
      co_return;
    }
    http::request<http::string_body> message;
    message.method_string(request.method);
    message.target(request.target);
    message.version(11);
    message.set(http::field::host, "meshd");
    message.set(http::field::connection, "close");
    message.set(http::field::user_agent, "agent-mesh/" + std::string(kVersion));
    if (!request.body.empty() || request.method == "POST") {
      message.set(http::field::content_type, "application/json");
      message.body() = request.body;
      message.prepare_payload();
    }
    co_await http::async_write(stream, message, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      outcome = failed("sending to", ec);
      co_return;
    }
    http::response_parser<http::string_body> parser;
    if (request.on_body) {
      parser.body_limit(boost::none);  // streamed: handed over piece by piece, never collected
    } else {
      parser.body_limit(static_cast<std::uint64_t>(request.max_response_body_bytes));
    }
    beast::flat_buffer buffer;
    co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      outcome = failed("reading from", ec);
      co_return;
    }
    HttpResponse out;
    out.status = static_cast<int>(parser.get().result_int());
    for (const auto& field : parser.get().base()) {
      std::string name(field.name_string());
      for (char& c : name) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
      out.headers.push_back({std::move(name), std::string(field.value())});
    }
    if (request.on_headers) request.on_headers(out);
    while (!parser.is_done()) {
      co_await http::async_read_some(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
      if (ec && ec != http::error::need_buffer) {
        outcome = failed("reading from", ec);
        co_return;
      }
      if (request.on_body && !parser.get().body().empty()) {
        const bool go_on = request.on_body(parser.get().body());
        parser.get().body().clear();
        if (!go_on) {
          stream.close();
          outcome = fail(Errc::cancelled, "unix_http: the exchange on " + request.socket_path + " was ended early");
          co_return;
        }
      }
    }
    if (!request.on_body) out.body = std::move(parser.get().body());
    outcome = std::move(out);
    stream.close();
  }
};

}  // namespace

Result<HttpResponse> unix_http_request(const UnixHttpRequest& request) {
  if (request.timeout.count() <= 0) return fail(Errc::bad_request, "unix_http: timeout must be positive");
  asio::io_context io;
  Stream stream(io);
  Exchange exchange{request, std::nullopt};
  std::exception_ptr failure;
  auto hook = std::make_shared<CancelHook>();
  {
    const std::lock_guard lock(hook->mutex);
    hook->io = &io;
    hook->stream = &stream;
  }
  asio::co_spawn(io, exchange.run(stream), [&failure](std::exception_ptr e) { failure = e; });
  // Registered after co_spawn queued the exchange's first step, so a close posted by the callback
  // (at once if already cancelled) runs after the connect has started and aborts it.
  if (request.cancel) {
    request.cancel->on_cancel([hook] {
      const std::lock_guard lock(hook->mutex);
      hook->cancelled = true;
      if (hook->io == nullptr) return;
      asio::post(*hook->io, [stream = hook->stream] {
        beast::error_code ignored;
        stream->socket().close(ignored);
      });
    });
  }
  io.run();
  bool cancelled = false;
  {
    const std::lock_guard lock(hook->mutex);
    hook->io = nullptr;
    hook->stream = nullptr;
    cancelled = hook->cancelled;
  }
  if (cancelled) return fail(Errc::cancelled, "unix_http: the request on " + request.socket_path + " was cancelled");
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      return fail(Errc::internal, std::string("unix_http: ") + e.what());
    }
  }
  if (!exchange.outcome) return fail(Errc::internal, "unix_http: the exchange ended without an outcome");
  return std::move(*exchange.outcome);
}

}  // namespace agent_mesh::net
