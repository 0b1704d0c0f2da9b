// LocalAgentForwarder: hands each incoming mesh request to the local agent's HTTP server
// (meshd-sdk.md "Incoming request") and turns its answer into the reply.
//
// Per call, one HTTP/1.1 POST on its own connection (`Connection: close`) to the --local-agent URL
// (path from the URL, "/" by default) with `Content-Type: application/json`, `X-Mesh-From`,
// `X-Mesh-Capability`, `X-Mesh-Request-Id` and forwarded_body() as the body. A stream request
// also sends `Accept: text/event-stream, application/x-ndjson`; a 2xx answer of either type is
// read as it arrives and each chunk is sent as soon as it is parsed, then the stream ends. A
// stream request answered with plain JSON gets that value as its only chunk, then the end. Any
// other answer is read whole (at most kMaxRawAnswerBytes) and judged by interpret_unary_answer().
//
// The call's deadline (IncomingCall::deadline_ms, or 30 s without one) bounds the whole local call
// (resolve, connect, write, read; for a stream every chunk) → `timeout`. The call's cancel signal
// closes the local connection and nothing more is sent. An agent that cannot be reached →
// `agent_error` "local agent at http://host:port unreachable: <reason>" (the URL's path and query
// are never quoted: they go back to the remote caller).
//
// Threads: an io_context with two threads of its own; each call runs on its own strand. Replies
// are sent from those threads (Responder is thread-safe; Responder::chunk blocks until the SDK's
// I/O thread has taken the chunk, which paces a fast agent). The destructor closes every local
// connection in flight and answers those calls `unreachable` ("meshd is shutting down"). Destroy
// it after the MeshAgent is closed, or at least not on the SDK's I/O thread (a forwarder thread
// may be waiting there in Responder::chunk).
#pragma once

#include <boost/json/value.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "agent_mesh/mesh_agent.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh::meshd {

// Where a call's answer goes: a Responder in the daemon, plain functions in tests.
struct ReplySink {
  std::function<void(boost::json::value)> respond;
  std::function<void(Errc, std::string)> fail;
  std::function<Status(boost::json::value)> chunk;
  std::function<void()> end;

  [[nodiscard]] static ReplySink to(Responder responder);
};

class LocalAgentForwarder {
 public:
  // Without a deadline in the call (should not happen: the SDK sets one) the local call gets this.
  static constexpr std::chrono::milliseconds kDefaultTimeout{30'000};

  // `local_agent_url`: http://host[:port][/path] (no https, user info or fragment). Throws
  // std::invalid_argument for a URL validate_url() refuses (a configuration error found at start).
  explicit LocalAgentForwarder(std::string local_agent_url);
  ~LocalAgentForwarder();
  LocalAgentForwarder(const LocalAgentForwarder&) = delete;
  LocalAgentForwarder& operator=(const LocalAgentForwarder&) = delete;

  // Checks a --local-agent URL. Error: bad_request naming the problem.
  [[nodiscard]] static Status validate_url(std::string_view local_agent_url);

  // Returns at once; the call is answered later from the forwarder's threads. Any thread.
  void forward(IncomingCall call, Responder responder);
  void forward(IncomingCall call, ReplySink sink);

  // Local calls in flight.
  [[nodiscard]] std::size_t in_flight() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace agent_mesh::meshd
