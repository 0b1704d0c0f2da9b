#include "agent_mesh/relay_protocol.hpp"

#include <array>
#include <boost/json.hpp>
#include <cstring>
#include <type_traits>

#include "agent_mesh/json.hpp"
#include "json_fields.hpp"

namespace agent_mesh {
namespace {

namespace bj = boost::json;
using detail::clip;
using detail::FieldReader;

// Indexed like ControlFrame's alternatives.
constexpr std::array<std::string_view, std::variant_size_v<ControlFrame>> kFrameTypes{
    "hello", "challenge", "auth", "welcome", "error", "queued", "undeliverable", "ack", "ping", "pong"};

template <class Frame, class... Alternatives>
constexpr std::size_t index_in(const std::variant<Alternatives...>*) {
  constexpr bool matches[] = {std::is_same_v<Frame, Alternatives>...};
  for (std::size_t i = 0; i < sizeof...(Alternatives); ++i) {
    if (matches[i]) return i;
  }
  return sizeof...(Alternatives);
}

// The position of Frame in ControlFrame, usable as a case label.
template <class Frame>
constexpr std::size_t index_of() {
  return index_in<Frame>(static_cast<const ControlFrame*>(nullptr));
}

// Who may receive which frame (§6 steps 1-4, "Answers to the sender", "Delivery", "Heartbeat").
enum class Receiver : std::uint8_t { relay, client, either };

bool is_accepted_by(std::size_t type_index, Receiver receiver) {
  if (receiver == Receiver::either) return true;
  const bool sent_by_client = type_index == index_of<Hello>() || type_index == index_of<Auth>() ||
                              type_index == index_of<Ack>() || type_index == index_of<Ping>();
  return sent_by_client == (receiver == Receiver::relay);
}

// Hostile text in a message: clipped, then JSON-quoted so control characters cannot forge log lines.
std::string quoted(std::string_view hostile) { return json::serialize_jcs(bj::value(bj::string_view(clip(hostile)))); }

// protocol §6 "Versions": `v` is checked before anything else in the frame, so that a client of a
// future version learns `unsupported_version` even if the rest of its hello means nothing to us.
Status check_version(const bj::object& object, std::string_view frame) {
  const bj::value* v = object.if_contains("v");
  if (v == nullptr) return fail(Errc::bad_request, std::string(frame) + ": missing member \"v\"");
  // "anything but the integer 1": 1.0, "1", true and null are versions we don't speak either.
  if (v->is_int64() && v->get_int64() == kProtocolVersion) return {};
  if (v->is_int64()) {
    return fail(Errc::unsupported_version, std::string(frame) + ": protocol version " +
                                               std::to_string(v->get_int64()) + " is not supported (only " +
                                               std::to_string(kProtocolVersion) + ")");
  }
  return fail(Errc::unsupported_version, std::string(frame) + ": v must be the integer " +
                                             std::to_string(kProtocolVersion));
}

template <std::size_t N>
Status decode_fixed(std::string_view frame, std::string_view member, std::string_view text,
                    std::array<std::uint8_t, N>& out) {
  if (auto decoded = base64url_decode_exact(text, out); !decoded) {
    return fail(Errc::bad_request, std::string(frame) + ": " + std::string(member) + " must be base64url of " +
                                       std::to_string(N) + " bytes: " + decoded.error().message);
  }
  return {};
}

// Resume tokens are opaque to the client but must be canonical (§1), so each token has one spelling
// and the relay's hashed lookup cannot be fooled by an alias.
Status check_token(std::string_view frame, std::string_view member, std::string_view text) {
  std::array<std::uint8_t, limits::resume_token_bytes> bytes{};
  return decode_fixed(frame, member, text, bytes);
}

Result<Uuid> parse_uuid_member(std::string_view frame, std::string_view member, std::string_view text) {
  auto id = Uuid::parse(text);
  if (!id) return fail(Errc::bad_request, std::string(frame) + ": " + std::string(member) + ": " + id.error().message);
  return id;
}

Status read_non_negative(const FieldReader& fields, std::string_view frame, std::string_view member,
                         std::int64_t& out) {
  AGENT_MESH_TRY(fields.required_integer(member, out));
  if (out < 0) return fail(Errc::bad_request, std::string(frame) + ": " + std::string(member) + " must not be negative");
  return {};
}

Result<Hello> hello_from(const bj::object& object) {
  AGENT_MESH_TRY(check_version(object, "hello"));
  FieldReader fields(object, "hello");
  AGENT_MESH_TRY(fields.reject_unknown({"type", "v", "agent_id", "resume"}));
  Hello hello;
  std::string_view text;
  bool has_resume = false;
  AGENT_MESH_TRY(fields.optional_string("resume", text, has_resume));
  if (has_resume) {
    // A malformed token is a malformed hello (bad_request), unlike an unknown or expired one, which
    // only leads to a normal challenge (§6 "Resume tokens").
    AGENT_MESH_TRY(check_token("hello", "resume", text));
    hello.resume = std::string(text);
  }
  // Last: the point validation is the one costly check.
  AGENT_MESH_TRY(fields.required_string("agent_id", text));
  auto agent = AgentId::parse(text);
  if (!agent) return fail(Errc::bad_request, "hello: agent_id: " + agent.error().message);
  hello.agent_id = std::move(agent).value();
  return hello;
}

Result<Challenge> challenge_from(const bj::object& object) {
  FieldReader fields(object, "challenge");
  AGENT_MESH_TRY(fields.reject_unknown({"type", "nonce", "relay_id"}));
  Challenge challenge;
  std::string_view text;
  AGENT_MESH_TRY(fields.required_string("nonce", text));
  AGENT_MESH_TRY(decode_fixed("challenge", "nonce", text, challenge.nonce));
  AGENT_MESH_TRY(fields.required_string("relay_id", text));
  // Its syntax is judged by relay_ids_match (an unparseable relay_id never matches).
  if (text.empty()) return fail(Errc::bad_request, "challenge: relay_id must not be empty");
  challenge.relay_id = std::string(text);
  return challenge;
}

Result<Auth> auth_from(const bj::object& object) {
  FieldReader fields(object, "auth");
  AGENT_MESH_TRY(fields.reject_unknown({"type", "signature"}));
  Auth auth;
  std::string_view text;
  AGENT_MESH_TRY(fields.required_string("signature", text));
  AGENT_MESH_TRY(decode_fixed("auth", "signature", text, auth.signature));
  return auth;
}

Result<Welcome> welcome_from(const bj::object& object) {
  // §6: a client receiving welcome with v ≠ 1 closes with 4002, so `v` comes first here too.
  AGENT_MESH_TRY(check_version(object, "welcome"));
  FieldReader fields(object, "welcome");
  AGENT_MESH_TRY(fields.reject_unknown({"type", "v", "session_token", "heartbeat_ms", "buffered"}));
  Welcome welcome;
  std::string_view text;
  AGENT_MESH_TRY(fields.required_string("session_token", text));
  AGENT_MESH_TRY(check_token("welcome", "session_token", text));
  welcome.session_token = std::string(text);
  AGENT_MESH_TRY(fields.required_integer("heartbeat_ms", welcome.heartbeat_ms));
  // A zero interval would make "silent for 3 intervals" close every connection at once.
  if (welcome.heartbeat_ms <= 0) return fail(Errc::bad_request, "welcome: heartbeat_ms must be positive");
  AGENT_MESH_TRY(read_non_negative(fields, "welcome", "buffered", welcome.buffered));
  return welcome;
}

Result<ErrorFrame> error_from(const bj::object& object) {
  FieldReader fields(object, "error");
  AGENT_MESH_TRY(fields.reject_unknown({"type", "code", "message"}));
  ErrorFrame error;
  std::string_view text;
  AGENT_MESH_TRY(fields.required_string("code", text));
  // Any code of error.hpp: clients map codes to actions, so an invented code is refused.
  const auto code = errc_from_string(text);
  if (!code) return fail(Errc::bad_request, "error: unknown code " + quoted(text));
  error.code = *code;
  AGENT_MESH_TRY(fields.required_string("message", text));
  error.message = std::string(text);
  return error;
}

Result<Queued> queued_from(const bj::object& object) {
  FieldReader fields(object, "queued");
  AGENT_MESH_TRY(fields.reject_unknown({"type", "id"}));
  std::string_view text;
  AGENT_MESH_TRY(fields.required_string("id", text));
  auto id = parse_uuid_member("queued", "id", text);
  if (!id) return std::move(id).error();
  return Queued{*id};
}

Result<Undeliverable> undeliverable_from(const bj::object& object) {
  FieldReader fields(object, "undeliverable");
  AGENT_MESH_TRY(fields.reject_unknown({"type", "id", "code", "retry_after_ms"}));
  Undeliverable frame;
  // The member is always present; null when the relay could not read the envelope's id (§6).
  const bj::value* id = object.if_contains("id");
  if (id == nullptr) return fail(Errc::bad_request, "undeliverable: missing member \"id\"");
  if (id->is_string()) {
    auto uuid = parse_uuid_member("undeliverable", "id", id->get_string());
    if (!uuid) return std::move(uuid).error();
    frame.id = *uuid;
  } else if (!id->is_null()) {
    return fail(Errc::bad_request, "undeliverable: id must be a UUID string or null");
  }
  std::string_view text;
  AGENT_MESH_TRY(fields.required_string("code", text));
  const auto code = errc_from_string(text);
  if (!code || !is_undeliverable_code(*code)) {
    return fail(Errc::bad_request, "undeliverable: code " + quoted(text) +
                                       " is not one of rate_limited, buffer_full, revoked, bad_envelope, "
                                       "expired, unreachable");
  }
  frame.code = *code;
  std::int64_t retry = 0;
  bool has_retry = false;
  AGENT_MESH_TRY(fields.optional_integer("retry_after_ms", retry, has_retry));
  if (has_retry) {
    if (retry < 0) return fail(Errc::bad_request, "undeliverable: retry_after_ms must not be negative");
    frame.retry_after_ms = retry;
  }
  return frame;
}

Result<Ack> ack_from(const bj::object& object) {
  FieldReader fields(object, "ack");
  AGENT_MESH_TRY(fields.reject_unknown({"type", "ids"}));
  const bj::array* ids = nullptr;
  AGENT_MESH_TRY(fields.required_array("ids", ids));
  if (ids->empty() || ids->size() > limits::max_ack_ids) {
    return fail(Errc::bad_request, "ack: ids must hold 1 to " + std::to_string(limits::max_ack_ids) +
                                       " IDs, got " + std::to_string(ids->size()));
  }
  Ack ack;
  ack.ids.reserve(ids->size());
  for (std::size_t i = 0; i < ids->size(); ++i) {
    const std::string member = "ids[" + std::to_string(i) + "]";
    const bj::value& element = (*ids)[i];
    if (!element.is_string()) return fail(Errc::bad_request, "ack: " + member + " must be a string");
    auto id = parse_uuid_member("ack", member, element.get_string());
    if (!id) return std::move(id).error();
    ack.ids.push_back(*id);
  }
  return ack;
}

template <class Frame>
Result<Frame> empty_frame_from(const bj::object& object, std::string_view frame) {
  FieldReader fields(object, frame);
  AGENT_MESH_TRY(fields.reject_unknown({"type"}));
  return Frame{};
}

template <class Frame>
Result<ControlFrame> widen(Result<Frame> frame) {
  if (!frame) return std::move(frame).error();
  return ControlFrame{std::move(frame).value()};
}

// I-JSON within the bound, an object, and the index in kFrameTypes of its `type`.
struct FrameObject {
  bj::value value;
  std::size_t type_index = 0;
};

Result<FrameObject> read_frame_object(std::string_view text, std::size_t max_bytes) {
  auto parsed = json::parse_ijson(text, {.max_bytes = max_bytes});
  if (!parsed) return fail(parsed.error().code, "control frame: " + parsed.error().message);
  if (!parsed->is_object()) return fail(Errc::bad_request, "control frame must be a JSON object");
  const bj::value* type = parsed->get_object().if_contains("type");
  if (type == nullptr) return fail(Errc::bad_request, "control frame: missing member \"type\"");
  if (!type->is_string()) return fail(Errc::bad_request, "control frame: type must be a string");
  const std::string_view name = type->get_string();
  for (std::size_t i = 0; i < kFrameTypes.size(); ++i) {
    if (kFrameTypes[i] == name) return FrameObject{std::move(parsed).value(), i};
  }
  return fail(Errc::bad_request, "control frame: unknown type " + quoted(name));
}

Result<ControlFrame> parse_for(std::string_view text, std::size_t max_bytes, Receiver receiver) {
  auto frame = read_frame_object(text, max_bytes);
  if (!frame) return std::move(frame).error();
  const std::size_t index = frame->type_index;
  if (!is_accepted_by(index, receiver)) {
    return fail(Errc::bad_request, std::string(receiver == Receiver::relay ? "a client" : "a relay") +
                                       " does not send " + std::string(kFrameTypes[index]) + " frames");
  }
  const bj::object& object = frame->value.get_object();
  switch (index) {
    case index_of<Hello>(): return widen(hello_from(object));
    case index_of<Challenge>(): return widen(challenge_from(object));
    case index_of<Auth>(): return widen(auth_from(object));
    case index_of<Welcome>(): return widen(welcome_from(object));
    case index_of<ErrorFrame>(): return widen(error_from(object));
    case index_of<Queued>(): return widen(queued_from(object));
    case index_of<Undeliverable>(): return widen(undeliverable_from(object));
    case index_of<Ack>(): return widen(ack_from(object));
    case index_of<Ping>(): return widen(empty_frame_from<Ping>(object, "ping"));
    case index_of<Pong>(): return widen(empty_frame_from<Pong>(object, "pong"));
    default: break;
  }
  return fail(Errc::internal, "control frame: unhandled type");  // unreachable: kFrameTypes matches the variant
}

// ---- classify_frame: a shallow scan of the top-level member names ----

class TopLevelScanner {
 public:
  explicit TopLevelScanner(std::string_view text) : text_(text) {}

  Result<FrameKind> run() {
    skip_whitespace();
    if (at_end()) return broken("the frame is empty");
    if (text_[pos_] != '{') return broken("the frame must be a JSON object");
    ++pos_;
    skip_whitespace();
    if (!at_end() && text_[pos_] == '}') {
      ++pos_;
    } else {
      for (;;) {
        AGENT_MESH_TRY(member());
        skip_whitespace();
        if (at_end()) return broken("unexpected end of the frame");
        const char c = text_[pos_++];
        if (c == '}') break;
        if (c != ',') return broken("expected ',' or '}' between members");
        skip_whitespace();
      }
    }
    skip_whitespace();
    if (!at_end()) return broken("unexpected content after the object");
    if (has_type_ && has_msg_type_) {
      return fail(Errc::bad_request, "frame has both \"type\" (control frame) and \"msg_type\" (envelope)");
    }
    if (!has_type_ && !has_msg_type_) {
      return fail(Errc::bad_request, "frame has neither \"type\" (control frame) nor \"msg_type\" (envelope)");
    }
    return has_type_ ? FrameKind::control : FrameKind::envelope;
  }

 private:
  // Longest member name we compare against ("msg_type"), plus one to tell longer names apart.
  static constexpr std::size_t kNameCapacity = 9;

  [[nodiscard]] bool at_end() const noexcept { return pos_ >= text_.size(); }

  Error broken(std::string_view what) const {
    return fail(Errc::bad_request, "frame is not a JSON object: " + std::string(what) + " at byte " +
                                       std::to_string(pos_));
  }

  void skip_whitespace() noexcept {
    while (!at_end() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  // pos_ is on an opening quote; leaves pos_ after the closing one. A quote ends the string unless
  // an odd number of backslashes precedes it; memchr makes a long base64url payload cheap to pass.
  Status skip_string() {
    const std::size_t content = ++pos_;
    for (;;) {
      const void* found = std::memchr(text_.data() + pos_, '"', text_.size() - pos_);
      if (found == nullptr) {
        pos_ = text_.size();
        return broken("unterminated string");
      }
      const std::size_t quote = static_cast<std::size_t>(static_cast<const char*>(found) - text_.data());
      std::size_t backslashes = 0;
      while (quote - backslashes > content && text_[quote - backslashes - 1] == '\\') ++backslashes;
      pos_ = quote + 1;
      if (backslashes % 2 == 0) return {};
    }
  }

  // Decodes a member name just far enough to compare it with "type" and "msg_type": a name spelt
  // with escapes ("ty\u0070e") is still that name (RFC 8259 §7), so it is unescaped, but only up to
  // kNameCapacity ASCII characters; anything longer or non-ASCII is "some other name".
  Status member_name(bool& is_type, bool& is_msg_type) {
    if (at_end() || text_[pos_] != '"') return broken("expected a member name");
    const std::size_t start = pos_ + 1;
    AGENT_MESH_TRY(skip_string());
    const std::string_view raw = text_.substr(start, pos_ - 1 - start);
    std::array<char, kNameCapacity> name{};
    std::size_t size = 0;
    bool other = false;
    for (std::size_t i = 0; i < raw.size() && !other; ++i) {
      char c = raw[i];
      if (c == '\\') {
        if (++i == raw.size()) return broken("invalid escape in a member name");
        switch (raw[i]) {
          case '"': case '\\': case '/': c = raw[i]; break;
          case 'b': case 'f': case 'n': case 'r': case 't': c = '\x01'; break;  // never part of our names
          case 'u': {
            if (raw.size() - i < 5) return broken("invalid escape in a member name");
            unsigned value = 0;
            for (std::size_t k = 1; k <= 4; ++k) {
              const char h = raw[i + k];
              const unsigned digit = h >= '0' && h <= '9' ? static_cast<unsigned>(h - '0')
                                     : h >= 'a' && h <= 'f' ? static_cast<unsigned>(h - 'a' + 10)
                                     : h >= 'A' && h <= 'F' ? static_cast<unsigned>(h - 'A' + 10)
                                                            : 16u;
              if (digit == 16) return broken("invalid escape in a member name");
              value = value * 16 + digit;
            }
            i += 4;
            if (value >= 0x80) other = true;
            c = static_cast<char>(value);
            break;
          }
          default: return broken("invalid escape in a member name");
        }
      }
      if (size == name.size()) other = true;
      else name[size++] = c;
    }
    const std::string_view decoded(name.data(), size);
    is_type = !other && decoded == "type";
    is_msg_type = !other && decoded == "msg_type";
    return {};
  }

  // Skips one value without validating it: strings by their quotes, containers by bracket depth
  // (strings inside skipped whole), scalars up to the next delimiter. A mismatched bracket or a
  // bad literal is left to the real parser, which the caller runs next.
  Status skip_value() {
    if (at_end()) return broken("expected a value");
    const char first = text_[pos_];
    if (first == '"') return skip_string();
    if (first == '{' || first == '[') {
      std::size_t depth = 0;
      while (!at_end()) {
        const char c = text_[pos_];
        if (c == '"') {
          AGENT_MESH_TRY(skip_string());
          continue;
        }
        ++pos_;
        if (c == '{' || c == '[') {
          ++depth;
        } else if (c == '}' || c == ']') {
          if (--depth == 0) return {};
        }
      }
      return broken("unterminated object or array");
    }
    const std::size_t start = pos_;
    while (!at_end()) {
      const char c = text_[pos_];
      if (c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '"' ||
          c == '{' || c == '[' || c == ':') {
        break;
      }
      ++pos_;
    }
    if (pos_ == start) return broken("expected a value");
    return {};
  }

  Status member() {
    bool is_type = false;
    bool is_msg_type = false;
    AGENT_MESH_TRY(member_name(is_type, is_msg_type));
    has_type_ = has_type_ || is_type;
    has_msg_type_ = has_msg_type_ || is_msg_type;
    skip_whitespace();
    if (at_end() || text_[pos_] != ':') return broken("expected ':' after a member name");
    ++pos_;
    skip_whitespace();
    return skip_value();
  }

  std::string_view text_;
  std::size_t pos_ = 0;
  bool has_type_ = false;
  bool has_msg_type_ = false;
};

// ---- relay URLs ----

bool is_printable_ascii(char c) noexcept { return c > 0x20 && c < 0x7f; }

char to_lower_ascii(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower_ascii(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = to_lower_ascii(c);
  return out;
}

bool is_reg_name_char(char c) noexcept {
  // RFC 3986 unreserved characters. Percent-encoded and sub-delim hosts are refused rather than
  // given a second spelling (§6: no percent-decoding).
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

bool is_ip_literal_char(char c) noexcept {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' || c == '.';
}

// A port in its one canonical spelling: 1-65535, digits only, no leading zero.
bool is_canonical_port(std::string_view port) noexcept {
  if (port.empty() || port.size() > 5 || port[0] == '0') return false;
  unsigned value = 0;
  for (const char c : port) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  return value <= 65535;
}

}  // namespace

std::string_view frame_type(const ControlFrame& frame) noexcept {
  if (frame.valueless_by_exception()) return {};
  return kFrameTypes[frame.index()];
}

std::string serialize(const ControlFrame& frame) {
  bj::object out;
  out["type"] = frame_type(frame);
  std::visit(
      [&out](const auto& f) {
        using T = std::decay_t<decltype(f)>;
        if constexpr (std::is_same_v<T, Hello>) {
          out["v"] = f.v;
          out["agent_id"] = f.agent_id.str();
          if (f.resume) out["resume"] = *f.resume;
        } else if constexpr (std::is_same_v<T, Challenge>) {
          out["nonce"] = base64url_encode(f.nonce);
          out["relay_id"] = f.relay_id;
        } else if constexpr (std::is_same_v<T, Auth>) {
          out["signature"] = base64url_encode(f.signature);
        } else if constexpr (std::is_same_v<T, Welcome>) {
          out["v"] = f.v;
          out["session_token"] = f.session_token;
          out["heartbeat_ms"] = f.heartbeat_ms;
          out["buffered"] = f.buffered;
        } else if constexpr (std::is_same_v<T, ErrorFrame>) {
          out["code"] = to_string(f.code);
          out["message"] = f.message;
        } else if constexpr (std::is_same_v<T, Queued>) {
          out["id"] = f.id.to_string();
        } else if constexpr (std::is_same_v<T, Undeliverable>) {
          if (f.id) {
            out["id"] = f.id->to_string();
          } else {
            out["id"] = nullptr;
          }
          out["code"] = to_string(f.code);
          if (f.retry_after_ms) out["retry_after_ms"] = *f.retry_after_ms;
        } else if constexpr (std::is_same_v<T, Ack>) {
          bj::array ids;
          ids.reserve(f.ids.size());
          for (const Uuid& id : f.ids) ids.emplace_back(id.to_string());
          out["ids"] = std::move(ids);
        }
      },
      frame);
  return json::serialize_jcs(out);
}

Result<FrameKind> classify_frame(std::string_view text) { return TopLevelScanner(text).run(); }

Result<Hello> parse_hello(std::string_view text, std::size_t max_bytes) {
  auto frame = read_frame_object(text, max_bytes);
  if (!frame) return std::move(frame).error();
  if (frame->type_index != index_of<Hello>()) {
    return fail(Errc::bad_request, "expected a hello frame, got " + std::string(kFrameTypes[frame->type_index]));
  }
  return hello_from(frame->value.get_object());
}

Result<ControlFrame> parse_control_frame(std::string_view text, std::size_t max_bytes) {
  return parse_for(text, max_bytes, Receiver::either);
}

Result<ControlFrame> parse_client_frame(std::string_view text, std::size_t max_bytes) {
  return parse_for(text, max_bytes, Receiver::relay);
}

Result<ControlFrame> parse_relay_frame(std::string_view text, std::size_t max_bytes) {
  return parse_for(text, max_bytes, Receiver::client);
}

Bytes auth_signing_message(ByteView nonce, std::string_view relay_id) {
  Bytes message;
  message.reserve(nonce.size() + relay_id.size());
  message.insert(message.end(), nonce.begin(), nonce.end());
  const ByteView relay_bytes = as_bytes(relay_id);
  message.insert(message.end(), relay_bytes.begin(), relay_bytes.end());
  return message;
}

Auth make_auth(const KeyPair& key, const Challenge& challenge) {
  return Auth{key.sign(Purpose::auth, auth_signing_message(challenge.nonce, challenge.relay_id))};
}

Status verify_auth(const AgentId& agent, const Challenge& challenge, const Auth& auth) {
  const auto verdict = verify_signature(agent, Purpose::auth,
                                        auth_signing_message(challenge.nonce, challenge.relay_id), auth.signature);
  if (!verdict) {
    return fail(Errc::auth_failed, "auth: the signature does not verify for this agent, nonce and relay_id");
  }
  return {};
}

std::optional<std::string> normalize_relay_url(std::string_view url) {
  for (const char c : url) {
    if (!is_printable_ascii(c)) return std::nullopt;
  }
  // RFC 6455 §3: WebSocket URIs have no fragment.
  if (url.find('#') != std::string_view::npos) return std::nullopt;

  const std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::nullopt;
  const std::string scheme = lower_ascii(url.substr(0, scheme_end));
  if (scheme != "ws" && scheme != "wss") return std::nullopt;

  const std::string_view rest = url.substr(scheme_end + 3);
  const std::size_t authority_end = rest.find_first_of("/?");
  const std::string_view authority = rest.substr(0, authority_end);
  // Everything after the authority stays byte for byte; "empty path = /".
  std::string_view tail = authority_end == std::string_view::npos ? std::string_view() : rest.substr(authority_end);

  // Credentials have no place in a relay URL, and "user@host" invites look-alike hosts.
  if (authority.find('@') != std::string_view::npos) return std::nullopt;

  std::string_view host;
  std::string_view port;
  bool has_port = false;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos || close == 1) return std::nullopt;
    host = authority.substr(0, close + 1);
    for (const char c : host.substr(1, host.size() - 2)) {
      if (!is_ip_literal_char(c)) return std::nullopt;
    }
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return std::nullopt;
      has_port = true;
      port = after.substr(1);
    }
  } else {
    const std::size_t colon = authority.find(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      has_port = true;
      port = authority.substr(colon + 1);
    }
    if (host.empty()) return std::nullopt;
    for (const char c : host) {
      if (!is_reg_name_char(c)) return std::nullopt;
    }
  }
  if (has_port && !is_canonical_port(port)) return std::nullopt;

  std::string normal_host = lower_ascii(host);
  // §6: the three loopback names are one relay; no other address spelling is folded.
  if (normal_host == "localhost" || normal_host == "[::1]") normal_host = "127.0.0.1";
  const bool default_port = (scheme == "ws" && port == "80") || (scheme == "wss" && port == "443");

  std::string out = scheme;
  out += "://";
  out += normal_host;
  if (has_port && !default_port) {
    out += ':';
    out += port;
  }
  if (tail.empty() || tail.front() == '?') out += '/';
  out += tail;
  return out;
}

bool relay_ids_match(std::string_view dialled, std::string_view relay_id) {
  const auto a = normalize_relay_url(dialled);
  const auto b = normalize_relay_url(relay_id);
  return a && b && *a == *b;
}

}  // namespace agent_mesh
