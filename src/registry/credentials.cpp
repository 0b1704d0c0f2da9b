#include "registry/credentials.hpp"

#include <sodium.h>

#include <algorithm>
#include <array>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/limits.hpp"
#include "core/json_fields.hpp"
#include "core/sodium_init.hpp"

namespace agent_mesh::registry {
namespace {

constexpr std::string_view kMeshAgentScheme = "MeshAgent ";
constexpr std::string_view kBearerScheme = "Bearer ";
constexpr std::size_t kAgentIdChars = 43;
constexpr std::size_t kSignatureChars = base64url_encoded_size(std::tuple_size_v<Signature>);
constexpr std::size_t kSecretBytes = 32;
constexpr std::size_t kHashHexChars = 2 * crypto_hash_sha256_BYTES;
static_assert(kSignatureChars == 86);
// registry.md's "remembered for 4 min" is the whole window a signature can pass the ±2 min check in.
static_assert(kAgentSignatureMemoryMs == 2 * kAgentSignatureSkewMs);
static_assert(base64url_encoded_size(kSecretBytes) == 43);

Error unauthorized(std::string_view what) {
  return fail(Errc::unauthorized, "MeshAgent authorization: " + std::string(what));
}

std::int64_t saturating_add(std::int64_t a, std::int64_t b) noexcept {
  std::int64_t out = 0;
  if (__builtin_add_overflow(a, b, &out)) return b > 0 ? INT64_MAX : INT64_MIN;
  return out;
}

std::int64_t saturating_sub(std::int64_t a, std::int64_t b) noexcept {
  std::int64_t out = 0;
  if (__builtin_sub_overflow(a, b, &out)) return b > 0 ? INT64_MIN : INT64_MAX;
  return out;
}

// Canonical decimal: "0" or [1-9][0-9]*, at most 2^53 − 1 (what a JavaScript client can write).
Result<std::int64_t> parse_ts(std::string_view text) {
  if (text.empty()) return unauthorized("ts must be decimal milliseconds, got nothing");
  for (const char c : text) {
    if (c < '0' || c > '9') {
      return unauthorized("ts must be unsigned decimal digits (no sign, no spaces), got \"" + detail::clip(text) + "\"");
    }
  }
  if (text.size() > 1 && text[0] == '0') return unauthorized("ts must not have leading zeros");
  if (text.size() > 16) return unauthorized("ts is larger than 2^53-1");
  std::int64_t value = 0;
  for (const char c : text) value = value * 10 + (c - '0');
  if (value > limits::max_safe_integer) return unauthorized("ts is larger than 2^53-1");
  return value;
}

// What an HTTP/1.1 parser hands over: a method is a token, a request-target is visible ASCII,
// a Host field value has no control characters. Anything else means the caller is not passing
// the request as received, and the signed message could become ambiguous.
bool is_tchar(char c) noexcept {
  if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

Status check_request_parts(std::string_view method, std::string_view target, std::string_view host) {
  if (method.empty() || !std::all_of(method.begin(), method.end(), is_tchar)) {
    return fail(Errc::bad_request, "agent-signed request: method must be an HTTP token");
  }
  const auto visible = [](char c) { return c > 0x20 && c < 0x7f; };
  if (target.empty() || !std::all_of(target.begin(), target.end(), visible)) {
    return fail(Errc::bad_request, "agent-signed request: request-target must be visible ASCII without spaces");
  }
  const auto field_char = [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u == '\t' || (u >= 0x20 && u != 0x7f);
  };
  if (!std::all_of(host.begin(), host.end(), field_char)) {
    return fail(Errc::bad_request, "agent-signed request: Host header has control characters");
  }
  return {};
}

bool is_token68_char(char c) noexcept {
  if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) return true;
  return c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

using Digest = std::array<std::uint8_t, crypto_hash_sha256_BYTES>;

Digest sha256(std::string_view text) noexcept {
  detail::ensure_sodium();
  Digest digest{};
  crypto_hash_sha256(digest.data(), detail::data_or_empty(as_bytes(text)), text.size());
  return digest;
}

}  // namespace

// ---- Agent signatures ----

Result<AgentAuthorization> parse_agent_authorization(std::string_view header) {
  if (!header.starts_with(kMeshAgentScheme)) {
    return unauthorized("expected \"MeshAgent agent_id=<id>,ts=<ms>,sig=<b64url>\" (scheme MeshAgent, one space)");
  }
  std::string_view rest = header.substr(kMeshAgentScheme.size());
  if (rest.find_first_of(" \t") != std::string_view::npos) {
    return unauthorized("spaces are not allowed between or inside the fields");
  }

  constexpr std::string_view kAgentIdField = "agent_id=";
  constexpr std::string_view kTsField = ",ts=";
  constexpr std::string_view kSigField = ",sig=";
  const auto order_error = [] {
    return unauthorized("fields must be exactly agent_id, ts, sig in this order, separated by commas");
  };

  if (!rest.starts_with(kAgentIdField)) return order_error();
  rest.remove_prefix(kAgentIdField.size());
  const std::size_t id_end = rest.find(',');
  if (id_end == std::string_view::npos) return order_error();
  const std::string_view id_text = rest.substr(0, id_end);
  rest.remove_prefix(id_end);

  if (!rest.starts_with(kTsField)) return order_error();
  rest.remove_prefix(kTsField.size());
  const std::size_t ts_end = rest.find(',');
  if (ts_end == std::string_view::npos) return order_error();
  const std::string_view ts_text = rest.substr(0, ts_end);
  rest.remove_prefix(ts_end);

  if (!rest.starts_with(kSigField)) return order_error();
  rest.remove_prefix(kSigField.size());
  const std::string_view sig_text = rest;
  if (sig_text.find(',') != std::string_view::npos) {
    return unauthorized("unexpected extra field after sig");
  }

  AgentAuthorization out;
  if (id_text.size() != kAgentIdChars) {
    return unauthorized("agent_id must be 43 base64url characters, got " + std::to_string(id_text.size()));
  }
  auto id = AgentId::parse(id_text);
  if (!id.ok()) return unauthorized("agent_id: " + id.error().message);
  out.agent_id = std::move(id).value();

  auto ts = parse_ts(ts_text);
  if (!ts.ok()) return std::move(ts).error();
  out.ts = ts.value();

  if (sig_text.size() != kSignatureChars) {
    return unauthorized("sig must be base64url of 64 bytes (86 characters), got " + std::to_string(sig_text.size()) +
                        " characters");
  }
  if (const Status decoded = base64url_decode_exact(sig_text, out.sig); !decoded.ok()) {
    return unauthorized("sig: " + decoded.error().message);
  }
  return out;
}

void AgentRequestVerifier::prune_locked(std::int64_t now_ms) {
  high_water_ms_ = std::max(high_water_ms_, now_ms);
  // A signature with forget_at = ts + skew passes the clock check while ts ≥ high_water − skew,
  // i.e. while forget_at ≥ high_water.
  while (!by_expiry_.empty() && by_expiry_.begin()->first < high_water_ms_) {
    const auto found = remembered_.find(by_expiry_.begin()->second);
    if (found != remembered_.end()) {
      const auto agent = per_agent_.find(found->second.agent);
      if (agent != per_agent_.end() && --agent->second == 0) per_agent_.erase(agent);
      remembered_.erase(found);
    }
    by_expiry_.erase(by_expiry_.begin());
  }
}

Result<AgentId> AgentRequestVerifier::verify(std::string_view method, std::string_view request_target,
                                             std::string_view host, std::string_view authorization,
                                             std::int64_t now_ms) {
  auto parsed = parse_agent_authorization(authorization);
  if (!parsed.ok()) return std::move(parsed).error();
  AgentAuthorization auth = std::move(parsed).value();
  AGENT_MESH_TRY(check_request_parts(method, request_target, host));

  {
    const std::lock_guard lock(mutex_);
    prune_locked(now_ms);
    const std::int64_t oldest = saturating_sub(std::max(now_ms, high_water_ms_), options_.skew_ms);
    if (auth.ts < oldest) {
      return unauthorized("ts is more than 2 min in the past (sign each request when sending it; check the clock)");
    }
    if (auth.ts > saturating_add(now_ms, options_.skew_ms)) {
      return unauthorized("ts is more than 2 min in the future (check the clock)");
    }
    // Cheap refusal of a replay before the costly verification.
    if (remembered_.contains(auth.sig)) return unauthorized("signature already used");
  }

  const std::string message = http_signing_message(method, request_target, host, auth.ts);
  if (!verify_signature(auth.agent_id, Purpose::http, as_bytes(message), auth.sig).ok()) {
    return unauthorized("signature does not verify for this agent, method, target, Host and ts");
  }

  const std::lock_guard lock(mutex_);
  prune_locked(now_ms);
  // Checked again: a concurrent request with the same signature may have got here first.
  if (remembered_.contains(auth.sig)) return unauthorized("signature already used");
  if (remembered_.size() >= options_.max_remembered) {
    return fail(Errc::rate_limited,
                "too many agent-signed requests in the last 4 minutes for the registry to remember; retry later");
  }
  std::size_t& count = per_agent_[auth.agent_id.public_key()];
  if (count >= options_.max_per_agent) {
    return fail(Errc::rate_limited, "too many signed requests from this agent in the last 4 minutes; retry later");
  }
  const std::int64_t forget_at = auth.ts + options_.skew_ms;
  remembered_.emplace(auth.sig, Entry{forget_at, auth.agent_id.public_key()});
  by_expiry_.emplace(forget_at, auth.sig);
  ++count;
  return std::move(auth.agent_id);
}

std::int64_t AgentRequestVerifier::retry_after_ms(std::int64_t now_ms) const {
  const std::lock_guard lock(mutex_);
  if (by_expiry_.empty()) return 0;
  // Forgotten once the high-water mark passes forget_at.
  const std::int64_t wait = saturating_sub(saturating_add(by_expiry_.begin()->first, 1), now_ms);
  return std::max<std::int64_t>(wait, 1);
}

std::size_t AgentRequestVerifier::remembered() const {
  const std::lock_guard lock(mutex_);
  return remembered_.size();
}

// ---- Secrets ----

std::string generate_secret() {
  detail::ensure_sodium();
  std::array<std::uint8_t, kSecretBytes> bytes{};
  randombytes_buf(bytes.data(), bytes.size());
  std::string text = base64url_encode(bytes);
  detail::wipe(bytes);
  return text;
}

std::string hash_secret(std::string_view secret) {
  Digest digest = sha256(secret);
  std::string hex = hex_encode(digest);
  detail::wipe(digest);
  return hex;
}

Result<std::string_view> parse_bearer(std::string_view header) {
  if (!header.starts_with(kBearerScheme)) {
    return fail(Errc::unauthorized, "Bearer authorization: expected \"Bearer <token>\" (scheme Bearer, one space)");
  }
  const std::string_view token = header.substr(kBearerScheme.size());
  if (token.empty()) return fail(Errc::unauthorized, "Bearer authorization: the token is empty");
  if (token.size() > kMaxBearerTokenBytes) {
    return fail(Errc::unauthorized, "Bearer authorization: the token is longer than " +
                                        std::to_string(kMaxBearerTokenBytes) + " bytes");
  }
  std::size_t end = 0;
  while (end < token.size() && is_token68_char(token[end])) ++end;
  const std::size_t body = end;
  while (end < token.size() && token[end] == '=') ++end;
  if (body == 0 || end != token.size()) {
    return fail(Errc::unauthorized,
                "Bearer authorization: the token must be one token68 (letters, digits, -._~+/, trailing =; no spaces)");
  }
  return token;
}

bool secret_matches_hash(std::string_view presented, std::string_view stored_hash_hex) noexcept {
  if (stored_hash_hex.size() != kHashHexChars) return false;
  Digest digest = sha256(presented);
  std::array<char, kHashHexChars> hex{};
  constexpr std::string_view kHex = "0123456789abcdef";
  for (std::size_t i = 0; i < digest.size(); ++i) {
    hex[2 * i] = kHex[digest[i] >> 4];
    hex[2 * i + 1] = kHex[digest[i] & 0x0f];
  }
  const bool equal = sodium_memcmp(hex.data(), stored_hash_hex.data(), hex.size()) == 0;
  detail::wipe(digest);
  detail::wipe(hex);
  return equal;
}

}  // namespace agent_mesh::registry
