// A tiny HTTP/1.1 client over a Unix socket for meshd's Local API tests (POSIX sockets, no Beast):
// one request per connection (Connection: close), the answer read to EOF, chunked bodies decoded.
// `abandon_after` closes the connection early to test that meshd then cancels the request.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>

namespace agent_mesh::test {

struct UnixReply {
  int status = 0;
  std::string headers;  // raw header block, lower-cased names not guaranteed
  std::string body;     // de-chunked
  std::string error;
  [[nodiscard]] bool has_header(const std::string& line) const { return headers.find(line) != std::string::npos; }
};

inline std::string dechunk(const std::string& raw) {
  std::string out;
  std::size_t pos = 0;
  while (pos < raw.size()) {
    const auto eol = raw.find("\r\n", pos);
    if (eol == std::string::npos) break;
    const std::size_t size = std::stoul(raw.substr(pos, eol - pos), nullptr, 16);
    if (size == 0) break;
    out += raw.substr(eol + 2, size);
    pos = eol + 2 + size + 2;
  }
  return out;
}

inline UnixReply unix_http(const std::string& socket_path, const std::string& method, const std::string& target,
                           const std::string& body = "",
                           std::chrono::milliseconds timeout = std::chrono::seconds(30),
                           std::optional<std::chrono::milliseconds> abandon_after = std::nullopt) {
  UnixReply reply;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, socket_path.c_str(), sizeof(address.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    reply.error = std::string("connect: ") + std::strerror(errno);
    ::close(fd);
    return reply;
  }
  std::string request = method + " " + target + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n";
  if (!body.empty()) request += "Content-Type: application/json\r\n";
  request += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    reply.error = "send failed";
    ::close(fd);
    return reply;
  }
  const auto deadline = std::chrono::steady_clock::now() + abandon_after.value_or(timeout);
  std::string raw;
  char buffer[16384];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      reply.error = abandon_after ? "abandoned" : "timeout";
      break;
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    raw.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  const auto split = raw.find("\r\n\r\n");
  if (split == std::string::npos) {
    if (reply.error.empty()) reply.error = "no complete answer: " + raw.substr(0, 200);
    return reply;
  }
  reply.headers = raw.substr(0, split);
  if (reply.headers.size() > 12) reply.status = std::atoi(reply.headers.c_str() + 9);
  const std::string rest = raw.substr(split + 4);
  std::string lower = reply.headers;
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  reply.body = lower.find("transfer-encoding: chunked") != std::string::npos ? dechunk(rest) : rest;
  return reply;
}

}  // namespace agent_mesh::test
