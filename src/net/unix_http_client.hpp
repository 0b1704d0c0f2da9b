// A blocking HTTP/1.1 client over a Unix domain socket: meshctl talking to agent-meshd's Local API
// (meshd-sdk.md "Local API"). One request per connection (`Connection: close`); the body can be
// handed over as it arrives, so an NDJSON stream is printed chunk by chunk.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "agent_mesh/pending.hpp"
#include "agent_mesh/result.hpp"
#include "net/http_client.hpp"

namespace agent_mesh::net {

struct UnixHttpRequest {
  std::string socket_path;
  std::string method = "GET";
  std::string target = "/";        // path and query
  std::string body;                // sent as application/json when not empty
  std::chrono::milliseconds timeout = kDefaultHttpTimeout;  // the whole exchange, streamed body included
  std::size_t max_response_body_bytes = kDefaultMaxResponseBodyBytes;  // when collected (no on_body)
  // When set, the body goes here as it arrives instead of into HttpResponse::body; the status and
  // headers are known (on_headers) before the first call. Returning false ends the exchange early
  // (the connection is closed, which meshd takes as a cancel).
  std::function<void(const HttpResponse&)> on_headers;
  std::function<bool(std::string_view)> on_body;
  // Cancelling closes the connection (meshd then cancels the mesh request) and ends the exchange
  // with Errc::cancelled; safe from any thread, also before or after the exchange.
  std::optional<CancelToken> cancel;
};

// Errors: Errc::unreachable when nothing listens on the socket ("connect to <path> failed: ...",
// also for a missing socket file) or the connection breaks; Errc::timeout after `timeout`;
// Errc::too_large for a collected body past its bound; Errc::cancelled when on_body returned false or
// `cancel` was cancelled.
[[nodiscard]] Result<HttpResponse> unix_http_request(const UnixHttpRequest& request);

}  // namespace agent_mesh::net
