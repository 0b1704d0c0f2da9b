// agent-meshctl's registry commands against a real agent-mesh-server, each result checked over REST
// as well: register (key creation, --secret-key never saved, --capabilities-file, --group,
// --setup-key), deregister, discover (table and --json, filters, agent-signed), acl, group,
// setup-key, revoke (admin and self-signed) and rotate / rotate complete.
#include "ctl_fixture.hpp"
#include "registry/time_format.hpp"

namespace agent_mesh::test::ctl {
namespace {

std::vector<std::string> capability_names(const boost::json::value& card) {
  std::vector<std::string> names;
  if (!card.is_object() || !card.as_object().contains("capabilities")) return names;
  for (const auto& c : card.at("capabilities").as_array()) names.push_back(json_string(c, "name"));
  return names;
}

bool items_contain(const boost::json::value& list, std::string_view key, const std::string& value) {
  if (!list.is_object() || !list.as_object().contains("items") || !list.at("items").is_array()) return false;
  for (const auto& item : list.at("items").as_array()) {
    if (json_string(item, key) == value) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// register

TEST_F(CtlTest, RegisterCreatesAndSavesAKeyAndPrintsTheId) {
  auto home = logged_in_home("a");
  auto r = ctl(home, {"register", "--name", "bob", "--capabilities", "echo,chat", "--description", "Bob echoes"});
  ASSERT_TRUE(IsOk(r));
  const std::string id = r.out_trimmed();
  ASSERT_TRUE(is_agent_id(id)) << "stdout must be the agent ID alone" << r.describe();
  EXPECT_EQ(r.out, id + "\n") << r.describe();
  EXPECT_TRUE(contains(r.err, "Agent ID: " + id)) << r.describe();
  // The key: keys/<id>.key, 0600, and the config points at it.
  const auto key_file = home.key_path(id);
  ASSERT_TRUE(std::filesystem::exists(key_file)) << key_file;
  EXPECT_EQ(file_mode(key_file), 0600u) << std::oct << file_mode(key_file);
  auto key = KeyPair::from_key_file_text(read_text(key_file));
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(key.value().agent_id().str(), id);
  EXPECT_TRUE(std::regex_match(read_text(key_file), std::regex("[A-Za-z0-9_-]{43}\n")));
  EXPECT_EQ(home.config_value("agent_id"), id) << home.read_config();
  EXPECT_EQ(std::filesystem::path(home.config_value("key_file")), key_file) << home.read_config();
  EXPECT_EQ(home.config_value("token"), token_) << "register lost the token" << home.read_config();
  EXPECT_EQ(file_mode(home.config()), 0600u);
  EXPECT_EQ(file_mode(home.path), 0700u);
  // The card, as the registry holds it: personal group, name, description, capabilities.
  auto card = server_->as(token_, "GET", "/api/v1/agents/" + id);
  ASSERT_EQ(card.status, 200) << card.body;
  EXPECT_EQ(json_string(card.json, "group_id"), group_);
  EXPECT_EQ(json_string(card.json, "name"), "bob");
  EXPECT_EQ(json_string(card.json, "description"), "Bob echoes");
  EXPECT_EQ(capability_names(card.json), (std::vector<std::string>{"echo", "chat"})) << card.body;
}

TEST_F(CtlTest, RegisterJsonPrintsTheStoredCard) {
  auto home = logged_in_home("a");
  auto r = ctl(home, {"register", "--json", "--name", "bob", "--capabilities", "echo"});
  ASSERT_TRUE(IsOk(r));
  auto json = parse_json(r.out);
  ASSERT_TRUE(json && json->is_object()) << r.describe();
  const auto id = json_string(*json, "agent_id");
  ASSERT_TRUE(is_agent_id(id)) << r.describe();
  EXPECT_EQ(json_string(*json, "group_id"), group_) << r.describe();
  EXPECT_EQ(json_string(*json, "name"), "bob") << r.describe();
  EXPECT_TRUE(json->as_object().contains("registered_at")) << "the stored card, not the request" << r.describe();
  EXPECT_TRUE(contains(r.err, "Agent ID: " + id)) << r.describe();
  EXPECT_EQ(server_->as(token_, "GET", "/api/v1/agents/" + id).status, 200);
}

TEST_F(CtlTest, RegisterUsesTheConfiguredKey) {
  auto home = logged_in_home("a");
  auto keygen = ctl(home, {"keygen", "--save"});
  ASSERT_TRUE(IsOk(keygen));
  const std::string id = home.config_value("agent_id");
  ASSERT_TRUE(is_agent_id(id)) << home.read_config();
  EXPECT_EQ(register_agent(home, "bob", "echo"), id);
  // Exactly one key file: no second key was made.
  std::size_t keys = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(home.path / "keys")) ++keys;
  EXPECT_EQ(keys, 1u);
}

TEST_F(CtlTest, RegisterUsesAKeyFileFromTheEnvironment) {
  auto home = logged_in_home("a");
  auto key = KeyPair::generate();
  const auto key_file = root_ / "elsewhere.key";
  ASSERT_TRUE(key.save(key_file).ok());
  auto r = ctl(home, {"register", "--name", "bob", "--capabilities", "echo"}, {{"MESH_KEY_FILE", key_file.string()}});
  ASSERT_TRUE(IsOk(r));
  EXPECT_EQ(r.out_trimmed(), key.agent_id().str()) << r.describe();
  // And by flag.
  auto other = KeyPair::generate();
  const auto other_file = root_ / "other.key";
  ASSERT_TRUE(other.save(other_file).ok());
  auto by_flag = ctl(home, {"register", "--name", "carl", "--capabilities", "echo", "--key-file", other_file.string()},
                     {{"MESH_KEY_FILE", key_file.string()}});
  ASSERT_TRUE(IsOk(by_flag));
  EXPECT_EQ(by_flag.out_trimmed(), other.agent_id().str()) << by_flag.describe();
}

TEST_F(CtlTest, RegisterWithSecretKeyNeverSavesIt) {
  auto home = logged_in_home("a");
  auto key = KeyPair::generate();
  const std::string seed = key.key_file_text().substr(0, 43);
  auto r = ctl(home, {"register", "--name", "bob", "--capabilities", "echo", "--secret-key", seed});
  ASSERT_TRUE(IsOk(r));
  EXPECT_EQ(r.out_trimmed(), key.agent_id().str()) << r.describe();
  EXPECT_FALSE(contains(home.all_files_text(), seed)) << "the --secret-key was written under MESH_HOME";
  EXPECT_FALSE(home.config_has("secret_key")) << home.read_config();
  EXPECT_FALSE(home.config_has("key_file")) << home.read_config();
  EXPECT_FALSE(std::filesystem::exists(home.key_path(key.agent_id().str())));
  EXPECT_FALSE(contains(r.out + r.err, seed)) << "the secret was echoed" << r.describe();
  EXPECT_EQ(server_->as(token_, "GET", "/api/v1/agents/" + key.agent_id().str()).status, 200);
}

TEST_F(CtlTest, RegisterWithSecretKeyLeavesTheConfiguredAgentAlone) {
  auto home = logged_in_home("a");
  const auto configured = register_agent(home, "alice", "chat");
  const std::string before = home.read_config();
  auto key = KeyPair::generate();
  const std::string seed = key.key_file_text().substr(0, 43);
  EXPECT_EQ(register_agent(home, "temp", "echo", {"--secret-key", seed}), key.agent_id().str());
  EXPECT_EQ(home.read_config(), before) << "a --secret-key registration changed the config";
  EXPECT_EQ(home.config_value("agent_id"), configured);
}

TEST_F(CtlTest, RegisterWithASecretKeyInTheConfig) {
  auto home = new_home("a");
  auto key = KeyPair::generate();
  home.write_config(toml_line("cp_url", server_->base_url()) + toml_line("token", token_) +
                    toml_line("secret_key", key.key_file_text().substr(0, 43)));
  EXPECT_EQ(register_agent(home, "bob", "echo"), key.agent_id().str());
  EXPECT_FALSE(std::filesystem::exists(home.path / "keys")) << "a key was configured: none may be created";
}

TEST_F(CtlTest, RegisterWithAMalformedSecretKeyFails) {
  auto home = logged_in_home("a");
  auto r = ctl(home, {"register", "--name", "bob", "--capabilities", "echo", "--secret-key", "too-short"});
  EXPECT_NE(r.exit, 0) << r.describe();
  EXPECT_TRUE(r.out.empty()) << r.describe();
  EXPECT_TRUE(r.err.rfind("error: ", 0) == 0) << r.describe();
  EXPECT_FALSE(home.config_has("agent_id")) << home.read_config();
}

TEST_F(CtlTest, RegisterAgainReplacesTheCard) {
  auto home = logged_in_home("a");
  const auto id = register_agent(home, "bob", "echo", {"--description", "first"});
  EXPECT_EQ(register_agent(home, "bob", "echo,chat", {"--description", "second"}), id);
  auto card = server_->as(token_, "GET", "/api/v1/agents/" + id);
  EXPECT_EQ(json_string(card.json, "description"), "second") << card.body;
  EXPECT_EQ(capability_names(card.json), (std::vector<std::string>{"echo", "chat"})) << card.body;
}

TEST_F(CtlTest, RegisterWithACapabilitiesFile) {
  auto home = logged_in_home("a");
  const auto caps = root_ / "caps.json";
  write_text(caps, R"([{"name": "translate", "description": "Translates text",
                        "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
                        "output_schema": {"type": "object"}}])");
  auto r = ctl(home, {"register", "--name", "tr", "--capabilities", "echo", "--capabilities-file", caps.string()});
  ASSERT_TRUE(IsOk(r));
  auto card = server_->as(token_, "GET", "/api/v1/agents/" + r.out_trimmed());
  ASSERT_EQ(card.status, 200) << card.body;
  const boost::json::value* translate = nullptr;
  for (const auto& c : card.json.at("capabilities").as_array()) {
    if (json_string(c, "name") == "translate") translate = &c;
  }
  ASSERT_NE(translate, nullptr) << card.body;
  EXPECT_EQ(json_string(*translate, "description"), "Translates text") << card.body;
  EXPECT_EQ(translate->at("input_schema"),
            boost::json::parse(R"({"type": "object", "properties": {"text": {"type": "string"}}})"))
      << card.body;
  EXPECT_EQ(translate->at("output_schema"), boost::json::parse(R"({"type": "object"})")) << card.body;
  const auto names = capability_names(card.json);
  EXPECT_NE(std::find(names.begin(), names.end(), "echo"), names.end()) << "--capabilities adds to the file" << card.body;
  // The file alone is enough.
  auto other = logged_in_home("b");
  auto alone = ctl(other, {"register", "--name", "tr2", "--capabilities-file", caps.string()});
  ASSERT_TRUE(IsOk(alone));
  auto card2 = server_->as(token_, "GET", "/api/v1/agents/" + alone.out_trimmed());
  EXPECT_EQ(capability_names(card2.json), std::vector<std::string>{"translate"}) << card2.body;
}

TEST_F(CtlTest, RegisterWithAMalformedCapabilitiesFileFails) {
  auto home = logged_in_home("a");
  const auto caps = root_ / "caps.json";
  for (const std::string& text : {std::string("[{\"name\": \"x\""), std::string("{\"name\": \"x\"}"),
                                 std::string("[{\"description\": \"no name\"}]")}) {
    write_text(caps, text);
    auto r = ctl(home, {"register", "--name", "tr", "--capabilities", "x", "--capabilities-file", caps.string()});
    EXPECT_TRUE(IsCliError(r, 1)) << text;
    EXPECT_TRUE(contains(r.err, "caps.json")) << "the error should name the file" << r.describe();
  }
  // A missing file too.
  auto missing = ctl(home, {"register", "--name", "tr", "--capabilities", "x", "--capabilities-file",
                            (root_ / "missing.json").string()});
  EXPECT_TRUE(IsCliError(missing, 1));
  auto listed = server_->as(token_, "GET", "/api/v1/agents");
  EXPECT_EQ(listed.json.at("items").as_array().size(), 0u) << "nothing may be registered: " << listed.body;
}

TEST_F(CtlTest, RegisterIntoAnotherGroup) {
  auto home = logged_in_home("a");
  auto created = ctl(home, {"group", "create", "team"});
  ASSERT_TRUE(IsOk(created));
  const std::string team = created.out_trimmed();
  ASSERT_TRUE(is_uuid(team)) << created.describe();
  const auto id = register_agent(home, "bob", "echo", {"--group", team});
  auto card = server_->as(token_, "GET", "/api/v1/agents/" + id);
  EXPECT_EQ(json_string(card.json, "group_id"), team) << card.body;
}

TEST_F(CtlTest, RegisterWithASetupKeyNeedsNoToken) {
  auto admin = logged_in_home("admin");
  auto created = ctl(admin, {"setup-key", "create", "--group", group_});
  ASSERT_TRUE(IsOk(created));
  const std::string setup_key = created.out_trimmed();
  ASSERT_FALSE(setup_key.empty());
  EXPECT_EQ(created.out_lines().size(), 1u) << "stdout: the key alone" << created.describe();

  auto robot = new_home("robot");
  auto r = ctl(robot, {"register", "--name", "ci", "--capabilities", "build", "--setup-key", setup_key, "--group", group_},
               {{"MESH_CP_URL", server_->base_url()}});
  ASSERT_TRUE(IsOk(r));
  const std::string id = r.out_trimmed();
  ASSERT_TRUE(is_agent_id(id)) << r.describe();
  EXPECT_TRUE(std::filesystem::exists(robot.key_path(id)));
  EXPECT_FALSE(robot.config_has("token")) << robot.read_config();
  EXPECT_FALSE(contains(robot.all_files_text(), setup_key)) << "the setup key was saved";
  auto card = server_->as(token_, "GET", "/api/v1/agents/" + id);
  EXPECT_EQ(json_string(card.json, "group_id"), group_) << card.body;
}

TEST_F(CtlTest, RegisterWithABadSetupKeyFails) {
  auto robot = new_home("robot");
  auto r = ctl(robot, {"register", "--name", "ci", "--capabilities", "build", "--setup-key", "not-a-real-key", "--group", group_},
               {{"MESH_CP_URL", server_->base_url()}});
  EXPECT_TRUE(IsCliError(r, 1));
}

TEST_F(CtlTest, RegisterWithoutTokenOrSetupKeySaysToLogIn) {
  auto home = new_home("a");
  auto r = ctl(home, {"register", "--name", "bob", "--capabilities", "echo"}, {{"MESH_CP_URL", server_->base_url()}});
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "login")) << r.describe();
}

// ---------------------------------------------------------------------------------------------
// deregister

TEST_F(CtlTest, DeregisterTheConfiguredAgent) {
  auto home = logged_in_home("a");
  const auto id = register_agent(home, "bob", "echo");
  auto r = ctl(home, {"deregister"});
  ASSERT_TRUE(IsOk(r));
  EXPECT_EQ(server_->as(token_, "GET", "/api/v1/agents/" + id).status, 404);
}

TEST_F(CtlTest, DeregisterByAgentIdFlag) {
  auto home = logged_in_home("a");
  auto key = register_over_rest("bob", {"echo"});
  ASSERT_TRUE(IsOk(ctl(home, {"deregister", "--agent-id", key.agent_id().str()})));
  EXPECT_EQ(server_->as(token_, "GET", "/api/v1/agents/" + key.agent_id().str()).status, 404);
}

TEST_F(CtlTest, DeregisterWithOnlyTheAgentKey) {
  // No token: the agent signature deregisters its own card.
  auto home = logged_in_home("a");
  const auto id = register_agent(home, "bob", "echo");
  auto keyonly = new_home("k");
  keyonly.write_config(toml_line("cp_url", server_->base_url()) + toml_line("key_file", home.key_path(id).string()) +
                       toml_line("agent_id", id));
  ASSERT_TRUE(IsOk(ctl(keyonly, {"deregister"})));
  EXPECT_EQ(server_->as(token_, "GET", "/api/v1/agents/" + id).status, 404);
}

TEST_F(CtlTest, DeregisterAnUnknownAgentFails) {
  auto home = logged_in_home("a");
  auto r = ctl(home, {"deregister", "--agent-id", random_agent_id()});
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(lower(r.err), "not_found") || contains(lower(r.err), "not found")) << r.describe();
}

TEST_F(CtlTest, DeregisterWithoutAnAgentFails) {
  auto home = logged_in_home("a");
  // Nothing configured and no --agent-id: not a usage error (the flag is optional) but missing state.
  EXPECT_TRUE(IsCliError(ctl(home, {"deregister"}), 1));
  auto bad = ctl(home, {"deregister", "--agent-id", "not-an-id"});
  EXPECT_TRUE(IsCliError(bad, 1) || IsCliError(bad, 2)) << bad.describe();
}

// ---------------------------------------------------------------------------------------------
// discover

TEST_F(CtlTest, DiscoverTable) {
  auto home = logged_in_home("a");
  auto bob = register_over_rest("bob", {"echo", "chat"});
  auto r = ctl(home, {"discover"});
  ASSERT_TRUE(IsOk(r));
  const auto lines = r.out_lines();
  ASSERT_GE(lines.size(), 2u) << r.describe();
  EXPECT_TRUE(std::regex_match(lines[0], std::regex("AGENT ID +NAME +ONLINE +CAPABILITIES *"))) << r.describe();
  bool found = false;
  for (const auto& line : lines) {
    if (!contains(line, bob.agent_id().str())) continue;
    found = true;
    EXPECT_TRUE(contains(line, "bob")) << line;
    EXPECT_TRUE(contains(line, "echo")) << line;
    EXPECT_TRUE(contains(line, "chat")) << line;
    // Columns line up with the header.
    EXPECT_EQ(line.find(bob.agent_id().str()), 0u) << line;
    EXPECT_EQ(line.find("bob"), lines[0].find("NAME")) << r.describe();
  }
  EXPECT_TRUE(found) << r.describe();
}

TEST_F(CtlTest, DiscoverJsonIsTheRegistryList) {
  auto home = logged_in_home("a");
  auto bob = register_over_rest("bob", {"echo"});
  auto carl = register_over_rest("carl", {"chat"});
  auto r = ctl(home, {"discover", "--json"});
  ASSERT_TRUE(IsOk(r));
  auto json = parse_json(r.out);
  ASSERT_TRUE(json && json->is_object()) << r.describe();
  EXPECT_TRUE(items_contain(*json, "agent_id", bob.agent_id().str())) << r.describe();
  EXPECT_TRUE(items_contain(*json, "agent_id", carl.agent_id().str())) << r.describe();
  for (const auto& item : json->at("items").as_array()) {
    EXPECT_TRUE(item.as_object().contains("capabilities")) << "the registry's cards" << r.describe();
    EXPECT_TRUE(item.as_object().contains("online")) << r.describe();
  }
}

TEST_F(CtlTest, DiscoverFilters) {
  auto home = logged_in_home("a");
  auto bob = register_over_rest("bob", {"echo"});
  auto poet = register_over_rest("carl", {"chat"}, "translates french poetry");
  auto by_capability = ctl(home, {"discover", "--json", "--capability", "echo"});
  ASSERT_TRUE(IsOk(by_capability));
  auto json = parse_json(by_capability.out).value_or(nullptr);
  EXPECT_TRUE(items_contain(json, "agent_id", bob.agent_id().str())) << by_capability.describe();
  EXPECT_FALSE(items_contain(json, "agent_id", poet.agent_id().str())) << by_capability.describe();

  auto by_query = ctl(home, {"discover", "--json", "--query", "poetry"});
  ASSERT_TRUE(IsOk(by_query));
  json = parse_json(by_query.out).value_or(nullptr);
  EXPECT_TRUE(items_contain(json, "agent_id", poet.agent_id().str())) << by_query.describe();
  EXPECT_FALSE(items_contain(json, "agent_id", bob.agent_id().str())) << by_query.describe();

  // Nobody is connected to the relay: --online lists none of them.
  auto online = ctl(home, {"discover", "--json", "--online"});
  ASSERT_TRUE(IsOk(online));
  json = parse_json(online.out).value_or(nullptr);
  ASSERT_TRUE(json.is_object()) << online.describe();
  EXPECT_EQ(json.at("items").as_array().size(), 0u) << online.describe();

  // No match: a header only, exit 0.
  auto none = ctl(home, {"discover", "--capability", "nothing-has-this"});
  ASSERT_TRUE(IsOk(none));
  ASSERT_GE(none.out_lines().size(), 1u) << none.describe();
  EXPECT_FALSE(contains(none.out, bob.agent_id().str()));
}

TEST_F(CtlTest, DiscoverWithTheAgentSignatureWhenNoToken) {
  auto home = logged_in_home("a");
  const auto id = register_agent(home, "alice", "chat");
  auto bob = register_over_rest("bob", {"echo"});
  auto keyonly = new_home("k");
  keyonly.write_config(toml_line("cp_url", server_->base_url()) + toml_line("key_file", home.key_path(id).string()) +
                       toml_line("agent_id", id));
  auto r = ctl(keyonly, {"discover", "--json"});
  ASSERT_TRUE(IsOk(r));
  EXPECT_TRUE(items_contain(parse_json(r.out).value_or(nullptr), "agent_id", bob.agent_id().str())) << r.describe();
  // Also with the key given through the environment only.
  auto envonly = new_home("e");
  auto from_env = ctl(envonly, {"discover", "--json"},
                      {{"MESH_CP_URL", server_->base_url()}, {"MESH_KEY_FILE", home.key_path(id).string()},
                       {"MESH_AGENT_ID", id}});
  ASSERT_TRUE(IsOk(from_env));
  EXPECT_TRUE(items_contain(parse_json(from_env.out).value_or(nullptr), "agent_id", bob.agent_id().str()))
      << from_env.describe();
}

// ---------------------------------------------------------------------------------------------
// acl

TEST_F(CtlTest, AclAddListRemove) {
  auto home = logged_in_home("a");
  auto alice = register_over_rest("alice", {"chat"});
  auto bob = register_over_rest("bob", {"echo", "chat"});
  auto added = ctl(home, {"acl", "add", "--source", alice.agent_id().str(), "--target", bob.agent_id().str(),
                          "--capabilities", "echo,chat"});
  ASSERT_TRUE(IsOk(added));
  const std::string rule = added.out_trimmed();
  ASSERT_TRUE(is_resource_id(rule)) << "stdout: the rule id alone" << added.describe();

  auto rest = server_->as(token_, "GET", "/api/v1/acl");
  ASSERT_EQ(rest.status, 200) << rest.body;
  ASSERT_TRUE(items_contain(rest.json, "id", rule)) << rest.body;
  for (const auto& item : rest.json.at("items").as_array()) {
    if (json_string(item, "id") != rule) continue;
    EXPECT_EQ(json_string(item, "source"), alice.agent_id().str());
    EXPECT_EQ(json_string(item, "target"), bob.agent_id().str());
    EXPECT_EQ(item.at("allowed_capabilities"), boost::json::parse(R"(["echo","chat"])")) << rest.body;
    EXPECT_EQ(json_string(item, "group_id"), group_);
  }

  auto listed = ctl(home, {"acl", "list"});
  ASSERT_TRUE(IsOk(listed));
  const auto lines = listed.out_lines();
  ASSERT_GE(lines.size(), 2u) << listed.describe();
  EXPECT_TRUE(std::regex_match(lines[0], std::regex("ID +SOURCE +TARGET +CAPABILITIES *"))) << listed.describe();
  EXPECT_TRUE(contains(listed.out, rule)) << listed.describe();
  EXPECT_TRUE(contains(listed.out, alice.agent_id().str())) << listed.describe();

  auto listed_json = ctl(home, {"acl", "list", "--json"});
  ASSERT_TRUE(IsOk(listed_json));
  EXPECT_TRUE(items_contain(parse_json(listed_json.out).value_or(nullptr), "id", rule)) << listed_json.describe();

  auto removed = ctl(home, {"acl", "remove", rule});
  ASSERT_TRUE(IsOk(removed));
  EXPECT_FALSE(items_contain(server_->as(token_, "GET", "/api/v1/acl").json, "id", rule));
  // Removing it again: not found.
  auto again = ctl(home, {"acl", "remove", rule});
  EXPECT_TRUE(IsCliError(again, 1));
}

TEST_F(CtlTest, AclAddWildcardsAndJson) {
  auto home = logged_in_home("a");
  auto bob = register_over_rest("bob", {"echo"});
  auto added = ctl(home, {"acl", "add", "--json", "--source", "*", "--target", bob.agent_id().str(), "--capabilities", "*"});
  ASSERT_TRUE(IsOk(added));
  auto json = parse_json(added.out);
  ASSERT_TRUE(json && json->is_object()) << added.describe();
  EXPECT_TRUE(is_resource_id(json_string(*json, "id"))) << added.describe();
  EXPECT_EQ(json_string(*json, "source"), "*") << added.describe();
  EXPECT_EQ(json_string(*json, "target"), bob.agent_id().str()) << added.describe();
  EXPECT_EQ(json->at("allowed_capabilities"), boost::json::parse(R"(["*"])")) << added.describe();
}

TEST_F(CtlTest, AclErrors) {
  auto home = logged_in_home("a");
  // A target nobody registered.
  auto unknown = ctl(home, {"acl", "add", "--source", "*", "--target", random_agent_id(), "--capabilities", "echo"});
  EXPECT_TRUE(IsCliError(unknown, 1));
  // A rule id that does not exist.
  EXPECT_TRUE(IsCliError(ctl(home, {"acl", "remove", "00000000-0000-4000-8000-000000000000"}), 1));
}

// ---------------------------------------------------------------------------------------------
// group

TEST_F(CtlTest, GroupCreateAndList) {
  auto home = logged_in_home("a");
  auto created = ctl(home, {"group", "create", "team-blue"});
  ASSERT_TRUE(IsOk(created));
  const auto id = created.out_trimmed();
  ASSERT_TRUE(is_uuid(id)) << created.describe();
  auto created_json = ctl(home, {"group", "create", "team-red", "--json"});
  ASSERT_TRUE(IsOk(created_json));
  auto group_json = parse_json(created_json.out).value_or(nullptr);
  EXPECT_TRUE(is_uuid(json_string(group_json, "id"))) << created_json.describe();
  EXPECT_EQ(json_string(group_json, "name"), "team-red") << created_json.describe();
  auto listed = ctl(home, {"group", "list"});
  ASSERT_TRUE(IsOk(listed));
  EXPECT_TRUE(contains(listed.out, id)) << listed.describe();
  EXPECT_TRUE(contains(listed.out, "team-blue")) << listed.describe();
  EXPECT_TRUE(contains(listed.out, group_)) << "the personal group is listed too" << listed.describe();
  auto listed_json = ctl(home, {"group", "list", "--json"});
  ASSERT_TRUE(IsOk(listed_json));
  auto json = parse_json(listed_json.out).value_or(nullptr);
  EXPECT_TRUE(items_contain(json, "id", id)) << listed_json.describe();
  EXPECT_TRUE(items_contain(json, "name", "team-blue")) << listed_json.describe();
  // Over REST as well.
  EXPECT_TRUE(items_contain(server_->as(token_, "GET", "/api/v1/groups").json, "id", id));
}

TEST_F(CtlTest, GroupAddAndRemoveMember) {
  auto home = logged_in_home("a");
  const std::string carol_token = server_->login_user("carol", 4242);
  ASSERT_FALSE(carol_token.empty());
  auto me = server_->as(carol_token, "GET", "/api/v1/users/me");
  const std::string carol = json_string(me.json.at("user"), "id");
  ASSERT_FALSE(carol.empty()) << me.body;

  auto created = ctl(home, {"group", "create", "team"});
  ASSERT_TRUE(IsOk(created));
  const auto team = created.out_trimmed();
  auto carol_groups = [&] {
    std::map<std::string, std::string> roles;
    auto reply = server_->as(carol_token, "GET", "/api/v1/users/me");
    for (const auto& g : reply.json.at("groups").as_array()) roles[json_string(g, "id")] = json_string(g, "role");
    return roles;
  };
  EXPECT_FALSE(carol_groups().contains(team));
  auto added = ctl(home, {"group", "add-member", team, "--user", carol, "--role", "admin"});
  ASSERT_TRUE(IsOk(added));
  EXPECT_EQ(carol_groups()[team], "admin");
  auto removed = ctl(home, {"group", "remove-member", team, "--user", carol});
  ASSERT_TRUE(IsOk(removed));
  EXPECT_FALSE(carol_groups().contains(team));
  // A bad role, an unknown user, a group that is not ours.
  auto bad_role = ctl(home, {"group", "add-member", team, "--user", carol, "--role", "emperor"});
  EXPECT_TRUE(IsCliError(bad_role, 1) || IsCliError(bad_role, 2)) << bad_role.describe();
  EXPECT_FALSE(carol_groups().contains(team));
  EXPECT_TRUE(IsCliError(ctl(home, {"group", "add-member", team, "--user", "00000000-0000-4000-8000-000000000000",
                                    "--role", "member"}),
                         1));
  EXPECT_TRUE(IsCliError(ctl(home, {"group", "add-member", "00000000-0000-4000-8000-000000000000", "--user", carol,
                                    "--role", "member"}),
                         1));
}

// ---------------------------------------------------------------------------------------------
// setup-key

TEST_F(CtlTest, SetupKeyCreateListRevoke) {
  auto home = logged_in_home("a");
  auto created = ctl(home, {"setup-key", "create", "--group", group_, "--json"});
  ASSERT_TRUE(IsOk(created));
  auto json = parse_json(created.out);
  ASSERT_TRUE(json && json->is_object()) << created.describe();
  const auto id = json_string(*json, "id");
  const auto key = json_string(*json, "key");
  ASSERT_TRUE(is_resource_id(id)) << created.describe();
  ASSERT_FALSE(key.empty()) << created.describe();

  auto listed = ctl(home, {"setup-key", "list"});
  ASSERT_TRUE(IsOk(listed));
  EXPECT_TRUE(contains(listed.out, id)) << listed.describe();
  EXPECT_FALSE(contains(listed.out, key)) << "the key is shown once" << listed.describe();
  auto listed_json = ctl(home, {"setup-key", "list", "--json"});
  ASSERT_TRUE(IsOk(listed_json));
  EXPECT_TRUE(items_contain(parse_json(listed_json.out).value_or(nullptr), "id", id)) << listed_json.describe();

  ASSERT_TRUE(IsOk(ctl(home, {"setup-key", "revoke", id})));
  auto robot = new_home("robot");
  auto refused = ctl(robot, {"register", "--name", "ci", "--capabilities", "build", "--setup-key", key, "--group", group_},
                     {{"MESH_CP_URL", server_->base_url()}});
  EXPECT_TRUE(IsCliError(refused, 1));
  EXPECT_TRUE(IsCliError(ctl(home, {"setup-key", "revoke", "00000000-0000-4000-8000-000000000000"}), 1));
}

TEST_F(CtlTest, SetupKeyMaxUsesAndExpiry) {
  auto home = logged_in_home("a");
  const auto before = wall_ms();
  auto created = ctl(home, {"setup-key", "create", "--group", group_, "--max-uses", "1", "--expires-in", "24h", "--json"});
  ASSERT_TRUE(IsOk(created));
  auto json = parse_json(created.out).value_or(nullptr);
  const auto id = json_string(json, "id");
  const auto key = json_string(json, "key");
  auto rest = server_->as(token_, "GET", "/api/v1/setup-keys");
  const boost::json::value* stored = nullptr;
  for (const auto& item : rest.json.at("items").as_array()) {
    if (json_string(item, "id") == id) stored = &item;
  }
  ASSERT_NE(stored, nullptr) << rest.body;
  EXPECT_EQ(stored->as_object().if_contains("max_uses") ? stored->at("max_uses").to_number<std::int64_t>() : -1, 1)
      << rest.body;
  auto expires = registry::parse_rfc3339(json_string(*stored, "expires_at"));
  ASSERT_TRUE(expires.ok()) << rest.body;
  EXPECT_NEAR(static_cast<double>(expires.value() - before), 24.0 * 3600 * 1000, 120.0 * 1000) << rest.body;

  auto first = new_home("r1");
  EXPECT_TRUE(IsOk(ctl(first, {"register", "--name", "ci1", "--capabilities", "build", "--setup-key", key, "--group", group_},
                       {{"MESH_CP_URL", server_->base_url()}})));
  auto second = new_home("r2");
  EXPECT_TRUE(IsCliError(ctl(second, {"register", "--name", "ci2", "--capabilities", "build", "--setup-key", key, "--group", group_},
                             {{"MESH_CP_URL", server_->base_url()}}),
                         1));
}

TEST_F(CtlTest, SetupKeyZeroMaxUsesIsRefusedReadably) {
  auto home = logged_in_home("a");
  auto r = ctl(home, {"setup-key", "create", "--group", group_, "--max-uses", "0"});
  EXPECT_TRUE(IsCliError(r, 2) || IsCliError(r, 1)) << r.describe();
  EXPECT_TRUE(contains(r.err, "--max-uses")) << r.describe();
  EXPECT_FALSE(contains(r.err, "179769313486")) << "a readable bound, not DBL_MAX" << r.describe();
  EXPECT_LT(r.err.size(), 400u) << r.describe();
}

TEST_F(CtlTest, SetupKeyBadExpiryIsRefused) {
  auto home = logged_in_home("a");
  auto r = ctl(home, {"setup-key", "create", "--group", group_, "--expires-in", "soon"});
  EXPECT_TRUE(r.exit == 1 || r.exit == 2) << r.describe();
  EXPECT_TRUE(r.out.empty()) << r.describe();
  EXPECT_EQ(server_->as(token_, "GET", "/api/v1/setup-keys").json.at("items").as_array().size(), 0u);
}

// ---------------------------------------------------------------------------------------------
// revoke, rotate

bool revoked(const MeshServer& server, const std::string& token, const std::string& agent_id) {
  auto list = server.as(token, "GET", "/api/v1/revocations");
  return items_contain(list.json, "agent_id", agent_id);
}

TEST_F(CtlTest, RevokeByAdmin) {
  auto home = logged_in_home("a");
  auto bob = register_over_rest("bob", {"echo"});
  auto r = ctl(home, {"revoke", "--agent-id", bob.agent_id().str(), "--reason", "laptop lost"});
  ASSERT_TRUE(IsOk(r));
  auto list = server_->as(token_, "GET", "/api/v1/revocations");
  bool found = false;
  for (const auto& item : list.json.at("items").as_array()) {
    if (json_string(item, "agent_id") != bob.agent_id().str()) continue;
    found = true;
    EXPECT_EQ(json_string(item, "reason"), "laptop lost") << list.body;
  }
  EXPECT_TRUE(found) << list.body;
  EXPECT_TRUE(IsCliError(ctl(home, {"revoke", "--agent-id", random_agent_id()}), 1));
}

TEST_F(CtlTest, RevokeOwnKeySelfSigned) {
  auto home = logged_in_home("a");
  const auto id = register_agent(home, "bob", "echo");
  auto r = ctl(home, {"revoke", "--reason", "retired"});
  ASSERT_TRUE(IsOk(r));
  auto list = server_->as(token_, "GET", "/api/v1/revocations");
  bool found = false;
  for (const auto& item : list.json.at("items").as_array()) {
    if (json_string(item, "agent_id") != id) continue;
    found = true;
    EXPECT_EQ(json_string(item, "kind"), "self") << list.body;
  }
  EXPECT_TRUE(found) << list.body;
}

TEST_F(CtlTest, RevokeWithoutAKeyFails) {
  auto home = logged_in_home("a");
  EXPECT_TRUE(IsCliError(ctl(home, {"revoke"}), 1));
}

TEST_F(CtlTest, RotateAndComplete) {
  auto home = logged_in_home("a");
  const auto old_id = register_agent(home, "bob", "echo,chat", {"--description", "rotating"});
  const std::string old_seed = read_text(home.key_path(old_id)).substr(0, 43);
  auto r = ctl(home, {"rotate"});
  ASSERT_TRUE(IsOk(r));
  const auto new_id = home.config_value("agent_id");
  ASSERT_TRUE(is_agent_id(new_id)) << home.read_config();
  EXPECT_NE(new_id, old_id);
  EXPECT_TRUE(contains(r.out + r.err, new_id)) << "rotate should say the new ID" << r.describe();
  // The new key is saved (key file 0600 or secret_key) and the old kept as previous_*.
  const auto key_file = home.config_value("key_file");
  if (!key_file.empty()) {
    auto key = KeyPair::from_key_file_text(read_text(key_file));
    ASSERT_TRUE(key.ok()) << key_file;
    EXPECT_EQ(key.value().agent_id().str(), new_id);
    EXPECT_EQ(file_mode(key_file), 0600u);
  }
  EXPECT_TRUE(home.config_has("previous_secret_key") || home.config_has("previous_key_file")) << home.read_config();
  EXPECT_EQ(file_mode(home.config()), 0600u);
  // The card moved to the new ID with its contents.
  auto card = server_->as(token_, "GET", "/api/v1/agents/" + new_id);
  ASSERT_EQ(card.status, 200) << card.body;
  EXPECT_EQ(json_string(card.json, "name"), "bob");
  EXPECT_EQ(json_string(card.json, "description"), "rotating");
  EXPECT_EQ(capability_names(card.json), (std::vector<std::string>{"echo", "chat"})) << card.body;
  EXPECT_NE(server_->as(token_, "GET", "/api/v1/agents/" + old_id).status, 200);

  auto done = ctl(home, {"rotate", "complete"});
  ASSERT_TRUE(IsOk(done));
  EXPECT_FALSE(home.config_has("previous_secret_key")) << home.read_config();
  EXPECT_FALSE(home.config_has("previous_key_file")) << home.read_config();
  EXPECT_EQ(home.config_value("agent_id"), new_id);
  EXPECT_TRUE(revoked(*server_, token_, old_id)) << "the old ID is revoked once the grace period ends";
  (void)old_seed;
}

TEST_F(CtlTest, RotateWithoutAKeyFails) {
  auto home = logged_in_home("a");
  EXPECT_TRUE(IsCliError(ctl(home, {"rotate"}), 1));
  EXPECT_TRUE(IsCliError(ctl(home, {"rotate", "complete"}), 1));
}

}  // namespace
}  // namespace agent_mesh::test::ctl
