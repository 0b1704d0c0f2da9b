#include "agent_mesh/agent_card.hpp"

#include <boost/json.hpp>
#include <unordered_set>

#include "agent_mesh/envelope.hpp"
#include "agent_mesh/json.hpp"
#include "json_fields.hpp"

namespace agent_mesh {
namespace {

using detail::FieldReader;

constexpr std::string_view kContext = "card";

std::string capability_context(std::size_t index) {
  return std::string(kContext) + ": capabilities[" + std::to_string(index) + "]";
}

// The value rules shared by parse() and validate(). `context` names the object ("card" or
// "card: capabilities[i]") at the start of messages.
Status check_name(std::string_view name) {
  if (name.empty()) return fail(Errc::bad_request, "card: name must not be empty");
  if (name.size() > limits::max_card_name_bytes) {
    return fail(Errc::bad_request, "card: name must be at most " + std::to_string(limits::max_card_name_bytes) +
                                       " bytes, got " + std::to_string(name.size()));
  }
  return {};
}

Status check_description(const std::string& context, std::string_view description) {
  if (description.size() > limits::max_card_description_bytes) {
    return fail(Errc::bad_request, context + ": description must be at most " +
                                       std::to_string(limits::max_card_description_bytes) + " bytes, got " +
                                       std::to_string(description.size()));
  }
  return {};
}

Status check_schema(const std::string& context, std::string_view member, const boost::json::value& schema) {
  // JSON Schema 2020-12 §4.3: a schema is an object or a boolean.
  if (!schema.is_object() && !schema.is_bool()) {
    return fail(Errc::bad_request, context + ": " + std::string(member) +
                                       " must be a JSON Schema (an object or a boolean)");
  }
  return {};
}

Status check_capability_count(std::size_t count) {
  if (count == 0) return fail(Errc::bad_request, "card: capabilities must list at least one capability");
  if (count > limits::max_card_capabilities) {
    return fail(Errc::bad_request, "card: capabilities has " + std::to_string(count) + " entries, more than the limit of " +
                                       std::to_string(limits::max_card_capabilities));
  }
  return {};
}

Status check_capability(std::size_t index, const CardCapability& capability,
                        std::unordered_set<std::string_view>& seen_names) {
  const std::string context = capability_context(index);
  if (!is_valid_capability_name(capability.name)) {
    return fail(Errc::bad_request, context + ".name: \"" + detail::clip(capability.name) +
                                       "\" is not a capability name ([A-Za-z0-9_-]{1,54})");
  }
  if (!seen_names.insert(capability.name).second) {
    return fail(Errc::bad_request, context + ".name: \"" + capability.name + "\" is listed twice");
  }
  if (capability.description) AGENT_MESH_TRY(check_description(context, *capability.description));
  if (capability.input_schema) AGENT_MESH_TRY(check_schema(context, "input_schema", *capability.input_schema));
  if (capability.output_schema) AGENT_MESH_TRY(check_schema(context, "output_schema", *capability.output_schema));
  return {};
}

Result<CardCapability> parse_capability(const boost::json::value& value, std::size_t index) {
  const std::string context = capability_context(index);
  if (!value.is_object()) return fail(Errc::bad_request, context + " must be an object");
  FieldReader fields(value.as_object(), context);
  AGENT_MESH_TRY(fields.reject_unknown({"name", "description", "input_schema", "output_schema"}));
  CardCapability capability;
  std::string_view text;
  AGENT_MESH_TRY(fields.required_string("name", text));
  capability.name = std::string(text);
  bool present = false;
  AGENT_MESH_TRY(fields.optional_string("description", text, present));
  if (present) capability.description = std::string(text);
  const boost::json::value* schema = nullptr;
  AGENT_MESH_TRY(fields.optional_non_null("input_schema", schema));
  if (schema != nullptr) capability.input_schema = *schema;
  AGENT_MESH_TRY(fields.optional_non_null("output_schema", schema));
  if (schema != nullptr) capability.output_schema = *schema;
  return capability;
}

}  // namespace

boost::json::object CardCapability::to_json() const {
  boost::json::object out;
  out["name"] = name;
  if (description) out["description"] = *description;
  if (input_schema) out["input_schema"] = *input_schema;
  if (output_schema) out["output_schema"] = *output_schema;
  return out;
}

Result<AgentCard> AgentCard::parse(std::string_view text) {
  auto parsed = json::parse_ijson(text, {.max_bytes = limits::max_card_bytes});
  if (!parsed) return fail(parsed.error().code, "card: " + parsed.error().message);
  return from_json(*parsed);
}

Result<AgentCard> AgentCard::from_json(const boost::json::value& value) {
  if (!value.is_object()) return fail(Errc::bad_request, "card must be a JSON object");
  const boost::json::object& object = value.as_object();
  FieldReader fields(object, kContext);
  AGENT_MESH_TRY(fields.reject_unknown({"agent_id", "group_id", "name", "description", "capabilities", "metadata",
                                        "timestamp", "signature"}));

  AgentCard card;
  std::string_view text;
  AGENT_MESH_TRY(fields.required_string("agent_id", text));
  auto agent = AgentId::parse(text);
  if (!agent) return fail(Errc::bad_request, "card: agent_id: " + agent.error().message);
  card.agent_id = std::move(agent).value();

  AGENT_MESH_TRY(fields.required_string("group_id", text));
  auto group = Uuid::parse(text);
  if (!group) return fail(Errc::bad_request, "card: group_id: " + group.error().message);
  card.group_id = *group;

  AGENT_MESH_TRY(fields.required_string("name", text));
  AGENT_MESH_TRY(check_name(text));
  card.name = std::string(text);

  bool present = false;
  AGENT_MESH_TRY(fields.optional_string("description", text, present));
  if (present) {
    AGENT_MESH_TRY(check_description(std::string(kContext), text));
    card.description = std::string(text);
  }

  const boost::json::array* capabilities = nullptr;
  AGENT_MESH_TRY(fields.required_array("capabilities", capabilities));
  AGENT_MESH_TRY(check_capability_count(capabilities->size()));
  card.capabilities.reserve(capabilities->size());
  std::unordered_set<std::string_view> seen_names;
  for (std::size_t i = 0; i < capabilities->size(); ++i) {
    auto capability = parse_capability((*capabilities)[i], i);
    if (!capability) return std::move(capability).error();
    card.capabilities.push_back(std::move(capability).value());
  }
  // After the vector stopped growing, so the names `seen_names` views stay put.
  for (std::size_t i = 0; i < card.capabilities.size(); ++i) {
    AGENT_MESH_TRY(check_capability(i, card.capabilities[i], seen_names));
  }

  const boost::json::object* metadata = nullptr;
  AGENT_MESH_TRY(fields.optional_object("metadata", metadata));
  if (metadata != nullptr) card.metadata = *metadata;

  AGENT_MESH_TRY(fields.required_integer("timestamp", card.timestamp));
  if (card.timestamp < 0) return fail(Errc::bad_request, "card: timestamp must not be negative");

  AGENT_MESH_TRY(fields.required_string("signature", text));
  Signature signature{};
  if (auto decoded = base64url_decode_exact(text, signature); !decoded) {
    return fail(Errc::bad_request, "card: signature must be base64url of 64 bytes: " + decoded.error().message);
  }
  card.signature = signature;
  // JCS can be longer than the text received (1e15 becomes 1000000000000000), and the
  // canonical form is what is signed, stored and served: bound that too.
  if (card.serialize().size() > limits::max_card_bytes) {
    return fail(Errc::too_large, "card: larger than " + std::to_string(limits::max_card_bytes) +
                                     " bytes in canonical (JCS) form");
  }
  return card;
}

Status AgentCard::validate() const {
  if (agent_id.empty()) return fail(Errc::bad_request, "card: agent_id is missing");
  AGENT_MESH_TRY(check_name(name));
  if (description) AGENT_MESH_TRY(check_description(std::string(kContext), *description));
  AGENT_MESH_TRY(check_capability_count(capabilities.size()));
  std::unordered_set<std::string_view> seen_names;
  for (std::size_t i = 0; i < capabilities.size(); ++i) {
    AGENT_MESH_TRY(check_capability(i, capabilities[i], seen_names));
  }
  if (timestamp < 0) return fail(Errc::bad_request, "card: timestamp must not be negative");
  // The parser enforces these through I-JSON; a card built in code must meet them too, or its JCS
  // would differ between languages (protocol §1).
  if (timestamp > limits::max_safe_integer) return fail(Errc::bad_request, "card: timestamp must be at most 2^53-1");
  if (serialize().size() > limits::max_card_bytes) {
    return fail(Errc::too_large, "card: larger than " + std::to_string(limits::max_card_bytes) +
                                     " bytes in canonical (JCS) form");
  }
  return {};
}

boost::json::object AgentCard::to_json(bool with_signature) const {
  boost::json::object out;
  out["agent_id"] = agent_id.str();
  out["group_id"] = group_id.to_string();
  out["name"] = name;
  if (description) out["description"] = *description;
  boost::json::array list;
  list.reserve(capabilities.size());
  for (const auto& capability : capabilities) list.emplace_back(capability.to_json());
  out["capabilities"] = std::move(list);
  if (metadata) out["metadata"] = *metadata;
  out["timestamp"] = timestamp;
  if (with_signature && signature) out["signature"] = base64url_encode(*signature);
  return out;
}

std::string AgentCard::signing_input() const { return json::serialize_jcs(to_json(false)); }

std::string AgentCard::serialize() const { return json::serialize_jcs(to_json()); }

void AgentCard::sign(const KeyPair& key) {
  // "never lets anyone register someone else's key" (registry.md): only the card's own key signs it.
  if (key.agent_id() != agent_id) result_misuse("AgentCard::sign with a key that is not agent_id");
  signature = key.sign(Purpose::card, as_bytes(signing_input()));
}

Status AgentCard::verify() const {
  if (!signature) return fail(Errc::bad_request, "card: missing signature");
  if (auto verdict = verify_signature(agent_id, Purpose::card, as_bytes(signing_input()), *signature); !verdict) {
    return fail(Errc::bad_request, "card: signature does not verify for agent_id (purpose card)");
  }
  return {};
}

const CardCapability* AgentCard::find_capability(std::string_view capability_name) const noexcept {
  for (const auto& capability : capabilities) {
    if (capability.name == capability_name) return &capability;
  }
  return nullptr;
}

}  // namespace agent_mesh
