// RFC 3339 timestamps for the registry's REST resources (protocol §1: Unix milliseconds on the
// wire, RFC 3339 UTC strings in REST resources: `*_at`, `last_seen`). Pure: no clock, no locale,
// no time zone database.
//
// Output is always UTC with exactly three fraction digits ("2026-11-26T18:47:01.123Z"), so two
// timestamps compare as strings the way they compare as times, and the text of a value never
// changes (ETags of the views that carry it stay stable).
//
// Input (`expires_at` and friends) is RFC 3339 §5.6 `date-time`, read strictly:
//   YYYY-MM-DDTHH:MM:SS[.F](Z|+HH:MM|-HH:MM)
// - upper-case `T` and `Z` only (§5.6 allows lower case; nobody sends it and one form is simpler);
// - F is 1 to 9 digits (milliseconds to nanoseconds, what JavaScript, Python and Go write);
//   digits past the millisecond are dropped (rounded towards the past);
// - any numeric offset, `-00:00` included (§4.3: UTC, local offset unknown), converted to UTC;
// - calendar checks: month 01–12, day within its month (leap years included), hour 00–23,
//   minute 00–59, second 00–59. A leap second (`:60`) is refused: Unix time cannot represent it
//   and an expiry never needs one;
// - years 0000–9999 after the offset is applied (the range the output format can write).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "agent_mesh/result.hpp"

namespace agent_mesh::registry {

// 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z in Unix milliseconds.
inline constexpr std::int64_t kMinRfc3339Ms = -62167219200000;
inline constexpr std::int64_t kMaxRfc3339Ms = 253402300799999;

// "2026-11-26T18:47:01.123Z". Precondition: kMinRfc3339Ms <= unix_ms <= kMaxRfc3339Ms (every
// value from a clock or from parse_rfc3339 is); outside it aborts, as misuse does elsewhere.
[[nodiscard]] std::string format_rfc3339_ms(std::int64_t unix_ms);

// Unix milliseconds of a strict RFC 3339 date-time (see above). Error: Errc::bad_request,
// "not an RFC 3339 date-time (like 2026-11-26T18:47:01Z): <what is wrong>".
[[nodiscard]] Result<std::int64_t> parse_rfc3339(std::string_view text);

}  // namespace agent_mesh::registry
