// Internals of the registry's REST API shared by the handler files (api_*.cpp): the service state,
// the authenticated caller, and the helpers every handler uses to read requests and write answers.
// Not a public header: only src/registry includes it.
#pragma once

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "agent_mesh/agent_card.hpp"
#include "agent_mesh/error.hpp"
#include "agent_mesh/result.hpp"
#include "net/http_exchange.hpp"
#include "registry/credentials.hpp"
#include "registry/device_flow.hpp"
#include "registry/registry_metrics.hpp"
#include "registry/registry_service.hpp"
#include "registry/storage.hpp"

// Declare-and-assign from a Result<T>, propagating its error:
//   AGENT_MESH_TRY_ASSIGN(auto user, storage.find_user(id));
#define AGENT_MESH_CONCAT_INNER_(a, b) a##b
#define AGENT_MESH_CONCAT_(a, b) AGENT_MESH_CONCAT_INNER_(a, b)
#define AGENT_MESH_TRY_ASSIGN_IMPL_(tmp, decl, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return std::move(tmp).error();      \
  decl = std::move(tmp).value()
#define AGENT_MESH_TRY_ASSIGN(decl, expr) \
  AGENT_MESH_TRY_ASSIGN_IMPL_(AGENT_MESH_CONCAT_(agent_mesh_try_, __LINE__), decl, expr)

namespace agent_mesh::registry {

// Who is calling (registry.md "Credentials").
struct Principal {
  enum class Kind : std::uint8_t { anonymous, user, admin, agent };
  Kind kind = Kind::anonymous;
  std::optional<User> user;                   // kind == user
  std::string token_id;                       // kind == user: the API token used
  std::optional<AgentCardRecord> agent_card;  // kind == agent: its card (hence its group)

  [[nodiscard]] bool is_user() const noexcept { return kind == Kind::user; }
  [[nodiscard]] bool is_admin() const noexcept { return kind == Kind::admin; }
  [[nodiscard]] bool is_agent() const noexcept { return kind == Kind::agent; }
  // The audit log's actor: "user:<id>", "admin", "agent:<id>", "anonymous".
  [[nodiscard]] std::string actor() const;
};

// One request on its way through a handler.
struct Call {
  http::Request request;
  std::vector<std::string> params;  // the path's {parameters}, in order, percent-decoded
  std::multimap<std::string, std::string, std::less<>> query;  // percent-decoded
  Principal principal;
  http::Responder respond;  // for handlers that answer later; others return their answer
};

// A handler's answer now, or nullopt when it keeps call.respond to answer later.
using Answer = std::optional<http::Response>;

// Runs blocking work (calls to the OAuth provider) off the network threads: a fixed pool and a
// bounded queue; post() is false when the queue is full (answer 503).
class BlockingWorkers {
 public:
  BlockingWorkers(std::size_t threads, std::size_t max_queued);
  ~BlockingWorkers();
  BlockingWorkers(const BlockingWorkers&) = delete;
  BlockingWorkers& operator=(const BlockingWorkers&) = delete;
  [[nodiscard]] bool post(std::function<void()> job);
  void stop();

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  std::size_t max_queued_;
  bool stopping_ = false;
};

// GET /acl/sync long polls waiting for the ACL version to pass `since` (registry.md: a change
// reaches every daemon within 2 s). One thread sleeps until the earliest deadline or a change.
class SyncWaiters {
 public:
  struct Waiter {
    std::string agent_id;
    std::int64_t since = 0;
    std::int64_t deadline_ms = 0;  // answer with whatever is current by then
    http::Responder respond;
  };
  // `answer(waiter)` builds the reply for a waiter (current snapshot); called on this class's thread.
  SyncWaiters(std::function<http::Response(const Waiter&)> answer, std::function<std::int64_t()> now_ms);
  ~SyncWaiters();
  SyncWaiters(const SyncWaiters&) = delete;
  SyncWaiters& operator=(const SyncWaiters&) = delete;
  // false when too many are waiting (answer 503 instead of holding without bound).
  [[nodiscard]] bool add(Waiter waiter);
  void on_version(std::int64_t version);
  // Answers everyone now and stops.
  void stop();

 private:
  void run();
  static constexpr std::size_t kMaxWaiters = 50000;
  std::function<http::Response(const Waiter&)> answer_;
  std::function<std::int64_t()> now_ms_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Waiter> waiters_;
  std::int64_t version_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

// Pending device-flow logins: the provider's device_code stays with the registry, the client gets
// an opaque handle (so the provider's code is never needed by, or exposed to, anyone else).
struct DeviceLogin {
  std::string provider_device_code;
  std::int64_t expires_at_ms = 0;
  std::int64_t interval_ms = 5000;
  std::int64_t next_poll_at_ms = 0;  // polling earlier answers slow_down
};

struct RegistryService::Impl {
  Impl(std::shared_ptr<RegistryStorage> storage_in, RegistryOptions options_in, RelayLink relay_in,
       std::function<std::int64_t()> now_in);

  std::shared_ptr<RegistryStorage> storage;
  RegistryOptions options;
  RelayLink relay;
  std::function<std::int64_t()> now;
  AgentRequestVerifier verifier;
  std::optional<DeviceFlowProvider> oauth;
  RegistryMetrics metrics;
  BlockingWorkers workers{2, 256};
  std::unique_ptr<SyncWaiters> sync_waiters;

  std::mutex device_mutex;
  std::unordered_map<std::string, DeviceLogin> device_logins;  // by the handle given to the client

  void dispatch(Call& call);
};

// ---- Reading requests ----

// The body as an I-JSON object (at most 1 MiB). Errors: bad_request naming the problem.
[[nodiscard]] Result<boost::json::object> body_object(const Call& call);
// The first value of a query parameter.
[[nodiscard]] std::optional<std::string_view> query_value(const Call& call, std::string_view name);
// limit (1..200, default 50) and cursor. Error: bad_request.
[[nodiscard]] Result<PageRequest> page_request(const Call& call);
// An optional RFC 3339 member (e.g. expires_at) as Unix ms; must be in the future. Error: bad_request.
[[nodiscard]] Result<std::optional<std::int64_t>> optional_future_time(const boost::json::object& body,
                                                                      std::string_view member, std::int64_t now);

// ---- Who may do what ----

// A user or the admin token; agents get forbidden, anonymous callers unauthorized.
[[nodiscard]] Status require_user_or_admin(const Principal& principal);
// Group IDs this caller may see (a user's groups, an agent's own group, every group for admin).
[[nodiscard]] Result<std::vector<std::string>> visible_groups(RegistryService::Impl& api, const Principal& principal);
// The caller's role in a group: admin token counts as owner; agents have none. Absent: not a member.
[[nodiscard]] Result<std::optional<GroupRole>> role_in_group(RegistryService::Impl& api, const Principal& principal,
                                                            std::string_view group_id);
[[nodiscard]] inline bool is_group_admin(std::optional<GroupRole> role) {
  return role == GroupRole::owner || role == GroupRole::admin;
}

// ---- Writing answers ----

[[nodiscard]] http::Response json_response(int status, const boost::json::value& body);
[[nodiscard]] http::Response error_response(const Error& error);
[[nodiscard]] inline http::Response error_response(Errc code, std::string message) {
  return error_response(Error{code, std::move(message)});
}
// {"items": [...], "next_cursor"?: "..."}
[[nodiscard]] boost::json::object page_json(boost::json::array items, const std::optional<std::string>& next_cursor);
[[nodiscard]] std::string rfc3339(std::int64_t ms);

// The card resource (registry.md "Agent cards") with online/last_seen from the relay's view.
[[nodiscard]] boost::json::object card_json(const AgentCardRecord& card, const std::optional<RelayLink::Presence>& presence);
[[nodiscard]] std::optional<RelayLink::Presence> presence_of(RegistryService::Impl& api, std::string_view agent_id);

// Appends to the audit log; a failure is logged, never fatal to the request that succeeded.
void audit(RegistryService::Impl& api, const Principal& principal, std::string action, std::string target,
           boost::json::object detail = {});

// The storage record of a verified signed card; `text` is the card as received.
[[nodiscard]] AgentCardRecord card_record(const AgentCard& card, std::string text,
                                          std::optional<std::string> owner_id);

// ---- Handlers (api_*.cpp); each answers now or keeps call.respond ----

// api_principals.cpp
Answer get_users_me(RegistryService::Impl& api, Call& call);
Answer list_groups(RegistryService::Impl& api, Call& call);
Answer create_group(RegistryService::Impl& api, Call& call);
Answer add_group_member(RegistryService::Impl& api, Call& call);
Answer remove_group_member(RegistryService::Impl& api, Call& call);
Answer list_tokens(RegistryService::Impl& api, Call& call);
Answer create_token(RegistryService::Impl& api, Call& call);
Answer delete_token(RegistryService::Impl& api, Call& call);
Answer list_setup_keys(RegistryService::Impl& api, Call& call);
Answer create_setup_key(RegistryService::Impl& api, Call& call);
Answer delete_setup_key(RegistryService::Impl& api, Call& call);
Answer oauth_device(RegistryService::Impl& api, Call& call);
Answer oauth_token(RegistryService::Impl& api, Call& call);

// api_agents.cpp
Answer register_agent(RegistryService::Impl& api, Call& call);           // POST /agents
Answer register_with_key(RegistryService::Impl& api, Call& call);        // POST /register-with-key
Answer search_agents(RegistryService::Impl& api, Call& call);            // GET /agents
Answer get_agent(RegistryService::Impl& api, Call& call);                // GET /agents/{id}
Answer put_agent(RegistryService::Impl& api, Call& call);                // PUT /agents/{id}
Answer delete_agent(RegistryService::Impl& api, Call& call);             // DELETE /agents/{id}
Answer get_a2a_card(RegistryService::Impl& api, Call& call);             // GET /agents/{id}/agent-card.json

// api_acl.cpp
Answer list_acl(RegistryService::Impl& api, Call& call);
Answer create_acl(RegistryService::Impl& api, Call& call);
Answer delete_acl(RegistryService::Impl& api, Call& call);
Answer acl_sync(RegistryService::Impl& api, Call& call);
http::Response acl_sync_answer(RegistryService::Impl& api, const SyncWaiters::Waiter& waiter);
// At start: pushes every revocation in effect to the relays again (they store them idempotently),
// repairing pushes lost to a relay outage, and re-arms the timed pushes of rotations in grace.
void start_relay_resync(RegistryService::Impl& api);
Answer post_revocation(RegistryService::Impl& api, Call& call);          // POST /revocations
Answer list_revocations(RegistryService::Impl& api, Call& call);         // GET /revocations
Answer revoke_agent(RegistryService::Impl& api, Call& call);             // POST /agents/{id}/revoke
Answer rotate_agent(RegistryService::Impl& api, Call& call);             // POST /agents/{id}/rotate

}  // namespace agent_mesh::registry
