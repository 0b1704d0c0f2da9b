// The only translation unit of agent_mesh_http_client that includes Asio/Beast (each one costs
// about 30 s to compile); http_client.hpp stays free of them.
#include "net/http_client.hpp"

#include <netdb.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <sys/socket.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <cstring>
#include <exception>
#include <future>
#include <memory>
#include <thread>

#include "agent_mesh/version.hpp"
#include "net/ascii.hpp"
#include "net/tls_client.hpp"

namespace agent_mesh::net {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kPrefix = "http_client: ";

Error problem(Errc code, std::string_view text) { return fail(code, std::string(kPrefix) + std::string(text)); }

bool is_alnum(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// RFC 9110 §5.6.2 tchar: header names and methods are tokens.
bool is_token(std::string_view text) {
  if (text.empty()) return false;
  for (const char c : text) {
    if (is_alnum(c)) continue;
    if (std::string_view("!#$%&'*+-.^_`|~").find(c) == std::string_view::npos) return false;
  }
  return true;
}

// Header values may hold anything but the bytes that would end the header or the request.
bool is_safe_value(std::string_view text) {
  return text.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

// ---- The URL ----

struct Target {
  bool tls = false;
  std::string host;         // name or address, IPv6 without brackets
  bool host_is_ip = false;
  std::uint16_t port = 0;
  std::string target;       // origin-form: path and query as written, "/" at least
  std::string host_header;  // Host: as RFC 9110 §7.2 wants it (port only when not the default)
  std::string peer;         // "host:port" for messages
};

Result<Target> parse_target(std::string_view url) {
  // The URL is not echoed: its query may carry a credential.
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) return problem(Errc::bad_request, "URL is not an absolute http:// or https:// URL");
  const boost::urls::url_view& u = *parsed;
  Target t;
  if (u.scheme_id() == boost::urls::scheme::https) {
    t.tls = true;
  } else if (u.scheme_id() != boost::urls::scheme::http) {
    return problem(Errc::bad_request, "URL scheme must be http or https");
  }
  if (!u.has_authority() || u.encoded_host().empty())
    return problem(Errc::bad_request, "URL has no host");
  if (u.has_userinfo()) return problem(Errc::bad_request, "URL must not contain user info");
  const auto host_type = u.host_type();
  if (host_type != boost::urls::host_type::name && host_type != boost::urls::host_type::ipv4 &&
      host_type != boost::urls::host_type::ipv6)
    return problem(Errc::bad_request, "URL host must be a name or an IP address");
  t.host = u.host_address();
  t.host_is_ip = host_type != boost::urls::host_type::name;
  if (t.host.find('\0') != std::string::npos) return problem(Errc::bad_request, "URL host is malformed");
  const std::uint16_t default_port = t.tls ? 443 : 80;
  t.port = default_port;  // also for "http://host:/" (an empty port means the default, RFC 3986 §3.2.3)
  if (u.has_port() && !u.port().empty()) {
    // Parsed here: url_view::port_number() wraps values above 65535 instead of refusing them.
    const std::string_view digits = u.port();
    unsigned long value = 0;
    for (const char c : digits) {
      if (c < '0' || c > '9' || value > 65535) break;
      value = value * 10 + static_cast<unsigned long>(c - '0');
    }
    if (value == 0 || value > 65535) return problem(Errc::bad_request, "URL port must be 1..65535");
    t.port = static_cast<std::uint16_t>(value);
  }
  t.target = std::string(u.encoded_path());
  if (t.target.empty()) t.target = "/";
  if (u.has_query()) t.target += "?" + std::string(u.encoded_query());
  const std::string bracketed = host_type == boost::urls::host_type::ipv6 ? "[" + t.host + "]" : t.host;
  t.peer = bracketed + ":" + std::to_string(t.port);
  t.host_header = t.port == default_port ? bracketed : t.peer;
  return t;
}

// ---- Name resolution, bounded by the deadline ----

// getaddrinfo cannot be cancelled (Asio's resolver runs it on a hidden thread and waits for it),
// so a stuck DNS server would hold the caller past its deadline. It runs on a detached thread
// instead; when the deadline passes first, the caller leaves and the thread finishes on its own.
struct Resolved {
  int gai_error = 0;
  std::vector<tcp::endpoint> endpoints;
};

Resolved resolve_blocking(const std::string& host, std::uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  Resolved out;
  out.gai_error = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &list);
  if (out.gai_error != 0) return out;
  for (const addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    tcp::endpoint endpoint;
    if (ai->ai_addrlen > endpoint.capacity()) continue;
    std::memcpy(endpoint.data(), ai->ai_addr, ai->ai_addrlen);
    endpoint.resize(ai->ai_addrlen);
    out.endpoints.push_back(endpoint);
  }
  ::freeaddrinfo(list);
  return out;
}

Result<std::vector<tcp::endpoint>> resolve(const Target& t, Clock::time_point deadline, std::chrono::milliseconds timeout) {
  if (t.host_is_ip) {
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(t.host, ec);
    if (ec) return problem(Errc::bad_request, "URL host is not a valid IP address");
    return std::vector<tcp::endpoint>{tcp::endpoint(address, t.port)};
  }
  auto promise = std::make_shared<std::promise<Resolved>>();
  auto future = promise->get_future();
  try {
    std::thread([promise, host = t.host, port = t.port] { promise->set_value(resolve_blocking(host, port)); })
        .detach();
  } catch (const std::system_error&) {
    return problem(Errc::internal, "cannot start a thread to resolve " + t.peer);
  }
  if (future.wait_until(deadline) != std::future_status::ready)
    return problem(Errc::timeout, "resolving " + t.peer + " timed out after " + std::to_string(timeout.count()) + " ms");
  Resolved resolved = future.get();
  if (resolved.gai_error != 0)
    return problem(Errc::unreachable, "resolving " + t.peer + " failed: " + ::gai_strerror(resolved.gai_error));
  if (resolved.endpoints.empty()) return problem(Errc::unreachable, "resolving " + t.peer + " found no address");
  return std::move(resolved.endpoints);
}

// ---- The exchange ----

enum class Stage { connect, handshake, write, read };

const char* stage_name(Stage stage) {
  switch (stage) {
    case Stage::connect: return "connecting";
    case Stage::handshake: return "in the TLS handshake";
    case Stage::write: return "writing the request";
    case Stage::read: return "reading the response";
  }
  return "";
}

struct Exchange {
  const HttpRequest& request;
  const Target& target;
  std::vector<tcp::endpoint> endpoints;
  Clock::time_point deadline;
  http::request<http::string_body> message;
  std::optional<Result<HttpResponse>> outcome;

  Error step_failed(Stage stage, const beast::error_code& ec, SSL* tls = nullptr) const {
    if (ec == beast::error::timeout) {
      return problem(Errc::timeout, request.method + " to " + target.peer + " timed out after " +
                                        std::to_string(request.timeout.count()) + " ms " + stage_name(stage));
    }
    switch (stage) {
      case Stage::connect:
        return problem(Errc::unreachable, "connect to " + target.peer + " failed: " + ec.message());
      case Stage::handshake: {
        std::string text = "TLS handshake with " + target.peer + " failed: " + ec.message();
        if (tls != nullptr) {
          const long verify = SSL_get_verify_result(tls);
          if (verify != X509_V_OK) text += std::string(" (") + X509_verify_cert_error_string(verify) + ")";
        }
        return problem(Errc::unreachable, text);
      }
      case Stage::write:
        return problem(Errc::unreachable, "sending the request to " + target.peer + " failed: " + ec.message());
      case Stage::read:
        if (ec == http::error::body_limit) {
          return problem(Errc::too_large, "response body from " + target.peer + " exceeds " +
                                              std::to_string(request.max_response_body_bytes) + " bytes");
        }
        if (ec == http::error::header_limit) {
          return problem(Errc::too_large, "response headers from " + target.peer + " exceed " +
                                              std::to_string(kMaxResponseHeaderBytes) + " bytes");
        }
        if (ec == http::error::end_of_stream || ec == http::error::partial_message || ec == asio::error::eof ||
            ec == ssl::error::stream_truncated) {
          return problem(Errc::unreachable, target.peer + " closed the connection before the response was complete");
        }
        if (&ec.category() == &http::make_error_code(http::error::end_of_stream).category()) {
          return problem(Errc::unreachable, "bad HTTP response from " + target.peer + ": " + ec.message());
        }
        return problem(Errc::unreachable, "reading the response from " + target.peer + " failed: " + ec.message());
    }
    return problem(Errc::internal, "unknown step");
  }

  template <class Stream>
  asio::awaitable<void> run(Stream& stream) {
    beast::error_code ec;
    auto& socket = beast::get_lowest_layer(stream);
    // One deadline for connect, handshake, write and read together (tcp_stream applies it to every
    // operation started after it is set).
    socket.expires_at(deadline);
    co_await socket.async_connect(endpoints, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      outcome = step_failed(Stage::connect, ec);
      co_return;
    }
    if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
      co_await stream.async_handshake(ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        outcome = step_failed(Stage::handshake, ec, stream.native_handle());
        co_return;
      }
    }
    co_await http::async_write(stream, message, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      outcome = step_failed(Stage::write, ec);
      co_return;
    }
    http::response_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(kMaxResponseHeaderBytes));
    parser.body_limit(static_cast<std::uint64_t>(request.max_response_body_bytes));
    if (message.method() == http::verb::head) parser.skip(true);
    beast::flat_buffer buffer;
    co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      outcome = step_failed(Stage::read, ec);
      co_return;
    }
    auto response = parser.release();
    HttpResponse out;
    out.status = static_cast<int>(response.result_int());
    for (const auto& field : response.base()) {
      out.headers.push_back({ascii_lower(field.name_string()), std::string(field.value())});
    }
    out.body = std::move(response.body());
    outcome = std::move(out);
    socket.close();  // one request per connection; no TLS close_notify wait, the response is complete
  }
};

Result<http::request<http::string_body>> build_message(const HttpRequest& request, const Target& target) {
  if (!is_token(request.method)) return problem(Errc::bad_request, "request method must be an HTTP token");
  http::request<http::string_body> message;
  const auto verb = http::string_to_verb(request.method);
  if (verb == http::verb::unknown) message.method_string(request.method);
  else message.method(verb);
  message.target(target.target);
  message.version(11);
  bool has_user_agent = false;
  for (const auto& header : request.headers) {
    // The header's name is safe to name; its value never is (it may be a credential).
    if (!is_token(header.name)) return problem(Errc::bad_request, "request header name is not an HTTP token");
    if (!is_safe_value(header.value))
      return problem(Errc::bad_request, "request header " + header.name + " contains CR, LF or NUL");
    if (equals_ignore_case(header.name, "host") || equals_ignore_case(header.name, "content-length") ||
        equals_ignore_case(header.name, "transfer-encoding") || equals_ignore_case(header.name, "connection"))
      continue;  // set below from the URL and the body
    if (equals_ignore_case(header.name, "user-agent")) has_user_agent = true;
    message.insert(header.name, header.value);
  }
  message.set(http::field::host, target.host_header);
  message.set(http::field::connection, "close");
  if (!has_user_agent) message.set(http::field::user_agent, "agent-mesh/" + std::string(kVersion));
  const bool body_method = verb == http::verb::post || verb == http::verb::put || verb == http::verb::patch;
  if (!request.body.empty() || body_method) {
    message.body() = request.body;
    message.content_length(request.body.size());
  }
  return message;
}

template <class Stream>
Result<HttpResponse> run_exchange(asio::io_context& io, Stream& stream, Exchange& exchange) {
  std::exception_ptr failure;
  asio::co_spawn(io, exchange.run(stream), [&failure](std::exception_ptr e) { failure = e; });
  io.run();
  if (failure || !exchange.outcome) {
    try {
      if (failure) std::rethrow_exception(failure);
    } catch (const std::bad_alloc&) {
      return problem(Errc::internal, "out of memory talking to " + exchange.target.peer);
    } catch (const std::exception& e) {
      return problem(Errc::internal, "talking to " + exchange.target.peer + " failed: " + e.what());
    }
    return problem(Errc::internal, "exchange with " + exchange.target.peer + " ended without an outcome");
  }
  return std::move(*exchange.outcome);
}

}  // namespace

std::optional<std::string_view> HttpResponse::header(std::string_view name) const {
  for (const auto& h : headers)
    if (equals_ignore_case(h.name, name)) return std::string_view(h.value);
  return std::nullopt;
}

Result<HttpResponse> http_request(const HttpRequest& request) {
  if (request.timeout.count() <= 0) return problem(Errc::bad_request, "timeout must be positive");
  const auto deadline = Clock::now() + request.timeout;
  auto target = parse_target(request.url);
  if (!target) return std::move(target).error();
  auto message = build_message(request, *target);
  if (!message) return std::move(message).error();
  std::shared_ptr<ssl::context> tls_context;
  if (target->tls) {
    auto context = net::make_tls_client_context(request.ca_file);
    if (!context) return problem(context.error().code, context.error().message);
    tls_context = std::move(*context);
  }
  auto endpoints = resolve(*target, deadline, request.timeout);
  if (!endpoints) return std::move(endpoints).error();

  Exchange exchange{request, *target, std::move(*endpoints), deadline, std::move(*message), std::nullopt};
  asio::io_context io(1);
  if (!target->tls) {
    beast::tcp_stream stream(io);
    return run_exchange(io, stream, exchange);
  }
  beast::ssl_stream<beast::tcp_stream> stream(io, *tls_context);
  if (auto prepared = net::prepare_tls_client(stream.native_handle(), target->host, target->host_is_ip); !prepared) {
    return problem(prepared.error().code, prepared.error().message);
  }
  return run_exchange(io, stream, exchange);
}

std::string form_urlencode(const std::vector<std::pair<std::string, std::string>>& fields) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  const auto append = [&out](std::string_view text) {
    for (const char c : text) {
      const auto u = static_cast<unsigned char>(c);
      if (is_alnum(c) || c == '*' || c == '-' || c == '.' || c == '_') {
        out += c;
      } else if (c == ' ') {
        out += '+';
      } else {
        out += '%';
        out += kHex[u >> 4];
        out += kHex[u & 0x0F];
      }
    }
  };
  for (const auto& [name, value] : fields) {
    if (!out.empty()) out += '&';
    append(name);
    out += '=';
    append(value);
  }
  return out;
}

}  // namespace agent_mesh::net
