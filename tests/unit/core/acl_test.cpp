#include "agent_mesh/acl.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "agent_mesh/json.hpp"

namespace agent_mesh {
namespace {

// keys.json identities.
const std::string kAlice = "vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaU";
const std::string kBob = "cF-6wB9VGYmfQ3vELkAlWumrVL_wDeNDOvfWh9nnGtU";
const std::string kCarol = "W5Q3rer_vo9BsT2W7UnS9RzWwmbNjswoSwVS7EkSuN0";
const std::string kDave = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";  // rfc8032_test1
const std::string kGroup = "6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f";

AgentId id(const std::string& text) { return *AgentId::parse(text); }

std::string rule(const std::string& source, const std::string& target, const std::string& capabilities) {
  return R"({"source":")" + source + R"(","target":")" + target + R"(","allowed_capabilities":)" + capabilities + "}";
}

std::string file(const std::string& rules) { return R"({"default_deny":true,"rules":[)" + rules + "]}"; }

// Every rejection: the code and a message substring naming the problem.
void expect_rejected(std::string_view text, Errc code, std::string_view message_part) {
  auto policy = AclPolicy::from_json(text);
  ASSERT_FALSE(policy.ok()) << "accepted: " << text.substr(0, 200);
  EXPECT_EQ(policy.error().code, code) << policy.error().describe();
  EXPECT_NE(policy.error().message.find(message_part), std::string::npos)
      << "message \"" << policy.error().message << "\" lacks \"" << message_part << "\"";
}

void expect_sync_rejected(std::string_view text, std::string_view message_part) {
  auto sync = AclSync::parse(text);
  ASSERT_FALSE(sync.ok()) << "accepted: " << text.substr(0, 200);
  EXPECT_EQ(sync.error().code, Errc::bad_request) << sync.error().describe();
  EXPECT_NE(sync.error().message.find(message_part), std::string::npos)
      << "message \"" << sync.error().message << "\" lacks \"" << message_part << "\"";
}

// ---- allow-list semantics (registry.md "ACL") ----

class AclSemantics : public ::testing::Test {
 protected:
  void SetUp() override {
    auto parsed = AclPolicy::from_json(file(rule(kAlice, kBob, R"(["echo","summarize"])") + "," +
                                            rule("*", kCarol, R"(["ping"])") + "," +
                                            rule(kAlice, kCarol, R"(["*"])")));
    ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
    policy = std::move(parsed).value();
  }
  AclPolicy policy;
};

TEST_F(AclSemantics, AllowedIffSomeRuleMatchesSourceTargetAndCapability) {
  struct Case {
    const std::string& source;
    const std::string& target;
    std::string capability;
    bool allowed;
    const char* why;
  };
  const Case cases[] = {
      {kAlice, kBob, "echo", true, "exact match"},
      {kAlice, kBob, "summarize", true, "second name of the same rule"},
      {kAlice, kBob, "translate", false, "capability not listed"},
      {kAlice, kBob, "Echo", false, "capability names are case-sensitive"},
      {kCarol, kBob, "echo", false, "other source"},
      {kBob, kCarol, "ping", true, "`*` source"},
      {kDave, kCarol, "ping", true, "`*` source: any agent at all"},
      {kBob, kCarol, "echo", false, "`*` source, capability not listed"},
      {kAlice, kCarol, "echo", true, "`*` capability"},
      {kAlice, kCarol, "anything-at_all", true, "`*` capability"},
      {kAlice, kAlice, "echo", false, "other target (no rule targets it)"},
      {kBob, kAlice, "echo", false, "reverse direction is not implied"},
      {kBob, kBob, "echo", false, "source as target"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.why);
    EXPECT_EQ(policy.allows(id(c.source), id(c.target), c.capability), c.allowed);
  }
}

TEST(AclPolicyTest, NoRulesDeniesEverything) {
  const AclPolicy empty;
  EXPECT_TRUE(empty.empty());
  EXPECT_FALSE(empty.allows(id(kAlice), id(kBob), "echo"));
  auto parsed = AclPolicy::from_json(file(""));
  ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
  EXPECT_TRUE(parsed->empty());
  EXPECT_FALSE(parsed->allows(id(kAlice), id(kBob), "echo"));
  EXPECT_FALSE(parsed->allows(AgentId{}, AgentId{}, ""));
}

TEST(AclPolicyTest, RulesForTheSamePairAddUp) {
  auto policy = AclPolicy::from_json(file(rule(kAlice, kBob, R"(["a"])") + "," + rule(kAlice, kBob, R"(["b"])")));
  ASSERT_TRUE(policy.ok()) << policy.error().describe();
  EXPECT_TRUE(policy->allows(id(kAlice), id(kBob), "a"));
  EXPECT_TRUE(policy->allows(id(kAlice), id(kBob), "b"));
  EXPECT_FALSE(policy->allows(id(kAlice), id(kBob), "c"));
  // A later ["*"] widens the pair; a later list after it does not narrow it.
  auto widened = AclPolicy::from_json(file(rule(kAlice, kBob, R"(["a"])") + "," + rule(kAlice, kBob, R"(["*"])") +
                                           "," + rule(kAlice, kBob, R"(["b"])")));
  ASSERT_TRUE(widened.ok());
  EXPECT_TRUE(widened->allows(id(kAlice), id(kBob), "zzz"));
}

TEST(AclPolicyTest, StarSourceAndStarCapabilityAllowEverythingToThatTargetOnly) {
  auto policy = AclPolicy::from_json(file(rule("*", kBob, R"(["*"])")));
  ASSERT_TRUE(policy.ok());
  EXPECT_TRUE(policy->allows(id(kAlice), id(kBob), "x"));
  EXPECT_TRUE(policy->allows(id(kDave), id(kBob), "y"));
  EXPECT_FALSE(policy->allows(id(kAlice), id(kCarol), "x"));
}

TEST(AclPolicyTest, AddUnitesPoliciesAndSelfAddIsSafe) {
  auto file_policy = AclPolicy::from_json(file(rule(kAlice, kBob, R"(["echo"])")));
  auto synced = AclPolicy::from_sync_json(
      R"({"version":7,"rules":[{"id":"r1","source":")" + kCarol + R"(","target":")" + kBob +
      R"(","allowed_capabilities":["ping"]}],"revoked":[]})");
  ASSERT_TRUE(file_policy.ok());
  ASSERT_TRUE(synced.ok()) << synced.error().describe();
  AclPolicy merged = *file_policy;
  merged.add(*synced);
  EXPECT_EQ(merged.rules().size(), 2u);
  EXPECT_TRUE(merged.allows(id(kAlice), id(kBob), "echo"));
  EXPECT_TRUE(merged.allows(id(kCarol), id(kBob), "ping"));
  EXPECT_FALSE(merged.allows(id(kCarol), id(kBob), "echo"));
  merged.add(merged);
  EXPECT_EQ(merged.rules().size(), 4u);
  EXPECT_TRUE(merged.allows(id(kCarol), id(kBob), "ping"));
}

TEST(AclPolicyTest, ToJsonRoundTripsAndKeepsRuleIds) {
  const std::string text = file(R"({"id":"allow-echo","source":")" + kAlice + R"(","target":")" + kBob +
                                R"(","allowed_capabilities":["echo","x-1"]},)" + rule("*", kCarol, R"(["*"])"));
  auto policy = AclPolicy::from_json(text);
  ASSERT_TRUE(policy.ok()) << policy.error().describe();
  ASSERT_EQ(policy->rules().size(), 2u);
  EXPECT_EQ(policy->rules()[0].id, std::optional<std::string>("allow-echo"));
  EXPECT_FALSE(policy->rules()[1].id.has_value());
  EXPECT_TRUE(policy->rules()[1].source.is_any());
  EXPECT_TRUE(policy->rules()[1].allows_every_capability());
  EXPECT_EQ(policy->to_json(), boost::json::parse(text).as_object());
  auto again = AclPolicy::from_json(json::serialize_jcs(policy->to_json()));
  ASSERT_TRUE(again.ok()) << again.error().describe();
  EXPECT_EQ(again->rules(), policy->rules());
}

TEST(AclPolicyTest, FromRulesValidatesEachRule) {
  AclRule good;
  good.source = AclSource::agent(id(kAlice));
  good.target = id(kBob);
  good.allowed_capabilities = {"echo"};
  auto policy = AclPolicy::from_rules({good});
  ASSERT_TRUE(policy.ok()) << policy.error().describe();
  EXPECT_TRUE(policy->allows(id(kAlice), id(kBob), "echo"));

  AclRule mixed = good;
  mixed.allowed_capabilities = {"echo", "*"};
  auto rejected = AclPolicy::from_rules({good, mixed});
  ASSERT_FALSE(rejected.ok());
  EXPECT_EQ(rejected.error().code, Errc::bad_request);
  EXPECT_NE(rejected.error().message.find("rules[1].allowed_capabilities"), std::string::npos)
      << rejected.error().message;

  AclRule no_target = good;
  no_target.target = AgentId{};
  auto missing = AclPolicy::from_rules({no_target});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("target"), std::string::npos) << missing.error().message;
}

TEST(AclSourceTest, ParseAndPrint) {
  auto any = AclSource::parse("*");
  ASSERT_TRUE(any.ok());
  EXPECT_TRUE(any->is_any());
  EXPECT_EQ(any->to_string(), "*");
  auto alice = AclSource::parse(kAlice);
  ASSERT_TRUE(alice.ok());
  EXPECT_FALSE(alice->is_any());
  EXPECT_EQ(alice->agent_id(), id(kAlice));
  EXPECT_TRUE(alice->matches(id(kAlice)));
  EXPECT_FALSE(alice->matches(id(kBob)));
  EXPECT_FALSE(AclSource::parse("**").ok());
  EXPECT_FALSE(AclSource::parse("").ok());
}

// ---- every rejection of the meshd file (meshd-sdk.md "ACL") ----

TEST(AclFileRejection, DefaultDenyIsNotOptional) {
  expect_rejected(R"({"default_deny":false,"rules":[]})", Errc::bad_request, "default deny is not optional");
  expect_rejected(R"({"rules":[]})", Errc::bad_request, "\"default_deny\": true is required");
  expect_rejected(R"({"default_deny":"yes","rules":[]})", Errc::bad_request, "default_deny must be true or false");
  expect_rejected(R"({"default_deny":null,"rules":[]})", Errc::bad_request, "default_deny must not be null");
  expect_rejected(R"({"default_deny":1,"rules":[]})", Errc::bad_request, "default_deny must be true or false");
}

TEST(AclFileRejection, TopLevelShape) {
  expect_rejected("[]", Errc::bad_request, "must be a JSON object");
  expect_rejected("\"acl\"", Errc::bad_request, "must be a JSON object");
  expect_rejected("{", Errc::bad_request, "acl: ");
  expect_rejected("", Errc::bad_request, "acl: ");
  expect_rejected(R"({"default_deny":true,"rules":[],"allow_all":true})", Errc::bad_request,
                  "acl: unknown member \"allow_all\"");
  expect_rejected(R"({"default_deny":true})", Errc::bad_request, "acl: missing member \"rules\"");
  expect_rejected(R"({"default_deny":true,"rules":{}})", Errc::bad_request, "acl: rules must be an array");
  expect_rejected(R"({"default_deny":true,"rules":null})", Errc::bad_request, "acl: rules must not be null");
  expect_rejected(R"({"default_deny":true,"default_deny":true,"rules":[]})", Errc::bad_request, "acl: ");
}

TEST(AclFileRejection, RuleShapeNamesTheRuleByIndex) {
  const std::string ok = rule(kAlice, kBob, R"(["echo"])");
  expect_rejected(file(ok + ",42"), Errc::bad_request, "acl: rules[1] must be an object");
  expect_rejected(file(ok + R"(,{"source":"*","target":")" + kBob +
                       R"(","allowed_capabilities":["*"],"comment":"x"})"),
                  Errc::bad_request, "acl: rules[1]: unknown member \"comment\"");
  // group_id belongs to registry rules only.
  expect_rejected(file(R"({"group_id":")" + kGroup + R"(","source":"*","target":")" + kBob +
                       R"(","allowed_capabilities":["*"]})"),
                  Errc::bad_request, "rules[0]: unknown member \"group_id\"");
  expect_rejected(file(R"({"source":"*","allowed_capabilities":["*"]})"), Errc::bad_request,
                  "rules[0]: missing member \"target\"");
  expect_rejected(file(R"({"target":")" + kBob + R"(","allowed_capabilities":["*"]})"), Errc::bad_request,
                  "rules[0]: missing member \"source\"");
  expect_rejected(file(R"({"source":"*","target":")" + kBob + R"("})"), Errc::bad_request,
                  "rules[0]: missing member \"allowed_capabilities\"");
  expect_rejected(file(R"({"source":null,"target":")" + kBob + R"(","allowed_capabilities":["*"]})"),
                  Errc::bad_request, "rules[0]: source must not be null");
  expect_rejected(file(R"({"source":"*","target":")" + kBob + R"(","allowed_capabilities":"*"})"),
                  Errc::bad_request, "rules[0]: allowed_capabilities must be an array");
  expect_rejected(file(R"({"id":"","source":"*","target":")" + kBob + R"(","allowed_capabilities":["*"]})"),
                  Errc::bad_request, "rules[0].id: must not be empty");
  expect_rejected(file(R"({"id":")" + std::string(129, 'r') + R"(","source":"*","target":")" + kBob +
                       R"(","allowed_capabilities":["*"]})"),
                  Errc::bad_request, "rules[0].id: must be at most 128 bytes");
}

TEST(AclFileRejection, BadAgentIdsNameTheRuleAndMember) {
  const std::string ok = rule(kAlice, kBob, R"(["echo"])");
  expect_rejected(file(ok + "," + ok + "," + rule("alice", kBob, R"(["echo"])")), Errc::bad_request,
                  "acl: rules[2].source: agent ID must be 43 characters");
  expect_rejected(file(rule(kAlice, "bob", R"(["echo"])")), Errc::bad_request,
                  "acl: rules[0].target: agent ID must be 43 characters");
  // `*` is a source wildcard only: a rule always names its target.
  expect_rejected(file(ok + "," + rule(kAlice, "*", R"(["echo"])")), Errc::bad_request, "acl: rules[1].target: ");
  // A non-canonical alias of alice's ID (non-zero trailing bits).
  expect_rejected(file(rule("vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaV", kBob, R"(["echo"])")),
                  Errc::bad_request, "rules[0].source: agent ID is not canonical base64url");
  // 43 characters of the alphabet, but not a point accepted by crypto_core_ed25519_is_valid_point.
  expect_rejected(file(rule(kAlice, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", R"(["echo"])")),
                  Errc::bad_request, "rules[0].target: ");
}

TEST(AclFileRejection, CapabilityLists) {
  expect_rejected(file(rule(kAlice, kBob, R"(["echo!"])")), Errc::bad_request,
                  "rules[0].allowed_capabilities: [0] \"echo!\" is not a capability name");
  expect_rejected(file(rule(kAlice, kBob, R"(["echo",""])")), Errc::bad_request,
                  "rules[0].allowed_capabilities: [1] \"\" is not a capability name");
  expect_rejected(file(rule(kAlice, kBob, "[\"" + std::string(55, 'c') + "\"]")), Errc::bad_request,
                  "is not a capability name");
  expect_rejected(file(rule(kAlice, kBob, R"(["echo","*"])")), Errc::bad_request,
                  "rules[0].allowed_capabilities: \"*\" must be the only entry");
  expect_rejected(file(rule(kAlice, kBob, R"(["*","*"])")), Errc::bad_request, "\"*\" must be the only entry");
  expect_rejected(file(rule(kAlice, kBob, "[]")), Errc::bad_request,
                  "rules[0].allowed_capabilities: must not be empty");
  expect_rejected(file(rule(kAlice, kBob, R"(["echo","echo"])")), Errc::bad_request,
                  "[1] \"echo\" is listed twice");
  expect_rejected(file(rule(kAlice, kBob, R"(["echo",7])")), Errc::bad_request,
                  "rules[0].allowed_capabilities[1] must be a string");
  std::string many = "[";
  for (std::size_t i = 0; i <= limits::max_acl_rule_capabilities; ++i) {
    many += (i == 0 ? "\"c" : ",\"c") + std::to_string(i) + "\"";
  }
  many += "]";
  expect_rejected(file(rule(kAlice, kBob, many)), Errc::bad_request, "has more than 256 capability names");
}

TEST(AclFileRejection, RuleCountAndSizeBounds) {
  const std::string one = rule("*", kBob, R"(["*"])");
  std::string at_limit;
  at_limit.reserve((one.size() + 1) * (limits::max_acl_rules + 1));
  for (std::size_t i = 0; i < limits::max_acl_rules; ++i) {
    if (i != 0) at_limit += ',';
    at_limit += one;
  }
  auto accepted = AclPolicy::from_json(file(at_limit));
  ASSERT_TRUE(accepted.ok()) << accepted.error().describe();
  EXPECT_EQ(accepted->rules().size(), limits::max_acl_rules);
  expect_rejected(file(at_limit + "," + one), Errc::bad_request, "rules has 10001 entries, more than the limit of 10000");

  const std::string huge(limits::max_acl_file_bytes + 1, ' ');
  expect_rejected(huge, Errc::too_large, "acl: ");
}

// ---- the registry's ACL sync document (registry.md "ACL") ----

std::string sync_rule(const std::string& rule_id, const std::string& source, const std::string& target) {
  return R"({"id":")" + rule_id + R"(","group_id":")" + kGroup + R"(","source":")" + source + R"(","target":")" +
         target + R"(","allowed_capabilities":["echo"]})";
}

TEST(AclSyncTest, ParsesVersionRulesAndRevoked) {
  const std::string text = R"({"version":42,"rules":[)" + sync_rule("r1", kAlice, kBob) + "," +
                           R"({"id":"r2","source":"*","target":")" + kBob +
                           R"(","allowed_capabilities":["*"]}],"revoked":[")" + kDave + "\"]}";
  auto sync = AclSync::parse(text);
  ASSERT_TRUE(sync.ok()) << sync.error().describe();
  EXPECT_EQ(sync->version, 42);
  ASSERT_EQ(sync->policy.rules().size(), 2u);
  EXPECT_EQ(sync->policy.rules()[0].id, std::optional<std::string>("r1"));
  ASSERT_TRUE(sync->policy.rules()[0].group_id.has_value());
  EXPECT_EQ(sync->policy.rules()[0].group_id->to_string(), kGroup);
  EXPECT_FALSE(sync->policy.rules()[1].group_id.has_value());
  ASSERT_EQ(sync->revoked.size(), 1u);
  EXPECT_EQ(sync->revoked[0], id(kDave));
  // `*` arrives expanded from the registry, but is accepted with the file's meaning.
  EXPECT_TRUE(sync->policy.allows(id(kCarol), id(kBob), "anything"));
  EXPECT_EQ(sync->to_json(), boost::json::parse(text).as_object());

  auto policy = AclPolicy::from_sync_json(text);
  ASSERT_TRUE(policy.ok());
  EXPECT_EQ(policy->rules(), sync->policy.rules());
  // The file form drops group_id (a file has none) and still parses.
  auto as_file = AclPolicy::from_json(json::serialize_jcs(policy->to_json()));
  ASSERT_TRUE(as_file.ok()) << as_file.error().describe();
  EXPECT_TRUE(as_file->allows(id(kAlice), id(kBob), "echo"));
}

TEST(AclSyncTest, Rejections) {
  const std::string ok_rule = sync_rule("r1", kAlice, kBob);
  expect_sync_rejected("[]", "acl sync: the document must be a JSON object");
  expect_sync_rejected(R"({"version":1,"rules":[],"revoked":[],"default_deny":true})",
                       "acl sync: unknown member \"default_deny\"");
  expect_sync_rejected(R"({"rules":[],"revoked":[]})", "acl sync: missing member \"version\"");
  expect_sync_rejected(R"({"version":-1,"rules":[],"revoked":[]})", "acl sync: version must not be negative");
  expect_sync_rejected(R"({"version":1.5,"rules":[],"revoked":[]})", "version must be an integer");
  expect_sync_rejected(R"({"version":1,"revoked":[]})", "acl sync: missing member \"rules\"");
  expect_sync_rejected(R"({"version":1,"rules":[]})", "acl sync: missing member \"revoked\"");
  expect_sync_rejected(R"({"version":1,"rules":[],"revoked":["nope"]})",
                       "acl sync: revoked[0]: agent ID must be 43 characters");
  expect_sync_rejected(R"({"version":1,"rules":[],"revoked":[5]})", "acl sync: revoked[0] must be a string");
  // Registry rules always carry their ID.
  expect_sync_rejected(R"({"version":1,"rules":[)" + ok_rule + "," + rule(kAlice, kBob, R"(["echo"])") +
                           R"(],"revoked":[]})",
                       "acl sync: rules[1]: missing member \"id\"");
  expect_sync_rejected(R"({"version":1,"rules":[{"id":"r","group_id":"not-a-uuid","source":"*","target":")" + kBob +
                           R"(","allowed_capabilities":["*"]}],"revoked":[]})",
                       "acl sync: rules[0].group_id: ");
  expect_sync_rejected(R"({"version":1,"rules":[{"id":"r","source":"*","target":")" + kBob +
                           R"(","allowed_capabilities":["*"],"owner":"x"}],"revoked":[]})",
                       "acl sync: rules[0]: unknown member \"owner\"");
  expect_sync_rejected(R"({"version":1,"rules":[)" + sync_rule("r1", "x", kBob) + R"(],"revoked":[]})",
                       "acl sync: rules[0].source: agent ID must be 43 characters");
}

}  // namespace
}  // namespace agent_mesh
