#include "registry/device_flow.hpp"

#include <sodium.h>

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <cmath>
#include <utility>

#include "agent_mesh/json.hpp"

namespace agent_mesh::registry {

namespace {

constexpr std::string_view kDeviceGrant = "urn:ietf:params:oauth:grant-type:device_code";
// OAuth answers and GitHub's /user are a few KiB; anything much larger is not the protocol.
constexpr std::size_t kMaxProviderResponseBytes = 64 * 1024;
// A device code living longer than a day, or an interval longer than an hour, is not a value a
// provider means; refusing it keeps the millisecond arithmetic far from overflow.
constexpr double kMaxExpiresInS = 86400;
constexpr double kMaxIntervalS = 3600;
constexpr std::chrono::milliseconds kDefaultInterval{5000};  // RFC 8628 §3.2
// GitHub logins are at most 39 characters; the bound only keeps a broken provider's answer small.
constexpr std::size_t kMaxLoginBytes = 255;

Error oauth_error(Errc code, std::string text) { return fail(code, "oauth: " + std::move(text)); }

void wipe(std::string& secret) {
  if (!secret.empty()) sodium_memzero(secret.data(), secret.size());
  secret.clear();
}

// A provider's `error` code is named in messages only when it looks like one (RFC 6749 §5.2:
// %x20-21 / %x23-5B / %x5D-7E; in practice lowercase and '_'), clipped.
std::string printable_code(std::string_view code) {
  if (code.empty() || code.size() > 64) return "(unprintable)";
  for (const char c : code) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '-' || c == '.';
    if (!ok) return "(unprintable)";
  }
  return std::string(code);
}

// Errors from the transport keep their code (unreachable, timeout, too_large ...) and say which
// call failed.
Error transport_error(std::string_view call, const Error& error) {
  return Error{error.code, "oauth: " + std::string(call) + ": " + error.message};
}

// The provider's JSON answer as an object. A body that is no JSON object is judged by the status:
// 5xx means the provider is down (retry), anything else that it is not speaking the protocol.
Result<boost::json::object> answer_object(std::string_view call, const net::HttpResponse& response) {
  json::ParseOptions options;
  options.max_bytes = kMaxProviderResponseBytes;
  auto parsed = json::parse_ijson(response.body, options);
  if (parsed && parsed->is_object()) return std::move(parsed->as_object());
  if (response.status >= 500)
    return oauth_error(Errc::unreachable, std::string(call) + ": the provider answered HTTP " + std::to_string(response.status));
  if (response.status == 429)
    return oauth_error(Errc::rate_limited, std::string(call) + ": the provider answered HTTP 429 (rate limited)");
  return oauth_error(Errc::internal, std::string(call) + ": the provider's answer (HTTP " + std::to_string(response.status) +
                                         ") is not a JSON object");
}

const boost::json::string* string_member(const boost::json::object& object, std::string_view name) {
  const auto* value = object.if_contains(name);
  return value != nullptr ? value->if_string() : nullptr;
}

// Seconds as a JSON number (integer or fraction) → milliseconds; nullopt when absent, an error
// when present but not a number in [0, max_s].
Result<std::optional<std::chrono::milliseconds>> seconds_member(std::string_view call, const boost::json::object& object,
                                                                 std::string_view name, double max_s) {
  const auto* value = object.if_contains(name);
  if (value == nullptr) return std::optional<std::chrono::milliseconds>{};
  double seconds = 0;
  if (value->is_int64()) seconds = static_cast<double>(value->as_int64());
  else if (value->is_double()) seconds = value->as_double();
  else return oauth_error(Errc::internal, std::string(call) + ": `" + std::string(name) + "` is not a number");
  if (!std::isfinite(seconds) || seconds < 0 || seconds > max_s)
    return oauth_error(Errc::internal, std::string(call) + ": `" + std::string(name) + "` is out of range");
  return std::optional<std::chrono::milliseconds>{std::chrono::milliseconds(std::llround(seconds * 1000))};
}

// An `error` answer that is not one of RFC 8628's four codes.
Error refused(std::string_view call, std::string_view code) {
  const std::string name = printable_code(code);
  if (code == "incorrect_device_code" || code == "bad_verification_code" || code == "invalid_grant") {
    return oauth_error(Errc::bad_request, std::string(call) + ": the provider does not know this device code (" + name +
                                              "); start a new login");
  }
  if (code == "incorrect_client_credentials" || code == "invalid_client" || code == "unauthorized_client" ||
      code == "device_flow_disabled" || code == "unsupported_grant_type") {
    return oauth_error(Errc::internal, std::string(call) + ": the provider refused the registry's OAuth app (" + name +
                                           "); check --oauth-client-id, --oauth-client-secret-file and that the app "
                                           "has the device flow enabled");
  }
  if (code == "slow_down" || code == "rate_limited")
    return oauth_error(Errc::rate_limited, std::string(call) + ": the provider asks to slow down (" + name + ")");
  return oauth_error(Errc::internal, std::string(call) + ": the provider answered error " + name);
}

}  // namespace

DeviceFlowProvider::DeviceFlowProvider(DeviceFlowConfig config, HttpTransport transport)
    : config_(std::move(config)), transport_(std::move(transport)) {}

net::HttpRequest DeviceFlowProvider::post_form(const std::string& url, const std::string& body) const {
  net::HttpRequest request;
  request.method = "POST";
  request.url = url;
  request.headers = {{"Accept", "application/json"},
                     {"Content-Type", "application/x-www-form-urlencoded"},
                     {"User-Agent", config_.user_agent}};
  request.body = body;
  request.timeout = config_.timeout;
  request.max_response_body_bytes = kMaxProviderResponseBytes;
  request.ca_file = config_.ca_file;
  return request;
}

Result<DeviceAuthorization> DeviceFlowProvider::start() const {
  constexpr std::string_view call = "device code request";
  std::vector<std::pair<std::string, std::string>> fields{{"client_id", config_.client_id}};
  if (!config_.scope.empty()) fields.emplace_back("scope", config_.scope);
  auto response = transport_(post_form(config_.device_url, net::form_urlencode(fields)));
  if (!response) return transport_error(call, response.error());
  auto object = answer_object(call, *response);
  if (!object) return std::move(object).error();
  if (const auto* error = string_member(*object, "error")) return refused(call, *error);

  DeviceAuthorization out;
  const auto* device_code = string_member(*object, "device_code");
  const auto* user_code = string_member(*object, "user_code");
  const auto* verification_uri = string_member(*object, "verification_uri");
  if (verification_uri == nullptr) verification_uri = string_member(*object, "verification_url");  // Google's spelling
  if (device_code == nullptr || device_code->empty() || user_code == nullptr || user_code->empty() ||
      verification_uri == nullptr || verification_uri->empty()) {
    return oauth_error(Errc::internal, std::string(call) +
                                           ": the answer lacks device_code, user_code or verification_uri");
  }
  auto expires_in = seconds_member(call, *object, "expires_in", kMaxExpiresInS);
  if (!expires_in) return std::move(expires_in).error();
  if (!*expires_in) return oauth_error(Errc::internal, std::string(call) + ": the answer lacks expires_in");
  auto interval = seconds_member(call, *object, "interval", kMaxIntervalS);
  if (!interval) return std::move(interval).error();
  out.device_code = std::string(*device_code);
  out.user_code = std::string(*user_code);
  out.verification_uri = std::string(*verification_uri);
  out.expires_in = **expires_in;
  out.interval = interval->value_or(kDefaultInterval);
  return out;
}

Result<DevicePoll> DeviceFlowProvider::poll(std::string_view device_code) const {
  constexpr std::string_view call = "token request";
  if (device_code.empty()) return oauth_error(Errc::bad_request, "device_code must not be empty");
  std::string body = net::form_urlencode({{"client_id", config_.client_id},
                                          {"client_secret", config_.client_secret},
                                          {"device_code", std::string(device_code)},
                                          {"grant_type", std::string(kDeviceGrant)}});
  net::HttpRequest request = post_form(config_.token_url, body);
  wipe(body);
  auto response = transport_(request);
  wipe(request.body);
  if (!response) return transport_error(call, response.error());
  auto object = answer_object(call, *response);
  wipe(response->body);  // it may hold the access token
  if (!object) return std::move(object).error();

  if (const auto* error = string_member(*object, "error")) {
    DevicePoll out;
    if (*error == "authorization_pending") {
      out.code = Errc::authorization_pending;
    } else if (*error == "slow_down") {
      out.code = Errc::slow_down;
      auto interval = seconds_member(call, *object, "interval", kMaxIntervalS);
      if (!interval) return std::move(interval).error();
      out.interval = *interval;
    } else if (*error == "expired_token" || *error == "token_expired") {
      out.code = Errc::expired_token;
    } else if (*error == "access_denied") {
      out.code = Errc::access_denied;
    } else {
      return refused(call, *error);
    }
    return out;
  }
  auto* token = object->if_contains("access_token");
  if (token == nullptr || !token->is_string() || token->as_string().empty())
    return oauth_error(Errc::internal, std::string(call) + ": the answer has neither access_token nor error");
  std::string access_token(token->as_string());
  sodium_memzero(token->as_string().data(), token->as_string().size());
  auto identity = identify(access_token);
  wipe(access_token);
  if (!identity) return std::move(identity).error();
  DevicePoll out;
  out.identity = std::move(*identity);
  return out;
}

Result<ProviderIdentity> DeviceFlowProvider::identify(std::string& access_token) const {
  constexpr std::string_view call = "user request";
  net::HttpRequest request;
  request.method = "GET";
  request.url = config_.user_url;
  request.headers = {{"Accept", "application/vnd.github+json"},
                     {"X-GitHub-Api-Version", "2022-11-28"},
                     {"User-Agent", config_.user_agent},
                     {"Authorization", "Bearer " + access_token}};
  request.timeout = config_.timeout;
  request.max_response_body_bytes = kMaxProviderResponseBytes;
  request.ca_file = config_.ca_file;
  auto response = transport_(request);
  wipe(request.headers.back().value);
  if (!response) return transport_error(call, response.error());
  if (response->status == 401 || response->status == 403) {
    return oauth_error(Errc::internal, std::string(call) + ": the provider refused the access token it just issued (HTTP " +
                                           std::to_string(response->status) + "); check --oauth-user-url");
  }
  auto object = answer_object(call, *response);
  if (!object) return std::move(object).error();
  if (response->status != 200)
    return oauth_error(Errc::internal, std::string(call) + ": the provider answered HTTP " + std::to_string(response->status));
  const auto* id = object->if_contains("id");
  const auto* login = string_member(*object, "login");
  if (id == nullptr || !id->is_int64() || id->as_int64() <= 0)
    return oauth_error(Errc::internal, std::string(call) + ": the answer lacks a positive integer id");
  if (login == nullptr || login->empty() || login->size() > kMaxLoginBytes)
    return oauth_error(Errc::internal, std::string(call) + ": the answer lacks a login of 1.." +
                                           std::to_string(kMaxLoginBytes) + " bytes");
  for (const char c : *login) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F)
      return oauth_error(Errc::internal, std::string(call) + ": the login contains control characters");
  }
  return ProviderIdentity{"github:" + std::to_string(id->as_int64()), std::string(*login)};
}

}  // namespace agent_mesh::registry
