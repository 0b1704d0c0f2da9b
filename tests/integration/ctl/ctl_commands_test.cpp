// agent-meshctl's general behaviour (cli-mcp-web.md "meshctl"): --version, --help with examples,
// usage errors (exit 2), keygen, login --token-stdin, config.toml (modes, unknown keys, precedence
// flags > environment > file), the error paths every command shares (no config, a bad token, the
// registry down), auth-header, completion and status.
#include "ctl_fixture.hpp"

namespace agent_mesh::test::ctl {
namespace {

// ---------------------------------------------------------------------------------------------
// Version, help, usage errors (no server needed, but the fixture starts one: cheap enough)

TEST_F(CtlTest, VersionPrintsTheProgramAndAVersion) {
  auto home = new_home("a");
  auto r = ctl(home, {"--version"});
  ASSERT_TRUE(IsOk(r));
  EXPECT_TRUE(contains(r.out, "agent-meshctl")) << r.describe();
  EXPECT_TRUE(std::regex_search(r.out, std::regex("[0-9]+\\.[0-9]+"))) << r.describe();
}

TEST_F(CtlTest, HelpShowsCommandsAndAnExample) {
  auto home = new_home("a");
  auto r = ctl(home, {"--help"});
  ASSERT_TRUE(IsOk(r));
  EXPECT_TRUE(contains(r.out, "Example")) << r.describe();
  for (const char* command : {"keygen", "login", "register", "deregister", "discover", "request", "status", "revoke",
                              "rotate", "acl", "group", "setup-key", "auth-header", "completion"}) {
    EXPECT_TRUE(contains(r.out, command)) << command << r.describe();
  }
}

TEST_F(CtlTest, EveryCommandsHelpHasAnExample) {
  auto home = new_home("a");
  const std::vector<std::vector<std::string>> commands{
      {"keygen"},      {"login"},           {"register"},        {"deregister"},   {"discover"},
      {"request"},     {"status"},          {"revoke"},          {"rotate"},       {"acl", "add"},
      {"acl", "list"}, {"acl", "remove"},   {"group", "create"}, {"group", "add-member"},
      {"setup-key", "create"},              {"auth-header"},     {"completion"}};
  for (auto args : commands) {
    args.push_back("--help");
    auto r = ctl(home, args);
    EXPECT_TRUE(IsOk(r)) << args[0];
    EXPECT_TRUE(contains(r.out, "Example")) << r.describe();
  }
}

TEST_F(CtlTest, UnknownFlagIsAUsageError) {
  auto home = logged_in_home("a");
  EXPECT_TRUE(IsCliError(ctl(home, {"discover", "--no-such-flag"}), 2));
  EXPECT_TRUE(IsCliError(ctl(home, {"--no-such-flag", "discover"}), 2));
}

TEST_F(CtlTest, UnknownSubcommandIsAUsageError) {
  auto home = logged_in_home("a");
  EXPECT_TRUE(IsCliError(ctl(home, {"frobnicate"}), 2));
  EXPECT_TRUE(IsCliError(ctl(home, {"acl", "frobnicate"}), 2));
  EXPECT_TRUE(IsCliError(ctl(home, {"group", "frobnicate"}), 2));
}

TEST_F(CtlTest, NoSubcommandIsAUsageError) {
  auto home = logged_in_home("a");
  auto r = ctl(home, {});
  EXPECT_EQ(r.exit, 2) << r.describe();
  EXPECT_TRUE(r.out.empty()) << r.describe();
}

TEST_F(CtlTest, MissingRequiredFlagsAreUsageErrors) {
  auto home = logged_in_home("a");
  const std::string target = random_agent_id();
  EXPECT_TRUE(IsCliError(ctl(home, {"request", "--target", target, "--capability", "echo"}), 2));  // no --payload
  EXPECT_TRUE(IsCliError(ctl(home, {"request", "--capability", "echo", "--payload", "{}"}), 2));   // no --target
  EXPECT_TRUE(IsCliError(ctl(home, {"register", "--capabilities", "echo"}), 2));                   // no --name
  EXPECT_TRUE(IsCliError(ctl(home, {"register", "--name", "x"}), 2));                              // no --capabilities
  EXPECT_TRUE(IsCliError(ctl(home, {"acl", "add", "--source", "*", "--capabilities", "*"}), 2));   // no --target
  EXPECT_TRUE(IsCliError(ctl(home, {"acl", "remove"}), 2));                                        // no RULE_ID
  EXPECT_TRUE(IsCliError(ctl(home, {"group", "create"}), 2));                                      // no NAME
  EXPECT_TRUE(IsCliError(ctl(home, {"group", "add-member", group_, "--role", "member"}), 2));     // no --user
  EXPECT_TRUE(IsCliError(ctl(home, {"setup-key", "create"}), 2));                                  // no --group
  EXPECT_TRUE(IsCliError(ctl(home, {"setup-key", "revoke"}), 2));                                  // no ID
  EXPECT_TRUE(IsCliError(ctl(home, {"completion"}), 2));                                           // no shell
  EXPECT_TRUE(IsCliError(ctl(home, {"request", "--target", target, "--capability", "echo", "--payload", "{}",
                                    "--timeout", "soon"}),
                         2));  // not a number
}

TEST_F(CtlTest, UsageErrorsDoNotTouchTheConfig) {
  auto home = new_home("a");
  auto r = ctl(home, {"keygen", "--save", "--no-such-flag"});
  EXPECT_TRUE(IsCliError(r, 2));
  EXPECT_FALSE(std::filesystem::exists(home.config())) << home.read_config();
}

// ---------------------------------------------------------------------------------------------
// keygen

TEST_F(CtlTest, KeygenPrintsAMatchingKeyPairAndWritesNothing) {
  auto home = new_home("a");
  auto r = ctl(home, {"keygen"});
  ASSERT_TRUE(IsOk(r));
  std::smatch m;
  ASSERT_TRUE(std::regex_match(r.out, m, std::regex("Agent ID: ([A-Za-z0-9_-]{43})\nSecret Key: ([A-Za-z0-9_-]{43})\n")))
      << r.describe();
  auto key = KeyPair::from_key_file_text(m[2].str());
  ASSERT_TRUE(key.ok()) << r.describe();
  EXPECT_EQ(key.value().agent_id().str(), m[1].str()) << "the ID is not the secret key's";
  EXPECT_FALSE(std::filesystem::exists(home.config())) << "keygen without --save wrote the config";
  EXPECT_TRUE(home.all_files_text().find(m[2].str()) == std::string::npos);
  // A new pair each time.
  auto again = ctl(home, {"keygen"});
  ASSERT_TRUE(IsOk(again));
  EXPECT_NE(again.out, r.out);
}

TEST_F(CtlTest, KeygenJson) {
  auto home = new_home("a");
  for (const auto& args : {std::vector<std::string>{"keygen", "--json"}, std::vector<std::string>{"--json", "keygen"}}) {
    auto r = ctl(home, args);
    ASSERT_TRUE(IsOk(r));
    auto json = parse_json(r.out);
    ASSERT_TRUE(json && json->is_object()) << r.describe();
    const auto id = json_string(*json, "agent_id");
    const auto secret = json_string(*json, "secret_key");
    ASSERT_TRUE(is_agent_id(id)) << r.describe();
    auto key = KeyPair::from_key_file_text(secret);
    ASSERT_TRUE(key.ok()) << r.describe();
    EXPECT_EQ(key.value().agent_id().str(), id);
  }
}

TEST_F(CtlTest, KeygenSaveWritesTheKeyFileAndConfigWithPrivateModes) {
  auto home = new_home("a");
  auto r = ctl(home, {"keygen", "--save"});
  ASSERT_TRUE(IsOk(r));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("Agent ID: ([A-Za-z0-9_-]{43})"))) << r.describe();
  const std::string id = m[1];
  const auto key_file = home.key_path(id);
  ASSERT_TRUE(std::filesystem::exists(key_file)) << key_file;
  const std::string text = read_text(key_file);
  EXPECT_TRUE(std::regex_match(text, std::regex("[A-Za-z0-9_-]{43}\n"))) << "key file: [" << text << "]";
  auto key = KeyPair::from_key_file_text(text);
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(key.value().agent_id().str(), id);
  EXPECT_EQ(file_mode(key_file), 0600u) << std::oct << file_mode(key_file);
  EXPECT_EQ(file_mode(home.path), 0700u) << std::oct << file_mode(home.path);
  EXPECT_EQ(file_mode(home.config()), 0600u) << std::oct << file_mode(home.config());
  EXPECT_EQ(home.config_value("agent_id"), id) << home.read_config();
  EXPECT_EQ(std::filesystem::path(home.config_value("key_file")), key_file) << home.read_config();
  // No temporary files left behind by the atomic rewrite.
  for (const auto& entry : std::filesystem::directory_iterator(home.path)) {
    const auto name = entry.path().filename().string();
    EXPECT_TRUE(name == "config.toml" || name == "keys") << "unexpected file in MESH_HOME: " << name;
  }
}

TEST_F(CtlTest, KeygenSaveKeepsOtherConfigKeys) {
  auto home = logged_in_home("a");
  ASSERT_TRUE(IsOk(ctl(home, {"keygen", "--save"})));
  EXPECT_EQ(home.config_value("token"), token_) << home.read_config();
  EXPECT_EQ(home.config_value("cp_url"), server_->base_url()) << home.read_config();
  EXPECT_EQ(file_mode(home.config()), 0600u);
}

// ---------------------------------------------------------------------------------------------
// login --token-stdin

TEST_F(CtlTest, LoginWithTokenStdinSavesTokenAndCpUrl) {
  auto home = new_home("a");
  // The bootstrap-token file ends with a newline, as `< bootstrap-token` feeds it.
  auto r = ctl(home, {"login", "--token-stdin", "--cp-url", server_->base_url()}, {}, token_ + "\n");
  ASSERT_TRUE(IsOk(r));
  EXPECT_EQ(r.out_trimmed(), "Logged in as admin") << r.describe();
  EXPECT_EQ(home.config_value("token"), token_) << home.read_config();
  EXPECT_EQ(home.config_value("cp_url"), server_->base_url()) << home.read_config();
  EXPECT_EQ(file_mode(home.path), 0700u) << std::oct << file_mode(home.path);
  EXPECT_EQ(file_mode(home.config()), 0600u) << std::oct << file_mode(home.config());
  // Nothing else is needed afterwards: the saved cp_url and token are used.
  auto listed = ctl(home, {"discover", "--json"});
  EXPECT_TRUE(IsOk(listed));
}

TEST_F(CtlTest, LoginWithTokenStdinFromEnvCpUrl) {
  auto home = new_home("a");
  // CRLF and surrounding blanks, as a token pasted from elsewhere may carry.
  auto r = ctl(home, {"login", "--token-stdin"}, {{"MESH_CP_URL", server_->base_url()}}, "  " + token_ + "\r\n");
  ASSERT_TRUE(IsOk(r));
  EXPECT_EQ(r.out_trimmed(), "Logged in as admin") << r.describe();
  EXPECT_EQ(home.config_value("token"), token_) << home.read_config();
  // Only a --cp-url flag is saved, not the environment's.
  EXPECT_FALSE(home.config_has("cp_url")) << home.read_config();
}

TEST_F(CtlTest, LoginJsonPrintsUsersMe) {
  auto home = new_home("a");
  auto r = ctl(home, {"--json", "login", "--token-stdin", "--cp-url", server_->base_url()}, {}, token_ + "\n");
  ASSERT_TRUE(IsOk(r));
  auto json = parse_json(r.out);
  ASSERT_TRUE(json && json->is_object()) << r.describe();
  ASSERT_TRUE(json->as_object().contains("user")) << r.describe();
  EXPECT_EQ(json_string(json->at("user"), "login"), "admin") << r.describe();
  ASSERT_TRUE(json->as_object().contains("groups")) << r.describe();
  EXPECT_TRUE(json->at("groups").is_array()) << r.describe();
}

TEST_F(CtlTest, LoginWithARefusedTokenSavesNothing) {
  auto home = new_home("a");
  auto r = ctl(home, {"login", "--token-stdin", "--cp-url", server_->base_url()}, {},
               "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n");
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(lower(r.err), "token")) << r.describe();
  EXPECT_FALSE(home.config_has("token")) << home.read_config();
  EXPECT_FALSE(home.config_has("cp_url")) << home.read_config();
}

TEST_F(CtlTest, LoginRefusedTokenKeepsThePreviousOne) {
  auto home = logged_in_home("a");
  auto r = ctl(home, {"login", "--token-stdin"}, {}, "not-a-valid-token\n");
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_EQ(home.config_value("token"), token_) << home.read_config();
}

TEST_F(CtlTest, LoginWithEmptyStdinFails) {
  auto home = new_home("a");
  auto r = ctl(home, {"login", "--token-stdin", "--cp-url", server_->base_url()}, {}, "");
  EXPECT_NE(r.exit, 0) << r.describe();
  EXPECT_TRUE(r.out.empty()) << r.describe();
  EXPECT_TRUE(r.err.rfind("error: ", 0) == 0) << r.describe();
  EXPECT_FALSE(home.config_has("token")) << home.read_config();
}

TEST_F(CtlTest, LoginWithRegistryDownSaysUnreachable) {
  auto home = new_home("a");
  ClosedPort closed;
  auto r = ctl(home, {"login", "--token-stdin", "--cp-url", closed.url()}, {}, token_ + "\n");
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "unreachable")) << r.describe();
  EXPECT_FALSE(home.config_has("token")) << home.read_config();
}

// ---------------------------------------------------------------------------------------------
// config.toml

TEST_F(CtlTest, UnknownConfigKeyIsAnErrorNamingTheKey) {
  auto home = new_home("a");
  home.write_config(toml_line("cp_url", server_->base_url()) + toml_line("token", token_) +
                    toml_line("colour_scheme", "dark"));
  auto r = ctl(home, {"discover"});
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "colour_scheme")) << r.describe();
}

TEST_F(CtlTest, MalformedConfigIsAnError) {
  auto home = new_home("a");
  home.write_config("cp_url = \"" + server_->base_url() + "\nthis is not toml\n");
  auto r = ctl(home, {"discover"});
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "config.toml")) << r.describe();
}

TEST_F(CtlTest, EveryDocumentedConfigKeyIsAccepted) {
  auto home = new_home("a");
  auto key = KeyPair::generate();
  auto previous = KeyPair::generate();
  ASSERT_TRUE(key.save(home.path / "k.key").ok());
  home.write_config(toml_line("cp_url", server_->base_url()) + toml_line("relay_url", server_->relay_id()) +
                    toml_line("token", token_) + toml_line("key_file", (home.path / "k.key").string()) +
                    toml_line("agent_id", key.agent_id().str()) +
                    toml_line("meshd_socket", (home.path / "none.sock").string()) +
                    toml_line("previous_secret_key", previous.key_file_text().substr(0, 43)));
  auto r = ctl(home, {"discover"});
  EXPECT_TRUE(IsOk(r));
  auto other = new_home("b");
  other.write_config(toml_line("cp_url", server_->base_url()) + toml_line("token", token_) +
                     toml_line("secret_key", key.key_file_text().substr(0, 43)) +
                     toml_line("previous_key_file", (home.path / "k.key").string()));
  EXPECT_TRUE(IsOk(ctl(other, {"discover"})));
}

TEST_F(CtlTest, PrecedenceEnvBeatsFileForCpUrl) {
  ClosedPort closed;
  auto home = new_home("a");
  home.write_config(toml_line("cp_url", closed.url()) + toml_line("token", token_));
  EXPECT_TRUE(IsOk(ctl(home, {"discover"}, {{"MESH_CP_URL", server_->base_url()}})));
  // And the other way round: a dead env URL beats a live file URL.
  auto live = new_home("b");
  live.write_config(toml_line("cp_url", server_->base_url()) + toml_line("token", token_));
  auto r = ctl(live, {"discover"}, {{"MESH_CP_URL", closed.url()}});
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "unreachable")) << r.describe();
}

TEST_F(CtlTest, PrecedenceFlagBeatsEnvForCpUrl) {
  ClosedPort closed;
  auto home = new_home("a");
  home.write_config(toml_line("token", token_));
  EXPECT_TRUE(IsOk(ctl(home, {"discover", "--cp-url", server_->base_url()}, {{"MESH_CP_URL", closed.url()}})));
  auto r = ctl(home, {"discover", "--cp-url", closed.url()}, {{"MESH_CP_URL", server_->base_url()}});
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "unreachable")) << r.describe();
  // The global flag also works before the subcommand.
  EXPECT_TRUE(IsOk(ctl(home, {"--cp-url", server_->base_url(), "discover"}, {{"MESH_CP_URL", closed.url()}})));
}

TEST_F(CtlTest, PrecedenceForTheToken) {
  auto home = new_home("a");
  home.write_config(toml_line("cp_url", server_->base_url()) + toml_line("token", "file-token-is-wrong"));
  // env beats file
  EXPECT_TRUE(IsOk(ctl(home, {"discover"}, {{"MESH_TOKEN", token_}})));
  // flag beats env
  auto r = ctl(home, {"discover", "--token", "flag-token-is-wrong"}, {{"MESH_TOKEN", token_}});
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(IsOk(ctl(home, {"discover", "--token", token_}, {{"MESH_TOKEN", "env-token-is-wrong"}})));
  // The flag and environment are never written to the file.
  EXPECT_EQ(home.config_value("token"), "file-token-is-wrong");
}

TEST_F(CtlTest, DefaultMeshHomeIsDotMeshInHome) {
  auto home = new_home("a");
  MeshHome dot_mesh{home.user_home / ".mesh", home.user_home};
  dot_mesh.write_config(toml_line("cp_url", server_->base_url()) + toml_line("token", token_));
  // MESH_HOME unset: ~/.mesh is used.
  auto r = ctl(home, {"discover"}, {{"MESH_HOME", ""}});
  EXPECT_TRUE(IsOk(r));
  auto saved = ctl(home, {"keygen", "--save"}, {{"MESH_HOME", ""}});
  ASSERT_TRUE(IsOk(saved));
  EXPECT_TRUE(dot_mesh.config_has("agent_id")) << dot_mesh.read_config();
  EXPECT_FALSE(std::filesystem::exists(home.path));
}

TEST_F(CtlTest, DefaultCpUrlIsLocalhost8080) {
  // No cp_url anywhere: the default http://127.0.0.1:8080 is used. Nothing listens there in tests
  // (or if something does, it is not this server), so the call must fail naming that URL.
  {
    CtlProcess probe("/bin/bash", {"-c", "exec 3<>/dev/tcp/127.0.0.1/8080"}, {}, std::nullopt);
    if (probe.finish(5s).exit == 0) GTEST_SKIP() << "something listens on 127.0.0.1:8080 here";
  }
  auto home = new_home("a");
  home.write_config(toml_line("token", token_));
  auto r = ctl(home, {"discover"});
  EXPECT_EQ(r.exit, 1) << r.describe();
  EXPECT_TRUE(contains(r.err, "127.0.0.1:8080")) << r.describe();
}

TEST_F(CtlTest, RewritingTheConfigMakesItPrivateAgain) {
  // A config.toml someone made world-readable.
  auto home = logged_in_home("a");
  ::chmod(home.config().c_str(), 0644);
  ::chmod(home.path.c_str(), 0755);
  // Either the CLI refuses a config readable by others (as ssh does with keys), saying how to fix it,
  // or it rewrites it private; never does it leave a token in a 0644 file it wrote itself.
  auto r = ctl(home, {"keygen", "--save"});
  if (r.exit != 0) {
    EXPECT_TRUE(IsCliError(r, 1));
    EXPECT_TRUE(contains(r.err, "chmod 600")) << r.describe();
    EXPECT_EQ(file_mode(home.config()), 0644u) << "refused, so untouched";
    return;
  }
  EXPECT_EQ(file_mode(home.config()), 0600u) << std::oct << file_mode(home.config());
  EXPECT_EQ(file_mode(home.path), 0700u) << std::oct << file_mode(home.path);
  EXPECT_EQ(home.config_value("token"), token_) << home.read_config();
}

TEST_F(CtlTest, GlobalFlagsAfterNestedSubcommands) {
  ClosedPort closed;
  auto home = new_home("a");
  EXPECT_TRUE(IsOk(ctl(home, {"acl", "list", "--cp-url", server_->base_url(), "--token", token_, "--json"},
                       {{"MESH_CP_URL", closed.url()}})));
  auto r = ctl(home, {"group", "list", "--json", "--token", token_, "--cp-url", server_->base_url()});
  ASSERT_TRUE(IsOk(r));
  EXPECT_TRUE(parse_json(r.out).has_value()) << r.describe();
}

// ---------------------------------------------------------------------------------------------
// Shared error paths

TEST_F(CtlTest, NoConfigAtAllSaysToLogIn) {
  auto home = new_home("a");
  for (const auto& args : {std::vector<std::string>{"discover"}, std::vector<std::string>{"acl", "list"},
                           std::vector<std::string>{"group", "list"}, std::vector<std::string>{"setup-key", "list"}}) {
    auto r = ctl(home, args, {{"MESH_CP_URL", server_->base_url()}});
    EXPECT_TRUE(IsCliError(r, 1)) << args[0];
    EXPECT_TRUE(contains(r.err, "agent-meshctl login")) << r.describe();
  }
  // Even without MESH_CP_URL (the default URL is dead): the missing credential is what to fix first.
  auto r = ctl(home, {"discover"});
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "agent-meshctl login")) << r.describe();
  EXPECT_FALSE(std::filesystem::exists(home.config())) << "a failed command wrote the config";
}

TEST_F(CtlTest, BadTokenMentionsTheTokenAndLogin) {
  auto home = new_home("a");
  home.write_config(toml_line("cp_url", server_->base_url()) + toml_line("token", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
  for (const auto& args : {std::vector<std::string>{"discover"}, std::vector<std::string>{"acl", "list"},
                           std::vector<std::string>{"group", "list"}, std::vector<std::string>{"discover", "--json"}}) {
    auto r = ctl(home, args);
    EXPECT_TRUE(IsCliError(r, 1)) << args[0];
    EXPECT_TRUE(contains(lower(r.err), "token")) << r.describe();
    EXPECT_TRUE(contains(r.err, "login")) << r.describe();
  }
}

TEST_F(CtlTest, RegistryDownSaysUnreachable) {
  ClosedPort closed;
  auto home = new_home("a");
  home.write_config(toml_line("cp_url", closed.url()) + toml_line("token", token_));
  for (const auto& args : {std::vector<std::string>{"discover"}, std::vector<std::string>{"acl", "list"},
                           std::vector<std::string>{"group", "list"},
                           std::vector<std::string>{"register", "--name", "x", "--capabilities", "echo"}}) {
    auto r = ctl(home, args, {}, std::nullopt, 20s);
    EXPECT_TRUE(IsCliError(r, 1)) << args[0];
    EXPECT_TRUE(contains(r.err, "unreachable")) << r.describe();
    EXPECT_TRUE(contains(r.err, closed.url()) || contains(r.err, "127.0.0.1:" + std::to_string(closed.port())))
        << "the error should name the URL it tried" << r.describe();
  }
}

TEST_F(CtlTest, MalformedCpUrlIsAnError) {
  auto home = new_home("a");
  auto r = ctl(home, {"discover", "--cp-url", "not a url", "--token", token_});
  EXPECT_NE(r.exit, 0) << r.describe();
  EXPECT_TRUE(r.out.empty()) << r.describe();
  EXPECT_TRUE(r.err.rfind("error: ", 0) == 0) << r.describe();
}

// ---------------------------------------------------------------------------------------------
// auth-header, completion

TEST_F(CtlTest, AuthHeaderPrintsTheBearerToken) {
  auto home = logged_in_home("a");
  auto r = ctl(home, {"auth-header"});
  ASSERT_TRUE(IsOk(r));
  auto json = parse_json(r.out);
  ASSERT_TRUE(json && json->is_object()) << r.describe();
  EXPECT_EQ(*json, boost::json::value(boost::json::object{{"Authorization", "Bearer " + token_}})) << r.describe();
  // From the environment too.
  auto env_home = new_home("b");
  auto from_env = ctl(env_home, {"auth-header"}, {{"MESH_TOKEN", token_}});
  ASSERT_TRUE(IsOk(from_env));
  EXPECT_EQ(parse_json(from_env.out).value_or(nullptr),
            boost::json::value(boost::json::object{{"Authorization", "Bearer " + token_}}));
}

TEST_F(CtlTest, AuthHeaderWithoutTokenSaysToLogIn) {
  auto home = new_home("a");
  auto r = ctl(home, {"auth-header"});
  EXPECT_TRUE(IsCliError(r, 1));
  EXPECT_TRUE(contains(r.err, "login")) << r.describe();
}

TEST_F(CtlTest, CompletionScripts) {
  auto home = new_home("a");
  auto bash = ctl(home, {"completion", "bash"});
  ASSERT_TRUE(IsOk(bash));
  EXPECT_TRUE(contains(bash.out, "complete")) << bash.describe();
  EXPECT_TRUE(contains(bash.out, "agent-meshctl")) << bash.describe();
  EXPECT_TRUE(contains(bash.out, "setup-key")) << bash.describe();
  auto zsh = ctl(home, {"completion", "zsh"});
  ASSERT_TRUE(IsOk(zsh));
  EXPECT_TRUE(contains(zsh.out, "#compdef agent-meshctl")) << zsh.describe();
  auto fish = ctl(home, {"completion", "fish"});
  ASSERT_TRUE(IsOk(fish));
  EXPECT_TRUE(contains(fish.out, "complete -c agent-meshctl")) << fish.describe();
  auto bad = ctl(home, {"completion", "tcsh"});
  EXPECT_TRUE(IsCliError(bad, 2));
}

TEST_F(CtlTest, CompletionScriptIsValidBash) {
  auto home = new_home("a");
  auto bash = ctl(home, {"completion", "bash"});
  ASSERT_TRUE(IsOk(bash));
  const auto script = root_ / "completion.bash";
  write_text(script, bash.out);
  CtlProcess check("/bin/bash", {"-n", script.string()}, base_env(home), std::nullopt);
  auto r = check.finish(10s);
  EXPECT_EQ(r.exit, 0) << r.describe();
}

// ---------------------------------------------------------------------------------------------
// status

TEST_F(CtlTest, StatusWithoutMeshdSaysSoAndExitsZero) {
  auto home = logged_in_home("a");
  ASSERT_TRUE(IsOk(ctl(home, {"keygen", "--save"})));
  auto r = ctl(home, {"status"});
  ASSERT_TRUE(IsOk(r));
  EXPECT_TRUE(contains(r.out, "meshd")) << r.describe();
  EXPECT_TRUE(contains(r.out, "relay")) << r.describe();
  EXPECT_TRUE(contains(r.out, "registry")) << r.describe();
  const auto text = lower(r.out);
  EXPECT_TRUE(contains(text, "not running") || contains(text, "down") || contains(text, "unreachable") ||
              contains(text, "not reachable"))
      << "status should say meshd is down" << r.describe();
}

TEST_F(CtlTest, StatusJsonHasTheThreeSections) {
  auto home = logged_in_home("a");
  ASSERT_TRUE(IsOk(ctl(home, {"keygen", "--save"})));
  auto r = ctl(home, {"status", "--json"});
  ASSERT_TRUE(IsOk(r));
  auto json = parse_json(r.out);
  ASSERT_TRUE(json && json->is_object()) << r.describe();
  const auto& object = json->as_object();
  ASSERT_TRUE(object.contains("meshd") && object.contains("relay") && object.contains("registry")) << r.describe();
  ASSERT_TRUE(object.at("meshd").is_object()) << r.describe();
  EXPECT_TRUE(object.at("meshd").as_object().contains("error")) << "meshd is not running" << r.describe();
  ASSERT_TRUE(object.at("registry").is_object()) << r.describe();
  EXPECT_FALSE(object.at("registry").as_object().contains("error")) << r.describe();
  ASSERT_TRUE(object.at("relay").is_object()) << r.describe();
  EXPECT_FALSE(object.at("relay").as_object().contains("error")) << r.describe();
}

TEST_F(CtlTest, StatusWithNoConfigAtAllStillReportsTheRegistry) {
  auto home = new_home("a");
  auto r = ctl(home, {"status", "--json"}, {{"MESH_CP_URL", server_->base_url()}});
  ASSERT_TRUE(IsOk(r));
  auto json = parse_json(r.out);
  ASSERT_TRUE(json && json->is_object()) << r.describe();
  EXPECT_TRUE(json->as_object().contains("registry")) << r.describe();
}

TEST_F(CtlTest, StatusWithRegistryDownExitsOne) {
  ClosedPort closed;
  auto home = new_home("a");
  home.write_config(toml_line("cp_url", closed.url()) + toml_line("token", token_));
  auto r = ctl(home, {"status"});
  EXPECT_EQ(r.exit, 1) << r.describe();
  EXPECT_TRUE(contains(r.err, "unreachable")) << r.describe();
  EXPECT_TRUE(contains(r.err, "hint: ")) << r.describe();
}

}  // namespace
}  // namespace agent_mesh::test::ctl
