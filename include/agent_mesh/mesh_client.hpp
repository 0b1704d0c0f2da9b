// MeshClient: an agent's connection to the mesh without a daemon (meshd-sdk.md "SDK"). It keeps a
// relay connection (hello/auth/resume, reconnect with jittered backoff, fail-over across relay URLs),
// runs the core's Endpoint (Noise IK sessions, retries, timeouts, stream reassembly) on its own I/O
// thread, and offers requests and streams to any thread:
//
//   agent_mesh::ClientOptions options;
//   options.relay_urls = {"ws://127.0.0.1:8080/relay/ws"};
//   agent_mesh::MeshClient client(agent_mesh::KeyPair::load("alice.key").value(), options);
//   auto reply = client.request(bob_id, "echo", {{"message", "hello"}}).get();
//   if (reply) std::cout << boost::json::serialize(reply->body) << "\n";
//   else std::cerr << reply.error().describe() << "\n";       // e.g. "acl_denied: ..."
//
//   auto stream = client.stream(bob_id, "count", {{"to", 3}});
//   while (auto chunk = stream.next()) {                      // blocks; next_async() for co_await
//     if (!*chunk) break;                                     // stream_end
//     use(**chunk);
//   }
//
// Thread-safe; no global state; the destructor closes the connection (1000) and fails what is still
// in flight with Errc::cancelled. After close code 4009 (another process connected with this
// identity) the client stops reconnecting and says so; after 4003 (revoked) as well.
#pragma once

#include <boost/json/value.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent_mesh/endpoint.hpp"
#include "agent_mesh/identity.hpp"
#include "agent_mesh/pending.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh {

namespace sdk_detail {
class ClientCore;
}

// What the SDK reports about its relay connection (for logs and status pages).
struct ConnectionEvent {
  enum class Kind : std::uint8_t {
    connected,     // welcome received (resumed: the relay accepted the resume token)
    disconnected,  // the connection closed; `will_retry` says whether the client reconnects
    gave_up,       // 4009 replaced, 4003 revoked or close(): no more reconnects
  };
  Kind kind = Kind::connected;
  std::string relay_url;
  bool resumed = false;
  std::int64_t buffered = 0;          // connected: stored envelopes that follow
  std::optional<std::uint16_t> close_code;
  std::string reason;                 // readable: "replaced: another process connected as this agent"
  bool will_retry = false;
  std::chrono::milliseconds retry_in{0};
};

enum class LogLevel : std::uint8_t { debug, info, warn, error };

struct ClientOptions {
  // ws:// or wss:// relay URLs (path /relay/ws); tried in order, the next one after a close or 1001.
  std::vector<std::string> relay_urls;
  // The relay_id the challenge must carry when it differs from the URL dialled (protocol §6).
  std::optional<std::string> expected_relay_id;
  // PEM file of trusted CAs for wss:// (empty: the system store).
  std::string ca_file;
  std::chrono::milliseconds connect_timeout{5000};
  // Reconnect backoff: full jitter in [0, min(max, initial * 2^attempt)].
  std::chrono::milliseconds reconnect_initial{200};
  std::chrono::milliseconds reconnect_max{10000};
  // Requests without an explicit timeout wait this long (sent to the peer as timeout_ms).
  std::chrono::milliseconds default_timeout{30000};
  // Peers exchanged with in plaintext (signed envelopes, no Noise), configured on both ends
  // (protocol §5 "Plaintext"). Never chosen at run time.
  std::vector<AgentId> plaintext_peers;
  // Frames held while the relay connection is down; past it new requests fail with unreachable.
  std::size_t max_queued_frames = 4096;
  // Threads that run MeshAgent's blocking handlers (UnaryHandler, StreamHandler).
  std::size_t handler_threads = 8;
  EndpointOptions endpoint;
  std::function<void(const ConnectionEvent&)> on_connection;
  // Log lines (no secrets, no payloads); default: none.
  std::function<void(LogLevel, std::string_view event, std::string_view detail)> on_log;
};

struct RequestOptions {
  // Covers the handshake and the reply; sent to the peer as timeout_ms. Default: default_timeout.
  std::optional<std::chrono::milliseconds> timeout;
  // Cancelling sends `cancel` to the peer (its handler stops) and completes the call with cancelled.
  std::optional<CancelToken> cancel;
};

struct Response {
  boost::json::value body;
  // false only for peers configured in plaintext_peers.
  bool encrypted = true;
};

namespace sdk_detail {
struct StreamState;
}

// The chunks of a stream request, in seq order.
class StreamCall {
 public:
  explicit StreamCall(std::shared_ptr<sdk_detail::StreamState> state) : state_(std::move(state)) {}
  // Blocks for the next chunk; nullopt after stream_end; an error ends the stream.
  Result<std::optional<boost::json::value>> next();
  // The same without blocking (co_await, then()).
  Pending<std::optional<boost::json::value>> next_async();
  // Sends `cancel`; the stream ends with Errc::cancelled.
  void cancel();
  [[nodiscard]] bool encrypted() const;

 private:
  std::shared_ptr<sdk_detail::StreamState> state_;
};

struct ClientStatus {
  AgentId agent;
  bool connected = false;
  std::string relay_url;
  std::int64_t connected_since_ms = 0;
  std::size_t sessions = 0;
  std::size_t requests_in_flight = 0;
  std::size_t requests_served = 0;
};

class MeshClient {
 public:
  // Starts the I/O thread and connects in the background; requests made before the connection is
  // up wait for it (within their deadline). Aborts on an empty relay_urls (a programming error).
  MeshClient(KeyPair identity, ClientOptions options);
  virtual ~MeshClient();
  MeshClient(const MeshClient&) = delete;
  MeshClient& operator=(const MeshClient&) = delete;

  [[nodiscard]] const AgentId& id() const noexcept;

  // Waits until the relay has welcomed this agent. Errors: timeout; or why the client gave up
  // (auth_failed, revoked, replaced...).
  Status wait_connected(std::chrono::milliseconds timeout);

  Pending<Response> request(const AgentId& target, std::string capability, boost::json::value body,
                            RequestOptions options = {});
  StreamCall stream(const AgentId& target, std::string capability, boost::json::value body,
                    RequestOptions options = {});

  [[nodiscard]] ClientStatus status() const;

  // Stops taking new work, waits up to `grace` for requests in flight both ways, then closes the
  // relay connection with 1000. The destructor calls close(0 s).
  void close(std::chrono::milliseconds grace = std::chrono::milliseconds(0));

 protected:
  std::shared_ptr<sdk_detail::ClientCore> core_;
};

}  // namespace agent_mesh
