#include "agent_mesh/error.hpp"

#include <array>

#include "agent_mesh/json.hpp"

namespace agent_mesh {
namespace {

struct ErrcInfo {
  std::string_view name;
  int http_status;
};

// Indexed by Errc. HTTP statuses follow registry.md: 400 bad input, 401 credentials, 403 not
// yours, 404, 409, 413, 429; errors that mean "the mesh could not do it" map to 5xx.
constexpr std::array<ErrcInfo, kErrcCount> kInfo{{
    {"acl_denied", 403},
    {"unknown_capability", 404},
    {"timeout", 504},
    {"unreachable", 502},
    {"rate_limited", 429},
    {"revoked", 403},
    {"agent_error", 502},
    {"bad_request", 400},
    {"too_large", 413},
    {"cancelled", 499},
    {"no_session", 409},
    {"expired", 410},
    {"internal", 500},
    {"auth_failed", 401},
    {"auth_timeout", 408},
    {"unsupported_version", 400},
    {"slow_consumer", 503},
    {"buffer_full", 507},
    {"bad_envelope", 400},
    {"unauthorized", 401},
    {"forbidden", 403},
    {"not_found", 404},
    {"conflict", 409},
    {"authorization_pending", 400},
    {"slow_down", 400},
    {"expired_token", 400},
    {"access_denied", 400},
}};

}  // namespace

std::string_view to_string(Errc code) noexcept {
  return kInfo[static_cast<std::size_t>(code)].name;
}

std::optional<Errc> errc_from_string(std::string_view text) noexcept {
  for (int i = 0; i < kErrcCount; ++i) {
    if (kInfo[static_cast<std::size_t>(i)].name == text) return static_cast<Errc>(i);
  }
  return std::nullopt;
}

int http_status(Errc code) noexcept { return kInfo[static_cast<std::size_t>(code)].http_status; }

std::optional<std::uint16_t> close_code_for(Errc code) noexcept {
  switch (code) {
    case Errc::bad_request: return close_code::bad_request;
    case Errc::auth_failed:
    case Errc::auth_timeout: return close_code::auth_failed;
    case Errc::unsupported_version: return close_code::unsupported_version;
    case Errc::revoked: return close_code::revoked;
    case Errc::rate_limited: return close_code::rate_limited;
    case Errc::slow_consumer: return close_code::slow_consumer;
    case Errc::too_large: return close_code::too_big;
    default: return std::nullopt;
  }
}

bool is_undeliverable_code(Errc code) noexcept {
  switch (code) {
    case Errc::rate_limited:
    case Errc::buffer_full:
    case Errc::revoked:
    case Errc::bad_envelope:
    case Errc::expired:
    case Errc::unreachable: return true;
    default: return false;
  }
}

std::string Error::describe() const {
  std::string out(to_string(code));
  out += ": ";
  out += message;
  return out;
}

std::string Error::to_http_json() const {
  boost::json::object inner;
  inner["code"] = to_string(code);
  inner["message"] = message;
  boost::json::object outer;
  outer["error"] = std::move(inner);
  return json::serialize_jcs(outer);
}

}  // namespace agent_mesh
