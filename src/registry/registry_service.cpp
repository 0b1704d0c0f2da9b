// The registry's REST API: authentication of the caller, routing, the helpers every handler uses,
// and the small endpoints (info, health, status, metrics, audit). The resource handlers live in
// api_principals.cpp, api_agents.cpp and api_acl.cpp.
#include "registry/registry_service.hpp"

#include <algorithm>
#include <array>
#include <boost/json/serialize.hpp>
#include <charconv>
#include <chrono>
#include <cstdio>

#include "agent_mesh/json.hpp"
#include "agent_mesh/version.hpp"
#include "registry/api.hpp"
#include "registry/time_format.hpp"

namespace agent_mesh::registry {

namespace {

std::int64_t system_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}
std::uint64_t steady_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

constexpr std::string_view kApiPrefix = "/api/v1/";

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// RFC 3986 percent-decoding; `plus_is_space` for query strings (HTML form encoding).
Result<std::string> percent_decode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      const int high = i + 1 < text.size() ? hex_value(text[i + 1]) : -1;
      const int low = i + 2 < text.size() ? hex_value(text[i + 2]) : -1;
      if (high < 0 || low < 0) return fail(Errc::bad_request, "bad percent-encoding in the request target");
      out += static_cast<char>(high * 16 + low);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

Result<std::multimap<std::string, std::string, std::less<>>> parse_query(std::string_view query) {
  std::multimap<std::string, std::string, std::less<>> out;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    AGENT_MESH_TRY_ASSIGN(auto key, percent_decode(pair.substr(0, eq), true));
    AGENT_MESH_TRY_ASSIGN(auto value,
                          percent_decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1), true));
    if (out.size() >= 64) return fail(Errc::bad_request, "too many query parameters");
    out.emplace(std::move(key), std::move(value));
  }
  return out;
}

// ---- routing ----

using HandlerFn = Answer (*)(RegistryService::Impl&, Call&);

struct Route {
  std::string_view method;
  std::string_view pattern;  // relative to /api/v1/, "{}" for a parameter segment
  HandlerFn handler;
};

Answer get_info(RegistryService::Impl& api, Call&) {
  return json_response(200, boost::json::object{{"version", kVersion},
                                                {"relay_url", api.options.relay_url},
                                                {"oauth", api.oauth.has_value()}});
}

Answer get_health(RegistryService::Impl& api, Call&) {
  if (auto version = api.storage->acl_version(); !version) {
    return error_response(Errc::internal, "storage unavailable");
  }
  return json_response(200, boost::json::object{{"status", "ok"}});
}

Answer get_status(RegistryService::Impl& api, Call&) {
  auto counts = api.storage->status_counts();
  if (!counts) return error_response(counts.error());
  const std::size_t online = api.relay.online_agents ? api.relay.online_agents().size() : 0;
  return json_response(200, boost::json::object{{"version", kVersion},
                                                {"users", counts->users},
                                                {"groups", counts->groups},
                                                {"agents", counts->agents},
                                                {"agents_online", online},
                                                {"acl_rules", counts->rules},
                                                {"revocations", counts->revocations}});
}

Answer get_metrics(RegistryService::Impl& api, Call&) {
  auto counts = api.storage->status_counts();
  if (!counts) return error_response(counts.error());
  http::Response response{200, {}, api.metrics.render(*counts)};
  response.set("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
  return response;
}

Answer get_audit(RegistryService::Impl& api, Call& call) {
  if (!call.principal.is_admin()) {
    return error_response(call.principal.kind == Principal::Kind::anonymous ? Errc::unauthorized : Errc::forbidden,
                          "the audit log is for the admin token");
  }
  auto page = page_request(call);
  if (!page) return error_response(page.error());
  auto entries = api.storage->list_audit(*page);
  if (!entries) return error_response(entries.error());
  boost::json::array items;
  for (const auto& entry : entries->items) {
    boost::json::value detail = boost::json::object{};
    if (auto parsed = json::parse_ijson(entry.detail_json)) detail = std::move(parsed).value();
    items.push_back(boost::json::object{{"id", entry.id},
                                        {"at", rfc3339(entry.at)},
                                        {"actor", entry.actor},
                                        {"action", entry.action},
                                        {"target", entry.target},
                                        {"detail", std::move(detail)}});
  }
  return json_response(200, page_json(std::move(items), entries->next_cursor));
}

constexpr std::array kRoutes{
    Route{"GET", "info", get_info},
    Route{"GET", "health", get_health},
    Route{"GET", "status", get_status},
    Route{"GET", "metrics", get_metrics},
    Route{"GET", "audit", get_audit},
    Route{"GET", "users/me", get_users_me},
    Route{"GET", "groups", list_groups},
    Route{"POST", "groups", create_group},
    Route{"POST", "groups/{}/members", add_group_member},
    Route{"DELETE", "groups/{}/members/{}", remove_group_member},
    Route{"GET", "tokens", list_tokens},
    Route{"POST", "tokens", create_token},
    Route{"DELETE", "tokens/{}", delete_token},
    Route{"GET", "setup-keys", list_setup_keys},
    Route{"POST", "setup-keys", create_setup_key},
    Route{"DELETE", "setup-keys/{}", delete_setup_key},
    Route{"POST", "register-with-key", register_with_key},
    Route{"POST", "oauth/device", oauth_device},
    Route{"POST", "oauth/token", oauth_token},
    Route{"POST", "agents", register_agent},
    Route{"GET", "agents", search_agents},
    Route{"GET", "agents/{}", get_agent},
    Route{"PUT", "agents/{}", put_agent},
    Route{"DELETE", "agents/{}", delete_agent},
    Route{"GET", "agents/{}/agent-card.json", get_a2a_card},
    Route{"POST", "agents/{}/revoke", revoke_agent},
    Route{"POST", "agents/{}/rotate", rotate_agent},
    Route{"GET", "acl/sync", acl_sync},
    Route{"GET", "acl", list_acl},
    Route{"POST", "acl", create_acl},
    Route{"DELETE", "acl/{}", delete_acl},
    Route{"POST", "revocations", post_revocation},
    Route{"GET", "revocations", list_revocations},
};

// Splits "a/b/c" into segments; an empty segment (a//b, trailing slash) never matches a route.
std::vector<std::string_view> segments_of(std::string_view path) {
  std::vector<std::string_view> out;
  while (true) {
    const auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

// Matches segments against a pattern; on success fills the parameters (still encoded).
bool matches(std::string_view pattern, const std::vector<std::string_view>& segments,
             std::vector<std::string_view>& params) {
  const auto parts = segments_of(pattern);
  if (parts.size() != segments.size()) return false;
  std::vector<std::string_view> found;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (parts[i] == "{}") {
      if (segments[i].empty()) return false;
      found.push_back(segments[i]);
    } else if (parts[i] != segments[i]) {
      return false;
    }
  }
  params = std::move(found);
  return true;
}

// Open endpoints answer without credentials; everything else needs a principal (checked by the
// handlers, which know which kinds they take).
Result<Principal> authenticate(RegistryService::Impl& api, const http::Request& request) {
  const std::string_view header = request.field("Authorization");
  Principal principal;
  if (header.empty()) return principal;
  if (header.starts_with("Bearer ")) {
    auto token = parse_bearer(header);
    if (!token) {
      api.metrics.tokens_refused.fetch_add(1, std::memory_order_relaxed);
      return std::move(token).error();
    }
    if (!api.options.admin_token.empty() && secrets_equal(api.options.admin_token, *token)) {
      principal.kind = Principal::Kind::admin;
      return principal;
    }
    auto match = api.storage->find_token(hash_secret(*token), api.now());
    if (!match) {
      api.metrics.tokens_refused.fetch_add(1, std::memory_order_relaxed);
      if (match.error().code == Errc::internal) return std::move(match).error();
      return fail(Errc::unauthorized, match.error().message);
    }
    principal.kind = Principal::Kind::user;
    principal.user = std::move(match->user);
    principal.token_id = std::move(match->token_id);
    return principal;
  }
  if (header.starts_with("MeshAgent ")) {
    auto agent = api.verifier.verify(request.method, request.target, request.field("Host"), header, api.now());
    if (!agent) {
      api.metrics.agent_signatures_refused.fetch_add(1, std::memory_order_relaxed);
      return std::move(agent).error();
    }
    auto card = api.storage->get_card(agent->str());
    if (!card) {
      if (card.error().code != Errc::not_found) return std::move(card).error();
      return fail(Errc::unauthorized,
                  "this agent has no card in the registry: register it with a user token or a setup key first");
    }
    principal.kind = Principal::Kind::agent;
    principal.agent_card = std::move(card).value();
    return principal;
  }
  return fail(Errc::unauthorized,
              "Authorization must be \"Bearer <token>\" or \"MeshAgent agent_id=<id>,ts=<ms>,sig=<signature>\"");
}

bool origin_allowed(const RegistryOptions& options, std::string_view origin) {
  return !origin.empty() &&
         std::find(options.cors_origins.begin(), options.cors_origins.end(), origin) != options.cors_origins.end();
}

}  // namespace

// ---- Principal ----

std::string Principal::actor() const {
  switch (kind) {
    case Kind::user: return "user:" + (user ? user->id : std::string());
    case Kind::admin: return "admin";
    case Kind::agent: return "agent:" + (agent_card ? agent_card->agent_id : std::string());
    case Kind::anonymous: break;
  }
  return "anonymous";
}

// ---- BlockingWorkers ----

BlockingWorkers::BlockingWorkers(std::size_t threads, std::size_t max_queued) : max_queued_(max_queued) {
  for (std::size_t i = 0; i < threads; ++i) {
    threads_.emplace_back([this] {
      for (;;) {
        std::function<void()> job;
        {
          std::unique_lock lock(mutex_);
          wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
          if (jobs_.empty()) return;  // stopping and drained
          job = std::move(jobs_.front());
          jobs_.pop_front();
        }
        job();
      }
    });
  }
}

BlockingWorkers::~BlockingWorkers() { stop(); }

bool BlockingWorkers::post(std::function<void()> job) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || jobs_.size() >= max_queued_) return false;
    jobs_.push_back(std::move(job));
  }
  wake_.notify_one();
  return true;
}

void BlockingWorkers::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
  threads_.clear();
}

// ---- SyncWaiters ----

SyncWaiters::SyncWaiters(std::function<http::Response(const Waiter&)> answer, std::function<std::int64_t()> now_ms)
    : answer_(std::move(answer)), now_ms_(std::move(now_ms)) {
  thread_ = std::thread([this] { run(); });
}

SyncWaiters::~SyncWaiters() { stop(); }

bool SyncWaiters::add(Waiter waiter) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || waiters_.size() >= kMaxWaiters) return false;
    waiters_.push_back(std::move(waiter));
  }
  wake_.notify_one();
  return true;
}

void SyncWaiters::on_version(std::int64_t version) {
  {
    std::lock_guard lock(mutex_);
    version_ = std::max(version_, version);
  }
  wake_.notify_one();
}

void SyncWaiters::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void SyncWaiters::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    const std::int64_t now = now_ms_();
    std::vector<Waiter> due;
    std::int64_t earliest = INT64_MAX;
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (stopping_ || version_ > it->since || it->deadline_ms <= now) {
        due.push_back(std::move(*it));
        it = waiters_.erase(it);
      } else {
        earliest = std::min(earliest, it->deadline_ms);
        ++it;
      }
    }
    if (!due.empty()) {
      lock.unlock();
      for (auto& waiter : due) waiter.respond(answer_(waiter));
      lock.lock();
      continue;  // re-check: the clock moved and more may have arrived
    }
    if (stopping_) return;
    const std::int64_t seen = version_;
    const std::size_t count = waiters_.size();
    auto changed = [&] { return stopping_ || version_ != seen || waiters_.size() != count; };
    if (earliest == INT64_MAX) {
      wake_.wait(lock, changed);
    } else {
      wake_.wait_for(lock, std::chrono::milliseconds(std::max<std::int64_t>(1, earliest - now)), changed);
    }
  }
}

// ---- Impl ----

RegistryService::Impl::Impl(std::shared_ptr<RegistryStorage> storage_in, RegistryOptions options_in, RelayLink relay_in,
                            std::function<std::int64_t()> now_in)
    : storage(std::move(storage_in)),
      options(std::move(options_in)),
      relay(std::move(relay_in)),
      now(now_in ? std::move(now_in) : std::function<std::int64_t()>(system_now_ms)) {
  if (options.oauth) oauth.emplace(*options.oauth);
  sync_waiters = std::make_unique<SyncWaiters>(
      [this](const SyncWaiters::Waiter& waiter) { return acl_sync_answer(*this, waiter); }, now);
  if (auto version = storage->acl_version()) sync_waiters->on_version(*version);
  storage->set_acl_listener([waiters = sync_waiters.get()](std::int64_t version) { waiters->on_version(version); });
}

void RegistryService::Impl::dispatch(Call& call) {
  const std::string_view path = call.request.path();
  if (!path.starts_with(kApiPrefix)) {
    call.respond(error_response(Errc::not_found, "no such endpoint (the API is under /api/v1/)"));
    return;
  }
  const auto segments = segments_of(path.substr(kApiPrefix.size()));
  const Route* found = nullptr;
  std::vector<std::string_view> raw_params;
  std::string allowed;
  for (const auto& route : kRoutes) {
    std::vector<std::string_view> params;
    if (!matches(route.pattern, segments, params)) continue;
    if (route.method == call.request.method) {
      found = &route;
      raw_params = std::move(params);
      break;
    }
    if (allowed.find(route.method) == std::string::npos) {
      if (!allowed.empty()) allowed += ", ";
      allowed += route.method;
    }
  }
  if (found == nullptr) {
    if (allowed.empty()) {
      call.respond(error_response(Errc::not_found, "no such endpoint: " + std::string(path.substr(0, 128))));
    } else {
      auto response = error_response(Errc::bad_request, "method " + call.request.method.substr(0, 16) +
                                                            " not allowed here; allowed: " + allowed);
      response.status = 405;
      response.set("Allow", allowed);
      call.respond(std::move(response));
    }
    return;
  }
  for (auto raw : raw_params) {
    auto decoded = percent_decode(raw, false);
    if (!decoded) {
      call.respond(error_response(decoded.error()));
      return;
    }
    call.params.push_back(std::move(decoded).value());
  }
  auto query = parse_query(call.request.query());
  if (!query) {
    call.respond(error_response(query.error()));
    return;
  }
  call.query = std::move(query).value();
  auto principal = authenticate(*this, call.request);
  if (!principal) {
    call.respond(error_response(principal.error()));
    return;
  }
  call.principal = std::move(principal).value();
  Answer answer = found->handler(*this, call);
  if (answer) call.respond(std::move(*answer));
}

// ---- RegistryService ----

RegistryService::RegistryService(std::shared_ptr<RegistryStorage> storage, RegistryOptions options, RelayLink relay,
                                 std::function<std::int64_t()> now_ms)
    : impl_(std::make_unique<Impl>(std::move(storage), std::move(options), std::move(relay), std::move(now_ms))) {
  start_relay_resync(*impl_);
}

RegistryService::~RegistryService() {
  shutdown();
  impl_->storage->set_acl_listener({});
}

void RegistryService::handle(http::Request request, http::Responder respond) {
  Impl& api = *impl_;
  const std::uint64_t started = steady_ns();
  const std::string origin(request.field("Origin"));
  const bool cors = origin_allowed(api.options, origin);
  // Every answer passes here: CORS headers for allowed origins, metrics.
  http::Responder finish = [&api, started, origin, cors, respond = std::move(respond)](http::Response response) {
    if (cors) {
      response.set("Access-Control-Allow-Origin", origin);
      response.set("Vary", "Origin");
      response.set("Access-Control-Expose-Headers", "ETag, Retry-After");
    }
    api.metrics.count_request(response.status);
    api.metrics.observe_duration_ns(steady_ns() - started);
    respond(std::move(response));
  };
  if (request.method == "OPTIONS") {
    // CORS preflight: only for allow-listed origins (registry.md: CORS off unless allow-listed).
    if (!cors) {
      finish(error_response(Errc::forbidden, origin.empty() ? "OPTIONS is only answered for CORS preflights"
                                                            : "this origin is not in --cors-origin"));
      return;
    }
    http::Response response{204, {}, {}};
    response.set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE");
    response.set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-None-Match");
    response.set("Access-Control-Max-Age", "600");
    finish(std::move(response));
    return;
  }
  Call call;
  call.request = std::move(request);
  call.respond = std::move(finish);
  api.dispatch(call);
}

bool RegistryService::may_authenticate(const std::string& agent_id) {
  Impl& api = *impl_;
  const std::int64_t now = api.now();
  if (auto card = api.storage->get_card(agent_id); card) {
    auto revoked = api.storage->is_revoked(agent_id, now);
    return revoked && !*revoked;
  }
  // A rotated-away ID has no card any more but routes until grace_until (protocol §7).
  auto revocation = api.storage->get_revocation(agent_id);
  return revocation && revocation->kind == RevocationKind::rotation && revocation->effective_at > now;
}

Result<std::optional<std::string>> RegistryService::bootstrap() {
  Impl& api = *impl_;
  AGENT_MESH_TRY_ASSIGN(const std::int64_t users, api.storage->count_users());
  if (users > 0) return std::optional<std::string>{};
  const std::int64_t now = api.now();
  AGENT_MESH_TRY_ASSIGN(User admin, api.storage->create_user(NewUser{"admin", std::nullopt}, now));
  std::string token = generate_secret();
  AGENT_MESH_TRY(api.storage->create_token(NewApiToken{admin.id, "bootstrap", hash_secret(token), std::nullopt}, now));
  Principal system;
  system.kind = Principal::Kind::admin;
  audit(api, system, "user.bootstrap", admin.id);
  return std::optional<std::string>{std::move(token)};
}

void RegistryService::shutdown() {
  impl_->sync_waiters->stop();
  impl_->workers.stop();
}

// ---- helpers shared by the handlers ----

Result<boost::json::object> body_object(const Call& call) {
  if (call.request.body.empty()) return fail(Errc::bad_request, "request body: expected a JSON object");
  json::ParseOptions options;
  options.max_bytes = 1024 * 1024;
  AGENT_MESH_TRY_ASSIGN(auto value, json::parse_ijson(call.request.body, options));
  if (!value.is_object()) return fail(Errc::bad_request, "request body: expected a JSON object");
  return std::move(value.as_object());
}

std::optional<std::string_view> query_value(const Call& call, std::string_view name) {
  auto it = call.query.find(name);
  if (it == call.query.end()) return std::nullopt;
  return std::string_view(it->second);
}

Result<PageRequest> page_request(const Call& call) {
  PageRequest page;
  if (auto limit = query_value(call, "limit")) {
    std::int64_t value = 0;
    const auto* first = limit->data();
    const auto* last = first + limit->size();
    auto [end, ec] = std::from_chars(first, last, value);
    if (ec != std::errc{} || end != last || value < 1 || value > kMaxPageLimit) {
      return fail(Errc::bad_request, "limit must be an integer from 1 to " + std::to_string(kMaxPageLimit));
    }
    page.limit = value;
  }
  if (auto cursor = query_value(call, "cursor")) page.cursor = std::string(*cursor);
  return page;
}

Result<std::optional<std::int64_t>> optional_future_time(const boost::json::object& body, std::string_view member,
                                                        std::int64_t now) {
  const auto* value = body.if_contains(member);
  if (value == nullptr) return std::optional<std::int64_t>{};
  if (!value->is_string()) {
    return fail(Errc::bad_request, std::string(member) + " must be an RFC 3339 time, e.g. 2030-01-01T00:00:00Z");
  }
  auto ms = parse_rfc3339(value->as_string());
  if (!ms) return fail(Errc::bad_request, std::string(member) + ": " + ms.error().message);
  if (*ms <= now) return fail(Errc::bad_request, std::string(member) + " must be in the future");
  return std::optional<std::int64_t>{*ms};
}

Status require_user_or_admin(const Principal& principal) {
  switch (principal.kind) {
    case Principal::Kind::user:
    case Principal::Kind::admin: return {};
    case Principal::Kind::agent:
      return fail(Errc::forbidden, "an agent signature does not grant this; use a user's API token");
    case Principal::Kind::anonymous: break;
  }
  return fail(Errc::unauthorized, "credentials required: Authorization: Bearer <API token>");
}

Result<std::vector<std::string>> visible_groups(RegistryService::Impl& api, const Principal& principal) {
  std::vector<std::string> out;
  switch (principal.kind) {
    case Principal::Kind::user: {
      AGENT_MESH_TRY_ASSIGN(auto groups, api.storage->groups_of_user(principal.user->id));
      for (auto& group : groups) out.push_back(std::move(group.group.id));
      return out;
    }
    case Principal::Kind::agent:
      out.push_back(principal.agent_card->group_id);
      return out;
    case Principal::Kind::admin: return api.storage->all_group_ids();
    case Principal::Kind::anonymous: break;
  }
  return fail(Errc::unauthorized, "credentials required: an API token or an agent signature");
}

Result<std::optional<GroupRole>> role_in_group(RegistryService::Impl& api, const Principal& principal,
                                              std::string_view group_id) {
  if (principal.is_admin()) {
    AGENT_MESH_TRY(api.storage->get_group(group_id));
    return std::optional<GroupRole>{GroupRole::owner};
  }
  if (!principal.is_user()) return std::optional<GroupRole>{};
  return api.storage->member_role(group_id, principal.user->id);
}

http::Response json_response(int status, const boost::json::value& body) {
  return http::Response::json(status, json::serialize_jcs(body));
}

http::Response error_response(const Error& error) {
  auto response = http::Response::json(http_status(error.code), error.to_http_json());
  if (error.code == Errc::rate_limited) response.set("Retry-After", "1");
  return response;
}

boost::json::object page_json(boost::json::array items, const std::optional<std::string>& next_cursor) {
  boost::json::object out{{"items", std::move(items)}};
  if (next_cursor) out["next_cursor"] = *next_cursor;
  return out;
}

std::string rfc3339(std::int64_t ms) { return format_rfc3339_ms(ms); }

std::optional<RelayLink::Presence> presence_of(RegistryService::Impl& api, std::string_view agent_id) {
  if (!api.relay.online_agents) return std::nullopt;
  for (auto& presence : api.relay.online_agents()) {
    if (presence.agent_id == agent_id) return presence;
  }
  return std::nullopt;
}

boost::json::object card_json(const AgentCardRecord& card, const std::optional<RelayLink::Presence>& presence) {
  boost::json::object out;
  out["agent_id"] = card.agent_id;
  out["group_id"] = card.group_id;
  if (card.owner_id) out["owner_id"] = *card.owner_id;
  out["name"] = card.name;
  if (card.description) out["description"] = *card.description;
  if (auto capabilities = json::parse_ijson(card.capabilities_json)) out["capabilities"] = std::move(capabilities).value();
  if (card.metadata_json) {
    if (auto metadata = json::parse_ijson(*card.metadata_json)) out["metadata"] = std::move(metadata).value();
  }
  out["timestamp"] = card.timestamp;
  out["signature"] = card.signature;
  out["registered_at"] = rfc3339(card.registered_at);
  out["updated_at"] = rfc3339(card.updated_at);
  out["online"] = presence.has_value();
  if (presence) out["last_seen"] = rfc3339(presence->last_seen_ms);
  return out;
}

void audit(RegistryService::Impl& api, const Principal& principal, std::string action, std::string target,
           boost::json::object detail) {
  AuditEntry entry;
  entry.at = api.now();
  entry.actor = principal.actor();
  entry.action = std::move(action);
  entry.target = std::move(target);
  entry.detail_json = json::serialize_jcs(detail);
  if (auto stored = api.storage->append_audit(std::move(entry)); !stored) {
    std::fprintf(stderr, "registry: audit log write failed: %s\n", stored.error().message.c_str());
  }
}

}  // namespace agent_mesh::registry
