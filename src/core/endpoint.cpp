#include "agent_mesh/endpoint.hpp"

#include <algorithm>
#include <boost/json.hpp>

#include "agent_mesh/json.hpp"
#include "json_fields.hpp"

namespace agent_mesh {
namespace {

boost::json::value request_body_json(const std::string& capability, const boost::json::value& body,
                                     std::int64_t timeout_ms) {
  boost::json::object out;
  out["capability"] = capability;
  out["body"] = body;
  out["timeout_ms"] = timeout_ms;
  return out;
}

// Message 1's payload (protocol §5): the request with its msg_type, as UTF-8 JSON.
std::string message1_json(bool stream, const std::string& capability, const boost::json::value& body,
                          std::int64_t timeout_ms) {
  boost::json::object out = request_body_json(capability, body, timeout_ms).as_object();
  out["msg_type"] = stream ? "stream_request" : "request";
  return json::serialize_jcs(out);
}

// Parses message 1's payload: {"msg_type","capability","body","timeout_ms"?}, unknown members
// rejected (protocol §5).
Result<std::pair<MsgType, RequestBody>> parse_message1(ByteView payload, std::size_t max_bytes) {
  auto parsed = json::parse_ijson(as_text(payload), {.max_bytes = max_bytes});
  if (!parsed) return std::move(parsed).error();
  if (!parsed->is_object()) return fail(Errc::bad_request, "message 1 payload must be a JSON object");
  boost::json::object object = parsed->as_object();
  detail::FieldReader fields(object, "message 1 payload");
  AGENT_MESH_TRY(fields.reject_unknown({"msg_type", "capability", "body", "timeout_ms"}));
  std::string_view type_text;
  AGENT_MESH_TRY(fields.required_string("msg_type", type_text));
  const auto type = msg_type_from_string(type_text);
  if (type != MsgType::request && type != MsgType::stream_request) {
    return fail(Errc::bad_request, "message 1 payload: msg_type must be request or stream_request");
  }
  object.erase("msg_type");
  auto body = parse_body(*type, object);
  if (!body) return std::move(body).error();
  return std::pair{*type, std::get<RequestBody>(std::move(body).value())};
}

}  // namespace

Endpoint::Endpoint(KeyPair identity, EndpointOptions options)
    : self_(std::move(identity)),
      options_(options),
      table_(options.sessions),
      replay_(ReplayCache::Options{.max_age_ms = options.freshness.max_age_ms}) {
  plaintext_peers_.insert(options_.plaintext_peers.begin(), options_.plaintext_peers.end());
}

bool Endpoint::queue_frame(const AgentId& to, const Uuid& id, std::string frame, std::int64_t now_ms) {
  if (frame.size() > options_.max_envelope_bytes) {
    // A request of ours fails here; for a reply the caller (reply()) answers too_large instead.
    auto handle = by_wire_id_.find(id);
    if (handle != by_wire_id_.end()) {
      const std::string size = std::to_string(frame.size());
      fail_request(handle->second, fail(Errc::too_large, "envelope of " + size + " bytes exceeds max_envelope_bytes"),
                   now_ms);
    }
    return false;
  }
  outgoing_.push_back({to, std::move(frame)});
  return true;
}

bool Endpoint::send_signed(Envelope envelope, boost::json::value payload) {
  envelope.payload = std::move(payload);
  envelope.sign(self_.key);
  const AgentId to = envelope.to;
  const Uuid id = envelope.id;
  return queue_frame(to, id, envelope.serialize(), envelope.timestamp);
}

Envelope Endpoint::header(const AgentId& to, MsgType type, std::optional<Uuid> in_reply_to, std::int64_t now_ms) const {
  Envelope env;
  env.id = Uuid::generate();
  env.from = self_.id();
  env.to = to;
  env.msg_type = type;
  env.in_reply_to = in_reply_to;
  env.timestamp = now_ms;
  return env;
}

void Endpoint::drop(const std::string& reason) { ++stats_.dropped[reason]; }

std::vector<OutgoingFrame> Endpoint::take_outgoing() { return std::exchange(outgoing_, {}); }
std::vector<EndpointEvent> Endpoint::take_events() { return std::exchange(events_, {}); }

// ---- requests of ours ----

RequestHandle Endpoint::request(const AgentId& to, std::string capability, boost::json::value body, bool stream,
                                std::optional<std::int64_t> timeout_ms, std::int64_t now_ms) {
  const RequestHandle handle = next_handle_++;
  if (outstanding_.size() >= options_.max_outstanding_requests) {
    events_.push_back(FailureEvent{handle, fail(Errc::rate_limited, "too many requests in flight"), std::nullopt});
    return handle;
  }
  if (!is_valid_capability_name(capability)) {
    events_.push_back(FailureEvent{handle, fail(Errc::bad_request, "capability names match [A-Za-z0-9_-]{1,54}"), std::nullopt});
    return handle;
  }
  Outstanding o;
  o.peer = to;
  o.capability = std::move(capability);
  o.body = std::move(body);
  o.stream = stream;
  o.deadline_ms = now_ms + std::max<std::int64_t>(1, timeout_ms.value_or(options_.default_timeout_ms));
  outstanding_.emplace(handle, std::move(o));
  dispatch(handle, now_ms);
  return handle;
}

void Endpoint::dispatch(RequestHandle handle, std::int64_t now_ms) {
  Outstanding& o = outstanding_.at(handle);
  by_wire_id_.erase(o.wire_id);
  o.sid.reset();
  // A retry starts the reply afresh (protocol §5 no_session).
  o.next_seq = 0;
  o.pending_chunks.clear();
  o.end_seq.reset();
  if (is_plaintext_peer(o.peer)) {
    Envelope env = header(o.peer, o.stream ? MsgType::stream_request : MsgType::request, std::nullopt, now_ms);
    o.wire_id = env.id;
    o.state = RequestState::sent;
    by_wire_id_[o.wire_id] = handle;
    send_signed(std::move(env), request_body_json(o.capability, o.body, o.deadline_ms - now_ms));
    return;
  }
  if (NoiseSession* session = table_.session_for_new_requests(o.peer, now_ms)) {
    Envelope env = header(o.peer, o.stream ? MsgType::stream_request : MsgType::request, std::nullopt, now_ms);
    o.wire_id = env.id;
    o.state = RequestState::sent;
    o.sid = session->sid();
    by_wire_id_[o.wire_id] = handle;
    seal_and_send(*session, std::move(env), request_body_json(o.capability, o.body, o.deadline_ms - now_ms));
    return;
  }
  o.state = RequestState::queued;
  waiting_[o.peer].push_back(handle);
  if (table_.pending(o.peer) == nullptr) start_handshake_for(o.peer, now_ms);
}

void Endpoint::start_handshake_for(const AgentId& peer, std::int64_t now_ms) {
  // Single flight (protocol §5): one handshake per peer; the first waiting request rides in
  // message 1 if it fits, the rest are sealed once message 2 arrives. A request that cannot start
  // it fails, and the next one tries.
  if (table_.pending(peer) != nullptr) return;
  for (;;) {
    auto queue = waiting_.find(peer);
    if (queue == waiting_.end()) return;
    if (queue->second.empty()) {
      waiting_.erase(queue);
      return;
    }
    const RequestHandle first = queue->second.front();
    Outstanding& o = outstanding_.at(first);
    if (now_ms >= o.deadline_ms) {
      fail_request(first, fail(Errc::timeout, "no reply within the timeout"), now_ms);
      continue;
    }
    const Uuid step1_id = Uuid::generate();
    std::string payload = message1_json(o.stream, o.capability, o.body, o.deadline_ms - now_ms);
    const bool carried = payload.size() <= kMessage1MaxPayload;
    if (!carried) payload.clear();
    auto started = start_handshake(self_, peer, as_bytes(payload), step1_id, now_ms);
    if (!started) {
      fail_request(first, std::move(started).error(), now_ms);
      continue;
    }
    ++stats_.handshakes_started;
    std::string frame = started->step1.serialize();
    if (frame.size() > options_.max_envelope_bytes) {
      // Only possible with a tiny max_envelope_bytes: tell the request instead of sending.
      fail_request(first, fail(Errc::too_large, "handshake envelope exceeds max_envelope_bytes"), now_ms);
      continue;
    }
    if (carried) {
      queue->second.pop_front();
      if (queue->second.empty()) waiting_.erase(queue);
      by_wire_id_.erase(o.wire_id);
      o.wire_id = step1_id;
      o.state = RequestState::in_handshake;
      by_wire_id_[step1_id] = first;
    }
    handshake_starter_[peer] = first;
    handshake_step1_[step1_id] = peer;
    table_.add_pending(std::move(started->pending));
    outgoing_.push_back({peer, std::move(frame)});
    return;
  }
}

bool Endpoint::seal_and_send(NoiseSession& session, Envelope envelope, const boost::json::value& body) {
  const std::string plaintext = json::serialize_jcs(body);
  const AgentId to = envelope.to;
  const Uuid id = envelope.id;
  if (auto sealed = session.seal(envelope, as_bytes(plaintext)); !sealed) {
    session.retire(envelope.timestamp);
    auto handle = by_wire_id_.find(id);
    if (handle != by_wire_id_.end()) fail_request(handle->second, std::move(sealed).error(), envelope.timestamp);
    return false;
  }
  return queue_frame(to, id, envelope.serialize(), envelope.timestamp);
}

void Endpoint::finish(RequestHandle handle, std::int64_t now_ms) {
  auto it = outstanding_.find(handle);
  if (it == outstanding_.end()) return;
  const AgentId peer = it->second.peer;
  by_wire_id_.erase(it->second.wire_id);
  auto queue = waiting_.find(peer);
  if (queue != waiting_.end()) {
    std::erase(queue->second, handle);
    if (queue->second.empty()) waiting_.erase(queue);
  }
  outstanding_.erase(it);
  // A handshake lives as long as the request that started it, however that request ends (reply,
  // error, cancel, timeout, undeliverable): otherwise it would hold the peer's queue for good.
  auto starter = handshake_starter_.find(peer);
  if (starter != handshake_starter_.end() && starter->second == handle) abandon_handshake(peer, now_ms);
}

void Endpoint::fail_request(RequestHandle handle, Error error, std::int64_t now_ms,
                            std::optional<std::int64_t> retry_after_ms) {
  auto it = outstanding_.find(handle);
  if (it == outstanding_.end()) return;
  // One terminal event per request: one cancelled during its handshake was reported already.
  if (!it->second.cancel_when_sent) events_.push_back(FailureEvent{handle, std::move(error), retry_after_ms});
  finish(handle, now_ms);
}

void Endpoint::forget_handshake(const AgentId& peer) {
  if (const PendingHandshake* pending = table_.pending(peer)) handshake_step1_.erase(pending->step1_id);
  table_.remove_pending(peer);
  handshake_starter_.erase(peer);
}

void Endpoint::abandon_handshake(const AgentId& peer, std::int64_t now_ms) {
  forget_handshake(peer);
  early_replies_.erase(peer);
  start_handshake_for(peer, now_ms);
}

void Endpoint::cancel(RequestHandle handle, std::int64_t now_ms) {
  auto it = outstanding_.find(handle);
  if (it == outstanding_.end()) return;
  Outstanding& o = it->second;
  if (o.cancel_when_sent) return;  // already cancelled, waiting for message 2
  if (o.state == RequestState::sent && !o.sid && is_plaintext_peer(o.peer)) {
    send_signed(header(o.peer, MsgType::cancel, o.wire_id, now_ms), boost::json::object{});
  } else if (o.state == RequestState::sent && o.sid) {
    if (NoiseSession* session = table_.find(o.peer, *o.sid)) {
      seal_and_send(*session, header(o.peer, MsgType::cancel, o.wire_id, now_ms), boost::json::object{});
    }
  } else if (o.state == RequestState::in_handshake) {
    // A cold request can be cancelled once message 2 has arrived (protocol §5): remember to.
    o.cancel_when_sent = true;
    events_.push_back(FailureEvent{handle, fail(Errc::cancelled, "cancelled by the caller"), std::nullopt});
    return;
  }
  fail_request(handle, fail(Errc::cancelled, "cancelled by the caller"), now_ms);
}

// ---- receiving ----

void Endpoint::receive(std::string_view frame, std::int64_t now_ms) {
  auto envelope = receive_envelope(frame, self_.id(), now_ms, options_.freshness, replay_, options_.max_envelope_bytes);
  if (!envelope) {
    drop("invalid envelope: " + std::string(to_string(envelope.error().code)));
    return;
  }
  if (envelope->msg_type == MsgType::handshake) {
    auto handshake = envelope->handshake_payload();
    if (handshake && handshake->step == 1) {
      on_step1(*envelope, now_ms);
    } else {
      on_step2(*envelope, now_ms);
    }
  } else if (envelope->encrypted) {
    on_encrypted(*envelope, now_ms);
  } else {
    on_plaintext(*envelope, now_ms);
  }
}

void Endpoint::on_step1(const Envelope& envelope, std::int64_t now_ms) {
  auto accepted = accept_handshake(self_, envelope, Uuid::generate(), now_ms);
  if (!accepted) {
    drop("handshake step 1 refused");
    return;
  }
  ++stats_.handshakes_accepted;
  outgoing_.push_back({envelope.from, accepted->step2.serialize()});
  NoiseSession& session = table_.add(std::move(accepted->session), now_ms);
  if (accepted->message1_payload.empty()) return;
  auto request = parse_message1(accepted->message1_payload, options_.max_envelope_bytes);
  if (!request) {
    // An invalid message-1 request is answered bad_request on its session (protocol §5).
    Envelope reply = header(envelope.from, MsgType::error, envelope.id, now_ms);
    seal_and_send(session, std::move(reply),
                  body_to_json(ErrorBody{Errc::bad_request, request.error().message, std::nullopt}));
    return;
  }
  on_incoming_request(&session, envelope, request->first, body_to_json(request->second), now_ms);
}

void Endpoint::on_step2(const Envelope& envelope, std::int64_t now_ms) {
  if (!envelope.in_reply_to) {
    drop("handshake step 2 without in_reply_to");
    return;
  }
  PendingHandshake* pending = table_.pending_by_step1(*envelope.in_reply_to);
  if (pending == nullptr || pending->peer != envelope.from) {
    drop("handshake step 2 for no pending handshake");
    return;
  }
  const AgentId peer = pending->peer;
  const Uuid step1_id = pending->step1_id;
  auto session = finish_handshake(*pending, envelope, now_ms);
  forget_handshake(peer);
  if (!session) {
    early_replies_.erase(peer);
    drop("handshake step 2 refused");
    // The peer answered but the handshake failed: fail the carried request, restart the queue.
    auto carried = by_wire_id_.find(step1_id);
    if (carried != by_wire_id_.end()) {
      fail_request(carried->second, fail(Errc::unreachable, session.error().message), now_ms);
    }
    start_handshake_for(peer, now_ms);
    return;
  }
  ++stats_.handshakes_completed;
  NoiseSession& established = table_.add(std::move(session).value(), now_ms);
  std::vector<Envelope> early;
  if (auto held = early_replies_.find(peer); held != early_replies_.end()) {
    early = std::move(held->second);
    early_replies_.erase(held);
  }
  auto carried = by_wire_id_.find(step1_id);
  if (carried != by_wire_id_.end()) {
    Outstanding& o = outstanding_.at(carried->second);
    o.state = RequestState::sent;
    o.sid = established.sid();
    if (o.cancel_when_sent) {
      seal_and_send(established, header(peer, MsgType::cancel, o.wire_id, now_ms), boost::json::object{});
      finish(carried->second, now_ms);
    }
  }
  for (const Envelope& held : early) on_encrypted(held, now_ms);
  auto queue = waiting_.find(peer);
  if (queue == waiting_.end()) return;
  std::deque<RequestHandle> ready = std::move(queue->second);
  waiting_.erase(queue);
  for (RequestHandle handle : ready) {
    if (outstanding_.contains(handle)) dispatch(handle, now_ms);
  }
}

void Endpoint::on_encrypted(const Envelope& envelope, std::int64_t now_ms) {
  NoiseSession* session = table_.find(envelope.from, *envelope.sid);
  const bool is_request = envelope.msg_type == MsgType::request || envelope.msg_type == MsgType::stream_request;
  if (session == nullptr) {
    if (!is_request) {
      // A reply can overtake the step-2 envelope of its own session (reordering on a reconnect):
      // hold a few from a peer we are handshaking with and replay them when step 2 lands.
      if (table_.pending(envelope.from) != nullptr) {
        auto& early = early_replies_[envelope.from];
        if (early.size() < kMaxEarlyReplies) {
          early.push_back(envelope);
          return;
        }
      }
      drop("encrypted reply or cancel for an unknown session");
      return;
    }
    // protocol §5 "no_session": a signed plaintext error, so the requester re-handshakes.
    Envelope reply = header(envelope.from, MsgType::error, envelope.id, now_ms);
    reply.payload = body_to_json(ErrorBody{Errc::no_session, "no session for this sid; handshake again", std::nullopt});
    reply.sign(self_.key);
    outgoing_.push_back({envelope.from, reply.serialize()});
    ++stats_.no_session_sent;
    return;
  }
  auto plaintext = session->open(envelope);
  if (!plaintext) {
    drop(session->last_refusal() == NoiseSession::Refusal::authentication ? "decryption failed" : "replayed counter");
    if (session->broken(table_.limits())) table_.remove(envelope.from, *envelope.sid);
    return;
  }
  if (envelope.msg_type == MsgType::handshake) return;  // unreachable: parse forbids it
  auto payload = json::parse_ijson(as_text(*plaintext), {.max_bytes = options_.max_envelope_bytes});
  if (is_request) {
    // Requests travel on the session their sender initiated, i.e. one where we are responder.
    if (session->we_initiated()) {
      drop("request on a session we initiated");
      return;
    }
    if (!payload) {
      Envelope reply = header(envelope.from, MsgType::error, envelope.id, now_ms);
      seal_and_send(*session, std::move(reply), body_to_json(ErrorBody{Errc::bad_request, payload.error().message, std::nullopt}));
      return;
    }
    on_incoming_request(session, envelope, envelope.msg_type, *payload, now_ms);
    return;
  }
  if (envelope.msg_type == MsgType::cancel) {
    on_cancel(envelope, envelope.sid);
    return;
  }
  // A reply: it must answer a request of ours to this peer, on the session that carried it.
  auto handle = by_wire_id_.find(*envelope.in_reply_to);
  if (handle == by_wire_id_.end()) {
    drop("reply to no outstanding request");  // e.g. after our timeout: decrypted, then dropped
    return;
  }
  Outstanding& o = outstanding_.at(handle->second);
  if (o.peer != envelope.from || o.state != RequestState::sent || o.sid != envelope.sid) {
    drop("reply on the wrong session");
    return;
  }
  if (!payload) {
    fail_request(handle->second, fail(Errc::bad_request, "peer sent an invalid reply: " + payload.error().message),
                 now_ms);
    return;
  }
  auto body = parse_body(envelope.msg_type, *payload);
  if (!body) {
    fail_request(handle->second, fail(Errc::bad_request, "peer sent an invalid reply: " + body.error().message),
                 now_ms);
    return;
  }
  on_reply(envelope, *body, now_ms);
}

void Endpoint::on_incoming_request(NoiseSession* session, const Envelope& envelope, MsgType type,
                                   const boost::json::value& payload, std::int64_t now_ms) {
  // Answers on the request's session, or signed in plaintext for a plaintext peer (session null).
  auto answer_error = [&](ErrorBody error) {
    Envelope reply = header(envelope.from, MsgType::error, envelope.id, now_ms);
    if (session != nullptr) {
      seal_and_send(*session, std::move(reply), body_to_json(error));
    } else {
      send_signed(std::move(reply), body_to_json(error));
    }
  };
  auto body = parse_body(type, payload);
  if (!body) {
    answer_error(ErrorBody{Errc::bad_request, body.error().message, std::nullopt});
    return;
  }
  auto& request = std::get<RequestBody>(*body);
  if (served_.size() >= options_.max_served_requests) {
    answer_error(ErrorBody{Errc::rate_limited, "too many requests in progress", 1000});
    return;
  }
  Served served;
  if (session != nullptr) served.sid = session->sid();
  served.stream = type == MsgType::stream_request;
  // The deadline counts from receipt, not from the sender's clock (skew-proof, docs/protocol.md).
  if (request.timeout_ms) served.deadline_ms = now_ms + *request.timeout_ms;
  served_[{envelope.from, envelope.id}] = served;
  events_.push_back(IncomingRequest{envelope.from, envelope.id, served.stream, std::move(request.capability),
                                    std::move(request.body), served.deadline_ms});
}

void Endpoint::on_reply(const Envelope& envelope, const Body& body, std::int64_t now_ms) {
  const RequestHandle handle = by_wire_id_.at(*envelope.in_reply_to);
  Outstanding& o = outstanding_.at(handle);
  if (const auto* response = std::get_if<ResponseBody>(&body)) {
    if (o.stream) {
      fail_request(handle, fail(Errc::bad_request, "peer answered a stream request with a plain response"), now_ms);
      return;
    }
    events_.push_back(ResponseEvent{handle, response->body});
    finish(handle, now_ms);
  } else if (const auto* error = std::get_if<ErrorBody>(&body)) {
    fail_request(handle, fail(error->code, error->message), now_ms, error->retry_after_ms);
  } else if (const auto* chunk = std::get_if<StreamChunkBody>(&body)) {
    if (!o.stream || chunk->seq < o.next_seq || o.pending_chunks.contains(chunk->seq)) {
      drop("stream chunk out of place");
      return;
    }
    o.pending_chunks.emplace(chunk->seq, chunk->body);
    if (o.pending_chunks.size() > options_.max_pending_chunks) {
      // protocol §5: too many chunks waiting for a gap to fill: fail locally and tell the peer, on
      // the request's session or signed in plaintext for a plaintext peer.
      if (!o.sid) {
        send_signed(header(o.peer, MsgType::cancel, o.wire_id, now_ms), boost::json::object{});
      } else if (NoiseSession* session = table_.find(o.peer, *o.sid)) {
        seal_and_send(*session, header(o.peer, MsgType::cancel, o.wire_id, now_ms), boost::json::object{});
      }
      fail_request(handle, fail(Errc::internal, "more than 256 stream chunks pending reordering"), now_ms);
      return;
    }
    deliver_chunks(handle, now_ms);
  } else if (const auto* end = std::get_if<StreamEndBody>(&body)) {
    if (!o.stream || end->seq < o.next_seq) {
      fail_request(handle, fail(Errc::bad_request, "stream_end does not match the chunks received"), now_ms);
      return;
    }
    o.end_seq = end->seq;
    deliver_chunks(handle, now_ms);
  } else {
    drop("unexpected reply type");
  }
}

void Endpoint::deliver_chunks(RequestHandle handle, std::int64_t now_ms) {
  Outstanding& o = outstanding_.at(handle);
  while (!o.pending_chunks.empty() && o.pending_chunks.begin()->first == o.next_seq) {
    events_.push_back(ChunkEvent{handle, o.next_seq, std::move(o.pending_chunks.begin()->second)});
    o.pending_chunks.erase(o.pending_chunks.begin());
    ++o.next_seq;
  }
  if (o.end_seq && o.next_seq == *o.end_seq) {
    if (!o.pending_chunks.empty()) {
      fail_request(handle, fail(Errc::bad_request, "stream chunks beyond the announced end"), now_ms);
      return;
    }
    events_.push_back(StreamEndEvent{handle});
    finish(handle, now_ms);
  }
}

void Endpoint::undeliverable(const Uuid& envelope_id, Errc code, std::optional<std::int64_t> retry_after_ms,
                             std::int64_t now_ms) {
  // A request envelope, or a step 1 that carried the request: that request fails (finish() abandons
  // a handshake it started; the requests waiting on it start a new one).
  if (auto found = by_wire_id_.find(envelope_id); found != by_wire_id_.end()) {
    fail_request(found->second, fail(code, "the relay could not deliver the request: " + std::string(to_string(code))),
                 now_ms, retry_after_ms);
    return;
  }
  // A step 1 that carried no request was sent for every request waiting on it: they all fail.
  auto step1 = handshake_step1_.find(envelope_id);
  if (step1 == handshake_step1_.end()) return;
  const AgentId peer = step1->second;
  forget_handshake(peer);
  early_replies_.erase(peer);
  auto queue = waiting_.find(peer);
  if (queue == waiting_.end()) return;
  const std::deque<RequestHandle> waiting = std::move(queue->second);
  waiting_.erase(queue);
  const std::string message = "the relay could not deliver the handshake: " + std::string(to_string(code));
  for (RequestHandle handle : waiting) fail_request(handle, fail(code, message), now_ms, retry_after_ms);
}

// A cancel counts only on the session that carried its request (nullopt: a plaintext request).
void Endpoint::on_cancel(const Envelope& envelope, const std::optional<SessionId>& sid) {
  auto served = served_.find({envelope.from, *envelope.in_reply_to});
  if (served == served_.end() || served->second.sid != sid) {
    drop("cancel for no request served on this session");
    return;
  }
  served_.erase(served);
  events_.push_back(PeerCancelled{envelope.from, *envelope.in_reply_to});
}

void Endpoint::on_plaintext_from_peer(const Envelope& envelope, std::int64_t now_ms) {
  const MsgType type = envelope.msg_type;
  if (type == MsgType::request || type == MsgType::stream_request) {
    on_incoming_request(nullptr, envelope, type, envelope.payload, now_ms);
    return;
  }
  if (!envelope.in_reply_to) {
    drop("plaintext envelope without in_reply_to");
    return;
  }
  if (type == MsgType::cancel) {
    on_cancel(envelope, std::nullopt);
    return;
  }
  auto handle = by_wire_id_.find(*envelope.in_reply_to);
  if (handle == by_wire_id_.end()) {
    drop("reply to no outstanding request");
    return;
  }
  const Outstanding& o = outstanding_.at(handle->second);
  if (o.peer != envelope.from || o.state != RequestState::sent || o.sid) {
    drop("plaintext reply to an encrypted request");
    return;
  }
  auto body = parse_body(type, envelope.payload);
  if (!body) {
    fail_request(handle->second, fail(Errc::bad_request, "peer sent an invalid reply: " + body.error().message),
                 now_ms);
    return;
  }
  on_reply(envelope, *body, now_ms);
}

void Endpoint::on_plaintext(const Envelope& envelope, std::int64_t now_ms) {
  if (is_plaintext_peer(envelope.from)) {
    on_plaintext_from_peer(envelope, now_ms);
    return;
  }
  // Signed plaintext errors answering our own outstanding request are always accepted (§5).
  if (envelope.msg_type != MsgType::error || !envelope.in_reply_to) {
    drop("plaintext envelope from a peer not configured for plaintext");
    return;
  }
  auto handle = by_wire_id_.find(*envelope.in_reply_to);
  if (handle == by_wire_id_.end() || outstanding_.at(handle->second).peer != envelope.from) {
    drop("plaintext error for no outstanding request");
    return;
  }
  auto body = parse_body(MsgType::error, envelope.payload);
  if (!body) {
    drop("plaintext error with an invalid body");
    return;
  }
  const auto& error = std::get<ErrorBody>(*body);
  const RequestHandle h = handle->second;
  Outstanding& o = outstanding_.at(h);
  if (error.code == Errc::no_session && o.state == RequestState::sent) {
    // The peer lost our session (e.g. it restarted): drop it, handshake again, retry once with a
    // new envelope id (protocol §5). Only while nothing of the reply has arrived: a retry runs the
    // request again, and splicing two runs into one stream would pass for success.
    if (o.sid) table_.remove(o.peer, *o.sid);
    const bool reply_started = o.next_seq > 0 || !o.pending_chunks.empty() || o.end_seq.has_value();
    if (!o.retried && !reply_started) {
      o.retried = true;
      ++stats_.retries;
      dispatch(h, now_ms);
      return;
    }
  }
  fail_request(h, fail(error.code, error.message), now_ms, error.retry_after_ms);
}

// ---- replying to requests we serve ----

Status Endpoint::reply(const AgentId& to, const Uuid& request_id, MsgType type, const boost::json::value& body,
                       bool ends, std::int64_t now_ms) {
  auto served = served_.find({to, request_id});
  if (served == served_.end()) {
    return fail(Errc::cancelled, "no such request in progress (finished, cancelled or timed out)");
  }
  if (served->second.deadline_ms && now_ms >= *served->second.deadline_ms) {
    // After timeout_ms a responder sends nothing more (protocol §5).
    served_.erase(served);
    return fail(Errc::timeout, "the caller's timeout has passed");
  }
  NoiseSession* session = nullptr;
  if (served->second.sid) {
    session = table_.find(to, *served->second.sid);
    if (session == nullptr) {
      served_.erase(served);
      return fail(Errc::unreachable, "the session that carried the request is gone");
    }
  }
  // On the request's session, or signed in plaintext for a plaintext peer.
  auto send = [&](MsgType what, const boost::json::value& payload) {
    return session != nullptr ? seal_and_send(*session, header(to, what, request_id, now_ms), payload)
                              : send_signed(header(to, what, request_id, now_ms), payload);
  };
  if (!send(type, body)) {
    // Too large for one envelope: the caller gets too_large rather than waiting for its timeout.
    const std::string message = "the reply does not fit in one envelope (max_envelope_bytes)";
    (void)send(MsgType::error, body_to_json(ErrorBody{Errc::too_large, message, std::nullopt}));
    served_.erase(served);
    return fail(Errc::too_large, message);
  }
  if (ends) served_.erase(served);
  return {};
}

Status Endpoint::respond(const AgentId& to, const Uuid& request_id, boost::json::value body, std::int64_t now_ms) {
  auto served = served_.find({to, request_id});
  if (served != served_.end() && served->second.stream) {
    return fail(Errc::bad_request, "a stream request is answered with chunks and end_stream");
  }
  return reply(to, request_id, MsgType::response, body_to_json(ResponseBody{std::move(body)}), true, now_ms);
}

Status Endpoint::respond_error(const AgentId& to, const Uuid& request_id, Errc code, std::string message,
                               std::int64_t now_ms, std::optional<std::int64_t> retry_after_ms) {
  return reply(to, request_id, MsgType::error, body_to_json(ErrorBody{code, std::move(message), retry_after_ms}), true,
               now_ms);
}

Status Endpoint::send_chunk(const AgentId& to, const Uuid& request_id, boost::json::value body, std::int64_t now_ms) {
  auto served = served_.find({to, request_id});
  if (served != served_.end() && !served->second.stream) {
    return fail(Errc::bad_request, "only a stream request is answered with chunks");
  }
  const std::int64_t seq = served == served_.end() ? 0 : served->second.next_seq;
  AGENT_MESH_TRY(reply(to, request_id, MsgType::stream_chunk, body_to_json(StreamChunkBody{seq, std::move(body)}), false, now_ms));
  ++served_.at({to, request_id}).next_seq;
  return {};
}

Status Endpoint::end_stream(const AgentId& to, const Uuid& request_id, std::int64_t now_ms) {
  auto served = served_.find({to, request_id});
  if (served != served_.end() && !served->second.stream) {
    return fail(Errc::bad_request, "only a stream request is ended with end_stream");
  }
  const std::int64_t count = served == served_.end() ? 0 : served->second.next_seq;
  return reply(to, request_id, MsgType::stream_end, body_to_json(StreamEndBody{count}), true, now_ms);
}

// ---- time ----

void Endpoint::tick(std::int64_t now_ms) {
  std::vector<RequestHandle> expired;
  for (const auto& [handle, o] : outstanding_) {
    if (now_ms >= o.deadline_ms) expired.push_back(handle);
  }
  std::sort(expired.begin(), expired.end());
  for (RequestHandle handle : expired) {
    // finish() abandons a handshake the request started; requests still waiting start a new one.
    fail_request(handle, fail(Errc::timeout, "no reply within the timeout"), now_ms);
  }
  // A pending handshake nobody waits for any more (its starter gone, or no request riding in
  // message 1 and none queued) is dropped, or restarted for the requests still queued.
  std::vector<AgentId> stale;
  for (const auto& [peer, starter] : handshake_starter_) {
    auto o = outstanding_.find(starter);
    const bool carried = o != outstanding_.end() && o->second.state == RequestState::in_handshake;
    if (o == outstanding_.end() || (!carried && !waiting_.contains(peer))) stale.push_back(peer);
  }
  for (const AgentId& peer : stale) abandon_handshake(peer, now_ms);
  for (auto it = served_.begin(); it != served_.end();) {
    it = (it->second.deadline_ms && now_ms >= *it->second.deadline_ms) ? served_.erase(it) : std::next(it);
  }
  table_.expire(now_ms);
  replay_.expire(now_ms);
}

std::optional<std::int64_t> Endpoint::next_deadline() const {
  std::optional<std::int64_t> next;
  for (const auto& [handle, o] : outstanding_) {
    if (!next || o.deadline_ms < *next) next = o.deadline_ms;
  }
  for (const auto& [key, served] : served_) {
    if (served.deadline_ms && (!next || *served.deadline_ms < *next)) next = served.deadline_ms;
  }
  return next;
}

}  // namespace agent_mesh
