// One HTTP request and its response as plain values, so that components serving HTTP through the
// shared front (the registry inside agent-mesh-server, behind the relay's listener) need neither
// Asio nor Beast. The front parses, bounds and answers malformed requests itself; a handler sees
// only complete, size-checked requests.
#pragma once

#include <algorithm>
#include <cctype>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace agent_mesh::http {

// Field names compare case-insensitively (RFC 9110 §5.1).
inline bool field_name_equal(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

using Fields = std::vector<std::pair<std::string, std::string>>;

struct Request {
  std::string method;     // as sent, e.g. "GET"
  std::string target;     // the request-target as sent, e.g. "/api/v1/agents?limit=5"
  Fields fields;          // in arrival order, names as sent
  std::string body;
  std::string client_ip;  // the peer, or the client behind a trusted proxy (X-Forwarded-For)

  // The first field with this name, or "" (absent and empty are the same to every caller here).
  [[nodiscard]] std::string_view field(std::string_view name) const noexcept {
    for (const auto& [key, value] : fields) {
      if (field_name_equal(key, name)) return value;
    }
    return {};
  }
  [[nodiscard]] std::string_view path() const noexcept {
    const std::string_view t = target;
    return t.substr(0, t.find('?'));
  }
  [[nodiscard]] std::string_view query() const noexcept {
    const std::string_view t = target;
    const auto q = t.find('?');
    return q == std::string_view::npos ? std::string_view{} : t.substr(q + 1);
  }
};

struct Response {
  int status = 200;
  Fields fields;  // Content-Length is set by the front
  std::string body;

  Response& set(std::string name, std::string value) {
    for (auto& [key, existing] : fields) {
      if (field_name_equal(key, name)) {
        existing = std::move(value);
        return *this;
      }
    }
    fields.emplace_back(std::move(name), std::move(value));
    return *this;
  }
  static Response json(int status, std::string body) {
    Response response{status, {}, std::move(body)};
    response.set("Content-Type", "application/json");
    return response;
  }
};

// Called exactly once per request, from any thread; a handler may answer later (long polls).
using Responder = std::function<void(Response)>;
// Handles one request. Must not block for long: it runs on a network thread.
using Handler = std::function<void(Request, Responder)>;

}  // namespace agent_mesh::http
