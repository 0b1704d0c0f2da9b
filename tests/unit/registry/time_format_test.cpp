// RFC 3339 formatting and strict parsing for the registry's REST timestamps (protocol §1).
#include "registry/time_format.hpp"

#include <gtest/gtest.h>

#include <ctime>
#include <random>
#include <string>

namespace agent_mesh::registry {
namespace {

void expect_rejected(std::string_view text, std::string_view reason) {
  const auto parsed = parse_rfc3339(text);
  ASSERT_FALSE(parsed.ok()) << "accepted \"" << text << "\"";
  EXPECT_EQ(parsed.error().code, Errc::bad_request);
  EXPECT_NE(parsed.error().message.find(reason), std::string::npos)
      << "\"" << text << "\": " << parsed.error().message;
  EXPECT_NE(parsed.error().message.find("RFC 3339"), std::string::npos);
}

std::int64_t parse_ok(std::string_view text) {
  const auto parsed = parse_rfc3339(text);
  EXPECT_TRUE(parsed.ok()) << text << ": " << (parsed.ok() ? "" : parsed.error().message);
  return parsed.ok() ? parsed.value() : INT64_MIN;
}

TEST(TimeFormat, FormatsKnownInstants) {
  EXPECT_EQ(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(format_rfc3339_ms(1795718821123), "2026-11-26T18:47:01.123Z");
  EXPECT_EQ(format_rfc3339_ms(1709208000000), "2024-02-29T12:00:00.000Z");
  EXPECT_EQ(format_rfc3339_ms(951782400000), "2000-02-29T00:00:00.000Z");
  EXPECT_EQ(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
  EXPECT_EQ(format_rfc3339_ms(-86400000), "1969-12-31T00:00:00.000Z");
  EXPECT_EQ(format_rfc3339_ms(kMinRfc3339Ms), "0000-01-01T00:00:00.000Z");
  EXPECT_EQ(format_rfc3339_ms(kMaxRfc3339Ms), "9999-12-31T23:59:59.999Z");
}

TEST(TimeFormat, FormatOutsideTheRangeIsMisuse) {
  EXPECT_DEATH((void)format_rfc3339_ms(kMaxRfc3339Ms + 1), "misuse");
  EXPECT_DEATH((void)format_rfc3339_ms(kMinRfc3339Ms - 1), "misuse");
}

TEST(TimeFormat, FormatMatchesTimegmAndRoundTrips) {
  std::mt19937_64 random(20261126);
  std::uniform_int_distribution<std::int64_t> any_ms(kMinRfc3339Ms, kMaxRfc3339Ms);
  for (int i = 0; i < 20000; ++i) {
    const std::int64_t ms = any_ms(random);
    const std::string text = format_rfc3339_ms(ms);
    ASSERT_EQ(text.size(), 24u) << text;
    EXPECT_EQ(parse_ok(text), ms) << text;
    if (ms >= 0) {
      // Oracle: glibc's timegm on the broken-down date.
      std::tm tm{};
      tm.tm_year = std::stoi(text.substr(0, 4)) - 1900;
      tm.tm_mon = std::stoi(text.substr(5, 2)) - 1;
      tm.tm_mday = std::stoi(text.substr(8, 2));
      tm.tm_hour = std::stoi(text.substr(11, 2));
      tm.tm_min = std::stoi(text.substr(14, 2));
      tm.tm_sec = std::stoi(text.substr(17, 2));
      EXPECT_EQ(static_cast<std::int64_t>(timegm(&tm)) * 1000 + std::stoi(text.substr(20, 3)), ms) << text;
    }
  }
}

TEST(TimeFormat, FormattedTextSortsLikeTime) {
  const std::int64_t a = 1795718821123;
  EXPECT_LT(format_rfc3339_ms(a), format_rfc3339_ms(a + 1));
  EXPECT_LT(format_rfc3339_ms(a - 1000), format_rfc3339_ms(a));
}

TEST(TimeFormat, ParsesUtcAndOffsets) {
  EXPECT_EQ(parse_ok("2026-11-26T18:47:01Z"), 1795718821000);
  EXPECT_EQ(parse_ok("2026-11-26T18:47:01.123Z"), 1795718821123);
  EXPECT_EQ(parse_ok("2026-11-26T19:47:01.123+01:00"), 1795718821123);
  EXPECT_EQ(parse_ok("2026-11-26T13:17:01.123-05:30"), 1795718821123);
  EXPECT_EQ(parse_ok("2026-11-26T18:47:01.123-00:00"), 1795718821123);  // §4.3: UTC, offset unknown
  EXPECT_EQ(parse_ok("2026-11-27T00:47:01+06:00"), 1795718821000);      // offset crosses midnight
  EXPECT_EQ(parse_ok("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_ok("1969-12-31T23:59:59.999Z"), -1);
  EXPECT_EQ(parse_ok("0000-01-01T00:00:00Z"), kMinRfc3339Ms);
  EXPECT_EQ(parse_ok("9999-12-31T23:59:59.999Z"), kMaxRfc3339Ms);
  EXPECT_EQ(parse_ok("2024-02-29T00:00:00Z"), 1709164800000);
  EXPECT_EQ(parse_ok("2000-02-29T00:00:00Z"), 951782400000);
}

TEST(TimeFormat, FractionDigitsBeyondMillisecondsAreDropped) {
  EXPECT_EQ(parse_ok("2026-11-26T18:47:01.1Z"), 1795718821100);
  EXPECT_EQ(parse_ok("2026-11-26T18:47:01.12Z"), 1795718821120);
  EXPECT_EQ(parse_ok("2026-11-26T18:47:01.123456Z"), 1795718821123);
  EXPECT_EQ(parse_ok("2026-11-26T18:47:01.123999999Z"), 1795718821123);  // towards the past
  EXPECT_EQ(parse_ok("1969-12-31T23:59:59.9999Z"), -1);
}

TEST(TimeFormat, RejectsEverythingElse) {
  expect_rejected("", "four-digit year");
  expect_rejected("26-11-26T18:47:01Z", "four-digit year");
  expect_rejected("+2026-11-26T18:47:01Z", "four-digit year");
  expect_rejected(" 2026-11-26T18:47:01Z", "four-digit year");
  expect_rejected("2026/11/26T18:47:01Z", "four-digit year");
  expect_rejected("2026-1-26T18:47:01Z", "month");
  expect_rejected("2026-11-6T18:47:01Z", "day");
  expect_rejected("2026-11-26t18:47:01Z", "'T'");
  expect_rejected("2026-11-26 18:47:01Z", "'T'");
  expect_rejected("2026-11-26", "'T'");
  expect_rejected("2026-11-26T18:47Z", "minutes");
  expect_rejected("2026-11-26T18-47-01Z", "hour");
  expect_rejected("2026-11-26T18:47:01", "'Z' or an offset");
  expect_rejected("2026-11-26T18:47:01z", "'Z' or an offset");
  expect_rejected("2026-11-26T18:47:01 Z", "'Z' or an offset");
  expect_rejected("2026-11-26T18:47:01UTC", "'Z' or an offset");
  expect_rejected("2026-11-26T18:47:01+0100", "offset must be");
  expect_rejected("2026-11-26T18:47:01+01", "offset must be");
  expect_rejected("2026-11-26T18:47:01+1:00", "offset must be");
  expect_rejected("2026-11-26T18:47:01+24:00", "offset out of range");
  expect_rejected("2026-11-26T18:47:01+01:60", "offset out of range");
  expect_rejected("2026-11-26T18:47:01ZZ", "after the offset");
  expect_rejected("2026-11-26T18:47:01Z ", "after the offset");
  expect_rejected("2026-11-26T18:47:01+01:00:00", "after the offset");
  expect_rejected("2026-11-26T18:47:01.Z", "digits after '.'");
  expect_rejected("2026-11-26T18:47:01,123Z", "'Z' or an offset");
  expect_rejected("2026-11-26T18:47:01.1234567890Z", "at most 9");
  expect_rejected("2026-00-26T18:47:01Z", "month must be");
  expect_rejected("2026-13-26T18:47:01Z", "month must be");
  expect_rejected("2026-11-00T18:47:01Z", "day does not exist");
  expect_rejected("2026-11-31T18:47:01Z", "day does not exist");
  expect_rejected("2026-02-29T18:47:01Z", "day does not exist");
  expect_rejected("1900-02-29T18:47:01Z", "day does not exist");
  expect_rejected("2024-02-30T18:47:01Z", "day does not exist");
  expect_rejected("2026-11-26T24:00:00Z", "hour must be");
  expect_rejected("2026-11-26T18:60:01Z", "minute must be");
  expect_rejected("2016-12-31T23:59:60Z", "leap second");
  expect_rejected("2026-11-26T18:47:61Z", "second must be");
  expect_rejected("0000-01-01T00:00:00+00:01", "outside years");
  expect_rejected("9999-12-31T23:59:59.999-00:01", "outside years");
  expect_rejected(std::string("2026-11-26T18:47:01Z\0", 21), "after the offset");
  expect_rejected("２026-11-26T18:47:01Z", "four-digit year");
}

TEST(TimeFormat, ErrorMessagesClipHostileInput) {
  const std::string hostile = "2026-11-26T18:47:01Z" + std::string(100000, 'x');
  const auto parsed = parse_rfc3339(hostile);
  ASSERT_FALSE(parsed.ok());
  EXPECT_LT(parsed.error().message.size(), 300u);
}

}  // namespace
}  // namespace agent_mesh::registry
