#include "registry/time_format.hpp"

#include <array>
#include <cstdio>

#include "core/json_fields.hpp"
#include "core/sodium_init.hpp"

namespace agent_mesh::registry {
namespace {

constexpr std::int64_t kMsPerDay = 86400000;

// Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian calendar, exact for
// every year here).
constexpr std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) noexcept {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

struct Civil {
  std::int64_t year;
  unsigned month;
  unsigned day;
};

constexpr Civil civil_from_days(std::int64_t z) noexcept {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const std::int64_t y = static_cast<std::int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {y + (m <= 2 ? 1 : 0), m, d};
}

static_assert(days_from_civil(1970, 1, 1) == 0);
static_assert(days_from_civil(0, 1, 1) * kMsPerDay == kMinRfc3339Ms);
static_assert((days_from_civil(9999, 12, 31) + 1) * kMsPerDay - 1 == kMaxRfc3339Ms);

constexpr bool is_leap(std::int64_t year) noexcept {
  return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
}

constexpr unsigned days_in_month(std::int64_t year, unsigned month) noexcept {
  constexpr std::array<unsigned, 12> kDays = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && is_leap(year) ? 29 : kDays[month - 1];
}

Error bad(std::string_view text, std::string_view what) {
  return fail(Errc::bad_request, "not an RFC 3339 date-time (like 2026-11-26T18:47:01Z): \"" +
                                     detail::clip(text) + "\": " + std::string(what));
}

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// `count` digits at `pos`, or -1.
int digits(std::string_view text, std::size_t pos, std::size_t count) noexcept {
  if (pos + count > text.size()) return -1;
  int value = 0;
  for (std::size_t i = pos; i < pos + count; ++i) {
    if (!is_digit(text[i])) return -1;
    value = value * 10 + (text[i] - '0');
  }
  return value;
}

bool separator(std::string_view text, std::size_t pos, char expected) noexcept {
  return pos < text.size() && text[pos] == expected;
}

}  // namespace

std::string format_rfc3339_ms(std::int64_t unix_ms) {
  if (unix_ms < kMinRfc3339Ms || unix_ms > kMaxRfc3339Ms) {
    detail::misuse("time_format", "format_rfc3339_ms: time outside years 0000-9999");
  }
  // Floor division, so times before 1970 land on the right day.
  std::int64_t days = unix_ms / kMsPerDay;
  std::int64_t in_day = unix_ms % kMsPerDay;
  if (in_day < 0) {
    in_day += kMsPerDay;
    --days;
  }
  const Civil date = civil_from_days(days);
  const auto ms = static_cast<int>(in_day % 1000);
  const auto seconds = static_cast<int>(in_day / 1000 % 60);
  const auto minutes = static_cast<int>(in_day / 60000 % 60);
  const auto hours = static_cast<int>(in_day / 3600000);
  std::array<char, 32> buffer{};
  const int written = std::snprintf(buffer.data(), buffer.size(), "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ",
                                    static_cast<int>(date.year), date.month, date.day, hours, minutes, seconds, ms);
  return std::string(buffer.data(), static_cast<std::size_t>(written));
}

Result<std::int64_t> parse_rfc3339(std::string_view text) {
  // Fixed part: "YYYY-MM-DDTHH:MM:SS" (19 characters).
  const int year = digits(text, 0, 4);
  if (year < 0 || !separator(text, 4, '-')) return bad(text, "expected a four-digit year and '-'");
  const int month = digits(text, 5, 2);
  if (month < 0 || !separator(text, 7, '-')) return bad(text, "expected a two-digit month and '-'");
  const int day = digits(text, 8, 2);
  if (day < 0) return bad(text, "expected a two-digit day");
  if (!separator(text, 10, 'T')) return bad(text, "expected 'T' between date and time (upper case)");
  const int hour = digits(text, 11, 2);
  if (hour < 0 || !separator(text, 13, ':')) return bad(text, "expected a two-digit hour and ':'");
  const int minute = digits(text, 14, 2);
  if (minute < 0 || !separator(text, 16, ':')) return bad(text, "expected two-digit minutes and ':'");
  const int second = digits(text, 17, 2);
  if (second < 0) return bad(text, "expected two-digit seconds");

  if (month < 1 || month > 12) return bad(text, "month must be 01-12");
  if (day < 1 || static_cast<unsigned>(day) > days_in_month(year, static_cast<unsigned>(month))) {
    return bad(text, "day does not exist in that month");
  }
  if (hour > 23) return bad(text, "hour must be 00-23");
  if (minute > 59) return bad(text, "minute must be 00-59");
  if (second == 60) return bad(text, "leap seconds (:60) cannot be represented in Unix time");
  if (second > 59) return bad(text, "second must be 00-59");

  std::size_t pos = 19;
  int millis = 0;
  if (separator(text, pos, '.')) {
    ++pos;
    std::size_t count = 0;
    while (pos < text.size() && is_digit(text[pos])) {
      if (count < 3) millis = millis * 10 + (text[pos] - '0');
      ++count;
      ++pos;
    }
    if (count == 0) return bad(text, "expected digits after '.'");
    if (count > 9) return bad(text, "at most 9 fraction digits");
    for (std::size_t i = count; i < 3; ++i) millis *= 10;
  }

  std::int64_t offset_ms = 0;
  if (separator(text, pos, 'Z')) {
    ++pos;
  } else if (separator(text, pos, '+') || separator(text, pos, '-')) {
    const bool negative = text[pos] == '-';
    const int offset_hours = digits(text, pos + 1, 2);
    if (offset_hours < 0 || !separator(text, pos + 3, ':')) return bad(text, "offset must be +HH:MM or -HH:MM");
    const int offset_minutes = digits(text, pos + 4, 2);
    if (offset_minutes < 0) return bad(text, "offset must be +HH:MM or -HH:MM");
    if (offset_hours > 23 || offset_minutes > 59) return bad(text, "offset out of range");
    offset_ms = (offset_hours * 60LL + offset_minutes) * 60000;
    if (negative) offset_ms = -offset_ms;
    pos += 6;
  } else {
    return bad(text, "expected 'Z' or an offset like +02:00 after the time (upper case)");
  }
  if (pos != text.size()) return bad(text, "unexpected characters after the offset");

  const std::int64_t local = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) * kMsPerDay +
                             hour * 3600000LL + minute * 60000LL + second * 1000LL + millis;
  const std::int64_t utc = local - offset_ms;
  if (utc < kMinRfc3339Ms || utc > kMaxRfc3339Ms) return bad(text, "outside years 0000-9999 in UTC");
  return utc;
}

}  // namespace agent_mesh::registry
