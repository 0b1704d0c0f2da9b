// The A2A view of a card (registry.md "A2A view"). The golden card is also checked by the A2A SDK
// itself: tests/a2a/validate-card.mjs round-trips tests/a2a/golden-card.json through
// @a2a-js/sdk's AgentCard.fromJSON/toJSON. This test keeps that file equal to what the renderer
// produces; regenerate it with AGENT_MESH_UPDATE_GOLDEN=1 after an intended change.
#include "registry/a2a_card.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "agent_mesh/identity.hpp"
#include "agent_mesh/json.hpp"

namespace agent_mesh::registry {
namespace {

namespace bj = boost::json;

const std::string kGoldenPath = std::string(AGENT_MESH_VECTORS_DIR) + "/../a2a/golden-card.json";

std::string golden_agent_id() {
  const std::vector<std::uint8_t> seed(32, 0x01);
  return KeyPair::from_seed(seed).value().agent_id().str();
}

bj::value parse(std::string_view text) {
  auto value = json::parse_ijson(text);
  if (!value.ok()) throw std::runtime_error("bad JSON in test: " + value.error().message);
  return std::move(value).value();
}

A2aCardInput golden_input() {
  A2aCardInput input;
  input.agent_id = golden_agent_id();
  input.name = "Weather agent";
  input.description = "Forecasts for any city, from the national weather service.";
  input.capabilities = parse(R"([
    {"name": "forecast", "description": "Daily forecast for a city",
     "input_schema": {"type": "object", "properties": {"city": {"type": "string"},
                      "days": {"type": "integer", "minimum": 1, "maximum": 14}}, "required": ["city"]},
     "output_schema": {"type": "object", "properties": {"days": {"type": "array"}, "confidence": {"type": "number",
                       "maximum": 1.0, "multipleOf": 0.05}}}},
    {"name": "ping"}
  ])").as_array();
  input.metadata = parse(R"({"version": "1.2.0", "provider": {"organization": "Example Weather Co",
                             "url": "https://weather.example.com"}, "region": "eu-west"})").as_object();
  input.online = true;
  input.last_seen = "2026-11-26T18:47:01.123Z";
  input.relay_url = "wss://mesh.example.com/relay/ws";
  input.registry_provider = A2aProvider{"Example Mesh Operator", "https://mesh.example.com"};
  return input;
}

bj::object render_object(const A2aCardInput& input) {
  auto view = render_a2a_card(input);
  if (!view.ok()) throw std::runtime_error(view.error().describe());
  return parse(view->body).as_object();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(A2aCard, GoldenCardMatchesTheFileTheSdkChecks) {
  auto view = render_a2a_card(golden_input());
  ASSERT_TRUE(view.ok()) << view.error().describe();
  if (const char* update = std::getenv("AGENT_MESH_UPDATE_GOLDEN"); update != nullptr && std::string(update) == "1") {
    std::ofstream(kGoldenPath, std::ios::binary | std::ios::trunc) << view->body << "\n";
  }
  std::string golden = read_file(kGoldenPath);
  ASSERT_FALSE(golden.empty()) << "missing " << kGoldenPath;
  if (golden.back() == '\n') golden.pop_back();
  EXPECT_EQ(view->body, golden) << "regenerate with AGENT_MESH_UPDATE_GOLDEN=1 and rerun "
                                   "node tests/a2a/validate-card.mjs tests/a2a/golden-card.json";
}

TEST(A2aCard, GoldenCardContents) {
  const bj::object card = render_object(golden_input());
  const std::string id = golden_agent_id();
  const bj::value expected = parse(R"({
    "name": "Weather agent",
    "description": "Forecasts for any city, from the national weather service.",
    "version": "1.2.0",
    "supportedInterfaces": [{"url": "wss://mesh.example.com/relay/ws",
                             "protocolBinding": "urn:agent-mesh:binding:v1", "protocolVersion": "1.0"}],
    "provider": {"organization": "Example Weather Co", "url": "https://weather.example.com"},
    "capabilities": {"streaming": true, "pushNotifications": false, "extensions": [{
      "uri": "urn:agent-mesh:ext:identity:v1",
      "params": {"agentId": ")" + id + R"(", "noise": "Noise_IK_25519_ChaChaPoly_BLAKE2b", "online": true,
                 "lastSeen": "2026-11-26T18:47:01.123Z", "capabilitySchemas": {
        "forecast": {
          "inputSchema": {"type": "object", "properties": {"city": {"type": "string"},
                          "days": {"type": "integer", "minimum": 1, "maximum": 14}}, "required": ["city"]},
          "outputSchema": {"type": "object", "properties": {"days": {"type": "array"},
                           "confidence": {"type": "number", "maximum": 1, "multipleOf": 0.05}}}},
        "ping": {}}}}]},
    "securitySchemes": {"bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer"}}},
    "defaultInputModes": ["application/json"],
    "defaultOutputModes": ["application/json"],
    "skills": [
      {"id": "forecast", "name": "forecast", "description": "Daily forecast for a city", "tags": ["forecast"]},
      {"id": "ping", "name": "ping", "description": "ping", "tags": ["ping"]}]
  })");
  EXPECT_EQ(bj::value(card), expected) << bj::serialize(card);
}

TEST(A2aCard, SecuritySchemesAreExactlyBearer) {
  const bj::object card = render_object(golden_input());
  EXPECT_EQ(json::serialize_jcs(card.at("securitySchemes")), R"({"bearer":{"httpAuthSecurityScheme":{"scheme":"Bearer"}}})");
}

TEST(A2aCard, BodyIsJcsAndViewHasCachingHeaders) {
  auto view = render_a2a_card(golden_input());
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(json::serialize_jcs(parse(view->body)), view->body);
  EXPECT_EQ(view->cache_control, "private, max-age=30");
  ASSERT_EQ(view->etag.size(), 24u);
  EXPECT_EQ(view->etag.front(), '"');
  EXPECT_EQ(view->etag.back(), '"');
  EXPECT_EQ(view->etag, strong_etag(view->body));
  // Deterministic: the same card gives the same ETag...
  EXPECT_EQ(render_a2a_card(golden_input())->etag, view->etag);
  // ...and liveness changes it.
  A2aCardInput offline = golden_input();
  offline.online = false;
  EXPECT_NE(render_a2a_card(offline)->etag, view->etag);
  A2aCardInput seen_later = golden_input();
  seen_later.last_seen = "2026-11-26T18:48:01.123Z";
  EXPECT_NE(render_a2a_card(seen_later)->etag, view->etag);
}

TEST(A2aCard, VersionComesFromMetadataOrDefaults) {
  A2aCardInput input = golden_input();
  input.metadata = parse(R"({"version": 2})").as_object();
  EXPECT_EQ(render_object(input).at("version"), "0.0.0");
  input.metadata = parse(R"({"version": ""})").as_object();
  EXPECT_EQ(render_object(input).at("version"), "0.0.0");
  input.metadata = parse(R"({"version": null})").as_object();
  EXPECT_EQ(render_object(input).at("version"), "0.0.0");
  input.metadata = parse(R"({})").as_object();
  EXPECT_EQ(render_object(input).at("version"), "0.0.0");
  input.metadata.reset();
  EXPECT_EQ(render_object(input).at("version"), "0.0.0");
  input.metadata = parse(R"({"version": "2026.11-beta"})").as_object();
  EXPECT_EQ(render_object(input).at("version"), "2026.11-beta");
}

TEST(A2aCard, ProviderFromMetadataThenRegistryThenNone) {
  A2aCardInput input = golden_input();
  EXPECT_EQ(render_object(input).at("provider").at("organization"), "Example Weather Co");
  const auto registry_provider = parse(R"({"organization": "Example Mesh Operator", "url": "https://mesh.example.com"})");
  for (const char* metadata : {R"({"provider": {"organization": "X"}})",
                               R"({"provider": {"organization": "", "url": "https://x.example"}})",
                               R"j({"provider": {"organization": "X", "url": "javascript:alert(1)"}})j",
                               R"({"provider": {"organization": "X", "url": "https://"}})",
                               R"({"provider": {"organization": 7, "url": "https://x.example"}})",
                               R"({"provider": "X"})", R"({})"}) {
    SCOPED_TRACE(metadata);
    input.metadata = parse(metadata).as_object();
    EXPECT_EQ(bj::value(render_object(input).at("provider")), registry_provider);
  }
  input.metadata = parse(R"({"provider": {"organization": "X", "url": "http://x.example", "extra": 1}})").as_object();
  EXPECT_EQ(bj::value(render_object(input).at("provider")), parse(R"({"organization": "X", "url": "http://x.example"})"));
  input.metadata.reset();
  input.registry_provider.reset();
  EXPECT_FALSE(render_object(input).contains("provider"));
  input.registry_provider = A2aProvider{"", "https://mesh.example.com"};
  EXPECT_FALSE(render_object(input).contains("provider"));
}

TEST(A2aCard, DescriptionsFallBackToNames) {
  A2aCardInput input = golden_input();
  input.description.reset();
  EXPECT_EQ(render_object(input).at("description"), "Weather agent");
  input.description = "";
  EXPECT_EQ(render_object(input).at("description"), "Weather agent");
  input.capabilities = parse(R"([{"name": "a", "description": ""}, {"name": "b", "description": "B!"}])").as_array();
  const bj::array skills = render_object(input).at("skills").as_array();
  ASSERT_EQ(skills.size(), 2u);
  EXPECT_EQ(skills[0].at("description"), "a");
  EXPECT_EQ(skills[1].at("description"), "B!");
  EXPECT_EQ(bj::value(skills[1].at("tags")), parse(R"(["b"])"));
}

TEST(A2aCard, LastSeenOmittedWhenUnknown) {
  A2aCardInput input = golden_input();
  input.online = false;
  input.last_seen.reset();
  const bj::object card = render_object(input);
  const bj::object& params = card.at("capabilities").at("extensions").at(0).at("params").as_object();
  EXPECT_FALSE(params.contains("lastSeen"));
  EXPECT_EQ(params.at("online"), false);
  EXPECT_EQ(params.at("agentId"), bj::value(golden_agent_id()));
}

TEST(A2aCard, SkillsFollowCardOrderAndSchemasAreKeptAsRegistered) {
  A2aCardInput input = golden_input();
  input.capabilities = parse(R"([{"name": "z", "input_schema": true}, {"name": "a", "output_schema": false}])").as_array();
  const bj::object card = render_object(input);
  EXPECT_EQ(card.at("skills").at(0).at("id"), "z");
  EXPECT_EQ(card.at("skills").at(1).at("id"), "a");
  const bj::value schemas = card.at("capabilities").at("extensions").at(0).at("params").at("capabilitySchemas");
  EXPECT_EQ(schemas, parse(R"({"z": {"inputSchema": true}, "a": {"outputSchema": false}})"));
}

TEST(A2aCard, RefusesStoredCardsThatCannotMakeAnA2aCard) {
  const auto expect_internal = [](const A2aCardInput& input, std::string_view reason) {
    const auto view = render_a2a_card(input);
    ASSERT_FALSE(view.ok());
    EXPECT_EQ(view.error().code, Errc::internal);
    EXPECT_NE(view.error().message.find(reason), std::string::npos) << view.error().message;
  };
  A2aCardInput input = golden_input();
  input.name.clear();
  expect_internal(input, "no name");
  input = golden_input();
  input.agent_id.clear();
  expect_internal(input, "no agent_id");
  input = golden_input();
  input.relay_url.clear();
  expect_internal(input, "relay URL");
  input = golden_input();
  input.capabilities.clear();
  expect_internal(input, "no capabilities");
  input.capabilities = parse(R"([{"name": "a"}, "b"])").as_array();
  expect_internal(input, "capabilities[1] is not an object");
  input.capabilities = parse(R"([{"description": "nameless"}])").as_array();
  expect_internal(input, "capabilities[0].name");
  input.capabilities = parse(R"([{"name": ""}])").as_array();
  expect_internal(input, "capabilities[0].name");
  input.capabilities = parse(R"([{"name": "a"}, {"name": "a"}])").as_array();
  expect_internal(input, "listed twice");
}

TEST(ETag, IfNoneMatchUsesWeakComparison) {
  const std::string etag = strong_etag("body");
  EXPECT_TRUE(etag_matches(etag, etag));
  EXPECT_TRUE(etag_matches("*", etag));
  EXPECT_TRUE(etag_matches("W/" + etag, etag));
  EXPECT_TRUE(etag_matches("\"other\", " + etag, etag));
  EXPECT_TRUE(etag_matches("\"other\",\t W/" + etag + " ,\"x\"", etag));
  EXPECT_FALSE(etag_matches("", etag));
  EXPECT_FALSE(etag_matches("\"other\"", etag));
  EXPECT_FALSE(etag_matches(etag.substr(1, etag.size() - 2), etag));  // unquoted
  EXPECT_FALSE(etag_matches(strong_etag("body2"), etag));
  EXPECT_FALSE(etag_matches(",,,", etag));
}

}  // namespace
}  // namespace agent_mesh::registry
