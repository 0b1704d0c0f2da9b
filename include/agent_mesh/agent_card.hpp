// The signed registration body of an Agent Card (registry.md "Agent cards"):
//   {agent_id, group_id, name, description?, capabilities: [{name, description?, input_schema?,
//    output_schema?}], metadata?, timestamp, signature}
// `signature` has purpose `card` and covers JCS of the other members as received (protocol §1).
// The registry adds owner_id, registered_at, updated_at, online and last_seen to the stored
// resource; those are not part of what the agent signs and are not handled here.
//
// Which members are optional (the spec lists them all without saying): agent_id, group_id, name,
// capabilities, timestamp and signature are required, since the registry cannot file, show or
// authorise a card without them. description (card and capability), input_schema, output_schema and
// metadata are optional: an agent may have nothing to say there. Optional members are omitted,
// never null (protocol §1). An empty description string is kept as given (it is signed as received).
//
// Parsing is strict (unknown members rejected at every level, metadata and schema contents aside),
// so the JCS rebuilt from the parsed card is the JCS of the card as received and verify() can
// rebuild the signed message.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/identity.hpp"
#include "agent_mesh/limits.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh::limits {

// A card's `name` is a display name (web UI lists, A2A `name`, search results): 128 bytes shows in
// one line and bounds what every discovery listing repeats.
inline constexpr std::size_t max_card_name_bytes = 128;
// Descriptions (card and capability) are prose indexed by full-text search (registry.md, FTS5) and
// shown to people and to LLMs choosing a tool: 4 KiB is several paragraphs, and bounds the index.
inline constexpr std::size_t max_card_description_bytes = 4096;
// Capabilities per card: 64 tools is more than any agent exposes usefully (LLM tool lists degrade
// well before that), and each becomes an A2A skill and an FTS row.
inline constexpr std::size_t max_card_capabilities = 64;
// The whole card text: 64 capabilities with modest JSON Schemas and metadata fit in 256 KiB, a
// quarter of the registry's 1 MiB request bound (registry.md), so a `{setup_key, card}` or
// `{rotation, card}` body always fits around it.
inline constexpr std::size_t max_card_bytes = 256 * 1024;

}  // namespace agent_mesh::limits

namespace agent_mesh {

struct CardCapability {
  std::string name;  // protocol §4 capability name, unique within the card
  std::optional<std::string> description;
  // JSON Schemas: an object or a boolean (JSON Schema 2020-12 §4.3), kept as received.
  std::optional<boost::json::value> input_schema;
  std::optional<boost::json::value> output_schema;

  [[nodiscard]] boost::json::object to_json() const;
  friend bool operator==(const CardCapability&, const CardCapability&) = default;
};

struct AgentCard {
  AgentId agent_id;
  Uuid group_id;
  std::string name;
  std::optional<std::string> description;
  std::vector<CardCapability> capabilities;
  // Free-form object (A2A takes metadata.version); its contents are not checked beyond I-JSON.
  std::optional<boost::json::object> metadata;
  std::int64_t timestamp = 0;  // Unix ms, not negative
  std::optional<Signature> signature;

  // Strict parse of the card text: I-JSON within limits::max_card_bytes (as received and in JCS
  // form, which can be longer: 1e15 is written out in full), unknown members rejected,
  // group_id a UUID v4, name non-empty, the size bounds above, at least one capability, capability
  // names valid (protocol §4) and unique, signature required and canonical base64url of 64 bytes.
  // Errors: Errc::bad_request naming the member, e.g. "card: capabilities[2].name: ...";
  // Errc::too_large for the text bound.
  [[nodiscard]] static Result<AgentCard> parse(std::string_view text);
  // The same checks on an already parsed value (the `card` member of a registry request body, whose
  // text the caller has bounded).
  [[nodiscard]] static Result<AgentCard> from_json(const boost::json::value& value);

  // Checks what parsing checks except the signature's presence (for cards built in code before
  // sign()). Error: bad_request.
  [[nodiscard]] Status validate() const;

  // JCS of the card without `signature`: the message the signature covers.
  [[nodiscard]] std::string signing_input() const;
  // Sets `signature` (purpose `card`). Precondition: key.agent_id() == agent_id (aborts otherwise).
  void sign(const KeyPair& key);
  // The signature is present and verifies for agent_id with purpose `card`. Error: bad_request.
  [[nodiscard]] Status verify() const;

  // The capability with this name, or nullptr.
  [[nodiscard]] const CardCapability* find_capability(std::string_view capability_name) const noexcept;

  [[nodiscard]] boost::json::object to_json(bool with_signature = true) const;
  // JCS text of to_json().
  [[nodiscard]] std::string serialize() const;

  friend bool operator==(const AgentCard&, const AgentCard&) = default;
};

}  // namespace agent_mesh
