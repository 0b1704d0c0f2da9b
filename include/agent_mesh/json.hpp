// I-JSON (RFC 7493) parsing and RFC 8785 (JCS) canonical serialisation, on Boost.JSON.
//
// parse_ijson is the only JSON parser for untrusted input in the project. On top of Boost.JSON's
// strict RFC 8259 parser (valid UTF-8 required) it rejects: input over a size bound, nesting over
// limits::max_json_depth, duplicate member names, escaped lone surrogates, and numbers written
// without fraction or exponent outside ±(2^53−1) (protocol §1). Numbers written with a fraction or
// exponent become (correctly rounded) doubles; integers within range become int64, so "is an
// integer field" is simply `value.is_int64()`. Doubles that overflow, and doubles of magnitude
// 2^53..1e21 (JCS writes those as plain integer digits outside ±(2^53−1)), are rejected too, so
// the JCS form of every accepted value is itself accepted.
#pragma once

#include <boost/json/value.hpp>
#include <cstddef>
#include <string>
#include <string_view>

#include "agent_mesh/limits.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh::json {

struct ParseOptions {
  std::size_t max_bytes = limits::default_max_json_bytes;
  std::size_t max_depth = limits::max_json_depth;
};

// Errors: Errc::too_large when the input exceeds max_bytes, otherwise Errc::bad_request with a
// message naming the problem (and its byte offset for syntax errors).
[[nodiscard]] Result<boost::json::value> parse_ijson(std::string_view text,
                                                    const ParseOptions& options = {});

// RFC 8785: members sorted by UTF-16 code units, ECMAScript number formatting, minimal string
// escaping, no whitespace.
[[nodiscard]] std::string serialize_jcs(const boost::json::value& value);
void append_jcs(std::string& out, const boost::json::value& value);
// ECMAScript Number::toString for a finite double (RFC 8785 §3.2.2.3). Precondition: finite.
void append_jcs_number(std::string& out, double value);

// True if `value` is an integer field per protocol §1: written without fraction or exponent and
// within ±(2^53−1). (After parse_ijson this is exactly value.is_int64().)
[[nodiscard]] bool is_integer(const boost::json::value& value) noexcept;

}  // namespace agent_mesh::json
