#include "agent_mesh/key_lifecycle.hpp"

#include <gtest/gtest.h>

#include <map>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/json.hpp"
#include "test_vectors.hpp"

namespace agent_mesh {
namespace {

using test::hex;
using test::load_vectors;
using test::str;

constexpr std::int64_t kDay = 24LL * 60 * 60 * 1000;

// The named identities of keys.json, by name.
std::map<std::string, KeyPair> named_keys() {
  std::map<std::string, KeyPair> keys;
  const auto vectors = load_vectors("agent-mesh/keys.json");
  for (const auto& identity : vectors.at("identities").as_array()) {
    keys.emplace(str(identity.at("name")), *KeyPair::from_seed(hex(identity.at("seed_hex").as_string())));
  }
  return keys;
}

KeyPair key_named(const std::string& name) { return named_keys().at(name); }

void expect_error(const Status& status, Errc code, std::string_view message_part) {
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code, code) << status.error().describe();
  EXPECT_NE(status.error().message.find(message_part), std::string::npos)
      << "message \"" << status.error().message << "\" lacks \"" << message_part << "\"";
}

template <class T>
void expect_error(const Result<T>& result, Errc code, std::string_view message_part) {
  ASSERT_FALSE(result.ok()) << "accepted";
  EXPECT_EQ(result.error().code, code) << result.error().describe();
  EXPECT_NE(result.error().message.find(message_part), std::string::npos)
      << "message \"" << result.error().message << "\" lacks \"" << message_part << "\"";
}

// The verdict of a receiver: parse (signature required), then verify.
Status receive_revocation(std::string_view text) {
  auto revocation = Revocation::parse(text);
  if (!revocation) return std::move(revocation).error();
  return revocation->verify();
}

Status receive_rotation(std::string_view text) {
  auto rotation = Rotation::parse(text);
  if (!rotation) return std::move(rotation).error();
  return rotation->verify();
}

// ---- revocation vectors (revocation-rotation.json) ----

TEST(RevocationVectors, ValidOnesVerifyAndReSigningReproducesThem) {
  const auto vectors = load_vectors("agent-mesh/revocation-rotation.json");
  const auto& valid = vectors.at("revocations").at("valid").as_array();
  ASSERT_EQ(valid.size(), 1u);
  for (const auto& v : valid) {
    SCOPED_TRACE(str(v.at("name")));
    const std::string text = boost::json::serialize(v.at("object"));
    auto revocation = Revocation::parse(text);
    ASSERT_TRUE(revocation.ok()) << revocation.error().describe();
    ASSERT_TRUE(revocation->verify().ok()) << revocation->verify().error().describe();
    EXPECT_EQ(revocation->signing_input(), str(v.at("signing_input_jcs")));
    EXPECT_EQ(revocation->to_json(), v.at("object").as_object());

    Revocation copy = *revocation;
    copy.signature.reset();
    copy.sign(key_named(str(v.at("signer"))));
    EXPECT_EQ(base64url_encode(*copy.signature), str(v.at("object").at("signature")));

    auto again = Revocation::parse(revocation->serialize());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *revocation);
  }
}

TEST(RevocationVectors, InvalidOnesAreRefusedForTheirReason) {
  const auto vectors = load_vectors("agent-mesh/revocation-rotation.json");
  const auto& invalid = vectors.at("revocations").at("invalid").as_array();
  ASSERT_EQ(invalid.size(), 6u);
  const std::map<std::string, std::string> message_for_reason = {
      {"bad_signature", "revocation: signature does not verify for agent_id"},
      {"bad_signature_encoding", "revocation: signature must be base64url of 64 bytes"},
      {"bad_agent_id", "revocation: agent_id: agent ID is not canonical base64url"},
      {"missing_signature", "revocation: missing member \"signature\""},
  };
  for (const auto& v : invalid) {
    const std::string reason = str(v.at("reason"));
    SCOPED_TRACE(str(v.at("name")) + " (" + reason + ")");
    expect_error(receive_revocation(boost::json::serialize(v.at("object"))), Errc::bad_request,
                 message_for_reason.at(reason));
  }
}

// ---- revocations built here ----

TEST(RevocationTest, SignVerifyRoundTrip) {
  const KeyPair key = KeyPair::generate();
  Revocation revocation{key.agent_id(), "laptop stolen", 1764000000123, std::nullopt};
  EXPECT_FALSE(revocation.verify().ok());
  revocation.sign(key);
  ASSERT_TRUE(revocation.verify().ok());
  auto parsed = Revocation::parse(revocation.serialize());
  ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
  EXPECT_TRUE(parsed->verify().ok());
  EXPECT_EQ(*parsed, revocation);

  Revocation tampered = revocation;
  tampered.timestamp += 1;
  expect_error(tampered.verify(), Errc::bad_request, "does not verify");
}

TEST(RevocationTest, ASignatureOfAnotherPurposeIsRefused) {
  const KeyPair alice = key_named("alice");
  Revocation revocation{alice.agent_id(), "key compromised", 1764000000000, std::nullopt};
  for (const Purpose other : {Purpose::rotate, Purpose::card, Purpose::envelope, Purpose::auth, Purpose::http}) {
    revocation.signature = alice.sign(other, as_bytes(revocation.signing_input()));
    expect_error(revocation.verify(), Errc::bad_request, "revocation: signature does not verify");
  }
  revocation.signature = alice.sign(Purpose::revoke, as_bytes(revocation.signing_input()));
  EXPECT_TRUE(revocation.verify().ok());
}

TEST(RevocationTest, AdminRevocationHasNoSignature) {
  const std::string admin =
      R"({"agent_id":"vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaU","reason":"lost","timestamp":1764000000000})";
  expect_error(Revocation::parse(admin), Errc::bad_request, "revocation: missing member \"signature\"");
  auto parsed = Revocation::parse(admin, /*require_signature=*/false);
  ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
  EXPECT_FALSE(parsed->signature.has_value());
  expect_error(parsed->verify(), Errc::bad_request, "revocation: missing signature");
  EXPECT_EQ(parsed->serialize(), admin);

  // Without require_signature a present signature is still read and checked.
  const auto vectors = load_vectors("agent-mesh/revocation-rotation.json");
  const std::string self_signed =
      boost::json::serialize(vectors.at("revocations").at("valid").at(0).at("object"));
  auto optional = Revocation::parse(self_signed, false);
  ASSERT_TRUE(optional.ok());
  ASSERT_TRUE(optional->signature.has_value());
  EXPECT_TRUE(optional->verify().ok());
  expect_error(Revocation::parse(R"({"agent_id":"vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaU","reason":"",)"
                                 R"("timestamp":1,"signature":"AAAA"})",
                                 false),
               Errc::bad_request, "revocation: signature must be base64url of 64 bytes");
}

TEST(RevocationTest, EveryRejection) {
  const std::string id = "vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaU";
  auto object = [&](const std::string& reason_json, const std::string& extra = "") {
    return R"({"agent_id":")" + id + R"(","reason":)" + reason_json + R"(,"timestamp":1764000000000)" + extra + "}";
  };
  const bool admin = false;  // these are about structure, not the signature
  expect_error(Revocation::parse("[]", admin), Errc::bad_request, "revocation must be a JSON object");
  expect_error(Revocation::parse("{", admin), Errc::bad_request, "revocation: ");
  expect_error(Revocation::parse(object("\"x\"", R"(,"expires":1)"), admin), Errc::bad_request,
               "revocation: unknown member \"expires\"");
  expect_error(Revocation::parse(object("null"), admin), Errc::bad_request, "revocation: reason must not be null");
  expect_error(Revocation::parse(object("7"), admin), Errc::bad_request, "revocation: reason must be a string");
  const std::string at_limit(limits::max_revocation_reason_bytes, 'r');
  EXPECT_TRUE(Revocation::parse(object("\"" + at_limit + "\""), admin).ok());
  expect_error(Revocation::parse(object("\"" + at_limit + "r\""), admin), Errc::bad_request,
               "revocation: reason must be at most 1024 bytes, got 1025");
  expect_error(Revocation::parse(R"({"reason":"x","timestamp":1})", admin), Errc::bad_request,
               "revocation: missing member \"agent_id\"");
  expect_error(Revocation::parse(R"({"agent_id":"abc","reason":"x","timestamp":1})", admin), Errc::bad_request,
               "revocation: agent_id: agent ID must be 43 characters");
  expect_error(Revocation::parse(R"({"agent_id":")" + id + R"(","reason":"x","timestamp":-1})", admin),
               Errc::bad_request, "revocation: timestamp must not be negative");
  expect_error(Revocation::parse(R"({"agent_id":")" + id + R"(","reason":"x","timestamp":1.5})", admin),
               Errc::bad_request, "revocation: timestamp must be an integer");
  expect_error(Revocation::parse(R"({"agent_id":")" + id + R"(","reason":"x","timestamp":"1"})", admin),
               Errc::bad_request, "revocation: timestamp must be an integer");
  expect_error(Revocation::parse(R"({"agent_id":")" + id + R"(","reason":"x"})", admin), Errc::bad_request,
               "revocation: missing member \"timestamp\"");
  expect_error(Revocation::parse(object("\"x\"", R"(,"signature":null)")), Errc::bad_request,
               "revocation: signature must not be null");
  expect_error(Revocation::parse(std::string(limits::max_key_lifecycle_object_bytes + 1, ' '), admin),
               Errc::too_large, "revocation: ");
}

// ---- rotation vectors ----

TEST(RotationVectors, ValidOnesVerifyAndReSigningReproducesThem) {
  const auto vectors = load_vectors("agent-mesh/revocation-rotation.json");
  const auto& valid = vectors.at("rotations").at("valid").as_array();
  ASSERT_EQ(valid.size(), 1u);
  for (const auto& v : valid) {
    SCOPED_TRACE(str(v.at("name")));
    auto rotation = Rotation::parse(boost::json::serialize(v.at("object")));
    ASSERT_TRUE(rotation.ok()) << rotation.error().describe();
    ASSERT_TRUE(rotation->verify().ok()) << rotation->verify().error().describe();
    EXPECT_EQ(rotation->signing_input(), str(v.at("signing_input_jcs")));
    EXPECT_EQ(rotation->to_json(), v.at("object").as_object());
    // The vector uses the default grace period.
    EXPECT_EQ(rotation->grace_until - rotation->timestamp, Rotation::default_grace_ms);

    Rotation copy = *rotation;
    copy.signature_old = {};
    copy.signature_new = {};
    copy.sign(key_named(str(v.at("old"))), key_named(str(v.at("new"))));
    EXPECT_EQ(base64url_encode(copy.signature_old), str(v.at("object").at("signature_old")));
    EXPECT_EQ(base64url_encode(copy.signature_new), str(v.at("object").at("signature_new")));

    auto created = Rotation::create(key_named(str(v.at("old"))), key_named(str(v.at("new"))), rotation->timestamp);
    ASSERT_TRUE(created.ok());
    EXPECT_EQ(*created, *rotation);
  }
}

TEST(RotationVectors, InvalidOnesAreRefusedForTheirReason) {
  const auto vectors = load_vectors("agent-mesh/revocation-rotation.json");
  const auto& invalid = vectors.at("rotations").at("invalid").as_array();
  ASSERT_EQ(invalid.size(), 6u);
  const std::map<std::string, std::string> message_for_reason = {
      {"bad_signature_old", "rotation: signature_old does not verify for old"},
      {"bad_signature_new", "rotation: signature_new does not verify for new"},
      {"missing_signature", "rotation: missing member \"signature_new\""},
  };
  for (const auto& v : invalid) {
    const std::string reason = str(v.at("reason"));
    SCOPED_TRACE(str(v.at("name")) + " (" + reason + ")");
    expect_error(receive_rotation(boost::json::serialize(v.at("object"))), Errc::bad_request,
                 message_for_reason.at(reason));
  }
}

// ---- rotation rules (protocol §7) ----

class RotationWindow : public ::testing::Test {
 protected:
  const KeyPair alice = key_named("alice");
  const KeyPair carol = key_named("carol");
  static constexpr std::int64_t kTimestamp = 1764000000000;

  // A rotation signed by both keys with this window, as JSON text.
  std::string signed_text(const KeyPair& old_key, const KeyPair& new_key, std::int64_t grace_until) const {
    Rotation rotation;
    rotation.old_id = old_key.agent_id();
    rotation.new_id = new_key.agent_id();
    rotation.timestamp = kTimestamp;
    rotation.grace_until = grace_until;
    rotation.sign(old_key, new_key);
    return rotation.serialize();
  }
};

TEST_F(RotationWindow, OldAndNewMustDiffer) {
  const std::string text = signed_text(alice, alice, kTimestamp + kDay);
  expect_error(Rotation::parse(text), Errc::bad_request, "rotation: old and new must be different agent IDs");
  Rotation built;
  built.old_id = alice.agent_id();
  built.new_id = alice.agent_id();
  built.timestamp = kTimestamp;
  built.grace_until = kTimestamp + kDay;
  built.sign(alice, alice);
  expect_error(built.verify(), Errc::bad_request, "old and new must be different");
  expect_error(Rotation::create(alice, alice, kTimestamp), Errc::bad_request, "old and new must be different");
}

TEST_F(RotationWindow, GraceUntilMustBeLaterThanTimestamp) {
  for (const std::int64_t grace_until : {kTimestamp, kTimestamp - 1, std::int64_t{0}}) {
    SCOPED_TRACE(grace_until);
    const std::string text = signed_text(alice, carol, grace_until);
    expect_error(Rotation::parse(text), Errc::bad_request, "rotation: grace_until must be later than timestamp");
    auto built = *Rotation::create(alice, carol, kTimestamp);
    built.grace_until = grace_until;
    built.sign(alice, carol);
    expect_error(built.verify(), Errc::bad_request, "grace_until must be later than timestamp");
  }
}

TEST_F(RotationWindow, GraceIsAtMostSevenDays) {
  EXPECT_EQ(Rotation::max_grace_ms, 7 * kDay);
  auto at_limit = Rotation::parse(signed_text(alice, carol, kTimestamp + 7 * kDay));
  ASSERT_TRUE(at_limit.ok()) << at_limit.error().describe();
  EXPECT_TRUE(at_limit->verify().ok());
  auto shortest = Rotation::parse(signed_text(alice, carol, kTimestamp + 1));
  ASSERT_TRUE(shortest.ok());
  EXPECT_TRUE(shortest->verify().ok());

  expect_error(Rotation::parse(signed_text(alice, carol, kTimestamp + 7 * kDay + 1)), Errc::bad_request,
               "rotation: grace_until must be at most 7 days");
  Rotation built = *at_limit;
  built.grace_until += 1;
  built.sign(alice, carol);
  expect_error(built.verify(), Errc::bad_request, "at most 7 days");

  EXPECT_TRUE(Rotation::create(alice, carol, kTimestamp, 7 * kDay).ok());
  expect_error(Rotation::create(alice, carol, kTimestamp, 7 * kDay + 1), Errc::bad_request, "at most 7 days");
  expect_error(Rotation::create(alice, carol, kTimestamp, 0), Errc::bad_request, "positive");
  expect_error(Rotation::create(alice, carol, -1), Errc::bad_request, "timestamp");
}

TEST_F(RotationWindow, NegativeTimestampIsRefused) {
  Rotation built = *Rotation::create(alice, carol, kTimestamp);
  built.timestamp = -5;
  built.grace_until = 10;
  expect_error(built.verify(), Errc::bad_request, "rotation: timestamp must not be negative");
  expect_error(Rotation::parse(built.serialize()), Errc::bad_request, "rotation: timestamp must not be negative");
}

TEST_F(RotationWindow, GracePeriodBoundaries) {
  const Rotation rotation = *Rotation::create(alice, carol, kTimestamp);
  EXPECT_EQ(Rotation::default_grace_ms, kDay);
  EXPECT_EQ(rotation.grace_until, kTimestamp + kDay);
  EXPECT_TRUE(rotation.is_in_grace(kTimestamp - 1));
  EXPECT_TRUE(rotation.is_in_grace(kTimestamp));
  EXPECT_TRUE(rotation.is_in_grace(kTimestamp + kDay - 1));
  EXPECT_FALSE(rotation.is_in_grace(kTimestamp + kDay));  // from grace_until on, old is revoked
  EXPECT_FALSE(rotation.is_in_grace(kTimestamp + 2 * kDay));
}

TEST_F(RotationWindow, ASignatureOfAnotherPurposeIsRefused) {
  Rotation rotation = *Rotation::create(alice, carol, kTimestamp);
  ASSERT_TRUE(rotation.verify().ok());
  const std::string message = rotation.signing_input();
  const Rotation good = rotation;
  for (const Purpose other : {Purpose::revoke, Purpose::card, Purpose::envelope, Purpose::auth, Purpose::http}) {
    rotation = good;
    rotation.signature_old = alice.sign(other, as_bytes(message));
    expect_error(rotation.verify(), Errc::bad_request, "signature_old does not verify");
    rotation = good;
    rotation.signature_new = carol.sign(other, as_bytes(message));
    expect_error(rotation.verify(), Errc::bad_request, "signature_new does not verify");
  }
  // A signature by a third key, even for the right purpose, proves nothing.
  rotation = good;
  rotation.signature_new = key_named("bob").sign(Purpose::rotate, as_bytes(message));
  expect_error(rotation.verify(), Errc::bad_request, "signature_new does not verify");
}

TEST_F(RotationWindow, RoundTripThroughText) {
  const Rotation rotation = *Rotation::create(alice, carol, kTimestamp, 3 * kDay);
  auto parsed = Rotation::parse(rotation.serialize());
  ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
  EXPECT_EQ(*parsed, rotation);
  EXPECT_TRUE(parsed->verify().ok());
}

TEST(RotationTest, EveryStructuralRejection) {
  const auto vectors = load_vectors("agent-mesh/revocation-rotation.json");
  const boost::json::object valid = vectors.at("rotations").at("valid").at(0).at("object").as_object();
  auto with = [&](std::string_view member, const boost::json::value& value) {
    boost::json::object changed = valid;
    changed[member] = value;
    return boost::json::serialize(changed);
  };
  auto without = [&](std::string_view member) {
    boost::json::object changed = valid;
    changed.erase(member);
    return boost::json::serialize(changed);
  };
  expect_error(Rotation::parse("[]"), Errc::bad_request, "rotation must be a JSON object");
  expect_error(Rotation::parse("{\"old\":"), Errc::bad_request, "rotation: ");
  expect_error(Rotation::parse(with("reason", "x")), Errc::bad_request, "rotation: unknown member \"reason\"");
  for (const char* member : {"old", "new", "timestamp", "grace_until", "signature_old", "signature_new"}) {
    SCOPED_TRACE(member);
    expect_error(Rotation::parse(without(member)), Errc::bad_request,
                 "rotation: missing member \"" + std::string(member) + "\"");
    expect_error(Rotation::parse(with(member, nullptr)), Errc::bad_request, "must not be null");
  }
  expect_error(Rotation::parse(with("old", "vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaV")), Errc::bad_request,
               "rotation: old: agent ID is not canonical base64url");
  expect_error(Rotation::parse(with("new", "carol")), Errc::bad_request,
               "rotation: new: agent ID must be 43 characters");
  expect_error(Rotation::parse(with("grace_until", 1764086400000.5)), Errc::bad_request,
               "rotation: grace_until must be an integer");
  expect_error(Rotation::parse(with("timestamp", "1764000000000")), Errc::bad_request,
               "rotation: timestamp must be an integer");
  expect_error(Rotation::parse(with("signature_old", "AAAA")), Errc::bad_request,
               "rotation: signature_old must be base64url of 64 bytes");
  expect_error(Rotation::parse(with("signature_new", 5)), Errc::bad_request, "rotation: signature_new must be a string");
  expect_error(Rotation::parse(std::string(limits::max_key_lifecycle_object_bytes + 1, ' ')), Errc::too_large,
               "rotation: ");
}

}  // namespace
}  // namespace agent_mesh
