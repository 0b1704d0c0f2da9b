// The sans-IO parsers of meshctl: the capabilities file, meshd's stream lines and error objects,
// and the small text helpers.
#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>

#include "ctl/capabilities_file.hpp"
#include "ctl/context.hpp"
#include "ctl/local_api_answers.hpp"

namespace agent_mesh::ctl {
namespace {

TEST(CapabilitiesFile, ReadsNamesDescriptionsAndSchemas) {
  auto parsed = parse_capabilities_file(
      R"([{"name": "echo", "description": "echoes", "input_schema": {"type": "object"}, "output_schema": true},
          {"name": "sum"}])");
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[0].name, "echo");
  EXPECT_EQ((*parsed)[0].description, "echoes");
  ASSERT_TRUE((*parsed)[0].input_schema);
  EXPECT_EQ(boost::json::serialize(*(*parsed)[0].input_schema), R"({"type":"object"})");
  EXPECT_TRUE((*parsed)[0].output_schema->as_bool());
  EXPECT_FALSE((*parsed)[1].description);
}

TEST(CapabilitiesFile, EveryRejectionNamesTheItem) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"name": "echo"})", "not a JSON array"},
      {R"([1])", "[0] is not an object"},
      {R"([{"description": "x"}])", "[0]: name is required"},
      {R"([{"name": "a"}, {"nam": "b"}])", "[1]: unexpected member `nam`"},
      {R"([{"name": 5}])", "[0].name has the wrong type"},
      {R"([{"name": "a", "input_schema": "object"}])", "[0].input_schema has the wrong type"},
      {R"([{"name": "a"})", ""},
  };
  for (const auto& [text, message] : cases) {
    auto parsed = parse_capabilities_file(text);
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_NE(parsed.error().message.find(message), std::string::npos) << text << " → " << parsed.error().message;
  }
  EXPECT_EQ(parse_capabilities_file(std::string(kMaxCapabilitiesFileBytes + 1, ' ')).error().code, Errc::too_large);
}

TEST(LocalApiError, ReadsTheErrorObjectOrNamesTheStatus) {
  const Error denied = local_api_error(403, R"({"error": {"code": "acl_denied", "message": "no rule"}})");
  EXPECT_EQ(denied.code, Errc::acl_denied);
  EXPECT_EQ(denied.message, "no rule");
  EXPECT_EQ(local_api_error(502, R"({"error": {"code": "martian", "message": "?"}})").code, Errc::internal);
  const Error garbage = local_api_error(500, "<html>");
  EXPECT_EQ(garbage.code, Errc::internal);
  EXPECT_NE(garbage.message.find("500"), std::string::npos);
}

const std::string kStream =
    "{\"seq\":0,\"body\":{\"n\":0}}\n{\"seq\":1,\"body\":\"two\"}\n\n{\"end\":2}\n";

TEST(StreamLineReader, GivesTheSameEventsWhereverTheBytesAreSplit) {
  for (std::size_t split = 0; split <= kStream.size(); ++split) {
    StreamLineReader reader;
    std::vector<StreamLineReader::Event> events;
    for (const std::string_view part : {std::string_view(kStream).substr(0, split), std::string_view(kStream).substr(split)}) {
      auto got = reader.feed(part);
      ASSERT_TRUE(got.ok()) << "split at " << split << ": " << got.error().message;
      for (auto& event : *got) events.push_back(std::move(event));
    }
    ASSERT_EQ(events.size(), 3u) << "split at " << split;
    EXPECT_EQ(boost::json::serialize(events[0].body), R"({"n":0})");
    EXPECT_EQ(events[1].body.as_string(), "two");
    EXPECT_EQ(events[2].kind, StreamLineReader::Event::Kind::end);
    EXPECT_TRUE(reader.finished());
  }
}

TEST(StreamLineReader, ByteByByteToo) {
  StreamLineReader reader;
  std::size_t chunks = 0;
  for (const char c : kStream) {
    auto got = reader.feed(std::string_view(&c, 1));
    ASSERT_TRUE(got.ok());
    for (const auto& event : *got) chunks += event.kind == StreamLineReader::Event::Kind::chunk ? 1 : 0;
  }
  EXPECT_EQ(chunks, 2u);
  EXPECT_TRUE(reader.finished());
}

TEST(StreamLineReader, AnErrorLineEndsTheStreamWithItsCode) {
  StreamLineReader reader;
  auto got = reader.feed("{\"seq\":0,\"body\":1}\n{\"error\":{\"code\":\"timeout\",\"message\":\"late\"}}\n");
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ((*got)[1].kind, StreamLineReader::Event::Kind::error);
  EXPECT_EQ((*got)[1].error.code, Errc::timeout);
  EXPECT_TRUE(reader.finished());
}

TEST(StreamLineReader, RefusesWhatMeshdNeverSends) {
  for (const std::string bad : {"[1]\n", "{\"seq\":0}\n", "nope\n", "{\"end\":\"x\"}\n"}) {
    StreamLineReader reader;
    auto got = reader.feed(bad);
    EXPECT_FALSE(got.ok()) << bad;
    EXPECT_FALSE(reader.feed("{\"end\":0}\n").ok()) << "a failed reader stays failed";
  }
  StreamLineReader after_end;
  EXPECT_FALSE(after_end.feed("{\"end\":0}\n{\"seq\":0,\"body\":1}\n").ok());
  StreamLineReader long_line;
  EXPECT_FALSE(long_line.feed(std::string(kMaxStreamLineBytes + 1, 'x')).ok()) << "an endless line is bounded";
}

TEST(TextHelpers, SplitListDropsBlanks) {
  EXPECT_EQ(split_list("a, b ,,c"), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(split_list("").empty());
  EXPECT_EQ(split_list("*"), (std::vector<std::string>{"*"}));
}

TEST(TextHelpers, QueryStringPercentEncodesEverythingButUnreserved) {
  EXPECT_EQ(query_string({{"q", "a b&c=d/é"}, {"online", "true"}}), "q=a%20b%26c%3Dd%2F%C3%A9&online=true");
  EXPECT_EQ(query_string({}), "");
}

TEST(TextHelpers, Rfc3339IsUtc) {
  EXPECT_EQ(rfc3339(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(rfc3339(1'795'742'882'046), "2026-11-27T01:28:02Z");
}

}  // namespace
}  // namespace agent_mesh::ctl
