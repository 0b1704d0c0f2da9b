// MeshAgent: a MeshClient that also serves capabilities (meshd-sdk.md "SDK").
//
//   agent_mesh::MeshAgent bob(key, options);
//   bob.set_acl(agent_mesh::AclPolicy::from_json(acl_text).value());   // default: deny everything
//   bob.handle("echo", [](const agent_mesh::IncomingCall& call) -> agent_mesh::Result<boost::json::value> {
//     return boost::json::object{{"agent", "bob"}, {"echo", call.body}};
//   });
//   bob.handle_stream("count", [](const agent_mesh::IncomingCall& call, const agent_mesh::ChunkWriter& write) {
//     for (int i = 0; i < 3 && !call.cancelled.cancelled(); ++i) {
//       if (auto sent = write(boost::json::value(i)); !sent) return sent;
//     }
//     return agent_mesh::Status{};
//   });
//
// Order of checks for every incoming request: revoked caller → `revoked`; the ACL (source = caller,
// target = this agent, capability) → `acl_denied`; no handler → `unknown_capability`; then the
// handler. Handlers run concurrently (UnaryHandler and StreamHandler on the handler thread pool, so
// they may block and may call request() themselves; Handler on the I/O thread, replying later
// through its Responder from any thread). A request past its deadline or cancelled by the caller
// sets `cancelled`; replies after that are dropped (the caller stopped waiting).
#pragma once

#include <boost/json/value.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent_mesh/acl.hpp"
#include "agent_mesh/mesh_client.hpp"

namespace agent_mesh {

struct IncomingCall {
  AgentId from;
  Uuid id;
  std::string capability;
  boost::json::value body;
  bool stream = false;
  bool encrypted = true;
  // Unix ms when the caller stops waiting (receipt + timeout_ms, or the endpoint's default).
  std::optional<std::int64_t> deadline_ms;
  // Set when the caller cancels, the deadline passes or the agent shuts down.
  CancelToken cancelled;
};

namespace sdk_detail {
struct ReplyTarget;
}

// Answers one IncomingCall; copyable, thread-safe. The first final answer (respond, fail, end) wins.
class Responder {
 public:
  explicit Responder(std::shared_ptr<sdk_detail::ReplyTarget> target) : target_(std::move(target)) {}
  void respond(boost::json::value body) const;
  void fail(Errc code, std::string message, std::optional<std::int64_t> retry_after_ms = std::nullopt) const;
  // stream_request only; error: the call finished, was cancelled or is not a stream.
  Status chunk(boost::json::value body) const;
  void end() const;

 private:
  std::shared_ptr<sdk_detail::ReplyTarget> target_;
};

using ChunkWriter = std::function<Status(boost::json::value)>;
// Returns the response body, or an error sent as the protocol §4 error (code and message).
using UnaryHandler = std::function<Result<boost::json::value>(const IncomingCall&)>;
// Writes chunks; returning Status{} ends the stream, an error sends that error instead.
using StreamHandler = std::function<Status(const IncomingCall&, const ChunkWriter&)>;
// Runs on the I/O thread and must not block; answers through the Responder, now or later.
using AsyncHandler = std::function<void(IncomingCall, Responder)>;

class MeshAgent : public MeshClient {
 public:
  MeshAgent(KeyPair identity, ClientOptions options);

  void handle(std::string capability, UnaryHandler handler);
  void handle_stream(std::string capability, StreamHandler handler);
  void handle_async(std::string capability, AsyncHandler handler);
  // Every capability without a handler of its own (meshd forwards them all to its local agent).
  void handle_any(AsyncHandler handler);

  // Replaces the ACL (takes effect for requests arriving after the call).
  void set_acl(AclPolicy policy);
  // Callers whose requests are refused with `revoked` (the registry's revocation feed).
  void set_revoked(std::vector<AgentId> revoked);
};

}  // namespace agent_mesh
