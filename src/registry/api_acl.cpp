// ACL rules, the daemons' ACL sync (long poll), revocations and key rotation (registry.md "ACL",
// "Revocations and rotation"; protocol §7).
//
// Decisions recorded here (docs/protocol.md should carry them too):
//   - Rules: `source` is "*" or an agent with a card in the rule's group, `target` an agent with a
//     card in the group, `allowed_capabilities` names valid per protocol §4 (no duplicates) or
//     exactly ["*"] — the checks meshd's parser applies (agent_mesh::AclRule::validate), so every
//     stored rule is one a daemon accepts. Only the target's owner, a group owner/admin or the
//     admin token may create or delete one; agents may not. Another group's rule is "not found".
//   - /acl/sync answers at once when the stored version differs from `since` (a `since` ahead of
//     the registry, e.g. after a database reset, must not stall the daemon), or when wait_s is 0;
//     otherwise it waits until the version passes `since`, wait_s runs out, or the snapshot's next
//     pending revocation (a rotation's grace_until) takes effect. `*` is expanded to one rule per
//     agent of the group, each keeping the stored rule's id and group_id (AclSync::parse accepts
//     repeated ids); the expansion is capped at limits::max_acl_sync_rules (dropping rules can only
//     deny). Users may not read it; the admin token may (debugging).
//   - Revocations are pushed to the relays right after they are stored; a failed push does not
//     fail the request (the revocation is stored, daemons learn it from /acl/sync, and the relays
//     are re-synchronised at the next start, see below): the answer then carries `relay_error`.
//   - A rotation revokes the old ID at grace_until. The relay's revocation interface only knows
//     "revoked now", so that push is deferred: a timer entry in SyncWaiters (an entry whose agent_id
//     is kRelayPushMarker + the old ID, `since` = INT64_MAX so only its deadline = grace_until
//     fires it) makes acl_sync_answer push the stored revocation when it becomes effective.
//   - Once per process start (on the first call into this file) the whole stored revocation list is
//     pushed again in the background (the relay stores revocations idempotently) and pending ones
//     are re-armed, so a restart loses no deferred push and heals failed pushes.
//   - GET /revocations is for users and the admin token (agents read theirs in /acl/sync) and lists
//     every revocation (they are global: a key revoked in one group is revoked everywhere), but
//     `reason`, `group_id` and `document` are shown only for revocations of the caller's groups
//     (and for those of agents that had no card in any group).
#include <algorithm>
#include <boost/json/serialize.hpp>
#include <charconv>
#include <climits>
#include <cstdio>
#include <map>
#include <set>

#include "agent_mesh/acl.hpp"
#include "agent_mesh/agent_card.hpp"
#include "agent_mesh/encoding.hpp"
#include "agent_mesh/json.hpp"
#include "agent_mesh/key_lifecycle.hpp"
#include "registry/api.hpp"

namespace agent_mesh::registry {

namespace {

// registry.md "Agent cards": a card older than 10 min is refused; the same ±2 min clock skew as
// agent signatures for one from the future (the rotate body's card follows registration's rules).
constexpr std::int64_t kCardMaxAgeMs = 10 * 60 * 1000;
constexpr std::int64_t kClockSkewMs = 2 * 60 * 1000;
// registry.md: `wait_s=25` in the example request; used when the daemon does not say.
constexpr std::int64_t kDefaultSyncWaitS = 25;
// SyncWaiters entries that are relay-push timers rather than long polls (cannot be an agent ID:
// those are 43 base64url characters, no ':').
constexpr std::string_view kRelayPushMarker = "relay-push:";
constexpr std::string_view kNoSuchGroup = "no such group among yours";

void log_problem(std::string_view what, std::string_view detail) {
  std::fprintf(stderr, "registry: %.*s: %.*s\n", static_cast<int>(what.size()), what.data(),
               static_cast<int>(detail.size()), detail.data());
}

std::string clipped(std::string_view text, std::size_t max = 64) {
  if (text.size() <= max) return std::string(text);
  return std::string(text.substr(0, max)) + "...";
}

// Every member name must be in `known`; otherwise bad_request naming the first unknown one.
Status reject_unknown_members(const boost::json::object& body, std::initializer_list<std::string_view> known,
                              std::string_view expected) {
  for (const auto& member : body) {
    bool found = false;
    for (auto name : known) found = found || member.key() == name;
    if (!found) {
      return fail(Errc::bad_request, "unknown member \"" + clipped(member.key()) + "\" (expected " +
                                         std::string(expected) + ")");
    }
  }
  return {};
}

Result<std::string> required_string_member(const boost::json::object& body, std::string_view name) {
  const auto* value = body.if_contains(name);
  if (value == nullptr) return fail(Errc::bad_request, std::string(name) + " is required");
  if (!value->is_string()) return fail(Errc::bad_request, std::string(name) + " must be a string");
  return std::string(value->as_string());
}

// A non-negative decimal query parameter (digits only), at most `max`.
Result<std::optional<std::int64_t>> integer_query(const Call& call, std::string_view name, std::int64_t max,
                                                 std::string_view meaning) {
  auto text = query_value(call, name);
  if (!text) return std::optional<std::int64_t>{};
  std::int64_t value = 0;
  const char* first = text->data();
  const char* last = first + text->size();
  auto [end, ec] = std::from_chars(first, last, value);
  if (text->empty() || (*text)[0] == '-' || (*text)[0] == '+' || ec != std::errc{} || end != last || value < 0 ||
      value > max) {
    return fail(Errc::bad_request, std::string(name) + " must be " + std::string(meaning));
  }
  return std::optional<std::int64_t>{value};
}

boost::json::array string_array(const std::vector<std::string>& items) {
  boost::json::array out;
  out.reserve(items.size());
  for (const auto& item : items) out.emplace_back(item);
  return out;
}

boost::json::object rule_json(const AclRule& rule) {
  return boost::json::object{{"id", rule.id},
                             {"group_id", rule.group_id},
                             {"source", rule.source},
                             {"target", rule.target},
                             {"allowed_capabilities", string_array(rule.allowed_capabilities)},
                             {"created_at", rfc3339(rule.created_at)}};
}

// The caller's role in a group it may see; not_found (never "forbidden") for a group it may not
// see, so other groups are not acknowledged to exist.
Result<GroupRole> visible_role(RegistryService::Impl& api, const Principal& principal, std::string_view group_id) {
  auto role = role_in_group(api, principal, group_id);
  if (!role) {
    if (role.error().code == Errc::not_found) return fail(Errc::not_found, std::string(kNoSuchGroup));
    return std::move(role).error();
  }
  if (!*role) return fail(Errc::not_found, std::string(kNoSuchGroup));
  return **role;
}

// The card if it is registered in `group_id`; absent otherwise (another group's card included).
Result<std::optional<AgentCardRecord>> card_in_group(RegistryService::Impl& api, std::string_view agent_id,
                                                     std::string_view group_id) {
  auto card = api.storage->get_card(agent_id);
  if (!card) {
    if (card.error().code == Errc::not_found) return std::optional<AgentCardRecord>{};
    return std::move(card).error();
  }
  if (card->group_id != group_id) return std::optional<AgentCardRecord>{};
  return std::optional<AgentCardRecord>{std::move(card).value()};
}

// registry.md "ACL": only the target agent's owner or a group owner/admin (the admin token counts
// as owner) may create or delete a rule.
bool may_write_rules(const Principal& principal, GroupRole role, const std::optional<AgentCardRecord>& target) {
  if (is_group_admin(role)) return true;
  return principal.is_user() && target && target->owner_id && *target->owner_id == principal.user->id;
}

// ---- Pushing revocations to the relays ----

// What a relay is told for a stored revocation: the self-signed object as submitted, otherwise an
// admin revocation (no signature) taking effect now.
std::optional<Revocation> relay_revocation_of(const RevocationRecord& record) {
  if (record.kind == RevocationKind::self) {
    if (auto parsed = Revocation::parse(record.document_json, false)) return std::move(parsed).value();
  }
  auto id = AgentId::parse(record.agent_id);
  if (!id) return std::nullopt;
  Revocation revocation;
  revocation.agent_id = std::move(id).value();
  revocation.reason = record.reason.size() <= limits::max_revocation_reason_bytes ? record.reason : "revoked";
  // A rotation's revocation takes effect at grace_until: that is when the relay starts enforcing it.
  revocation.timestamp = std::max<std::int64_t>(
      0, record.kind == RevocationKind::rotation ? record.effective_at : record.timestamp);
  return revocation;
}

Status push_to_relays(RegistryService::Impl& api, const Revocation& revocation) {
  if (!api.relay.push_revocation) return {};
  Status pushed = api.relay.push_revocation(revocation);
  if (!pushed) log_problem("pushing a revocation to the relays failed", pushed.error().message);
  return pushed;
}

// Arms a SyncWaiters timer that pushes the agent's stored revocation at `effective_at`.
void schedule_relay_push(RegistryService::Impl& api, const std::string& agent_id, std::int64_t effective_at) {
  if (!api.relay.push_revocation) return;
  SyncWaiters::Waiter timer;
  timer.agent_id = std::string(kRelayPushMarker) + agent_id;
  timer.since = INT64_MAX;  // never woken by a version change, only by its deadline
  timer.deadline_ms = effective_at;
  timer.respond = [](http::Response) {};
  if (!api.sync_waiters->add(std::move(timer))) {
    log_problem("deferred revocation push not scheduled (too many waiters; it is retried at the next start)",
                agent_id);
  }
}

// Pushes the stored revocation of `agent_id` if it is in effect now; re-arms it if still pending.
void push_stored_revocation(RegistryService::Impl& api, const std::string& agent_id) {
  auto record = api.storage->get_revocation(agent_id);
  if (!record) {
    log_problem("deferred revocation push: revocation not readable", record.error().message);
    return;
  }
  if (record->effective_at > api.now()) {
    schedule_relay_push(api, agent_id, record->effective_at);
    return;
  }
  if (auto revocation = relay_revocation_of(*record)) (void)push_to_relays(api, *revocation);
}

// Once per process start: push every stored revocation in effect again and re-arm pending ones.
void resync_relays(RegistryService::Impl& api) {
  PageRequest page;
  page.limit = kMaxPageLimit;
  const std::int64_t now = api.now();
  for (;;) {
    auto listed = api.storage->list_revocations(page);
    if (!listed) {
      log_problem("relay resync: listing revocations failed", listed.error().message);
      return;
    }
    for (const auto& record : listed->items) {
      if (record.effective_at > now) {
        schedule_relay_push(api, record.agent_id, record.effective_at);
      } else if (auto revocation = relay_revocation_of(record)) {
        (void)push_to_relays(api, *revocation);
      }
    }
    if (!listed->next_cursor) return;
    page.cursor = *listed->next_cursor;
  }
}

struct RevocationAnswer {
  RevocationRecord record;
  std::optional<std::string> relay_error;
};

// Stores a revocation effective now and pushes it to the relays.
Result<RevocationAnswer> revoke_now(RegistryService::Impl& api, const Revocation& revocation, RevocationKind kind) {
  NewRevocation stored;
  stored.agent_id = revocation.agent_id.str();
  stored.kind = kind;
  stored.reason = revocation.reason;
  stored.timestamp = revocation.timestamp;
  stored.effective_at = api.now();
  stored.document_json = revocation.serialize();
  AGENT_MESH_TRY_ASSIGN(StoredRevocation result, api.storage->store_revocation(stored, api.now()));
  RevocationAnswer answer{std::move(result.revocation), std::nullopt};
  // Pushed even when it was stored before: a relay that missed the first push learns it now.
  Status pushed = push_to_relays(api, revocation);
  if (!pushed) answer.relay_error = pushed.error().message;
  return answer;
}

boost::json::object revocation_answer_json(const RevocationAnswer& answer) {
  boost::json::object out{{"revoked", true},
                          {"agent_id", answer.record.agent_id},
                          {"effective_at", rfc3339(answer.record.effective_at)}};
  if (answer.relay_error) out["relay_error"] = *answer.relay_error;
  return out;
}

// ---- Cards in a rotate body ----

AgentCardRecord record_of(const AgentCard& card, std::string text) {
  return card_record(card, std::move(text), std::nullopt);
}

http::Response unavailable(std::string message) {
  auto response = error_response(Errc::rate_limited, std::move(message));
  response.status = 503;
  response.set("Retry-After", "1");
  return response;
}

}  // namespace

void start_relay_resync(RegistryService::Impl& api) {
  if (!api.relay.push_revocation) return;
  // Best effort: with the queue full (impossible at start) the next start repairs it.
  (void)api.workers.post([&api] { resync_relays(api); });
}

// ---- GET /acl ----

Answer list_acl(RegistryService::Impl& api, Call& call) {
  if (auto allowed = require_user_or_admin(call.principal); !allowed) return error_response(allowed.error());
  auto groups = visible_groups(api, call.principal);
  if (!groups) return error_response(groups.error());
  std::vector<std::string> wanted = std::move(groups).value();
  if (auto group = query_value(call, "group")) {
    if (std::find(wanted.begin(), wanted.end(), *group) == wanted.end()) {
      return error_response(Errc::not_found, std::string(kNoSuchGroup));
    }
    wanted = {std::string(*group)};
  }
  auto page = page_request(call);
  if (!page) return error_response(page.error());
  auto rules = api.storage->list_rules(wanted, *page);
  if (!rules) return error_response(rules.error());
  boost::json::array items;
  items.reserve(rules->items.size());
  for (const auto& rule : rules->items) items.push_back(rule_json(rule));
  return json_response(200, page_json(std::move(items), rules->next_cursor));
}

// ---- POST /acl ----

Answer create_acl(RegistryService::Impl& api, Call& call) {
  const Principal& principal = call.principal;
  if (principal.is_agent()) {
    return error_response(Errc::forbidden, "an agent signature does not grant writing ACL rules; use a user's API token");
  }
  if (auto allowed = require_user_or_admin(principal); !allowed) return error_response(allowed.error());

  // The body's shape first (400), then what it names (404), then the caller's rights (403).
  auto body = body_object(call);
  if (!body) return error_response(body.error());
  if (auto known = reject_unknown_members(*body, {"group_id", "source", "target", "allowed_capabilities"},
                                          "group_id, source, target, allowed_capabilities");
      !known) {
    return error_response(known.error());
  }
  auto group_id = required_string_member(*body, "group_id");
  if (!group_id) return error_response(group_id.error());
  auto source_text = required_string_member(*body, "source");
  if (!source_text) return error_response(source_text.error());
  auto target_text = required_string_member(*body, "target");
  if (!target_text) return error_response(target_text.error());
  const auto* capabilities = body->if_contains("allowed_capabilities");
  if (capabilities == nullptr) {
    return error_response(Errc::bad_request, "allowed_capabilities is required: capability names or [\"*\"]");
  }
  if (!capabilities->is_array()) {
    return error_response(Errc::bad_request, "allowed_capabilities must be an array of capability names or [\"*\"]");
  }

  agent_mesh::AclRule checked;  // meshd's own checks, so the sync answer always parses
  auto source = AclSource::parse(*source_text);
  if (!source) return error_response(Errc::bad_request, "source must be \"*\" or an agent ID: " + source.error().message);
  checked.source = std::move(source).value();
  auto target = AgentId::parse(*target_text);
  if (!target) return error_response(Errc::bad_request, "target must be an agent ID: " + target.error().message);
  checked.target = std::move(target).value();
  if (capabilities->as_array().size() > limits::max_acl_rule_capabilities) {
    return error_response(Errc::bad_request, "allowed_capabilities has more than " +
                                                 std::to_string(limits::max_acl_rule_capabilities) + " names");
  }
  for (std::size_t i = 0; i < capabilities->as_array().size(); ++i) {
    const auto& name = capabilities->as_array()[i];
    if (!name.is_string()) {
      return error_response(Errc::bad_request, "allowed_capabilities[" + std::to_string(i) + "] must be a string");
    }
    checked.allowed_capabilities.emplace_back(name.as_string());
  }
  if (auto valid = checked.validate(); !valid) return error_response(valid.error());

  auto role = visible_role(api, principal, *group_id);
  if (!role) return error_response(role.error());
  auto target_card = card_in_group(api, *target_text, *group_id);
  if (!target_card) return error_response(target_card.error());
  if (!*target_card) {
    return error_response(Errc::not_found, "target: no agent with this ID is registered in group " + *group_id);
  }
  if (!may_write_rules(principal, *role, *target_card)) {
    return error_response(Errc::forbidden,
                          "only the target agent's owner or a group owner/admin may create rules for it");
  }
  if (!checked.source.is_any()) {
    auto source_card = card_in_group(api, *source_text, *group_id);
    if (!source_card) return error_response(source_card.error());
    if (!*source_card) {
      return error_response(Errc::not_found, "source: no agent with this ID is registered in group " + *group_id +
                                                 " (a rule's source is an agent of its group, or \"*\" for all of them)");
    }
  }

  NewAclRule rule;
  rule.group_id = *group_id;
  rule.source = *source_text;
  rule.target = *target_text;
  rule.allowed_capabilities = checked.allowed_capabilities;
  rule.created_by = principal.actor();
  auto created = api.storage->create_rule(rule, api.now());
  if (!created) return error_response(created.error());
  audit(api, principal, "acl.create", created->id,
        boost::json::object{{"group_id", created->group_id},
                            {"source", created->source},
                            {"target", created->target},
                            {"allowed_capabilities", string_array(created->allowed_capabilities)}});
  return json_response(201, rule_json(*created));
}

// ---- DELETE /acl/{id} ----

Answer delete_acl(RegistryService::Impl& api, Call& call) {
  const Principal& principal = call.principal;
  if (principal.is_agent()) {
    return error_response(Errc::forbidden, "an agent signature does not grant deleting ACL rules; use a user's API token");
  }
  if (auto allowed = require_user_or_admin(principal); !allowed) return error_response(allowed.error());
  constexpr std::string_view kNoRule = "no ACL rule with this ID in your groups";
  auto rule = api.storage->get_rule(call.params[0]);
  if (!rule) {
    if (rule.error().code == Errc::not_found) return error_response(Errc::not_found, std::string(kNoRule));
    return error_response(rule.error());
  }
  auto role = visible_role(api, principal, rule->group_id);
  if (!role) {
    if (role.error().code == Errc::not_found) return error_response(Errc::not_found, std::string(kNoRule));
    return error_response(role.error());
  }
  auto target_card = card_in_group(api, rule->target, rule->group_id);
  if (!target_card) return error_response(target_card.error());
  if (!may_write_rules(principal, *role, *target_card)) {
    return error_response(Errc::forbidden,
                          "only the target agent's owner or a group owner/admin may delete rules for it");
  }
  if (auto deleted = api.storage->delete_rule(rule->id); !deleted) {
    if (deleted.error().code == Errc::not_found) return error_response(Errc::not_found, std::string(kNoRule));
    return error_response(deleted.error());
  }
  audit(api, principal, "acl.delete", rule->id,
        boost::json::object{{"group_id", rule->group_id}, {"source", rule->source}, {"target", rule->target}});
  return http::Response{204, {}, {}};
}

// ---- GET /acl/sync ----

Answer acl_sync(RegistryService::Impl& api, Call& call) {
  const Principal& principal = call.principal;
  switch (principal.kind) {
    case Principal::Kind::anonymous:
      return error_response(Errc::unauthorized,
                            "the ACL sync needs the agent's signature: Authorization: MeshAgent agent_id=...,ts=...,sig=...");
    case Principal::Kind::user:
      return error_response(Errc::forbidden,
                            "the ACL sync is read with the agent's own signature (MeshAgent), not a user's token");
    case Principal::Kind::agent:
    case Principal::Kind::admin: break;
  }
  auto agent_text = query_value(call, "agent_id");
  if (!agent_text) return error_response(Errc::bad_request, "agent_id is required");
  if (auto agent = AgentId::parse(*agent_text); !agent) {
    return error_response(Errc::bad_request, "agent_id: " + agent.error().message);
  }
  const std::string agent_id(*agent_text);
  if (principal.is_agent() && principal.agent_card->agent_id != agent_id) {
    return error_response(Errc::forbidden, "an agent may read only its own ACL sync");
  }
  auto since = integer_query(call, "since", INT64_MAX, "a non-negative integer (the last version seen)");
  if (!since) return error_response(since.error());
  auto wait_s = integer_query(call, "wait_s", api.options.max_sync_wait_s,
                              "an integer from 0 to " + std::to_string(api.options.max_sync_wait_s));
  if (!wait_s) return error_response(wait_s.error());

  const std::int64_t now = api.now();
  auto snapshot = api.storage->acl_snapshot(agent_id, now);
  if (!snapshot) {
    if (snapshot.error().code == Errc::not_found) return error_response(Errc::not_found, "no agent with this ID");
    return error_response(snapshot.error());
  }
  const std::int64_t seen = since->value_or(0);
  const std::int64_t wait_ms =
      wait_s->value_or(std::min(kDefaultSyncWaitS, std::max<std::int64_t>(0, api.options.max_sync_wait_s))) * 1000;
  if (snapshot->version != seen || wait_ms == 0) {
    SyncWaiters::Waiter now_waiter;
    now_waiter.agent_id = agent_id;
    now_waiter.since = seen;
    return acl_sync_answer(api, now_waiter);
  }
  SyncWaiters::Waiter waiter;
  waiter.agent_id = agent_id;
  waiter.since = seen;
  waiter.deadline_ms = now + wait_ms;
  // The answer changes when a pending revocation (a rotation's grace_until) takes effect.
  if (snapshot->next_revocation_at) waiter.deadline_ms = std::min(waiter.deadline_ms, *snapshot->next_revocation_at);
  waiter.respond = call.respond;  // a copy: if add() refuses, the dispatcher still answers with ours
  if (!api.sync_waiters->add(std::move(waiter))) {
    return unavailable("too many ACL syncs are waiting; retry shortly");
  }
  return std::nullopt;
}

http::Response acl_sync_answer(RegistryService::Impl& api, const SyncWaiters::Waiter& waiter) {
  if (std::string_view(waiter.agent_id).starts_with(kRelayPushMarker)) {
    // A deferred relay push (see the top of this file), not a long poll. At shutdown every entry is
    // answered early: a push not yet due is left for the next start's resync.
    if (api.now() >= waiter.deadline_ms) {
      std::string agent_id = waiter.agent_id.substr(kRelayPushMarker.size());
      // Off this thread: a standalone registry's push is an HTTP call, and the long polls wait here.
      if (!api.workers.post([&api, agent_id] { push_stored_revocation(api, agent_id); })) {
        push_stored_revocation(api, agent_id);
      }
    }
    return http::Response{204, {}, {}};
  }
  const std::int64_t now = api.now();
  auto snapshot = api.storage->acl_snapshot(waiter.agent_id, now);
  if (!snapshot) {
    if (snapshot.error().code != Errc::not_found) return error_response(snapshot.error());
    // The card went away while the daemon waited: say why when a revocation is the reason.
    auto revocation = api.storage->get_revocation(waiter.agent_id);
    if (revocation) {
      if (revocation->effective_at <= now) {
        return error_response(Errc::revoked, "this agent is revoked: " + clipped(revocation->reason, 256));
      }
      return error_response(Errc::not_found,
                            "this agent ID was rotated (" + clipped(revocation->reason, 256) + "); sync with the new ID");
    }
    return error_response(Errc::not_found, "no agent with this ID (its card was deleted)");
  }
  boost::json::array rules;
  std::size_t count = 0;
  bool truncated = false;
  auto add_rule = [&](const AclRule& rule, const std::string& source) {
    if (count >= limits::max_acl_sync_rules) {
      truncated = true;
      return;
    }
    ++count;
    rules.push_back(boost::json::object{{"id", rule.id},
                                        {"group_id", rule.group_id},
                                        {"source", source},
                                        {"target", rule.target},
                                        {"allowed_capabilities", string_array(rule.allowed_capabilities)}});
  };
  for (const auto& rule : snapshot->rules) {
    if (rule.source == "*") {
      for (const auto& member : snapshot->group_agents) add_rule(rule, member);
    } else {
      add_rule(rule, rule.source);
    }
  }
  if (truncated) {
    log_problem("ACL sync answer truncated (rules only allow: the rest is denied)", waiter.agent_id);
  }
  return json_response(200, boost::json::object{{"version", snapshot->version},
                                                {"rules", std::move(rules)},
                                                {"revoked", string_array(snapshot->revoked)}});
}

// ---- POST /revocations ----

Answer post_revocation(RegistryService::Impl& api, Call& call) {
  const Principal& principal = call.principal;
  auto revocation = Revocation::parse(call.request.body, false);
  if (!revocation) return error_response(revocation.error());
  RevocationKind kind = RevocationKind::self;
  if (revocation->signature) {
    // protocol §7: a self-signed revocation, from anyone.
    if (auto verified = revocation->verify(); !verified) return error_response(verified.error());
  } else {
    // An admin revocation {"agent_id","reason","timestamp"}: only with the admin token.
    if (!principal.is_admin()) {
      return error_response(
          principal.kind == Principal::Kind::anonymous ? Errc::bad_request : Errc::forbidden,
          "revocation: signature is required (signed by the revoked key, purpose revoke); an unsigned admin "
          "revocation needs the admin token, and group owners/admins use POST /api/v1/agents/{agent_id}/revoke");
    }
    kind = RevocationKind::admin;
  }
  auto revoked = revoke_now(api, *revocation, kind);
  if (!revoked) return error_response(revoked.error());
  audit(api, principal, kind == RevocationKind::self ? "revocation.self" : "revocation.admin",
        revocation->agent_id.str(),
        boost::json::object{{"reason", revocation->reason}, {"effective_at", rfc3339(revoked->record.effective_at)}});
  return json_response(200, revocation_answer_json(*revoked));
}

// ---- GET /revocations ----

Answer list_revocations(RegistryService::Impl& api, Call& call) {
  // registry.md "Credentials": an agent signature reads discovery, its sync and its card, nothing
  // else (daemons learn revocations from /acl/sync).
  if (auto allowed = require_user_or_admin(call.principal); !allowed) return error_response(allowed.error());
  auto groups = visible_groups(api, call.principal);
  if (!groups) return error_response(groups.error());
  const std::set<std::string, std::less<>> visible(groups->begin(), groups->end());
  auto page = page_request(call);
  if (!page) return error_response(page.error());
  auto listed = api.storage->list_revocations(*page);
  if (!listed) return error_response(listed.error());
  boost::json::array items;
  items.reserve(listed->items.size());
  for (const auto& record : listed->items) {
    boost::json::object item{{"agent_id", record.agent_id},
                             {"kind", to_string(record.kind)},
                             {"timestamp", record.timestamp},
                             {"effective_at", rfc3339(record.effective_at)},
                             {"recorded_at", rfc3339(record.recorded_at)}};
    const bool details = call.principal.is_admin() || !record.group_id || visible.contains(*record.group_id);
    if (details) {
      if (record.group_id) item["group_id"] = *record.group_id;
      item["reason"] = record.reason;
      if (auto document = json::parse_ijson(record.document_json)) item["document"] = std::move(document).value();
    }
    items.push_back(std::move(item));
  }
  return json_response(200, page_json(std::move(items), listed->next_cursor));
}

// ---- POST /agents/{agent_id}/revoke ----

Answer revoke_agent(RegistryService::Impl& api, Call& call) {
  const Principal& principal = call.principal;
  if (principal.is_agent()) {
    return error_response(Errc::forbidden,
                          "an agent revokes its own key with a self-signed revocation (POST /api/v1/revocations)");
  }
  if (auto allowed = require_user_or_admin(principal); !allowed) return error_response(allowed.error());
  const std::string& agent_id = call.params[0];
  auto id = AgentId::parse(agent_id);
  if (!id) return error_response(Errc::not_found, "no agent with this ID in your groups");

  std::string reason = "revoked by a group admin";
  if (!call.request.body.empty()) {
    auto body = body_object(call);
    if (!body) return error_response(body.error());
    if (auto known = reject_unknown_members(*body, {"reason"}, "reason"); !known) return error_response(known.error());
    if (const auto* value = body->if_contains("reason")) {
      if (!value->is_string()) return error_response(Errc::bad_request, "reason must be a string");
      if (value->as_string().size() > limits::max_revocation_reason_bytes) {
        return error_response(Errc::bad_request, "reason must be at most " +
                                                     std::to_string(limits::max_revocation_reason_bytes) + " bytes");
      }
      reason = std::string(value->as_string());
    }
  }

  // The agent's group: its card's, or for an ID without a card (a rotation's old ID in its grace
  // period, or one revoked already) the group recorded with its revocation.
  std::optional<std::string> group_id;
  auto card = api.storage->get_card(agent_id);
  if (card) {
    group_id = card->group_id;
  } else if (card.error().code != Errc::not_found) {
    return error_response(card.error());
  } else if (auto existing = api.storage->get_revocation(agent_id)) {
    group_id = existing->group_id;
  } else if (existing.error().code != Errc::not_found) {
    return error_response(existing.error());
  }
  if (!group_id) return error_response(Errc::not_found, "no agent with this ID in your groups");
  auto role = visible_role(api, principal, *group_id);
  if (!role) {
    if (role.error().code == Errc::not_found) return error_response(Errc::not_found, "no agent with this ID in your groups");
    return error_response(role.error());
  }
  if (!is_group_admin(*role)) {
    return error_response(Errc::forbidden, "only a group owner/admin may revoke an agent of the group");
  }

  Revocation revocation;
  revocation.agent_id = std::move(id).value();
  revocation.reason = std::move(reason);
  revocation.timestamp = api.now();
  auto revoked = revoke_now(api, revocation, RevocationKind::admin);
  if (!revoked) return error_response(revoked.error());
  audit(api, principal, "agent.revoke", agent_id,
        boost::json::object{{"group_id", *group_id},
                            {"reason", revocation.reason},
                            {"effective_at", rfc3339(revoked->record.effective_at)}});
  return json_response(200, revocation_answer_json(*revoked));
}

// ---- POST /agents/{agent_id}/rotate ----

Answer rotate_agent(RegistryService::Impl& api, Call& call) {
  const Principal& principal = call.principal;
  const std::string& old_id = call.params[0];
  constexpr std::string_view kNoAgent = "no agent with this ID in your groups";

  // Who may: the old agent itself, or its owner / a group owner/admin / the admin token.
  AgentCardRecord old_card;
  switch (principal.kind) {
    case Principal::Kind::anonymous:
      return error_response(Errc::unauthorized,
                            "credentials required: the old agent's signature or an API token of its owner or a group admin");
    case Principal::Kind::agent:
      if (principal.agent_card->agent_id != old_id) {
        return error_response(Errc::forbidden, "an agent may rotate only its own key");
      }
      old_card = *principal.agent_card;
      break;
    case Principal::Kind::user:
    case Principal::Kind::admin: {
      auto card = api.storage->get_card(old_id);
      if (!card) {
        if (card.error().code == Errc::not_found) return error_response(Errc::not_found, std::string(kNoAgent));
        return error_response(card.error());
      }
      auto role = visible_role(api, principal, card->group_id);
      if (!role) {
        if (role.error().code == Errc::not_found) return error_response(Errc::not_found, std::string(kNoAgent));
        return error_response(role.error());
      }
      const bool owner = principal.is_user() && card->owner_id && *card->owner_id == principal.user->id;
      if (!owner && !is_group_admin(*role)) {
        return error_response(Errc::forbidden,
                              "only the agent itself, its owner or a group owner/admin may rotate its key");
      }
      old_card = std::move(card).value();
      break;
    }
  }

  auto body = body_object(call);
  if (!body) return error_response(body.error());
  if (auto known = reject_unknown_members(*body, {"rotation", "card"}, "rotation and card"); !known) {
    return error_response(known.error());
  }
  const auto* rotation_value = body->if_contains("rotation");
  if (rotation_value == nullptr) {
    return error_response(Errc::bad_request, "rotation is required: the rotation object signed by both keys");
  }
  const auto* card_value = body->if_contains("card");
  if (card_value == nullptr) return error_response(Errc::bad_request, "card is required: the card signed by the new key");

  auto rotation = Rotation::from_json(*rotation_value);
  if (!rotation) return error_response(rotation.error());
  if (rotation->old_id.str() != old_id) {
    return error_response(Errc::bad_request, "rotation: `old` differs from the agent ID in the path");
  }
  if (auto verified = rotation->verify(); !verified) return error_response(verified.error());
  const std::int64_t now = api.now();
  if (rotation->timestamp > now + kClockSkewMs) {
    return error_response(Errc::bad_request, "rotation: timestamp is in the future (check the clock)");
  }

  std::string card_text = json::serialize_jcs(*card_value);
  if (card_text.size() > limits::max_card_bytes) {
    return error_response(Errc::too_large, "card: larger than " + std::to_string(limits::max_card_bytes) + " bytes");
  }
  auto card = AgentCard::from_json(*card_value);
  if (!card) return error_response(card.error());
  if (card->agent_id != rotation->new_id) {
    return error_response(Errc::bad_request, "card: agent_id must be the rotation's `new` ID");
  }
  if (auto verified = card->verify(); !verified) {
    return error_response(Errc::bad_request, "card signature: " + verified.error().message +
                                                 " (sign JCS of the card without `signature` with the new key, purpose card)");
  }
  if (card->group_id.to_string() != old_card.group_id) {
    return error_response(Errc::bad_request, "card: group_id must stay the old card's group");
  }
  if (card->timestamp < now - kCardMaxAgeMs) {
    return error_response(Errc::bad_request, "card timestamp is more than 10 minutes old: sign the card again");
  }
  if (card->timestamp > now + kClockSkewMs) {
    return error_response(Errc::bad_request, "card timestamp is in the future (check the clock)");
  }

  CardRotation change;
  change.old_agent_id = old_id;
  change.new_card = record_of(*card, std::move(card_text));
  change.timestamp = rotation->timestamp;
  change.grace_until = rotation->grace_until;
  change.rotation_json = rotation->serialize();
  auto rotated = api.storage->rotate_card(change, now);
  if (!rotated) return error_response(rotated.error());

  // The relays learn the old ID's revocation when it takes effect (see the top of this file).
  if (rotated->old_revocation.effective_at <= api.now()) {
    if (auto revocation = relay_revocation_of(rotated->old_revocation)) (void)push_to_relays(api, *revocation);
  } else {
    schedule_relay_push(api, old_id, rotated->old_revocation.effective_at);
  }
  const std::string new_id = rotated->card.agent_id;
  audit(api, principal, "agent.rotate", old_id,
        boost::json::object{{"new_agent_id", new_id},
                            {"group_id", rotated->card.group_id},
                            {"grace_until", rfc3339(rotated->old_revocation.effective_at)},
                            {"moved_rules", rotated->moved_rules}});
  return json_response(200, card_json(rotated->card, presence_of(api, new_id)));
}

}  // namespace agent_mesh::registry
