// Agent cards (registry.md "Agent cards"): registration with proof of key possession, updates,
// removal, group-scoped discovery and the A2A 1.0 view.
#include <boost/json/serialize.hpp>
#include <unordered_map>

#include "agent_mesh/agent_card.hpp"
#include "agent_mesh/encoding.hpp"
#include "agent_mesh/json.hpp"
#include "registry/a2a_card.hpp"
#include "registry/api.hpp"

namespace agent_mesh::registry {

namespace {

// registry.md: a timestamp older than 10 min is refused (no replay of an old signed card). A card
// from the future is refused beyond the same ±2 min clock skew the agent signatures allow.
constexpr std::int64_t kCardMaxAgeMs = 10 * 60 * 1000;
constexpr std::int64_t kCardMaxSkewMs = 2 * 60 * 1000;

// A parsed, verified and fresh signed card, with the text that is stored as received.
struct SignedCard {
  AgentCard card;
  std::string text;
};

Result<SignedCard> verified_card(const boost::json::value& value, std::string text, std::int64_t now) {
  AGENT_MESH_TRY_ASSIGN(AgentCard card, AgentCard::from_json(value));
  if (auto verified = card.verify(); !verified) {
    return fail(Errc::bad_request, "card signature: " + verified.error().message +
                                       " (sign JCS of the card without `signature`, purpose card)");
  }
  if (card.timestamp < now - kCardMaxAgeMs) {
    return fail(Errc::bad_request, "card timestamp is more than 10 minutes old: sign the card again");
  }
  if (card.timestamp > now + kCardMaxSkewMs) {
    return fail(Errc::bad_request, "card timestamp is in the future (check the clock)");
  }
  return SignedCard{std::move(card), std::move(text)};
}

Result<SignedCard> card_from_body(const Call& call, std::int64_t now) {
  json::ParseOptions options;
  options.max_bytes = limits::max_card_bytes;
  AGENT_MESH_TRY_ASSIGN(auto value, json::parse_ijson(call.request.body, options));
  return verified_card(value, call.request.body, now);
}

AgentCardRecord record_of(const SignedCard& signed_card, std::optional<std::string> owner_id) {
  return card_record(signed_card.card, signed_card.text, std::move(owner_id));
}

// May this caller act for an existing card (update, delete, write its rules)? Its owner, an
// owner/admin of its group, the admin token, or the agent itself.
Result<bool> may_manage(RegistryService::Impl& api, const Principal& principal, const AgentCardRecord& card) {
  if (principal.is_admin()) return true;
  if (principal.is_agent()) return principal.agent_card->agent_id == card.agent_id;
  if (!principal.is_user()) return false;
  if (card.owner_id && *card.owner_id == principal.user->id) return true;
  AGENT_MESH_TRY_ASSIGN(auto role, role_in_group(api, principal, card.group_id));
  return is_group_admin(role);
}

// The card if this caller may see it; not_found otherwise (another group's agents are not
// acknowledged to exist, registry.md "group isolation").
Result<AgentCardRecord> visible_card(RegistryService::Impl& api, const Principal& principal, std::string_view agent_id) {
  AGENT_MESH_TRY_ASSIGN(auto groups, visible_groups(api, principal));
  auto card = api.storage->get_card(agent_id);
  if (!card) {
    if (card.error().code == Errc::not_found) return fail(Errc::not_found, "no agent with this ID in your groups");
    return std::move(card).error();
  }
  if (std::find(groups.begin(), groups.end(), card->group_id) == groups.end()) {
    return fail(Errc::not_found, "no agent with this ID in your groups");
  }
  return std::move(card).value();
}

std::unordered_map<std::string, RelayLink::Presence> online_map(RegistryService::Impl& api) {
  std::unordered_map<std::string, RelayLink::Presence> out;
  if (!api.relay.online_agents) return out;
  for (auto& presence : api.relay.online_agents()) {
    std::string id = presence.agent_id;
    out.emplace(std::move(id), std::move(presence));
  }
  return out;
}

// Registration by a user (POST /agents) or an update (PUT /agents/{id}): the shared rules.
Answer store_user_card(RegistryService::Impl& api, Call& call, const SignedCard& signed_card, bool is_update) {
  const Principal& principal = call.principal;
  const AgentCard& card = signed_card.card;
  const std::string agent_id = card.agent_id.str();
  const std::string group_id = card.group_id.to_string();
  auto existing = api.storage->get_card(agent_id);
  if (!existing && existing.error().code != Errc::not_found) return error_response(existing.error());
  if (is_update && !existing) return error_response(Errc::not_found, "no agent with this ID: register it with POST /agents");
  if (existing) {
    auto allowed = may_manage(api, principal, *existing);
    if (!allowed) return error_response(allowed.error());
    if (!*allowed) {
      // Someone else's card (never acknowledged to callers outside its group).
      auto groups = visible_groups(api, principal);
      const bool sees = groups && std::find(groups->begin(), groups->end(), existing->group_id) != groups->end();
      return sees ? error_response(Errc::forbidden, "this agent is registered by another user of the group")
                  : error_response(Errc::conflict, "this agent ID is registered elsewhere");
    }
  }
  // The target group: the caller must belong to it (agents may not move themselves).
  if (principal.is_agent()) {
    if (group_id != principal.agent_card->group_id) {
      return error_response(Errc::forbidden, "an agent may not move its card to another group");
    }
  } else {
    auto role = role_in_group(api, principal, group_id);
    if (!role) {
      return error_response(role.error().code == Errc::not_found ? Error{Errc::forbidden, "you are not a member of group_id"}
                                                                 : role.error());
    }
    if (!*role) return error_response(Errc::forbidden, "you are not a member of group_id");
  }
  std::optional<std::string> owner;
  if (principal.is_user()) {
    // A card keeps its owner when a group admin updates it.
    owner = existing && existing->owner_id && existing->owner_id != principal.user->id ? existing->owner_id
                                                                                        : std::optional<std::string>{principal.user->id};
  }
  auto put = api.storage->put_card(record_of(signed_card, owner), api.now());
  if (!put) return error_response(put.error());
  audit(api, principal, put->created ? "card.register" : "card.update", agent_id,
        boost::json::object{{"group_id", group_id}});
  return json_response(put->created ? 201 : 200, card_json(put->card, presence_of(api, agent_id)));
}

}  // namespace

AgentCardRecord card_record(const AgentCard& card, std::string text, std::optional<std::string> owner_id) {
  AgentCardRecord record;
  record.agent_id = card.agent_id.str();
  record.group_id = card.group_id.to_string();
  record.owner_id = std::move(owner_id);
  record.name = card.name;
  record.description = card.description;
  boost::json::array capabilities;
  for (const auto& capability : card.capabilities) capabilities.push_back(capability.to_json());
  record.capabilities_json = json::serialize_jcs(capabilities);
  if (card.metadata) record.metadata_json = json::serialize_jcs(*card.metadata);
  record.timestamp = card.timestamp;
  if (card.signature) record.signature = base64url_encode(*card.signature);
  record.card_json = std::move(text);
  return record;
}

Answer register_agent(RegistryService::Impl& api, Call& call) {
  if (call.principal.is_agent()) {
    return error_response(Errc::forbidden,
                          "registering a card needs a user's API token or a setup key (POST /register-with-key)");
  }
  if (auto allowed = require_user_or_admin(call.principal); !allowed) return error_response(allowed.error());
  auto signed_card = card_from_body(call, api.now());
  if (!signed_card) return error_response(signed_card.error());
  return store_user_card(api, call, *signed_card, false);
}

Answer put_agent(RegistryService::Impl& api, Call& call) {
  if (call.principal.kind == Principal::Kind::anonymous) {
    return error_response(Errc::unauthorized, "credentials required: an API token or the agent's signature");
  }
  auto signed_card = card_from_body(call, api.now());
  if (!signed_card) return error_response(signed_card.error());
  if (signed_card->card.agent_id.str() != call.params[0]) {
    return error_response(Errc::bad_request, "the card's agent_id differs from the one in the path");
  }
  return store_user_card(api, call, *signed_card, true);
}

Answer register_with_key(RegistryService::Impl& api, Call& call) {
  auto body = body_object(call);
  if (!body) return error_response(body.error());
  for (const auto& member : *body) {
    if (member.key() != "setup_key" && member.key() != "card") {
      return error_response(Errc::bad_request, "unknown member \"" + std::string(member.key().substr(0, 64)) +
                                                   "\" (expected setup_key and card)");
    }
  }
  const auto* key = body->if_contains("setup_key");
  const auto* card_value = body->if_contains("card");
  if (key == nullptr || !key->is_string() || key->as_string().empty()) {
    return error_response(Errc::bad_request, "setup_key must be the setup key's text");
  }
  if (card_value == nullptr) return error_response(Errc::bad_request, "card is required: the signed agent card");
  auto signed_card = verified_card(*card_value, json::serialize_jcs(*card_value), api.now());
  if (!signed_card) return error_response(signed_card.error());
  const std::string agent_id = signed_card->card.agent_id.str();
  // A card registered by a user stays theirs: a setup key does not take it over.
  if (auto existing = api.storage->get_card(agent_id); existing && existing->owner_id) {
    return error_response(Errc::conflict, "this agent ID is registered by a user; ask them to update it");
  }
  auto registered = api.storage->register_card_with_setup_key(hash_secret(key->as_string()),
                                                               record_of(*signed_card, std::nullopt), api.now());
  if (!registered) return error_response(registered.error());
  AuditEntry entry;  // the actor is the setup key that was used
  entry.at = api.now();
  entry.actor = "setup_key:" + registered->key.setup_key_id;
  entry.action = registered->put.created ? "card.register" : "card.update";
  entry.target = agent_id;
  entry.detail_json = json::serialize_jcs(boost::json::object{{"group_id", registered->key.group_id}});
  (void)api.storage->append_audit(std::move(entry));
  return json_response(registered->put.created ? 201 : 200, card_json(registered->put.card, presence_of(api, agent_id)));
}

Answer get_agent(RegistryService::Impl& api, Call& call) {
  auto card = visible_card(api, call.principal, call.params[0]);
  if (!card) return error_response(card.error());
  return json_response(200, card_json(*card, presence_of(api, card->agent_id)));
}

Answer delete_agent(RegistryService::Impl& api, Call& call) {
  if (call.principal.kind == Principal::Kind::anonymous) {
    return error_response(Errc::unauthorized, "credentials required: an API token or the agent's signature");
  }
  auto card = visible_card(api, call.principal, call.params[0]);
  if (!card) return error_response(card.error());
  auto allowed = may_manage(api, call.principal, *card);
  if (!allowed) return error_response(allowed.error());
  if (!*allowed) return error_response(Errc::forbidden, "only the card's owner, a group owner/admin or the agent may delete it");
  if (auto deleted = api.storage->delete_card(card->agent_id); !deleted) return error_response(deleted.error());
  audit(api, call.principal, "card.delete", card->agent_id, boost::json::object{{"group_id", card->group_id}});
  return http::Response{204, {}, {}};
}

Answer search_agents(RegistryService::Impl& api, Call& call) {
  auto groups = visible_groups(api, call.principal);
  if (!groups) return error_response(groups.error());
  CardQuery query;
  query.visible_groups = std::move(groups).value();
  if (auto group = query_value(call, "group")) {
    if (std::find(query.visible_groups.begin(), query.visible_groups.end(), *group) == query.visible_groups.end()) {
      return error_response(Errc::not_found, "no such group among yours");
    }
    query.group = std::string(*group);
  }
  if (auto capability = query_value(call, "capability")) query.capability = std::string(*capability);
  if (auto q = query_value(call, "q")) query.q = std::string(*q);
  auto online = online_map(api);
  if (auto wanted = query_value(call, "online")) {
    if (*wanted != "true" && *wanted != "false") return error_response(Errc::bad_request, "online must be true or false");
    OnlineFilter filter;
    filter.online = *wanted == "true";
    for (const auto& [id, presence] : online) filter.online_agent_ids.push_back(id);
    query.online = std::move(filter);
  }
  auto page = page_request(call);
  if (!page) return error_response(page.error());
  query.page = std::move(page).value();
  auto found = api.storage->search_cards(query);
  if (!found) return error_response(found.error());
  boost::json::array items;
  for (const auto& card : found->items) {
    auto it = online.find(card.agent_id);
    items.push_back(card_json(card, it == online.end() ? std::nullopt : std::optional<RelayLink::Presence>(it->second)));
  }
  return json_response(200, page_json(std::move(items), found->next_cursor));
}

Answer get_a2a_card(RegistryService::Impl& api, Call& call) {
  auto card = visible_card(api, call.principal, call.params[0]);
  if (!card) return error_response(card.error());
  const auto presence = presence_of(api, card->agent_id);
  A2aCardInput input;
  input.agent_id = card->agent_id;
  input.name = card->name;
  input.description = card->description;
  if (auto capabilities = json::parse_ijson(card->capabilities_json); capabilities && capabilities->is_array()) {
    input.capabilities = std::move(capabilities->as_array());
  }
  if (card->metadata_json) {
    if (auto metadata = json::parse_ijson(*card->metadata_json); metadata && metadata->is_object()) {
      input.metadata = std::move(metadata->as_object());
    }
  }
  input.online = presence.has_value();
  if (presence) input.last_seen = rfc3339(presence->last_seen_ms);
  input.relay_url = api.options.relay_url;
  auto view = render_a2a_card(input);
  if (!view) return error_response(view.error());
  const std::string_view if_none_match = call.request.field("If-None-Match");
  http::Response response = !if_none_match.empty() && etag_matches(if_none_match, view->etag)
                                ? http::Response{304, {}, {}}
                                : http::Response::json(200, std::move(view->body));
  response.set("ETag", view->etag);
  response.set("Cache-Control", view->cache_control);
  return response;
}

}  // namespace agent_mesh::registry
