#include "agent_mesh/agent_card.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "agent_mesh/json.hpp"
#include "test_vectors.hpp"

namespace agent_mesh {
namespace {

using test::hex;

const std::string kGroup = "6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f";

KeyPair alice() { return *KeyPair::from_seed(hex("a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1")); }
KeyPair bob() { return *KeyPair::from_seed(hex("b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0")); }

// A complete card with every optional member, signed by alice.
AgentCard full_card() {
  AgentCard card;
  card.agent_id = alice().agent_id();
  card.group_id = *Uuid::parse(kGroup);
  card.name = "Alice's summariser";
  card.description = "Summarises text; answers in JSON.";
  CardCapability summarize;
  summarize.name = "summarize";
  summarize.description = "Summarise a document";
  summarize.input_schema = boost::json::parse(R"({"type":"object","properties":{"text":{"type":"string"}}})");
  summarize.output_schema = boost::json::value(true);
  CardCapability echo;
  echo.name = "echo";
  card.capabilities = {summarize, echo};
  card.metadata = boost::json::parse(R"({"version":"1.2.0","weight":1.5e3,"tags":["a","é"]})").as_object();
  card.timestamp = 1764000000000;
  card.sign(alice());
  return card;
}

// The signed card as a JSON object, to edit member by member.
boost::json::object full_card_json() { return full_card().to_json(); }

template <class T>
void expect_error(const Result<T>& result, Errc code, std::string_view message_part) {
  ASSERT_FALSE(result.ok()) << "accepted";
  EXPECT_EQ(result.error().code, code) << result.error().describe();
  EXPECT_NE(result.error().message.find(message_part), std::string::npos)
      << "message \"" << result.error().message << "\" lacks \"" << message_part << "\"";
}

void expect_rejected(const boost::json::object& card, std::string_view message_part) {
  SCOPED_TRACE(message_part);
  expect_error(AgentCard::parse(boost::json::serialize(card)), Errc::bad_request, message_part);
  // from_json runs the same checks on an already parsed value.
  expect_error(AgentCard::from_json(card), Errc::bad_request, message_part);
}

boost::json::object& capability(boost::json::object& card, std::size_t index) {
  return card["capabilities"].as_array()[index].as_object();
}

// ---- sign, verify, round trip ----

TEST(AgentCardTest, SignVerifyRoundTrip) {
  const AgentCard card = full_card();
  ASSERT_TRUE(card.validate().ok()) << card.validate().error().describe();
  ASSERT_TRUE(card.verify().ok()) << card.verify().error().describe();
  const std::string text = card.serialize();
  auto parsed = AgentCard::parse(text);
  ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
  EXPECT_TRUE(parsed->verify().ok());
  EXPECT_EQ(parsed->serialize(), text);
  // Equal as values once both come from the parser (the built card holds 1.5e3 as a double, the
  // parsed one the integer 1500 that JCS wrote: same JCS, different Boost.JSON kinds).
  auto again = AgentCard::parse(parsed->serialize());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *parsed);
  // The signed message is JCS of everything but `signature`; numbers in metadata are in JCS form.
  EXPECT_EQ(card.signing_input().find("signature"), std::string::npos);
  EXPECT_NE(card.signing_input().find("\"weight\":1500"), std::string::npos) << card.signing_input();
  EXPECT_EQ(parsed->find_capability("echo"), &parsed->capabilities[1]);
  EXPECT_EQ(parsed->find_capability("nope"), nullptr);
}

TEST(AgentCardTest, SignatureCoversTheCardAsReceived) {
  // Any member order and whitespace: the signature covers JCS, not the text.
  const AgentCard card = full_card();
  const boost::json::object object = card.to_json();
  std::string spaced = "{ ";
  bool first = true;
  for (auto it = object.end(); it != object.begin();) {  // reverse member order
    --it;
    if (!first) spaced += " ,\n ";
    first = false;
    spaced += boost::json::serialize(boost::json::value(it->key())) + " : " + boost::json::serialize(it->value());
  }
  spaced += " }";
  auto parsed = AgentCard::parse(spaced);
  ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
  EXPECT_TRUE(parsed->verify().ok());
}

TEST(AgentCardTest, MinimalCardOmitsOptionalMembers) {
  AgentCard card;
  card.agent_id = bob().agent_id();
  card.group_id = *Uuid::parse(kGroup);
  card.name = "b";
  card.capabilities = {CardCapability{"ping", std::nullopt, std::nullopt, std::nullopt}};
  card.timestamp = 0;
  card.sign(bob());
  const std::string text = card.serialize();
  for (const char* absent : {"description", "metadata", "input_schema", "output_schema"}) {
    EXPECT_EQ(text.find(absent), std::string::npos) << absent << " in " << text;
  }
  auto parsed = AgentCard::parse(text);
  ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
  EXPECT_TRUE(parsed->verify().ok());
  EXPECT_FALSE(parsed->description.has_value());
  EXPECT_FALSE(parsed->metadata.has_value());
}

TEST(AgentCardTest, EmptyDescriptionIsKeptAndSigned) {
  AgentCard card = full_card();
  card.description = "";
  card.sign(alice());
  auto parsed = AgentCard::parse(card.serialize());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->description, std::optional<std::string>(""));
  EXPECT_TRUE(parsed->verify().ok());
  // Dropping it changes the signed message.
  boost::json::object object = card.to_json();
  object.erase("description");
  auto dropped = AgentCard::parse(boost::json::serialize(object));
  ASSERT_TRUE(dropped.ok());
  EXPECT_FALSE(dropped->verify().ok());
}

// ---- tampering ----

TEST(AgentCardTest, TamperingIsRefused) {
  struct Tamper {
    const char* what;
    void (*apply)(boost::json::object&);
  };
  const Tamper tampers[] = {
      {"name", [](boost::json::object& c) { c["name"] = "Mallory"; }},
      {"description", [](boost::json::object& c) { c["description"] = "x"; }},
      {"timestamp", [](boost::json::object& c) { c["timestamp"] = 1764000000001; }},
      {"group", [](boost::json::object& c) { c["group_id"] = "00000000-0000-4000-8000-000000000000"; }},
      {"capability name", [](boost::json::object& c) { capability(c, 1)["name"] = "echo2"; }},
      {"capability added",
       [](boost::json::object& c) { c["capabilities"].as_array().push_back(boost::json::object{{"name", "x"}}); }},
      {"capability order",
       [](boost::json::object& c) {
         auto& list = c["capabilities"].as_array();
         std::swap(list[0], list[1]);
       }},
      {"schema", [](boost::json::object& c) { capability(c, 0)["output_schema"] = false; }},
      {"schema removed", [](boost::json::object& c) { capability(c, 0).erase("input_schema"); }},
      {"metadata", [](boost::json::object& c) { c["metadata"].as_object()["version"] = "9.9.9"; }},
      {"agent_id", [](boost::json::object& c) { c["agent_id"] = bob().agent_id().str(); }},
  };
  for (const auto& tamper : tampers) {
    SCOPED_TRACE(tamper.what);
    boost::json::object object = full_card_json();
    tamper.apply(object);
    auto parsed = AgentCard::parse(boost::json::serialize(object));
    ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
    expect_error(parsed->verify(), Errc::bad_request, "card: signature does not verify for agent_id");
  }
}

TEST(AgentCardTest, OnlyTheCardsOwnKeyAndPurposeVerify) {
  AgentCard card = full_card();
  // Bob signs alice's card: refused (nobody registers someone else's key).
  card.signature = bob().sign(Purpose::card, as_bytes(card.signing_input()));
  EXPECT_FALSE(card.verify().ok());
  for (const Purpose other : {Purpose::envelope, Purpose::revoke, Purpose::rotate, Purpose::auth, Purpose::http}) {
    card.signature = alice().sign(other, as_bytes(card.signing_input()));
    auto verdict = card.verify();
    ASSERT_FALSE(verdict.ok());
    EXPECT_EQ(verdict.error().code, Errc::bad_request);
    EXPECT_NE(verdict.error().message.find("does not verify"), std::string::npos);
  }
  card.signature = alice().sign(Purpose::card, as_bytes(card.signing_input()));
  EXPECT_TRUE(card.verify().ok());
  card.signature.reset();
  auto missing = card.verify();
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("card: missing signature"), std::string::npos);
}

// ---- every rejection ----

TEST(AgentCardRejection, Shape) {
  expect_error(AgentCard::parse("[]"), Errc::bad_request, "card must be a JSON object");
  expect_error(AgentCard::parse("{\"name\""), Errc::bad_request, "card: ");
  expect_error(AgentCard::parse(std::string(limits::max_card_bytes + 1, ' ')), Errc::too_large, "card: ");
  boost::json::object card = full_card_json();
  card["owner_id"] = "u1";
  expect_rejected(card, "card: unknown member \"owner_id\"");
  for (const char* member : {"agent_id", "group_id", "name", "capabilities", "timestamp", "signature"}) {
    card = full_card_json();
    card.erase(member);
    expect_rejected(card, "card: missing member \"" + std::string(member) + "\"");
  }
  // Optional members are omitted, never null (protocol §1).
  for (const char* member : {"description", "metadata"}) {
    card = full_card_json();
    card[member] = nullptr;
    expect_rejected(card, "card: " + std::string(member) + " must not be null");
  }
  const std::string duplicated = R"({"name":"a","name":"b"})";
  expect_error(AgentCard::parse(duplicated), Errc::bad_request, "card: ");
}

TEST(AgentCardRejection, IdentityMembers) {
  boost::json::object card = full_card_json();
  card["agent_id"] = "alice";
  expect_rejected(card, "card: agent_id: agent ID must be 43 characters");
  card = full_card_json();
  card["agent_id"] = "vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaV";
  expect_rejected(card, "card: agent_id: agent ID is not canonical base64url");
  for (const char* group : {"6F1C2B9E-3D4A-4C5B-9E8F-0A1B2C3D4E5F", "6f1c2b9e-3d4a-1c5b-9e8f-0a1b2c3d4e5f",
                            "6f1c2b9e3d4a4c5b9e8f0a1b2c3d4e5f", "personal"}) {
    SCOPED_TRACE(group);
    card = full_card_json();
    card["group_id"] = group;
    expect_rejected(card, "card: group_id: ");
  }
  card = full_card_json();
  card["group_id"] = 5;
  expect_rejected(card, "card: group_id must be a string");
  card = full_card_json();
  card["signature"] = "AAAA";
  expect_rejected(card, "card: signature must be base64url of 64 bytes");
  card = full_card_json();
  std::string sig(card["signature"].as_string());
  sig.back() = sig.back() == 'A' ? 'B' : 'A';  // non-zero unused trailing bits or another signature
  card["signature"] = sig;
  auto parsed = AgentCard::parse(boost::json::serialize(card));
  EXPECT_TRUE(!parsed.ok() || !parsed->verify().ok());
  card = full_card_json();
  card["timestamp"] = -1;
  expect_rejected(card, "card: timestamp must not be negative");
  card = full_card_json();
  card["timestamp"] = 1764000000000.5;
  expect_rejected(card, "card: timestamp must be an integer");
}

TEST(AgentCardRejection, NameAndDescriptionBounds) {
  boost::json::object card = full_card_json();
  card["name"] = "";
  expect_rejected(card, "card: name must not be empty");
  card["name"] = std::string(limits::max_card_name_bytes, 'n');
  EXPECT_TRUE(AgentCard::from_json(card).ok());
  card["name"] = std::string(limits::max_card_name_bytes + 1, 'n');
  expect_rejected(card, "card: name must be at most 128 bytes, got 129");
  card = full_card_json();
  card["name"] = 7;
  expect_rejected(card, "card: name must be a string");

  card = full_card_json();
  card["description"] = std::string(limits::max_card_description_bytes, 'd');
  EXPECT_TRUE(AgentCard::from_json(card).ok());
  card["description"] = std::string(limits::max_card_description_bytes + 1, 'd');
  expect_rejected(card, "card: description must be at most 4096 bytes, got 4097");
  card = full_card_json();
  capability(card, 0)["description"] = std::string(limits::max_card_description_bytes + 1, 'd');
  expect_rejected(card, "card: capabilities[0]: description must be at most 4096 bytes");
}

TEST(AgentCardRejection, Capabilities) {
  boost::json::object card = full_card_json();
  card["capabilities"] = boost::json::array{};
  expect_rejected(card, "card: capabilities must list at least one capability");
  card["capabilities"] = boost::json::object{};
  expect_rejected(card, "card: capabilities must be an array");

  boost::json::array many;
  for (std::size_t i = 0; i < limits::max_card_capabilities; ++i) {
    many.push_back(boost::json::object{{"name", "c" + std::to_string(i)}});
  }
  card["capabilities"] = many;
  EXPECT_TRUE(AgentCard::from_json(card).ok());
  many.push_back(boost::json::object{{"name", "one-too-many"}});
  card["capabilities"] = many;
  expect_rejected(card, "card: capabilities has 65 entries, more than the limit of 64");

  card = full_card_json();
  card["capabilities"].as_array().push_back("echo");
  expect_rejected(card, "card: capabilities[2] must be an object");
  card = full_card_json();
  capability(card, 1)["name"] = "summarize";
  expect_rejected(card, "card: capabilities[1].name: \"summarize\" is listed twice");
  card = full_card_json();
  capability(card, 1)["name"] = "no spaces";
  expect_rejected(card, "card: capabilities[1].name: \"no spaces\" is not a capability name");
  card = full_card_json();
  capability(card, 1)["name"] = "*";
  expect_rejected(card, "capabilities[1].name: \"*\" is not a capability name");
  card = full_card_json();
  capability(card, 0).erase("name");
  expect_rejected(card, "card: capabilities[0]: missing member \"name\"");
  card = full_card_json();
  capability(card, 0)["timeout"] = 5;
  expect_rejected(card, "card: capabilities[0]: unknown member \"timeout\"");
  card = full_card_json();
  capability(card, 0)["description"] = nullptr;
  expect_rejected(card, "card: capabilities[0]: description must not be null");
  for (const char* schema : {"input_schema", "output_schema"}) {
    card = full_card_json();
    capability(card, 0)[schema] = nullptr;
    expect_rejected(card, "card: capabilities[0]: " + std::string(schema) + " must not be null");
    capability(card, 0)[schema] = "string";
    expect_rejected(card, "card: capabilities[0]: " + std::string(schema) + " must be a JSON Schema");
    capability(card, 0)[schema] = boost::json::array{};
    expect_rejected(card, "must be a JSON Schema (an object or a boolean)");
  }
}

TEST(AgentCardRejection, Metadata) {
  boost::json::object card = full_card_json();
  card["metadata"] = boost::json::array{1, 2};
  expect_rejected(card, "card: metadata must be an object");
  card["metadata"] = "v1";
  expect_rejected(card, "card: metadata must be an object");
  // I-JSON inside free-form metadata too: integers beyond 2^53-1 are refused (protocol §1).
  std::string text = full_card().serialize();
  const std::string from = "\"version\":\"1.2.0\"";
  text.replace(text.find(from), from.size(), "\"version\":9007199254740993");
  expect_error(AgentCard::parse(text), Errc::bad_request, "card: ");
}

TEST(AgentCardRejection, SizeIsBoundedInCanonicalFormToo) {
  // 1e15 is 4 bytes as sent and 16 in JCS: a card under the text bound can exceed it once
  // canonical, and the canonical form is what is signed and stored.
  std::string numbers;
  for (int i = 0; i < 20000; ++i) numbers += (i == 0 ? "1e15" : ",1e15");
  std::string text = full_card().serialize();
  const std::string from = "\"version\":\"1.2.0\"";
  text.replace(text.find(from), from.size(), "\"version\":[" + numbers + "]");
  ASSERT_LT(text.size(), limits::max_card_bytes);
  expect_error(AgentCard::parse(text), Errc::too_large, "card: larger than 262144 bytes in canonical (JCS) form");
}

TEST(AgentCardRejection, ValidateChecksCardsBuiltInCode) {
  AgentCard card = full_card();
  card.capabilities.push_back(card.capabilities.front());
  auto duplicate = card.validate();
  ASSERT_FALSE(duplicate.ok());
  EXPECT_NE(duplicate.error().message.find("capabilities[2].name: \"summarize\" is listed twice"), std::string::npos)
      << duplicate.error().message;
  card = full_card();
  card.capabilities.clear();
  EXPECT_FALSE(card.validate().ok());
  card = full_card();
  card.name.clear();
  EXPECT_FALSE(card.validate().ok());
  card = full_card();
  card.agent_id = AgentId{};
  EXPECT_FALSE(card.validate().ok());
  card = full_card();
  card.timestamp = limits::max_safe_integer + 1;
  EXPECT_FALSE(card.validate().ok());
  card = full_card();
  card.capabilities[0].input_schema = boost::json::value(3);
  EXPECT_FALSE(card.validate().ok());
}

}  // namespace
}  // namespace agent_mesh
