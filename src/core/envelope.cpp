#include "agent_mesh/envelope.hpp"

#include <array>
#include <boost/json.hpp>

#include "agent_mesh/json.hpp"
#include "agent_mesh/replay_cache.hpp"
#include "json_fields.hpp"

namespace agent_mesh {
namespace {

constexpr std::array<std::string_view, 8> kMsgTypeNames{
    "request", "stream_request", "response", "error", "stream_chunk", "stream_end", "cancel", "handshake"};

// Noise messages are at most 65,535 bytes (Noise §3); base64url of that is 87,380 characters.
constexpr std::size_t kMaxNoiseMessageBytes = 65535;

using detail::FieldReader;

Status parse_handshake_payload_into(const boost::json::value& payload, HandshakePayload& out) {
  if (!payload.is_object()) return fail(Errc::bad_request, "handshake payload must be an object");
  FieldReader fields(payload.as_object(), "handshake payload");
  AGENT_MESH_TRY(fields.reject_unknown({"step", "noise"}));
  std::int64_t step = 0;
  AGENT_MESH_TRY(fields.required_integer("step", step));
  if (step != 1 && step != 2) return fail(Errc::bad_request, "handshake payload: step must be 1 or 2");
  std::string_view noise;
  AGENT_MESH_TRY(fields.required_string("noise", noise));
  if (noise.empty()) return fail(Errc::bad_request, "handshake payload: noise must not be empty");
  if (noise.size() > base64url_encoded_size(kMaxNoiseMessageBytes)) {
    return fail(Errc::bad_request, "handshake payload: noise is longer than a Noise message (65,535 bytes)");
  }
  auto bytes = base64url_decode(noise);
  if (!bytes) return fail(Errc::bad_request, "handshake payload: noise: " + bytes.error().message);
  out.step = static_cast<int>(step);
  out.noise = std::move(bytes).value();
  return {};
}

Result<AgentId> parse_agent_id_field(std::string_view name, std::string_view text) {
  auto id = AgentId::parse(text);
  if (!id) return fail(Errc::bad_request, std::string(name) + ": " + id.error().message);
  return id;
}

Result<Uuid> parse_uuid_field(std::string_view name, std::string_view text) {
  auto id = Uuid::parse(text);
  if (!id) return fail(Errc::bad_request, std::string(name) + ": " + id.error().message);
  return id;
}

// Which of in_reply_to is required (true) or forbidden (false), per §3 and §5.
bool needs_in_reply_to(MsgType type, int handshake_step) {
  if (type == MsgType::handshake) return handshake_step == 2;
  return is_reply(type) || type == MsgType::cancel;
}

}  // namespace

std::string_view to_string(MsgType type) noexcept { return kMsgTypeNames[static_cast<std::size_t>(type)]; }

std::optional<MsgType> msg_type_from_string(std::string_view text) noexcept {
  for (std::size_t i = 0; i < kMsgTypeNames.size(); ++i) {
    if (kMsgTypeNames[i] == text) return static_cast<MsgType>(i);
  }
  return std::nullopt;
}

bool is_reply(MsgType type) noexcept {
  return type == MsgType::response || type == MsgType::error || type == MsgType::stream_chunk ||
         type == MsgType::stream_end;
}

Result<Envelope> Envelope::parse(std::string_view frame, std::size_t max_bytes) {
  auto parsed = json::parse_ijson(frame, {.max_bytes = max_bytes});
  if (!parsed) return std::move(parsed).error();
  if (!parsed->is_object()) return fail(Errc::bad_request, "envelope must be a JSON object");
  const boost::json::object& object = parsed->as_object();
  FieldReader fields(object, "envelope");
  AGENT_MESH_TRY(fields.reject_unknown({"id", "from", "to", "msg_type", "in_reply_to", "timestamp", "encrypted",
                                        "sid", "n", "payload", "signature"}));
  // Optional members are omitted, never null (§1); no envelope member may be null.
  for (const auto& member : object) {
    if (member.value().is_null()) {
      return fail(Errc::bad_request, "envelope: " + detail::clip(member.key()) + " must not be null");
    }
  }

  Envelope env;
  std::string_view text;
  AGENT_MESH_TRY(fields.required_string("id", text));
  auto id = parse_uuid_field("id", text);
  if (!id) return std::move(id).error();
  env.id = *id;

  AGENT_MESH_TRY(fields.required_string("from", text));
  auto from = parse_agent_id_field("from", text);
  if (!from) return std::move(from).error();
  env.from = std::move(from).value();

  AGENT_MESH_TRY(fields.required_string("to", text));
  auto to = parse_agent_id_field("to", text);
  if (!to) return std::move(to).error();
  env.to = std::move(to).value();

  AGENT_MESH_TRY(fields.required_string("msg_type", text));
  const auto type = msg_type_from_string(text);
  if (!type) return fail(Errc::bad_request, "envelope: unknown msg_type \"" + detail::clip(text) + "\"");
  env.msg_type = *type;

  AGENT_MESH_TRY(fields.required_integer("timestamp", env.timestamp));
  if (env.timestamp < 0) return fail(Errc::bad_request, "envelope: timestamp must not be negative");

  bool has_encrypted = false;
  AGENT_MESH_TRY(fields.optional_bool("encrypted", env.encrypted, has_encrypted));
  // "encrypted": true on encrypted envelopes, omitted otherwise (§3): false is a second spelling.
  if (has_encrypted && !env.encrypted) {
    return fail(Errc::bad_request, "envelope: encrypted must be true or omitted");
  }

  const boost::json::value* payload = object.if_contains("payload");
  if (payload == nullptr) return fail(Errc::bad_request, "envelope: missing member \"payload\"");
  if (payload->is_null()) return fail(Errc::bad_request, "envelope: payload must not be null");

  const boost::json::value* signature = object.if_contains("signature");
  const boost::json::value* sid = object.if_contains("sid");
  const boost::json::value* n = object.if_contains("n");

  if (env.encrypted) {
    if (env.msg_type == MsgType::handshake) {
      return fail(Errc::bad_request, "envelope: handshake envelopes are never encrypted (§5)");
    }
    if (signature != nullptr) {
      return fail(Errc::bad_request, "envelope: encrypted envelopes must not carry a signature (§3)");
    }
    if (sid == nullptr) return fail(Errc::bad_request, "envelope: encrypted envelopes need \"sid\"");
    if (n == nullptr) return fail(Errc::bad_request, "envelope: encrypted envelopes need \"n\"");
    AGENT_MESH_TRY(fields.required_string("sid", text));
    SessionId session{};
    if (auto decoded = base64url_decode_exact(text, session); !decoded) {
      return fail(Errc::bad_request, "envelope: sid must be base64url of 16 bytes: " + decoded.error().message);
    }
    env.sid = session;
    std::int64_t counter = 0;
    AGENT_MESH_TRY(fields.required_integer("n", counter));
    if (counter < 0) return fail(Errc::bad_request, "envelope: n must not be negative (counters start at 0)");
    env.n = static_cast<std::uint64_t>(counter);
    if (!payload->is_string()) {
      return fail(Errc::bad_request, "envelope: the payload of an encrypted envelope must be a base64url string");
    }
    auto ciphertext = base64url_decode(payload->as_string());
    if (!ciphertext) return fail(Errc::bad_request, "envelope: payload: " + ciphertext.error().message);
    env.ciphertext = std::move(ciphertext).value();
  } else {
    if (sid != nullptr) return fail(Errc::bad_request, "envelope: sid is only allowed on encrypted envelopes");
    if (n != nullptr) return fail(Errc::bad_request, "envelope: n is only allowed on encrypted envelopes");
    if (signature == nullptr) {
      return fail(Errc::bad_request, "envelope: plaintext and handshake envelopes must be signed");
    }
    AGENT_MESH_TRY(fields.required_string("signature", text));
    Signature sig{};
    if (auto decoded = base64url_decode_exact(text, sig); !decoded) {
      return fail(Errc::bad_request, "envelope: signature must be base64url of 64 bytes: " + decoded.error().message);
    }
    env.signature = sig;
    env.payload = *payload;
  }

  int handshake_step = 0;
  if (env.msg_type == MsgType::handshake) {
    HandshakePayload handshake;
    AGENT_MESH_TRY(parse_handshake_payload_into(env.payload, handshake));
    handshake_step = handshake.step;
  }

  const boost::json::value* in_reply_to = object.if_contains("in_reply_to");
  const bool wants_reply_to = needs_in_reply_to(env.msg_type, handshake_step);
  if (in_reply_to == nullptr && wants_reply_to) {
    return fail(Errc::bad_request, std::string("envelope: ") + std::string(to_string(env.msg_type)) +
                                       (handshake_step == 2 ? " step 2" : "") + " needs \"in_reply_to\"");
  }
  if (in_reply_to != nullptr && !wants_reply_to) {
    return fail(Errc::bad_request, std::string("envelope: ") + std::string(to_string(env.msg_type)) +
                                       (handshake_step == 1 ? " step 1" : "") + " must not have \"in_reply_to\"");
  }
  if (in_reply_to != nullptr) {
    AGENT_MESH_TRY(fields.required_string("in_reply_to", text));
    auto reply_to = parse_uuid_field("in_reply_to", text);
    if (!reply_to) return std::move(reply_to).error();
    env.in_reply_to = *reply_to;
  }
  return env;
}

boost::json::object Envelope::to_json(bool with_payload, bool with_signature) const {
  boost::json::object out;
  out.reserve(11);
  out["id"] = id.to_string();
  out["from"] = from.str();
  out["to"] = to.str();
  out["msg_type"] = to_string(msg_type);
  if (in_reply_to) out["in_reply_to"] = in_reply_to->to_string();
  out["timestamp"] = timestamp;
  if (encrypted) {
    out["encrypted"] = true;
    if (sid) out["sid"] = base64url_encode(*sid);
    if (n) out["n"] = static_cast<std::int64_t>(*n);
    if (with_payload) out["payload"] = base64url_encode(ciphertext);
  } else if (with_payload) {
    out["payload"] = payload;
  }
  if (with_signature && signature && !encrypted) out["signature"] = base64url_encode(*signature);
  return out;
}

std::string Envelope::serialize() const { return json::serialize_jcs(to_json()); }

std::string Envelope::signing_input() const { return json::serialize_jcs(to_json(true, false)); }

std::string Envelope::associated_data() const { return json::serialize_jcs(to_json(false, false)); }

void Envelope::sign(const KeyPair& key) {
  if (encrypted) result_misuse("Envelope::sign on an encrypted envelope");
  if (key.agent_id() != from) result_misuse("Envelope::sign with a key that is not `from`");
  signature = key.sign(Purpose::envelope, as_bytes(signing_input()));
}

Status Envelope::verify() const {
  if (encrypted) return fail(Errc::bad_request, "envelope: encrypted envelopes carry no signature");
  if (!signature) return fail(Errc::bad_request, "envelope: missing signature");
  auto verdict = verify_signature(from, Purpose::envelope, as_bytes(signing_input()), *signature);
  if (!verdict) return fail(Errc::bad_request, "envelope: signature does not verify for `from`");
  return {};
}

Result<HandshakePayload> Envelope::handshake_payload() const {
  if (msg_type != MsgType::handshake) return fail(Errc::bad_request, "envelope is not a handshake");
  HandshakePayload out;
  AGENT_MESH_TRY(parse_handshake_payload_into(payload, out));
  return out;
}

Status check_addressed_to(const Envelope& envelope, const AgentId& self) {
  if (envelope.to != self) return fail(Errc::bad_request, "envelope: `to` is not this agent");
  return {};
}

Status FreshnessPolicy::check(const Envelope& envelope, std::int64_t now_ms) const {
  if (!envelope.is_signed()) return {};
  // "More than" 2 min ahead / 10 min behind is dropped (§3): the bounds themselves are accepted.
  if (envelope.timestamp > now_ms + max_future_ms) {
    return fail(Errc::expired, "envelope: timestamp is " + std::to_string(envelope.timestamp - now_ms) +
                                   " ms in the future (limit " + std::to_string(max_future_ms) + " ms)");
  }
  if (envelope.timestamp < now_ms - max_age_ms) {
    return fail(Errc::expired, "envelope: timestamp is " + std::to_string(now_ms - envelope.timestamp) +
                                   " ms old (limit " + std::to_string(max_age_ms) + " ms)");
  }
  return {};
}

Result<Envelope> receive_envelope(std::string_view frame, const AgentId& self, std::int64_t now_ms,
                                  const FreshnessPolicy& freshness, ReplayCache& replay, std::size_t max_bytes) {
  auto envelope = Envelope::parse(frame, max_bytes);
  if (!envelope) return envelope;
  AGENT_MESH_TRY(check_addressed_to(*envelope, self));
  if (envelope->is_signed()) {
    // Cheap checks first: the clock before the ~50 µs signature verification.
    AGENT_MESH_TRY(freshness.check(*envelope, now_ms));
    AGENT_MESH_TRY(envelope->verify());
    // Only verified envelopes enter the cache, so nobody can poison it with forged IDs.
    AGENT_MESH_TRY(replay.remember(envelope->from, envelope->id, envelope->timestamp, now_ms));
  }
  return envelope;
}

// ---- §4 bodies ----

bool is_valid_capability_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > limits::max_capability_name) return false;
  for (const char c : name) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Result<Body> parse_body(MsgType type, const boost::json::value& payload) {
  const std::string context = std::string(to_string(type)) + " body";
  if (!payload.is_object()) return fail(Errc::bad_request, context + " must be a JSON object");
  FieldReader fields(payload.as_object(), context);
  switch (type) {
    case MsgType::request:
    case MsgType::stream_request: {
      AGENT_MESH_TRY(fields.reject_unknown({"capability", "body", "timeout_ms"}));
      RequestBody body;
      std::string_view capability;
      AGENT_MESH_TRY(fields.required_string("capability", capability));
      if (!is_valid_capability_name(capability)) {
        return fail(Errc::bad_request, context + ": capability \"" + detail::clip(capability) +
                                           "\" must match [A-Za-z0-9_-]{1,54}");
      }
      body.capability = std::string(capability);
      AGENT_MESH_TRY(fields.required_any("body", body.body));
      std::int64_t timeout = 0;
      bool has_timeout = false;
      AGENT_MESH_TRY(fields.optional_integer("timeout_ms", timeout, has_timeout));
      if (has_timeout) {
        if (timeout <= 0) return fail(Errc::bad_request, context + ": timeout_ms must be positive");
        body.timeout_ms = timeout;
      }
      return Body{std::move(body)};
    }
    case MsgType::response: {
      AGENT_MESH_TRY(fields.reject_unknown({"body"}));
      ResponseBody body;
      AGENT_MESH_TRY(fields.required_any("body", body.body));
      return Body{std::move(body)};
    }
    case MsgType::error: {
      AGENT_MESH_TRY(fields.reject_unknown({"code", "message", "retry_after_ms"}));
      ErrorBody body;
      std::string_view code;
      AGENT_MESH_TRY(fields.required_string("code", code));
      const auto errc = errc_from_string(code);
      if (!errc) return fail(Errc::bad_request, context + ": unknown error code \"" + detail::clip(code) + "\"");
      body.code = *errc;
      std::string_view message;
      AGENT_MESH_TRY(fields.required_string("message", message));
      body.message = std::string(message);
      std::int64_t retry = 0;
      bool has_retry = false;
      AGENT_MESH_TRY(fields.optional_integer("retry_after_ms", retry, has_retry));
      if (has_retry) {
        if (retry < 0) return fail(Errc::bad_request, context + ": retry_after_ms must not be negative");
        body.retry_after_ms = retry;
      }
      return Body{std::move(body)};
    }
    case MsgType::stream_chunk: {
      AGENT_MESH_TRY(fields.reject_unknown({"seq", "body"}));
      StreamChunkBody body;
      AGENT_MESH_TRY(fields.required_integer("seq", body.seq));
      if (body.seq < 0) return fail(Errc::bad_request, context + ": seq must not be negative");
      AGENT_MESH_TRY(fields.required_any("body", body.body));
      return Body{std::move(body)};
    }
    case MsgType::stream_end: {
      AGENT_MESH_TRY(fields.reject_unknown({"seq"}));
      StreamEndBody body;
      AGENT_MESH_TRY(fields.required_integer("seq", body.seq));
      if (body.seq < 0) return fail(Errc::bad_request, context + ": seq must not be negative");
      return Body{body};
    }
    case MsgType::cancel: {
      AGENT_MESH_TRY(fields.reject_unknown({}));
      return Body{CancelBody{}};
    }
    case MsgType::handshake: break;
  }
  return fail(Errc::bad_request, "handshake envelopes carry no §4 body");
}

boost::json::value body_to_json(const Body& body) {
  boost::json::object out;
  std::visit(
      [&out](const auto& b) {
        using T = std::decay_t<decltype(b)>;
        if constexpr (std::is_same_v<T, RequestBody>) {
          out["capability"] = b.capability;
          out["body"] = b.body;
          if (b.timeout_ms) out["timeout_ms"] = *b.timeout_ms;
        } else if constexpr (std::is_same_v<T, ResponseBody>) {
          out["body"] = b.body;
        } else if constexpr (std::is_same_v<T, ErrorBody>) {
          out["code"] = to_string(b.code);
          out["message"] = b.message;
          if (b.retry_after_ms) out["retry_after_ms"] = *b.retry_after_ms;
        } else if constexpr (std::is_same_v<T, StreamChunkBody>) {
          out["seq"] = b.seq;
          out["body"] = b.body;
        } else if constexpr (std::is_same_v<T, StreamEndBody>) {
          out["seq"] = b.seq;
        }
      },
      body);
  return out;
}

}  // namespace agent_mesh
