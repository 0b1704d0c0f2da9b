// The sans-IO half of meshd's forwarder to the local agent (meshd-sdk.md "Incoming request"): the
// body meshd POSTs, how it reads the agent's answer, and an incremental parser for streamed
// answers (Server-Sent Events or NDJSON). No Asio here; local_agent.cpp does the HTTP.
#pragma once

#include <boost/json/value.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent_mesh/limits.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh::meshd {

// ---- Bounds (each with its reason) ----

// The largest answer body (a response body or one stream chunk, as serialised JSON text) that is
// certain to fit one envelope of limits::default_max_envelope_bytes (1 MiB) once encrypted:
//   frame ≤ 1,048,576 bytes; the envelope's other members (id, from, to, msg_type, in_reply_to,
//   timestamp, encrypted, sid, n and the JSON punctuation) take < 400 bytes, 1 KiB reserved;
//   the payload is base64url of the ciphertext: 4/3 expansion → ciphertext ≤ 785,664 bytes;
//   the ciphertext adds a 16-byte tag per 65,519 plaintext bytes (protocol §5): ≤ 208 bytes;
//   the plaintext is `{"seq":<n>,"body":...}` around the body: < 40 bytes.
// That leaves ~785,400 bytes; 760 KiB keeps a margin for number formatting differences between
// the text we measure and the text the endpoint writes.
inline constexpr std::size_t kMaxAnswerBodyBytes = 760 * 1024;
// The raw HTTP body meshd reads for a non-streamed answer. Larger than kMaxAnswerBodyBytes
// because agents may pretty-print (whitespace and escapes shrink when re-serialised); anything
// past it is `too_large` without parsing.
inline constexpr std::size_t kMaxRawAnswerBytes = 4 * 1024 * 1024;
// A streamed answer: the longest line (NDJSON) or event (SSE, all its data lines together) that
// may be pending. One chunk must fit kMaxAnswerBodyBytes anyway; 1 MiB leaves room for
// whitespace and escapes while bounding what a broken agent can make meshd buffer.
inline constexpr std::size_t kMaxStreamLineBytes = 1024 * 1024;
// How much of a bad answer's body goes into the `agent_error` message (meshd-sdk.md).
inline constexpr std::size_t kAnswerExcerptBytes = 200;

// The body POSTed to the local agent: a JSON object body gets "capability" as its first member
// (replacing a "capability" member already there, the other members keep their order); any other
// body becomes {"capability": ..., "data": <body>}. Compact JSON.
[[nodiscard]] std::string forwarded_body(std::string_view capability, const boost::json::value& body);

// Reads a complete (non-streamed) answer of the local agent:
//  - 2xx whose body is JSON (protocol §1 I-JSON; decided by the body, whatever the Content-Type)
//    → the value; too_large if its serialisation exceeds kMaxAnswerBodyBytes (or the body
//    exceeds kMaxRawAnswerBytes).
//  - non-2xx whose body is an object with "error": {"code": <a protocol §4 code>, "message":
//    <string>} → that error (the message cut to 4 KiB at a UTF-8 boundary).
//  - anything else → agent_error: "local agent answered HTTP <status>[ (<why>)]: <excerpt>" where
//    the excerpt is the first 200 bytes of the body (invalid UTF-8 replaced by U+FFFD, so the
//    message stays valid I-JSON).
[[nodiscard]] Result<boost::json::value> interpret_unary_answer(int status, std::string_view content_type,
                                                                std::string_view body);

// The media type of a Content-Type value, lower-cased, without parameters and blanks:
// "Text/Event-Stream; charset=utf-8" → "text/event-stream".
[[nodiscard]] std::string media_type(std::string_view content_type);

// Incremental parser of a streamed answer; feed() the body bytes as they arrive (split anywhere),
// then finish() at the end of the body. Each parsed chunk is one JSON value.
//
//  - sse (text/event-stream, per the WHATWG SSE parsing rules, minimally): lines end with CRLF,
//    LF or CR; a leading BOM is skipped; lines starting with ':' are comments; `data` field values
//    of one event are joined with "\n" and the event is dispatched at the blank line that ends it;
//    other fields (event, id, retry, unknown) are ignored. An event's data is one JSON value, or —
//    for agents that write one `data:` line per chunk without blank lines between them — when the
//    joined text is not one JSON value but each of its lines is, one chunk per line. An event left
//    unterminated at the end of the body is still dispatched (the SSE spec drops it; losing an
//    agent's last chunk would be worse).
//  - ndjson (application/x-ndjson): one JSON value per line (LF, optional CR before it); blank
//    lines are skipped; a last line without LF counts at finish().
//
// Errors (the parser stays failed afterwards): a line or event longer than kMaxStreamLineBytes,
// or a chunk whose serialisation exceeds kMaxAnswerBodyBytes → too_large; a chunk that is not
// I-JSON → agent_error naming the problem. The chunks parsed before a failure are not lost: a
// feed() that fails after some chunks returns those chunks, and the failure (error() reports it
// at once) is returned by every later feed() and finish().
class StreamBodyParser {
 public:
  enum class Kind : std::uint8_t { sse, ndjson };

  explicit StreamBodyParser(Kind kind) : kind_(kind) {}

  // The parser for a Content-Type, if it is a stream type (text/event-stream,
  // application/x-ndjson); nullopt otherwise.
  [[nodiscard]] static std::optional<Kind> kind_for(std::string_view content_type);

  Result<std::vector<boost::json::value>> feed(std::string_view bytes);
  // The end of the body.
  Result<std::vector<boost::json::value>> finish();

  [[nodiscard]] Kind kind() const noexcept { return kind_; }
  // Chunks produced so far.
  [[nodiscard]] std::uint64_t chunks() const noexcept { return chunks_; }
  // The failure, once there is one.
  [[nodiscard]] const std::optional<Error>& error() const noexcept { return failed_; }

 private:
  Status line(std::string_view text, std::vector<boost::json::value>& out);
  Status dispatch_event(std::vector<boost::json::value>& out);
  Status emit(std::string_view text, std::vector<boost::json::value>& out);

  Kind kind_;
  std::string line_;       // the unfinished line
  std::string data_;       // SSE: the current event's data lines, each followed by "\n"
  std::size_t data_lines_ = 0;
  bool after_cr_ = false;  // SSE: the last byte was a CR (a following LF belongs to it)
  bool finished_ = false;
  std::uint64_t lines_ = 0;
  std::uint64_t chunks_ = 0;
  std::optional<Error> failed_;
};

}  // namespace agent_mesh::meshd
