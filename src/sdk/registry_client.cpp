#include "agent_mesh/registry_client.hpp"

#include <algorithm>
#include <boost/json/serialize.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <utility>

#include "agent_mesh/agent_auth.hpp"
#include "agent_mesh/json.hpp"
#include "net/http_client.hpp"

namespace agent_mesh {
namespace {

// The largest answer read: a discovery page of 200 cards at the card bound (256 KiB each) is
// 50 MiB; an ACL sync document is at most limits::max_acl_sync_bytes (32 MiB).
constexpr std::size_t kMaxResponseBytes = 64 * 1024 * 1024;
// acl_sync's request timeout beyond the long poll's own wait.
constexpr std::chrono::seconds kLongPollMargin{10};

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// RFC 3986 query component: unreserved characters kept, every other byte %XX.
std::string percent_encode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if ((u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') || (u >= '0' && u <= '9') || c == '-' || c == '.' ||
        c == '_' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 0x0f];
    }
  }
  return out;
}

// Appends "name=value" to a query string being built ("?" first, then "&").
void add_query(std::string& target, std::string_view name, std::string_view value) {
  target += target.find('?') == std::string::npos ? '?' : '&';
  target.append(name).append("=").append(percent_encode(value));
}

// The Host header net::http_request sends for `url` (src/net/http_client.cpp parse_target): the
// host as written (IPv6 in brackets), with ":<port>" only when the port is not the scheme's default.
// The agent signature covers it, so both must agree byte for byte.
struct ParsedBase {
  std::string prefix;
  std::string host_header;
};

Result<ParsedBase> parse_base(std::string_view url) {
  const auto bad = [](std::string_view what) {
    return fail(Errc::bad_request, "registry URL: " + std::string(what) + " (expected http(s)://host[:port])");
  };
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) return bad("not an absolute URL");
  const boost::urls::url_view& u = *parsed;
  bool tls = false;
  if (u.scheme_id() == boost::urls::scheme::https) {
    tls = true;
  } else if (u.scheme_id() != boost::urls::scheme::http) {
    return bad("the scheme must be http or https");
  }
  if (!u.has_authority() || u.encoded_host().empty()) return bad("no host");
  if (u.has_userinfo()) return bad("user info is not allowed");
  if (u.has_query() || u.has_fragment()) return bad("a query or fragment is not allowed");
  const auto host_type = u.host_type();
  if (host_type != boost::urls::host_type::name && host_type != boost::urls::host_type::ipv4 &&
      host_type != boost::urls::host_type::ipv6) {
    return bad("the host must be a name or an IP address");
  }
  const std::string host = u.host_address();
  const unsigned long default_port = tls ? 443 : 80;
  unsigned long port = default_port;
  if (u.has_port() && !u.port().empty()) {
    port = 0;
    for (const char c : u.port()) {
      if (c < '0' || c > '9' || port > 65535) return bad("the port must be 1..65535");
      port = port * 10 + static_cast<unsigned long>(c - '0');
    }
    if (port == 0 || port > 65535) return bad("the port must be 1..65535");
  }
  ParsedBase out;
  const std::string bracketed = host_type == boost::urls::host_type::ipv6 ? "[" + host + "]" : host;
  out.host_header = port == default_port ? bracketed : bracketed + ":" + std::to_string(port);
  out.prefix = std::string(u.encoded_path());
  while (!out.prefix.empty() && out.prefix.back() == '/') out.prefix.pop_back();
  return out;
}

// A request-target the caller of call() gives: origin-form, visible ASCII, no spaces.
Status check_target(std::string_view target) {
  const auto visible = [](char c) { return c > 0x20 && c < 0x7f; };
  if (!target.starts_with('/') || !std::all_of(target.begin(), target.end(), visible) ||
      target.find('#') != std::string_view::npos) {
    return fail(Errc::bad_request,
                "registry call: the target must be a path and query starting with '/', percent-encoded, no spaces");
  }
  return {};
}

Errc errc_for_status(int status) {
  switch (status) {
    case 400: return Errc::bad_request;
    case 401: return Errc::unauthorized;
    case 403: return Errc::forbidden;
    case 404: return Errc::not_found;
    case 409: return Errc::conflict;
    case 413: return Errc::too_large;
    case 429: return Errc::rate_limited;
    case 502:
    case 503:
    case 504: return Errc::unreachable;
    default: return Errc::internal;
  }
}

// A non-2xx answer as an Error (see the header).
Error error_from_answer(const std::string& base_url, int status, const std::string& body) {
  if (auto parsed = json::parse_ijson(body); parsed && parsed->is_object()) {
    const auto* error = parsed->as_object().if_contains("error");
    if (error != nullptr && error->is_object()) {
      const auto* code = error->as_object().if_contains("code");
      const auto* message = error->as_object().if_contains("message");
      if (code != nullptr && code->is_string()) {
        const std::string code_text(code->as_string());
        const std::string message_text = message != nullptr && message->is_string()
                                             ? std::string(message->as_string())
                                             : "registry answered HTTP " + std::to_string(status);
        if (const auto known = errc_from_string(code_text)) return fail(*known, message_text);
        return fail(Errc::internal, code_text + ": " + message_text);
      }
    }
  }
  std::string excerpt = body.substr(0, 200);
  std::replace_if(excerpt.begin(), excerpt.end(), [](char c) { return c == '\r' || c == '\n'; }, ' ');
  return fail(errc_for_status(status), "registry " + base_url + " answered HTTP " + std::to_string(status) +
                                           (excerpt.empty() ? std::string() : ": " + excerpt));
}

}  // namespace

RegistryClient::RegistryClient(std::string base_url, KeyPair identity, RegistryClientOptions options)
    : base_url_(std::move(base_url)), identity_(std::move(identity)), options_(std::move(options)) {
  while (!base_url_.empty() && base_url_.back() == '/') base_url_.pop_back();
  auto parsed = parse_base(base_url_);
  if (!parsed) {
    url_error_ = std::move(parsed).error();
    return;
  }
  prefix_ = std::move(parsed->prefix);
  host_header_ = std::move(parsed->host_header);
}

std::int64_t RegistryClient::next_timestamp() const {
  const std::int64_t now = wall_ms();
  std::int64_t last = last_timestamp_.load(std::memory_order_relaxed);
  for (;;) {
    const std::int64_t next = std::max(now, last + 1);
    if (last_timestamp_.compare_exchange_weak(last, next, std::memory_order_relaxed)) return next;
  }
}

Result<std::string> RegistryClient::perform(const Sent& sent) const {
  if (url_error_) return *url_error_;
  const std::string target = prefix_ + sent.target;
  net::HttpRequest request;
  request.method = sent.method;
  request.url = base_url_ + sent.target;
  request.timeout = sent.timeout.count() > 0 ? sent.timeout : options_.timeout;
  request.max_response_body_bytes = kMaxResponseBytes;
  request.ca_file = options_.ca_file;
  request.headers.push_back({"Accept", "application/json"});
  if (sent.body) {
    request.headers.push_back({"Content-Type", "application/json"});
    request.body = *sent.body;
  }
  switch (sent.auth) {
    case Auth::none: break;
    case Auth::bearer: request.headers.push_back({"Authorization", "Bearer " + sent.token}); break;
    case Auth::agent:
      request.headers.push_back(
          {"Authorization", make_agent_authorization(identity_, sent.method, target, host_header_, next_timestamp())});
      break;
  }
  auto response = net::http_request(request);
  if (!response) {
    Error error = std::move(response).error();
    // net's messages name host:port only; say which registry (the base URL carries no secret).
    error.message = "registry " + base_url_ + ": " + error.message;
    return error;
  }
  if (response->status < 200 || response->status > 299) {
    return error_from_answer(base_url_, response->status, response->body);
  }
  return std::move(response->body);
}

Result<boost::json::value> RegistryClient::perform_json(const Sent& sent) const {
  auto body = perform(sent);
  if (!body) return std::move(body).error();
  if (body->empty()) return boost::json::value();
  json::ParseOptions options;
  options.max_bytes = kMaxResponseBytes;
  auto parsed = json::parse_ijson(*body, options);
  if (!parsed) {
    return fail(Errc::internal, "registry " + base_url_ + " answered " + sent.method + " " +
                                    sent.target.substr(0, sent.target.find('?')) +
                                    " with invalid JSON: " + parsed.error().message);
  }
  return std::move(parsed).value();
}

Result<boost::json::object> RegistryClient::perform_object(const Sent& sent) const {
  auto value = perform_json(sent);
  if (!value) return std::move(value).error();
  if (!value->is_object()) {
    return fail(Errc::internal, "registry " + base_url_ + " answered " + sent.method + " " +
                                    sent.target.substr(0, sent.target.find('?')) + " with JSON that is not an object");
  }
  return std::move(value->as_object());
}

Result<std::string> RegistryClient::signed_card_json(AgentCard card) const {
  if (card.agent_id.empty()) card.agent_id = identity_.agent_id();
  if (card.agent_id != identity_.agent_id()) {
    return fail(Errc::bad_request, "card: agent_id " + card.agent_id.str() + " is not this client's identity " +
                                       identity_.agent_id().str());
  }
  if (card.timestamp == 0) card.timestamp = next_timestamp();
  AGENT_MESH_TRY(card.validate());
  card.sign(identity_);
  return card.serialize();
}

Result<boost::json::object> RegistryClient::info() const {
  return perform_object({.method = "GET", .target = "/api/v1/info"});
}

Result<boost::json::object> RegistryClient::register_card(AgentCard card, std::string_view user_token) const {
  auto body = signed_card_json(std::move(card));
  if (!body) return std::move(body).error();
  return perform_object({.method = "POST",
                         .target = "/api/v1/agents",
                         .body = std::move(body).value(),
                         .auth = Auth::bearer,
                         .token = std::string(user_token)});
}

Result<boost::json::object> RegistryClient::register_with_setup_key(AgentCard card, std::string_view setup_key) const {
  auto signed_card = signed_card_json(std::move(card));
  if (!signed_card) return std::move(signed_card).error();
  auto card_value = json::parse_ijson(*signed_card, {.max_bytes = kMaxResponseBytes});
  if (!card_value) return std::move(card_value).error();
  boost::json::object body;
  body["setup_key"] = setup_key;
  body["card"] = std::move(card_value).value();
  return perform_object({.method = "POST", .target = "/api/v1/register-with-key", .body = boost::json::serialize(body)});
}

Result<boost::json::object> RegistryClient::update_card(AgentCard card) const {
  auto body = signed_card_json(std::move(card));
  if (!body) return std::move(body).error();
  return perform_object({.method = "PUT",
                         .target = "/api/v1/agents/" + identity_.agent_id().str(),
                         .body = std::move(body).value(),
                         .auth = Auth::agent});
}

Status RegistryClient::deregister() const {
  auto answer = perform({.method = "DELETE", .target = "/api/v1/agents/" + identity_.agent_id().str(), .auth = Auth::agent});
  if (!answer) return std::move(answer).error();
  return {};
}

Result<boost::json::object> RegistryClient::discover(const DiscoverQuery& query) const {
  std::string target = "/api/v1/agents";
  if (query.capability) add_query(target, "capability", *query.capability);
  if (query.q) add_query(target, "q", *query.q);
  if (query.online) add_query(target, "online", *query.online ? "true" : "false");
  if (query.group) add_query(target, "group", *query.group);
  if (query.limit) add_query(target, "limit", std::to_string(*query.limit));
  if (query.cursor) add_query(target, "cursor", *query.cursor);
  return perform_object({.method = "GET", .target = std::move(target), .auth = Auth::agent});
}

Result<AclSync> RegistryClient::acl_sync(std::int64_t since, int wait_s) const {
  std::string target = "/api/v1/acl/sync";
  add_query(target, "agent_id", identity_.agent_id().str());
  add_query(target, "since", std::to_string(since));
  add_query(target, "wait_s", std::to_string(wait_s));
  const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::seconds(std::max(wait_s, 0)) + kLongPollMargin);
  auto body = perform({.method = "GET", .target = std::move(target), .auth = Auth::agent, .timeout = timeout});
  if (!body) return std::move(body).error();
  auto sync = AclSync::parse(*body);
  if (!sync) {
    return fail(Errc::internal, "registry " + base_url_ + " answered the ACL sync with a document that does not parse: " +
                                    sync.error().message);
  }
  return std::move(sync).value();
}

Result<boost::json::value> RegistryClient::call(std::string_view method, std::string_view target,
                                                std::optional<boost::json::value> body,
                                                std::optional<std::string_view> bearer_token) const {
  AGENT_MESH_TRY(check_target(target));
  Sent sent{.method = std::string(method), .target = std::string(target)};
  if (body) sent.body = boost::json::serialize(*body);
  if (bearer_token) {
    sent.auth = Auth::bearer;
    sent.token = std::string(*bearer_token);
  } else {
    sent.auth = Auth::agent;
  }
  return perform_json(sent);
}

Result<boost::json::value> RegistryClient::call_anonymous(std::string_view method, std::string_view target,
                                                          std::optional<boost::json::value> body) const {
  AGENT_MESH_TRY(check_target(target));
  Sent sent{.method = std::string(method), .target = std::string(target)};
  if (body) sent.body = boost::json::serialize(*body);
  sent.auth = Auth::none;
  return perform_json(sent);
}

}  // namespace agent_mesh
