#include "agent_mesh/key_lifecycle.hpp"

#include <boost/json.hpp>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/json.hpp"
#include "json_fields.hpp"

namespace agent_mesh {
namespace {

using detail::FieldReader;

// Reads a required agent ID member, errors prefixed "<context>: <name>: ".
Status read_agent_id(const FieldReader& fields, std::string_view context, std::string_view name, AgentId& out) {
  std::string_view text;
  AGENT_MESH_TRY(fields.required_string(name, text));
  auto id = AgentId::parse(text);
  if (!id) return fail(Errc::bad_request, std::string(context) + ": " + std::string(name) + ": " + id.error().message);
  out = std::move(id).value();
  return {};
}

// Reads a required signature member: canonical base64url of exactly 64 bytes (protocol §1), so a
// signature has one spelling.
Status read_signature(const FieldReader& fields, std::string_view context, std::string_view name, Signature& out) {
  std::string_view text;
  AGENT_MESH_TRY(fields.required_string(name, text));
  Signature signature{};
  if (auto decoded = base64url_decode_exact(text, signature); !decoded) {
    return fail(Errc::bad_request, std::string(context) + ": " + std::string(name) +
                                       " must be base64url of 64 bytes: " + decoded.error().message);
  }
  out = signature;
  return {};
}

Status read_timestamp(const FieldReader& fields, std::string_view context, std::string_view name,
                      std::int64_t& out) {
  AGENT_MESH_TRY(fields.required_integer(name, out));
  if (out < 0) return fail(Errc::bad_request, std::string(context) + ": " + std::string(name) + " must not be negative");
  return {};
}

Result<boost::json::value> parse_object_text(std::string_view text, std::string_view context) {
  auto parsed = json::parse_ijson(text, {.max_bytes = limits::max_key_lifecycle_object_bytes});
  if (!parsed) return fail(parsed.error().code, std::string(context) + ": " + parsed.error().message);
  return parsed;
}

}  // namespace

// ---- Revocation ----

Result<Revocation> Revocation::parse(std::string_view text, bool require_signature) {
  auto parsed = parse_object_text(text, "revocation");
  if (!parsed) return std::move(parsed).error();
  return from_json(*parsed, require_signature);
}

Result<Revocation> Revocation::from_json(const boost::json::value& value, bool require_signature) {
  constexpr std::string_view kContext = "revocation";
  if (!value.is_object()) return fail(Errc::bad_request, "revocation must be a JSON object");
  const boost::json::object& object = value.as_object();
  FieldReader fields(object, kContext);
  AGENT_MESH_TRY(fields.reject_unknown({"agent_id", "reason", "timestamp", "signature"}));

  Revocation revocation;
  AGENT_MESH_TRY(read_agent_id(fields, kContext, "agent_id", revocation.agent_id));
  std::string_view reason;
  AGENT_MESH_TRY(fields.required_string("reason", reason));
  if (reason.size() > limits::max_revocation_reason_bytes) {
    return fail(Errc::bad_request, "revocation: reason must be at most " +
                                       std::to_string(limits::max_revocation_reason_bytes) + " bytes, got " +
                                       std::to_string(reason.size()));
  }
  revocation.reason = std::string(reason);
  AGENT_MESH_TRY(read_timestamp(fields, kContext, "timestamp", revocation.timestamp));
  if (require_signature || object.contains("signature")) {
    Signature signature{};
    AGENT_MESH_TRY(read_signature(fields, kContext, "signature", signature));
    revocation.signature = signature;
  }
  return revocation;
}

boost::json::object Revocation::to_json(bool with_signature) const {
  boost::json::object out;
  out["agent_id"] = agent_id.str();
  out["reason"] = reason;
  out["timestamp"] = timestamp;
  if (with_signature && signature) out["signature"] = base64url_encode(*signature);
  return out;
}

std::string Revocation::signing_input() const { return json::serialize_jcs(to_json(false)); }

std::string Revocation::serialize() const { return json::serialize_jcs(to_json()); }

void Revocation::sign(const KeyPair& key) {
  // Only the key being revoked signs a self-signed revocation (protocol §7).
  if (key.agent_id() != agent_id) result_misuse("Revocation::sign with a key that is not agent_id");
  signature = key.sign(Purpose::revoke, as_bytes(signing_input()));
}

Status Revocation::verify() const {
  if (!signature) return fail(Errc::bad_request, "revocation: missing signature (an admin revocation has none)");
  if (auto verdict = verify_signature(agent_id, Purpose::revoke, as_bytes(signing_input()), *signature); !verdict) {
    return fail(Errc::bad_request, "revocation: signature does not verify for agent_id (purpose revoke)");
  }
  return {};
}

// ---- Rotation ----

Result<Rotation> Rotation::create(const KeyPair& old_key, const KeyPair& new_key, std::int64_t timestamp,
                                  std::int64_t grace_ms) {
  if (timestamp < 0 || timestamp > limits::max_safe_integer) {
    return fail(Errc::bad_request, "rotation: timestamp must be within 0..2^53-1");
  }
  if (grace_ms <= 0 || grace_ms > max_grace_ms) {
    return fail(Errc::bad_request, "rotation: the grace period must be positive and at most 7 days");
  }
  Rotation rotation;
  rotation.old_id = old_key.agent_id();
  rotation.new_id = new_key.agent_id();
  rotation.timestamp = timestamp;
  rotation.grace_until = timestamp + grace_ms;
  AGENT_MESH_TRY(rotation.check_window());
  rotation.sign(old_key, new_key);
  return rotation;
}

Result<Rotation> Rotation::parse(std::string_view text) {
  auto parsed = parse_object_text(text, "rotation");
  if (!parsed) return std::move(parsed).error();
  return from_json(*parsed);
}

Result<Rotation> Rotation::from_json(const boost::json::value& value) {
  constexpr std::string_view kContext = "rotation";
  if (!value.is_object()) return fail(Errc::bad_request, "rotation must be a JSON object");
  FieldReader fields(value.as_object(), kContext);
  AGENT_MESH_TRY(fields.reject_unknown({"old", "new", "timestamp", "grace_until", "signature_old", "signature_new"}));

  Rotation rotation;
  AGENT_MESH_TRY(read_agent_id(fields, kContext, "old", rotation.old_id));
  AGENT_MESH_TRY(read_agent_id(fields, kContext, "new", rotation.new_id));
  AGENT_MESH_TRY(read_timestamp(fields, kContext, "timestamp", rotation.timestamp));
  AGENT_MESH_TRY(fields.required_integer("grace_until", rotation.grace_until));
  AGENT_MESH_TRY(read_signature(fields, kContext, "signature_old", rotation.signature_old));
  AGENT_MESH_TRY(read_signature(fields, kContext, "signature_new", rotation.signature_new));
  // The window rules are structural: checking them here spares a receiver two signature checks on
  // an object that can never be valid.
  AGENT_MESH_TRY(rotation.check_window());
  return rotation;
}

Status Rotation::check_window() const {
  if (old_id.empty() || new_id.empty()) return fail(Errc::bad_request, "rotation: old and new must be agent IDs");
  if (old_id == new_id) return fail(Errc::bad_request, "rotation: old and new must be different agent IDs");
  if (timestamp < 0) return fail(Errc::bad_request, "rotation: timestamp must not be negative");
  if (grace_until <= timestamp) {
    return fail(Errc::bad_request, "rotation: grace_until must be later than timestamp");
  }
  // Both are non-negative here, so the difference cannot overflow.
  if (grace_until - timestamp > max_grace_ms) {
    return fail(Errc::bad_request, "rotation: grace_until must be at most 7 days (604800000 ms) after timestamp");
  }
  return {};
}

boost::json::object Rotation::to_json(bool with_signatures) const {
  boost::json::object out;
  out["old"] = old_id.str();
  out["new"] = new_id.str();
  out["timestamp"] = timestamp;
  out["grace_until"] = grace_until;
  if (with_signatures) {
    out["signature_old"] = base64url_encode(signature_old);
    out["signature_new"] = base64url_encode(signature_new);
  }
  return out;
}

std::string Rotation::signing_input() const { return json::serialize_jcs(to_json(false)); }

std::string Rotation::serialize() const { return json::serialize_jcs(to_json()); }

void Rotation::sign(const KeyPair& old_key, const KeyPair& new_key) {
  if (old_key.agent_id() != old_id) result_misuse("Rotation::sign with an old key that is not `old`");
  if (new_key.agent_id() != new_id) result_misuse("Rotation::sign with a new key that is not `new`");
  const std::string message = signing_input();
  signature_old = old_key.sign(Purpose::rotate, as_bytes(message));
  signature_new = new_key.sign(Purpose::rotate, as_bytes(message));
}

Status Rotation::verify() const {
  AGENT_MESH_TRY(check_window());
  const std::string message = signing_input();
  if (auto verdict = verify_signature(old_id, Purpose::rotate, as_bytes(message), signature_old); !verdict) {
    return fail(Errc::bad_request, "rotation: signature_old does not verify for old (purpose rotate)");
  }
  if (auto verdict = verify_signature(new_id, Purpose::rotate, as_bytes(message), signature_new); !verdict) {
    return fail(Errc::bad_request,
                "rotation: signature_new does not verify for new (purpose rotate; the new key must prove possession)");
  }
  return {};
}

}  // namespace agent_mesh
