#include "agent_mesh/json.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent_mesh/error.hpp"
#include "agent_mesh/limits.hpp"
#include "test_vectors.hpp"

namespace agent_mesh::json {
namespace {

// Parses text that must be rejected and returns the error.
Error rejection_of(std::string_view text, const ParseOptions& options = {}) {
  auto parsed = parse_ijson(text, options);
  if (parsed.ok()) {
    ADD_FAILURE() << "accepted: " << text;
    return Error{};
  }
  return std::move(parsed).error();
}

// Expects a bad_request whose message contains `needle`.
void expect_bad_request(std::string_view text, std::string_view needle) {
  SCOPED_TRACE(std::string(text.substr(0, 80)));
  const Error error = rejection_of(text);
  EXPECT_EQ(error.code, Errc::bad_request);
  EXPECT_NE(error.message.find(needle), std::string::npos) << error.message;
}

boost::json::value parse_ok(std::string_view text) {
  auto parsed = parse_ijson(text);
  if (!parsed.ok()) {
    ADD_FAILURE() << "rejected: " << text << ": " << parsed.error().message;
    return nullptr;
  }
  return std::move(parsed).value();
}

std::string jcs_of_number(double value) {
  std::string out;
  append_jcs_number(out, value);
  return out;
}

// ---- RFC 8785 reference vectors ----

TEST(JcsVectors, EveryInputCanonicalisesToItsOutputByteForByte) {
  const std::filesystem::path input_dir =
      std::filesystem::path(AGENT_MESH_VECTORS_DIR) / "jcs/input";
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(input_dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  ASSERT_GE(names.size(), 6u);
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    const std::string input = test::read_vector_file("jcs/input/" + name);
    const std::string expected = test::read_vector_file("jcs/output/" + name);
    // The reference outputs are the exact canonical bytes: no trailing newline.
    ASSERT_FALSE(expected.empty());
    EXPECT_NE(expected.back(), '\n');
    auto parsed = parse_ijson(input);
    ASSERT_TRUE(parsed.ok()) << parsed.error().message;
    EXPECT_EQ(serialize_jcs(*parsed), expected);
    // Canonical text is a fixed point.
    auto reparsed = parse_ijson(expected);
    ASSERT_TRUE(reparsed.ok()) << reparsed.error().message;
    EXPECT_EQ(serialize_jcs(*reparsed), expected);
  }
}

// ---- ECMAScript number formatting (RFC 8785 §3.2.2.3) ----

TEST(JcsNumber, MatchesEcmaScriptNumberToString) {
  const std::pair<double, const char*> cases[] = {
      {0.0, "0"},
      {-0.0, "0"},
      {1.0, "1"},
      {-1.0, "-1"},
      {1.5, "1.5"},
      {-1.5, "-1.5"},
      {1e21, "1e+21"},
      {1e20, "100000000000000000000"},
      {1e-7, "1e-7"},
      {1e-6, "0.000001"},
      {123e-20, "1.23e-18"},
      {5e-324, "5e-324"},
      {1.7976931348623157e308, "1.7976931348623157e+308"},
      {-1.7976931348623157e308, "-1.7976931348623157e+308"},
      {9007199254740991.0, "9007199254740991"},
      {9007199254740992.0, "9007199254740992"},
      {0.1, "0.1"},
      {100.0, "100"},
      {4.50, "4.5"},
      {4.0, "4"},
      {0.002, "0.002"},
      {333333333.3333333, "333333333.3333333"},
      {1e30, "1e+30"},
      {1e-27, "1e-27"},
      {1.5e300, "1.5e+300"},
      {123456789012345680000.0, "123456789012345680000"},
      {1.2345678901234568e21, "1.2345678901234568e+21"},
      {0.000001234, "0.000001234"},
      {1.234e-7, "1.234e-7"},
      {-5e-7, "-5e-7"},
      {2.2250738585072014e-308, "2.2250738585072014e-308"},
  };
  for (const auto& [value, expected] : cases) {
    EXPECT_EQ(jcs_of_number(value), expected) << "value " << expected;
  }
}

TEST(JcsNumber, AppendsToExistingText) {
  std::string out = "[";
  append_jcs_number(out, 2.5);
  EXPECT_EQ(out, "[2.5");
}

TEST(JcsNumber, NonFiniteIsMisuseAndAborts) {
  EXPECT_DEATH(jcs_of_number(std::numeric_limits<double>::infinity()), "non-finite");
  EXPECT_DEATH(jcs_of_number(std::numeric_limits<double>::quiet_NaN()), "non-finite");
}

TEST(JcsNumber, ParsedDoublesAreCorrectlyRounded) {
  // Boost 1.81's own decimal conversion returns each of these one ulp off; parse_ijson must not.
  for (const char* text :
       {"333333333.33333329", "1.3927926388013963e-143", "5.409760742964738e+124",
        "1.7161392603081718e+277", "-2.128409656321987e-239"}) {
    SCOPED_TRACE(text);
    const boost::json::value value = parse_ok(text);
    ASSERT_TRUE(value.is_double());
    double expected = 0;
    std::from_chars(text, text + std::strlen(text), expected);
    EXPECT_EQ(value.get_double(), expected);
  }
  EXPECT_EQ(serialize_jcs(parse_ok("333333333.33333329")), "333333333.3333333");
  EXPECT_EQ(serialize_jcs(parse_ok("1.3927926388013963e-143")), "1.3927926388013963e-143");
}

TEST(JcsNumber, UnderflowBecomesZeroLikeJavaScript) {
  const boost::json::value value = parse_ok("[1e-400,-1e-400]");
  EXPECT_EQ(value.at(0).as_double(), 0.0);
  EXPECT_TRUE(std::signbit(value.at(1).as_double()));
  EXPECT_EQ(serialize_jcs(value), "[0,0]");
}

// ---- JCS strings, members and structure ----

TEST(JcsSerialize, EscapesMinimallyWithLowerCaseHex) {
  const boost::json::value value =
      parse_ok(R"(["\u0000\u0001\u001f\u007f\b\f\n\r\t\"\\\/é€😂</script>"])");
  EXPECT_EQ(serialize_jcs(value),
            "[\"\\u0000\\u0001\\u001f\x7f\\b\\f\\n\\r\\t\\\"\\\\/é€😂</script>\"]");
}

TEST(JcsSerialize, EscapesAtEveryPositionOfLongStrings) {
  // The serialiser skips 8 bytes at a time when none needs escaping; put each kind of byte at
  // every offset of a string longer than several such blocks.
  const std::pair<char, std::string> specials[] = {
      {'"', "\\\""},       {'\\', "\\\\"},   {'\n', "\\n"}, {'\x01', "\\u0001"},
      {'\x1f', "\\u001f"}, {'\x7f', "\x7f"}, {'\x20', " "}, {'\0', "\\u0000"}};
  for (const auto& [byte, escaped] : specials) {
    for (std::size_t position = 0; position < 27; ++position) {
      std::string text(27, 'a');
      text[position] = byte;
      std::string expected =
          "\"" + std::string(position, 'a') + escaped + std::string(26 - position, 'a') + "\"";
      EXPECT_EQ(serialize_jcs(boost::json::value(text)), expected)
          << int{byte} << " at " << position;
    }
  }
  const std::string non_ascii =
      "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x82\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x82";
  EXPECT_EQ(serialize_jcs(boost::json::value(non_ascii)), "\"" + non_ascii + "\"");
}

TEST(JcsSerialize, NoWhitespaceAndLiterals) {
  EXPECT_EQ(serialize_jcs(parse_ok(" { \"b\" : [ true , false , null ] , \"a\" : { } } ")),
            R"({"a":{},"b":[true,false,null]})");
  EXPECT_EQ(serialize_jcs(parse_ok("[]")), "[]");
  EXPECT_EQ(serialize_jcs(parse_ok("\"\"")), "\"\"");
}

TEST(JcsSerialize, IntegersPrintAsIntegers) {
  EXPECT_EQ(serialize_jcs(parse_ok("[9007199254740991,-9007199254740991,0,-0]")),
            "[9007199254740991,-9007199254740991,0,0]");
  // Values built in code may hold any 64-bit integer.
  boost::json::array built{std::int64_t{-9223372036854775807 - 1},
                           std::uint64_t{18446744073709551615u}};
  EXPECT_EQ(serialize_jcs(built), "[-9223372036854775808,18446744073709551615]");
}

TEST(JcsSerialize, AppendJcsAppends) {
  std::string out = "x";
  append_jcs(out, parse_ok(R"({"b":1,"a":2})"));
  EXPECT_EQ(out, R"(x{"a":2,"b":1})");
}

TEST(JcsSerialize, NestedObjectsAreEachSorted) {
  EXPECT_EQ(serialize_jcs(
                parse_ok(R"({"z":{"y":1,"x":{"w":[{"b":1,"a":2}],"v":0}},"a":[{"d":1,"c":2}]})")),
            R"({"a":[{"c":2,"d":1}],"z":{"x":{"v":0,"w":[{"a":2,"b":1}]},"y":1}})");
}

// UTF-16 code unit order of a code point sequence, the reference RFC 8785 §3.2.3 uses.
std::u16string to_utf16(char32_t code_point) {
  if (code_point < 0x10000) return std::u16string(1, static_cast<char16_t>(code_point));
  const char32_t offset = code_point - 0x10000;
  return {static_cast<char16_t>(0xD800 + (offset >> 10)),
          static_cast<char16_t>(0xDC00 + (offset & 0x3FF))};
}

std::string to_utf8(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

TEST(JcsSerialize, MembersSortByUtf16CodeUnitsNotUtf8Bytes) {
  const char32_t boundaries[] = {0x0,    0x1,     0x7F,    0x80,    0x7FF,  0x800,
                                 0x20AC, 0xD7FF,  0xE000,  0xEFFF,  0xF000, 0xFB33,
                                 0xFFFF, 0x10000, 0x1F602, 0x10FFFF};
  for (char32_t a : boundaries) {
    for (char32_t b : boundaries) {
      if (a == b) continue;
      // Keys share a prefix so that the comparison also happens mid-string.
      const std::string key_a = "k" + to_utf8(a) + "z";
      const std::string key_b = "k" + to_utf8(b);
      boost::json::object object;
      object[key_a] = 1;
      object[key_b] = 2;
      const bool a_first = (u"k" + to_utf16(a) + u"z") < (u"k" + to_utf16(b));
      std::string expected = "{";
      const auto member = [](const std::string& key, int value) {
        std::string text;
        append_jcs(text, boost::json::value(key));
        return text + ":" + std::to_string(value);
      };
      expected += a_first ? member(key_a, 1) + "," + member(key_b, 2)
                          : member(key_b, 2) + "," + member(key_a, 1);
      expected += "}";
      EXPECT_EQ(serialize_jcs(object), expected)
          << std::hex << static_cast<unsigned>(a) << " vs " << static_cast<unsigned>(b);
    }
  }
}

TEST(JcsSerialize, EuroSignSortsAfterEmojiAsInWeirdJson) {
  // U+20AC is 0x20AC in UTF-16, U+1F602 is 0xD83D 0xDE02: euro first. U+FB33 (0xFB33) sorts
  // after the emoji although its UTF-8 (EF AC B3) sorts before the emoji's (F0 9F 98 82).
  EXPECT_EQ(serialize_jcs(parse_ok(R"({"\ufb33":3,"\ud83d\ude02":2,"\u20ac":1})")),
            "{\"€\":1,\"😂\":2,\"\xEF\xAC\xB3\":3}");
}

// ---- Acceptance ----

TEST(JsonParse, SafeIntegersAreInt64) {
  const boost::json::value max = parse_ok("9007199254740991");
  ASSERT_TRUE(max.is_int64());
  EXPECT_EQ(max.get_int64(), limits::max_safe_integer);
  const boost::json::value min = parse_ok("-9007199254740991");
  ASSERT_TRUE(min.is_int64());
  EXPECT_EQ(min.get_int64(), -limits::max_safe_integer);
  EXPECT_TRUE(parse_ok("-0").is_int64());
}

TEST(JsonParse, FractionOrExponentMakesADouble) {
  for (const char* text : {"1.0", "1e2", "1E2", "-0.0", "1e300", "4.50", "1e-7"}) {
    SCOPED_TRACE(text);
    EXPECT_TRUE(parse_ok(text).is_double());
  }
  EXPECT_EQ(parse_ok("1e2").get_double(), 100.0);
  // Doubles from 1e21 up print in exponent form, so their size is not bounded.
  EXPECT_EQ(serialize_jcs(parse_ok("[1e21,-1.5e300,9007199254740991.0]")),
            "[1e+21,-1.5e+300,9007199254740991]");
}

TEST(JsonParse, SurrogatePairDecodesToUtf8) {
  const boost::json::value value = parse_ok(R"("\ud83d\ude02")");
  ASSERT_TRUE(value.is_string());
  EXPECT_EQ(value.get_string(), "\xF0\x9F\x98\x82");
  EXPECT_EQ(parse_ok(R"("\uD83D\uDE02")").get_string(), "\xF0\x9F\x98\x82");
  // Escaped backslash followed by text that looks like an escape is not a surrogate.
  EXPECT_EQ(parse_ok(R"("\\ud800")").get_string(), "\\ud800");
}

TEST(JsonParse, WhitespaceAroundTheValueIsAllowed) {
  EXPECT_TRUE(parse_ok("{} ").is_object());
  EXPECT_TRUE(parse_ok(" \t\r\n[1] \n").is_array());
}

TEST(JsonParse, SameKeyInDifferentObjectsIsFine) {
  const boost::json::value value = parse_ok(R"({"a":{"a":1},"b":[{"a":2},{"a":3}]})");
  EXPECT_EQ(value.at("b").at(1).at("a").as_int64(), 3);
}

TEST(JsonParse, InputAtTheSizeBoundIsAccepted) {
  EXPECT_TRUE(parse_ijson("[1]", {.max_bytes = 3}).ok());
}

TEST(JsonParse, DepthAtTheBoundIsAccepted) {
  const std::size_t depth = limits::max_json_depth;
  const std::string text = std::string(depth, '[') + std::string(depth, ']');
  EXPECT_TRUE(parse_ijson(text).ok());
}

TEST(JsonInteger, IsIntegerFollowsProtocolSection1) {
  EXPECT_TRUE(is_integer(parse_ok("9007199254740991")));
  EXPECT_TRUE(is_integer(parse_ok("-9007199254740991")));
  EXPECT_TRUE(is_integer(parse_ok("0")));
  EXPECT_FALSE(is_integer(parse_ok("1.0")));
  EXPECT_FALSE(is_integer(parse_ok("1e2")));
  EXPECT_FALSE(is_integer(parse_ok("\"1\"")));
  EXPECT_FALSE(is_integer(parse_ok("null")));
  EXPECT_FALSE(is_integer(boost::json::value(std::int64_t{9007199254740992})));
  EXPECT_FALSE(is_integer(boost::json::value(std::int64_t{-9007199254740992})));
  EXPECT_TRUE(is_integer(boost::json::value(std::uint64_t{9007199254740991u})));
  EXPECT_FALSE(is_integer(boost::json::value(std::uint64_t{9007199254740992u})));
}

// ---- Rejections: one test per path ----

TEST(JsonParse, RejectsInputOverTheSizeBoundAsTooLarge) {
  const Error error = rejection_of("[1, 2]", {.max_bytes = 5});
  EXPECT_EQ(error.code, Errc::too_large);
  EXPECT_EQ(error.message, "JSON text of 6 bytes exceeds the limit of 5 bytes");
}

TEST(JsonParse, RejectsNestingOverTheDepthBound) {
  const std::size_t depth = limits::max_json_depth + 1;
  expect_bad_request(std::string(depth, '[') + std::string(depth, ']'), "nesting deeper than 64");
  const Error error = rejection_of(R"({"a":{"b":[1]}})", {.max_depth = 2});
  EXPECT_EQ(error.code, Errc::bad_request);
  EXPECT_NE(error.message.find("nesting deeper than 2"), std::string::npos) << error.message;
}

TEST(JsonParse, RejectsDuplicateMemberNamingTheKey) {
  const Error error = rejection_of(R"({"id":1,"x":2,"id":3})");
  EXPECT_EQ(error.code, Errc::bad_request);
  EXPECT_NE(error.message.find(R"(JSON: duplicate member "id")"), std::string::npos)
      << error.message;
}

TEST(JsonParse, RejectsDuplicateWrittenWithDifferentEscapes) {
  // "\u0061" and "a" are the same member name once decoded.
  expect_bad_request(R"({"a":1,"\u0061":2})", R"(duplicate member "a")");
}

TEST(JsonParse, RejectsDuplicateNestedDeepInsideArrays) {
  expect_bad_request(R"([1,[2,[{"ok":true},[{"k":1,"v":{"sig":"x","n":1,"sig":"y"}}]]]])",
                     R"(duplicate member "sig")");
}

TEST(JsonParse, RejectsDuplicateInABigObject) {
  // Large objects use Boost's hash table path rather than its linear one.
  std::string text = "{";
  for (int i = 0; i < 500; ++i) text += "\"k" + std::to_string(i) + "\":" + std::to_string(i) + ",";
  text += "\"k250\":0}";
  expect_bad_request(text, R"(duplicate member "k250")");
}

TEST(JsonParse, DuplicateKeyMessageIsTruncatedAndEscaped) {
  // The key is a newline and 1000 x's, written with the \n escape.
  const std::string escaped_key = "\\n" + std::string(1000, 'x');
  const Error error = rejection_of("{\"" + escaped_key + "\":1,\"" + escaped_key + "\":2}");
  EXPECT_EQ(error.code, Errc::bad_request);
  EXPECT_NE(error.message.find("duplicate member \"\\nxxxx"), std::string::npos) << error.message;
  EXPECT_LT(error.message.size(), 200u);
  EXPECT_EQ(error.message.find('\n'), std::string::npos);
}

TEST(JsonParse, DuplicateKeyMessageCutsAtACharacterBoundary) {
  std::string key;
  for (int i = 0; i < 40; ++i) key += "\xC3\xA9";  // é, 2 bytes each: byte 64 is mid-character
  key = "x" + key;
  const Error error = rejection_of("{\"" + key + "\":1,\"" + key + "\":2}");
  EXPECT_EQ(error.code, Errc::bad_request);
  // The quoted key must still be valid UTF-8: it may be serialised into an HTTP error body.
  EXPECT_TRUE(parse_ijson(serialize_jcs(boost::json::value(error.message))).ok());
  EXPECT_NE(error.message.find("...\""), std::string::npos) << error.message;
}

TEST(JsonParse, RejectsLoneHighSurrogate) {
  expect_bad_request(R"(["\ud800"])", "lone UTF-16 surrogate");
  expect_bad_request(R"(["\uDBFFx"])", "lone UTF-16 surrogate");
  expect_bad_request(R"({"\ud800":1})", "lone UTF-16 surrogate");
  expect_bad_request(R"("\ud800)", "unexpected end of input");
}

TEST(JsonParse, RejectsLoneLowSurrogate) {
  expect_bad_request(R"(["\udc00"])", "lone UTF-16 surrogate");
  expect_bad_request(R"(["\uDFFF tail"])", "lone UTF-16 surrogate");
}

TEST(JsonParse, RejectsHighSurrogateFollowedByNonSurrogateEscape) {
  expect_bad_request(R"(["\ud800\u0041"])", "lone UTF-16 surrogate");
  expect_bad_request(R"(["\ud800\n"])", "lone UTF-16 surrogate");
  expect_bad_request(R"(["\ud800\ud800"])", "lone UTF-16 surrogate");
}

TEST(JsonParse, RejectsIntegerJustAboveTheSafeRange) {
  expect_bad_request("9007199254740992", "integer \"9007199254740992\" at byte 0 is outside");
  expect_bad_request(R"({"n":9007199254740992})", "integer \"9007199254740992\" at byte 5");
}

TEST(JsonParse, RejectsIntegerJustBelowTheSafeRange) {
  expect_bad_request("-9007199254740992", "integer \"-9007199254740992\"");
  expect_bad_request("[-9223372036854775808]", "integer \"-9223372036854775808\"");
}

TEST(JsonParse, RejectsIntegersBoostMakesUint64OrDouble) {
  expect_bad_request("9223372036854775808", "integer \"9223372036854775808\"");    // uint64
  expect_bad_request("18446744073709551616", "integer \"18446744073709551616\"");  // double
  expect_bad_request("-9223372036854775809", "integer \"-9223372036854775809\"");  // double
  expect_bad_request(std::string(5000, '9'), "is outside the I-JSON safe range");
}

TEST(JsonParse, RejectsNumbersThatOverflowADouble) {
  // Boost 1.81 itself turns these into infinities without an error.
  expect_bad_request("1e400", "number \"1e400\" at byte 0 does not fit a double");
  expect_bad_request("[-1e400]", "number \"-1e400\" at byte 1 does not fit a double");
  expect_bad_request("1.7976931348623159e308", "does not fit a double");
}

TEST(JsonParse, RejectsDoublesWhoseCanonicalFormIsAnUnsafeInteger) {
  // JCS writes these as plain digits ("100000000000000000000"), which protocol §1 forbids.
  expect_bad_request("1e20",
                     "number \"1e20\" at byte 0 is an integer outside the I-JSON safe range");
  expect_bad_request("[-9007199254740992.0]", "is an integer outside the I-JSON safe range");
  expect_bad_request("73337333733333333.30", "in canonical (JCS) form");
  expect_bad_request("9.999999999999999e20", "in canonical (JCS) form");   // largest below 1e21
  EXPECT_EQ(serialize_jcs(parse_ok("999999999999999999999.0")), "1e+21");  // rounds to 1e21
}

TEST(JsonParse, RejectsTrailingContent) {
  expect_bad_request("{}x", "unexpected content after the value at byte 2");
  expect_bad_request("{} {}", "unexpected content after the value at byte 3");
  expect_bad_request("1 2", "unexpected content after the value");
}

TEST(JsonParse, RejectsInvalidUtf8) {
  expect_bad_request("\"\xFF\"", "invalid UTF-8");
  expect_bad_request("[\"ab\x80\"]", "invalid UTF-8 or misplaced non-ASCII character at byte 4");
  expect_bad_request("\"\xC0\xAF\"", "invalid UTF-8");          // overlong
  expect_bad_request("\"\xED\xA0\x80\"", "invalid UTF-8");      // surrogate encoded in UTF-8
  expect_bad_request("\"\xF4\x90\x80\x80\"", "invalid UTF-8");  // above U+10FFFF
  expect_bad_request("\"\xE2\x82\"", "invalid UTF-8");          // truncated sequence
}

TEST(JsonParse, RejectsEmptyInput) {
  expect_bad_request("", "JSON: empty input");
  expect_bad_request("  \n", "JSON: empty input");
}

TEST(JsonParse, RejectsTruncatedInput) {
  expect_bad_request(R"({"a":[1,2)", "unexpected end of input");
}

TEST(JsonParse, RejectsNaNAndInfinityLiterals) {
  expect_bad_request("NaN", "syntax error at byte 0");
  expect_bad_request("[Infinity]", "syntax error at byte 1");
  expect_bad_request("-Infinity", "syntax error");
}

TEST(JsonParse, RejectsLeadingZeros) {
  expect_bad_request("01", "number with a leading zero at byte 0");
  expect_bad_request("[-01]", "number with a leading zero at byte 2");
  expect_bad_request(R"({"n":00})", "number with a leading zero");
}

TEST(JsonParse, RejectsExtensionsBoostCanEnable) {
  expect_bad_request("[1,]", "syntax error");
  expect_bad_request(R"({"a":1,})", "syntax error");
  expect_bad_request("/* c */ 1", "syntax error");
  expect_bad_request("'a'", "syntax error");
}

TEST(JsonParse, RejectsUnescapedControlCharacter) {
  expect_bad_request(std::string("\"a\x01\""), "unescaped control character at byte 2");
}

TEST(JsonParse, ErrorsAreBadRequestWithTheJsonPrefix) {
  for (std::string_view text : {"{", "[1", "tru", "\"\\x\"", "{\"a\" 1}", "{1:2}"}) {
    SCOPED_TRACE(std::string(text));
    const Error error = rejection_of(text);
    EXPECT_EQ(error.code, Errc::bad_request);
    EXPECT_EQ(error.message.rfind("JSON: ", 0), 0u) << error.message;
  }
}

}  // namespace
}  // namespace agent_mesh::json
