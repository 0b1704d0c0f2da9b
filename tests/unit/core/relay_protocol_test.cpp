// Control frames, the hello check order, auth bytes and relay_id comparison (protocol §6), against
// relay-frames.json and auth.json, followed by a test for every rejection path.
#include "agent_mesh/relay_protocol.hpp"

#include <gtest/gtest.h>

#include <set>

#include "agent_mesh/json.hpp"
#include "test_vectors.hpp"

namespace agent_mesh {
namespace {

using test::hex;
using test::load_vectors;
using test::str;

constexpr std::string_view kAlice = "vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaU";
constexpr std::string_view kToken = "ERERERERERERERERERERERERERERERERERERERERERE";

KeyPair alice() { return *KeyPair::from_seed(hex("a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1")); }

std::string text_of(const boost::json::value& frame) { return boost::json::serialize(frame); }

// The error of a parse that must fail, or a marker that makes the expectation fail readably.
template <class T>
Error error_of(const Result<T>& result) {
  if (result.ok()) return Error{Errc::internal, "(accepted)"};
  return result.error();
}

#define EXPECT_ERROR(result, errc, fragment)                                            \
  do {                                                                                  \
    const Error error_ = error_of(result);                                              \
    EXPECT_EQ(error_.code, errc) << error_.describe();                                  \
    EXPECT_NE(error_.message.find(fragment), std::string::npos) << error_.describe();   \
  } while (false)

// ---- relay-frames.json ----

TEST(RelayFramesVectors, EveryFrameParsesAndReserialisesToItsJcs) {
  const auto vectors = load_vectors("agent-mesh/relay-frames.json");
  const auto& frames = vectors.at("frames").as_object();
  ASSERT_EQ(frames.size(), 13u);
  std::set<std::string> types_seen;
  for (const auto& entry : frames) {
    SCOPED_TRACE(std::string(entry.key()));
    const auto& object = entry.value().as_object();
    const std::string type = str(object.at("type"));
    types_seen.insert(type);
    if (type == "auth") continue;  // "<see auth.json>": tested with auth.json's frames below
    auto frame = parse_control_frame(text_of(entry.value()));
    ASSERT_TRUE(frame.ok()) << frame.error().describe();
    EXPECT_EQ(frame_type(*frame), type);
    EXPECT_EQ(serialize(*frame), json::serialize_jcs(entry.value()));
    // Exactly one of the two directional parsers takes it.
    const bool client_sends = type == "hello" || type == "ping" || type == "ack";
    auto at_relay = parse_client_frame(text_of(entry.value()));
    auto at_client = parse_relay_frame(text_of(entry.value()));
    EXPECT_EQ(at_relay.ok(), client_sends);
    EXPECT_EQ(at_client.ok(), !client_sends);
    const auto& refused = client_sends ? at_client : at_relay;
    EXPECT_ERROR(refused, Errc::bad_request, "does not send " + type + " frames");
    EXPECT_EQ(*(client_sends ? at_relay : at_client), *frame);
  }
  EXPECT_EQ(types_seen.size(), 10u) << "every control frame type has an example";
}

TEST(RelayFramesVectors, AuthFramesOfAuthJsonRoundTrip) {
  const auto vectors = load_vectors("agent-mesh/auth.json");
  for (const auto& c : vectors.at("cases").as_array()) {
    SCOPED_TRACE(str(c.at("name")));
    for (const auto& entry : c.at("frames").as_object()) {
      auto frame = parse_control_frame(text_of(entry.value()));
      ASSERT_TRUE(frame.ok()) << frame.error().describe();
      EXPECT_EQ(serialize(*frame), json::serialize_jcs(entry.value()));
    }
    auto auth = parse_client_frame(text_of(c.at("frames").at("auth")));
    ASSERT_TRUE(auth.ok());
    EXPECT_EQ(base64url_encode(std::get<Auth>(*auth).signature), str(c.at("signature_b64url")));
  }
}

TEST(RelayFramesVectors, HelloCasesGiveTheExpectedCodeAndCloseCode) {
  const auto vectors = load_vectors("agent-mesh/relay-frames.json");
  const auto& cases = vectors.at("hello_cases").as_array();
  ASSERT_EQ(cases.size(), 8u);
  for (const auto& c : cases) {
    SCOPED_TRACE(str(c.at("name")));
    const std::string text = text_of(c.at("hello"));
    const auto& expect = c.at("expect").as_object();
    auto hello = parse_hello(text);
    auto frame = parse_client_frame(text);
    if (expect.contains("next")) {
      EXPECT_EQ(str(expect.at("next")), "challenge");
      ASSERT_TRUE(hello.ok()) << hello.error().describe();
      EXPECT_EQ(hello->agent_id.str(), str(c.at("hello").at("agent_id")));
      ASSERT_TRUE(frame.ok());
      EXPECT_EQ(std::get<Hello>(*frame), *hello);
      continue;
    }
    const auto code = errc_from_string(expect.at("error_code").as_string());
    ASSERT_TRUE(code.has_value());
    ASSERT_FALSE(hello.ok());
    EXPECT_EQ(hello.error().code, *code) << hello.error().describe();
    EXPECT_EQ(close_code_for(hello.error().code), expect.at("close").as_int64());
    EXPECT_TRUE(hello.error().message.starts_with("hello: ")) << hello.error().message;
    ASSERT_FALSE(frame.ok());
    EXPECT_EQ(frame.error(), hello.error()) << "parse_client_frame applies the same order";
  }
}

TEST(RelayFramesVectors, MalformedControlFramesAreRejectedByTheirReceiver) {
  const auto vectors = load_vectors("agent-mesh/relay-frames.json");
  const auto& cases = vectors.at("malformed_control_frames").as_array();
  ASSERT_EQ(cases.size(), 6u);
  for (const auto& c : cases) {
    SCOPED_TRACE(str(c.at("name")));
    const std::string text = str(c.at("text"));
    const bool from_client = str(c.at("sent_by")) == "client";
    auto frame = from_client ? parse_client_frame(text) : parse_relay_frame(text);
    ASSERT_FALSE(frame.ok());
    // The relay closes with 4000 (the vector says so); we close the same way on the client (§6).
    EXPECT_EQ(frame.error().code, Errc::bad_request) << frame.error().describe();
    EXPECT_EQ(close_code_for(frame.error().code), close_code::bad_request);
    if (const auto* close = c.at("expect").as_object().if_contains("close")) {
      EXPECT_EQ(close->as_int64(), close_code::bad_request);
    }
    EXPECT_FALSE(parse_control_frame(text).ok());
  }
}

TEST(RelayFramesVectors, CloseCodesUndeliverableCodesAndLimitsAgree) {
  const auto vectors = load_vectors("agent-mesh/relay-frames.json");
  const auto& table = vectors.at("close_codes").as_array();
  ASSERT_EQ(table.size(), 11u);
  std::set<std::int64_t> closes;
  for (const auto& row : table) {
    const std::int64_t close = row.at("close").as_int64();
    closes.insert(close);
    if (const auto* name = row.as_object().if_contains("error_code")) {
      const auto code = errc_from_string(name->as_string());
      ASSERT_TRUE(code.has_value()) << *name;
      EXPECT_EQ(close_code_for(*code), close) << *name;
    }
  }
  const std::set<std::int64_t> ours{close_code::normal,      close_code::draining,
                                    close_code::too_big,     close_code::bad_request,
                                    close_code::auth_failed, close_code::unsupported_version,
                                    close_code::revoked,     close_code::rate_limited,
                                    close_code::replaced,    close_code::slow_consumer};
  EXPECT_EQ(closes, ours);
  // An oversized frame closes with 1009 (§3 "Sizes").
  EXPECT_EQ(close_code_for(Errc::too_large), close_code::too_big);

  std::set<std::string> undeliverable;
  for (const auto& name : vectors.at("undeliverable_codes").as_array()) undeliverable.insert(str(name));
  for (int i = 0; i < kErrcCount; ++i) {
    const auto code = static_cast<Errc>(i);
    EXPECT_EQ(is_undeliverable_code(code), undeliverable.count(std::string(to_string(code))) == 1) << to_string(code);
  }

  const auto& limits = vectors.at("limits");
  EXPECT_EQ(limits.at("nonce_bytes").as_int64(), static_cast<std::int64_t>(limits::auth_nonce_bytes));
  EXPECT_EQ(limits.at("resume_token_bytes").as_int64(), static_cast<std::int64_t>(limits::resume_token_bytes));
  EXPECT_EQ(limits.at("ack_max_ids").as_int64(), static_cast<std::int64_t>(limits::max_ack_ids));
  EXPECT_EQ(limits.at("control_frame_max_bytes_before_auth").as_int64(),
            static_cast<std::int64_t>(limits::max_control_frame_bytes));
  EXPECT_EQ(limits.at("max_envelope_bytes_default").as_int64(),
            static_cast<std::int64_t>(limits::default_max_envelope_bytes));
}

// ---- auth.json ----

TEST(RelayAuthVectors, SignedBytesAreThePrefixNonceAndRelayIdAndVerify) {
  const auto vectors = load_vectors("agent-mesh/auth.json");
  EXPECT_EQ(str(vectors.at("signature_prefix_utf8")), signature_prefix(Purpose::auth));
  const auto& cases = vectors.at("cases").as_array();
  ASSERT_EQ(cases.size(), 3u);
  for (const auto& c : cases) {
    SCOPED_TRACE(str(c.at("name")));
    const Bytes nonce = hex(c.at("nonce_hex").as_string());
    const std::string relay_id = str(c.at("relay_id"));
    EXPECT_EQ(hex_encode(signing_input(Purpose::auth, auth_signing_message(nonce, relay_id))),
              str(c.at("signed_bytes_hex")));

    auto challenge = parse_relay_frame(text_of(c.at("frames").at("challenge")));
    ASSERT_TRUE(challenge.ok()) << challenge.error().describe();
    const Challenge& sent = std::get<Challenge>(*challenge);
    EXPECT_EQ(Bytes(sent.nonce.begin(), sent.nonce.end()), nonce);
    EXPECT_EQ(sent.relay_id, relay_id);
    auto auth = parse_client_frame(text_of(c.at("frames").at("auth")));
    ASSERT_TRUE(auth.ok());
    const auto agent = *AgentId::parse(c.at("agent_id").as_string());
    EXPECT_TRUE(verify_auth(agent, sent, std::get<Auth>(*auth)).ok());
    if (agent == alice().agent_id()) {
      // Ed25519 is deterministic: our client side produces the published frame.
      EXPECT_EQ(serialize(make_auth(alice(), sent)), json::serialize_jcs(c.at("frames").at("auth")));
    }
  }
}

TEST(RelayAuthVectors, RejectedSignaturesFailWithAuthFailed) {
  const auto vectors = load_vectors("agent-mesh/auth.json");
  const auto& rejected = vectors.at("rejected_signatures").as_array();
  ASSERT_EQ(rejected.size(), 6u);
  for (const auto& c : rejected) {
    SCOPED_TRACE(str(c.at("name")));
    Challenge challenge;
    ASSERT_TRUE(base64url_decode_exact(c.at("nonce_b64url").as_string(), challenge.nonce).ok());
    challenge.relay_id = str(c.at("relay_id"));
    Auth auth;
    ASSERT_TRUE(base64url_decode_exact(c.at("signature_b64url").as_string(), auth.signature).ok());
    const auto status = verify_auth(*AgentId::parse(c.at("agent_id").as_string()), challenge, auth);
    EXPECT_ERROR(status, Errc::auth_failed, "does not verify");
    EXPECT_EQ(close_code_for(Errc::auth_failed), close_code::auth_failed);
  }
}

TEST(RelayIdComparison, EveryAuthJsonCase) {
  const auto vectors = load_vectors("agent-mesh/auth.json");
  const auto& cases = vectors.at("relay_id_comparison").as_array();
  ASSERT_EQ(cases.size(), 20u);
  for (const auto& c : cases) {
    const std::string dialled = str(c.at("dialled"));
    const std::string relay_id = str(c.at("relay_id"));
    SCOPED_TRACE(str(c.at("rule")) + ": " + dialled + " vs " + relay_id);
    EXPECT_TRUE(normalize_relay_url(dialled).has_value());
    EXPECT_TRUE(normalize_relay_url(relay_id).has_value());
    EXPECT_EQ(relay_ids_match(dialled, relay_id), c.at("match").as_bool());
    EXPECT_EQ(relay_ids_match(relay_id, dialled), c.at("match").as_bool()) << "the comparison is symmetric";
  }
}

TEST(RelayIdComparison, NormalFormsAndRefusedUrls) {
  EXPECT_EQ(normalize_relay_url("WS://LocalHost:9800"), "ws://127.0.0.1:9800/");
  EXPECT_EQ(normalize_relay_url("wss://[::1]:443/relay/ws"), "wss://127.0.0.1/relay/ws");
  EXPECT_EQ(normalize_relay_url("wss://Relay.Example.com:8443/Relay/WS"), "wss://relay.example.com:8443/Relay/WS");
  EXPECT_EQ(normalize_relay_url("ws://relay.example.com?x=1"), "ws://relay.example.com/?x=1");
  EXPECT_EQ(normalize_relay_url("ws://[FE80::1]:9800/"), "ws://[fe80::1]:9800/");
  for (const char* refused : {"http://relay.example.com/", "relay.example.com/relay/ws", "ws:/relay", "ws://",
                              "ws:///relay/ws", "ws://user@relay.example.com/", "ws://relay.example.com/#frag",
                              "ws://relay.example.com:0/", "ws://relay.example.com:65536/",
                              "ws://relay.example.com:080/", "ws://relay.example.com:/", "ws://relay.example.com:8a/",
                              "ws://[::1/", "ws://[]/", "ws://[::g]/", "ws://[::1]x/", "ws://re lay/",
                              "ws://h%6Fst/", "ws://relay.example.com/\xc3\xa9", "ws://relay.example.com/a\tb"}) {
    EXPECT_FALSE(normalize_relay_url(refused).has_value()) << refused;
    EXPECT_FALSE(relay_ids_match(refused, refused)) << "an unparseable URL matches nothing, not even itself";
  }
}

// ---- hello: the check order of §6 "Versions" ----

boost::json::object base_hello() { return {{"type", "hello"}, {"v", 1}, {"agent_id", kAlice}}; }

TEST(RelayHello, VersionIsCheckedBeforeAnythingElse) {
  auto o = base_hello();
  o["v"] = 2;
  o["features"] = boost::json::array{};
  o.erase("agent_id");
  EXPECT_ERROR(parse_hello(text_of(o)), Errc::unsupported_version, "hello: protocol version 2 is not supported");
  for (const char* v : {"1.0", "1e0", "\"1\"", "true", "null", "[1]", "-1"}) {
    const std::string text = std::string(R"({"type":"hello","agent_id":")") + std::string(kAlice) + R"(","v":)" + v + "}";
    SCOPED_TRACE(text);
    auto hello = parse_hello(text);
    ASSERT_FALSE(hello.ok());
    EXPECT_EQ(hello.error().code, Errc::unsupported_version) << hello.error().describe();
    EXPECT_EQ(close_code_for(hello.error().code), close_code::unsupported_version);
  }
  o = base_hello();
  o.erase("v");
  o["features"] = 1;
  EXPECT_ERROR(parse_hello(text_of(o)), Errc::bad_request, "hello: missing member \"v\"");
}

TEST(RelayHello, EachMalformedHelloIsBadRequestNamingTheMember) {
  auto o = base_hello();
  o["features"] = boost::json::array{};
  EXPECT_ERROR(parse_hello(text_of(o)), Errc::bad_request, "hello: unknown member \"features\"");
  o = base_hello();
  o.erase("agent_id");
  EXPECT_ERROR(parse_hello(text_of(o)), Errc::bad_request, "hello: missing member \"agent_id\"");
  o = base_hello();
  o["agent_id"] = 5;
  EXPECT_ERROR(parse_hello(text_of(o)), Errc::bad_request, "hello: agent_id must be a string");
  o = base_hello();
  o["agent_id"] = "short";
  EXPECT_ERROR(parse_hello(text_of(o)), Errc::bad_request, "hello: agent_id: agent ID must be 43 characters");
  o = base_hello();
  o["agent_id"] = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
  EXPECT_ERROR(parse_hello(text_of(o)), Errc::bad_request, "hello: agent_id: ");
  o = base_hello();
  o["resume"] = "AAAA";
  EXPECT_ERROR(parse_hello(text_of(o)), Errc::bad_request, "hello: resume must be base64url of 32 bytes");
  o = base_hello();
  o["resume"] = std::string(kToken) + "=";
  EXPECT_ERROR(parse_hello(text_of(o)), Errc::bad_request, "hello: resume must be base64url of 32 bytes");
  o = base_hello();
  o["resume"] = "ERERERERERERERERERERERERERERERERERERERERERF";  // non-zero unused bits: an alias
  EXPECT_ERROR(parse_hello(text_of(o)), Errc::bad_request, "hello: resume must be base64url of 32 bytes");
  o = base_hello();
  o["resume"] = nullptr;
  EXPECT_ERROR(parse_hello(text_of(o)), Errc::bad_request, "hello: resume must not be null");
  o = base_hello();
  o["type"] = "ping";
  EXPECT_ERROR(parse_hello(text_of(o)), Errc::bad_request, "expected a hello frame, got ping");
}

TEST(RelayHello, ResumeTokenIsKeptExactly) {
  auto o = base_hello();
  o["resume"] = kToken;
  auto hello = parse_hello(text_of(o));
  ASSERT_TRUE(hello.ok()) << hello.error().describe();
  EXPECT_EQ(hello->resume, std::string(kToken));
  EXPECT_EQ(hello->v, 1);
}

TEST(RelayHello, JsonLevelProblemsAndSize) {
  EXPECT_ERROR(parse_hello("{\"type\":\"hello\",\"v\":1,\"v\":1}"), Errc::bad_request, "duplicate member \"v\"");
  EXPECT_ERROR(parse_hello("{\"type\":\"hello\""), Errc::bad_request, "control frame: JSON: unexpected end");
  EXPECT_ERROR(parse_hello("[]"), Errc::bad_request, "control frame must be a JSON object");
  EXPECT_ERROR(parse_hello("{\"type\":\"hello\",\"v\":9007199254740992}"), Errc::bad_request, "safe range");
  std::string big = text_of(base_hello());
  big.insert(big.size() - 1, ",\"pad\":\"" + std::string(limits::max_control_frame_bytes, 'a') + "\"");
  auto oversized = parse_hello(big);
  EXPECT_ERROR(oversized, Errc::too_large, "exceeds the limit of 65536 bytes");
  EXPECT_EQ(close_code_for(oversized.error().code), close_code::too_big);
  const std::string exact = text_of(base_hello());
  EXPECT_TRUE(parse_hello(exact, exact.size()).ok());
  EXPECT_ERROR(parse_hello(exact, exact.size() - 1), Errc::too_large, "exceeds");
}

// ---- every other frame's rejections ----

Result<ControlFrame> parse_object(const boost::json::object& o) { return parse_control_frame(text_of(o)); }

TEST(ControlFrameParse, TypeMember) {
  EXPECT_ERROR(parse_control_frame("{}"), Errc::bad_request, "control frame: missing member \"type\"");
  EXPECT_ERROR(parse_control_frame("{\"type\":1}"), Errc::bad_request, "control frame: type must be a string");
  EXPECT_ERROR(parse_control_frame("{\"type\":\"bye\"}"), Errc::bad_request, "control frame: unknown type \"bye\"");
  EXPECT_ERROR(parse_control_frame("{\"type\":\"" + std::string(1000, 'x') + "\"}"), Errc::bad_request, "…");
  EXPECT_ERROR(parse_control_frame("\"ping\""), Errc::bad_request, "must be a JSON object");
  // Hostile text is quoted JSON-escaped, so it cannot forge a log line.
  EXPECT_ERROR(parse_control_frame(R"({"type":"a\nb"})"), Errc::bad_request, R"(unknown type "a\nb")");
}

// Where the spec is silent (docs/protocol.md records these).
TEST(ControlFrameParse, DecisionsWhereTheSpecIsSilent) {
  // The same ID twice in one ack is harmless (deleting twice is deleting once).
  EXPECT_TRUE(parse_client_frame(R"({"type":"ack","ids":["a6e50001-0000-4000-8000-000000000001",)"
                                 R"("a6e50001-0000-4000-8000-000000000001"]})")
                  .ok());
  // retry_after_ms may accompany any undeliverable code, not only rate_limited.
  EXPECT_TRUE(parse_relay_frame(R"({"type":"undeliverable","id":null,"code":"buffer_full","retry_after_ms":1000})")
                  .ok());
  // An error frame may carry any code of error.hpp.
  EXPECT_TRUE(parse_relay_frame(R"({"type":"error","code":"slow_consumer","message":"queue full"})").ok());
  // relay_id is not checked as a URL when parsed: relay_ids_match refuses an unparseable one.
  EXPECT_TRUE(parse_relay_frame(R"({"type":"challenge","nonce":"ABEiM0RVZneImaq7zN3u_wARIjNEVWZ3iJmqu8zd7v8",)"
                                R"("relay_id":"not a url"})")
                  .ok());
}

TEST(ControlFrameParse, ChallengeAndAuth) {
  const boost::json::object challenge{{"type", "challenge"},
                                      {"nonce", "ABEiM0RVZneImaq7zN3u_wARIjNEVWZ3iJmqu8zd7v8"},
                                      {"relay_id", "ws://127.0.0.1:9800/relay/ws"}};
  ASSERT_TRUE(parse_object(challenge).ok());
  auto o = challenge;
  o["nonce"] = "ABEiM0RVZneImaq7zN3u_w";
  EXPECT_ERROR(parse_object(o), Errc::bad_request, "challenge: nonce must be base64url of 32 bytes");
  o = challenge;
  o.erase("nonce");
  EXPECT_ERROR(parse_object(o), Errc::bad_request, "challenge: missing member \"nonce\"");
  o = challenge;
  o["relay_id"] = "";
  EXPECT_ERROR(parse_object(o), Errc::bad_request, "challenge: relay_id must not be empty");
  o = challenge;
  o["relay_id"] = 1;
  EXPECT_ERROR(parse_object(o), Errc::bad_request, "challenge: relay_id must be a string");
  o = challenge;
  o["extra"] = true;
  EXPECT_ERROR(parse_object(o), Errc::bad_request, "challenge: unknown member \"extra\"");

  EXPECT_ERROR(parse_control_frame(R"({"type":"auth","signature":"AAAA"})"), Errc::bad_request,
               "auth: signature must be base64url of 64 bytes");
  EXPECT_ERROR(parse_control_frame(R"({"type":"auth"})"), Errc::bad_request, "auth: missing member \"signature\"");
}

boost::json::object base_welcome() {
  return {{"type", "welcome"}, {"v", 1}, {"session_token", kToken}, {"heartbeat_ms", 30000}, {"buffered", 2}};
}

TEST(ControlFrameParse, WelcomeChecksVersionFirst) {
  auto o = base_welcome();
  o["v"] = 2;
  o["motd"] = "hi";
  auto welcome = parse_relay_frame(text_of(o));
  EXPECT_ERROR(welcome, Errc::unsupported_version, "welcome: protocol version 2 is not supported");
  EXPECT_EQ(close_code_for(welcome.error().code), close_code::unsupported_version);
  o = base_welcome();
  o.erase("v");
  EXPECT_ERROR(parse_relay_frame(text_of(o)), Errc::bad_request, "welcome: missing member \"v\"");
  o = base_welcome();
  o["heartbeat_ms"] = 0;
  EXPECT_ERROR(parse_relay_frame(text_of(o)), Errc::bad_request, "welcome: heartbeat_ms must be positive");
  o = base_welcome();
  o["buffered"] = -1;
  EXPECT_ERROR(parse_relay_frame(text_of(o)), Errc::bad_request, "welcome: buffered must not be negative");
  o = base_welcome();
  o["buffered"] = 1.5;
  EXPECT_ERROR(parse_relay_frame(text_of(o)), Errc::bad_request, "welcome: buffered must be an integer");
  o = base_welcome();
  o["session_token"] = "IiIi";
  EXPECT_ERROR(parse_relay_frame(text_of(o)), Errc::bad_request, "welcome: session_token must be base64url of 32 bytes");
  o = base_welcome();
  o.erase("heartbeat_ms");
  EXPECT_ERROR(parse_relay_frame(text_of(o)), Errc::bad_request, "welcome: missing member \"heartbeat_ms\"");
}

TEST(ControlFrameParse, ErrorAndQueued) {
  EXPECT_TRUE(parse_control_frame(R"({"type":"error","code":"auth_failed","message":""})").ok());
  EXPECT_ERROR(parse_control_frame(R"({"type":"error","code":"oops","message":"x"})"), Errc::bad_request,
               "error: unknown code \"oops\"");
  EXPECT_ERROR(parse_control_frame(R"({"type":"error","code":"internal"})"), Errc::bad_request,
               "error: missing member \"message\"");
  EXPECT_ERROR(parse_control_frame(R"({"type":"error","code":"internal","message":null})"), Errc::bad_request,
               "error: message must not be null");
  EXPECT_ERROR(parse_control_frame(R"({"type":"queued","id":"A6E50001-0000-4000-8000-000000000001"})"),
               Errc::bad_request, "queued: id: UUID must be lower-case");
  EXPECT_ERROR(parse_control_frame(R"({"type":"queued"})"), Errc::bad_request, "queued: missing member \"id\"");
  EXPECT_ERROR(parse_control_frame(R"({"type":"queued","id":null})"), Errc::bad_request, "queued: id must not be null");
}

TEST(ControlFrameParse, Undeliverable) {
  auto ok = parse_relay_frame(R"({"type":"undeliverable","id":null,"code":"rate_limited","retry_after_ms":0})");
  ASSERT_TRUE(ok.ok()) << ok.error().describe();
  const auto& frame = std::get<Undeliverable>(*ok);
  EXPECT_FALSE(frame.id.has_value());
  EXPECT_EQ(frame.retry_after_ms, 0);
  EXPECT_ERROR(parse_relay_frame(R"({"type":"undeliverable","code":"expired"})"), Errc::bad_request,
               "undeliverable: missing member \"id\"");
  EXPECT_ERROR(parse_relay_frame(R"({"type":"undeliverable","id":7,"code":"expired"})"), Errc::bad_request,
               "undeliverable: id must be a UUID string or null");
  EXPECT_ERROR(parse_relay_frame(R"({"type":"undeliverable","id":"x","code":"expired"})"), Errc::bad_request,
               "undeliverable: id: UUID");
  EXPECT_ERROR(parse_relay_frame(R"({"type":"undeliverable","id":null,"code":"bad_request"})"), Errc::bad_request,
               "undeliverable: code \"bad_request\" is not one of");
  EXPECT_ERROR(parse_relay_frame(R"({"type":"undeliverable","id":null,"code":"nope"})"), Errc::bad_request,
               "undeliverable: code \"nope\" is not one of");
  EXPECT_ERROR(parse_relay_frame(R"({"type":"undeliverable","id":null,"code":"expired","retry_after_ms":-1})"),
               Errc::bad_request, "undeliverable: retry_after_ms must not be negative");
  EXPECT_ERROR(parse_relay_frame(R"({"type":"undeliverable","id":null,"code":"expired","retry_after_ms":null})"),
               Errc::bad_request, "undeliverable: retry_after_ms must not be null");
  EXPECT_ERROR(parse_relay_frame(R"({"type":"undeliverable","id":null,"code":"expired","retry_after_ms":2e1})"),
               Errc::bad_request, "retry_after_ms must be an integer written without fraction or exponent");
}

std::string ack_with(std::size_t count) {
  boost::json::array ids;
  for (std::size_t i = 0; i < count; ++i) ids.emplace_back(Uuid::generate().to_string());
  return text_of(boost::json::object{{"type", "ack"}, {"ids", std::move(ids)}});
}

TEST(ControlFrameParse, AckHoldsOneTo256Ids) {
  auto full = parse_client_frame(ack_with(256));
  ASSERT_TRUE(full.ok()) << full.error().describe();
  EXPECT_EQ(std::get<Ack>(*full).ids.size(), 256u);
  EXPECT_ERROR(parse_client_frame(ack_with(257)), Errc::bad_request, "ack: ids must hold 1 to 256 IDs, got 257");
  EXPECT_ERROR(parse_client_frame(ack_with(0)), Errc::bad_request, "ack: ids must hold 1 to 256 IDs, got 0");
  EXPECT_ERROR(parse_client_frame(R"({"type":"ack","ids":"a6e50001-0000-4000-8000-000000000001"})"),
               Errc::bad_request, "ack: ids must be an array");
  EXPECT_ERROR(parse_client_frame(R"({"type":"ack","ids":["a6e50001-0000-4000-8000-000000000001",5]})"),
               Errc::bad_request, "ack: ids[1] must be a string");
  EXPECT_ERROR(parse_client_frame(R"({"type":"ack","ids":["a6e50001-0000-4000-8000-000000000001","x"]})"),
               Errc::bad_request, "ack: ids[1]: UUID");
  EXPECT_ERROR(parse_client_frame(R"({"type":"ack"})"), Errc::bad_request, "ack: missing member \"ids\"");
}

TEST(ControlFrameParse, PingAndPongHaveNoMembers) {
  EXPECT_TRUE(parse_client_frame(R"({"type":"ping"})").ok());
  EXPECT_TRUE(parse_relay_frame(" {\"type\" : \"pong\"}\n").ok());
  EXPECT_ERROR(parse_relay_frame(R"({"type":"pong","ts":1})"), Errc::bad_request, "pong: unknown member \"ts\"");
  EXPECT_ERROR(parse_client_frame(R"({"type":"pong"})"), Errc::bad_request, "a client does not send pong frames");
  EXPECT_ERROR(parse_relay_frame(R"({"type":"ping"})"), Errc::bad_request, "a relay does not send ping frames");
}

TEST(ControlFrameSerialize, FramesBuiltInCodeRoundTrip) {
  Hello hello{.v = 1, .agent_id = alice().agent_id(), .resume = std::string(kToken)};
  Undeliverable unknown{.id = std::nullopt, .code = Errc::bad_envelope, .retry_after_ms = std::nullopt};
  Undeliverable limited{.id = Uuid::generate(), .code = Errc::rate_limited, .retry_after_ms = 250};
  Ack ack;
  for (int i = 0; i < 3; ++i) ack.ids.push_back(Uuid::generate());
  Welcome welcome{.v = 1, .session_token = std::string(kToken), .heartbeat_ms = 15000, .buffered = 0};
  Challenge challenge;
  challenge.nonce.fill(7);
  challenge.relay_id = "wss://relay.example.com/relay/ws";
  const std::vector<ControlFrame> frames{hello,   challenge, make_auth(alice(), challenge),
                                         welcome, ErrorFrame{Errc::auth_timeout, "no auth within 5 s"},
                                         Queued{Uuid::generate()}, unknown, limited, ack, Ping{}, Pong{}};
  for (const ControlFrame& frame : frames) {
    const std::string text = serialize(frame);
    SCOPED_TRACE(text);
    auto again = parse_control_frame(text);
    ASSERT_TRUE(again.ok()) << again.error().describe();
    EXPECT_EQ(*again, frame);
    EXPECT_EQ(classify_frame(text).value(), FrameKind::control);
  }
  EXPECT_EQ(serialize(unknown), R"({"code":"bad_envelope","id":null,"type":"undeliverable"})");
  EXPECT_EQ(serialize(Ping{}), R"({"type":"ping"})");
}

// ---- classify_frame ----

TEST(ControlFrameClassify, TypeOrMsgTypeAtTheTopLevel) {
  EXPECT_EQ(classify_frame(R"({"type":"ping"})").value(), FrameKind::control);
  EXPECT_EQ(classify_frame(R"( {"id":"x","msg_type":"request","payload":{"type":"x"}} )").value(), FrameKind::envelope);
  EXPECT_EQ(classify_frame(R"({"ty\u0070e":"ping"})").value(), FrameKind::control) << "escaped names are names";
  EXPECT_EQ(classify_frame(R"({"msg\u005ftype":1})").value(), FrameKind::envelope);
  EXPECT_EQ(classify_frame(R"({"a":"\"type\":1,\\","msg_type":"x","b":[{"type":1},"]}"]})").value(),
            FrameKind::envelope);
  EXPECT_EQ(classify_frame(R"({"types":1,"typ":2,"msg_type":true})").value(), FrameKind::envelope);
  EXPECT_ERROR(classify_frame(R"({"type":"ping","msg_type":"request"})"), Errc::bad_request, "both");
  EXPECT_ERROR(classify_frame(R"({"payload":{"type":"ping","msg_type":"request"}})"), Errc::bad_request, "neither");
  EXPECT_ERROR(classify_frame("{}"), Errc::bad_request, "neither");
  EXPECT_ERROR(classify_frame(""), Errc::bad_request, "the frame is empty");
  EXPECT_ERROR(classify_frame("[{\"type\":1}]"), Errc::bad_request, "must be a JSON object");
  EXPECT_ERROR(classify_frame("\"type\""), Errc::bad_request, "must be a JSON object");
  EXPECT_ERROR(classify_frame(R"({"type":"ping"} x)"), Errc::bad_request, "unexpected content after the object");
  EXPECT_ERROR(classify_frame(R"({"type" "ping"})"), Errc::bad_request, "expected ':'");
  EXPECT_ERROR(classify_frame(R"({"type":"ping" "v":1})"), Errc::bad_request, "expected ',' or '}'");
  EXPECT_ERROR(classify_frame(R"({"type":})"), Errc::bad_request, "expected a value");
  EXPECT_ERROR(classify_frame(R"({"type":"ping)"), Errc::bad_request, "unterminated string");
  EXPECT_ERROR(classify_frame(R"({"msg_type":{"a":[1,2})"), Errc::bad_request, "unterminated object or array");
  EXPECT_ERROR(classify_frame(R"({"ty\u00":1})"), Errc::bad_request, "invalid escape");
  EXPECT_ERROR(classify_frame(R"({"ty\q":1})"), Errc::bad_request, "invalid escape");
  EXPECT_ERROR(classify_frame(R"({type:1})"), Errc::bad_request, "expected a member name");
}

TEST(ControlFrameClassify, VectorFramesAndEnvelopes) {
  const auto frames = load_vectors("agent-mesh/relay-frames.json");
  for (const auto& entry : frames.at("frames").as_object()) {
    EXPECT_EQ(classify_frame(text_of(entry.value())).value(), FrameKind::control) << entry.key();
  }
  const auto envelopes = load_vectors("agent-mesh/envelope.json");
  for (const auto& v : envelopes.at("valid").as_array()) {
    const auto* received = v.as_object().if_contains("received_text");
    const std::string text = received != nullptr ? str(*received) : text_of(v.at("envelope"));
    EXPECT_EQ(classify_frame(text).value(), FrameKind::envelope) << text;
  }
}

// Style: parsers are tested split at every byte. A frame cut anywhere is rejected by every entry
// point (a proper prefix of a JSON object is never a JSON object), and nothing crashes.
TEST(ControlFrameParse, EveryTruncationIsRejected) {
  const auto vectors = load_vectors("agent-mesh/relay-frames.json");
  std::vector<std::string> texts;
  for (const auto& entry : vectors.at("frames").as_object()) texts.push_back(json::serialize_jcs(entry.value()));
  for (const auto& c : vectors.at("malformed_control_frames").as_array()) texts.push_back(str(c.at("text")));
  for (const std::string& text : texts) {
    for (std::size_t cut = 0; cut < text.size(); ++cut) {
      const std::string_view prefix(text.data(), cut);
      SCOPED_TRACE(std::string(prefix));
      EXPECT_FALSE(classify_frame(prefix).ok());
      EXPECT_FALSE(parse_control_frame(prefix).ok());
      EXPECT_FALSE(parse_client_frame(prefix).ok());
      EXPECT_FALSE(parse_relay_frame(prefix).ok());
      EXPECT_FALSE(parse_hello(prefix).ok());
      // The rest of the frame alone is no frame either.
      EXPECT_FALSE(parse_control_frame(std::string_view(text).substr(cut + 1)).ok());
    }
  }
}

}  // namespace
}  // namespace agent_mesh
