#include "meshd/forwarding.hpp"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

#include "agent_mesh/json.hpp"

namespace agent_mesh::meshd {

namespace {

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool all_blank(std::string_view text) {
  for (const char c : text)
    if (!is_blank(c)) return false;
  return true;
}

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// Valid UTF-8 for a message: every ill-formed sequence becomes U+FFFD (so a body cut after 200
// bytes, or a binary one, still yields a message the receiver's I-JSON parser accepts).
std::string sanitize_utf8(std::string_view in) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(in.size());
  std::size_t i = 0;
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(in[k]); };
  const auto cont = [&](std::size_t k, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return k < in.size() && byte(k) >= lo && byte(k) <= hi;
  };
  while (i < in.size()) {
    const unsigned char b = byte(i);
    std::size_t length = 0;
    if (b < 0x80) {
      length = 1;
    } else if (b >= 0xC2 && b <= 0xDF) {
      length = cont(i + 1) ? 2 : 0;
    } else if (b >= 0xE0 && b <= 0xEF) {
      const unsigned char lo = b == 0xE0 ? 0xA0 : 0x80;
      const unsigned char hi = b == 0xED ? 0x9F : 0xBF;
      length = cont(i + 1, lo, hi) && cont(i + 2) ? 3 : 0;
    } else if (b >= 0xF0 && b <= 0xF4) {
      const unsigned char lo = b == 0xF0 ? 0x90 : 0x80;
      const unsigned char hi = b == 0xF4 ? 0x8F : 0xBF;
      length = cont(i + 1, lo, hi) && cont(i + 2) && cont(i + 3) ? 4 : 0;
    }
    if (length == 0) {
      out += kReplacement;
      ++i;
    } else {
      out.append(in.substr(i, length));
      i += length;
    }
  }
  return out;
}

// Cuts valid UTF-8 to at most `max` bytes without splitting a character.
std::string cut_utf8(std::string_view text, std::size_t max) {
  if (text.size() <= max) return std::string(text);
  std::size_t end = max;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return std::string(text.substr(0, end));
}

bool is_protocol_code(Errc code) { return static_cast<int>(code) <= static_cast<int>(Errc::internal); }

// Protocol §4 error messages passed through from the agent are cut to this (envelope economy; a
// message is for people).
constexpr std::size_t kMaxPassedMessageBytes = 4096;

Error answer_error(int status, std::string_view why, std::string_view body) {
  std::string message = "local agent answered HTTP " + std::to_string(status);
  message += why;
  message += ": ";
  message += sanitize_utf8(body.substr(0, kAnswerExcerptBytes));
  return fail(Errc::agent_error, std::move(message));
}

Status check_answer_size(const boost::json::value& value, std::string_view what) {
  const std::size_t size = boost::json::serialize(value).size();
  if (size > kMaxAnswerBodyBytes) {
    return fail(Errc::too_large, std::string(what) + " is " + std::to_string(size) +
                                     " bytes of JSON; at most " + std::to_string(kMaxAnswerBodyBytes) +
                                     " fit one envelope");
  }
  return {};
}

}  // namespace

std::string forwarded_body(std::string_view capability, const boost::json::value& body) {
  boost::json::object out;
  if (const auto* object = body.if_object()) {
    out.reserve(object->size() + 1);
    out.emplace("capability", capability);
    for (const auto& member : *object) {
      if (member.key() == "capability") continue;
      out.emplace(member.key(), member.value());
    }
  } else {
    out.reserve(2);
    out.emplace("capability", capability);
    out.emplace("data", body);
  }
  return boost::json::serialize(out);
}

Result<boost::json::value> interpret_unary_answer(int status, std::string_view content_type, std::string_view body) {
  if (body.size() > kMaxRawAnswerBytes) {
    return fail(Errc::too_large, "local agent's answer is larger than " + std::to_string(kMaxRawAnswerBytes) + " bytes");
  }
  json::ParseOptions options;
  options.max_bytes = kMaxRawAnswerBytes;
  auto parsed = json::parse_ijson(body, options);
  if (status >= 200 && status <= 299) {
    if (!parsed) {
      std::string why = " with a body that is not JSON";
      if (!content_type.empty()) why += " (Content-Type: " + sanitize_utf8(content_type.substr(0, 100)) + ")";
      return answer_error(status, why, body);
    }
    AGENT_MESH_TRY(check_answer_size(*parsed, "local agent's answer"));
    return std::move(*parsed);
  }
  if (parsed) {
    if (const auto* object = parsed->if_object()) {
      const auto* error = object->if_contains("error");
      const auto* inner = error != nullptr ? error->if_object() : nullptr;
      const auto* code = inner != nullptr ? inner->if_contains("code") : nullptr;
      const auto* message = inner != nullptr ? inner->if_contains("message") : nullptr;
      if (code != nullptr && code->is_string() && message != nullptr && message->is_string()) {
        const auto errc = errc_from_string(std::string_view(code->get_string()));
        if (errc && is_protocol_code(*errc)) {
          return fail(*errc, cut_utf8(std::string_view(message->get_string()), kMaxPassedMessageBytes));
        }
      }
    }
  }
  return answer_error(status, "", body);
}

std::string media_type(std::string_view content_type) {
  content_type = content_type.substr(0, content_type.find(';'));
  while (!content_type.empty() && is_blank(content_type.front())) content_type.remove_prefix(1);
  while (!content_type.empty() && is_blank(content_type.back())) content_type.remove_suffix(1);
  std::string out(content_type);
  for (char& c : out) c = lower(c);
  return out;
}

// ---- StreamBodyParser ----

std::optional<StreamBodyParser::Kind> StreamBodyParser::kind_for(std::string_view content_type) {
  const std::string type = media_type(content_type);
  if (type == "text/event-stream") return Kind::sse;
  if (type == "application/x-ndjson") return Kind::ndjson;
  return std::nullopt;
}

Result<std::vector<boost::json::value>> StreamBodyParser::feed(std::string_view bytes) {
  if (failed_) return *failed_;
  // Anything fed after the end is a misuse; fail it rather than parse it.
  if (finished_) return fail(Errc::internal, "stream parser fed after finish()");
  std::vector<boost::json::value> out;
  std::size_t i = 0;
  const auto append = [&](std::string_view piece) -> Status {
    if (line_.size() + piece.size() > kMaxStreamLineBytes) {
      return fail(Errc::too_large, "local agent's stream has a line longer than " +
                                       std::to_string(kMaxStreamLineBytes) + " bytes");
    }
    line_.append(piece);
    return {};
  };
  // A failure after some chunks: return those now, the failure from the next call on.
  const auto failed = [&](Error error) -> Result<std::vector<boost::json::value>> {
    failed_ = std::move(error);
    if (!out.empty()) return std::move(out);
    return *failed_;
  };
  while (i < bytes.size()) {
    if (after_cr_) {
      after_cr_ = false;
      if (bytes[i] == '\n') {  // the LF of a CRLF whose CR ended the previous line
        ++i;
        continue;
      }
    }
    const std::size_t end = kind_ == Kind::sse ? bytes.find_first_of("\r\n", i) : bytes.find('\n', i);
    if (end == std::string_view::npos) {
      if (auto appended = append(bytes.substr(i)); !appended) return failed(appended.error());
      break;
    }
    Status status = append(bytes.substr(i, end - i));
    if (status) {
      if (kind_ == Kind::sse && bytes[end] == '\r') after_cr_ = true;
      status = line(line_, out);
      line_.clear();
    }
    if (!status) return failed(status.error());
    i = end + 1;
  }
  return out;
}

Result<std::vector<boost::json::value>> StreamBodyParser::finish() {
  if (failed_) return *failed_;
  if (finished_) return fail(Errc::internal, "stream parser finished twice");
  std::vector<boost::json::value> out;
  Status status;
  if (!line_.empty()) {
    status = line(line_, out);
    line_.clear();
  }
  if (status && kind_ == Kind::sse) status = dispatch_event(out);
  if (!status) {
    failed_ = status.error();
    if (!out.empty()) return out;
    return *failed_;
  }
  finished_ = true;
  return out;
}

Status StreamBodyParser::line(std::string_view text, std::vector<boost::json::value>& out) {
  if (kind_ == Kind::ndjson) {
    ++lines_;
    if (all_blank(text)) return {};
    return emit(text, out);
  }
  if (lines_ == 0 && text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  ++lines_;
  if (text.empty()) return dispatch_event(out);
  if (text.front() == ':') return {};  // comment
  const std::size_t colon = text.find(':');
  const std::string_view field = text.substr(0, colon);
  if (field != "data") return {};  // event, id, retry and unknown fields
  std::string_view value = colon == std::string_view::npos ? std::string_view{} : text.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (data_.size() + value.size() + 1 > kMaxStreamLineBytes) {
    return fail(Errc::too_large, "local agent's stream has an event longer than " +
                                     std::to_string(kMaxStreamLineBytes) + " bytes");
  }
  data_.append(value);
  data_ += '\n';
  ++data_lines_;
  return {};
}

Status StreamBodyParser::dispatch_event(std::vector<boost::json::value>& out) {
  if (data_lines_ == 0) return {};
  std::string data = std::move(data_);
  const std::size_t lines = data_lines_;
  data_.clear();
  data_lines_ = 0;
  data.pop_back();  // the "\n" after the last data line
  if (all_blank(data)) return {};  // an empty event (a keep-alive) carries no chunk
  json::ParseOptions options;
  options.max_bytes = kMaxStreamLineBytes;
  if (lines > 1 && !json::parse_ijson(data, options)) {
    // Not one value: maybe one value per data line (an agent that omits the blank lines).
    std::vector<std::string_view> parts;
    bool each_parses = true;
    std::string_view rest = data;
    while (each_parses) {
      const std::size_t nl = rest.find('\n');
      const std::string_view part = rest.substr(0, nl);
      if (!all_blank(part)) {
        each_parses = json::parse_ijson(part, options).ok();
        parts.push_back(part);
      }
      if (nl == std::string_view::npos) break;
      rest.remove_prefix(nl + 1);
    }
    if (each_parses) {
      for (const auto part : parts) AGENT_MESH_TRY(emit(part, out));
      return {};
    }
  }
  return emit(data, out);
}

Status StreamBodyParser::emit(std::string_view text, std::vector<boost::json::value>& out) {
  json::ParseOptions options;
  options.max_bytes = kMaxStreamLineBytes;
  auto parsed = json::parse_ijson(text, options);
  if (!parsed) {
    if (parsed.error().code == Errc::too_large) return std::move(parsed).error();
    return fail(Errc::agent_error, "local agent's stream: chunk " + std::to_string(chunks_) +
                                       " is not JSON: " + parsed.error().message);
  }
  AGENT_MESH_TRY(check_answer_size(*parsed, "local agent's stream chunk " + std::to_string(chunks_)));
  out.push_back(std::move(*parsed));
  ++chunks_;
  return {};
}

}  // namespace agent_mesh::meshd
