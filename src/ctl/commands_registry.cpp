// discover, acl, group, setup-key: the registry's REST API (registry.md) as commands.
#include <boost/json.hpp>

#include "ctl/commands.hpp"

namespace agent_mesh::ctl {

namespace {

namespace json = boost::json;

// A list command follows next_cursor; this bounds how much one command prints (200 per page).
constexpr int kMaxPages = 50;

// GET a paginated list ({"items", "next_cursor"}) page after page; returns {"items": [...]}.
json::object list_all(const Context& context, const std::string& path, std::vector<std::pair<std::string, std::string>> query,
                      RegistryAuth auth) {
  json::array items;
  std::string cursor;
  query.emplace_back("limit", "200");
  for (int page = 0; page < kMaxPages; ++page) {
    auto parameters = query;
    if (!cursor.empty()) parameters.emplace_back("cursor", cursor);
    const auto answer = context.call_registry("GET", path + "?" + query_string(parameters), std::nullopt, auth);
    const auto& object = answer.as_object();
    if (const auto* got = object.if_contains("items"); got != nullptr && got->is_array()) {
      for (const auto& item : got->as_array()) items.push_back(item);
    }
    const auto* next = object.if_contains("next_cursor");
    if (next == nullptr || !next->is_string() || next->as_string().empty()) break;
    cursor = std::string(next->as_string());
  }
  return json::object{{"items", std::move(items)}};
}

const json::object& object_of(const json::value& value) {
  static const json::object empty;
  return value.is_object() ? value.as_object() : empty;
}

std::string names_of(const json::value* list, std::string_view member = {}) {
  if (list == nullptr || !list->is_array()) return "-";
  std::string out;
  for (const auto& item : list->as_array()) {
    const json::value* name = member.empty() ? &item : object_of(item).if_contains(member);
    if (!out.empty()) out += ",";
    out += cell(name);
  }
  return out.empty() ? "-" : out;
}

void require_agent_id(const std::string& text, const std::string& flag) {
  if (text == "*" && flag == "--source") return;
  if (!AgentId::parse(text)) {
    fail_command(flag + ": `" + text + "` is not an agent ID" + (flag == "--source" ? " or *" : ""),
                 "an agent ID is 43 base64url characters (`agent-meshctl discover` lists them)", kExitUsage);
  }
}

// ---- discover ----

struct DiscoverOptions {
  std::string capability;
  std::string query;
  bool online = false;
};

void discover(Context& context, const DiscoverOptions& options) {
  std::vector<std::pair<std::string, std::string>> query;
  if (!options.capability.empty()) query.emplace_back("capability", options.capability);
  if (!options.query.empty()) query.emplace_back("q", options.query);
  if (options.online) query.emplace_back("online", "true");
  const auto list = list_all(context, "/api/v1/agents", query, RegistryAuth::token_or_agent);
  if (context.json()) return context.print_json(list);
  std::vector<std::vector<std::string>> rows;
  for (const auto& item : list.at("items").as_array()) {
    const auto& card = object_of(item);
    const auto* online = card.if_contains("online");
    rows.push_back({cell(card.if_contains("agent_id")), cell(card.if_contains("name")),
                    online != nullptr && online->is_bool() && online->as_bool() ? "yes" : "no",
                    names_of(card.if_contains("capabilities"), "name")});
  }
  context.print_table({"AGENT ID", "NAME", "ONLINE", "CAPABILITIES"}, rows);
}

// ---- acl ----

void acl_list(Context& context) {
  const auto list = list_all(context, "/api/v1/acl", {}, RegistryAuth::token_or_agent);
  if (context.json()) return context.print_json(list);
  std::vector<std::vector<std::string>> rows;
  for (const auto& item : list.at("items").as_array()) {
    const auto& rule = object_of(item);
    rows.push_back({cell(rule.if_contains("id")), cell(rule.if_contains("source")), cell(rule.if_contains("target")),
                    names_of(rule.if_contains("allowed_capabilities"))});
  }
  context.print_table({"ID", "SOURCE", "TARGET", "CAPABILITIES"}, rows);
}

struct AclAddOptions {
  std::string source;
  std::string target;
  std::string capabilities;
};

void acl_add(Context& context, const AclAddOptions& options) {
  require_agent_id(options.source, "--source");
  require_agent_id(options.target, "--target");
  const auto capabilities = split_list(options.capabilities);
  if (capabilities.empty()) fail_command("--capabilities: give capability names or *", "e.g. --capabilities echo,summarize", kExitUsage);
  // A rule lives in its target's group.
  const auto target = context.call_registry("GET", "/api/v1/agents/" + options.target, std::nullopt, RegistryAuth::token,
                                            "the target agent is not registered in your groups (`agent-meshctl discover`)");
  json::array allowed;
  for (const auto& name : capabilities) allowed.emplace_back(name);
  const json::object body{{"group_id", object_of(target).at("group_id")},
                          {"source", options.source},
                          {"target", options.target},
                          {"allowed_capabilities", std::move(allowed)}};
  const auto rule = context.call_registry("POST", "/api/v1/acl", json::value(body), RegistryAuth::token);
  if (context.json()) return context.print_json(rule);
  context.out() << cell(object_of(rule).if_contains("id")) << "\n";
  context.err() << "Allowed " << options.source << " to call " << names_of(&body.at("allowed_capabilities")) << " on "
                << options.target << " (meshd picks it up within 2 s)\n";
}

void acl_remove(Context& context, const std::string& rule) {
  (void)context.call_registry("DELETE", "/api/v1/acl/" + percent_encode(rule), std::nullopt, RegistryAuth::token,
                              "no rule with this ID in your groups (`agent-meshctl acl list`)");
  if (context.json()) return context.print_json(json::object{{"id", rule}, {"removed", true}});
  context.out() << "Removed rule " << rule << "\n";
}

// ---- group ----

void group_list(Context& context) {
  const auto list = context.call_registry("GET", "/api/v1/groups", std::nullopt, RegistryAuth::token);
  if (context.json()) return context.print_json(list);
  std::vector<std::vector<std::string>> rows;
  if (const auto* items = object_of(list).if_contains("items"); items != nullptr && items->is_array()) {
    for (const auto& item : items->as_array()) {
      const auto& group = object_of(item);
      const auto* personal = group.if_contains("personal");
      rows.push_back({cell(group.if_contains("id")), cell(group.if_contains("name")), cell(group.if_contains("role")),
                      personal != nullptr && personal->is_bool() && personal->as_bool() ? "yes" : "no"});
    }
  }
  context.print_table({"ID", "NAME", "ROLE", "PERSONAL"}, rows);
}

void group_create(Context& context, const std::string& name) {
  const auto group = context.call_registry("POST", "/api/v1/groups", json::value(json::object{{"name", name}}), RegistryAuth::token);
  if (context.json()) return context.print_json(group);
  context.out() << cell(object_of(group).if_contains("id")) << "\n";
}

struct MemberOptions {
  std::string group;
  std::string user;
  std::string role = "member";
};

void group_add_member(Context& context, const MemberOptions& options) {
  const auto member = context.call_registry(
      "POST", "/api/v1/groups/" + percent_encode(options.group) + "/members",
      json::value(json::object{{"user_id", options.user}, {"role", options.role}}), RegistryAuth::token,
      "no such group or user (`agent-meshctl group list` shows your groups)");
  if (context.json()) return context.print_json(member.is_null() ? json::value(json::object{{"user_id", options.user}, {"role", options.role}}) : member);
  context.out() << "Added " << options.user << " to " << options.group << " as " << options.role << "\n";
}

void group_remove_member(Context& context, const MemberOptions& options) {
  (void)context.call_registry("DELETE", "/api/v1/groups/" + percent_encode(options.group) + "/members/" + percent_encode(options.user), std::nullopt,
                              RegistryAuth::token, "no such group or member (`agent-meshctl group list`)");
  if (context.json()) return context.print_json(json::object{{"group_id", options.group}, {"user_id", options.user}, {"removed", true}});
  context.out() << "Removed " << options.user << " from " << options.group << "\n";
}

// ---- setup-key ----

// "24h" → ms; units s, m, h, d.
std::int64_t parse_duration_ms(const std::string& text) {
  const std::string hint = "a number with a unit: 90s, 30m, 24h or 7d";
  if (text.size() < 2) fail_command("--expires-in: `" + text + "` is not a duration", hint, kExitUsage);
  std::int64_t unit = 0;
  switch (text.back()) {
    case 's': unit = 1000; break;
    case 'm': unit = 60'000; break;
    case 'h': unit = 3'600'000; break;
    case 'd': unit = 86'400'000; break;
    default: fail_command("--expires-in: `" + text + "` has no unit", hint, kExitUsage);
  }
  std::int64_t amount = 0;
  for (std::size_t i = 0; i + 1 < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9' || amount > 1'000'000) fail_command("--expires-in: `" + text + "` is not a duration", hint, kExitUsage);
    amount = amount * 10 + (text[i] - '0');
  }
  if (amount == 0) fail_command("--expires-in must be more than 0", hint, kExitUsage);
  return amount * unit;
}

struct SetupKeyOptions {
  std::string group;
  int max_uses = 0;
  std::string expires_in;
};

void setup_key_create(Context& context, const SetupKeyOptions& options) {
  json::object body{{"group_id", options.group}};
  if (options.max_uses > 0) body["max_uses"] = options.max_uses;
  if (!options.expires_in.empty()) body["expires_at"] = rfc3339(now_ms() + parse_duration_ms(options.expires_in));
  const auto key = context.call_registry("POST", "/api/v1/setup-keys", json::value(body), RegistryAuth::token,
                                         "no such group among the ones you manage (`agent-meshctl group list`)");
  if (context.json()) return context.print_json(key);
  context.out() << cell(object_of(key).if_contains("key")) << "\n";
  context.err() << "Setup key " << cell(object_of(key).if_contains("id")) << " for group " << options.group
                << " (shown once). Use it with: agent-meshctl register --setup-key <key> --group " << options.group
                << " --name NAME --capabilities ...\n";
}

void setup_key_list(Context& context) {
  const auto list = list_all(context, "/api/v1/setup-keys", {}, RegistryAuth::token);
  if (context.json()) return context.print_json(list);
  std::vector<std::vector<std::string>> rows;
  for (const auto& item : list.at("items").as_array()) {
    const auto& key = object_of(item);
    const auto* usable = key.if_contains("usable");
    rows.push_back({cell(key.if_contains("id")), cell(key.if_contains("group_id")), cell(key.if_contains("uses")),
                    cell(key.if_contains("max_uses")), cell(key.if_contains("expires_at")),
                    usable != nullptr && usable->is_bool() && usable->as_bool() ? "yes" : "no"});
  }
  context.print_table({"ID", "GROUP", "USES", "MAX USES", "EXPIRES", "USABLE"}, rows);
}

void setup_key_revoke(Context& context, const std::string& id) {
  (void)context.call_registry("DELETE", "/api/v1/setup-keys/" + percent_encode(id), std::nullopt, RegistryAuth::token,
                              "no setup key with this ID (`agent-meshctl setup-key list`)");
  if (context.json()) return context.print_json(json::object{{"id", id}, {"revoked", true}});
  context.out() << "Revoked setup key " << id << "\n";
}

}  // namespace

void add_registry_commands(CLI::App& app, Context& context, Actions& actions) {
  auto discover_options = std::make_shared<DiscoverOptions>();
  auto* discover_command = add_command(app, "discover", "List the agents of your groups, by capability or full text",
                                       "agent-meshctl discover --capability echo --online");
  discover_command->add_option("--capability", discover_options->capability, "Exact capability name");
  discover_command->add_option("--query", discover_options->query, "Full text over names and descriptions");
  discover_command->add_flag("--online", discover_options->online, "Only agents connected to a relay now");
  actions.add(discover_command, [&context, discover_options] { discover(context, *discover_options); });

  auto* acl = add_command(app, "acl", "ACL rules: who may call which capabilities of an agent (default deny)",
                          "agent-meshctl acl add --source <alice-id> --target <bob-id> --capabilities echo");
  acl->require_subcommand(1);
  auto* acl_list_command = add_command(*acl, "list", "List the rules of your groups", "agent-meshctl acl list --json");
  actions.add(acl_list_command, [&context] { acl_list(context); });
  auto add_options = std::make_shared<AclAddOptions>();
  auto* acl_add_command = add_command(*acl, "add", "Allow a source agent (or * for any agent of the group) to call a target",
                                      "agent-meshctl acl add --source <alice-id> --target <bob-id> --capabilities echo,summarize");
  acl_add_command->add_option("--source", add_options->source, "Calling agent ID, or *")->required();
  acl_add_command->add_option("--target", add_options->target, "Called agent ID")->required();
  acl_add_command->add_option("--capabilities", add_options->capabilities, "Capability names, comma-separated, or *")->required();
  actions.add(acl_add_command, [&context, add_options] { acl_add(context, *add_options); });
  auto rule_id = std::make_shared<std::string>();
  auto* acl_remove_command = add_command(*acl, "remove", "Delete a rule", "agent-meshctl acl remove <rule-id>");
  acl_remove_command->add_option("RULE_ID", *rule_id, "The rule's ID (from `acl list`)")->required();
  actions.add(acl_remove_command, [&context, rule_id] { acl_remove(context, *rule_id); });

  auto* group = add_command(app, "group", "Groups: the unit of isolation (agents, rules and keys belong to one)",
                            "agent-meshctl group create research");
  group->require_subcommand(1);
  actions.add(add_command(*group, "list", "List your groups and your role in each", "agent-meshctl group list"),
              [&context] { group_list(context); });
  auto group_name = std::make_shared<std::string>();
  auto* create = add_command(*group, "create", "Create a group (you become its owner)", "agent-meshctl group create research");
  create->add_option("NAME", *group_name, "The group's name")->required();
  actions.add(create, [&context, group_name] { group_create(context, *group_name); });
  auto member = std::make_shared<MemberOptions>();
  auto* add_member = add_command(*group, "add-member", "Add a user to a group with a role (owner, admin or member)",
                                 "agent-meshctl group add-member <group-id> --user <user-id> --role admin");
  add_member->add_option("GROUP", member->group, "Group ID")->required();
  add_member->add_option("--user", member->user, "User ID")->required();
  add_member->add_option("--role", member->role, "owner, admin or member (default member)")
      ->check(CLI::IsMember({"owner", "admin", "member"}));
  actions.add(add_member, [&context, member] { group_add_member(context, *member); });
  auto removed = std::make_shared<MemberOptions>();
  auto* remove_member = add_command(*group, "remove-member", "Remove a user from a group",
                                    "agent-meshctl group remove-member <group-id> --user <user-id>");
  remove_member->add_option("GROUP", removed->group, "Group ID")->required();
  remove_member->add_option("--user", removed->user, "User ID")->required();
  actions.add(remove_member, [&context, removed] { group_remove_member(context, *removed); });

  auto* setup_key = add_command(app, "setup-key", "Setup keys: pre-authorised registration for unattended agents",
                                "agent-meshctl setup-key create --group <group-id> --max-uses 10 --expires-in 24h");
  setup_key->require_subcommand(1);
  auto key_options = std::make_shared<SetupKeyOptions>();
  auto* key_create = add_command(*setup_key, "create", "Create a setup key for a group (printed once)",
                                 "agent-meshctl setup-key create --group <group-id> --max-uses 10 --expires-in 24h");
  key_create->add_option("--group", key_options->group, "Group ID")->required();
  key_create->add_option("--max-uses", key_options->max_uses, "How many registrations it allows (default: no limit)")
      ->check(CLI::Validator(
          [](std::string& value) {
            return value.find_first_not_of("0123456789") == std::string::npos && !value.empty() && std::stoll(value.substr(0, 9)) >= 1
                       ? std::string()
                       : std::string("must be a whole number of at least 1");
          },
          "N>=1"));
  key_create->add_option("--expires-in", key_options->expires_in, "Lifetime: 90s, 30m, 24h, 7d (default: none)");
  actions.add(key_create, [&context, key_options] { setup_key_create(context, *key_options); });
  actions.add(add_command(*setup_key, "list", "List the setup keys of your groups", "agent-meshctl setup-key list"),
              [&context] { setup_key_list(context); });
  auto key_id = std::make_shared<std::string>();
  auto* key_revoke = add_command(*setup_key, "revoke", "Revoke a setup key", "agent-meshctl setup-key revoke <setup-key-id>");
  key_revoke->add_option("ID", *key_id, "The setup key's ID (not the key)")->required();
  actions.add(key_revoke, [&context, key_id] { setup_key_revoke(context, *key_id); });
}

}  // namespace agent_mesh::ctl
