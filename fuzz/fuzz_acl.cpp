// Fuzzes the parsers of the ACL file and sync document (registry.md, meshd-sdk.md), of revocations
// and rotations (protocol §7) and of agent cards, all on the same input. Invariants:
//  - an accepted document serialises to text that parses again to the same thing (same rules, same
//    signing input), so what a daemon logs or forwards is what it decided on;
//  - every rule of an accepted ACL allows what it names (a named source, each listed capability).
#include <cstdint>
#include <string>
#include <string_view>

#include "agent_mesh/acl.hpp"
#include "agent_mesh/agent_card.hpp"
#include "agent_mesh/json.hpp"
#include "agent_mesh/key_lifecycle.hpp"

namespace {

using namespace agent_mesh;

void check_policy(const AclPolicy& policy) {
  auto again = AclPolicy::from_json(json::serialize_jcs(policy.to_json()));
  if (!again.ok()) __builtin_trap();
  if (again->rules().size() != policy.rules().size()) __builtin_trap();
  for (const auto& rule : policy.rules()) {
    const AgentId source = rule.source.is_any() ? rule.target : rule.source.agent_id();
    const std::string capability = rule.allows_every_capability() ? std::string("any") : rule.allowed_capabilities.front();
    if (!policy.allows(source, rule.target, capability)) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  if (auto policy = AclPolicy::from_json(text); policy.ok()) check_policy(*policy);

  if (auto sync = AclSync::parse(text); sync.ok()) {
    auto again = AclSync::parse(json::serialize_jcs(sync->to_json()));
    if (!again.ok() || again->version != sync->version || again->revoked != sync->revoked) __builtin_trap();
    if (again->policy.rules() != sync->policy.rules()) __builtin_trap();
    check_policy(sync->policy);
  }

  for (const bool require_signature : {true, false}) {
    if (auto revocation = Revocation::parse(text, require_signature); revocation.ok()) {
      auto again = Revocation::parse(revocation->serialize(), require_signature);
      if (!again.ok() || again->signing_input() != revocation->signing_input()) __builtin_trap();
      (void)revocation->verify();
    }
  }

  if (auto rotation = Rotation::parse(text); rotation.ok()) {
    if (!rotation->check_window().ok()) __builtin_trap();
    auto again = Rotation::parse(rotation->serialize());
    if (!again.ok() || !(*again == *rotation)) __builtin_trap();
    (void)rotation->verify();
  }

  if (auto card = AgentCard::parse(text); card.ok()) {
    if (!card->validate().ok()) __builtin_trap();
    auto again = AgentCard::parse(card->serialize());
    if (!again.ok() || again->signing_input() != card->signing_input()) __builtin_trap();
    (void)card->verify();
  }
  return 0;
}
