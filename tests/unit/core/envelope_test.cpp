#include "agent_mesh/envelope.hpp"

#include <gtest/gtest.h>

#include "agent_mesh/json.hpp"
#include "agent_mesh/replay_cache.hpp"
#include "test_vectors.hpp"

namespace agent_mesh {
namespace {

using test::hex;
using test::load_vectors;
using test::str;

constexpr std::int64_t kNow = 1764000600000;  // envelope.json now_ms

KeyPair key(std::string_view seed_hex) { return *KeyPair::from_seed(hex(seed_hex)); }
KeyPair alice() { return key("a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"); }
KeyPair bob() { return key("b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0"); }

std::string frame_text(const boost::json::object& vector) {
  if (const auto* text = vector.if_contains("received_text")) return str(*text);
  return boost::json::serialize(vector.at("envelope"));
}

TEST(EnvelopeVectors, NowAndFreshnessMatchTheDefaults) {
  const auto vectors = load_vectors("agent-mesh/envelope.json");
  EXPECT_EQ(vectors.at("now_ms").as_int64(), kNow);
  const auto& freshness = vectors.at("freshness");
  EXPECT_EQ(freshness.at("max_future_ms").as_int64(), limits::default_max_future_ms);
  EXPECT_EQ(freshness.at("max_age_ms").as_int64(), limits::default_max_age_ms);
}

TEST(EnvelopeVectors, EveryValidEnvelopeIsAcceptedWithTheExactSigningInput) {
  const auto vectors = load_vectors("agent-mesh/envelope.json");
  const auto& valid = vectors.at("valid").as_array();
  ASSERT_EQ(valid.size(), 7u);
  for (const auto& v : valid) {
    const auto& vector = v.as_object();
    SCOPED_TRACE(str(vector.at("name")));
    const auto self = *AgentId::parse(vector.at("receiver").as_string());
    ReplayCache replay;
    auto received = receive_envelope(frame_text(vector), self, kNow, FreshnessPolicy{}, replay);
    ASSERT_TRUE(received.ok()) << received.error().describe();
    EXPECT_EQ(received->signing_input(), str(vector.at("signing_input_jcs")));
    EXPECT_EQ(base64url_encode(*received->signature), str(vector.at("signature_b64url")));
    // Re-signing with the sender's seed reproduces the published signature (Ed25519 is deterministic).
    Envelope copy = *received;
    copy.sign(received->from == alice().agent_id() ? alice() : bob());
    EXPECT_EQ(copy.signature, received->signature);
    // Serialising and parsing again gives the same envelope.
    auto again = Envelope::parse(received->serialize());
    ASSERT_TRUE(again.ok()) << again.error().describe();
    EXPECT_EQ(again->signing_input(), received->signing_input());
    // A §4 body in every plaintext vector is valid.
    EXPECT_TRUE(parse_body(received->msg_type, received->payload).ok());
  }
}

TEST(EnvelopeVectors, EveryInvalidEnvelopeIsRejected) {
  const auto vectors = load_vectors("agent-mesh/envelope.json");
  const auto& invalid = vectors.at("invalid").as_array();
  ASSERT_EQ(invalid.size(), 47u);
  for (const auto& v : invalid) {
    const auto& vector = v.as_object();
    SCOPED_TRACE(str(vector.at("reason")) + " (" + str(vector.at("rule")) + ")");
    const auto self = *AgentId::parse(vector.at("receiver").as_string());
    ReplayCache replay;
    auto received = receive_envelope(str(vector.at("received_text")), self, kNow, FreshnessPolicy{}, replay);
    ASSERT_FALSE(received.ok());
    EXPECT_FALSE(received.error().message.empty());
    EXPECT_EQ(replay.size(), 0u) << "a rejected envelope must not enter the replay cache";
  }
}

TEST(EnvelopeVectors, CapabilityNames) {
  const auto vectors = load_vectors("agent-mesh/envelope.json");
  for (const auto& name : vectors.at("capability_names").at("valid").as_array()) {
    EXPECT_TRUE(is_valid_capability_name(name.as_string())) << name;
  }
  for (const auto& name : vectors.at("capability_names").at("invalid").as_array()) {
    EXPECT_FALSE(is_valid_capability_name(name.as_string())) << name;
  }
}

TEST(EnvelopeVectors, Bodies) {
  const auto vectors = load_vectors("agent-mesh/envelope.json");
  const auto& bodies = vectors.at("bodies").as_array();
  ASSERT_EQ(bodies.size(), 24u);
  for (const auto& b : bodies) {
    const auto& vector = b.as_object();
    SCOPED_TRACE(str(vector.at("msg_type")) + " " + str(vector.at("text")));
    const auto type = msg_type_from_string(vector.at("msg_type").as_string());
    ASSERT_TRUE(type.has_value());
    auto payload = json::parse_ijson(vector.at("text").as_string());
    ASSERT_TRUE(payload.ok());
    auto body = parse_body(*type, *payload);
    EXPECT_EQ(body.ok(), vector.at("valid").as_bool()) << (body.ok() ? "" : body.error().describe());
    if (body.ok()) {
      EXPECT_EQ(json::serialize_jcs(body_to_json(*body)), json::serialize_jcs(*payload));
    } else {
      EXPECT_EQ(body.error().code, Errc::bad_request);
    }
  }
}

// A well-formed signed request from Alice to Bob, as JSON to mutate in tests.
boost::json::object base_request() {
  Envelope env;
  env.id = *Uuid::parse("a6e50100-0000-4000-8000-000000000100");
  env.from = alice().agent_id();
  env.to = bob().agent_id();
  env.msg_type = MsgType::request;
  env.timestamp = kNow;
  env.payload = boost::json::object{{"capability", "echo"}, {"body", 1}};
  env.sign(alice());
  return env.to_json();
}

boost::json::object base_encrypted() {
  Envelope env;
  env.id = *Uuid::parse("a6e50120-0000-4000-8000-000000000120");
  env.from = alice().agent_id();
  env.to = bob().agent_id();
  env.msg_type = MsgType::response;
  env.in_reply_to = *Uuid::parse("a6e50100-0000-4000-8000-000000000100");
  env.timestamp = kNow;
  env.encrypted = true;
  env.sid = SessionId{};
  env.n = 7;
  env.ciphertext = Bytes(40, 0xab);
  return env.to_json();
}

std::string parse_error(const boost::json::object& object) {
  auto env = Envelope::parse(boost::json::serialize(object));
  if (env.ok()) return "(accepted)";
  EXPECT_EQ(env.error().code, Errc::bad_request);
  return env.error().message;
}

#define EXPECT_REJECTED_WITH(object, fragment) \
  EXPECT_NE(parse_error(object).find(fragment), std::string::npos) << parse_error(object)

TEST(EnvelopeParse, BaseEnvelopesAreValid) {
  EXPECT_EQ(parse_error(base_request()), "(accepted)");
  EXPECT_EQ(parse_error(base_encrypted()), "(accepted)");
}

TEST(EnvelopeParse, EachStructuralRejectionNamesTheProblem) {
  auto o = base_request();
  o["extra"] = 1;
  EXPECT_REJECTED_WITH(o, "unknown member \"extra\"");
  for (const char* member : {"id", "from", "to", "msg_type", "timestamp", "payload"}) {
    o = base_request();
    o.erase(member);
    EXPECT_REJECTED_WITH(o, std::string("missing member \"") + member + "\"");
  }
  o = base_request();
  o["id"] = 5;
  EXPECT_REJECTED_WITH(o, "id must be a string");
  o = base_request();
  o["id"] = "A6E50100-0000-4000-8000-000000000100";
  EXPECT_REJECTED_WITH(o, "id: UUID must be lower-case hex");
  o = base_request();
  o["from"] = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
  EXPECT_REJECTED_WITH(o, "from: ");
  o = base_request();
  o["to"] = "short";
  EXPECT_REJECTED_WITH(o, "to: ");
  o = base_request();
  o["msg_type"] = "control";
  EXPECT_REJECTED_WITH(o, "unknown msg_type \"control\"");
  o = base_request();
  o["timestamp"] = 1.5;
  EXPECT_REJECTED_WITH(o, "timestamp must be an integer");
  o = base_request();
  o["timestamp"] = -1;
  EXPECT_REJECTED_WITH(o, "timestamp must not be negative");
  o = base_request();
  o["in_reply_to"] = nullptr;
  EXPECT_REJECTED_WITH(o, "in_reply_to must not be null");
  o = base_request();
  o["payload"] = nullptr;
  EXPECT_REJECTED_WITH(o, "payload must not be null");
  o = base_request();
  o["encrypted"] = false;
  EXPECT_REJECTED_WITH(o, "encrypted must be true or omitted");
  o = base_request();
  o["encrypted"] = "yes";
  EXPECT_REJECTED_WITH(o, "encrypted must be true or false");
}

TEST(EnvelopeParse, SignatureRulesPerKind) {
  auto o = base_request();
  o.erase("signature");
  EXPECT_REJECTED_WITH(o, "must be signed");
  o = base_request();
  o["signature"] = "AAAA";
  EXPECT_REJECTED_WITH(o, "signature must be base64url of 64 bytes");
  o = base_encrypted();
  o["signature"] = base_request().at("signature");
  EXPECT_REJECTED_WITH(o, "must not carry a signature");
  o = base_request();
  o["sid"] = "ABEiM0RVZneImaq7zN3u_w";
  EXPECT_REJECTED_WITH(o, "sid is only allowed on encrypted");
  o = base_request();
  o["n"] = 0;
  EXPECT_REJECTED_WITH(o, "n is only allowed on encrypted");
}

TEST(EnvelopeParse, EncryptedFieldRules) {
  auto o = base_encrypted();
  o.erase("sid");
  EXPECT_REJECTED_WITH(o, "need \"sid\"");
  o = base_encrypted();
  o.erase("n");
  EXPECT_REJECTED_WITH(o, "need \"n\"");
  o = base_encrypted();
  o["sid"] = "AAAAAAAAAAAAAAAAAAAA";
  EXPECT_REJECTED_WITH(o, "sid must be base64url of 16 bytes");
  o = base_encrypted();
  o["n"] = -1;
  EXPECT_REJECTED_WITH(o, "n must not be negative");
  o = base_encrypted();
  o["n"] = 2.0;
  EXPECT_REJECTED_WITH(o, "n must be an integer");
  o = base_encrypted();
  o["payload"] = boost::json::object{};
  EXPECT_REJECTED_WITH(o, "must be a base64url string");
  o = base_encrypted();
  o["payload"] = "AA==";
  EXPECT_REJECTED_WITH(o, "payload: base64url must not be padded");
  o = base_encrypted();
  o["msg_type"] = "handshake";
  EXPECT_REJECTED_WITH(o, "never encrypted");
}

TEST(EnvelopeParse, InReplyToRules) {
  auto o = base_request();
  o["in_reply_to"] = "a6e50100-0000-4000-8000-000000000100";
  EXPECT_REJECTED_WITH(o, "request must not have \"in_reply_to\"");
  for (const char* type : {"response", "error", "stream_chunk", "stream_end", "cancel"}) {
    o = base_request();
    o["msg_type"] = type;
    EXPECT_REJECTED_WITH(o, std::string(type) + " needs \"in_reply_to\"");
  }
  o = base_encrypted();
  o["in_reply_to"] = "not-a-uuid";
  EXPECT_REJECTED_WITH(o, "in_reply_to: UUID must be 36 characters");
}

TEST(EnvelopeParse, HandshakePayloadRules) {
  auto make = [](boost::json::value payload, bool reply) {
    auto o = base_request();
    o["msg_type"] = "handshake";
    o["payload"] = std::move(payload);
    if (reply) o["in_reply_to"] = "a6e50100-0000-4000-8000-000000000100";
    return o;
  };
  const std::string noise = base64url_encode(Bytes(96, 1));
  EXPECT_EQ(parse_error(make(boost::json::object{{"step", 1}, {"noise", noise}}, false)), "(accepted)");
  EXPECT_EQ(parse_error(make(boost::json::object{{"step", 2}, {"noise", noise}}, true)), "(accepted)");
  EXPECT_REJECTED_WITH(make(boost::json::object{{"step", 2}, {"noise", noise}}, false), "handshake step 2 needs");
  EXPECT_REJECTED_WITH(make(boost::json::object{{"step", 1}, {"noise", noise}}, true), "step 1 must not have");
  EXPECT_REJECTED_WITH(make(boost::json::object{{"step", 3}, {"noise", noise}}, false), "step must be 1 or 2");
  EXPECT_REJECTED_WITH(make(boost::json::object{{"step", 1}}, false), "missing member \"noise\"");
  EXPECT_REJECTED_WITH(make(boost::json::object{{"step", 1}, {"noise", ""}}, false), "noise must not be empty");
  EXPECT_REJECTED_WITH(make(boost::json::object{{"step", 1}, {"noise", "AB"}}, false), "noise: base64url");
  EXPECT_REJECTED_WITH(make(boost::json::object{{"step", 1}, {"noise", noise}, {"x", 1}}, false),
                       "handshake payload: unknown member \"x\"");
  EXPECT_REJECTED_WITH(make(boost::json::array{}, false), "handshake payload must be an object");
  EXPECT_REJECTED_WITH(make(boost::json::object{{"step", 1}, {"noise", std::string(87384, 'A')}}, false),
                       "longer than a Noise message");
}

TEST(EnvelopeParse, NonObjectsAndOversizedFrames) {
  auto env = Envelope::parse("[]");
  ASSERT_FALSE(env.ok());
  EXPECT_NE(env.error().message.find("must be a JSON object"), std::string::npos);
  const std::string frame = boost::json::serialize(base_request());
  auto big = Envelope::parse(frame, frame.size() - 1);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code, Errc::too_large);
  EXPECT_TRUE(Envelope::parse(frame, frame.size()).ok());
}

TEST(EnvelopeReceive, AddressedToSelfSignatureFreshnessReplayInOrder) {
  const std::string frame = boost::json::serialize(base_request());
  ReplayCache replay;
  const FreshnessPolicy freshness;
  auto wrong_receiver = receive_envelope(frame, alice().agent_id(), kNow, freshness, replay);
  ASSERT_FALSE(wrong_receiver.ok());
  EXPECT_NE(wrong_receiver.error().message.find("not this agent"), std::string::npos);

  auto too_new = receive_envelope(frame, bob().agent_id(), kNow - limits::default_max_future_ms - 1, freshness, replay);
  ASSERT_FALSE(too_new.ok());
  EXPECT_EQ(too_new.error().code, Errc::expired);
  EXPECT_NE(too_new.error().message.find("in the future"), std::string::npos);
  auto too_old = receive_envelope(frame, bob().agent_id(), kNow + limits::default_max_age_ms + 1, freshness, replay);
  ASSERT_FALSE(too_old.ok());
  EXPECT_NE(too_old.error().message.find("old"), std::string::npos);

  auto tampered = base_request();
  tampered["timestamp"] = kNow + 1;
  auto forged = receive_envelope(boost::json::serialize(tampered), bob().agent_id(), kNow, freshness, replay);
  ASSERT_FALSE(forged.ok());
  EXPECT_NE(forged.error().message.find("signature does not verify"), std::string::npos);
  EXPECT_EQ(replay.size(), 0u);

  ASSERT_TRUE(receive_envelope(frame, bob().agent_id(), kNow, freshness, replay).ok());
  auto again = receive_envelope(frame, bob().agent_id(), kNow + 1000, freshness, replay);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message.find("replay"), std::string::npos);
}

TEST(EnvelopeReceive, EncryptedEnvelopesSkipClockAndSignature) {
  ReplayCache replay;
  auto received = receive_envelope(boost::json::serialize(base_encrypted()), bob().agent_id(), kNow + 86400000,
                                   FreshnessPolicy{}, replay);
  ASSERT_TRUE(received.ok()) << received.error().describe();
  EXPECT_EQ(replay.size(), 0u);
  EXPECT_EQ(received->n, 7u);
  // The associated data is the header without payload and signature (§5).
  EXPECT_EQ(received->associated_data().find("payload"), std::string::npos);
  EXPECT_NE(received->associated_data().find("\"n\":7"), std::string::npos);
}

TEST(ReplayCacheTest, DuplicatesExpiryAndBounds) {
  const AgentId a = alice().agent_id();
  const AgentId b = bob().agent_id();
  ReplayCache cache({.max_age_ms = 1000, .max_per_sender = 3, .max_total = 5});
  auto id = [](int i) {
    char text[37];
    std::snprintf(text, sizeof text, "00000000-0000-4000-8000-%012d", i);
    return *Uuid::parse(text);
  };
  ASSERT_TRUE(cache.remember(a, id(1), 100, 100).ok());
  EXPECT_EQ(cache.remember(a, id(1), 100, 100).error().code, Errc::bad_request);
  ASSERT_TRUE(cache.remember(b, id(1), 100, 100).ok()) << "IDs are per sender";
  // Per-sender bound: the oldest of a's entries goes and a's floor rises to its timestamp.
  ASSERT_TRUE(cache.remember(a, id(2), 200, 200).ok());
  ASSERT_TRUE(cache.remember(a, id(3), 300, 300).ok());
  ASSERT_TRUE(cache.remember(a, id(4), 400, 400).ok());
  auto evicted_replay = cache.remember(a, id(1), 100, 400);
  ASSERT_FALSE(evicted_replay.ok()) << "an evicted ID must not become replayable";
  EXPECT_EQ(evicted_replay.error().code, Errc::expired);
  // Global bound: b's entry is the oldest overall and goes; the global floor rises to 100.
  ASSERT_TRUE(cache.remember(b, id(2), 450, 450).ok());
  ASSERT_TRUE(cache.remember(b, id(3), 460, 460).ok());
  EXPECT_LE(cache.size(), 5u);
  EXPECT_FALSE(cache.remember(b, id(1), 100, 460).ok());
  // Expiry: entries older than now − max_age go; their IDs fail freshness anyway.
  cache.expire(1350);
  EXPECT_EQ(cache.size(), 3u);  // 400, 450, 460 remain
  cache.expire(10000);
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_TRUE(cache.remember(a, id(9), 9500, 10000).ok());
}

}  // namespace
}  // namespace agent_mesh
