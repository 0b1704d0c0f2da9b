// ClientCore: what MeshClient and MeshAgent share. The core's Endpoint lives on the RelayLink's
// I/O thread and is touched only there (no locks around the protocol state); the public API posts
// to that thread and completes Pending results from it. Blocking handlers run on a WorkerPool.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "agent_mesh/acl.hpp"
#include "agent_mesh/endpoint.hpp"
#include "agent_mesh/mesh_agent.hpp"
#include "agent_mesh/mesh_client.hpp"
#include "sdk/relay_link.hpp"
#include "sdk/worker_pool.hpp"

namespace agent_mesh::sdk_detail {

// The receiving side of a stream: chunks in seq order, bounded so a reader that stops reading
// cannot grow memory without end (past the bound the stream fails locally and is cancelled).
struct StreamState {
  static constexpr std::size_t kMaxBufferedChunks = 1024;

  std::mutex mutex;
  std::condition_variable changed;
  std::deque<boost::json::value> chunks;
  bool ended = false;
  std::optional<Error> error;
  bool encrypted = true;
  // A next_async() waiting for the next chunk.
  std::optional<Pending<std::optional<boost::json::value>>> waiter;
  // Posts the cancel to the I/O thread (set by the core; empty once finished).
  std::function<void()> cancel;

  // I/O thread. false: the buffer is full (the caller cancels the request).
  bool push(boost::json::value chunk);
  void finish(std::optional<Error> failure);
};

class ClientCore;

struct ReplyTarget {
  std::weak_ptr<ClientCore> core;
  AgentId from;
  Uuid id;
  bool stream = false;
  std::atomic<bool> finished{false};
};

class ClientCore : public std::enable_shared_from_this<ClientCore> {
 public:
  ClientCore(KeyPair identity, ClientOptions options);
  ~ClientCore();

  void start();
  [[nodiscard]] const AgentId& id() const noexcept { return id_; }

  Status wait_connected(std::chrono::milliseconds timeout);
  Pending<Response> request(const AgentId& target, std::string capability, boost::json::value body,
                            RequestOptions options);
  StreamCall stream(const AgentId& target, std::string capability, boost::json::value body, RequestOptions options);
  [[nodiscard]] ClientStatus status() const;
  void close(std::chrono::milliseconds grace);

  // Serving (MeshAgent).
  void set_handler(std::optional<std::string> capability, AsyncHandler async, UnaryHandler unary, StreamHandler stream);
  void set_acl(AclPolicy policy);
  void set_revoked(std::vector<AgentId> revoked);

  // Responder (any thread).
  void respond(const std::shared_ptr<ReplyTarget>& target, boost::json::value body);
  void respond_error(const std::shared_ptr<ReplyTarget>& target, Errc code, std::string message,
                     std::optional<std::int64_t> retry_after_ms);
  Status send_chunk(const std::shared_ptr<ReplyTarget>& target, boost::json::value body);
  void end_stream(const std::shared_ptr<ReplyTarget>& target);

 private:
  struct Handlers {
    AsyncHandler async;
    UnaryHandler unary;
    StreamHandler stream;
  };
  struct ServedCall {
    CancelToken cancelled;
    std::optional<std::int64_t> deadline_ms;
    std::shared_ptr<ReplyTarget> target;
  };
  using ServedKey = std::pair<AgentId, Uuid>;

  // ---- I/O thread only ----
  void pump();
  void arm_wakeup();
  void on_tick();
  void on_connection(const ConnectionEvent& event);
  void on_incoming(IncomingRequest request);
  void on_peer_cancelled(const PeerCancelled& cancelled);
  void complete_unary(RequestHandle handle, Result<Response> result);
  void finish_stream(RequestHandle handle, std::optional<Error> failure);
  void fail_everything(const Error& error);
  void run_handler(const Handlers& handlers, IncomingCall call, const std::shared_ptr<ReplyTarget>& target);
  void finish_served(const std::shared_ptr<ReplyTarget>& target);
  void log(LogLevel level, std::string_view event, std::string_view detail) const;
  // Runs fn on the I/O thread: at once when already there, else posted.
  void on_io(std::function<void()> fn);

  const AgentId id_;
  ClientOptions options_;
  std::unique_ptr<sdk::RelayLink> link_;
  std::unique_ptr<WorkerPool> workers_;
  Endpoint endpoint_;
  struct UnaryCall {
    Pending<Response> pending;
    bool encrypted = true;
  };
  std::unordered_map<RequestHandle, UnaryCall> unary_;
  std::unordered_map<RequestHandle, std::shared_ptr<StreamState>> streams_;
  std::map<ServedKey, ServedCall> served_;

  // ---- shared, under mutex_ ----
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool connected_ = false;
  bool closing_ = false;
  bool closed_ = false;
  std::optional<Error> gave_up_;
  std::string relay_url_;
  std::int64_t connected_since_ms_ = 0;
  std::size_t sessions_ = 0;
  std::size_t in_flight_ = 0;
  std::size_t serving_ = 0;
  std::map<std::string, Handlers, std::less<>> handlers_;
  std::optional<Handlers> any_handler_;
  std::shared_ptr<const AclPolicy> acl_ = std::make_shared<AclPolicy>();
  std::shared_ptr<const std::unordered_set<AgentId>> revoked_ = std::make_shared<std::unordered_set<AgentId>>();
};

[[nodiscard]] std::int64_t wall_clock_ms();

}  // namespace agent_mesh::sdk_detail
