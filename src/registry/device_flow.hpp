// The registry's side of the OAuth 2.0 device authorization grant (RFC 8628) against GitHub
// (registry.md "Principals"): the registry, holding the client secret, asks the provider for a
// device code, polls its token endpoint for the user's decision, and turns an access token into a
// provider identity with `GET /user`. The access token never leaves this class: it is used for
// that one call and wiped.
//
// Wire shapes (GitHub's, docs.github.com "Authorizing OAuth apps", "Device flow"):
//   POST device_url  client_id[, scope]           → {device_code, user_code, verification_uri,
//                                                     expires_in, interval}
//   POST token_url   client_id, client_secret, device_code,
//                    grant_type=urn:ietf:params:oauth:grant-type:device_code
//                                                  → {access_token, token_type, scope}
//                                                  | {error[, error_description, interval]}
//   GET  user_url    Authorization: Bearer <token> → {id, login, ...}
// Requests are form-encoded with `Accept: application/json`. GitHub answers device-flow errors
// with HTTP 200 and an `error` member; RFC 8628 says 400; both are understood.
//
// Blocking (one HTTP exchange per call, or two for an approved poll); call it from a worker
// thread. Thread-safe: the provider holds only its configuration.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "agent_mesh/result.hpp"
#include "net/http_client.hpp"

namespace agent_mesh::registry {

struct DeviceFlowConfig {
  std::string device_url = "https://github.com/login/device/code";       // --oauth-device-url
  std::string token_url = "https://github.com/login/oauth/access_token"; // --oauth-token-url
  std::string user_url = "https://api.github.com/user";                  // --oauth-user-url
  std::string client_id;                                                  // --oauth-client-id
  std::string client_secret;  // --oauth-client-secret-file's content; sent to token_url only
  // Space-separated scopes; empty (the default) asks for none, which is enough for `GET /user`'s
  // public profile (id, login): the registry needs nothing more from the account.
  std::string scope;
  std::chrono::milliseconds timeout{10'000};  // per HTTP exchange
  std::string ca_file;                        // extra trusted CAs (tests)
  // GitHub's API refuses requests without a User-Agent.
  std::string user_agent = "agent-mesh-registry";
};

// What `start()` returns: show user_code and verification_uri to the person; poll with device_code.
struct DeviceAuthorization {
  std::string device_code;  // a bearer secret for this login: pass to poll(), never log
  std::string user_code;
  std::string verification_uri;
  // The provider's wire values are seconds (GitHub: whole seconds; a stand-in may send fractions),
  // kept here in milliseconds so sub-second test values survive.
  std::chrono::milliseconds expires_in{0};
  std::chrono::milliseconds interval{5000};  // RFC 8628 §3.2: 5 s when the provider gives none
};

// Who logged in, at the provider.
struct ProviderIdentity {
  std::string provider_subject;  // "github:<numeric id>": stable across login renames
  std::string login;             // the current GitHub login, for display
};

// One poll's answer: the user approved (`identity`), or one of RFC 8628 §3.5's four codes.
struct DevicePoll {
  std::optional<ProviderIdentity> identity;
  // Without identity: Errc::authorization_pending (poll again after the interval), slow_down
  // (poll again after `interval`), expired_token or access_denied (the login is over; start again).
  Errc code = Errc::authorization_pending;
  // With slow_down: the provider's new minimum interval (GitHub: the previous one + 5 s). nullopt
  // when the provider did not say; then add 5 s to the interval in use (RFC 8628 §3.5).
  std::optional<std::chrono::milliseconds> interval;

  [[nodiscard]] bool approved() const noexcept { return identity.has_value(); }
};

// The HTTP exchange, injectable for tests; the default is net::http_request.
using HttpTransport = std::function<Result<net::HttpResponse>(const net::HttpRequest&)>;

class DeviceFlowProvider {
 public:
  explicit DeviceFlowProvider(DeviceFlowConfig config, HttpTransport transport = net::http_request);

  // Asks the provider for a device code. Errors: as for poll() (no RFC 8628 codes here).
  [[nodiscard]] Result<DeviceAuthorization> start() const;

  // Polls the token endpoint once for `device_code`; when the user approved, also reads the
  // identity behind the new token. Pacing is the caller's: wait the interval between polls.
  // Errors (all messages free of the client secret, device code and access token):
  //   Errc::unreachable / timeout  the provider could not be reached in time (from http_request)
  //   Errc::bad_request            the provider does not know this device code (incorrect_device_code),
  //                                or an empty device code
  //   Errc::internal               the provider refused the registry's own configuration
  //                                (incorrect_client_credentials, device_flow_disabled,
  //                                unsupported_grant_type, ...: check the --oauth-* flags), or it
  //                                answered something that is not the protocol
  [[nodiscard]] Result<DevicePoll> poll(std::string_view device_code) const;

  [[nodiscard]] const DeviceFlowConfig& config() const noexcept { return config_; }

 private:
  [[nodiscard]] Result<ProviderIdentity> identify(std::string& access_token) const;
  [[nodiscard]] net::HttpRequest post_form(const std::string& url, const std::string& body) const;

  DeviceFlowConfig config_;
  HttpTransport transport_;
};

}  // namespace agent_mesh::registry
