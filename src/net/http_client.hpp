// A small blocking HTTP/1.1 client for calls the servers make to other services (the OAuth
// provider during device-flow login, relays' revocation feed, the relay's registration gate).
// Called from worker threads, never from an io_context thread: each request runs its own private
// io_context and returns when the exchange is over or its deadline has passed.
//
// One request per connection (no pooling, `Connection: close`), no redirects followed (a 3xx is
// returned as it is), no proxies. Every step is bounded by one total deadline: name resolution,
// connect, TLS handshake, write and read. https verifies the server against the system CA store
// (plus `ca_file` when given), sends SNI for host names and checks the certificate's name or IP
// address against the URL's host.
//
// Error messages name the peer as host:port and never contain the request's path, query, headers
// or body, so a credential in any of them cannot reach a log.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent_mesh/result.hpp"

namespace agent_mesh::net {

// Defaults (style: every limit with its reason).
// Large enough for any JSON answer these calls expect (OAuth, GitHub's /user, registry cards),
// small enough that a hostile or broken peer cannot make a worker buffer without end.
inline constexpr std::size_t kDefaultMaxResponseBodyBytes = 1024 * 1024;
// Response headers: GitHub's run to about 4 KiB; Beast's default of 8 KiB is too tight for some
// CDNs, 64 KiB is still a bounded cost per request.
inline constexpr std::size_t kMaxResponseHeaderBytes = 64 * 1024;
// A worker should never wait longer than this for another service unless it asks to.
inline constexpr std::chrono::milliseconds kDefaultHttpTimeout{10'000};

struct HttpHeader {
  std::string name;
  std::string value;
};

struct HttpRequest {
  std::string method = "GET";  // any token; GET/POST/PUT/PATCH/DELETE/HEAD in practice
  std::string url;              // absolute http:// or https:// URL; a #fragment is ignored
  // Sent as given (names and values must not contain CR, LF or NUL). `Host` and `Content-Length`
  // are always set by the client; `User-Agent` defaults to "agent-mesh/<version>".
  std::vector<HttpHeader> headers;
  std::string body;  // sent with Content-Length when non-empty or for POST/PUT/PATCH
  std::chrono::milliseconds timeout = kDefaultHttpTimeout;  // total, for every step together
  std::size_t max_response_body_bytes = kDefaultMaxResponseBodyBytes;
  // An extra PEM file of trusted CA certificates, used in addition to the system store (tests,
  // private CAs).
  std::string ca_file;
};

struct HttpResponse {
  int status = 0;
  std::vector<HttpHeader> headers;  // in the order received, names lowercased
  std::string body;

  // The first header of this name (case-insensitive), or nullopt.
  [[nodiscard]] std::optional<std::string_view> header(std::string_view name) const;
};

// Performs one request. A response of any status (404 and 500 included) is a value; errors are:
//   Errc::bad_request  the request itself is malformed (not an http(s) URL, URL with user info,
//                      bad port, bad method, CR/LF in a header, timeout ≤ 0, unreadable ca_file)
//   Errc::unreachable  name resolution, connect, TLS handshake/verification, or the connection
//                      failing or closing early ("http_client: connect to 127.0.0.1:1234 failed:
//                      Connection refused")
//   Errc::timeout      the deadline passed ("http_client: GET to 127.0.0.1:1234 timed out after
//                      500 ms while reading the response")
//   Errc::too_large    the response body exceeds max_response_body_bytes, or its headers exceed
//                      kMaxResponseHeaderBytes
// A peer that answers with something other than HTTP/1.x counts as unreachable (it is no
// working server for this request); the message says "bad HTTP response".
[[nodiscard]] Result<HttpResponse> http_request(const HttpRequest& request);

// application/x-www-form-urlencoded (the WHATWG form encoding OAuth 2.0 uses, RFC 6749 App. B):
// ALPHA / DIGIT / "*-._" kept, space as '+', every other byte %XX, pairs joined with '&'.
[[nodiscard]] std::string form_urlencode(const std::vector<std::pair<std::string, std::string>>& fields);

}  // namespace agent_mesh::net
