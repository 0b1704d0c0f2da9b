// I-JSON parsing (RFC 7493, protocol §1) and JCS serialisation (RFC 8785) on Boost.JSON.
//
// Parsing drives Boost's SAX parser (basic_parser) with our own handler, which builds the value
// with boost::json::value_stack exactly as boost::json::parser does, and adds the I-JSON checks
// Boost lacks: integer range, correctly rounded doubles and duplicate member names. Boost 1.81
// already rejects invalid UTF-8 and escaped lone surrogates (its \u decoder demands a low surrogate
// escape right after a high one and refuses a low one on its own), so the handler never sees them;
// we only turn Boost's generic "syntax error" for them into a message that names the problem.
#include "agent_mesh/json.hpp"

#include <algorithm>
#include <boost/container/small_vector.hpp>
#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/value_stack.hpp>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "json_numbers.hpp"

namespace agent_mesh::json {
namespace {

namespace bj = boost::json;

// Hostile keys and numbers can be a megabyte long; error messages quote at most this many bytes.
constexpr std::size_t kMaxQuotedBytes = 64;
// Scratch space for value_stack: small messages are built without touching the heap for the
// intermediate stack (the finished value is still heap allocated, as callers keep it).
constexpr std::size_t kValueStackScratchBytes = 2048;

using detail::is_safe_integer;

bool is_ascii_digit(char c) noexcept { return c >= '0' && c <= '9'; }

bool is_hex_digit(char c) noexcept {
  return is_ascii_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool is_json_whitespace(char c) noexcept { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// True if any of the 8 bytes at `p` must be escaped in a JSON string: a control character, '"' or
// '\\'. Word-at-a-time test (Hacker's Delight ch. 6): (x - 0x01..) & ~x & 0x80.. has a high bit set
// iff some byte of x is zero, and the "less than n" variant works the same way. Most strings
// contain nothing to escape, so the serialiser skips them 8 bytes per step.
bool has_byte_to_escape(const char* p) noexcept {
  constexpr std::uint64_t kOnes = 0x0101010101010101u;
  constexpr std::uint64_t kHighBits = 0x8080808080808080u;
  std::uint64_t word;
  std::memcpy(&word, p, sizeof word);
  const auto has_zero_byte = [](std::uint64_t x) { return (x - kOnes) & ~x & kHighBits; };
  const std::uint64_t below_space = (word - kOnes * 0x20) & ~word & kHighBits;
  return (below_space | has_zero_byte(word ^ (kOnes * '"')) |
          has_zero_byte(word ^ (kOnes * '\\'))) != 0;
}

// RFC 8785 §3.2.2.2: the only escapes are \" \\ \b \f \n \r \t and \u00xx (lower-case hex) for the
// remaining control characters; everything else, U+007F and non-ASCII included, is literal UTF-8.
void append_quoted_string(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  const char* unescaped_run = text.data();
  const char* const end = text.data() + text.size();
  const char* p = text.data();
  for (; p != end; ++p) {
    while (end - p >= 8 && !has_byte_to_escape(p)) p += 8;
    if (p == end) break;
    const auto c = static_cast<unsigned char>(*p);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(unescaped_run, p);
    unescaped_run = p + 1;
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\b':
        out.append("\\b");
        break;
      case '\f':
        out.append("\\f");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      default: {
        const char escape[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
        out.append(escape, sizeof escape);
      }
    }
  }
  out.append(unescaped_run, end);
  out.push_back('"');
}

// A key or number from hostile input, quoted for an error message: JSON-escaped so control
// characters cannot forge log lines, and cut at a UTF-8 character boundary after kMaxQuotedBytes.
std::string quote_for_message(std::string_view text) {
  bool truncated = false;
  if (text.size() > kMaxQuotedBytes) {
    std::size_t cut = kMaxQuotedBytes;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    text = text.substr(0, cut);
    truncated = true;
  }
  std::string quoted;
  quoted.reserve(text.size() + 8);
  append_quoted_string(quoted, text);
  if (truncated) quoted.insert(quoted.size() - 1, "...");
  return quoted;
}

// ---------------------------------------------------------------------------------------------
// Parsing

// basic_parser handler that builds the value (like boost::json::parser's own handler) and applies
// the number rules of protocol §1. It counts member names so that parse_ijson can tell afterwards
// whether value_stack::push_object merged duplicates (it keeps the last of equal keys silently).
class IJsonValueBuilder {
 public:
  static constexpr std::size_t max_object_size = bj::object::max_size();
  static constexpr std::size_t max_array_size = bj::array::max_size();
  static constexpr std::size_t max_key_size = bj::string::max_size();
  static constexpr std::size_t max_string_size = bj::string::max_size();

  IJsonValueBuilder(const char* input_begin, unsigned char* scratch, std::size_t scratch_size)
      : input_begin_(input_begin), stack_(bj::storage_ptr(), scratch, scratch_size) {}

  bj::value release() { return stack_.release(); }
  [[nodiscard]] std::size_t member_names_seen() const noexcept { return member_names_seen_; }
  // Set when the handler, not Boost's grammar, rejected the input.
  [[nodiscard]] const std::string& rejection() const noexcept { return rejection_; }

  bool on_document_begin(bj::error_code&) {
    stack_.reset();
    return true;
  }
  bool on_document_end(bj::error_code&) { return true; }
  bool on_array_begin(bj::error_code&) { return true; }
  bool on_array_end(std::size_t size, bj::error_code&) {
    stack_.push_array(size);
    return true;
  }
  bool on_object_begin(bj::error_code&) { return true; }
  bool on_object_end(std::size_t size, bj::error_code&) {
    stack_.push_object(size);
    return true;
  }
  bool on_string_part(bj::string_view part, std::size_t, bj::error_code&) {
    stack_.push_chars(part);
    return true;
  }
  bool on_string(bj::string_view last_part, std::size_t, bj::error_code&) {
    stack_.push_string(last_part);
    return true;
  }
  bool on_key_part(bj::string_view part, std::size_t, bj::error_code&) {
    stack_.push_chars(part);
    return true;
  }
  bool on_key(bj::string_view last_part, std::size_t, bj::error_code&) {
    stack_.push_key(last_part);
    ++member_names_seen_;
    return true;
  }
  // Numbers: the rules of protocol §1, in json_numbers.hpp.
  bool on_number_part(bj::string_view part, bj::error_code&) {
    number_.append_part(part);
    return true;
  }
  bool on_int64(std::int64_t value, bj::string_view text, bj::error_code& ec) {
    if (!is_safe_integer(value)) return reject_unsafe_integer(text, ec);
    number_.clear();
    stack_.push_int64(value);
    return true;
  }
  // Boost only produces a uint64 above INT64_MAX, which is always beyond 2^53−1.
  bool on_uint64(std::uint64_t, bj::string_view text, bj::error_code& ec) {
    return reject_unsafe_integer(text, ec);
  }
  bool on_double(double boost_value, bj::string_view last_part, bj::error_code& ec) {
    const detail::CheckedDouble number = number_.check_double(boost_value, last_part);
    switch (number.verdict) {
      case detail::NumberVerdict::ok:
        break;
      case detail::NumberVerdict::unsafe_integer:
        return reject_unsafe_integer(number.text, ec);
      case detail::NumberVerdict::does_not_fit_double:
        rejection_ = "JSON: number " + quote_for_message(number.text) + " at byte " +
                     std::to_string(offset_of(number.text)) + " does not fit a double";
        return stop_parser(ec);
      case detail::NumberVerdict::integer_in_jcs_form:
        rejection_ =
            "JSON: number " + quote_for_message(number.text) + " at byte " +
            std::to_string(offset_of(number.text)) +
            " is an integer outside the I-JSON safe range +/-(2^53-1) in canonical (JCS) form";
        return stop_parser(ec);
    }
    number_.clear();
    stack_.push_double(number.value);
    return true;
  }
  bool on_bool(bool value, bj::error_code&) {
    stack_.push_bool(value);
    return true;
  }
  bool on_null(bj::error_code&) {
    stack_.push_null();
    return true;
  }
  // Comments are disabled in the parse options, so these are never called.
  bool on_comment_part(bj::string_view, bj::error_code&) { return true; }
  bool on_comment(bj::string_view, bj::error_code&) { return true; }

 private:
  bool reject_unsafe_integer(std::string_view text, bj::error_code& ec) {
    rejection_ = "JSON: integer " + quote_for_message(text) + " at byte " +
                 std::to_string(offset_of(text)) +
                 " is outside the I-JSON safe range +/-(2^53-1) (protocol section 1)";
    return stop_parser(ec);
  }
  // The parser stops when a handler returns false; it needs some error code, the message is ours.
  static bool stop_parser(bj::error_code& ec) {
    ec = bj::error::syntax;
    return false;
  }
  // Offset of a number within the input (the assembled text only exists after a split write).
  std::size_t offset_of(std::string_view text) const noexcept {
    if (number_.is_assembled(text)) return 0;
    return static_cast<std::size_t>(text.data() - input_begin_);
  }

  const char* input_begin_;
  bj::value_stack stack_;
  std::size_t member_names_seen_ = 0;
  detail::NumberText number_;
  std::string rejection_;
};

// Number of members in all objects of a tree. It equals the number of member names the parser
// saw unless value_stack merged duplicates. Recursion depth is bounded by ParseOptions::max_depth.
std::size_t count_members(const bj::value& value) noexcept {
  std::size_t count = 0;
  if (const bj::object* object = value.if_object()) {
    count += object->size();
    for (const auto& member : *object) count += count_members(member.value());
  } else if (const bj::array* array = value.if_array()) {
    for (const auto& element : *array) count += count_members(element);
  }
  return count;
}

// Second pass, only for input already known to contain a duplicate member name: finds one so the
// error message can name it. Keeping every key on the fast path would cost an allocation per key.
class DuplicateMemberFinder {
 public:
  static constexpr std::size_t max_object_size = bj::object::max_size();
  static constexpr std::size_t max_array_size = bj::array::max_size();
  static constexpr std::size_t max_key_size = bj::string::max_size();
  static constexpr std::size_t max_string_size = bj::string::max_size();

  [[nodiscard]] const std::string& duplicate() const noexcept { return duplicate_; }

  bool on_object_begin(bj::error_code&) {
    if (open_objects_ == names_by_depth_.size()) names_by_depth_.emplace_back();
    names_by_depth_[open_objects_++].clear();
    return true;
  }
  bool on_key_part(bj::string_view part, std::size_t, bj::error_code&) {
    key_.append(part.data(), part.size());
    return true;
  }
  bool on_key(bj::string_view last_part, std::size_t, bj::error_code&) {
    key_.append(last_part.data(), last_part.size());
    names_by_depth_[open_objects_ - 1].push_back(std::move(key_));
    key_.clear();
    return true;
  }
  bool on_object_end(std::size_t, bj::error_code& ec) {
    std::vector<std::string>& names = names_by_depth_[--open_objects_];
    std::sort(names.begin(), names.end());
    const auto repeated = std::adjacent_find(names.begin(), names.end());
    if (repeated == names.end()) return true;
    duplicate_ = *repeated;
    ec = bj::error::syntax;
    return false;
  }

  bool on_document_begin(bj::error_code&) { return true; }
  bool on_document_end(bj::error_code&) { return true; }
  bool on_array_begin(bj::error_code&) { return true; }
  bool on_array_end(std::size_t, bj::error_code&) { return true; }
  bool on_string_part(bj::string_view, std::size_t, bj::error_code&) { return true; }
  bool on_string(bj::string_view, std::size_t, bj::error_code&) { return true; }
  bool on_number_part(bj::string_view, bj::error_code&) { return true; }
  bool on_int64(std::int64_t, bj::string_view, bj::error_code&) { return true; }
  bool on_uint64(std::uint64_t, bj::string_view, bj::error_code&) { return true; }
  bool on_double(double, bj::string_view, bj::error_code&) { return true; }
  bool on_bool(bool, bj::error_code&) { return true; }
  bool on_null(bj::error_code&) { return true; }
  bool on_comment_part(bj::string_view, bj::error_code&) { return true; }
  bool on_comment(bj::string_view, bj::error_code&) { return true; }

 private:
  std::vector<std::vector<std::string>> names_by_depth_;
  std::size_t open_objects_ = 0;
  std::string key_;
  std::string duplicate_;
};

Error duplicate_member_error(std::string_view text, const bj::parse_options& options) {
  bj::basic_parser<DuplicateMemberFinder> finder(options);
  bj::error_code ec;
  const std::size_t object_end = finder.write_some(false, text.data(), text.size(), ec);
  const std::string& duplicate = finder.handler().duplicate();
  if (duplicate.empty()) {
    // Unreachable: the first pass found fewer members than names, so some object repeats one.
    return fail(Errc::bad_request, "JSON: duplicate member name");
  }
  return fail(Errc::bad_request, "JSON: duplicate member " + quote_for_message(duplicate) +
                                     " in the object ending at byte " + std::to_string(object_end));
}

// True if the parser stopped at `offset` right after the escape of a high surrogate, i.e. the
// escape was not followed by a low surrogate escape (Boost reports a bare "syntax error").
bool follows_high_surrogate_escape(std::string_view text, std::size_t offset) {
  // Boost stops either on the character after \uD8xx, or on the one after a backslash that is
  // not followed by 'u'.
  for (std::size_t escape_end : {offset, offset - 1}) {
    if (escape_end < 6 || escape_end > text.size()) continue;
    if (escape_end == offset - 1 && text[escape_end] != '\\') continue;
    const std::string_view escape = text.substr(escape_end - 6, 6);
    if (escape[0] != '\\' || escape[1] != 'u' || (escape[2] != 'd' && escape[2] != 'D')) continue;
    const char second = escape[3];
    const bool high = second == '8' || second == '9' || second == 'a' || second == 'b' ||
                      second == 'A' || second == 'B';
    if (!high || !is_hex_digit(escape[4]) || !is_hex_digit(escape[5])) continue;
    // The backslash must start an escape, not be the second half of "\\".
    std::size_t backslashes = 0;
    for (std::size_t i = escape_end - 6; i > 0 && text[i - 1] == '\\'; --i) ++backslashes;
    if (backslashes % 2 == 0) return true;
  }
  return false;
}

// "01": Boost stops on the digit after a leading zero (RFC 8259 §6 forbids leading zeros).
bool is_after_leading_zero(std::string_view text, std::size_t offset) {
  if (offset == 0 || offset >= text.size() || !is_ascii_digit(text[offset])) return false;
  if (text[offset - 1] != '0') return false;
  if (offset == 1) return true;
  const char before = text[offset - 2];
  return !is_ascii_digit(before) && before != '.' && before != 'e' && before != 'E' &&
         before != '+';
}

// Boost's error, reworded where Boost's own message does not say what is wrong.
std::string describe_parse_error(std::string_view text, std::size_t offset,
                                 const bj::error_code& ec, std::size_t max_depth) {
  const std::string at = " at byte " + std::to_string(offset);
  if (ec == bj::error::incomplete) {
    const bool blank = std::all_of(text.begin(), text.end(), is_json_whitespace);
    return blank ? "JSON: empty input" : "JSON: unexpected end of input" + at;
  }
  if (ec == bj::error::too_deep) {
    return "JSON: nesting deeper than " + std::to_string(max_depth) + " levels" + at;
  }
  if (ec == bj::error::illegal_leading_surrogate || ec == bj::error::illegal_trailing_surrogate ||
      (ec == bj::error::syntax && follows_high_surrogate_escape(text, offset))) {
    return "JSON: lone UTF-16 surrogate in a \\u escape (I-JSON)" + at;
  }
  if (is_after_leading_zero(text, offset)) {
    return "JSON: number with a leading zero at byte " + std::to_string(offset - 1);
  }
  if (ec == bj::error::extra_data) return "JSON: unexpected content after the value" + at;
  if (ec == bj::error::syntax && offset < text.size()) {
    const auto byte = static_cast<unsigned char>(text[offset]);
    if (byte >= 0x80) return "JSON: invalid UTF-8 or misplaced non-ASCII character" + at;
    if (byte < 0x20 && !is_json_whitespace(static_cast<char>(byte))) {
      return "JSON: unescaped control character" + at;
    }
  }
  return "JSON: " + ec.message() + at;
}

// ---------------------------------------------------------------------------------------------
// JCS

// RFC 8785 §3.2.3 orders member names by their UTF-16 code units. UTF-8 byte order is code point
// order, which agrees with UTF-16 order except that UTF-16 puts U+10000..U+10FFFF (surrogates,
// 0xD800..0xDBFF) before U+E000..U+FFFF. In UTF-8 those two groups start with lead bytes
// 0xF0..0xF4 and 0xEE..0xEF; lifting 0xEE/0xEF above 0xF4 restores UTF-16 order. At the first
// differing byte both strings are at the same position within a character (equal prefixes), and
// 0xEE/0xEF never occur as continuation bytes, so remapping every byte is safe.
unsigned utf16_order_rank(char byte) noexcept {
  const auto value = static_cast<unsigned char>(byte);
  return value == 0xEE || value == 0xEF ? value + 0x10u : value;
}

bool precedes_in_utf16_order(std::string_view a, std::string_view b) noexcept {
  const auto [in_a, in_b] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
  if (in_b == b.end()) return false;  // b is a prefix of a, or equal
  if (in_a == a.end()) return true;   // a is a proper prefix of b
  return utf16_order_rank(*in_a) < utf16_order_rank(*in_b);
}

[[noreturn]] void jcs_misuse(const char* what) noexcept {
  std::fprintf(stderr, "agent_mesh: JCS misuse: %s\n", what);
  std::abort();
}

template <class Integer>
void append_integer(std::string& out, Integer value) {
  char digits[24];
  const auto result = std::to_chars(digits, digits + sizeof digits, value);
  out.append(digits, result.ptr);
}

// Serialises one value tree. Recursion depth equals the nesting depth, which parse_ijson bounds
// by ParseOptions::max_depth (limits::max_json_depth); trees built in code are as deep as that
// code makes them.
class JcsWriter {
 public:
  explicit JcsWriter(std::string& out) : out_(out) {}

  void write(const bj::value& value) {
    switch (value.kind()) {
      case bj::kind::null:
        out_.append("null");
        break;
      case bj::kind::bool_:
        out_.append(value.get_bool() ? "true" : "false");
        break;
      case bj::kind::int64:
        append_integer(out_, value.get_int64());
        break;
      case bj::kind::uint64:
        append_integer(out_, value.get_uint64());
        break;
      case bj::kind::double_:
        append_jcs_number(out_, value.get_double());
        break;
      case bj::kind::string:
        append_quoted_string(out_, value.get_string());
        break;
      case bj::kind::array:
        write_array(value.get_array());
        break;
      case bj::kind::object:
        write_object(value.get_object());
        break;
    }
  }

 private:
  void write_array(const bj::array& array) {
    out_.push_back('[');
    bool first = true;
    for (const bj::value& element : array) {
      if (!first) out_.push_back(',');
      first = false;
      write(element);
    }
    out_.push_back(']');
  }

  // Members are sorted as pointers in one scratch vector shared by all levels: each object uses
  // the tail beyond its parent's members, so typical trees need no allocation for it at all.
  void write_object(const bj::object& object) {
    out_.push_back('{');
    const std::size_t begin = sorted_members_.size();
    for (const bj::key_value_pair& member : object) sorted_members_.push_back(&member);
    std::sort(sorted_members_.begin() + static_cast<std::ptrdiff_t>(begin), sorted_members_.end(),
              [](const bj::key_value_pair* a, const bj::key_value_pair* b) {
                return precedes_in_utf16_order(a->key(), b->key());
              });
    const std::size_t end = sorted_members_.size();
    for (std::size_t i = begin; i < end; ++i) {
      // Index, not iterator: nested objects append to (and may reallocate) the vector.
      const bj::key_value_pair& member = *sorted_members_[i];
      if (i != begin) out_.push_back(',');
      append_quoted_string(out_, member.key());
      out_.push_back(':');
      write(member.value());
    }
    sorted_members_.resize(begin);
    out_.push_back('}');
  }

  std::string& out_;
  // Inline room for the members of a typical envelope (its objects and their parents together).
  boost::container::small_vector<const bj::key_value_pair*, 32> sorted_members_;
};

}  // namespace

Result<bj::value> parse_ijson(std::string_view text, const ParseOptions& options) {
  if (text.size() > options.max_bytes) {
    return fail(Errc::too_large, "JSON text of " + std::to_string(text.size()) +
                                     " bytes exceeds the limit of " +
                                     std::to_string(options.max_bytes) + " bytes");
  }
  // Strict RFC 8259: no comments, no trailing commas, UTF-8 validated (the defaults).
  bj::parse_options boost_options;
  boost_options.max_depth = options.max_depth;

  unsigned char scratch[kValueStackScratchBytes];
  bj::basic_parser<IJsonValueBuilder> parser(boost_options, text.data(), scratch, sizeof scratch);
  bj::error_code ec;
  // One call with more=false: the whole text is one document; trailing whitespace is consumed,
  // anything else after the value is left unconsumed.
  const std::size_t consumed = parser.write_some(false, text.data(), text.size(), ec);
  if (!ec && consumed != text.size()) ec = bj::error::extra_data;
  if (ec) {
    const std::string& rejection = parser.handler().rejection();
    if (!rejection.empty()) return fail(Errc::bad_request, rejection);
    return fail(Errc::bad_request, describe_parse_error(text, consumed, ec, options.max_depth));
  }
  bj::value value = parser.handler().release();
  // I-JSON (RFC 7493 §2.3): member names must be unique. value_stack keeps the last of equal
  // names, so a merged duplicate shows up as fewer members than names parsed.
  if (count_members(value) != parser.handler().member_names_seen()) {
    return duplicate_member_error(text, boost_options);
  }
  return value;
}

std::string serialize_jcs(const bj::value& value) {
  std::string out;
  // Enough for a typical control frame or envelope without regrowing.
  out.reserve(1024);
  append_jcs(out, value);
  return out;
}

void append_jcs(std::string& out, const bj::value& value) { JcsWriter(out).write(value); }

void append_jcs_number(std::string& out, double value) {
  if (!std::isfinite(value)) jcs_misuse("append_jcs_number on a non-finite double");
  // ECMAScript Number::toString, RFC 8785 §3.2.2.3. Both zeros print as "0".
  if (value == 0) {
    out.push_back('0');
    return;
  }
  // Shortest digits that round-trip, in the form [-]d[.ddd]e(+|-)xx.
  char scientific[32];
  const auto result = std::to_chars(scientific, scientific + sizeof scientific, value,
                                    std::chars_format::scientific);
  std::string_view text(scientific, static_cast<std::size_t>(result.ptr - scientific));
  if (text.front() == '-') {
    out.push_back('-');
    text.remove_prefix(1);
  }
  const std::size_t e = text.find('e');
  const std::string_view mantissa = text.substr(0, e);
  std::string_view exponent_text = text.substr(e + 1);
  if (exponent_text.front() == '+') exponent_text.remove_prefix(1);
  int exponent = 0;
  std::from_chars(exponent_text.data(), exponent_text.data() + exponent_text.size(), exponent);

  // In ECMAScript's terms value = 0.d1d2...dk × 10^n with k significant digits.
  const char first_digit = mantissa[0];
  const std::string_view other_digits =
      mantissa.size() > 2 ? mantissa.substr(2) : std::string_view();  // after "d."
  const int k = 1 + static_cast<int>(other_digits.size());
  const int n = exponent + 1;

  if (k <= n && n <= 21) {  // integral: digits then n−k zeros
    out.push_back(first_digit);
    out.append(other_digits);
    out.append(static_cast<std::size_t>(n - k), '0');
  } else if (0 < n && n <= 21) {  // decimal point inside the digits
    out.push_back(first_digit);
    out.append(other_digits.substr(0, static_cast<std::size_t>(n - 1)));
    out.push_back('.');
    out.append(other_digits.substr(static_cast<std::size_t>(n - 1)));
  } else if (-6 < n && n <= 0) {  // 0.000ddd
    out.append("0.");
    out.append(static_cast<std::size_t>(-n), '0');
    out.push_back(first_digit);
    out.append(other_digits);
  } else {  // exponent form: d[.ddd]e±x
    out.push_back(first_digit);
    if (!other_digits.empty()) {
      out.push_back('.');
      out.append(other_digits);
    }
    out.push_back('e');
    out.push_back(n - 1 < 0 ? '-' : '+');
    append_integer(out, std::abs(n - 1));
  }
}

bool is_integer(const bj::value& value) noexcept {
  if (value.is_int64()) return is_safe_integer(value.get_int64());
  if (value.is_uint64()) {
    return value.get_uint64() <= static_cast<std::uint64_t>(limits::max_safe_integer);
  }
  return false;
}

}  // namespace agent_mesh::json
