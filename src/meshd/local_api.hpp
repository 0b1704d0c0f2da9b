// LocalApiServer: meshd's Local API (meshd-sdk.md "Local API"), HTTP/1.1 + JSON on a Unix socket.
//
//   POST /request {target, capability, payload, timeout_ms?, stream?}
//     → 200, the response body verbatim (compact JSON), `X-Mesh-Encrypted: true|false`;
//     stream: true → 200 `application/x-ndjson` (chunked), one line per chunk {"seq": n, "body": ...},
//     then {"end": <count>} or {"error": {"code", "message"}}. The 200 and its headers go out as
//     soon as the request is accepted, so errors the mesh reports later (acl_denied from the peer,
//     timeout...) arrive as the `error` line, even before the first chunk.
//     A client that closes its connection before the answer cancels the request (the mesh sends
//     `cancel`), for unary requests too: the socket is watched while the answer is awaited.
//   GET /status → hooks.status(); GET /agents?capability=&q= → hooks.agents(...) (an empty value
//     counts as absent). Both hooks run on a worker thread (they may block, e.g. on the registry).
//   Errors: {"error": {"code", "message"}} with the status of local_api_status(). Unknown path 404,
//   a known path with the wrong method 405 with `Allow`, a request body over 1 MiB 413.
//
// The socket: its parent directory is created 0700 when missing; an existing parent that is
// writable by group or others and not owned by us is refused (someone else could replace the
// socket). A socket file already at the path is removed only if nobody answers on it (a stale
// socket from a crash); any other file there is an error. The socket is bound under umask 0177
// (mode 0600). stop() removes the socket file if it is still ours.
//
// Threads: one I/O thread (Local API traffic is light and every hook but status/agents returns at
// once) plus two workers for the status/agents hooks. Hooks must be thread-safe.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "agent_mesh/identity.hpp"
#include "agent_mesh/mesh_client.hpp"
#include "agent_mesh/pending.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh::meshd {

// The Local API's HTTP status for an error code (meshd-sdk.md): acl_denied/revoked 403,
// unknown_capability 404, bad_request 400, too_large 413, rate_limited 429, timeout/expired 504,
// unreachable/no_session/agent_error 502, internal 500. `cancelled` → 499 (nginx's "client closed
// request"; a Local API client only sees it when something else cancelled its request, e.g. meshd
// shutting down), as agent_mesh::http_status says. Codes outside protocol §4 (a registry error
// from the agents hook) → agent_mesh::http_status(code).
[[nodiscard]] int local_api_status(Errc code) noexcept;

// The limits of the Local API.
inline constexpr std::size_t kMaxLocalRequestBodyBytes = 1024 * 1024;  // meshd-sdk.md: 1 MiB → 413
inline constexpr std::size_t kMaxLocalRequestHeaderBytes = 16 * 1024;
// A connection idle this long between requests (or slower than this sending one) is closed.
inline constexpr std::chrono::seconds kLocalIdleTimeout{60};
// Connections served at once; past it a new connection is answered 429 (rate_limited) and closed.
inline constexpr std::size_t kMaxLocalConnections = 256;

class LocalApiServer {
 public:
  struct Hooks {
    std::function<Pending<Response>(const AgentId&, std::string capability, boost::json::value payload,
                                    RequestOptions)>
        request;
    std::function<StreamCall(const AgentId&, std::string capability, boost::json::value payload, RequestOptions)>
        stream;
    std::function<boost::json::object()> status;
    std::function<Result<boost::json::value>(std::optional<std::string> capability, std::optional<std::string> q)>
        agents;
  };

  // Prepares the socket (see above), binds, listens and starts serving. Errors: internal (or
  // bad_request for a path that cannot be a socket path) with a message naming the path and the
  // problem.
  [[nodiscard]] static Result<std::unique_ptr<LocalApiServer>> start(std::filesystem::path socket_path, Hooks hooks);

  // Stops accepting at once, lets requests in flight finish for up to `grace`, then closes every
  // connection (cancelling what is still waiting on the mesh), joins the threads and removes the
  // socket file. Idempotent; the destructor calls stop(). Not from a hook (it waits for the I/O
  // thread).
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(0));
  ~LocalApiServer();
  LocalApiServer(const LocalApiServer&) = delete;
  LocalApiServer& operator=(const LocalApiServer&) = delete;

  [[nodiscard]] const std::filesystem::path& socket_path() const noexcept;

  struct Impl;

 private:
  explicit LocalApiServer(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace agent_mesh::meshd
