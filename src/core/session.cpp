#include "agent_mesh/session.hpp"

#include <sodium.h>

#include <algorithm>
#include <cstring>

#include "agent_mesh/encoding.hpp"

namespace agent_mesh {
namespace {

constexpr std::size_t kMaxPieceCiphertext = noise::kMaxMessageBytes;  // 65,535

noise::HandshakeConfig ik_config(const LocalIdentity& self, bool initiator, std::optional<X25519Key> remote,
                                 std::optional<noise::DhKeyPair> fixed_ephemeral) {
  noise::HandshakeConfig config;
  config.pattern = noise::Pattern::IK;
  config.initiator = initiator;
  config.prologue.assign(kNoisePrologue.begin(), kNoisePrologue.end());
  config.local_static = self.static_dh;
  config.remote_static = remote;
  config.local_ephemeral = std::move(fixed_ephemeral);
  return config;
}

Envelope handshake_envelope(const LocalIdentity& self, const AgentId& to, const Uuid& id, int step,
                            const Bytes& noise_message, std::int64_t now_ms) {
  Envelope env;
  env.id = id;
  env.from = self.id();
  env.to = to;
  env.msg_type = MsgType::handshake;
  env.timestamp = now_ms;
  boost::json::object payload;
  payload["step"] = step;
  payload["noise"] = base64url_encode(noise_message);
  env.payload = std::move(payload);
  return env;
}

}  // namespace

LocalIdentity::LocalIdentity(KeyPair identity)
    : key(std::move(identity)), static_dh(noise::DhKeyPair::from_secret(key.x25519_secret())) {}

SessionId session_id_from_hash(const noise::Hash& handshake_hash) noexcept {
  SessionId sid{};
  std::memcpy(sid.data(), handshake_hash.data(), sid.size());
  return sid;
}

// ---- NoiseSession ----

NoiseSession::NoiseSession(SessionId sid, AgentId peer, bool we_initiated, noise::TransportKeys keys,
                           std::int64_t created_ms)
    : sid_(sid), peer_(std::move(peer)), we_initiated_(we_initiated), keys_(std::move(keys)), created_ms_(created_ms) {}

bool NoiseSession::worn_out(const SessionLimits& limits, std::int64_t now_ms) const noexcept {
  return envelopes_ >= limits.max_envelopes || now_ms - created_ms_ >= limits.max_age_ms;
}

Status NoiseSession::seal(Envelope& envelope, ByteView plaintext) {
  const std::size_t pieces = plaintext.empty() ? 1 : (plaintext.size() + noise::kMaxPlaintextBytes - 1) / noise::kMaxPlaintextBytes;
  if (next_send_ > kMaxCounter || kMaxCounter - next_send_ < pieces - 1) {
    return fail(Errc::expired, "session counters are used up; a new handshake is needed");
  }
  envelope.encrypted = true;
  envelope.sid = sid_;
  envelope.n = next_send_;
  envelope.signature.reset();
  envelope.payload = nullptr;
  const std::string ad = envelope.associated_data();
  envelope.ciphertext.resize(plaintext.size() + pieces * noise::kTagBytes);
  std::size_t in = 0;
  std::size_t out = 0;
  for (std::size_t i = 0; i < pieces; ++i) {
    const std::size_t len = std::min(noise::kMaxPlaintextBytes, plaintext.size() - in);
    keys_.send.encrypt_at(next_send_ + i, as_bytes(ad), plaintext.subspan(in, len), envelope.ciphertext.data() + out);
    in += len;
    out += len + noise::kTagBytes;
  }
  next_send_ += pieces;
  ++envelopes_;
  return {};
}

Result<Bytes> NoiseSession::open(const Envelope& envelope) {
  last_refusal_ = Refusal::malformed;
  if (!envelope.encrypted || !envelope.n) return fail(Errc::bad_request, "not an encrypted envelope");
  const Bytes& ciphertext = envelope.ciphertext;
  // The payload is split every 65,535 bytes; every piece holds at least a tag.
  const std::size_t pieces = ciphertext.empty() ? 0 : (ciphertext.size() + kMaxPieceCiphertext - 1) / kMaxPieceCiphertext;
  const std::size_t last_piece = ciphertext.size() - (pieces == 0 ? 0 : (pieces - 1) * kMaxPieceCiphertext);
  if (pieces == 0 || last_piece < noise::kTagBytes) {
    return fail(Errc::bad_request, "encrypted payload is shorter than an AEAD tag");
  }
  const std::uint64_t first = *envelope.n;
  if (first > kMaxCounter || kMaxCounter - first < pieces - 1) {
    return fail(Errc::bad_request, "counter beyond 2^53 − 1");
  }
  for (std::size_t i = 0; i < pieces; ++i) {
    switch (window_.check(first + i)) {
      case ReplayWindow::Verdict::fresh: break;
      case ReplayWindow::Verdict::replayed:
        last_refusal_ = Refusal::replayed;
        return fail(Errc::bad_request, "counter " + std::to_string(first + i) + " was already received (replay)");
      case ReplayWindow::Verdict::too_old:
        last_refusal_ = Refusal::too_old;
        return fail(Errc::bad_request, "counter " + std::to_string(first + i) + " is behind the replay window");
    }
  }
  const std::string ad = envelope.associated_data();
  Bytes plaintext(ciphertext.size() - pieces * noise::kTagBytes);
  std::size_t in = 0;
  std::size_t out = 0;
  for (std::size_t i = 0; i < pieces; ++i) {
    const std::size_t len = std::min(kMaxPieceCiphertext, ciphertext.size() - in);
    if (!keys_.receive.decrypt_at(first + i, as_bytes(ad), ByteView(ciphertext).subspan(in, len), plaintext.data() + out)) {
      // One failed payload is one decryption failure, however many pieces it has (§5).
      last_refusal_ = Refusal::authentication;
      ++consecutive_failures_;
      sodium_memzero(plaintext.data(), plaintext.size());
      return fail(Errc::bad_request, "decryption failed (tampered header or payload, or wrong session)");
    }
    in += len;
    out += len - noise::kTagBytes;
  }
  // Every piece verified: only now do the counters enter the window.
  for (std::size_t i = 0; i < pieces; ++i) window_.mark(first + i);
  consecutive_failures_ = 0;
  ++envelopes_;
  last_refusal_ = Refusal::none;
  return plaintext;
}

// ---- handshakes ----

Result<HandshakeStart> start_handshake(const LocalIdentity& self, const AgentId& peer, ByteView payload,
                                       const Uuid& step1_id, std::int64_t now_ms,
                                       std::optional<noise::DhKeyPair> fixed_ephemeral) {
  if (payload.size() > kMessage1MaxPayload) {
    return fail(Errc::too_large, "message 1 holds at most 65,439 payload bytes");
  }
  auto state = noise::HandshakeState::create(ik_config(self, true, peer.x25519_public(), std::move(fixed_ephemeral)));
  if (!state) return std::move(state).error();
  Bytes message;
  AGENT_MESH_TRY(state->write_message(payload, message));
  Envelope step1 = handshake_envelope(self, peer, step1_id, 1, message, now_ms);
  step1.sign(self.key);
  return HandshakeStart{std::move(step1), PendingHandshake{std::move(state).value(), peer, step1_id, now_ms}};
}

Result<HandshakeAccept> accept_handshake(const LocalIdentity& self, const Envelope& step1, const Uuid& step2_id,
                                         std::int64_t now_ms, std::optional<noise::DhKeyPair> fixed_ephemeral) {
  auto handshake = step1.handshake_payload();
  if (!handshake) return std::move(handshake).error();
  if (handshake->step != 1) return fail(Errc::bad_request, "handshake: expected step 1");
  auto state = noise::HandshakeState::create(ik_config(self, false, std::nullopt, std::move(fixed_ephemeral)));
  if (!state) return std::move(state).error();
  HandshakeAccept accepted;
  if (auto read = state->read_message(handshake->noise, accepted.message1_payload); !read) {
    return fail(Errc::bad_request, "handshake message 1: " + read.error().message);
  }
  // The static key inside message 1 must be the one derived from `from` (protocol §5): the
  // identity and the Noise key are bound by derivation, not by a separate signature.
  const auto& remote = state->remote_static();
  if (!remote || sodium_memcmp(remote->data(), step1.from.x25519_public().data(), remote->size()) != 0) {
    return fail(Errc::bad_request, "handshake message 1: the initiator's static key does not belong to `from`");
  }
  Bytes message2;
  AGENT_MESH_TRY(state->write_message({}, message2));
  accepted.step2 = handshake_envelope(self, step1.from, step2_id, 2, message2, now_ms);
  accepted.step2.in_reply_to = step1.id;
  accepted.step2.sign(self.key);
  noise::TransportKeys split = state->split();
  accepted.session = std::make_unique<NoiseSession>(session_id_from_hash(state->handshake_hash()), step1.from, false,
                                                    std::move(split), now_ms);
  return accepted;
}

Result<std::unique_ptr<NoiseSession>> finish_handshake(PendingHandshake& pending, const Envelope& step2,
                                                       std::int64_t now_ms) {
  if (step2.from != pending.peer) return fail(Errc::bad_request, "handshake step 2 is not from the agent dialled");
  if (!step2.in_reply_to || *step2.in_reply_to != pending.step1_id) {
    return fail(Errc::bad_request, "handshake step 2 does not answer this handshake");
  }
  auto handshake = step2.handshake_payload();
  if (!handshake) return std::move(handshake).error();
  if (handshake->step != 2) return fail(Errc::bad_request, "handshake: expected step 2");
  Bytes payload;
  if (auto read = pending.state.read_message(handshake->noise, payload); !read) {
    return fail(Errc::bad_request, "handshake message 2: " + read.error().message);
  }
  if (!payload.empty()) return fail(Errc::bad_request, "handshake message 2 must have an empty payload");
  if (!pending.state.is_complete()) return fail(Errc::bad_request, "handshake not complete after message 2");
  return std::make_unique<NoiseSession>(session_id_from_hash(pending.state.handshake_hash()), pending.peer, true,
                                        pending.state.split(), now_ms);
}

// ---- SessionTable ----

NoiseSession* SessionTable::session_for_new_requests(const AgentId& peer, std::int64_t now_ms) {
  auto it = sessions_.find(peer);
  if (it == sessions_.end()) return nullptr;
  NoiseSession* best = nullptr;
  for (auto& session : it->second) {
    if (!session->we_initiated() || session->retired_at()) continue;
    if (session->worn_out(limits_, now_ms)) {
      session->retire(now_ms);
      continue;
    }
    if (best == nullptr || session->created_ms() > best->created_ms()) best = session.get();
  }
  return best;
}

NoiseSession* SessionTable::find(const AgentId& peer, const SessionId& sid) {
  auto it = sessions_.find(peer);
  if (it == sessions_.end()) return nullptr;
  for (auto& session : it->second) {
    if (session->sid() == sid) return session.get();
  }
  return nullptr;
}

NoiseSession& SessionTable::add(std::unique_ptr<NoiseSession> session, std::int64_t now_ms) {
  while (count_ >= limits_.max_sessions_total) evict_oldest();
  auto& list = sessions_[session->peer()];
  if (session->we_initiated()) {
    for (auto& old : list) {
      if (old->we_initiated()) old->retire(now_ms);
    }
  } else {
    std::size_t responders = 0;
    for (const auto& s : list) responders += s->we_initiated() ? 0 : 1;
    while (responders >= limits_.max_responder_sessions_per_peer) {
      auto oldest = list.end();
      for (auto it = list.begin(); it != list.end(); ++it) {
        if (!(*it)->we_initiated() && (oldest == list.end() || (*it)->created_ms() < (*oldest)->created_ms())) {
          oldest = it;
        }
      }
      list.erase(oldest);
      --count_;
      --responders;
    }
  }
  list.push_back(std::move(session));
  ++count_;
  return *list.back();
}

void SessionTable::remove(const AgentId& peer, const SessionId& sid) {
  auto it = sessions_.find(peer);
  if (it == sessions_.end()) return;
  auto& list = it->second;
  const auto before = list.size();
  std::erase_if(list, [&](const auto& s) { return s->sid() == sid; });
  count_ -= before - list.size();
  if (list.empty()) sessions_.erase(it);
}

void SessionTable::evict_oldest() {
  auto oldest_peer = sessions_.end();
  std::size_t oldest_index = 0;
  for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
    for (std::size_t i = 0; i < it->second.size(); ++i) {
      if (oldest_peer == sessions_.end() ||
          it->second[i]->created_ms() < oldest_peer->second[oldest_index]->created_ms()) {
        oldest_peer = it;
        oldest_index = i;
      }
    }
  }
  if (oldest_peer == sessions_.end()) return;
  oldest_peer->second.erase(oldest_peer->second.begin() + static_cast<std::ptrdiff_t>(oldest_index));
  --count_;
  if (oldest_peer->second.empty()) sessions_.erase(oldest_peer);
}

PendingHandshake* SessionTable::pending(const AgentId& peer) {
  auto it = pending_.find(peer);
  return it == pending_.end() ? nullptr : &it->second;
}

PendingHandshake* SessionTable::pending_by_step1(const Uuid& step1_id) {
  for (auto& [peer, pending] : pending_) {
    if (pending.step1_id == step1_id) return &pending;
  }
  return nullptr;
}

void SessionTable::add_pending(PendingHandshake pending) {
  const AgentId peer = pending.peer;
  pending_.erase(peer);
  pending_.emplace(peer, std::move(pending));
}

void SessionTable::remove_pending(const AgentId& peer) { pending_.erase(peer); }

void SessionTable::expire(std::int64_t now_ms) {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    auto& list = it->second;
    const auto before = list.size();
    std::erase_if(list, [&](const auto& s) {
      if (s->retired_at() && now_ms - *s->retired_at() >= limits_.retire_grace_ms) return true;
      return now_ms - s->created_ms() >= limits_.max_age_ms + limits_.retire_grace_ms;
    });
    count_ -= before - list.size();
    it = list.empty() ? sessions_.erase(it) : std::next(it);
  }
}

std::size_t SessionTable::session_count(const AgentId& peer) const {
  auto it = sessions_.find(peer);
  return it == sessions_.end() ? 0 : it->second.size();
}

}  // namespace agent_mesh
