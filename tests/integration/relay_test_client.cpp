#include "relay_test_client.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <variant>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/relay_protocol.hpp"

namespace agent_mesh::test {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;

struct RelayTestClient::Impl {
  net::io_context ioc;
  net::ssl::context tls_context{net::ssl::context::tls_client};
  using Plain = websocket::stream<beast::tcp_stream>;
  using Tls = websocket::stream<beast::ssl_stream<beast::tcp_stream>>;
  std::variant<Plain, Tls> stream{std::in_place_type<Plain>, ioc};
  template <class F>
  decltype(auto) with(F&& f) {
    return std::visit(std::forward<F>(f), stream);
  }
  beast::flat_buffer buffer;
  bool reading = false;
  bool read_done = false;
  beast::error_code read_ec;
};

RelayTestClient::RelayTestClient() : impl_(std::make_unique<Impl>()) {}
RelayTestClient::~RelayTestClient() {
  impl_->with([](auto& ws) {
    beast::error_code ignored;
    beast::get_lowest_layer(ws).socket().close(ignored);
  });
}

Status RelayTestClient::connect(int port, const std::string& path, const std::string& trusted_cert_file) {
  Impl& s = *impl_;
  if (!trusted_cert_file.empty()) {
    s.tls_context.load_verify_file(trusted_cert_file);
    s.tls_context.set_verify_mode(net::ssl::verify_peer);
    s.stream.emplace<Impl::Tls>(s.ioc, s.tls_context);
  }
  return s.with([&](auto& ws) -> Status {
    beast::error_code ec;
    auto& tcp_stream = beast::get_lowest_layer(ws);
    tcp_stream.socket().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)), ec);
    if (ec) return fail(Errc::unreachable, "connect: " + ec.message());
    if constexpr (std::is_same_v<std::decay_t<decltype(ws)>, Impl::Tls>) {
      ws.next_layer().handshake(net::ssl::stream_base::client, ec);
      if (ec) return fail(Errc::unreachable, "TLS handshake: " + ec.message());
    }
    ws.handshake("127.0.0.1:" + std::to_string(port), path, ec);
    if (ec) return fail(Errc::unreachable, "websocket handshake: " + ec.message());
    ws.read_message_max(64 * 1024 * 1024);
    return {};
  });
}

void RelayTestClient::send(const std::string& text) {
  impl_->with([&](auto& ws) {
    beast::error_code ec;
    ws.text(true);
    ws.write(net::buffer(text), ec);
  });
}

void RelayTestClient::send_binary(const std::string& bytes) {
  impl_->with([&](auto& ws) {
    beast::error_code ec;
    ws.binary(true);
    ws.write(net::buffer(bytes), ec);
    ws.text(true);
  });
}

Received RelayTestClient::receive(std::chrono::milliseconds timeout) {
  Impl& s = *impl_;
  if (!s.reading) {
    s.reading = true;
    s.read_done = false;
    s.with([&s](auto& ws) {
      ws.async_read(s.buffer, [&s](beast::error_code ec, std::size_t) {
        s.read_done = true;
        s.read_ec = ec;
      });
    });
  }
  s.ioc.restart();
  s.ioc.run_for(timeout);
  Received out;
  if (!s.read_done) {
    out.timed_out = true;  // the read stays pending for the next receive()
    return out;
  }
  s.reading = false;
  if (s.read_ec == websocket::error::closed) {
    out.close = s.with([](auto& ws) { return static_cast<std::uint16_t>(ws.reason().code); });
  } else if (s.read_ec) {
    out.connection_lost = true;
  } else {
    out.text = beast::buffers_to_string(s.buffer.data());
    s.buffer.consume(s.buffer.size());
  }
  return out;
}

void RelayTestClient::close(std::uint16_t code) {
  impl_->with([&](auto& ws) {
    beast::error_code ec;
    ws.close(websocket::close_reason(code), ec);
  });
}

void RelayTestClient::drop() {
  impl_->with([](auto& ws) {
    beast::error_code ec;
    beast::get_lowest_layer(ws).socket().shutdown(tcp::socket::shutdown_both, ec);
    beast::get_lowest_layer(ws).socket().close(ec);
  });
}

Result<std::string> RelayTestClient::authenticate(const KeyPair& key, const std::string& relay_id,
                                                  std::optional<std::string> resume) {
  boost::json::object hello{{"type", "hello"}, {"v", 1}, {"agent_id", key.agent_id().str()}};
  if (resume) hello["resume"] = *resume;
  send(boost::json::serialize(hello));
  auto first = receive();
  if (!first.text) return fail(Errc::auth_failed, "no challenge (close " + std::to_string(first.close.value_or(0)) + ")");
  auto parsed = boost::json::parse(*first.text).as_object();
  if (parsed.at("type") == "challenge") {
    if (parsed.at("relay_id").as_string() != relay_id) {
      return fail(Errc::auth_failed, "relay_id mismatch: " + std::string(parsed.at("relay_id").as_string()));
    }
    auto nonce = base64url_decode(parsed.at("nonce").as_string());
    const auto signature = key.sign(Purpose::auth, auth_signing_message(*nonce, relay_id));
    send(boost::json::serialize(boost::json::object{{"type", "auth"}, {"signature", base64url_encode(signature)}}));
    auto second = receive();
    if (!second.text) return fail(Errc::auth_failed, "no welcome (close " + std::to_string(second.close.value_or(0)) + ")");
    parsed = boost::json::parse(*second.text).as_object();
    first = second;
  }
  if (parsed.at("type") != "welcome") return fail(Errc::auth_failed, "expected welcome, got " + *first.text);
  session_token = std::string(parsed.at("session_token").as_string());
  buffered = parsed.at("buffered").as_int64();
  return *first.text;
}

HttpResult http_request(int port, const std::string& method, const std::string& target, const std::string& body,
                        const std::string& authorization) {
  net::io_context ioc;
  beast::tcp_stream stream(ioc);
  beast::error_code ec;
  stream.socket().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)), ec);
  if (ec) return {};
  http::request<http::string_body> request{http::string_to_verb(method), target, 11};
  request.set(http::field::host, "127.0.0.1:" + std::to_string(port));
  if (!authorization.empty()) request.set(http::field::authorization, authorization);
  request.body() = body;
  request.prepare_payload();
  http::write(stream, request, ec);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(stream, buffer, response, ec);
  if (ec) return {};
  return {static_cast<int>(response.result_int()), response.body()};
}

}  // namespace agent_mesh::test
