// The number rules of protocol §1 ("JSON numbers"), in one place for the two Boost basic_parser
// handlers that apply them: parse_ijson's (json.cpp) and the relay's routing-header scanner
// (routing_header.cpp), which must give the same verdicts. Each handler words its own messages.
//
//   - an integer (no fraction, no exponent) must lie within ±(2^53−1), whatever its size;
//   - other numbers are converted with correct rounding; overflow is refused, underflow is zero;
//   - magnitudes from 2^53 up to 1e21 are refused: JCS writes them as unsafe integers.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include "agent_mesh/limits.hpp"

namespace agent_mesh::detail {

inline bool is_safe_integer(std::int64_t value) noexcept {
  return value >= -limits::max_safe_integer && value <= limits::max_safe_integer;
}

enum class NumberVerdict : std::uint8_t {
  ok,
  unsafe_integer,       // written as an integer, and outside ±(2^53−1)
  does_not_fit_double,  // overflow, or text from_chars does not take as a whole
  integer_in_jcs_form,  // magnitude in (2^53−1, 1e21): JCS writes it as an unsafe integer
};

struct CheckedDouble {
  NumberVerdict verdict;
  double value;           // the correctly rounded value when verdict is ok
  std::string_view text;  // the number's whole text, for messages
};

// The text of the number being parsed, and the checks on it. Boost calls on_number_part only when
// a number spans two write_some calls (both handlers make one call, but keeping the text makes the
// checks independent of that); the parts are kept until the number is complete.
class NumberText {
 public:
  void append_part(std::string_view part) { prefix_.append(part); }
  // Call once the number has been accepted.
  void clear() noexcept { prefix_.clear(); }
  // True if `text` is the number assembled from parts (it is not a view of the input then).
  [[nodiscard]] bool is_assembled(std::string_view text) const noexcept {
    return !prefix_.empty() && text.data() == prefix_.data();
  }

  // Verdict on a number Boost reports through on_double, with Boost's own value. `last_part` is
  // the text Boost passes with it; the result's text is the whole number's.
  [[nodiscard]] CheckedDouble check_double(double boost_value, std::string_view last_part) {
    std::string_view text = last_part;
    if (!prefix_.empty()) {
      prefix_.append(text);
      text = prefix_;
    }
    // protocol §1: a number without fraction or exponent is an integer whatever its size; Boost
    // makes a double of one only when it overflows 64 bits, so it is beyond 2^53−1.
    if (text.find_first_of(".eE") == std::string_view::npos) {
      return {NumberVerdict::unsafe_integer, 0, text};
    }
    // Boost 1.81 does not round decimal text correctly (about a quarter of the shortest
    // round-trip forms of random doubles come back one ulp off, "333333333.33333329" among them),
    // which would make our JCS bytes differ from other languages'. libstdc++'s from_chars rounds
    // correctly, so the decimal text is converted again.
    double value = 0;
    const auto [end, status] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (status == std::errc::result_out_of_range && std::fabs(boost_value) < 1) {
      // Underflow: like JavaScript's JSON.parse, a magnitude below the smallest subnormal is zero.
      value = std::copysign(0.0, boost_value);
    } else if (status != std::errc() || end != text.data() + text.size() || !std::isfinite(value)) {
      // Overflow (1e400): I-JSON numbers must fit an IEEE double (RFC 7493 §2.2), and RFC 8785
      // §3.2.2.3 has no form for infinity.
      return {NumberVerdict::does_not_fit_double, 0, text};
    }
    // Every double of magnitude 2^53 up to 1e21 is integral, and JCS (RFC 8785 §3.2.2.3) writes it
    // as plain digits: "1e20" canonicalises to "100000000000000000000", an integer outside
    // ±(2^53−1) that protocol §1 makes receivers reject. Accepting it would let us sign or forward
    // canonical text that we ourselves refuse, so it is refused here.
    if (std::fabs(value) > kMaxSafeIntegerAsDouble &&
        std::fabs(value) < kFirstExponentFormMagnitude) {
      return {NumberVerdict::integer_in_jcs_form, value, text};
    }
    return {NumberVerdict::ok, value, text};
  }

 private:
  static constexpr double kMaxSafeIntegerAsDouble = static_cast<double>(limits::max_safe_integer);
  // Magnitudes from which ECMAScript, hence JCS, switches to exponent notation (1e21 -> "1e+21").
  static constexpr double kFirstExponentFormMagnitude = 1e21;

  std::string prefix_;
};

}  // namespace agent_mesh::detail
