// Agent identity (protocol §1, §2): Wycheproof Ed25519/X25519, the agent-mesh key, auth and
// Ed25519 edge-case vectors, domain separation, and key files on disk.
#include "agent_mesh/identity.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/limits.hpp"
#include "test_vectors.hpp"

namespace agent_mesh {
namespace {

namespace json = boost::json;
using test::hex;
using test::load_vectors;
using test::str;

constexpr std::array<Purpose, 6> kAllPurposes = {Purpose::auth,   Purpose::envelope, Purpose::revoke,
                                                 Purpose::rotate, Purpose::card,     Purpose::http};

// The test's own oracle calls libsodium directly; make sure it is initialised (idempotent).
void init_sodium() { ASSERT_GE(sodium_init(), 0); }

using test::fixed;

Bytes concat(ByteView a, ByteView b) {
  Bytes out(a.begin(), a.end());
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

Bytes b64(std::string_view text) {
  auto bytes = base64url_decode(text);
  if (!bytes.ok()) throw std::runtime_error("bad base64url in test vector: " + std::string(text));
  return std::move(bytes).value();
}

template <class T>
void expect_error(const Result<T>& result, Errc code, const std::string& substring) {
  ASSERT_FALSE(result.ok()) << "expected an error containing \"" << substring << "\"";
  EXPECT_EQ(result.error().code, code) << result.error().describe();
  EXPECT_NE(result.error().message.find(substring), std::string::npos)
      << "message \"" << result.error().message << "\" lacks \"" << substring << "\"";
}

// Seeds of the keys.json identities, by agent ID, so vectors signed by them can be re-signed.
std::map<std::string, Bytes> seeds_by_agent_id() {
  std::map<std::string, Bytes> seeds;
  // Keep the document alive: a range-for does not extend the life of a temporary it reaches into.
  const json::value vectors = load_vectors("agent-mesh/keys.json");
  for (const auto& identity : vectors.at("identities").as_array()) {
    seeds[str(identity.at("agent_id"))] = hex(str(identity.at("seed_hex")));
  }
  return seeds;
}

KeyPair key_pair_from_seed(ByteView seed) {
  auto pair = KeyPair::from_seed(seed);
  if (!pair.ok()) throw std::runtime_error("seed refused: " + pair.error().describe());
  return std::move(pair).value();
}

AgentId agent_id(std::string_view text) {
  auto id = AgentId::parse(text);
  if (!id.ok()) throw std::runtime_error("agent ID refused: " + id.error().describe());
  return std::move(id).value();
}

// ---------------------------------------------------------------------------------------------
// Wycheproof Ed25519: libsodium's verdicts, which protocol §1 adopts.

TEST(WycheproofEd25519, EveryCaseMatchesTheExpectedVerdict) {
  init_sodium();
  const json::value vectors = load_vectors("wycheproof-ed25519_test.json");
  std::size_t cases = 0;
  for (const auto& group : vectors.at("testGroups").as_array()) {
    const Bytes public_key = hex(str(group.at("publicKey").at("pk")));
    for (const auto& test : group.at("tests").as_array()) {
      ++cases;
      const auto id = test.at("tcId").as_int64();
      SCOPED_TRACE("tcId " + std::to_string(id) + ": " + str(test.at("comment")));
      const Bytes message = hex(str(test.at("msg")));
      const Bytes signature = hex(str(test.at("sig")));
      const std::string expected = str(test.at("result"));
      const bool verdict = ed25519_verify(public_key, message, signature);
      if (expected == "valid") {
        EXPECT_TRUE(verdict);
      } else if (expected == "invalid") {
        EXPECT_FALSE(verdict);
      } else {
        ASSERT_EQ(expected, "acceptable");
        // protocol §1 adopts libsodium's verdict for the cases Wycheproof leaves open: after the
        // 64-byte length check, whatever crypto_sign_verify_detached says.
        const bool libsodium_verdict =
            signature.size() == crypto_sign_BYTES && public_key.size() == crypto_sign_PUBLICKEYBYTES &&
            crypto_sign_verify_detached(signature.data(), message.data(), message.size(),
                                        public_key.data()) == 0;
        EXPECT_EQ(verdict, libsodium_verdict);
      }
    }
  }
  EXPECT_EQ(cases, vectors.at("numberOfTests").as_int64());
  EXPECT_GT(cases, 100u);
}

// ---------------------------------------------------------------------------------------------
// Wycheproof X25519.

TEST(WycheproofX25519, EveryCaseMatchesTheExpectedVerdict) {
  const json::value vectors = load_vectors("wycheproof-x25519_test.json");
  std::size_t cases = 0;
  std::size_t zero_rejections = 0;
  for (const auto& group : vectors.at("testGroups").as_array()) {
    for (const auto& test : group.at("tests").as_array()) {
      ++cases;
      SCOPED_TRACE("tcId " + std::to_string(test.at("tcId").as_int64()) + ": " +
                   str(test.at("comment")));
      const auto secret = fixed<32>(hex(str(test.at("private"))));
      const auto public_key = fixed<32>(hex(str(test.at("public"))));
      const auto shared = fixed<32>(hex(str(test.at("shared"))));
      const std::string expected = str(test.at("result"));
      const bool shared_is_zero = std::all_of(shared.begin(), shared.end(), [](std::uint8_t b) { return b == 0; });
      const auto result = x25519(secret, public_key);
      if (expected == "valid") {
        ASSERT_TRUE(result.ok()) << result.error().describe();
        EXPECT_EQ(*result, shared);
      } else if (expected == "acceptable") {
        if (shared_is_zero) {
          // protocol §1: a DH whose output is all zeros aborts the handshake.
          ++zero_rejections;
          expect_error(result, Errc::bad_request, "all zeros");
        } else {
          // Otherwise we take libsodium's verdict, which computes RFC 7748 X25519 for every such
          // input (twist points, non-canonical encodings): the exact shared secret.
          ASSERT_TRUE(result.ok()) << result.error().describe();
          EXPECT_EQ(*result, shared);
        }
      } else {
        ASSERT_EQ(expected, "invalid");
        EXPECT_FALSE(result.ok());
      }
    }
  }
  EXPECT_EQ(cases, vectors.at("numberOfTests").as_int64());
  EXPECT_GT(zero_rejections, 0u);
}

// ---------------------------------------------------------------------------------------------
// keys.json: identities, static DH, key file texts.

TEST(KeyVectors, IdentitiesDeriveEveryKeyFromTheSeed) {
  const json::value vectors = load_vectors("agent-mesh/keys.json");
  const auto& identities = vectors.at("identities").as_array();
  ASSERT_EQ(identities.size(), 4u);
  for (const auto& identity : identities) {
    SCOPED_TRACE(str(identity.at("name")));
    const Bytes seed = hex(str(identity.at("seed_hex")));
    const std::string secret_key_text = str(identity.at("secret_key_text"));
    const std::string expected_id = str(identity.at("agent_id"));
    const Bytes public_key = hex(str(identity.at("ed25519_public_hex")));

    const KeyPair pair = key_pair_from_seed(seed);
    EXPECT_EQ(pair.agent_id().str(), expected_id);
    EXPECT_EQ(Bytes(pair.agent_id().public_key().begin(), pair.agent_id().public_key().end()), public_key);
    EXPECT_EQ(pair.key_file_text(), secret_key_text + "\n");
    EXPECT_EQ(hex_encode(pair.x25519_secret()), str(identity.at("x25519_private_hex")));
    EXPECT_EQ(hex_encode(pair.agent_id().x25519_public()), str(identity.at("x25519_public_hex")));

    const auto from_text = KeyPair::from_key_file_text(secret_key_text);
    ASSERT_TRUE(from_text.ok()) << from_text.error().describe();
    EXPECT_EQ(from_text->agent_id(), pair.agent_id());
    EXPECT_EQ(from_text->key_file_text(), pair.key_file_text());

    const auto parsed = AgentId::parse(expected_id);
    ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
    EXPECT_EQ(*parsed, pair.agent_id());
    EXPECT_EQ(parsed->str(), expected_id);
    const auto from_key = AgentId::from_public_key(public_key);
    ASSERT_TRUE(from_key.ok()) << from_key.error().describe();
    EXPECT_EQ(from_key->str(), expected_id);
  }
}

TEST(KeyVectors, StaticDhAgreesBothWays) {
  const json::value vectors = load_vectors("agent-mesh/keys.json");
  std::map<std::string, KeyPair> pairs;
  for (const auto& identity : vectors.at("identities").as_array()) {
    pairs.emplace(str(identity.at("name")), key_pair_from_seed(hex(str(identity.at("seed_hex")))));
  }
  const auto& cases = vectors.at("static_dh").as_array();
  ASSERT_FALSE(cases.empty());
  for (const auto& dh : cases) {
    const KeyPair& a = pairs.at(str(dh.at("a")));
    const KeyPair& b = pairs.at(str(dh.at("b")));
    const auto a_side = x25519(a.x25519_secret(), b.agent_id().x25519_public());
    const auto b_side = x25519(b.x25519_secret(), a.agent_id().x25519_public());
    ASSERT_TRUE(a_side.ok());
    ASSERT_TRUE(b_side.ok());
    EXPECT_EQ(hex_encode(*a_side), str(dh.at("shared_hex")));
    EXPECT_EQ(*a_side, *b_side);
  }
}

TEST(KeyVectors, ValidKeyFileTextsParse) {
  const json::value vectors = load_vectors("agent-mesh/keys.json");
  const auto& valid = vectors.at("secret_key_files").at("valid").as_array();
  ASSERT_EQ(valid.size(), 2u);
  for (const auto& file : valid) {
    const std::string text = str(file.at("file_text"));
    SCOPED_TRACE(text);
    const auto pair = KeyPair::from_key_file_text(text);
    ASSERT_TRUE(pair.ok()) << pair.error().describe();
    const KeyPair expected = key_pair_from_seed(hex(str(file.at("seed_hex"))));
    EXPECT_EQ(pair->agent_id(), expected.agent_id());
    EXPECT_EQ(pair->key_file_text(), expected.key_file_text());
  }
}

TEST(KeyVectors, InvalidKeyFileTextsAreRefusedWithSpecificMessages) {
  // The message each vector's `reason` must produce. A reason missing here fails the test, so a
  // new vector gets a deliberate expectation.
  const std::map<std::string, std::string> expected_message = {
      {"more than one trailing newline", "more than one line"},
      {"CR before the newline", "carriage return"},
      {"leading whitespace", "spaces or tabs"},
      {"trailing space", "spaces or tabs"},
      {"padding", "padding"},
      {"42 characters", "got 42 characters"},
      {"44 characters", "got 44 characters"},
      {"non-canonical base64url (non-zero unused trailing bits): a lenient decoder would return the "
       "same seed",
       "non-zero unused trailing bits"},
      {"character outside the base64url alphabet", "outside the base64url alphabet"},
  };
  const json::value vectors = load_vectors("agent-mesh/keys.json");
  const auto& invalid = vectors.at("secret_key_files").at("invalid").as_array();
  ASSERT_EQ(invalid.size(), 9u);
  for (const auto& file : invalid) {
    const std::string text = str(file.at("file_text"));
    const std::string reason = str(file.at("reason"));
    SCOPED_TRACE(reason);
    ASSERT_TRUE(expected_message.count(reason)) << "no expectation for reason: " << reason;
    const auto pair = KeyPair::from_key_file_text(text);
    expect_error(pair, Errc::bad_request, expected_message.at(reason));
    // The file holds a secret: no message may quote it (not even a fragment).
    EXPECT_EQ(pair.error().message.find("oaGhoaGh"), std::string::npos);
  }
}

TEST(KeyVectors, KeyFileTextEdgeCases) {
  expect_error(KeyPair::from_key_file_text(""), Errc::bad_request, "got 0 characters");
  expect_error(KeyPair::from_key_file_text("\n"), Errc::bad_request, "got 0 characters");
  expect_error(KeyPair::from_key_file_text(std::string(1000, 'A')), Errc::bad_request,
               "got 1000 characters");
  expect_error(KeyPair::from_key_file_text("oaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaE\t"),
               Errc::bad_request, "spaces or tabs");
  expect_error(KeyPair::from_key_file_text("\noaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaE"),
               Errc::bad_request, "more than one line");
  expect_error(KeyPair::from_key_file_text("oaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoa/"),
               Errc::bad_request, "outside the base64url alphabet");
  std::string with_nul = "oaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaE";
  with_nul[5] = '\0';
  expect_error(KeyPair::from_key_file_text(with_nul), Errc::bad_request,
               "outside the base64url alphabet");
}

// ---------------------------------------------------------------------------------------------
// ed25519-edge-cases.json: where libraries disagree, libsodium's verdict is the protocol's.

TEST(Ed25519EdgeCases, VerifyVerdictsAreLibsodiums) {
  const json::value vectors = load_vectors("agent-mesh/ed25519-edge-cases.json");
  const auto& cases = vectors.at("verify").as_array();
  ASSERT_EQ(cases.size(), 12u);
  for (const auto& test : cases) {
    SCOPED_TRACE(str(test.at("name")));
    const Bytes public_key = hex(str(test.at("public_key_hex")));
    const Bytes message = hex(str(test.at("message_hex")));
    const Bytes signature = hex(str(test.at("signature_hex")));
    EXPECT_EQ(ed25519_verify(public_key, message, signature), test.at("expected").as_bool());
  }
}

TEST(Ed25519EdgeCases, AgentIdValidityIsCryptoCoreEd25519IsValidPoint) {
  const json::value vectors = load_vectors("agent-mesh/ed25519-edge-cases.json");
  const auto& cases = vectors.at("agent_ids").as_array();
  ASSERT_EQ(cases.size(), 37u);
  for (const auto& test : cases) {
    SCOPED_TRACE(str(test.at("name")));
    const std::string text = str(test.at("agent_id"));
    const Bytes public_key = hex(str(test.at("public_key_hex")));
    const bool valid = test.at("valid_agent_id").as_bool();
    // Every agent_id in this file is the canonical encoding of its key: only the point differs.
    ASSERT_EQ(base64url_encode(public_key), text);

    const auto parsed = AgentId::parse(text);
    const auto from_key = AgentId::from_public_key(public_key);
    EXPECT_EQ(parsed.ok(), valid);
    EXPECT_EQ(from_key.ok(), valid);
    if (valid) {
      EXPECT_EQ(parsed->str(), text);
      EXPECT_EQ(from_key->str(), text);
      EXPECT_EQ(*parsed, *from_key);
    } else {
      expect_error(parsed, Errc::bad_request, "not a valid Ed25519 public key");
      expect_error(from_key, Errc::bad_request, "not a valid Ed25519 public key");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// auth.json: relay authentication (protocol §6) and registry HTTP signatures.

TEST(AuthVectors, SignaturesOverNonceAndRelayIdVerifyAndReproduce) {
  const auto seeds = seeds_by_agent_id();
  const json::value vectors = load_vectors("agent-mesh/auth.json");
  EXPECT_EQ(signature_prefix(Purpose::auth), str(vectors.at("signature_prefix_utf8")));
  const auto& cases = vectors.at("cases").as_array();
  ASSERT_EQ(cases.size(), 3u);
  for (const auto& test : cases) {
    SCOPED_TRACE(str(test.at("name")));
    const AgentId signer = agent_id(str(test.at("agent_id")));
    const Bytes nonce = hex(str(test.at("nonce_hex")));
    ASSERT_EQ(nonce, b64(str(test.at("nonce_b64url"))));
    const Bytes message = concat(nonce, as_bytes(str(test.at("relay_id"))));
    EXPECT_EQ(hex_encode(signing_input(Purpose::auth, message)), str(test.at("signed_bytes_hex")));

    const std::string signature_text = str(test.at("signature_b64url"));
    const Bytes signature = b64(signature_text);
    const auto verified = verify_signature(signer, Purpose::auth, message, signature);
    EXPECT_TRUE(verified.ok()) << verified.error().describe();

    // Ed25519 is deterministic: the vector's signer reproduces the signature byte for byte.
    const KeyPair pair = key_pair_from_seed(seeds.at(signer.str()));
    ASSERT_EQ(pair.agent_id(), signer);
    EXPECT_EQ(base64url_encode(pair.sign(Purpose::auth, message)), signature_text);
  }
}

TEST(AuthVectors, RejectedSignaturesFail) {
  const json::value vectors = load_vectors("agent-mesh/auth.json");
  const auto& cases = vectors.at("rejected_signatures").as_array();
  ASSERT_EQ(cases.size(), 6u);
  for (const auto& test : cases) {
    SCOPED_TRACE(str(test.at("name")));
    ASSERT_EQ(str(test.at("verdict")), "reject");
    const AgentId signer = agent_id(str(test.at("agent_id")));
    const Bytes message = concat(b64(str(test.at("nonce_b64url"))), as_bytes(str(test.at("relay_id"))));
    const Bytes signature = b64(str(test.at("signature_b64url")));
    expect_error(verify_signature(signer, Purpose::auth, message, signature), Errc::bad_request,
                 "signature does not verify");
  }
}

TEST(AuthVectors, HttpSignatures) {
  const auto seeds = seeds_by_agent_id();
  const json::value vectors = load_vectors("agent-mesh/auth.json");
  const auto& http = vectors.at("http_signatures");
  const auto& cases = http.at("cases").as_array();
  ASSERT_EQ(cases.size(), 2u);
  for (const auto& test : cases) {
    SCOPED_TRACE(str(test.at("name")));
    const AgentId signer = agent_id(str(test.at("agent_id")));
    const std::string message = str(test.at("message_utf8"));
    EXPECT_EQ(hex_encode(signing_input(Purpose::http, as_bytes(message))),
              str(test.at("signed_bytes_hex")));
    const std::string signature_text = str(test.at("signature_b64url"));
    const auto verified = verify_signature(signer, Purpose::http, as_bytes(message), b64(signature_text));
    EXPECT_TRUE(verified.ok()) << verified.error().describe();
    const KeyPair pair = key_pair_from_seed(seeds.at(signer.str()));
    EXPECT_EQ(base64url_encode(pair.sign(Purpose::http, as_bytes(message))), signature_text);
    EXPECT_NE(str(test.at("authorization")).find("sig=" + signature_text), std::string::npos);
  }
  const auto& rejected = http.at("rejected").as_array();
  ASSERT_EQ(rejected.size(), 2u);
  for (const auto& test : rejected) {
    SCOPED_TRACE(str(test.at("name")));
    ASSERT_EQ(str(test.at("verdict")), "reject");
    const AgentId signer = agent_id(str(test.at("agent_id")));
    const std::string message = str(test.at("message_utf8"));
    expect_error(verify_signature(signer, Purpose::http, as_bytes(message),
                                  b64(str(test.at("signature_b64url")))),
                 Errc::bad_request, "signature does not verify");
  }
}

// ---------------------------------------------------------------------------------------------
// Domain separation (protocol §1).

TEST(IdentityDomainSeparation, PrefixesAreExact) {
  EXPECT_EQ(signature_prefix(Purpose::auth), "agent-mesh/v1/auth\n");
  EXPECT_EQ(signature_prefix(Purpose::envelope), "agent-mesh/v1/envelope\n");
  EXPECT_EQ(signature_prefix(Purpose::revoke), "agent-mesh/v1/revoke\n");
  EXPECT_EQ(signature_prefix(Purpose::rotate), "agent-mesh/v1/rotate\n");
  EXPECT_EQ(signature_prefix(Purpose::card), "agent-mesh/v1/card\n");
  EXPECT_EQ(signature_prefix(Purpose::http), "agent-mesh/v1/http\n");
  const std::string message = "payload";
  EXPECT_EQ(as_text(signing_input(Purpose::card, as_bytes(message))), "agent-mesh/v1/card\npayload");
  EXPECT_EQ(as_text(signing_input(Purpose::rotate, {})), "agent-mesh/v1/rotate\n");
}

TEST(IdentityDomainSeparation, ASignatureVerifiesOnlyForItsOwnPurpose) {
  const KeyPair pair = KeyPair::generate();
  const std::string message = "the same bytes for every purpose";
  for (const Purpose signed_for : kAllPurposes) {
    const Signature signature = pair.sign(signed_for, as_bytes(message));
    for (const Purpose checked_for : kAllPurposes) {
      SCOPED_TRACE(std::string(signature_prefix(signed_for)) + " checked as " +
                   std::string(signature_prefix(checked_for)));
      const auto verdict = verify_signature(pair.agent_id(), checked_for, as_bytes(message), signature);
      EXPECT_EQ(verdict.ok(), signed_for == checked_for);
    }
    // The raw primitive sees the prefix as part of the message and nothing else.
    EXPECT_TRUE(ed25519_verify(pair.agent_id().public_key(), signing_input(signed_for, as_bytes(message)),
                               signature));
    EXPECT_FALSE(ed25519_verify(pair.agent_id().public_key(), as_bytes(message), signature));
  }
}

// ---------------------------------------------------------------------------------------------
// Agent IDs, signatures, X25519 and key pairs: every rejection path.

TEST(IdentityAgentId, ParseRejectsWrongLengthsWithoutEchoingInput) {
  expect_error(AgentId::parse(""), Errc::bad_request, "agent ID must be 43 characters, got 0");
  expect_error(AgentId::parse("vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBa"), Errc::bad_request,
               "got 42");
  expect_error(AgentId::parse("vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaU="), Errc::bad_request,
               "got 44");
  const std::string hostile(100000, 'Z');
  const auto result = AgentId::parse(hostile);
  expect_error(result, Errc::bad_request, "got 100000");
  EXPECT_LT(result.error().message.size(), 128u);
  EXPECT_EQ(result.error().message.find("ZZZZ"), std::string::npos);
}

TEST(IdentityAgentId, ParseRejectsNonCanonicalBase64url) {
  // Alice's ID with the last character's unused bits set: a lenient decoder gives Alice's key.
  expect_error(AgentId::parse("vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaV"), Errc::bad_request,
               "agent ID is not canonical base64url");
  expect_error(AgentId::parse("vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBa="), Errc::bad_request,
               "agent ID is not canonical base64url");
  expect_error(AgentId::parse("vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiB+U"), Errc::bad_request,
               "agent ID is not canonical base64url");
  expect_error(AgentId::parse("vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiB U"), Errc::bad_request,
               "agent ID is not canonical base64url");
}

TEST(IdentityAgentId, FromPublicKeyRejectsWrongLength) {
  const Bytes short_key(31, 0x11);
  expect_error(AgentId::from_public_key(short_key), Errc::bad_request, "must be 32 bytes, got 31");
  expect_error(AgentId::from_public_key({}), Errc::bad_request, "must be 32 bytes, got 0");
}

TEST(IdentityAgentId, DefaultIsEmptyAndEqualsNoValidId) {
  const AgentId empty;
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(empty.str(), "");
  const AgentId alice = agent_id("vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaU");
  EXPECT_FALSE(alice.empty());
  EXPECT_NE(empty, alice);
}

TEST(IdentityAgentId, OrderingEqualityAndHashing) {
  const AgentId alice = agent_id("vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaU");
  const AgentId bob = agent_id("cF-6wB9VGYmfQ3vELkAlWumrVL_wDeNDOvfWh9nnGtU");
  const AgentId alice_again = agent_id("vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaU");
  EXPECT_EQ(alice, alice_again);
  EXPECT_NE(alice, bob);
  EXPECT_TRUE(bob < alice);  // 0x70… < 0xbc…: ordered by key bytes
  EXPECT_EQ(std::hash<AgentId>{}(alice), std::hash<AgentId>{}(alice_again));
  EXPECT_EQ(keyed_hash(alice.public_key()), keyed_hash(alice_again.public_key()));
  std::unordered_set<AgentId> set = {alice, bob, alice_again};
  EXPECT_EQ(set.size(), 2u);
  EXPECT_EQ(keyed_hash({}), keyed_hash({}));
}

TEST(IdentitySignatures, VerifyRejectsWrongLengthsBeforeVerifying) {
  const KeyPair pair = KeyPair::generate();
  const std::string message = "hello";
  const Signature signature = pair.sign(Purpose::envelope, as_bytes(message));
  ASSERT_TRUE(verify_signature(pair.agent_id(), Purpose::envelope, as_bytes(message), signature).ok());

  Bytes longer(signature.begin(), signature.end());
  longer.push_back(0);
  expect_error(verify_signature(pair.agent_id(), Purpose::envelope, as_bytes(message), longer),
               Errc::bad_request, "signature must be 64 bytes, got 65");
  const ByteView shorter(signature.data(), 63);
  expect_error(verify_signature(pair.agent_id(), Purpose::envelope, as_bytes(message), shorter),
               Errc::bad_request, "signature must be 64 bytes, got 63");
  expect_error(verify_signature(pair.agent_id(), Purpose::envelope, as_bytes(message), {}),
               Errc::bad_request, "signature must be 64 bytes, got 0");
  EXPECT_FALSE(ed25519_verify(pair.agent_id().public_key(),
                              signing_input(Purpose::envelope, as_bytes(message)), longer));
  EXPECT_FALSE(ed25519_verify(pair.agent_id().public_key(),
                              signing_input(Purpose::envelope, as_bytes(message)), shorter));
  // A public key of the wrong length is refused too, not read past its end.
  const ByteView short_key(pair.agent_id().public_key().data(), 31);
  EXPECT_FALSE(ed25519_verify(short_key, signing_input(Purpose::envelope, as_bytes(message)), signature));
}

TEST(IdentitySignatures, VerifyRejectsTamperingAndEmptySigner) {
  const KeyPair pair = KeyPair::generate();
  const KeyPair other = KeyPair::generate();
  const std::string message = "hello";
  Signature signature = pair.sign(Purpose::card, as_bytes(message));
  expect_error(verify_signature(other.agent_id(), Purpose::card, as_bytes(message), signature),
               Errc::bad_request, "signature does not verify");
  const std::string altered = "hellp";
  expect_error(verify_signature(pair.agent_id(), Purpose::card, as_bytes(altered), signature),
               Errc::bad_request, "signature does not verify");
  expect_error(verify_signature(AgentId{}, Purpose::card, as_bytes(message), signature),
               Errc::bad_request, "empty agent ID");
  signature[10] ^= 0x01;
  expect_error(verify_signature(pair.agent_id(), Purpose::card, as_bytes(message), signature),
               Errc::bad_request, "signature does not verify");
}

TEST(IdentitySignatures, EmptyMessagesSignAndVerify) {
  const KeyPair pair = KeyPair::generate();
  const Signature signature = pair.sign(Purpose::revoke, {});
  EXPECT_TRUE(verify_signature(pair.agent_id(), Purpose::revoke, {}, signature).ok());
  EXPECT_TRUE(ed25519_verify(pair.agent_id().public_key(), signing_input(Purpose::revoke, {}), signature));
}

TEST(IdentityX25519, AllZeroPublicKeyIsRefused) {
  const KeyPair pair = KeyPair::generate();
  const X25519Key zero{};
  expect_error(x25519(pair.x25519_secret(), zero), Errc::bad_request, "all zeros");
}

TEST(IdentityX25519, DerivedKeysAgree) {
  const KeyPair a = KeyPair::generate();
  const KeyPair b = KeyPair::generate();
  const auto ab = x25519(a.x25519_secret(), b.agent_id().x25519_public());
  const auto ba = x25519(b.x25519_secret(), a.agent_id().x25519_public());
  ASSERT_TRUE(ab.ok());
  ASSERT_TRUE(ba.ok());
  EXPECT_EQ(sodium_memcmp(ab->data(), ba->data(), ab->size()), 0);  // secrets: constant-time compare
  // The derived secret really belongs to the derived public key.
  X25519Key public_from_secret{};
  const X25519Key secret = a.x25519_secret();
  ASSERT_EQ(crypto_scalarmult_base(public_from_secret.data(), secret.data()), 0);
  EXPECT_EQ(public_from_secret, a.agent_id().x25519_public());
}

TEST(IdentityKeyPair, GenerateFromSeedAndCopies) {
  const KeyPair first = KeyPair::generate();
  const KeyPair second = KeyPair::generate();
  EXPECT_NE(first.agent_id(), second.agent_id());
  EXPECT_TRUE(AgentId::parse(first.agent_id().str()).ok());

  const auto reloaded = KeyPair::from_key_file_text(first.key_file_text());
  ASSERT_TRUE(reloaded.ok()) << reloaded.error().describe();
  EXPECT_EQ(reloaded->agent_id(), first.agent_id());

  KeyPair copy = first;
  EXPECT_EQ(copy.agent_id(), first.agent_id());
  copy = second;
  EXPECT_EQ(copy.agent_id(), second.agent_id());
  EXPECT_EQ(copy.key_file_text(), second.key_file_text());
  const KeyPair& same = copy;
  copy = same;  // self-assignment keeps the key
  EXPECT_EQ(copy.agent_id(), second.agent_id());
  const std::string message = "m";
  EXPECT_TRUE(verify_signature(second.agent_id(), Purpose::auth, as_bytes(message),
                               copy.sign(Purpose::auth, as_bytes(message)))
                  .ok());
}

TEST(IdentityKeyPair, FromSeedRejectsWrongLengths) {
  expect_error(KeyPair::from_seed(Bytes(31, 1)), Errc::bad_request, "seed must be 32 bytes, got 31");
  expect_error(KeyPair::from_seed(Bytes(64, 1)), Errc::bad_request, "seed must be 32 bytes, got 64");
  expect_error(KeyPair::from_seed({}), Errc::bad_request, "seed must be 32 bytes, got 0");
}

// ---------------------------------------------------------------------------------------------
// Key files on disk (protocol §2).

class KeyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "agent-mesh-identity-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr) << std::strerror(errno);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  static mode_t mode_of(const std::filesystem::path& path) {
    struct stat status {};
    if (::lstat(path.c_str(), &status) != 0) throw std::runtime_error("lstat failed");
    return status.st_mode & 07777;
  }
  static void write_file(const std::filesystem::path& path, std::string_view content, mode_t mode) {
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out << content;
    }
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
  }
  std::vector<std::string> entries_of(const std::filesystem::path& directory) const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(directory)) {
      names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  std::filesystem::path dir_;
};

TEST_F(KeyFileTest, SaveWritesMode0600InNewPrivateDirectoriesAndLoadReadsItBack) {
  const KeyPair pair = KeyPair::generate();
  const auto path = dir_ / "config" / "agent-mesh" / "identity.key";
  const auto saved = pair.save(path);
  ASSERT_TRUE(saved.ok()) << saved.error().describe();
  EXPECT_EQ(mode_of(path), 0600u);
  EXPECT_EQ(mode_of(dir_ / "config"), 0700u);
  EXPECT_EQ(mode_of(dir_ / "config" / "agent-mesh"), 0700u);

  std::ifstream in(path, std::ios::binary);
  const std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, pair.key_file_text());
  EXPECT_EQ(content.size(), 44u);

  const auto loaded = KeyPair::load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.error().describe();
  EXPECT_EQ(loaded->agent_id(), pair.agent_id());
  EXPECT_EQ(entries_of(path.parent_path()), std::vector<std::string>{"identity.key"});
}

TEST_F(KeyFileTest, SaveLeavesExistingParentDirectoriesAlone) {
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  const KeyPair pair = KeyPair::generate();
  ASSERT_TRUE(pair.save(dir_ / "key").ok());
  EXPECT_EQ(mode_of(dir_), 0755u);
  EXPECT_EQ(mode_of(dir_ / "key"), 0600u);
}

TEST_F(KeyFileTest, SaveReplacesAnExistingFileAtomically) {
  const KeyPair first = KeyPair::generate();
  const KeyPair second = KeyPair::generate();
  const auto path = dir_ / "identity.key";
  ASSERT_TRUE(first.save(path).ok());
  ASSERT_TRUE(second.save(path).ok());
  const auto loaded = KeyPair::load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.error().describe();
  EXPECT_EQ(loaded->agent_id(), second.agent_id());
  EXPECT_EQ(mode_of(path), 0600u);
  // No temporary file is left behind.
  EXPECT_EQ(entries_of(dir_), std::vector<std::string>{"identity.key"});
}

TEST_F(KeyFileTest, SaveOverAnOverlyOpenFileLeavesMode0600) {
  const auto path = dir_ / "identity.key";
  write_file(path, "old", 0644);
  const KeyPair pair = KeyPair::generate();
  ASSERT_TRUE(pair.save(path).ok());
  EXPECT_EQ(mode_of(path), 0600u);
  EXPECT_TRUE(KeyPair::load(path).ok());
}

TEST_F(KeyFileTest, SaveFailsWithInternalErrorAndLeavesNoTemporary) {
  const KeyPair pair = KeyPair::generate();
  // The parent "directory" is a regular file.
  write_file(dir_ / "plain", "x", 0600);
  expect_error(pair.save(dir_ / "plain" / "key"), Errc::internal, "plain");
  // The target is a directory: rename fails after the temporary was written.
  ASSERT_EQ(::mkdir((dir_ / "occupied").c_str(), 0700), 0);
  expect_error(pair.save(dir_ / "occupied"), Errc::internal, "cannot rename");
  EXPECT_EQ(entries_of(dir_), (std::vector<std::string>{"occupied", "plain"}));
}

TEST_F(KeyFileTest, LoadRefusesFilesReadableByGroupOrOthers) {
  const KeyPair pair = KeyPair::generate();
  for (const mode_t mode : {0644, 0640, 0604, 0660, 0620, 0601, 0610}) {
    SCOPED_TRACE(mode);
    const auto path = dir_ / "open.key";
    write_file(path, pair.key_file_text(), mode);
    const auto loaded = KeyPair::load(path);
    expect_error(loaded, Errc::bad_request, "chmod 600 " + path.string());
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", static_cast<unsigned>(mode));
    EXPECT_NE(loaded.error().message.find(std::string("mode ") + octal), std::string::npos)
        << loaded.error().message;
    EXPECT_NE(loaded.error().message.find("by group or others"), std::string::npos);
    // Never the secret.
    EXPECT_EQ(loaded.error().message.find(pair.key_file_text().substr(0, 43)), std::string::npos);
  }
  // 0400 (read-only for the owner) is fine.
  const auto path = dir_ / "readonly.key";
  write_file(path, pair.key_file_text(), 0400);
  EXPECT_TRUE(KeyPair::load(path).ok());
}

TEST_F(KeyFileTest, LoadSuggestsAQuotedCommandForUnusualPaths) {
  const KeyPair pair = KeyPair::generate();
  const auto path = dir_ / "my key's file";
  write_file(path, pair.key_file_text(), 0644);
  expect_error(KeyPair::load(path), Errc::bad_request,
               "chmod 600 '" + dir_.string() + "/my key'\\''s file'");
}

TEST_F(KeyFileTest, LoadOfAMissingFile) {
  expect_error(KeyPair::load(dir_ / "absent.key"), Errc::not_found, "does not exist");
}

TEST_F(KeyFileTest, LoadOfADirectory) {
  ASSERT_EQ(::chmod(dir_.c_str(), 0700), 0);
  expect_error(KeyPair::load(dir_), Errc::bad_request, "is not a regular file");
}

TEST_F(KeyFileTest, LoadOfAFifoDoesNotBlock) {
  const auto path = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  expect_error(KeyPair::load(path), Errc::bad_request, "is not a regular file");
}

TEST_F(KeyFileTest, LoadOfAnOversizedFile) {
  const auto path = dir_ / "big.key";
  write_file(path, std::string(limits::max_key_file_bytes + 1, 'A'), 0600);
  expect_error(KeyPair::load(path), Errc::bad_request, "too large");
  // Exactly at the bound it is read, then refused as content.
  write_file(path, std::string(limits::max_key_file_bytes, 'A'), 0600);
  expect_error(KeyPair::load(path), Errc::bad_request, "got 1024 characters");
}

TEST_F(KeyFileTest, LoadOfInvalidContentNamesTheFileAndTheProblem) {
  const auto path = dir_ / "bad.key";
  write_file(path, "oaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaE\r\n", 0600);
  const auto crlf = KeyPair::load(path);
  expect_error(crlf, Errc::bad_request, "carriage return");
  EXPECT_NE(crlf.error().message.find(path.string()), std::string::npos);
  write_file(path, "", 0600);
  expect_error(KeyPair::load(path), Errc::bad_request, "got 0 characters");
  write_file(path, "oaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaF\n", 0600);
  expect_error(KeyPair::load(path), Errc::bad_request, "non-zero unused trailing bits");
}

TEST_F(KeyFileTest, LoadFollowsSymlinksAndChecksTheFinalFile) {
  const KeyPair pair = KeyPair::generate();
  const auto target = dir_ / "real.key";
  ASSERT_TRUE(pair.save(target).ok());
  const auto link = dir_ / "link.key";
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  const auto loaded = KeyPair::load(link);
  ASSERT_TRUE(loaded.ok()) << loaded.error().describe();
  EXPECT_EQ(loaded->agent_id(), pair.agent_id());
  // The symlink's own mode (0777) does not matter; the target's does.
  ASSERT_EQ(::chmod(target.c_str(), 0644), 0);
  expect_error(KeyPair::load(link), Errc::bad_request, "chmod 600");
}

TEST_F(KeyFileTest, KeyVectorFilesLoadFromDisk) {
  const json::value vectors = load_vectors("agent-mesh/keys.json");
  const auto path = dir_ / "vector.key";
  for (const auto& file : vectors.at("secret_key_files").at("valid").as_array()) {
    write_file(path, str(file.at("file_text")), 0600);
    const auto loaded = KeyPair::load(path);
    ASSERT_TRUE(loaded.ok()) << loaded.error().describe();
    EXPECT_EQ(loaded->agent_id(), key_pair_from_seed(hex(str(file.at("seed_hex")))).agent_id());
  }
  for (const auto& file : vectors.at("secret_key_files").at("invalid").as_array()) {
    SCOPED_TRACE(str(file.at("reason")));
    write_file(path, str(file.at("file_text")), 0600);
    const auto loaded = KeyPair::load(path);
    ASSERT_FALSE(loaded.ok());
    EXPECT_EQ(loaded.error().code, Errc::bad_request);
  }
}

}  // namespace
}  // namespace agent_mesh
