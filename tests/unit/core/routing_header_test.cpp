// The relay's routing scan (protocol §6 "Routing checks"): every valid envelope of the vector files
// scans to its header fields; each rejection has its own code and message.
#include "agent_mesh/routing_header.hpp"

#include <gtest/gtest.h>

#include <set>

#include "agent_mesh/json.hpp"
#include "agent_mesh/relay_protocol.hpp"
#include "test_vectors.hpp"

namespace agent_mesh {
namespace {

using test::load_vectors;
using test::str;

constexpr std::string_view kAlice = "vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaU";
constexpr std::string_view kBob = "cF-6wB9VGYmfQ3vELkAlWumrVL_wDeNDOvfWh9nnGtU";

// The header as a receiver's full parse would read it from the JSON object.
void expect_header_matches(const RoutingHeader& header, const boost::json::object& envelope) {
  EXPECT_EQ(header.id.to_string(), str(envelope.at("id")));
  EXPECT_EQ(header.from.str(), str(envelope.at("from")));
  EXPECT_EQ(header.to.str(), str(envelope.at("to")));
  EXPECT_EQ(to_string(header.msg_type), str(envelope.at("msg_type")));
  if (const auto* reply_to = envelope.if_contains("in_reply_to")) {
    ASSERT_TRUE(header.in_reply_to.has_value());
    EXPECT_EQ(header.in_reply_to->to_string(), str(*reply_to));
  } else {
    EXPECT_FALSE(header.in_reply_to.has_value());
  }
}

TEST(RoutingHeaderVectors, EveryValidEnvelopeOfEnvelopeJson) {
  const auto vectors = load_vectors("agent-mesh/envelope.json");
  const auto& valid = vectors.at("valid").as_array();
  ASSERT_EQ(valid.size(), 7u);
  for (const auto& v : valid) {
    SCOPED_TRACE(str(v.at("name")));
    const auto* received = v.as_object().if_contains("received_text");
    const std::string text = received != nullptr ? str(*received) : boost::json::serialize(v.at("envelope"));
    auto header = scan_routing_header(text);
    ASSERT_TRUE(header.ok()) << header.error().describe();
    // The as-received vector has no "envelope": compare with what the full parse reads.
    expect_header_matches(*header, json::parse_ijson(text)->as_object());
  }
}

// All envelopes of the IK vectors (handshakes, transport messages, the receiver checks' variants).
std::vector<boost::json::object> ik_envelopes() {
  const auto vectors = load_vectors("agent-mesh/ik-handshake.json");
  std::vector<boost::json::object> out;
  for (const auto& h : vectors.at("handshakes").as_array()) {
    out.push_back(h.at("message1").at("envelope").as_object());
    out.push_back(h.at("message2").at("envelope").as_object());
  }
  for (const auto& t : vectors.at("transport").as_array()) {
    const auto& object = t.as_object();
    if (const auto* envelope = object.if_contains("envelope")) {
      out.push_back(envelope->as_object());
    } else {
      // Large payloads are given by hash: any base64url string routes the same.
      boost::json::object header = object.at("envelope_without_payload").as_object();
      header["payload"] = std::string(static_cast<std::size_t>(object.at("payload_b64url_length").as_int64()), 'A');
      out.push_back(std::move(header));
    }
  }
  for (const auto& r : vectors.at("receiver_checks").as_array()) out.push_back(r.at("envelope").as_object());
  return out;
}

TEST(RoutingHeaderVectors, EveryEnvelopeOfIkHandshakeJson) {
  const auto envelopes = ik_envelopes();
  ASSERT_EQ(envelopes.size(), 4u + 15u + 8u);
  for (const auto& envelope : envelopes) {
    const std::string text = boost::json::serialize(envelope);
    SCOPED_TRACE(text.substr(0, 200));
    auto header = scan_routing_header(text);
    ASSERT_TRUE(header.ok()) << header.error().describe();
    expect_header_matches(*header, envelope);
    EXPECT_EQ(classify_frame(text).value(), FrameKind::envelope);
  }
}

// The invalid envelopes of envelope.json fail routing exactly when the broken rule is one the relay
// checks (§6); the others are the receiver's to drop (§3), and the relay forwards them.
TEST(RoutingHeaderVectors, InvalidEnvelopesFailRoutingOnlyForRoutingRules) {
  const auto vectors = load_vectors("agent-mesh/envelope.json");
  const std::set<std::string> routing_reasons{"not_ijson", "unknown_msg_type", "bad_from", "bad_id"};
  std::size_t rejected = 0;
  for (const auto& v : vectors.at("invalid").as_array()) {
    const std::string reason = str(v.at("reason"));
    SCOPED_TRACE(reason + " (" + str(v.at("rule")) + ")");
    auto header = scan_routing_header(str(v.at("received_text")));
    // in_reply_to: null is the one null_member case; the relay reads in_reply_to, so it refuses it.
    const bool null_reply_to = reason == "null_member";
    EXPECT_EQ(header.ok(), routing_reasons.count(reason) == 0 && !null_reply_to)
        << (header.ok() ? "accepted" : header.error().describe());
    if (!header.ok()) {
      ++rejected;
      EXPECT_EQ(header.error().code, Errc::bad_envelope);
    }
  }
  EXPECT_EQ(rejected, 10u);
}

// ---- each rejection ----

boost::json::object base_envelope() {
  return {{"id", "a6e50100-0000-4000-8000-000000000100"},
          {"from", kAlice},
          {"to", kBob},
          {"msg_type", "response"},
          {"in_reply_to", "a6e50001-0000-4000-8000-000000000001"},
          {"timestamp", 1764000600000},
          {"encrypted", true},
          {"sid", "ABEiM0RVZneImaq7zN3u_w"},
          {"n", 3},
          {"payload", "AAAA"}};
}

template <class T>
Error error_of(const Result<T>& result) {
  if (result.ok()) return Error{Errc::internal, "(accepted)"};
  return result.error();
}

#define EXPECT_ROUTING_ERROR(text, errc, fragment)                                     \
  do {                                                                                 \
    const Error error_ = error_of(scan_routing_header(text));                          \
    EXPECT_EQ(error_.code, errc) << error_.describe();                                 \
    EXPECT_NE(error_.message.find(fragment), std::string::npos) << error_.describe();  \
  } while (false)

std::string with(std::string_view member, boost::json::value value) {
  auto o = base_envelope();
  o[member] = std::move(value);
  return boost::json::serialize(o);
}
std::string without(std::string_view member) {
  auto o = base_envelope();
  o.erase(member);
  return boost::json::serialize(o);
}

TEST(RoutingHeaderScan, BaseEnvelopeScans) {
  auto header = scan_routing_header(boost::json::serialize(base_envelope()));
  ASSERT_TRUE(header.ok()) << header.error().describe();
  expect_header_matches(*header, base_envelope());
}

TEST(RoutingHeaderScan, NotAnObject) {
  for (const char* text : {"[]", "1", "\"s\"", "null", "true", "[{\"id\":1}]"}) {
    EXPECT_ROUTING_ERROR(text, Errc::bad_envelope, "envelope must be a JSON object");
  }
}

TEST(RoutingHeaderScan, IdMember) {
  EXPECT_ROUTING_ERROR(without("id"), Errc::bad_envelope, "envelope: missing member \"id\"");
  EXPECT_ROUTING_ERROR(with("id", 5), Errc::bad_envelope, "envelope: id must be a string");
  EXPECT_ROUTING_ERROR(with("id", nullptr), Errc::bad_envelope, "envelope: id must be a string");
  EXPECT_ROUTING_ERROR(with("id", boost::json::object{}), Errc::bad_envelope, "envelope: id must be a string");
  EXPECT_ROUTING_ERROR(with("id", "a6e50100-0000-1000-8000-000000000100"), Errc::bad_envelope, "envelope: id: UUID");
  EXPECT_ROUTING_ERROR(with("id", "A6E50100-0000-4000-8000-000000000100"), Errc::bad_envelope,
                       "envelope: id: UUID must be lower-case");
  EXPECT_ROUTING_ERROR(with("id", boost::json::string(100, 'a')), Errc::bad_envelope, "envelope: id is too long");
}

TEST(RoutingHeaderScan, AgentIds) {
  // An alias: the canonical ID with non-zero unused bits in its last character (§1).
  EXPECT_ROUTING_ERROR(with("from", "vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaV"), Errc::bad_envelope,
                       "envelope: from: agent ID is not canonical base64url");
  EXPECT_ROUTING_ERROR(with("from", "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), Errc::bad_envelope,
                       "envelope: from: ");
  EXPECT_ROUTING_ERROR(with("to", "short"), Errc::bad_envelope, "envelope: to: agent ID must be 43 characters");
  EXPECT_ROUTING_ERROR(without("from"), Errc::bad_envelope, "envelope: missing member \"from\"");
  EXPECT_ROUTING_ERROR(without("to"), Errc::bad_envelope, "envelope: missing member \"to\"");
  EXPECT_ROUTING_ERROR(with("to", boost::json::array{kBob}), Errc::bad_envelope, "envelope: to must be a string");
}

TEST(RoutingHeaderScan, MsgTypeAndInReplyTo) {
  EXPECT_ROUTING_ERROR(with("msg_type", "control"), Errc::bad_envelope, "envelope: unknown msg_type \"control\"");
  EXPECT_ROUTING_ERROR(with("msg_type", "x\ny"), Errc::bad_envelope, "unknown msg_type \"x\\ny\"");
  EXPECT_ROUTING_ERROR(with("msg_type", 1), Errc::bad_envelope, "envelope: msg_type must be a string");
  EXPECT_ROUTING_ERROR(without("msg_type"), Errc::bad_envelope, "envelope: missing member \"msg_type\"");
  EXPECT_ROUTING_ERROR(with("in_reply_to", "nope"), Errc::bad_envelope, "envelope: in_reply_to: UUID");
  EXPECT_ROUTING_ERROR(with("in_reply_to", nullptr), Errc::bad_envelope, "envelope: in_reply_to must be a string");
  EXPECT_TRUE(scan_routing_header(without("in_reply_to")).ok());
}

TEST(RoutingHeaderScan, ControlFrameIsNotAnEnvelope) {
  EXPECT_ROUTING_ERROR(with("type", "ping"), Errc::bad_envelope, "has a \"type\" member");
  EXPECT_ROUTING_ERROR(R"({"type":"ping"})", Errc::bad_envelope, "has a \"type\" member");
}

TEST(RoutingHeaderScan, DuplicateTopLevelMembers) {
  const std::string base = boost::json::serialize(base_envelope());
  std::string text = base;
  text.insert(1, R"("to":"vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaU",)");
  EXPECT_ROUTING_ERROR(text, Errc::bad_envelope, "envelope: duplicate member \"to\"");
  text = base;
  text.insert(1, R"("\u0069d":"a6e50100-0000-4000-8000-000000000100",)");  // "id", spelt with an escape
  EXPECT_ROUTING_ERROR(text, Errc::bad_envelope, "envelope: duplicate member \"id\"");
  text = base;
  text.insert(1, R"("extra":1,"extra":2,)");
  EXPECT_ROUTING_ERROR(text, Errc::bad_envelope, "envelope: duplicate member \"extra\"");
  text = base;
  text.insert(1, R"("ext\u0072a":1,"extra":2,)");
  EXPECT_ROUTING_ERROR(text, Errc::bad_envelope, "envelope: duplicate member \"extra\"");
  // One level down is the payload's business (the receiver's parse_ijson rejects it).
  EXPECT_TRUE(scan_routing_header(with("payload", boost::json::object{{"a", 1}, {"b", 2}})).ok());
  text = with("payload", boost::json::object{{"a", 1}});
  text.insert(text.find(R"("a":1)"), R"("a":0,)");
  EXPECT_TRUE(scan_routing_header(text).ok()) << text;
  // Unknown top-level members are also the receiver's to reject (§3), not a routing check.
  EXPECT_TRUE(scan_routing_header(with("extra", 1)).ok());
}

TEST(RoutingHeaderScan, InvalidJson) {
  const std::string base = boost::json::serialize(base_envelope());
  EXPECT_ROUTING_ERROR(base.substr(0, base.size() - 1), Errc::bad_envelope,
                       "envelope: invalid JSON: unexpected end of input");
  EXPECT_ROUTING_ERROR(base + "x", Errc::bad_envelope, "invalid JSON: unexpected content after the object");
  std::string text = base;
  text.insert(text.size() - 1, ",");
  EXPECT_ROUTING_ERROR(text, Errc::bad_envelope, "envelope: invalid JSON");
  EXPECT_ROUTING_ERROR(with("payload", "caf\xc3"), Errc::bad_envelope, "invalid JSON: invalid UTF-8");
  text = with("payload", "X");
  text.replace(text.find("\"X\""), 3, R"("\ud800")");
  EXPECT_ROUTING_ERROR(text, Errc::bad_envelope, "envelope: invalid JSON");
  EXPECT_ROUTING_ERROR("", Errc::bad_envelope, "unexpected end of input");
  text = with("payload", "X");
  text.replace(text.find("\"X\""), 3, std::string(65, '[') + std::string(65, ']'));
  EXPECT_ROUTING_ERROR(text, Errc::bad_envelope, "nesting deeper than 64 levels");
}

TEST(RoutingHeaderScan, NumbersOutsideTheSafeRangeAnywhere) {
  const auto in_payload = [](std::string_view number) {
    std::string text = with("payload", boost::json::object{{"body", boost::json::array{1, "X"}}});
    text.replace(text.find("\"X\""), 3, number);
    return text;
  };
  EXPECT_TRUE(scan_routing_header(in_payload("9007199254740991")).ok());
  EXPECT_TRUE(scan_routing_header(in_payload("-9007199254740991")).ok());
  EXPECT_TRUE(scan_routing_header(in_payload("1.5e300")).ok());
  EXPECT_TRUE(scan_routing_header(in_payload("1e-400")).ok()) << "underflow is zero, as in parse_ijson";
  EXPECT_ROUTING_ERROR(in_payload("9007199254740992"), Errc::bad_envelope,
                       "integer \"9007199254740992\" is outside the I-JSON safe range");
  EXPECT_ROUTING_ERROR(in_payload("-9007199254740992"), Errc::bad_envelope, "outside the I-JSON safe range");
  EXPECT_ROUTING_ERROR(in_payload("18446744073709551616"), Errc::bad_envelope, "outside the I-JSON safe range");
  EXPECT_ROUTING_ERROR(in_payload("123456789012345678901234567890"), Errc::bad_envelope,
                       "outside the I-JSON safe range");
  EXPECT_ROUTING_ERROR(in_payload("1e20"), Errc::bad_envelope, "in canonical (JCS) form");
  EXPECT_ROUTING_ERROR(in_payload("1e400"), Errc::bad_envelope, "does not fit a double");
  EXPECT_ROUTING_ERROR(with("n", 9007199254740992), Errc::bad_envelope, "outside the I-JSON safe range");
  // The same verdicts as parse_ijson for each number.
  for (const char* number : {"9007199254740991", "9007199254740992", "1e20", "1e21", "-1e400", "0.1", "1E2"}) {
    const std::string text = in_payload(number);
    EXPECT_EQ(scan_routing_header(text).ok(), json::parse_ijson(text).ok()) << number;
  }
}

TEST(RoutingHeaderScan, SizeBound) {
  const std::string text = boost::json::serialize(base_envelope());
  EXPECT_TRUE(scan_routing_header(text, text.size()).ok());
  EXPECT_ROUTING_ERROR(std::string(limits::default_max_envelope_bytes + 1, ' '), Errc::too_large,
                       "exceeds the limit of 1048576 bytes");
  const auto too_big = scan_routing_header(text, text.size() - 1);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.error().code, Errc::too_large);
  EXPECT_NE(too_big.error().message.find("exceeds the limit of"), std::string::npos);
  EXPECT_EQ(close_code_for(too_big.error().code), close_code::too_big);
}

TEST(RoutingHeaderScan, RejectedIdNamesTheEnvelopeWhenItCouldBeRead) {
  std::optional<Uuid> id;
  EXPECT_FALSE(scan_routing_header(with("to", "short"), limits::default_max_envelope_bytes, &id).ok());
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(id->to_string(), "a6e50100-0000-4000-8000-000000000100");
  EXPECT_FALSE(scan_routing_header(with("id", "bad"), limits::default_max_envelope_bytes, &id).ok());
  EXPECT_FALSE(id.has_value());
  EXPECT_FALSE(scan_routing_header("{\"id\":\"a6e50100-0000-4000-8000-000000000100\",", 1 << 20, &id).ok());
  EXPECT_FALSE(id.has_value()) << "not JSON: nothing of it is trusted";
}

TEST(RoutingHeaderScan, ResolverReplacesThePointValidation) {
  const AgentId alice = *AgentId::parse(kAlice);
  const AgentId bob = *AgentId::parse(kBob);
  std::vector<std::string> asked;
  const AgentIdResolver cached = [&](std::string_view text) -> Result<AgentId> {
    asked.emplace_back(text);
    if (text == alice.str()) return alice;
    if (text == bob.str()) return bob;
    return fail(Errc::bad_request, "not a known agent");
  };
  auto header = scan_routing_header(boost::json::serialize(base_envelope()), 1 << 20, nullptr, cached);
  ASSERT_TRUE(header.ok());
  EXPECT_EQ(header->from, alice);
  EXPECT_EQ(header->to, bob);
  EXPECT_EQ(asked, (std::vector<std::string>{std::string(kAlice), std::string(kBob)}));
  const auto unknown = scan_routing_header(with("to", "x"), 1 << 20, nullptr, cached);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, Errc::bad_envelope);
  EXPECT_EQ(unknown.error().message, "envelope: to: not a known agent");
}

TEST(RoutingHeaderScan, EscapedMembersAreReadDecoded) {
  const std::string text =
      R"({"\u0069d":"a6e50100-0000-4000-8000-000000000100","from":"vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaU",)"
      R"("to":"cF-6wB9VGYmfQ3vELkAlWumrVL_wDeNDOvfWh9nnGtU","msg_type":"stre\u0061m_end","payload":{}})";
  auto header = scan_routing_header(text);
  ASSERT_TRUE(header.ok()) << header.error().describe();
  EXPECT_EQ(header->msg_type, MsgType::stream_end);
  EXPECT_EQ(header->id.to_string(), "a6e50100-0000-4000-8000-000000000100");
}

// Style: parsers are tested split at every byte. Every proper prefix of an envelope is rejected
// (never too_large, never a crash), and so is every frame with one byte dropped unless it still
// is a well-formed envelope, which must then scan like the full parse reads it.
TEST(RoutingHeaderScan, EveryTruncationAndEveryDroppedByte) {
  const std::string text = boost::json::serialize(base_envelope());
  for (std::size_t cut = 0; cut < text.size(); ++cut) {
    const auto header = scan_routing_header(std::string_view(text).substr(0, cut));
    ASSERT_FALSE(header.ok()) << cut;
    EXPECT_EQ(header.error().code, Errc::bad_envelope);
    EXPECT_FALSE(classify_frame(std::string_view(text).substr(0, cut)).ok()) << cut;

    std::string dropped = text;
    dropped.erase(cut, 1);
    const auto scanned = scan_routing_header(dropped);
    const auto parsed = json::parse_ijson(dropped);
    if (scanned.ok()) {
      EXPECT_TRUE(parsed.ok()) << dropped;
    }
  }
}

}  // namespace
}  // namespace agent_mesh
