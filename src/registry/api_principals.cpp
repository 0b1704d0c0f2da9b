// Principals (registry.md "Principals"): the caller's user and groups, group membership, API
// tokens, setup keys, and login with the OAuth 2.0 device authorization grant (RFC 8628) against
// the provider configured with --oauth-* (GitHub or a stand-in).
//
// Decisions taken here (docs/protocol.md records them):
//   - Group scoping: a group the caller does not belong to is answered 404 ("no such group among
//     yours"), never 403, so IDs of other groups are not confirmed to exist. A member without the
//     owner/admin role gets 403 for management actions on a group they can see.
//   - The admin token counts as an owner of every group (role_in_group). It has no user: GET
//     /users/me, /tokens and POST /groups answer it 403. GET /groups lists every group for it, with
//     role "owner" and `personal` marking users' personal groups.
//   - Membership: only an owner may add an owner or remove another owner; a member may always
//     leave a group (DELETE of their own membership), except its last owner (409 from storage).
//   - A user belongs to at most kMaxGroupsPerUserListed groups (the bound of the unpaginated
//     membership list); creating or joining one more is 409.
//   - /oauth/token answers its errors only in RFC 6749 §5.2 shape {"error", "error_description"?}
//     (400 for the protocol's errors, invalid_request/invalid_grant/unsupported_grant_type
//     included; 503 temporarily_unavailable when the provider or the registry's workers are
//     unavailable; 500 server_error), with Cache-Control: no-store. Only "no provider configured"
//     (404, both /oauth endpoints) uses our own error format. Bodies may be form-encoded or JSON.
//   - Device logins: the client gets an opaque handle, never the provider's device_code. The first
//     poll is never early; a poll before the interval has passed (or while the previous poll is
//     still with the provider) answers slow_down and adds 5 s to the interval for good. A finished
//     login (approved, denied, expired) is forgotten: its handle then answers invalid_grant.
//   - First login: the user is found by provider subject; a new user takes the provider's login,
//     or `<login>-<provider account id>` when that login is taken, or `<login>-<8 random hex>`.
//     The login is not updated when it changes at the provider.
#include <algorithm>
#include <boost/json/object.hpp>
#include <charconv>
#include <climits>
#include <cstdio>
#include <utility>

#include "agent_mesh/encoding.hpp"
#include "core/json_fields.hpp"
#include "registry/api.hpp"

namespace agent_mesh::registry {

namespace {

// Names people choose (groups, tokens): enough for any label, small enough to show in a list.
constexpr std::size_t kMaxNameBytes = 128;
// Pending device logins held at once. Each costs ~200 bytes; 10,000 is far beyond the people who
// can be typing a user code at the same time on one registry, and bounds what anonymous callers
// can make it hold. Past it /oauth/device answers 429 until some expire or finish.
constexpr std::size_t kMaxPendingDeviceLogins = 10000;
// A provider may announce any lifetime; the registry holds a pending login at most this long.
constexpr std::int64_t kMaxDeviceLoginLifetimeMs = 60 * 60 * 1000;
// RFC 8628 §3.5: slow_down adds 5 seconds to the polling interval.
constexpr std::int64_t kSlowDownStepMs = 5000;
// next_poll_at_ms while a poll is with the provider: every other poll of this login is early.
constexpr std::int64_t kPollInFlight = INT64_MAX;
constexpr std::string_view kDeviceGrantType = "urn:ietf:params:oauth:grant-type:device_code";
// The token a device login creates (GET /tokens shows it by this name).
constexpr std::string_view kDeviceLoginTokenName = "device login";
// Provider logins we take as our login: GitHub's are [A-Za-z0-9-]{1,39}.
constexpr std::size_t kMaxProviderLoginBytes = 64;
// Form parameters accepted by the /oauth/* endpoints (they take at most three).
constexpr std::size_t kMaxOauthParams = 16;

const std::string kNotYourGroup = "no such group among yours";

// ---- small helpers ----

http::Response no_store(http::Response response) {
  response.set("Cache-Control", "no-store");
  return response;
}

Status check_name(std::string_view what, std::string_view name) {
  if (name.empty()) return fail(Errc::bad_request, std::string(what) + " must not be empty");
  if (name.size() > kMaxNameBytes) {
    return fail(Errc::bad_request, std::string(what) + " must be at most " + std::to_string(kMaxNameBytes) + " bytes");
  }
  for (const char c : name) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) return fail(Errc::bad_request, std::string(what) + " must not contain control characters");
  }
  return {};
}

Status check_uuid(std::string_view what, std::string_view text) {
  if (!Uuid::is_valid(text)) {
    return fail(Errc::bad_request, std::string(what) + " must be a UUID v4 (lower-case 8-4-4-4-12 text)");
  }
  return {};
}

// Users only: the admin token and agents have no user of their own.
Status require_user(const Principal& principal) {
  switch (principal.kind) {
    case Principal::Kind::user: return {};
    case Principal::Kind::admin: return fail(Errc::forbidden, "the admin token has no user: use a user's API token");
    case Principal::Kind::agent:
      return fail(Errc::forbidden, "an agent signature does not grant this; use a user's API token");
    case Principal::Kind::anonymous: break;
  }
  return fail(Errc::unauthorized, "credentials required: Authorization: Bearer <API token>");
}

// The caller's role in a group where it wants to manage something: the group must be one of the
// caller's (404 otherwise, so other groups are not confirmed to exist) and the caller an owner or
// admin of it (403 otherwise). The admin token is an owner everywhere.
Result<GroupRole> manager_role(RegistryService::Impl& api, const Principal& principal, std::string_view group_id,
                               std::string_view what) {
  auto role = role_in_group(api, principal, group_id);
  if (!role) {
    if (role.error().code == Errc::not_found) return fail(Errc::not_found, kNotYourGroup);
    return std::move(role).error();
  }
  if (!*role) return fail(Errc::not_found, kNotYourGroup);
  if (!is_group_admin(*role)) return fail(Errc::forbidden, "only a group owner or admin may " + std::string(what));
  return **role;
}

// A user's memberships are listed unpaginated up to kMaxGroupsPerUserListed; keep them within it.
Status check_group_room(RegistryService::Impl& api, std::string_view user_id, std::string_view who) {
  AGENT_MESH_TRY_ASSIGN(auto groups, api.storage->groups_of_user(user_id));
  if (static_cast<std::int64_t>(groups.size()) >= kMaxGroupsPerUserListed) {
    return fail(Errc::conflict, std::string(who) + " already belong" + (who == "you" ? "" : "s") + " to " +
                                    std::to_string(kMaxGroupsPerUserListed) + " groups, the most a user may");
  }
  return {};
}

// Offset cursors for lists the handler pages itself (GET /groups): base64url of "groups:<offset>".
std::string offset_cursor(std::size_t offset) {
  const std::string text = "groups:" + std::to_string(offset);
  return base64url_encode(as_bytes(text));
}

Result<std::size_t> cursor_offset(std::string_view cursor) {
  if (cursor.empty()) return std::size_t{0};
  const Error bad{Errc::bad_request, "cursor: not a cursor of this list (pass next_cursor back unchanged)"};
  auto bytes = base64url_decode(cursor);
  if (!bytes) return bad;
  std::string_view text = as_text(*bytes);
  constexpr std::string_view kPrefix = "groups:";
  if (!text.starts_with(kPrefix)) return bad;
  text.remove_prefix(kPrefix.size());
  std::size_t offset = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), offset);
  if (ec != std::errc{} || end != text.data() + text.size() || text.empty()) return bad;
  return offset;
}

// ---- JSON views ----

boost::json::object token_json(const ApiToken& token, std::int64_t now, std::string_view current_id) {
  boost::json::object out{{"id", token.id}, {"name", token.name}, {"created_at", rfc3339(token.created_at)}};
  if (token.expires_at) out["expires_at"] = rfc3339(*token.expires_at);
  out["expired"] = token.expires_at.has_value() && now >= *token.expires_at;
  out["current"] = token.id == current_id;
  return out;
}

boost::json::object setup_key_json(const SetupKey& key, std::int64_t now) {
  boost::json::object out{{"id", key.id},
                          {"group_id", key.group_id},
                          {"created_by", key.created_by},
                          {"uses", key.uses},
                          {"created_at", rfc3339(key.created_at)}};
  if (key.max_uses) out["max_uses"] = *key.max_uses;
  if (key.expires_at) out["expires_at"] = rfc3339(*key.expires_at);
  if (key.last_used_at) out["last_used_at"] = rfc3339(*key.last_used_at);
  const bool expired = key.expires_at.has_value() && now >= *key.expires_at;
  const bool used_up = key.max_uses.has_value() && key.uses >= *key.max_uses;
  out["usable"] = !expired && !used_up;
  return out;
}

// A duration as RFC 8628 seconds: an integer when whole (always, with GitHub), otherwise a
// fraction (a stand-in's sub-second test intervals survive).
boost::json::value seconds_value(std::int64_t ms) {
  if (ms % 1000 == 0) return ms / 1000;
  return static_cast<double>(ms) / 1000.0;
}

// ---- /oauth/* request parameters ----

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<std::string> form_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '+') {
      out += ' ';
    } else if (c == '%') {
      const int high = i + 1 < text.size() ? hex_digit(text[i + 1]) : -1;
      const int low = i + 2 < text.size() ? hex_digit(text[i + 2]) : -1;
      if (high < 0 || low < 0) return fail(Errc::bad_request, "bad percent-encoding in the form body");
      out += static_cast<char>(high * 16 + low);
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

using OauthParams = std::vector<std::pair<std::string, std::string>>;

std::string media_type(std::string_view content_type) {
  content_type = content_type.substr(0, content_type.find(';'));
  while (!content_type.empty() && (content_type.back() == ' ' || content_type.back() == '\t')) content_type.remove_suffix(1);
  while (!content_type.empty() && (content_type.front() == ' ' || content_type.front() == '\t')) content_type.remove_prefix(1);
  std::string out(content_type);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// The parameters of an /oauth/* request: an application/x-www-form-urlencoded body (what OAuth
// clients send, RFC 6749 App. B) or a JSON object of strings; an empty body has none. Each
// parameter at most once (RFC 6749 §3.2).
Result<OauthParams> oauth_params(const Call& call) {
  OauthParams params;
  const std::string& body = call.request.body;
  if (body.empty()) return params;
  const std::string type = media_type(call.request.field("Content-Type"));
  auto add = [&params](std::string name, std::string value) -> Status {
    for (const auto& [existing, unused] : params) {
      if (existing == name) return fail(Errc::bad_request, "parameter \"" + detail::clip(name) + "\" is given twice");
    }
    if (params.size() >= kMaxOauthParams) return fail(Errc::bad_request, "too many parameters");
    params.emplace_back(std::move(name), std::move(value));
    return {};
  };
  if (type == "application/x-www-form-urlencoded") {
    std::string_view rest = body;
    while (!rest.empty()) {
      const auto amp = rest.find('&');
      const std::string_view pair = rest.substr(0, amp);
      rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
      if (pair.empty()) continue;
      const auto eq = pair.find('=');
      AGENT_MESH_TRY_ASSIGN(auto name, form_decode(pair.substr(0, eq)));
      AGENT_MESH_TRY_ASSIGN(auto value, form_decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1)));
      AGENT_MESH_TRY(add(std::move(name), std::move(value)));
    }
    return params;
  }
  if (type == "application/json" || type.empty()) {
    AGENT_MESH_TRY_ASSIGN(auto object, body_object(call));
    for (const auto& member : object) {
      if (!member.value().is_string()) {
        return fail(Errc::bad_request, "parameter \"" + detail::clip(member.key()) + "\" must be a string");
      }
      AGENT_MESH_TRY(add(std::string(member.key()), std::string(member.value().as_string())));
    }
    return params;
  }
  return fail(Errc::bad_request, "Content-Type must be application/x-www-form-urlencoded or application/json");
}

std::optional<std::string> param(const OauthParams& params, std::string_view name) {
  for (const auto& [key, value] : params) {
    if (key == name) return value;
  }
  return std::nullopt;
}

Status only_params(const OauthParams& params, std::initializer_list<std::string_view> known) {
  for (const auto& [key, value] : params) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      return fail(Errc::bad_request, "unknown parameter \"" + detail::clip(key) + "\"");
    }
  }
  return {};
}

// RFC 6749 §5.2: {"error": code, "error_description"?}; the description limited to the characters
// the RFC allows (printable ASCII without '"' and '\').
http::Response oauth_error(int status, std::string_view code, std::string_view description = {}) {
  boost::json::object body{{"error", code}};
  if (!description.empty()) {
    std::string text;
    for (const char c : description.substr(0, 256)) {
      const auto byte = static_cast<unsigned char>(c);
      text += (byte < 0x20 || byte > 0x7e) ? '?' : (c == '"' || c == '\\') ? '\'' : c;
    }
    body["error_description"] = text;
  }
  auto response = no_store(json_response(status, body));
  response.set("Pragma", "no-cache");
  if (status == 503) response.set("Retry-After", "1");
  return response;
}

http::Response oauth_error(Errc code, std::string_view description = {}) {
  return oauth_error(400, to_string(code), description);
}

// ---- device logins ----

void prune_device_logins_locked(RegistryService::Impl& api, std::int64_t now) {
  std::erase_if(api.device_logins, [now](const auto& entry) { return entry.second.expires_at_ms <= now; });
}

void forget_device_login(RegistryService::Impl& api, const std::string& handle) {
  std::lock_guard lock(api.device_mutex);
  api.device_logins.erase(handle);
}

// After a poll came back from the provider: the next may come one interval from now.
void release_device_login(RegistryService::Impl& api, const std::string& handle, std::optional<std::int64_t> new_interval_ms) {
  std::lock_guard lock(api.device_mutex);
  auto it = api.device_logins.find(handle);
  if (it == api.device_logins.end()) return;
  if (new_interval_ms) it->second.interval_ms = std::max(it->second.interval_ms, *new_interval_ms);
  it->second.next_poll_at_ms = api.now() + it->second.interval_ms;
}

// Runs on a worker: asks the provider for a device code and keeps it under a fresh handle.
http::Response start_device_login(RegistryService::Impl& api) {
  auto started = api.oauth->start();
  if (!started) {
    std::fprintf(stderr, "registry: device login start failed: %s\n", started.error().describe().c_str());
    // Unreachable (502) and timeout (504) say what happened; anything else is the registry's
    // configuration or a broken provider, never the client's fault (500).
    const Errc code = started.error().code;
    return error_response(code == Errc::unreachable || code == Errc::timeout ? code : Errc::internal,
                          "the OAuth provider could not start a device login: " + started.error().message);
  }
  const std::int64_t now = api.now();
  const std::int64_t lifetime_ms = std::clamp<std::int64_t>(started->expires_in.count(), 0, kMaxDeviceLoginLifetimeMs);
  const std::int64_t interval_ms = std::max<std::int64_t>(started->interval.count(), 0);
  std::string handle = generate_secret();
  {
    std::lock_guard lock(api.device_mutex);
    prune_device_logins_locked(api, now);
    if (api.device_logins.size() >= kMaxPendingDeviceLogins) {
      return error_response(Errc::rate_limited, "too many device logins are pending; try again later");
    }
    DeviceLogin login;
    login.provider_device_code = std::move(started->device_code);
    login.expires_at_ms = now + lifetime_ms;
    login.interval_ms = interval_ms;
    login.next_poll_at_ms = now;  // the first poll is never early
    api.device_logins.emplace(handle, std::move(login));
  }
  return no_store(json_response(200, boost::json::object{{"device_code", handle},
                                                         {"user_code", started->user_code},
                                                         {"verification_uri", started->verification_uri},
                                                         {"expires_in", seconds_value(lifetime_ms)},
                                                         {"interval", seconds_value(interval_ms)}}));
}

bool is_plain_login(std::string_view login) {
  if (login.empty() || login.size() > kMaxProviderLoginBytes) return false;
  return std::all_of(login.begin(), login.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
  });
}

struct LoggedInUser {
  User user;
  bool created = false;
};

// The user behind a provider identity, created at first login (registry.md "User: created at
// first login"). Safe against concurrent first logins of the same account: a conflict on the
// subject means the other login created the user, found on the next round.
Result<LoggedInUser> find_or_create_user(RegistryService::Impl& api, const ProviderIdentity& identity) {
  const std::string base = is_plain_login(identity.login) ? identity.login : std::string("user");
  std::string account = identity.provider_subject.substr(identity.provider_subject.rfind(':') + 1);
  if (!is_plain_login(account) || account.size() > 20) account = hash_secret(identity.provider_subject).substr(0, 8);
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto found = api.storage->find_user_by_subject(identity.provider_subject);
    if (found) return LoggedInUser{std::move(found).value(), false};
    if (found.error().code != Errc::not_found) return std::move(found).error();
    std::string login = base;
    if (attempt == 1 || (attempt == 0 && base != identity.login)) login = base + "-" + account;
    if (attempt >= 2) login = base + "-" + hash_secret(generate_secret()).substr(0, 8);
    auto created = api.storage->create_user(NewUser{login, identity.provider_subject}, api.now());
    if (created) return LoggedInUser{std::move(created).value(), true};
    if (created.error().code != Errc::conflict) return std::move(created).error();
  }
  return fail(Errc::internal, "no free login found for this account");
}

// Runs on a worker: one poll of the provider for this login, and the user's token when approved.
http::Response finish_device_poll(RegistryService::Impl& api, const std::string& handle,
                                  const std::string& provider_code) {
  auto polled = api.oauth->poll(provider_code);
  if (!polled) {
    const Error& error = polled.error();
    switch (error.code) {
      case Errc::bad_request:  // the provider does not know the code (any more)
        forget_device_login(api, handle);
        return oauth_error(400, "invalid_grant", "the provider no longer knows this login; start again");
      case Errc::unreachable:
      case Errc::timeout:
        release_device_login(api, handle, std::nullopt);
        return oauth_error(503, "temporarily_unavailable", "the OAuth provider is unreachable; poll again");
      default:
        std::fprintf(stderr, "registry: device login poll failed: %s\n", error.describe().c_str());
        release_device_login(api, handle, std::nullopt);
        return oauth_error(500, "server_error", "the OAuth provider refused the registry's request");
    }
  }
  if (!polled->approved()) {
    switch (polled->code) {
      case Errc::authorization_pending:
        release_device_login(api, handle, std::nullopt);
        return oauth_error(Errc::authorization_pending);
      case Errc::slow_down: {
        std::int64_t interval = 0;
        {
          std::lock_guard lock(api.device_mutex);
          auto it = api.device_logins.find(handle);
          if (it != api.device_logins.end()) interval = it->second.interval_ms + kSlowDownStepMs;
        }
        if (polled->interval) interval = std::max<std::int64_t>(interval, polled->interval->count());
        release_device_login(api, handle, interval);
        return oauth_error(Errc::slow_down);
      }
      case Errc::expired_token:
      case Errc::access_denied:
        forget_device_login(api, handle);
        return oauth_error(polled->code);
      default:
        forget_device_login(api, handle);
        return oauth_error(400, "invalid_grant");
    }
  }
  // Approved: the provider's code is spent either way.
  forget_device_login(api, handle);
  auto user = find_or_create_user(api, *polled->identity);
  if (!user) {
    std::fprintf(stderr, "registry: device login: user lookup failed: %s\n", user.error().describe().c_str());
    return oauth_error(500, "server_error", "could not record the user");
  }
  Principal principal;
  principal.kind = Principal::Kind::user;
  principal.user = user->user;
  if (user->created) {
    audit(api, principal, "user.create", user->user.id,
          boost::json::object{{"login", user->user.login}, {"provider_subject", polled->identity->provider_subject}});
  }
  std::string token = generate_secret();
  auto stored = api.storage->create_token(
      NewApiToken{user->user.id, std::string(kDeviceLoginTokenName), hash_secret(token), std::nullopt}, api.now());
  if (!stored) {
    std::fprintf(stderr, "registry: device login: token not stored: %s\n", stored.error().describe().c_str());
    return oauth_error(500, "server_error", "could not store the API token");
  }
  audit(api, principal, "user.login", user->user.id, boost::json::object{{"token_id", stored->id}});
  auto response = no_store(json_response(
      200, boost::json::object{{"access_token", token},
                               {"token_type", "Bearer"},
                               {"user", boost::json::object{{"id", user->user.id}, {"login", user->user.login}}}}));
  response.set("Pragma", "no-cache");
  return response;
}

}  // namespace

// ---- users and groups ----

Answer get_users_me(RegistryService::Impl& api, Call& call) {
  if (auto allowed = require_user(call.principal); !allowed) return error_response(allowed.error());
  const User& user = *call.principal.user;
  auto groups = api.storage->groups_of_user(user.id);
  if (!groups) return error_response(groups.error());
  boost::json::array items;
  for (const auto& entry : *groups) {
    items.push_back(boost::json::object{{"id", entry.group.id},
                                        {"name", entry.group.name},
                                        {"role", to_string(entry.role)},
                                        {"personal", entry.personal}});
  }
  return json_response(200, boost::json::object{{"user", boost::json::object{{"id", user.id},
                                                                             {"login", user.login},
                                                                             {"created_at", rfc3339(user.created_at)}}},
                                                {"groups", std::move(items)}});
}

Answer list_groups(RegistryService::Impl& api, Call& call) {
  if (auto allowed = require_user_or_admin(call.principal); !allowed) return error_response(allowed.error());
  auto page = page_request(call);
  if (!page) return error_response(page.error());
  auto offset = cursor_offset(page->cursor);
  if (!offset) return error_response(offset.error());
  const auto limit = static_cast<std::size_t>(page->limit);
  boost::json::array items;
  std::size_t total = 0;
  if (call.principal.is_user()) {
    auto groups = api.storage->groups_of_user(call.principal.user->id);
    if (!groups) return error_response(groups.error());
    total = groups->size();
    for (std::size_t i = *offset; i < total && i < *offset + limit; ++i) {
      const UserGroup& entry = (*groups)[i];
      items.push_back(boost::json::object{{"id", entry.group.id},
                                          {"name", entry.group.name},
                                          {"role", to_string(entry.role)},
                                          {"personal", entry.personal},
                                          {"created_at", rfc3339(entry.group.created_at)}});
    }
  } else {  // the admin token: every group, as an owner of each
    auto ids = visible_groups(api, call.principal);
    if (!ids) return error_response(ids.error());
    total = ids->size();
    for (std::size_t i = *offset; i < total && i < *offset + limit; ++i) {
      auto group = api.storage->get_group((*ids)[i]);
      if (!group) {
        if (group.error().code == Errc::not_found) continue;  // deleted meanwhile
        return error_response(group.error());
      }
      items.push_back(boost::json::object{{"id", group->id},
                                          {"name", group->name},
                                          {"role", to_string(GroupRole::owner)},
                                          {"personal", group->personal_user_id.has_value()},
                                          {"created_at", rfc3339(group->created_at)}});
    }
  }
  std::optional<std::string> next;
  if (*offset + limit < total) next = offset_cursor(*offset + limit);
  return json_response(200, page_json(std::move(items), next));
}

Answer create_group(RegistryService::Impl& api, Call& call) {
  if (call.principal.is_admin()) {
    return error_response(Errc::forbidden, "the admin token has no user to own a group: use a user's API token");
  }
  if (auto allowed = require_user(call.principal); !allowed) return error_response(allowed.error());
  auto body = body_object(call);
  if (!body) return error_response(body.error());
  const detail::FieldReader reader(*body, "group");
  std::string_view name;
  if (auto ok = reader.reject_unknown({"name"}); !ok) return error_response(ok.error());
  if (auto ok = reader.required_string("name", name); !ok) return error_response(ok.error());
  if (auto ok = check_name("name", name); !ok) return error_response(ok.error());
  const User& user = *call.principal.user;
  if (auto room = check_group_room(api, user.id, "you"); !room) return error_response(room.error());
  auto group = api.storage->create_group(name, user.id, api.now());
  if (!group) return error_response(group.error());
  audit(api, call.principal, "group.create", group->id, boost::json::object{{"name", group->name}});
  return json_response(201, boost::json::object{{"id", group->id},
                                                {"name", group->name},
                                                {"role", to_string(GroupRole::owner)},
                                                {"personal", false},
                                                {"created_at", rfc3339(group->created_at)}});
}

Answer add_group_member(RegistryService::Impl& api, Call& call) {
  if (auto allowed = require_user_or_admin(call.principal); !allowed) return error_response(allowed.error());
  const std::string& group_id = call.params.at(0);
  auto caller_role = manager_role(api, call.principal, group_id, "add members");
  if (!caller_role) return error_response(caller_role.error());
  auto body = body_object(call);
  if (!body) return error_response(body.error());
  const detail::FieldReader reader(*body, "member");
  std::string_view user_id;
  std::string_view role_text;
  if (auto ok = reader.reject_unknown({"user_id", "role"}); !ok) return error_response(ok.error());
  if (auto ok = reader.required_string("user_id", user_id); !ok) return error_response(ok.error());
  if (auto ok = check_uuid("user_id", user_id); !ok) return error_response(ok.error());
  if (auto ok = reader.required_string("role", role_text); !ok) return error_response(ok.error());
  const auto role = group_role_from_string(role_text);
  if (!role) return error_response(Errc::bad_request, "role must be \"owner\", \"admin\" or \"member\"");
  if (*role == GroupRole::owner && *caller_role != GroupRole::owner) {
    return error_response(Errc::forbidden, "only a group owner may add an owner");
  }
  auto user = api.storage->find_user(user_id);
  if (!user) {
    return error_response(user.error().code == Errc::not_found ? Error{Errc::not_found, "no user with this user_id"}
                                                               : user.error());
  }
  if (auto room = check_group_room(api, user->id, "the user"); !room) return error_response(room.error());
  const std::int64_t now = api.now();
  if (auto added = api.storage->add_member(group_id, user->id, *role, now); !added) {
    return error_response(added.error());
  }
  audit(api, call.principal, "group.member.add", group_id,
        boost::json::object{{"user_id", user->id}, {"role", to_string(*role)}});
  return json_response(201, boost::json::object{{"group_id", group_id},
                                                {"user_id", user->id},
                                                {"login", user->login},
                                                {"role", to_string(*role)},
                                                {"added_at", rfc3339(now)}});
}

Answer remove_group_member(RegistryService::Impl& api, Call& call) {
  if (auto allowed = require_user_or_admin(call.principal); !allowed) return error_response(allowed.error());
  const std::string& group_id = call.params.at(0);
  const std::string& user_id = call.params.at(1);
  const bool self = call.principal.is_user() && call.principal.user->id == user_id;
  if (self) {
    auto role = role_in_group(api, call.principal, group_id);
    if (!role) return error_response(role.error());
    if (!*role) return error_response(Errc::not_found, kNotYourGroup);
  } else {
    auto caller_role = manager_role(api, call.principal, group_id, "remove members");
    if (!caller_role) return error_response(caller_role.error());
    auto target_role = api.storage->member_role(group_id, user_id);
    if (!target_role) return error_response(target_role.error());
    if (!*target_role) return error_response(Errc::not_found, "the user is not a member of the group");
    if (**target_role == GroupRole::owner && *caller_role != GroupRole::owner) {
      return error_response(Errc::forbidden, "only a group owner may remove an owner");
    }
  }
  if (auto removed = api.storage->remove_member(group_id, user_id); !removed) return error_response(removed.error());
  audit(api, call.principal, "group.member.remove", group_id, boost::json::object{{"user_id", user_id}});
  return http::Response{204, {}, {}};
}

// ---- API tokens ----

Answer list_tokens(RegistryService::Impl& api, Call& call) {
  if (auto allowed = require_user(call.principal); !allowed) return error_response(allowed.error());
  auto page = page_request(call);
  if (!page) return error_response(page.error());
  auto tokens = api.storage->list_tokens(call.principal.user->id, *page);
  if (!tokens) return error_response(tokens.error());
  const std::int64_t now = api.now();
  boost::json::array items;
  for (const auto& token : tokens->items) items.push_back(token_json(token, now, call.principal.token_id));
  return json_response(200, page_json(std::move(items), tokens->next_cursor));
}

Answer create_token(RegistryService::Impl& api, Call& call) {
  if (auto allowed = require_user(call.principal); !allowed) return error_response(allowed.error());
  auto body = body_object(call);
  if (!body) return error_response(body.error());
  const detail::FieldReader reader(*body, "token");
  std::string_view name;
  if (auto ok = reader.reject_unknown({"name", "expires_at"}); !ok) return error_response(ok.error());
  if (auto ok = reader.required_string("name", name); !ok) return error_response(ok.error());
  if (auto ok = check_name("name", name); !ok) return error_response(ok.error());
  const std::int64_t now = api.now();
  auto expires_at = optional_future_time(*body, "expires_at", now);
  if (!expires_at) return error_response(expires_at.error());
  std::string secret = generate_secret();
  auto token = api.storage->create_token(
      NewApiToken{call.principal.user->id, std::string(name), hash_secret(secret), *expires_at}, now);
  if (!token) return error_response(token.error());
  audit(api, call.principal, "token.create", token->id, boost::json::object{{"name", token->name}});
  boost::json::object out{{"id", token->id},
                          {"token", secret},
                          {"name", token->name},
                          {"created_at", rfc3339(token->created_at)}};
  if (token->expires_at) out["expires_at"] = rfc3339(*token->expires_at);
  return no_store(json_response(201, out));
}

Answer delete_token(RegistryService::Impl& api, Call& call) {
  if (auto allowed = require_user(call.principal); !allowed) return error_response(allowed.error());
  const std::string& token_id = call.params.at(0);
  if (auto revoked = api.storage->revoke_token(call.principal.user->id, token_id, api.now()); !revoked) {
    return error_response(revoked.error().code == Errc::not_found ? Error{Errc::not_found, "no such token among yours"}
                                                                  : revoked.error());
  }
  audit(api, call.principal, "token.revoke", token_id);
  return http::Response{204, {}, {}};
}

// ---- setup keys ----

Answer list_setup_keys(RegistryService::Impl& api, Call& call) {
  if (auto allowed = require_user_or_admin(call.principal); !allowed) return error_response(allowed.error());
  auto page = page_request(call);
  if (!page) return error_response(page.error());
  // Keys are listed for the groups the caller manages (owner/admin; every group for the admin).
  std::vector<std::string> groups;
  if (call.principal.is_user()) {
    auto mine = api.storage->groups_of_user(call.principal.user->id);
    if (!mine) return error_response(mine.error());
    for (auto& entry : *mine) {
      if (is_group_admin(entry.role)) groups.push_back(std::move(entry.group.id));
    }
  } else {
    auto all = visible_groups(api, call.principal);
    if (!all) return error_response(all.error());
    groups = std::move(all).value();
  }
  if (auto wanted = query_value(call, "group_id")) {
    if (std::find(groups.begin(), groups.end(), *wanted) == groups.end()) {
      return error_response(Errc::not_found, "no such group among the ones you manage");
    }
    groups = {std::string(*wanted)};
  }
  if (groups.empty()) return json_response(200, page_json({}, std::nullopt));
  auto keys = api.storage->list_setup_keys(groups, *page);
  if (!keys) return error_response(keys.error());
  const std::int64_t now = api.now();
  boost::json::array items;
  for (const auto& key : keys->items) items.push_back(setup_key_json(key, now));
  return json_response(200, page_json(std::move(items), keys->next_cursor));
}

Answer create_setup_key(RegistryService::Impl& api, Call& call) {
  if (auto allowed = require_user_or_admin(call.principal); !allowed) return error_response(allowed.error());
  auto body = body_object(call);
  if (!body) return error_response(body.error());
  const detail::FieldReader reader(*body, "setup key");
  std::string_view group_id;
  std::int64_t max_uses = 0;
  bool has_max_uses = false;
  if (auto ok = reader.reject_unknown({"group_id", "max_uses", "expires_at"}); !ok) return error_response(ok.error());
  if (auto ok = reader.required_string("group_id", group_id); !ok) return error_response(ok.error());
  if (auto ok = check_uuid("group_id", group_id); !ok) return error_response(ok.error());
  if (auto ok = reader.optional_integer("max_uses", max_uses, has_max_uses); !ok) return error_response(ok.error());
  if (has_max_uses && max_uses < 1) return error_response(Errc::bad_request, "max_uses must be at least 1 (omit it for no limit)");
  const std::int64_t now = api.now();
  auto expires_at = optional_future_time(*body, "expires_at", now);
  if (!expires_at) return error_response(expires_at.error());
  if (auto role = manager_role(api, call.principal, group_id, "create setup keys"); !role) {
    return error_response(role.error());
  }
  std::string secret = generate_secret();
  NewSetupKey key;
  key.group_id = std::string(group_id);
  key.created_by = call.principal.actor();
  key.hash = hash_secret(secret);
  if (has_max_uses) key.max_uses = max_uses;
  key.expires_at = *expires_at;
  auto stored = api.storage->create_setup_key(key, now);
  if (!stored) return error_response(stored.error());
  audit(api, call.principal, "setup_key.create", stored->id, boost::json::object{{"group_id", stored->group_id}});
  boost::json::object out = setup_key_json(*stored, now);
  out["key"] = secret;
  return no_store(json_response(201, out));
}

Answer delete_setup_key(RegistryService::Impl& api, Call& call) {
  if (auto allowed = require_user_or_admin(call.principal); !allowed) return error_response(allowed.error());
  const std::string& key_id = call.params.at(0);
  const Error unknown{Errc::not_found, "no such setup key in the groups you manage"};
  auto key = api.storage->get_setup_key(key_id);
  if (!key) return error_response(key.error().code == Errc::not_found ? unknown : key.error());
  if (auto role = manager_role(api, call.principal, key->group_id, "revoke setup keys"); !role) {
    return error_response(role.error().code == Errc::not_found ? unknown : role.error());
  }
  if (auto revoked = api.storage->revoke_setup_key(key_id, api.now()); !revoked) {
    return error_response(revoked.error().code == Errc::not_found ? unknown : revoked.error());
  }
  audit(api, call.principal, "setup_key.revoke", key_id, boost::json::object{{"group_id", key->group_id}});
  return http::Response{204, {}, {}};
}

// ---- device-flow login (RFC 8628) ----

Answer oauth_device(RegistryService::Impl& api, Call& call) {
  if (!api.oauth) {
    return error_response(Errc::not_found, "device login is not configured on this registry (no --oauth-client-id)");
  }
  // RFC 8628 §3.1's client_id and scope are accepted and ignored: the registry is the client.
  auto params = oauth_params(call);
  if (!params) return error_response(params.error());
  if (auto ok = only_params(*params, {"client_id", "scope"}); !ok) return error_response(ok.error());
  {
    std::lock_guard lock(api.device_mutex);
    prune_device_logins_locked(api, api.now());
    if (api.device_logins.size() >= kMaxPendingDeviceLogins) {
      return error_response(Errc::rate_limited, "too many device logins are pending; try again later");
    }
  }
  const bool posted = api.workers.post([&api, respond = call.respond] { respond(start_device_login(api)); });
  if (!posted) {
    auto response = error_response(Errc::unreachable, "registry busy");
    response.status = 503;
    response.set("Retry-After", "1");
    return response;
  }
  return std::nullopt;
}

Answer oauth_token(RegistryService::Impl& api, Call& call) {
  if (!api.oauth) {
    return error_response(Errc::not_found, "device login is not configured on this registry (no --oauth-client-id)");
  }
  auto params = oauth_params(call);
  if (!params) return oauth_error(400, "invalid_request", params.error().message);
  if (auto ok = only_params(*params, {"grant_type", "device_code", "client_id"}); !ok) {
    return oauth_error(400, "invalid_request", ok.error().message);
  }
  const auto grant_type = param(*params, "grant_type");
  if (!grant_type) return oauth_error(400, "invalid_request", "grant_type is required");
  if (*grant_type != kDeviceGrantType) {
    return oauth_error(400, "unsupported_grant_type", "grant_type must be " + std::string(kDeviceGrantType));
  }
  const auto handle = param(*params, "device_code");
  if (!handle || handle->empty()) return oauth_error(400, "invalid_request", "device_code is required");
  const std::int64_t now = api.now();
  std::string provider_code;
  {
    std::lock_guard lock(api.device_mutex);
    auto it = api.device_logins.find(*handle);
    if (it == api.device_logins.end()) {
      return oauth_error(400, "invalid_grant", "unknown or finished device_code: start a new login");
    }
    DeviceLogin& login = it->second;
    if (now >= login.expires_at_ms) {
      api.device_logins.erase(it);
      return oauth_error(Errc::expired_token);
    }
    if (now < login.next_poll_at_ms) {
      // Too early, or the previous poll is still with the provider (RFC 8628 §3.5).
      login.interval_ms += kSlowDownStepMs;
      if (login.next_poll_at_ms != kPollInFlight) login.next_poll_at_ms = now + login.interval_ms;
      return oauth_error(Errc::slow_down);
    }
    provider_code = login.provider_device_code;
    login.next_poll_at_ms = kPollInFlight;
  }
  const bool posted = api.workers.post([&api, respond = call.respond, handle = *handle, provider_code] {
    respond(finish_device_poll(api, handle, provider_code));
  });
  if (!posted) {
    std::lock_guard lock(api.device_mutex);
    if (auto it = api.device_logins.find(*handle); it != api.device_logins.end()) it->second.next_poll_at_ms = now;
    return oauth_error(503, "temporarily_unavailable", "registry busy");
  }
  return std::nullopt;
}

}  // namespace agent_mesh::registry
