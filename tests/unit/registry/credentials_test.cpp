// Registry credentials (registry.md "Credentials"): the MeshAgent header, the http signing message,
// the verifier's clock window and replay memory, bearer tokens and secrets.
#include "registry/credentials.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cctype>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent_mesh/encoding.hpp"

namespace agent_mesh::registry {
namespace {

constexpr std::int64_t kNow = 1795718821123;  // 2026-11-26T18:47:01.123Z
constexpr std::string_view kMethod = "GET";
constexpr std::string_view kTarget = "/api/v1/acl/sync?agent_id=x&since=3";
constexpr std::string_view kHost = "registry.example.com:8443";

KeyPair key_from(std::uint8_t fill) {
  const std::vector<std::uint8_t> seed(32, fill);
  auto key = KeyPair::from_seed(seed);
  if (!key.ok()) throw std::runtime_error("bad test seed");
  return std::move(key).value();
}

const KeyPair& alice() {
  static const KeyPair key = key_from(0x01);
  return key;
}
const KeyPair& bob() {
  static const KeyPair key = key_from(0x02);
  return key;
}

std::string header_for(const KeyPair& key, std::int64_t ts, std::string_view method = kMethod,
                       std::string_view target = kTarget, std::string_view host = kHost) {
  return make_agent_authorization(key, method, target, host, ts);
}

std::string sig_text(const Signature& sig) { return base64url_encode(sig); }

template <class T>
void expect_error(const Result<T>& result, Errc code, std::string_view substring) {
  ASSERT_FALSE(result.ok()) << "expected an error containing \"" << substring << "\"";
  EXPECT_EQ(result.error().code, code) << result.error().describe();
  EXPECT_NE(result.error().message.find(substring), std::string::npos) << result.error().describe();
}

void expect_parse_error(std::string_view header, std::string_view substring) {
  SCOPED_TRACE(std::string(header));
  const auto parsed = parse_agent_authorization(header);
  expect_error(parsed, Errc::unauthorized, substring);
  if (!parsed.ok()) {
    EXPECT_EQ(parsed.error().message.rfind("MeshAgent authorization: ", 0), 0u) << parsed.error().message;
  }
}

// ---- the header ----

TEST(MeshAgentHeader, MakeProducesTheExactFormat) {
  const std::string header = header_for(alice(), kNow);
  const std::string expected_prefix = "MeshAgent agent_id=" + alice().agent_id().str() + ",ts=1795718821123,sig=";
  ASSERT_EQ(header.rfind(expected_prefix, 0), 0u) << header;
  EXPECT_EQ(header.size(), expected_prefix.size() + 86);
  EXPECT_EQ(header.find(' '), std::string("MeshAgent").size());
  EXPECT_EQ(header.find(' ', 10), std::string::npos);
}

TEST(MeshAgentHeader, ParsesWhatMakeProduces) {
  const auto parsed = parse_agent_authorization(header_for(alice(), kNow));
  ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
  EXPECT_EQ(parsed->agent_id, alice().agent_id());
  EXPECT_EQ(parsed->ts, kNow);
  const std::string message = http_signing_message(kMethod, kTarget, kHost, kNow);
  EXPECT_EQ(parsed->sig, alice().sign(Purpose::http, as_bytes(message)));
}

TEST(MeshAgentHeader, TsBoundaries) {
  const std::string sig = sig_text(alice().sign(Purpose::http, as_bytes(std::string_view("x"))));
  const std::string head = "MeshAgent agent_id=" + alice().agent_id().str() + ",ts=";
  auto zero = parse_agent_authorization(head + "0,sig=" + sig);
  ASSERT_TRUE(zero.ok()) << zero.error().describe();
  EXPECT_EQ(zero->ts, 0);
  auto max = parse_agent_authorization(head + "9007199254740991,sig=" + sig);
  ASSERT_TRUE(max.ok()) << max.error().describe();
  EXPECT_EQ(max->ts, 9007199254740991);
  expect_parse_error(head + "9007199254740992,sig=" + sig, "larger than 2^53-1");
  expect_parse_error(head + "99999999999999999999,sig=" + sig, "larger than 2^53-1");
}

TEST(MeshAgentHeader, RejectsEveryDefect) {
  const std::string id = alice().agent_id().str();
  const std::string other_id = bob().agent_id().str();
  const std::string sig = sig_text(alice().sign(Purpose::http, as_bytes(std::string_view("x"))));
  const std::string ts = std::to_string(kNow);
  const std::string good = "MeshAgent agent_id=" + id + ",ts=" + ts + ",sig=" + sig;
  ASSERT_TRUE(parse_agent_authorization(good).ok());

  // Scheme.
  expect_parse_error("", "scheme MeshAgent");
  expect_parse_error("MeshAgent", "scheme MeshAgent");
  expect_parse_error("meshagent agent_id=" + id + ",ts=" + ts + ",sig=" + sig, "scheme MeshAgent");
  expect_parse_error("Bearer " + sig, "scheme MeshAgent");
  expect_parse_error("MeshAgent\tagent_id=" + id + ",ts=" + ts + ",sig=" + sig, "scheme MeshAgent");
  expect_parse_error(" " + good, "scheme MeshAgent");
  // Spaces anywhere else.
  expect_parse_error("MeshAgent  agent_id=" + id + ",ts=" + ts + ",sig=" + sig, "spaces");
  expect_parse_error("MeshAgent agent_id=" + id + ", ts=" + ts + ",sig=" + sig, "spaces");
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=" + ts + ", sig=" + sig, "spaces");
  expect_parse_error("MeshAgent agent_id = " + id + ",ts=" + ts + ",sig=" + sig, "spaces");
  expect_parse_error(good + " ", "spaces");
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=" + ts + ",\tsig=" + sig, "spaces");
  // Order, missing and extra fields.
  expect_parse_error("MeshAgent ts=" + ts + ",agent_id=" + id + ",sig=" + sig, "in this order");
  expect_parse_error("MeshAgent agent_id=" + id + ",sig=" + sig + ",ts=" + ts, "in this order");
  expect_parse_error("MeshAgent sig=" + sig + ",ts=" + ts + ",agent_id=" + id, "in this order");
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=" + ts, "in this order");
  expect_parse_error("MeshAgent agent_id=" + id, "in this order");
  expect_parse_error("MeshAgent ", "in this order");
  expect_parse_error("MeshAgent agent_id=" + id + ",agent_id=" + id + ",ts=" + ts + ",sig=" + sig, "in this order");
  expect_parse_error("MeshAgent agent_id=" + id + ",nonce=1,ts=" + ts + ",sig=" + sig, "in this order");
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=" + ts + ",sig=" + sig + ",nonce=1", "extra field");
  expect_parse_error(good + ",", "extra field");
  expect_parse_error("MeshAgent agent_id=" + id + ";ts=" + ts + ";sig=" + sig, "in this order");
  expect_parse_error("MeshAgent Agent_id=" + id + ",ts=" + ts + ",sig=" + sig, "in this order");
  expect_parse_error("MeshAgent agent_id=" + id + ",TS=" + ts + ",sig=" + sig, "in this order");
  expect_parse_error("MeshAgent agent_id=\"" + id + "\",ts=" + ts + ",sig=" + sig, "agent_id must be 43");
  // Timestamp.
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=,sig=" + sig, "got nothing");
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=0" + ts + ",sig=" + sig, "leading zeros");
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=00,sig=" + sig, "leading zeros");
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=+" + ts + ",sig=" + sig, "unsigned decimal");
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=-" + ts + ",sig=" + sig, "unsigned decimal");
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=" + ts + ".0,sig=" + sig, "unsigned decimal");
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=1e12,sig=" + sig, "unsigned decimal");
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=0x10,sig=" + sig, "unsigned decimal");
  // Agent ID.
  expect_parse_error("MeshAgent agent_id=,ts=" + ts + ",sig=" + sig, "agent_id must be 43");
  expect_parse_error("MeshAgent agent_id=" + id.substr(1) + ",ts=" + ts + ",sig=" + sig, "agent_id must be 43");
  expect_parse_error("MeshAgent agent_id=" + id + "A,ts=" + ts + ",sig=" + sig, "agent_id must be 43");
  expect_parse_error("MeshAgent agent_id=" + std::string(43, '!') + ",ts=" + ts + ",sig=" + sig, "agent_id:");
  // Small-order point (the identity element encoding 0x01 00..00) is not a valid agent ID.
  std::vector<std::uint8_t> identity_point(32, 0);
  identity_point[0] = 1;
  expect_parse_error("MeshAgent agent_id=" + base64url_encode(identity_point) + ",ts=" + ts + ",sig=" + sig,
                     "agent_id:");
  // Signature.
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=" + ts + ",sig=", "86 characters");
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=" + ts + ",sig=" + sig.substr(0, 85), "86 characters");
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=" + ts + ",sig=" + sig + "A", "86 characters");
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=" + ts + ",sig=" + sig + "==", "86 characters");
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=" + ts + ",sig=" +
                         base64url_encode(std::vector<std::uint8_t>(63, 7)) + "AB",
                     "sig:");  // 86 characters whose unused trailing bits are not zero
  std::string bad_alphabet = sig;
  bad_alphabet[10] = '+';
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=" + ts + ",sig=" + bad_alphabet, "sig:");
  // A 65-byte value in base64url is 87 characters, a 48-byte one 64.
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=" + ts + ",sig=" + base64url_encode(std::vector<std::uint8_t>(65, 1)),
                     "86 characters");
  expect_parse_error("MeshAgent agent_id=" + id + ",ts=" + ts + ",sig=" + base64url_encode(std::vector<std::uint8_t>(48, 1)),
                     "86 characters");
  (void)other_id;
}

TEST(MeshAgentHeader, ErrorsNeverEchoTheSignatureAndClipInput) {
  const std::string sig = sig_text(alice().sign(Purpose::http, as_bytes(std::string_view("x"))));
  const std::string huge_ts(100000, '7');
  const auto parsed = parse_agent_authorization("MeshAgent agent_id=" + alice().agent_id().str() + ",ts=" +
                                                huge_ts + "x,sig=" + sig);
  ASSERT_FALSE(parsed.ok());
  EXPECT_LT(parsed.error().message.size(), 300u);
  const auto short_sig = parse_agent_authorization("MeshAgent agent_id=" + alice().agent_id().str() +
                                                   ",ts=1,sig=" + sig.substr(0, 80));
  ASSERT_FALSE(short_sig.ok());
  EXPECT_EQ(short_sig.error().message.find(sig.substr(0, 20)), std::string::npos);
}

TEST(HttpSigningMessage, IsExactlyMethodTargetHostTs) {
  EXPECT_EQ(http_signing_message("POST", "/api/v1/agents?x=1", "localhost:8080", 42),
            "POST /api/v1/agents?x=1\nlocalhost:8080\n42");
  EXPECT_EQ(http_signing_message("GET", "/", "", 0), "GET /\n\n0");
}

// ---- the verifier ----

TEST(AgentRequestVerifier, AcceptsAFreshSignedRequest) {
  AgentRequestVerifier verifier;
  const auto id = verifier.verify(kMethod, kTarget, kHost, header_for(alice(), kNow), kNow);
  ASSERT_TRUE(id.ok()) << id.error().describe();
  EXPECT_EQ(*id, alice().agent_id());
  EXPECT_EQ(verifier.remembered(), 1u);
}

TEST(AgentRequestVerifier, ClockWindowIsPlusMinusTwoMinutesInclusive) {
  AgentRequestVerifier verifier;
  EXPECT_TRUE(verifier.verify(kMethod, kTarget, kHost, header_for(alice(), kNow - 120000), kNow).ok());
  EXPECT_TRUE(verifier.verify(kMethod, kTarget, kHost, header_for(alice(), kNow + 120000), kNow).ok());
  expect_error(verifier.verify(kMethod, kTarget, kHost, header_for(alice(), kNow - 120001), kNow), Errc::unauthorized,
               "more than 2 min in the past");
  expect_error(verifier.verify(kMethod, kTarget, kHost, header_for(alice(), kNow + 120001), kNow), Errc::unauthorized,
               "more than 2 min in the future");
  expect_error(verifier.verify(kMethod, kTarget, kHost, header_for(alice(), 0), kNow), Errc::unauthorized,
               "in the past");
  expect_error(verifier.verify(kMethod, kTarget, kHost, header_for(alice(), 9007199254740991), kNow),
               Errc::unauthorized, "in the future");
  EXPECT_EQ(verifier.remembered(), 2u);  // only the two accepted ones
}

TEST(AgentRequestVerifier, ExtremeClockValuesDoNotOverflow) {
  AgentRequestVerifier verifier;
  expect_error(verifier.verify(kMethod, kTarget, kHost, header_for(alice(), kNow), INT64_MIN), Errc::unauthorized,
               "in the future");
  AgentRequestVerifier other;
  expect_error(other.verify(kMethod, kTarget, kHost, header_for(alice(), kNow), INT64_MAX), Errc::unauthorized,
               "in the past");
}

TEST(AgentRequestVerifier, RefusesAReplay) {
  AgentRequestVerifier verifier;
  const std::string header = header_for(alice(), kNow);
  ASSERT_TRUE(verifier.verify(kMethod, kTarget, kHost, header, kNow).ok());
  expect_error(verifier.verify(kMethod, kTarget, kHost, header, kNow + 1), Errc::unauthorized,
               "signature already used");
  // Still refused at the last moment the clock check passes.
  expect_error(verifier.verify(kMethod, kTarget, kHost, header, kNow + 120000), Errc::unauthorized,
               "signature already used");
  // And afterwards it is simply too old.
  expect_error(verifier.verify(kMethod, kTarget, kHost, header, kNow + 120001), Errc::unauthorized, "in the past");
  EXPECT_EQ(verifier.remembered(), 0u);  // forgotten once it could no longer pass
}

TEST(AgentRequestVerifier, ASignatureFromTheFutureIsRememberedForFourMinutes) {
  AgentRequestVerifier verifier;
  const std::int64_t ts = kNow + 120000;
  const std::string header = header_for(alice(), ts);
  ASSERT_TRUE(verifier.verify(kMethod, kTarget, kHost, header, kNow).ok());
  expect_error(verifier.verify(kMethod, kTarget, kHost, header, kNow + 240000), Errc::unauthorized,
               "signature already used");
  EXPECT_EQ(verifier.remembered(), 1u);
  ASSERT_TRUE(verifier.verify(kMethod, kTarget, kHost, header_for(bob(), kNow + 240001), kNow + 240001).ok());
  EXPECT_EQ(verifier.remembered(), 1u);  // bob's only: alice's was forgotten at ts + 2 min
  expect_error(verifier.verify(kMethod, kTarget, kHost, header, kNow + 240001), Errc::unauthorized, "in the past");
}

TEST(AgentRequestVerifier, ClockSteppingBackDoesNotReopenAReplay) {
  AgentRequestVerifier verifier;
  const std::string header = header_for(alice(), kNow);
  ASSERT_TRUE(verifier.verify(kMethod, kTarget, kHost, header, kNow).ok());
  // Time passes: the signature is forgotten...
  ASSERT_TRUE(verifier.verify(kMethod, kTarget, kHost, header_for(bob(), kNow + 200000), kNow + 200000).ok());
  EXPECT_EQ(verifier.remembered(), 1u);  // bob's; alice's was pruned
  // ...then the clock steps back: the old signature is still refused.
  expect_error(verifier.verify(kMethod, kTarget, kHost, header, kNow), Errc::unauthorized, "in the past");
}

TEST(AgentRequestVerifier, SignatureCoversMethodTargetHostAndTs) {
  AgentRequestVerifier verifier;
  const std::string header = header_for(alice(), kNow);
  expect_error(verifier.verify("POST", kTarget, kHost, header, kNow), Errc::unauthorized, "does not verify");
  expect_error(verifier.verify("get", kTarget, kHost, header, kNow), Errc::unauthorized, "does not verify");
  expect_error(verifier.verify(kMethod, "/api/v1/acl/sync?agent_id=x&since=4", kHost, header, kNow),
               Errc::unauthorized, "does not verify");
  expect_error(verifier.verify(kMethod, "/api/v1/acl/sync?agent_id=x&since=3&", kHost, header, kNow),
               Errc::unauthorized, "does not verify");
  expect_error(verifier.verify(kMethod, kTarget, "registry.example.com", header, kNow), Errc::unauthorized,
               "does not verify");
  expect_error(verifier.verify(kMethod, kTarget, "REGISTRY.example.com:8443", header, kNow), Errc::unauthorized,
               "does not verify");
  // The same signature under a different ts.
  auto parsed = parse_agent_authorization(header);
  ASSERT_TRUE(parsed.ok());
  const std::string moved_ts = "MeshAgent agent_id=" + alice().agent_id().str() + ",ts=" + std::to_string(kNow + 1) +
                               ",sig=" + sig_text(parsed->sig);
  expect_error(verifier.verify(kMethod, kTarget, kHost, moved_ts, kNow), Errc::unauthorized, "does not verify");
  // Alice's signature presented as Bob's.
  const std::string as_bob = "MeshAgent agent_id=" + bob().agent_id().str() + ",ts=" + std::to_string(kNow) +
                             ",sig=" + sig_text(parsed->sig);
  expect_error(verifier.verify(kMethod, kTarget, kHost, as_bob, kNow), Errc::unauthorized, "does not verify");
  // None of the forgeries entered the memory; the genuine request still passes once.
  EXPECT_EQ(verifier.remembered(), 0u);
  EXPECT_TRUE(verifier.verify(kMethod, kTarget, kHost, header, kNow).ok());
}

TEST(AgentRequestVerifier, PurposeSeparation) {
  AgentRequestVerifier verifier;
  const std::string message = http_signing_message(kMethod, kTarget, kHost, kNow);
  for (const Purpose purpose : {Purpose::auth, Purpose::envelope, Purpose::revoke, Purpose::rotate, Purpose::card}) {
    const Signature sig = alice().sign(purpose, as_bytes(message));
    const std::string header = "MeshAgent agent_id=" + alice().agent_id().str() + ",ts=" + std::to_string(kNow) +
                               ",sig=" + sig_text(sig);
    expect_error(verifier.verify(kMethod, kTarget, kHost, header, kNow), Errc::unauthorized, "does not verify");
  }
  EXPECT_EQ(verifier.remembered(), 0u);
  const Signature http_sig = alice().sign(Purpose::http, as_bytes(message));
  const std::string header = "MeshAgent agent_id=" + alice().agent_id().str() + ",ts=" + std::to_string(kNow) +
                             ",sig=" + sig_text(http_sig);
  EXPECT_TRUE(verifier.verify(kMethod, kTarget, kHost, header, kNow).ok());
}

TEST(AgentRequestVerifier, RefusesRequestPartsNoParserWouldProduce) {
  AgentRequestVerifier verifier;
  const std::string header = header_for(alice(), kNow, "GET", "/a b", kHost);
  expect_error(verifier.verify("GET", "/a b", kHost, header, kNow), Errc::bad_request, "request-target");
  expect_error(verifier.verify("GET", "", kHost, header_for(alice(), kNow, "GET", "", kHost), kNow),
               Errc::bad_request, "request-target");
  expect_error(verifier.verify("GET /x", "/", kHost, header, kNow), Errc::bad_request, "method");
  expect_error(verifier.verify("", "/", kHost, header, kNow), Errc::bad_request, "method");
  expect_error(verifier.verify("GET", "/\n", kHost, header, kNow), Errc::bad_request, "request-target");
  expect_error(verifier.verify("GET", "/", "host\nx", header, kNow), Errc::bad_request, "Host");
  expect_error(verifier.verify("GET", "/", std::string("host\0", 5), header, kNow), Errc::bad_request, "Host");
  EXPECT_EQ(verifier.remembered(), 0u);
}

TEST(AgentRequestVerifier, MalformedHeadersAreUnauthorized) {
  AgentRequestVerifier verifier;
  expect_error(verifier.verify(kMethod, kTarget, kHost, "", kNow), Errc::unauthorized, "MeshAgent");
  expect_error(verifier.verify(kMethod, kTarget, kHost, "Bearer abc", kNow), Errc::unauthorized, "MeshAgent");
}

TEST(AgentRequestVerifier, FullMemoryRefusesNewSignaturesUntilOldOnesExpire) {
  AgentRequestVerifier verifier(AgentRequestVerifier::Options{.max_remembered = 3, .max_per_agent = 100});
  EXPECT_EQ(verifier.retry_after_ms(kNow), 0);
  ASSERT_TRUE(verifier.verify(kMethod, kTarget, kHost, header_for(alice(), kNow - 1000), kNow).ok());
  ASSERT_TRUE(verifier.verify(kMethod, kTarget, kHost, header_for(alice(), kNow), kNow).ok());
  ASSERT_TRUE(verifier.verify(kMethod, kTarget, kHost, header_for(bob(), kNow), kNow).ok());
  const std::string fourth = header_for(bob(), kNow + 1);
  expect_error(verifier.verify(kMethod, kTarget, kHost, fourth, kNow), Errc::rate_limited, "retry later");
  // Nothing live was forgotten to make room.
  EXPECT_EQ(verifier.remembered(), 3u);
  expect_error(verifier.verify(kMethod, kTarget, kHost, header_for(alice(), kNow), kNow), Errc::unauthorized,
               "already used");
  // The earliest entry (ts = kNow − 1000) leaves at kNow − 1000 + 120000.
  EXPECT_EQ(verifier.retry_after_ms(kNow), 119000 + 1);
  EXPECT_TRUE(verifier.verify(kMethod, kTarget, kHost, fourth, kNow + 119001).ok());
  EXPECT_EQ(verifier.remembered(), 3u);
}

TEST(AgentRequestVerifier, OneAgentCannotFillTheMemoryForEveryone) {
  AgentRequestVerifier verifier(AgentRequestVerifier::Options{.max_remembered = 100, .max_per_agent = 2});
  ASSERT_TRUE(verifier.verify(kMethod, kTarget, kHost, header_for(alice(), kNow), kNow).ok());
  ASSERT_TRUE(verifier.verify(kMethod, kTarget, kHost, header_for(alice(), kNow + 1), kNow).ok());
  expect_error(verifier.verify(kMethod, kTarget, kHost, header_for(alice(), kNow + 2), kNow), Errc::rate_limited,
               "from this agent");
  EXPECT_TRUE(verifier.verify(kMethod, kTarget, kHost, header_for(bob(), kNow), kNow).ok());
  // Alice's quota comes back as her entries expire.
  EXPECT_TRUE(verifier.verify(kMethod, kTarget, kHost, header_for(alice(), kNow + 120001), kNow + 240001).ok());
}

TEST(AgentRequestVerifier, ConcurrentReplaysPassExactlyOnce) {
  AgentRequestVerifier verifier;
  const std::string header = header_for(alice(), kNow);
  std::atomic<int> accepted{0};
  std::atomic<int> replays{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        const auto result = verifier.verify(kMethod, kTarget, kHost, header, kNow);
        if (result.ok()) {
          ++accepted;
        } else if (result.error().message.find("already used") != std::string::npos) {
          ++replays;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(accepted.load(), 1);
  EXPECT_EQ(replays.load(), 159);
}

TEST(AgentRequestVerifier, ConcurrentDistinctRequestsAllPass) {
  AgentRequestVerifier verifier;
  std::vector<std::string> headers;
  for (int i = 0; i < 200; ++i) headers.push_back(header_for(i % 2 == 0 ? alice() : bob(), kNow + i));
  std::atomic<int> accepted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t i = static_cast<std::size_t>(t); i < headers.size(); i += 4) {
        if (verifier.verify(kMethod, kTarget, kHost, headers[i], kNow).ok()) ++accepted;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(accepted.load(), 200);
  EXPECT_EQ(verifier.remembered(), 200u);
}

// ---- secrets ----

TEST(Secrets, GenerateGives32RandomBytesAsBase64url) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    const std::string secret = generate_secret();
    ASSERT_EQ(secret.size(), 43u);
    const auto bytes = base64url_decode(secret);
    ASSERT_TRUE(bytes.ok()) << secret;
    EXPECT_EQ(bytes->size(), 32u);
    EXPECT_TRUE(seen.insert(secret).second);
    EXPECT_TRUE(parse_bearer("Bearer " + secret).ok());
  }
}

TEST(Secrets, HashIsSha256LowerHexKnownAnswers) {
  // FIPS 180-2 appendix B.1 and the empty string.
  EXPECT_EQ(hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hash_secret(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hash_secret("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Secrets, MatchesHashInConstantTimeHelper) {
  const std::string secret = generate_secret();
  const std::string stored = hash_secret(secret);
  EXPECT_TRUE(secret_matches_hash(secret, stored));
  EXPECT_FALSE(secret_matches_hash(secret + "x", stored));
  EXPECT_FALSE(secret_matches_hash(secret, stored.substr(0, 63)));
  EXPECT_FALSE(secret_matches_hash(secret, ""));
  std::string upper = stored;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (upper != stored) {
    EXPECT_FALSE(secret_matches_hash(secret, upper));  // the stored form is lower-case
  }
}

TEST(BearerHeader, ParsesExactlyBearerSpaceToken) {
  const auto token = parse_bearer("Bearer abc-DEF_123.~+/==");
  ASSERT_TRUE(token.ok()) << token.error().describe();
  EXPECT_EQ(*token, "abc-DEF_123.~+/==");
  const std::string max(kMaxBearerTokenBytes, 'a');
  EXPECT_TRUE(parse_bearer("Bearer " + max).ok());
}

TEST(BearerHeader, RejectsEverythingElseWithoutEchoingTheToken) {
  const std::string secret = "s3cretTOKENvalue";
  const auto check = [&](const std::string& header, std::string_view reason) {
    SCOPED_TRACE(header);
    const auto token = parse_bearer(header);
    expect_error(token, Errc::unauthorized, reason);
    if (!token.ok()) {
      EXPECT_EQ(token.error().message.find("s3cret"), std::string::npos);
    }
  };
  check("", "expected \"Bearer <token>\"");
  check("Bearer", "expected \"Bearer <token>\"");
  check("bearer " + secret, "expected \"Bearer <token>\"");
  check("BEARER " + secret, "expected \"Bearer <token>\"");
  check("Bearer\t" + secret, "expected \"Bearer <token>\"");
  check(" Bearer " + secret, "expected \"Bearer <token>\"");
  check("MeshAgent " + secret, "expected \"Bearer <token>\"");
  check("Bearer ", "empty");
  check("Bearer  " + secret, "token68");
  check("Bearer " + secret + " ", "token68");
  check("Bearer " + secret + " x", "token68");
  check("Bearer " + secret + ",x", "token68");
  check("Bearer =" + secret, "token68");
  check("Bearer ==", "token68");
  check("Bearer s3cret=x", "token68");
  check("Bearer s3cret\"", "token68");
  check("Bearer s3cret\n", "token68");
  check("Bearer " + std::string(kMaxBearerTokenBytes + 1, 'a'), "longer than 512");
}

}  // namespace
}  // namespace agent_mesh::registry
