#include "agent_mesh/acl.hpp"

#include <boost/json.hpp>

#include "agent_mesh/envelope.hpp"
#include "agent_mesh/json.hpp"
#include "json_fields.hpp"

namespace agent_mesh {
namespace {

using detail::FieldReader;

constexpr std::string_view kAny = "*";

// The two documents differ only in their top level and in which rule members they allow.
enum class RuleDialect : std::uint8_t { file, sync };

std::string rule_context(std::string_view document, std::size_t index) {
  return std::string(document) + ": rules[" + std::to_string(index) + "]";
}

Error at(const std::string& context, std::string_view member, const Error& inner) {
  return fail(inner.code, context + "." + std::string(member) + ": " + inner.message);
}

Status check_rule_id(std::string_view id) {
  if (id.empty()) return fail(Errc::bad_request, "must not be empty");
  if (id.size() > limits::max_acl_rule_id_bytes) {
    return fail(Errc::bad_request, "must be at most " + std::to_string(limits::max_acl_rule_id_bytes) + " bytes");
  }
  return {};
}

Status check_capabilities(const std::vector<std::string>& names) {
  if (names.empty()) {
    // A rule that allows nothing is certainly a mistake (rules only allow): say so rather than
    // silently keep a useless rule.
    return fail(Errc::bad_request, "must not be empty (use [\"*\"] for every capability)");
  }
  if (names.size() > limits::max_acl_rule_capabilities) {
    return fail(Errc::bad_request,
                "has more than " + std::to_string(limits::max_acl_rule_capabilities) + " capability names");
  }
  std::unordered_set<std::string_view> seen;
  seen.reserve(names.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    const std::string& name = names[i];
    if (name == kAny) {
      if (names.size() != 1) {
        return fail(Errc::bad_request, "\"*\" must be the only entry (it already allows every capability)");
      }
      continue;
    }
    if (!is_valid_capability_name(name)) {
      return fail(Errc::bad_request, "[" + std::to_string(i) + "] \"" + detail::clip(name) +
                                         "\" is not a capability name ([A-Za-z0-9_-]{1,54})");
    }
    if (!seen.insert(name).second) {
      return fail(Errc::bad_request, "[" + std::to_string(i) + "] \"" + name + "\" is listed twice");
    }
  }
  return {};
}

Result<AclRule> parse_rule(const boost::json::value& value, std::string_view document, std::size_t index,
                           RuleDialect dialect) {
  const std::string context = rule_context(document, index);
  if (!value.is_object()) return fail(Errc::bad_request, context + " must be an object");
  FieldReader fields(value.as_object(), context);
  if (dialect == RuleDialect::file) {
    AGENT_MESH_TRY(fields.reject_unknown({"id", "source", "target", "allowed_capabilities"}));
  } else {
    AGENT_MESH_TRY(fields.reject_unknown({"id", "group_id", "source", "target", "allowed_capabilities"}));
  }

  AclRule rule;
  std::string_view text;
  bool present = false;
  if (dialect == RuleDialect::file) {
    AGENT_MESH_TRY(fields.optional_string("id", text, present));
  } else {
    AGENT_MESH_TRY(fields.required_string("id", text));
    present = true;
  }
  if (present) {
    if (auto checked = check_rule_id(text); !checked) return at(context, "id", checked.error());
    rule.id = std::string(text);
  }

  if (dialect == RuleDialect::sync) {
    AGENT_MESH_TRY(fields.optional_string("group_id", text, present));
    if (present) {
      auto group = Uuid::parse(text);
      if (!group) return at(context, "group_id", group.error());
      rule.group_id = *group;
    }
  }

  AGENT_MESH_TRY(fields.required_string("source", text));
  auto source = AclSource::parse(text);
  if (!source) return at(context, "source", source.error());
  rule.source = std::move(source).value();

  AGENT_MESH_TRY(fields.required_string("target", text));
  auto target = AgentId::parse(text);
  if (!target) return at(context, "target", target.error());
  rule.target = std::move(target).value();

  const boost::json::array* capabilities = nullptr;
  AGENT_MESH_TRY(fields.required_array("allowed_capabilities", capabilities));
  // Bound before copying, so a hostile list costs nothing beyond the parse.
  if (capabilities->size() > limits::max_acl_rule_capabilities) {
    return fail(Errc::bad_request, context + ".allowed_capabilities: has more than " +
                                       std::to_string(limits::max_acl_rule_capabilities) + " capability names");
  }
  rule.allowed_capabilities.reserve(capabilities->size());
  for (std::size_t i = 0; i < capabilities->size(); ++i) {
    const boost::json::value& name = (*capabilities)[i];
    if (!name.is_string()) {
      return fail(Errc::bad_request,
                  context + ".allowed_capabilities[" + std::to_string(i) + "] must be a string");
    }
    rule.allowed_capabilities.emplace_back(name.as_string());
  }
  if (auto checked = check_capabilities(rule.allowed_capabilities); !checked) {
    return at(context, "allowed_capabilities", checked.error());
  }
  return rule;
}

// Reads `rules` into `out`, naming each failing rule by its index.
Status parse_rules(const boost::json::array& rules, std::string_view document, RuleDialect dialect,
                   std::size_t max_rules, std::vector<AclRule>& out) {
  if (rules.size() > max_rules) {
    return fail(Errc::bad_request, std::string(document) + ": rules has " + std::to_string(rules.size()) +
                                       " entries, more than the limit of " + std::to_string(max_rules));
  }
  out.reserve(rules.size());
  for (std::size_t i = 0; i < rules.size(); ++i) {
    auto rule = parse_rule(rules[i], document, i, dialect);
    if (!rule) return std::move(rule).error();
    out.push_back(std::move(rule).value());
  }
  return {};
}

}  // namespace

// ---- AclSource ----

Result<AclSource> AclSource::parse(std::string_view text) {
  if (text == kAny) return any();
  auto id = AgentId::parse(text);
  if (!id) return std::move(id).error();
  return agent(std::move(id).value());
}

const AgentId& AclSource::agent_id() const {
  if (!agent_) result_misuse("AclSource::agent_id on \"*\"");
  return *agent_;
}

// ---- AclRule ----

Status AclRule::validate() const {
  if (id) {
    if (auto checked = check_rule_id(*id); !checked) return fail(Errc::bad_request, "id: " + checked.error().message);
  }
  if (target.empty()) return fail(Errc::bad_request, "target: missing agent ID");
  if (!source.is_any() && source.agent_id().empty()) return fail(Errc::bad_request, "source: missing agent ID");
  if (auto checked = check_capabilities(allowed_capabilities); !checked) {
    return fail(Errc::bad_request, "allowed_capabilities: " + checked.error().message);
  }
  return {};
}

boost::json::object AclRule::to_json() const {
  boost::json::object out;
  if (id) out["id"] = *id;
  if (group_id) out["group_id"] = group_id->to_string();
  out["source"] = source.to_string();
  out["target"] = target.str();
  boost::json::array capabilities;
  capabilities.reserve(allowed_capabilities.size());
  for (const auto& name : allowed_capabilities) capabilities.emplace_back(name);
  out["allowed_capabilities"] = std::move(capabilities);
  return out;
}

// ---- AclPolicy ----

void AclPolicy::CapabilitySet::add(const AclRule& rule) {
  if (rule.allows_every_capability()) {
    every = true;
    names.clear();  // `every` subsumes them
    return;
  }
  if (every) return;
  for (const auto& name : rule.allowed_capabilities) names.insert(name);
}

bool AclPolicy::CapabilitySet::contains(std::string_view capability) const {
  return every || names.find(capability) != names.end();
}

void AclPolicy::index(const AclRule& rule) {
  TargetEntry& entry = by_target_[rule.target];
  if (rule.source.is_any()) {
    entry.from_any_source.add(rule);
  } else {
    entry.by_source[rule.source.agent_id()].add(rule);
  }
}

Result<AclPolicy> AclPolicy::from_json(std::string_view text) {
  constexpr std::string_view kDocument = "acl";
  auto parsed = json::parse_ijson(text, {.max_bytes = limits::max_acl_file_bytes});
  if (!parsed) return fail(parsed.error().code, std::string(kDocument) + ": " + parsed.error().message);
  if (!parsed->is_object()) return fail(Errc::bad_request, "acl: the ACL file must be a JSON object");
  const boost::json::object& object = parsed->as_object();
  FieldReader fields(object, kDocument);
  AGENT_MESH_TRY(fields.reject_unknown({"default_deny", "rules"}));

  // registry.md: "Rules only allow; with no match it is denied (default deny is not optional)".
  // The member is still required, so a file written for the original agent-mesh (where a missing
  // ACL allowed everything) cannot be mistaken for a policy with the old meaning.
  if (!object.contains("default_deny")) {
    return fail(Errc::bad_request,
                "acl: \"default_deny\": true is required (default deny is not optional: rules only allow)");
  }
  bool default_deny = false;
  AGENT_MESH_TRY(fields.required_bool("default_deny", default_deny));
  if (!default_deny) {
    return fail(Errc::bad_request,
                "acl: default_deny must be true: default deny is not optional (rules only allow; "
                "write a rule with source \"*\" and [\"*\"] to allow everything on purpose)");
  }

  const boost::json::array* rules = nullptr;
  AGENT_MESH_TRY(fields.required_array("rules", rules));
  std::vector<AclRule> parsed_rules;
  AGENT_MESH_TRY(parse_rules(*rules, kDocument, RuleDialect::file, limits::max_acl_rules, parsed_rules));

  AclPolicy policy;
  for (const auto& rule : parsed_rules) policy.index(rule);
  policy.rules_ = std::move(parsed_rules);
  return policy;
}

Result<AclPolicy> AclPolicy::from_sync_json(std::string_view text) {
  auto sync = AclSync::parse(text);
  if (!sync) return std::move(sync).error();
  return std::move(sync->policy);
}

Result<AclPolicy> AclPolicy::from_rules(std::vector<AclRule> rules) {
  if (rules.size() > limits::max_acl_sync_rules) {
    return fail(Errc::bad_request, "acl: " + std::to_string(rules.size()) + " rules, more than the limit of " +
                                       std::to_string(limits::max_acl_sync_rules));
  }
  for (std::size_t i = 0; i < rules.size(); ++i) {
    if (auto checked = rules[i].validate(); !checked) {
      return fail(Errc::bad_request, rule_context("acl", i) + "." + checked.error().message);
    }
  }
  AclPolicy policy;
  for (const auto& rule : rules) policy.index(rule);
  policy.rules_ = std::move(rules);
  return policy;
}

bool AclPolicy::allows(const AgentId& source, const AgentId& target, std::string_view capability) const {
  const auto entry = by_target_.find(target);
  if (entry == by_target_.end()) return false;
  if (entry->second.from_any_source.contains(capability)) return true;
  const auto from_source = entry->second.by_source.find(source);
  return from_source != entry->second.by_source.end() && from_source->second.contains(capability);
}

void AclPolicy::add(const AclPolicy& other) {
  // Copy first: `other` may be *this.
  const std::vector<AclRule> added = other.rules_;
  rules_.reserve(rules_.size() + added.size());
  for (const auto& rule : added) {
    index(rule);
    rules_.push_back(rule);
  }
}

boost::json::object AclPolicy::to_json() const {
  boost::json::array rules;
  rules.reserve(rules_.size());
  for (const auto& rule : rules_) {
    boost::json::object entry = rule.to_json();
    entry.erase("group_id");
    rules.emplace_back(std::move(entry));
  }
  boost::json::object out;
  out["default_deny"] = true;
  out["rules"] = std::move(rules);
  return out;
}

// ---- AclSync ----

Result<AclSync> AclSync::parse(std::string_view text) {
  constexpr std::string_view kDocument = "acl sync";
  auto parsed = json::parse_ijson(text, {.max_bytes = limits::max_acl_sync_bytes});
  if (!parsed) return fail(parsed.error().code, std::string(kDocument) + ": " + parsed.error().message);
  if (!parsed->is_object()) return fail(Errc::bad_request, "acl sync: the document must be a JSON object");
  FieldReader fields(parsed->as_object(), kDocument);
  AGENT_MESH_TRY(fields.reject_unknown({"version", "rules", "revoked"}));

  AclSync sync;
  AGENT_MESH_TRY(fields.required_integer("version", sync.version));
  if (sync.version < 0) return fail(Errc::bad_request, "acl sync: version must not be negative");

  const boost::json::array* rules = nullptr;
  AGENT_MESH_TRY(fields.required_array("rules", rules));
  std::vector<AclRule> parsed_rules;
  AGENT_MESH_TRY(parse_rules(*rules, kDocument, RuleDialect::sync, limits::max_acl_sync_rules, parsed_rules));

  const boost::json::array* revoked = nullptr;
  AGENT_MESH_TRY(fields.required_array("revoked", revoked));
  sync.revoked.reserve(revoked->size());
  for (std::size_t i = 0; i < revoked->size(); ++i) {
    const std::string context = "acl sync: revoked[" + std::to_string(i) + "]";
    const boost::json::value& entry = (*revoked)[i];
    if (!entry.is_string()) return fail(Errc::bad_request, context + " must be a string");
    auto id = AgentId::parse(entry.as_string());
    if (!id) return fail(Errc::bad_request, context + ": " + id.error().message);
    sync.revoked.push_back(std::move(id).value());
  }

  for (const auto& rule : parsed_rules) sync.policy.index(rule);
  sync.policy.rules_ = std::move(parsed_rules);
  return sync;
}

boost::json::object AclSync::to_json() const {
  boost::json::array rules;
  rules.reserve(policy.rules().size());
  for (const auto& rule : policy.rules()) rules.emplace_back(rule.to_json());
  boost::json::array revoked_ids;
  revoked_ids.reserve(revoked.size());
  for (const auto& id : revoked) revoked_ids.emplace_back(id.str());
  boost::json::object out;
  out["version"] = version;
  out["rules"] = std::move(rules);
  out["revoked"] = std::move(revoked_ids);
  return out;
}

}  // namespace agent_mesh
