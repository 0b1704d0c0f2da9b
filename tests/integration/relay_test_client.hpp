// A WebSocket client for relay integration tests, built on the core: it speaks protocol §6
// (hello, challenge, auth, welcome) and exposes frames and close codes with deadlines. Beast stays
// inside relay_test_client.cpp so test files compile fast.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "agent_mesh/identity.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh::test {

struct Received {
  std::optional<std::string> text;       // a text frame
  std::optional<std::uint16_t> close;    // the peer closed with this code
  bool timed_out = false;
  bool connection_lost = false;          // EOF / reset without a close frame
};

class RelayTestClient {
 public:
  RelayTestClient();
  ~RelayTestClient();
  RelayTestClient(const RelayTestClient&) = delete;
  RelayTestClient& operator=(const RelayTestClient&) = delete;

  // TCP + WebSocket handshake to ws://127.0.0.1:<port><path>, or wss:// verifying the server
  // against `trusted_cert_file` when it is given. Errors name the failure.
  [[nodiscard]] Status connect(int port, const std::string& path = "/relay/ws", const std::string& trusted_cert_file = "");
  void send(const std::string& text);
  void send_binary(const std::string& bytes);
  [[nodiscard]] Received receive(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  void close(std::uint16_t code = 1000);
  // Closes the TCP connection without a WebSocket close (a crashed client).
  void drop();

  // hello → challenge → auth → welcome. Returns the welcome frame text, or an error saying which
  // step failed (with the relay's error frame / close code).
  [[nodiscard]] Result<std::string> authenticate(const KeyPair& key, const std::string& relay_id,
                                                 std::optional<std::string> resume = std::nullopt);
  // The session token and `buffered` count of the last welcome.
  std::string session_token;
  std::int64_t buffered = 0;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// HTTP/1.1 request to 127.0.0.1:<port>; returns {status, body}.
struct HttpResult {
  int status = 0;
  std::string body;
};
HttpResult http_request(int port, const std::string& method, const std::string& target, const std::string& body = "",
                        const std::string& authorization = "");

}  // namespace agent_mesh::test
