// One error model for every component (docs/design.md, "Error model").
//
// `Errc` holds every code the spec names: protocol §4 codes (shared by SDK, CLI, MCP and HTTP
// APIs), the relay's auth/close codes and `undeliverable` codes (protocol §6), the registry's HTTP
// codes (registry.md) and the OAuth device-flow codes (RFC 8628). The string of each code is the
// wire string and never changes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace agent_mesh {

enum class Errc : std::uint8_t {
  // protocol §4: end-to-end request errors
  acl_denied,
  unknown_capability,
  timeout,
  unreachable,
  rate_limited,
  revoked,
  agent_error,
  bad_request,
  too_large,
  cancelled,
  no_session,
  expired,
  internal,
  // protocol §6: relay connection and `undeliverable` codes
  auth_failed,
  auth_timeout,
  unsupported_version,
  slow_consumer,
  buffer_full,
  bad_envelope,
  // registry.md: HTTP API codes
  unauthorized,
  forbidden,
  not_found,
  conflict,
  // RFC 8628 device flow, in the RFC's own shape
  authorization_pending,
  slow_down,
  expired_token,
  access_denied,
};

inline constexpr int kErrcCount = static_cast<int>(Errc::access_denied) + 1;

// The stable wire string, e.g. "acl_denied".
[[nodiscard]] std::string_view to_string(Errc code) noexcept;
// Inverse of to_string; nullopt for an unknown string.
[[nodiscard]] std::optional<Errc> errc_from_string(std::string_view text) noexcept;
// The HTTP status an API answers with for this code (registry.md).
[[nodiscard]] int http_status(Errc code) noexcept;

// WebSocket close codes (protocol §6).
namespace close_code {
inline constexpr std::uint16_t normal = 1000;
inline constexpr std::uint16_t draining = 1001;
inline constexpr std::uint16_t too_big = 1009;
inline constexpr std::uint16_t bad_request = 4000;
inline constexpr std::uint16_t auth_failed = 4001;  // also auth_timeout
inline constexpr std::uint16_t unsupported_version = 4002;
inline constexpr std::uint16_t revoked = 4003;
inline constexpr std::uint16_t rate_limited = 4008;
inline constexpr std::uint16_t replaced = 4009;
inline constexpr std::uint16_t slow_consumer = 4010;
}  // namespace close_code

// The close code a relay uses when it ends a connection for this error, if any.
[[nodiscard]] std::optional<std::uint16_t> close_code_for(Errc code) noexcept;
// True for the codes a relay may put in an `undeliverable` frame (protocol §6).
[[nodiscard]] bool is_undeliverable_code(Errc code) noexcept;

// An error: a code from the list above and a message for people that names the problem.
// Messages never contain secrets.
struct Error {
  Errc code = Errc::internal;
  std::string message;

  // "bad_request: signature must be 64 bytes"
  [[nodiscard]] std::string describe() const;
  // {"error":{"code":"...","message":"..."}} (registry.md)
  [[nodiscard]] std::string to_http_json() const;
  friend bool operator==(const Error&, const Error&) = default;
};

}  // namespace agent_mesh
