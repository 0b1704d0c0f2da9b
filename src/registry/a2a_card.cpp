#include "registry/a2a_card.hpp"

#include <sodium.h>

#include <array>
#include <boost/json.hpp>
#include <unordered_set>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/json.hpp"
#include "agent_mesh/noise.hpp"
#include "core/json_fields.hpp"
#include "core/sodium_init.hpp"

namespace agent_mesh::registry {
namespace {

namespace json = boost::json;

constexpr std::string_view kDefaultVersion = "0.0.0";
constexpr std::size_t kEtagDigestBytes = 16;

Error corrupt(std::string_view what) {
  return fail(Errc::internal, "A2A view of the card: " + std::string(what));
}

const json::string* non_empty_string(const json::object& object, std::string_view key) {
  const json::value* value = object.if_contains(key);
  if (value == nullptr || !value->is_string() || value->get_string().empty()) return nullptr;
  return &value->get_string();
}

bool is_http_url(std::string_view url) {
  for (const std::string_view scheme : {std::string_view("https://"), std::string_view("http://")}) {
    if (url.starts_with(scheme) && url.size() > scheme.size()) return true;
  }
  return false;
}

std::optional<A2aProvider> provider_from_metadata(const std::optional<json::object>& metadata) {
  if (!metadata) return std::nullopt;
  const json::value* provider = metadata->if_contains("provider");
  if (provider == nullptr || !provider->is_object()) return std::nullopt;
  const json::string* organization = non_empty_string(provider->get_object(), "organization");
  const json::string* url = non_empty_string(provider->get_object(), "url");
  if (organization == nullptr || url == nullptr || !is_http_url(*url)) return std::nullopt;
  return A2aProvider{std::string(*organization), std::string(*url)};
}

std::string_view card_version(const std::optional<json::object>& metadata) {
  if (metadata) {
    if (const json::string* version = non_empty_string(*metadata, "version")) return *version;
  }
  return kDefaultVersion;
}

json::array json_media_types() { return json::array{json::string(kA2aContentType)}; }

}  // namespace

Result<json::object> a2a_card_json(const A2aCardInput& input) {
  if (input.name.empty()) return corrupt("the card has no name");
  if (input.agent_id.empty()) return corrupt("the card has no agent_id");
  if (input.relay_url.empty()) return corrupt("the registry has no relay URL configured");
  if (input.capabilities.empty()) return corrupt("the card has no capabilities");

  json::array skills;
  json::object schemas;
  std::unordered_set<std::string_view> seen;
  for (std::size_t i = 0; i < input.capabilities.size(); ++i) {
    const std::string where = "capabilities[" + std::to_string(i) + "]";
    const json::value& entry = input.capabilities[i];
    if (!entry.is_object()) return corrupt(where + " is not an object");
    const json::object& capability = entry.get_object();
    const json::string* name = non_empty_string(capability, "name");
    if (name == nullptr) return corrupt(where + ".name is missing or not a non-empty string");
    if (!seen.insert(std::string_view(*name)).second) {
      return corrupt(where + ".name \"" + detail::clip(*name) + "\" is listed twice");
    }
    const json::string* description = non_empty_string(capability, "description");

    json::object skill;
    skill["id"] = *name;
    skill["name"] = *name;
    skill["description"] = description != nullptr ? *description : *name;
    skill["tags"] = json::array{*name};
    skills.push_back(std::move(skill));

    json::object schema;
    if (const json::value* in = capability.if_contains("input_schema"); in != nullptr && !in->is_null()) {
      schema["inputSchema"] = *in;
    }
    if (const json::value* out = capability.if_contains("output_schema"); out != nullptr && !out->is_null()) {
      schema["outputSchema"] = *out;
    }
    schemas[*name] = std::move(schema);
  }

  json::object params;
  params["agentId"] = input.agent_id;
  params["noise"] = noise::protocol_name(noise::Pattern::IK);
  params["online"] = input.online;
  if (input.last_seen && !input.last_seen->empty()) params["lastSeen"] = *input.last_seen;
  params["capabilitySchemas"] = std::move(schemas);

  json::object extension;
  extension["uri"] = kA2aIdentityExtension;
  extension["params"] = std::move(params);

  json::object capabilities;
  capabilities["streaming"] = true;
  capabilities["pushNotifications"] = false;
  capabilities["extensions"] = json::array{std::move(extension)};

  json::object relay_interface;
  relay_interface["url"] = input.relay_url;
  relay_interface["protocolBinding"] = kA2aBinding;
  relay_interface["protocolVersion"] = kA2aProtocolVersion;

  json::object bearer_scheme;
  bearer_scheme["scheme"] = "Bearer";
  json::object bearer;
  bearer["httpAuthSecurityScheme"] = std::move(bearer_scheme);
  json::object security_schemes;
  security_schemes["bearer"] = std::move(bearer);

  json::object card;
  card["name"] = input.name;
  card["description"] = input.description && !input.description->empty() ? *input.description : input.name;
  card["version"] = card_version(input.metadata);
  card["supportedInterfaces"] = json::array{std::move(relay_interface)};
  std::optional<A2aProvider> provider = provider_from_metadata(input.metadata);
  if (!provider && input.registry_provider && !input.registry_provider->organization.empty() &&
      is_http_url(input.registry_provider->url)) {
    provider = input.registry_provider;
  }
  if (provider) {
    json::object provider_json;
    provider_json["organization"] = provider->organization;
    provider_json["url"] = provider->url;
    card["provider"] = std::move(provider_json);
  }
  card["capabilities"] = std::move(capabilities);
  card["securitySchemes"] = std::move(security_schemes);
  card["defaultInputModes"] = json_media_types();
  card["defaultOutputModes"] = json_media_types();
  card["skills"] = std::move(skills);
  return card;
}

Result<A2aCardView> render_a2a_card(const A2aCardInput& input) {
  auto card = a2a_card_json(input);
  if (!card.ok()) return std::move(card).error();
  A2aCardView view;
  view.body = agent_mesh::json::serialize_jcs(json::value(std::move(card).value()));
  view.etag = strong_etag(view.body);
  return view;
}

std::string strong_etag(std::string_view body) {
  detail::ensure_sodium();
  std::array<std::uint8_t, kEtagDigestBytes> digest{};
  crypto_generichash(digest.data(), digest.size(), detail::data_or_empty(as_bytes(body)), body.size(), nullptr, 0);
  return "\"" + base64url_encode(digest) + "\"";
}

bool etag_matches(std::string_view if_none_match, std::string_view etag) noexcept {
  const auto opaque = [](std::string_view tag) {
    if (tag.starts_with("W/")) tag.remove_prefix(2);
    return tag;
  };
  const std::string_view wanted = opaque(etag);
  std::size_t pos = 0;
  while (pos <= if_none_match.size()) {
    std::size_t end = if_none_match.find(',', pos);
    if (end == std::string_view::npos) end = if_none_match.size();
    std::string_view item = if_none_match.substr(pos, end - pos);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (item == "*") return true;
    if (!item.empty() && opaque(item) == wanted) return true;
    pos = end + 1;
  }
  return false;
}

}  // namespace agent_mesh::registry
