// The A2A view of a registry card (registry.md "A2A view"):
//   GET /api/v1/agents/{agent_id}/agent-card.json → an A2A 1.0 AgentCard (a2a.proto, package
//   lf.a2a.v1, in its ProtoJSON form), with ETag and Cache-Control.
// Pure: the caller passes the stored card, the relay's live view and the registry's settings.
//
// What is rendered, member by member (A2A 1.0 REQUIRED fields are always present and non-empty,
// since ProtoJSON drops empty strings and lists, and `toJSON(fromJSON(card))` must give the card
// back unchanged):
//   name                 the card's name.
//   description          the card's description; when it has none (or an empty one), its name
//                        (A2A requires a description).
//   version              metadata.version if it is a non-empty string, else "0.0.0".
//   supportedInterfaces  [{url: relay_url, protocolBinding: "urn:agent-mesh:binding:v1",
//                        protocolVersion: "1.0"}]: agents are reached through the relay with the
//                        agent-mesh protocol; protocolVersion (REQUIRED in 1.0) names the A2A
//                        version whose card format this is.
//   provider             metadata.provider when it is an object whose `organization` is a
//                        non-empty string and whose `url` is an http(s) URL (the owner says who
//                        provides the agent, as it says its name); otherwise the registry-level
//                        provider when configured (the operator's organization and URL);
//                        otherwise omitted (provider is optional in A2A 1.0).
//   capabilities         {streaming: true, pushNotifications: false, extensions: [{uri:
//                        "urn:agent-mesh:ext:identity:v1", params: {agentId, noise:
//                        "Noise_IK_25519_ChaChaPoly_BLAKE2b", online, lastSeen?, capabilitySchemas}}]}
//                        lastSeen (RFC 3339) is omitted when unknown; capabilitySchemas maps every
//                        capability name to {inputSchema?, outputSchema?} as registered.
//   securitySchemes      exactly {"bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer"}}}.
//   defaultInputModes, defaultOutputModes   ["application/json"].
//   skills               one per capability, in card order: {id: name, name, description (the
//                        capability's, else its name), tags: [name]}.
//
// The body is JCS (RFC 8785), so the same card always gives the same bytes and the same ETag.
#pragma once

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "agent_mesh/result.hpp"

namespace agent_mesh::registry {

inline constexpr std::string_view kA2aBinding = "urn:agent-mesh:binding:v1";
inline constexpr std::string_view kA2aIdentityExtension = "urn:agent-mesh:ext:identity:v1";
inline constexpr std::string_view kA2aProtocolVersion = "1.0";
inline constexpr std::string_view kA2aContentType = "application/json";
// The view carries liveness (online, lastSeen), so caches keep it briefly, and only the client
// that was allowed to see it (`private`: never a shared cache, the card is group-scoped). A client
// revalidates with If-None-Match after 30 s and gets 304 while nothing changed.
inline constexpr std::string_view kA2aCacheControl = "private, max-age=30";

struct A2aProvider {
  std::string organization;
  std::string url;
};

struct A2aCardInput {
  std::string agent_id;
  std::string name;
  std::optional<std::string> description;
  // The registered capabilities as stored: [{name, description?, input_schema?, output_schema?}].
  boost::json::array capabilities;
  std::optional<boost::json::object> metadata;
  bool online = false;
  std::optional<std::string> last_seen;  // RFC 3339 (format_rfc3339_ms), as the REST resource shows it
  std::string relay_url;                 // the relay clients dial (GET /api/v1/info's relay_url)
  std::optional<A2aProvider> registry_provider;  // fallback for `provider`, from configuration
};

struct A2aCardView {
  std::string body;  // JCS text of the A2A card
  std::string etag;  // strong, quoted
  std::string cache_control = std::string(kA2aCacheControl);
};

// The A2A card as a JSON object. Error: Errc::internal naming the defect when the stored card
// cannot make a valid A2A card (no name, no capabilities, a capability without a string name,
// no relay URL): stored cards were validated at registration, so this is corruption or a
// misconfigured registry, not client input.
[[nodiscard]] Result<boost::json::object> a2a_card_json(const A2aCardInput& input);

// a2a_card_json serialised with JCS, with its ETag and Cache-Control.
[[nodiscard]] Result<A2aCardView> render_a2a_card(const A2aCardInput& input);

// Strong ETag of a body: "\"" + base64url(BLAKE2b-128(body)) + "\"" (24 characters in all).
[[nodiscard]] std::string strong_etag(std::string_view body);

// If-None-Match evaluation (RFC 9110 §13.1.2, weak comparison): true when the header is "*" or
// lists `etag` (with or without a W/ prefix), i.e. the answer is 304 Not Modified.
[[nodiscard]] bool etag_matches(std::string_view if_none_match, std::string_view etag) noexcept;

}  // namespace agent_mesh::registry
