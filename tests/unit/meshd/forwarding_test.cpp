// The sans-IO half of meshd's forwarder (src/meshd/forwarding.hpp): the body POSTed to the local
// agent, how its answer is read, and the incremental SSE / NDJSON parser.
#include "meshd/forwarding.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <vector>

namespace agent_mesh::meshd {
namespace {

namespace json = boost::json;

json::value parse(std::string_view text) { return json::parse(text); }

// ---- forwarded_body ----

TEST(ForwardedBody, InsertsCapabilityFirstInAnObject) {
  EXPECT_EQ(forwarded_body("echo", parse(R"({"message":"hello from alice"})")),
            R"({"capability":"echo","message":"hello from alice"})");
}

TEST(ForwardedBody, ReplacesAnExistingCapabilityMember) {
  EXPECT_EQ(forwarded_body("echo", parse(R"({"a":1,"capability":"other","b":[2]})")),
            R"({"capability":"echo","a":1,"b":[2]})");
  EXPECT_EQ(forwarded_body("echo", parse(R"({"capability":{"x":1}})")), R"({"capability":"echo"})");
}

TEST(ForwardedBody, KeepsTheOrderOfTheOtherMembers) {
  EXPECT_EQ(forwarded_body("sum", parse(R"({"z":1,"a":2,"m":{"y":3,"b":4},"capability":5,"c":null})")),
            R"({"capability":"sum","z":1,"a":2,"m":{"y":3,"b":4},"c":null})");
}

TEST(ForwardedBody, EmptyObject) { EXPECT_EQ(forwarded_body("ping", json::object{}), R"({"capability":"ping"})"); }

TEST(ForwardedBody, WrapsNonObjectsInData) {
  EXPECT_EQ(forwarded_body("echo", parse("5")), R"({"capability":"echo","data":5})");
  EXPECT_EQ(forwarded_body("echo", parse(R"("text")")), R"({"capability":"echo","data":"text"})");
  EXPECT_EQ(forwarded_body("echo", parse(R"([1,{"capability":2}])")), R"({"capability":"echo","data":[1,{"capability":2}]})");
  EXPECT_EQ(forwarded_body("echo", nullptr), R"({"capability":"echo","data":null})");
  EXPECT_EQ(forwarded_body("echo", parse("true")), R"({"capability":"echo","data":true})");
}

// ---- interpret_unary_answer ----

TEST(InterpretUnaryAnswer, SuccessWithJson) {
  auto answer = interpret_unary_answer(200, "application/json", R"({"agent":"bob","echo":{"n":1}})");
  ASSERT_TRUE(answer) << answer.error().describe();
  EXPECT_EQ(json::serialize(*answer), R"({"agent":"bob","echo":{"n":1}})");
}

TEST(InterpretUnaryAnswer, AnyTwoHundredStatusAndContentTypeWithJsonBody) {
  for (const int status : {200, 201, 202, 299}) {
    auto answer = interpret_unary_answer(status, "", " [1, 2]\n");
    ASSERT_TRUE(answer) << status;
    EXPECT_EQ(json::serialize(*answer), "[1,2]");
  }
  auto text = interpret_unary_answer(200, "text/plain", R"("just a string")");
  ASSERT_TRUE(text);
  EXPECT_EQ(text->as_string(), "just a string");
}

TEST(InterpretUnaryAnswer, SuccessThatIsNotJsonIsAgentError) {
  auto answer = interpret_unary_answer(200, "text/html", "<html>hi</html>");
  ASSERT_FALSE(answer);
  EXPECT_EQ(answer.error().code, Errc::agent_error);
  EXPECT_NE(answer.error().message.find("200"), std::string::npos) << answer.error().message;
  EXPECT_NE(answer.error().message.find("<html>hi</html>"), std::string::npos);
  EXPECT_NE(answer.error().message.find("text/html"), std::string::npos);
}

TEST(InterpretUnaryAnswer, EmptySuccessIsAgentError) {
  auto answer = interpret_unary_answer(204, "", "");
  ASSERT_FALSE(answer);
  EXPECT_EQ(answer.error().code, Errc::agent_error);
  EXPECT_NE(answer.error().message.find("204"), std::string::npos);
}

TEST(InterpretUnaryAnswer, IJsonViolationsAreNotJson) {
  // Duplicate member names and integers beyond 2^53-1 break protocol §1.
  for (const std::string_view body : {R"({"a":1,"a":2})", R"({"n":9007199254740992})"}) {
    auto answer = interpret_unary_answer(200, "application/json", body);
    ASSERT_FALSE(answer) << body;
    EXPECT_EQ(answer.error().code, Errc::agent_error);
  }
}

TEST(InterpretUnaryAnswer, ExcerptIsTheFirst200Bytes) {
  const std::string body = std::string(200, 'a') + std::string(100, 'B');
  for (const int status : {200, 500}) {
    auto answer = interpret_unary_answer(status, "text/plain", body);
    ASSERT_FALSE(answer);
    EXPECT_EQ(answer.error().code, Errc::agent_error);
    const std::string& message = answer.error().message;
    EXPECT_NE(message.find(std::to_string(status)), std::string::npos) << message;
    EXPECT_NE(message.find(std::string(200, 'a')), std::string::npos);
    EXPECT_EQ(message.find('B'), std::string::npos) << message;
    EXPECT_TRUE(message.ends_with(std::string(200, 'a'))) << message;
  }
}

TEST(InterpretUnaryAnswer, ShortBodyIsQuotedWhole) {
  auto answer = interpret_unary_answer(503, "text/plain", "overloaded");
  ASSERT_FALSE(answer);
  EXPECT_EQ(answer.error().message, "local agent answered HTTP 503: overloaded");
}

TEST(InterpretUnaryAnswer, ExcerptStaysValidUtf8) {
  // 199 ASCII bytes and a two-byte character: the 200-byte cut splits it.
  const std::string body = std::string(199, 'x') + "\xC3\xA9" + "tail";
  auto answer = interpret_unary_answer(500, "", body);
  ASSERT_FALSE(answer);
  const std::string& message = answer.error().message;
  EXPECT_TRUE(message.ends_with(std::string(199, 'x') + "\xEF\xBF\xBD")) << message;
  // Binary bodies too: the message must survive an I-JSON round trip.
  auto binary = interpret_unary_answer(500, "", std::string("\xFF\xFE\x00\x80ok", 6));
  ASSERT_FALSE(binary);
  const json::value wrapped{{"message", binary.error().message}};
  EXPECT_NO_THROW((void)json::parse(json::serialize(wrapped)));
  EXPECT_NE(binary.error().message.find("ok"), std::string::npos);
}

TEST(InterpretUnaryAnswer, ProtocolErrorsPassThrough) {
  struct Case {
    std::string_view code;
    Errc errc;
  };
  for (const auto& c : std::vector<Case>{{"acl_denied", Errc::acl_denied},
                                         {"unknown_capability", Errc::unknown_capability},
                                         {"timeout", Errc::timeout},
                                         {"unreachable", Errc::unreachable},
                                         {"rate_limited", Errc::rate_limited},
                                         {"revoked", Errc::revoked},
                                         {"agent_error", Errc::agent_error},
                                         {"bad_request", Errc::bad_request},
                                         {"too_large", Errc::too_large},
                                         {"cancelled", Errc::cancelled},
                                         {"no_session", Errc::no_session},
                                         {"expired", Errc::expired},
                                         {"internal", Errc::internal}}) {
    const std::string body = R"({"error":{"code":")" + std::string(c.code) + R"(","message":"why not"}})";
    auto answer = interpret_unary_answer(429, "application/json", body);
    ASSERT_FALSE(answer) << c.code;
    EXPECT_EQ(answer.error().code, c.errc) << c.code;
    EXPECT_EQ(answer.error().message, "why not");
  }
}

TEST(InterpretUnaryAnswer, OtherErrorBodiesAreAgentErrors) {
  for (const std::string_view body : {
           R"({"error":{"code":"not_found","message":"x"}})",       // not a protocol §4 code
           R"({"error":{"code":"made_up","message":"x"}})",
           R"({"error":{"code":"timeout"}})",                       // no message
           R"({"error":{"code":1,"message":"x"}})",
           R"({"error":"timeout"})",
           R"({"code":"timeout","message":"x"})",
           R"([1,2])",
           "Internal Server Error",
       }) {
    auto answer = interpret_unary_answer(500, "application/json", body);
    ASSERT_FALSE(answer) << body;
    EXPECT_EQ(answer.error().code, Errc::agent_error) << body;
    EXPECT_NE(answer.error().message.find("500"), std::string::npos);
  }
}

TEST(InterpretUnaryAnswer, ErrorBodyOnSuccessIsAValue) {
  // A 2xx is a response whatever it says.
  auto answer = interpret_unary_answer(200, "application/json", R"({"error":{"code":"timeout","message":"x"}})");
  ASSERT_TRUE(answer);
}

TEST(InterpretUnaryAnswer, TooLargeForOneEnvelope) {
  const std::string big = "\"" + std::string(kMaxAnswerBodyBytes, 'x') + "\"";
  auto answer = interpret_unary_answer(200, "application/json", big);
  ASSERT_FALSE(answer);
  EXPECT_EQ(answer.error().code, Errc::too_large);
  // Just under the bound fits.
  const std::string fits = "\"" + std::string(kMaxAnswerBodyBytes - 2, 'x') + "\"";
  EXPECT_TRUE(interpret_unary_answer(200, "application/json", fits));
  // Whitespace does not count: the answer is measured as re-serialised.
  const std::string padded = std::string(kMaxAnswerBodyBytes, ' ') + "[1]";
  EXPECT_TRUE(interpret_unary_answer(200, "application/json", padded));
  const std::string raw(kMaxRawAnswerBytes + 1, ' ');
  auto huge = interpret_unary_answer(200, "application/json", raw);
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code, Errc::too_large);
}

TEST(MediaType, LowerCasedWithoutParameters) {
  EXPECT_EQ(media_type("Text/Event-Stream; charset=utf-8"), "text/event-stream");
  EXPECT_EQ(media_type("  application/x-ndjson  "), "application/x-ndjson");
  EXPECT_EQ(media_type(""), "");
  EXPECT_EQ(StreamBodyParser::kind_for("text/event-stream;charset=UTF-8"), StreamBodyParser::Kind::sse);
  EXPECT_EQ(StreamBodyParser::kind_for("application/X-NDJSON"), StreamBodyParser::Kind::ndjson);
  EXPECT_EQ(StreamBodyParser::kind_for("application/json"), std::nullopt);
  EXPECT_EQ(StreamBodyParser::kind_for(""), std::nullopt);
}

// ---- StreamBodyParser ----

using Kind = StreamBodyParser::Kind;

// Parses `text` fed in the given pieces, then finish(); the chunks serialised, or the error.
Result<std::vector<std::string>> run(Kind kind, const std::vector<std::string_view>& pieces) {
  StreamBodyParser parser(kind);
  std::vector<std::string> out;
  for (const auto piece : pieces) {
    auto chunks = parser.feed(piece);
    if (!chunks) return std::move(chunks).error();
    for (const auto& chunk : *chunks) out.push_back(json::serialize(chunk));
  }
  auto rest = parser.finish();
  if (!rest) return std::move(rest).error();
  for (const auto& chunk : *rest) out.push_back(json::serialize(chunk));
  return out;
}

Result<std::vector<std::string>> run(Kind kind, std::string_view text) {
  return run(kind, std::vector<std::string_view>{text});
}

// Every split into two pieces, and byte by byte, gives the same result as one piece.
void expect_split_invariant(Kind kind, std::string_view text, const std::vector<std::string>& expected) {
  auto whole = run(kind, text);
  ASSERT_TRUE(whole) << whole.error().describe();
  EXPECT_EQ(*whole, expected);
  for (std::size_t cut = 0; cut <= text.size(); ++cut) {
    auto split = run(kind, {text.substr(0, cut), text.substr(cut)});
    ASSERT_TRUE(split) << "cut at " << cut << ": " << split.error().describe();
    EXPECT_EQ(*split, expected) << "cut at " << cut;
  }
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < text.size(); ++i) bytes.push_back(text.substr(i, 1));
  auto bytewise = run(kind, bytes);
  ASSERT_TRUE(bytewise) << bytewise.error().describe();
  EXPECT_EQ(*bytewise, expected);
}

TEST(StreamBodyParserSse, OneChunkPerEvent) {
  expect_split_invariant(Kind::sse, "data: {\"n\":0}\n\ndata: {\"n\":1}\n\ndata:2\n\n",
                         {R"({"n":0})", R"({"n":1})", "2"});
}

TEST(StreamBodyParserSse, LineEndingsCommentsFieldsAndBom) {
  const std::string text =
      "\xEF\xBB\xBF"
      ": a comment\r\n"
      "event: message\r\n"
      "id: 7\r\n"
      "retry: 1000\r\n"
      "data: [1,\r\n"
      "data:  2]\r\n"
      "\r\n"
      "unknown: field\r"
      "data: \"cr only\"\r"
      "\r"
      "data\n"  // a field without a colon: data with an empty value
      "data: 3\n"
      "\n"
      ":keep-alive\n\n"
      "data: {\"last\":true}\n\n";
  expect_split_invariant(Kind::sse, text, {"[1,2]", R"("cr only")", "3", R"({"last":true})"});
}

TEST(StreamBodyParserSse, MultiLineDataIsJoinedWithNewlines) {
  expect_split_invariant(Kind::sse, "data: {\"text\":\ndata: \"two lines\"}\n\n", {R"({"text":"two lines"})"});
}

TEST(StreamBodyParserSse, OneValuePerDataLineWithoutBlankLines) {
  // An agent that writes each chunk as a data: line and never ends the event.
  expect_split_invariant(Kind::sse, "data: {\"n\":0}\ndata: {\"n\":1}\ndata: {\"n\":2}\n",
                         {R"({"n":0})", R"({"n":1})", R"({"n":2})"});
}

TEST(StreamBodyParserSse, UnterminatedLastEventIsDispatched) {
  EXPECT_EQ(*run(Kind::sse, "data: 1\n\ndata: 2\n"), (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(*run(Kind::sse, "data: 1\n\ndata: 2"), (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(*run(Kind::sse, ""), std::vector<std::string>{});
}

TEST(StreamBodyParserSse, EmptyEventsCarryNothing) {
  expect_split_invariant(Kind::sse, "\n\ndata:\n\ndata: \n\nevent: ping\n\ndata: 1\n\n", {"1"});
}

TEST(StreamBodyParserSse, NotJsonIsAgentErrorAndSticks) {
  StreamBodyParser parser(Kind::sse);
  // The chunk before the bad one comes out; the failure follows.
  auto first = parser.feed("data: 1\n\ndata: [DONE]\n\ndata: 2\n\n");
  ASSERT_TRUE(first);
  ASSERT_EQ(first->size(), 1u);
  EXPECT_EQ((*first)[0], json::value(1));
  ASSERT_TRUE(parser.error());
  EXPECT_EQ(parser.error()->code, Errc::agent_error);
  EXPECT_NE(parser.error()->message.find("chunk 1"), std::string::npos) << parser.error()->message;
  auto again = parser.feed("data: 3\n\n");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::agent_error);
  EXPECT_FALSE(parser.finish());
}

TEST(StreamBodyParserSse, FailureWithoutChunksIsReturnedAtOnce) {
  StreamBodyParser parser(Kind::sse);
  auto first = parser.feed("data: nope\n\n");
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().code, Errc::agent_error);
  EXPECT_EQ(parser.chunks(), 0u);
}

TEST(StreamBodyParserNdjson, FeedAfterFinishIsAMisuse) {
  StreamBodyParser parser(Kind::ndjson);
  ASSERT_TRUE(parser.feed("1\n"));
  ASSERT_TRUE(parser.finish());
  EXPECT_FALSE(parser.error());
  auto late = parser.feed("2\n");
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, Errc::internal);
  EXPECT_FALSE(parser.finish());
}

TEST(StreamBodyParserSse, MixedLinesThatAreNotEachJsonFail) {
  auto result = run(Kind::sse, "data: {\"a\":\ndata: 1\ndata: x\n\n");
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, Errc::agent_error);
}

TEST(StreamBodyParserSse, LineBound) {
  StreamBodyParser parser(Kind::sse);
  const std::string piece(64 * 1024, 'x');
  Result<std::vector<json::value>> last = parser.feed("data: ");
  for (std::size_t fed = 0; last && fed <= kMaxStreamLineBytes; fed += piece.size()) last = parser.feed(piece);
  ASSERT_FALSE(last);
  EXPECT_EQ(last.error().code, Errc::too_large);
}

TEST(StreamBodyParserSse, EventBound) {
  // Many short data lines in one event add up.
  StreamBodyParser parser(Kind::sse);
  const std::string line = "data: " + std::string(1000, '1') + "\n";
  Result<std::vector<json::value>> last = std::vector<json::value>{};
  for (std::size_t fed = 0; last && fed <= 2 * kMaxStreamLineBytes; fed += line.size()) last = parser.feed(line);
  ASSERT_FALSE(last);
  EXPECT_EQ(last.error().code, Errc::too_large);
}

TEST(StreamBodyParserSse, ChunkTooLargeForAnEnvelope) {
  const std::string text = "data: \"" + std::string(kMaxAnswerBodyBytes, 'x') + "\"\n\n";
  auto result = run(Kind::sse, text);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, Errc::too_large);
}

TEST(StreamBodyParserNdjson, OneValuePerLine) {
  expect_split_invariant(Kind::ndjson, "1\n{\"a\":2}\r\n\n  \n[3,\"x\"]\n\"last\"",
                         {"1", R"({"a":2})", R"([3,"x"])", R"("last")"});
}

TEST(StreamBodyParserNdjson, CountsChunks) {
  StreamBodyParser parser(Kind::ndjson);
  ASSERT_TRUE(parser.feed("1\n2\n3"));
  EXPECT_EQ(parser.chunks(), 2u);
  ASSERT_TRUE(parser.finish());
  EXPECT_EQ(parser.chunks(), 3u);
}

TEST(StreamBodyParserNdjson, BadLineIsAgentError) {
  auto result = run(Kind::ndjson, "1\n{\"a\":\n");
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, Errc::agent_error);
  auto dup = run(Kind::ndjson, "{\"a\":1,\"a\":1}\n");
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, Errc::agent_error);
  auto truncated = run(Kind::ndjson, "1\n[2,");
  ASSERT_FALSE(truncated);
  EXPECT_EQ(truncated.error().code, Errc::agent_error);
}

TEST(StreamBodyParserNdjson, LineBound) {
  StreamBodyParser parser(Kind::ndjson);
  // Exactly at the bound is fine...
  ASSERT_TRUE(parser.feed(std::string(kMaxStreamLineBytes, ' ')));
  ASSERT_TRUE(parser.feed("\n"));
  // ...one more byte is not, whether it arrives at once or in pieces.
  auto over = parser.feed(std::string(kMaxStreamLineBytes + 1, ' '));
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, Errc::too_large);
  StreamBodyParser pieces(Kind::ndjson);
  ASSERT_TRUE(pieces.feed(std::string(kMaxStreamLineBytes, '1')));
  auto one_more = pieces.feed("1");
  ASSERT_FALSE(one_more);
  EXPECT_EQ(one_more.error().code, Errc::too_large);
}

TEST(StreamBodyParserNdjson, ChunkTooLargeForAnEnvelope) {
  auto result = run(Kind::ndjson, "\"" + std::string(kMaxAnswerBodyBytes, 'x') + "\"\n");
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, Errc::too_large);
}

}  // namespace
}  // namespace agent_mesh::meshd
