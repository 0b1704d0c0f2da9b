// Endpoint: the sans-IO protocol engine of one agent (protocol §3–§5). It turns the application's
// requests and replies into envelopes and received frames into events, and owns the sessions,
// handshakes, replay protection, retries, timeouts and stream reassembly in between. No sockets, no
// clocks: the caller feeds frames and the time, and sends what take_outgoing() returns through its
// relay connection. The SDK and meshd wrap it with I/O.
#pragma once

#include <boost/json/value.hpp>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "agent_mesh/envelope.hpp"
#include "agent_mesh/replay_cache.hpp"
#include "agent_mesh/session.hpp"

namespace agent_mesh {

struct EndpointOptions {
  SessionLimits sessions;
  FreshnessPolicy freshness;
  std::size_t max_envelope_bytes = limits::default_max_envelope_bytes;
  // A request without timeout_ms waits this long.
  std::int64_t default_timeout_ms = 30000;
  // protocol §4: at most 256 stream chunks pending reordering.
  std::size_t max_pending_chunks = 256;
  // Bounds on requests in flight each way, so neither a busy caller nor a flood of peers' requests
  // grows memory without end; past them requests fail with rate_limited.
  std::size_t max_outstanding_requests = 65536;
  std::size_t max_served_requests = 65536;
  // Peers exchanged with in plaintext: signed envelopes carrying the §4 body, no Noise (protocol §5
  // "Plaintext"). Configured on both ends; never chosen at run time. Encrypted traffic from such a
  // peer is still accepted.
  std::vector<AgentId> plaintext_peers;
};

using RequestHandle = std::uint64_t;

// A request from a peer for this agent to serve (answer with respond/send_chunk/end_stream).
struct IncomingRequest {
  AgentId from;
  Uuid id;
  bool stream = false;
  std::string capability;
  boost::json::value body;
  // When the caller stops waiting (receipt time + timeout_ms): work stops then.
  std::optional<std::int64_t> deadline_ms;
};
// The peer cancelled a request this agent serves: stop work, send nothing more.
struct PeerCancelled {
  AgentId from;
  Uuid id;
};
struct ResponseEvent {
  RequestHandle handle;
  boost::json::value body;
};
// Stream chunks arrive in seq order, without gaps or duplicates.
struct ChunkEvent {
  RequestHandle handle;
  std::int64_t seq;
  boost::json::value body;
};
struct StreamEndEvent {
  RequestHandle handle;
};
// A request of ours ended without (complete) success: an error reply, timeout, cancellation,
// no_session after the retry, a local failure.
struct FailureEvent {
  RequestHandle handle;
  Error error;
  std::optional<std::int64_t> retry_after_ms;
};
using EndpointEvent = std::variant<IncomingRequest, PeerCancelled, ResponseEvent, ChunkEvent, StreamEndEvent, FailureEvent>;

struct OutgoingFrame {
  AgentId to;
  std::string frame;
};

struct EndpointStats {
  std::uint64_t handshakes_started = 0;
  std::uint64_t handshakes_accepted = 0;
  std::uint64_t handshakes_completed = 0;
  std::uint64_t no_session_sent = 0;
  std::uint64_t retries = 0;
  // Frames dropped without an answer, by reason (protocol §5 "Invalid input"); for logs and tests.
  std::map<std::string, std::uint64_t> dropped;
};

class Endpoint {
 public:
  explicit Endpoint(KeyPair identity, EndpointOptions options = {});

  [[nodiscard]] const AgentId& id() const noexcept { return self_.id(); }

  // Starts a request; its outcome arrives as events carrying the returned handle.
  RequestHandle request(const AgentId& to, std::string capability, boost::json::value body, bool stream,
                        std::optional<std::int64_t> timeout_ms, std::int64_t now_ms);
  // Cancels a request of ours: reports FailureEvent(cancelled) at once and tells the peer.
  void cancel(RequestHandle handle, std::int64_t now_ms);
  // The relay could not deliver the envelope `envelope_id` (its `undeliverable` frame, protocol §6):
  // the request that sent it fails with `code` (a handshake it started is abandoned and the requests
  // waiting on it start a new one); a handshake step 1 that carried no request fails every request
  // waiting on that handshake. Unknown IDs (replies, acks of old requests) are ignored.
  void undeliverable(const Uuid& envelope_id, Errc code, std::optional<std::int64_t> retry_after_ms, std::int64_t now_ms);
  [[nodiscard]] bool is_plaintext_peer(const AgentId& peer) const { return plaintext_peers_.contains(peer); }

  // Replies to an IncomingRequest. Errors: the request is unknown, finished, cancelled or past its
  // deadline (cancelled / timeout), or of the other kind (bad_request).
  [[nodiscard]] Status respond(const AgentId& to, const Uuid& request_id, boost::json::value body, std::int64_t now_ms);
  [[nodiscard]] Status respond_error(const AgentId& to, const Uuid& request_id, Errc code, std::string message,
                                     std::int64_t now_ms, std::optional<std::int64_t> retry_after_ms = std::nullopt);
  [[nodiscard]] Status send_chunk(const AgentId& to, const Uuid& request_id, boost::json::value body, std::int64_t now_ms);
  [[nodiscard]] Status end_stream(const AgentId& to, const Uuid& request_id, std::int64_t now_ms);

  // A frame from the relay. Invalid input is dropped and counted (stats().dropped), never thrown.
  void receive(std::string_view frame, std::int64_t now_ms);
  // Timeouts and lifetimes; call at next_deadline() at the latest.
  void tick(std::int64_t now_ms);
  [[nodiscard]] std::optional<std::int64_t> next_deadline() const;

  [[nodiscard]] std::vector<OutgoingFrame> take_outgoing();
  [[nodiscard]] std::vector<EndpointEvent> take_events();
  [[nodiscard]] const EndpointStats& stats() const noexcept { return stats_; }
  [[nodiscard]] SessionTable& sessions() noexcept { return table_; }
  [[nodiscard]] std::size_t outstanding_count() const noexcept { return outstanding_.size(); }
  [[nodiscard]] std::size_t served_count() const noexcept { return served_.size(); }

 private:
  enum class RequestState : std::uint8_t { queued, in_handshake, sent };
  struct Outstanding {
    AgentId peer;
    std::string capability;
    boost::json::value body;
    bool stream = false;
    std::int64_t deadline_ms = 0;
    Uuid wire_id;
    RequestState state = RequestState::queued;
    std::optional<SessionId> sid;
    bool retried = false;
    // Cancelled while its handshake is in flight: FailureEvent(cancelled) is already reported, the
    // cancel goes out once message 2 arrives, and whatever ends it later reports nothing more.
    bool cancel_when_sent = false;
    std::int64_t next_seq = 0;
    std::map<std::int64_t, boost::json::value> pending_chunks;
    std::optional<std::int64_t> end_seq;
  };
  struct Served {
    std::optional<SessionId> sid;  // nullopt: a plaintext peer's request
    bool stream = false;
    std::int64_t next_seq = 0;
    std::optional<std::int64_t> deadline_ms;
  };
  using ServedKey = std::pair<AgentId, Uuid>;

  void dispatch(RequestHandle handle, std::int64_t now_ms);
  void start_handshake_for(const AgentId& peer, std::int64_t now_ms);
  // false: not sent (sealing failed or the frame exceeds max_envelope_bytes; a request of ours is failed).
  bool seal_and_send(NoiseSession& session, Envelope envelope, const boost::json::value& body);
  // Forgets a request of ours; a handshake it started is abandoned (abandon_handshake).
  void finish(RequestHandle handle, std::int64_t now_ms);
  // Reports FailureEvent (unless the request was already reported cancelled) and finishes it.
  void fail_request(RequestHandle handle, Error error, std::int64_t now_ms,
                    std::optional<std::int64_t> retry_after_ms = std::nullopt);
  void drop(const std::string& reason);
  [[nodiscard]] Envelope header(const AgentId& to, MsgType type, std::optional<Uuid> in_reply_to, std::int64_t now_ms) const;

  void on_step1(const Envelope& envelope, std::int64_t now_ms);
  void on_step2(const Envelope& envelope, std::int64_t now_ms);
  void on_encrypted(const Envelope& envelope, std::int64_t now_ms);
  void on_plaintext(const Envelope& envelope, std::int64_t now_ms);
  void on_plaintext_from_peer(const Envelope& envelope, std::int64_t now_ms);
  void on_cancel(const Envelope& envelope, const std::optional<SessionId>& sid);
  bool send_signed(Envelope envelope, boost::json::value payload);
  // Queues an envelope frame for the relay, or fails the request `id` sent if it is too large.
  bool queue_frame(const AgentId& to, const Uuid& id, std::string frame, std::int64_t now_ms);
  // Drops the peer's pending handshake and its bookkeeping (starter, step-1 ID).
  void forget_handshake(const AgentId& peer);
  // Drops the peer's pending handshake and starts a fresh one for the requests still waiting, if any.
  void abandon_handshake(const AgentId& peer, std::int64_t now_ms);
  void on_incoming_request(NoiseSession* session, const Envelope& envelope, MsgType type, const boost::json::value& payload,
                           std::int64_t now_ms);
  void on_reply(const Envelope& envelope, const Body& body, std::int64_t now_ms);
  void deliver_chunks(RequestHandle handle, std::int64_t now_ms);
  [[nodiscard]] Status reply(const AgentId& to, const Uuid& request_id, MsgType type, const boost::json::value& body,
                             bool ends, std::int64_t now_ms);

  LocalIdentity self_;
  EndpointOptions options_;
  std::unordered_set<AgentId> plaintext_peers_;
  SessionTable table_;
  ReplayCache replay_;
  RequestHandle next_handle_ = 1;
  std::unordered_map<RequestHandle, Outstanding> outstanding_;
  std::map<Uuid, RequestHandle> by_wire_id_;
  // Requests waiting for a peer's handshake (single flight), and which request started it.
  std::unordered_map<AgentId, std::deque<RequestHandle>> waiting_;
  std::unordered_map<AgentId, RequestHandle> handshake_starter_;
  // The step-1 envelope ID of each pending handshake, for the relay's undeliverable.
  std::map<Uuid, AgentId> handshake_step1_;
  std::map<ServedKey, Served> served_;
  // Encrypted replies that arrived before the step-2 envelope of their session (bounded).
  static constexpr std::size_t kMaxEarlyReplies = 32;
  std::unordered_map<AgentId, std::vector<Envelope>> early_replies_;
  std::vector<OutgoingFrame> outgoing_;
  std::vector<EndpointEvent> events_;
  EndpointStats stats_;
};

}  // namespace agent_mesh
