// meshd's configuration (meshd-sdk.md "meshd"): flags, JSON and TOML config files (inline ACL
// included), flags over file, MESH_HOME defaults and the rejections, each naming its flag or key.
#include "meshd/meshd_config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "agent_mesh/acl.hpp"

namespace agent_mesh::meshd {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Sets an environment variable for one test and restores it afterwards.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::string secret_text(const KeyPair& pair) {
  std::string text = pair.key_file_text();
  if (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

class MeshdConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "meshd-config-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    mesh_home_.emplace("MESH_HOME", (dir_ / "home").c_str());
    key_path_ = (dir_ / "agent.key").string();
    ASSERT_TRUE(key_.save(key_path_).ok());
  }
  void TearDown() override {
    mesh_home_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string write_file(const std::string& name, const std::string& text) {
    const auto path = dir_ / name;
    std::ofstream(path) << text;
    return path.string();
  }

  static Result<LoadedMeshdConfig> load(std::vector<std::string> args) {
    args.insert(args.begin(), "agent-meshd");
    std::vector<const char*> argv;
    argv.reserve(args.size());
    for (const auto& arg : args) argv.push_back(arg.c_str());
    return load_meshd_config(static_cast<int>(argv.size()), argv.data());
  }

  // A minimal valid command line plus `extra`.
  std::vector<std::string> base(std::vector<std::string> extra = {}) const {
    std::vector<std::string> args{"--relay", "ws://127.0.0.1:8080/relay/ws", "--key-file", key_path_};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  static LoadedMeshdConfig load_ok(std::vector<std::string> args) {
    auto loaded = load(std::move(args));
    EXPECT_TRUE(loaded.ok()) << (loaded.ok() ? "" : loaded.error().describe());
    if (!loaded.ok()) return {};
    EXPECT_FALSE(loaded->exit_now);
    return std::move(loaded).value();
  }

  static std::string load_error(std::vector<std::string> args) {
    auto loaded = load(std::move(args));
    EXPECT_FALSE(loaded.ok());
    if (loaded.ok()) return "";
    return loaded.error().message;
  }

  std::string acl_json(const AgentId& target) const {
    return R"({"default_deny": true, "rules": [{"source": "*", "target": ")" + target.str() +
           R"(", "allowed_capabilities": ["echo"]}]})";
  }

  std::filesystem::path dir_;
  std::optional<ScopedEnv> mesh_home_;
  KeyPair key_ = KeyPair::generate();
  std::string key_path_;
  AgentId peer_a_ = KeyPair::generate().agent_id();
  AgentId peer_b_ = KeyPair::generate().agent_id();
};

TEST_F(MeshdConfigTest, EveryFlag) {
  const std::string acl_path = write_file("acl.json", acl_json(key_.agent_id()));
  const auto loaded = load_ok({"--relay", "ws://127.0.0.1:8080/relay/ws", "--relay", "wss://relay.example.com/relay/ws",
                               "--local-agent", "http://127.0.0.1:9002", "--key-file", key_path_, "--cp-url",
                               "http://127.0.0.1:8080/", "--acl", acl_path, "--socket", "/tmp/meshd-test.sock",
                               "--plaintext-peer", peer_a_.str(), "--plaintext-peer", peer_b_.str(), "--relay-id",
                               "wss://relay.example.com/relay/ws", "--log-level", "debug"});
  const MeshdConfig& config = loaded.config;
  EXPECT_EQ(config.relay_urls,
            (std::vector<std::string>{"ws://127.0.0.1:8080/relay/ws", "wss://relay.example.com/relay/ws"}));
  EXPECT_EQ(config.local_agent_url, "http://127.0.0.1:9002");
  EXPECT_EQ(config.key_file, key_path_);
  EXPECT_FALSE(config.secret_key);
  EXPECT_EQ(config.cp_url, "http://127.0.0.1:8080");  // the trailing '/' is dropped
  EXPECT_EQ(config.acl.kind, AclSetting::Kind::file);
  EXPECT_EQ(config.acl.file, acl_path);
  EXPECT_EQ(config.socket, "/tmp/meshd-test.sock");
  EXPECT_EQ(config.socket_path(key_.agent_id()), "/tmp/meshd-test.sock");
  EXPECT_EQ(config.plaintext_peers, (std::vector<AgentId>{peer_a_, peer_b_}));
  EXPECT_EQ(config.relay_id, "wss://relay.example.com/relay/ws");
  EXPECT_EQ(config.log_level, LogLevel::debug);
  EXPECT_TRUE(loaded.warnings.empty());
  auto pair = config.load_key();
  ASSERT_TRUE(pair.ok()) << pair.error().describe();
  EXPECT_EQ(pair->agent_id(), key_.agent_id());
}

TEST_F(MeshdConfigTest, Defaults) {
  const auto loaded = load_ok(base());
  const MeshdConfig& config = loaded.config;
  EXPECT_TRUE(config.local_agent_url.empty());
  EXPECT_TRUE(config.cp_url.empty());
  EXPECT_EQ(config.acl.kind, AclSetting::Kind::none);
  EXPECT_TRUE(config.plaintext_peers.empty());
  EXPECT_FALSE(config.relay_id);
  EXPECT_EQ(config.log_level, LogLevel::info);
  EXPECT_TRUE(config.config_file.empty());
}

TEST_F(MeshdConfigTest, HelpListsEveryFlagWithAnExample) {
  auto loaded = load({"--help"});
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(loaded->exit_now);
  for (const char* flag : {"--relay", "--local-agent", "--secret-key", "--key-file", "--cp-url", "--acl", "--socket",
                           "--plaintext-peer", "--relay-id", "--log-level", "--config", "--version"}) {
    EXPECT_THAT(loaded->exit_text, HasSubstr(flag));
  }
  EXPECT_THAT(loaded->exit_text, HasSubstr("Examples:"));
  EXPECT_THAT(loaded->exit_text, HasSubstr("agent-meshd --relay ws://"));

  auto version = load({"--version"});
  ASSERT_TRUE(version.ok());
  EXPECT_TRUE(version->exit_now);
  EXPECT_THAT(version->exit_text, HasSubstr("agent-meshd"));
}

TEST_F(MeshdConfigTest, UnknownFlagIsAnError) {
  EXPECT_THAT(load_error(base({"--no-such-flag", "x"})), HasSubstr("--no-such-flag"));
}

// ---- The key ----

TEST_F(MeshdConfigTest, SecretKeyOnTheCommandLineWorksWithAWarning) {
  const auto loaded = load_ok({"--relay", "ws://127.0.0.1:8080/relay/ws", "--secret-key", secret_text(key_)});
  ASSERT_TRUE(loaded.config.secret_key);
  ASSERT_EQ(loaded.warnings.size(), 1u);
  EXPECT_THAT(loaded.warnings[0], HasSubstr("visible to other local users"));
  auto pair = loaded.config.load_key();
  ASSERT_TRUE(pair.ok());
  EXPECT_EQ(pair->agent_id(), key_.agent_id());
}

TEST_F(MeshdConfigTest, BadSecretKeyIsNotQuoted) {
  const std::string bad = "not-a-key-but-a-secret-looking-thing-123456789";
  const std::string message = load_error({"--relay", "ws://127.0.0.1:8080/relay/ws", "--secret-key", bad});
  EXPECT_THAT(message, HasSubstr("--secret-key: not a secret key"));
  EXPECT_THAT(message, Not(HasSubstr(bad)));
}

TEST_F(MeshdConfigTest, ExactlyOneKeyOption) {
  EXPECT_THAT(load_error(base({"--secret-key", secret_text(key_)})),
              HasSubstr("--secret-key and --key-file: give exactly one"));
  EXPECT_THAT(load_error({"--relay", "ws://127.0.0.1:8080/relay/ws"}), HasSubstr("--secret-key or --key-file is required"));
}

TEST_F(MeshdConfigTest, KeyFileOthersCanReadIsRefusedAtLoad) {
  ASSERT_EQ(::chmod(key_path_.c_str(), 0644), 0);
  const auto loaded = load_ok(base());
  auto pair = loaded.config.load_key();
  ASSERT_FALSE(pair.ok());
  EXPECT_THAT(pair.error().message, HasSubstr("--key-file"));
}

TEST_F(MeshdConfigTest, ScrubSecretArguments) {
  std::string a0 = "agent-meshd", a1 = "--secret-key", a2 = "SECRET", a3 = "--secret-key=OTHER", a4 = "--relay",
              a5 = "ws://x/relay/ws";
  char* argv[] = {a0.data(), a1.data(), a2.data(), a3.data(), a4.data(), a5.data()};
  scrub_secret_arguments(6, argv);
  EXPECT_STREQ(argv[2], "xxxxxx");
  EXPECT_STREQ(argv[3], "--secret-key=xxxxx");
  EXPECT_STREQ(argv[5], "ws://x/relay/ws");
}

// ---- Validation ----

TEST_F(MeshdConfigTest, RelayIsRequired) {
  EXPECT_THAT(load_error({"--key-file", key_path_}), HasSubstr("--relay: at least one relay URL is required"));
}

TEST_F(MeshdConfigTest, HttpRelayUrlIsRefusedWithTheWsForm) {
  const std::string message = load_error({"--relay", "http://127.0.0.1:8080", "--key-file", key_path_});
  EXPECT_THAT(message, HasSubstr("--relay: must be a ws:// or wss:// URL"));
  EXPECT_THAT(message, HasSubstr("ws://127.0.0.1:8080/relay/ws"));
  EXPECT_THAT(load_error({"--relay", "https://mesh.example.com", "--key-file", key_path_}),
              HasSubstr("wss://mesh.example.com/relay/ws"));
  EXPECT_THAT(load_error({"--relay", "127.0.0.1:8080", "--key-file", key_path_}),
              HasSubstr("--relay: must be a ws:// or wss:// URL"));
  EXPECT_THAT(load_error({"--relay", "ws://", "--key-file", key_path_}), HasSubstr("--relay: has no host"));
}

TEST_F(MeshdConfigTest, BadPlaintextPeer) {
  EXPECT_THAT(load_error(base({"--plaintext-peer", "bob"})), HasSubstr("--plaintext-peer: not an agent ID: \"bob\""));
}

TEST_F(MeshdConfigTest, OtherRejections) {
  EXPECT_THAT(load_error(base({"--log-level", "trace"})),
              HasSubstr("--log-level: must be debug, info, warn or error"));
  EXPECT_THAT(load_error(base({"--cp-url", "ftp://x"})), HasSubstr("--cp-url: must be an http:// or https:// URL"));
  EXPECT_THAT(load_error(base({"--local-agent", "https://127.0.0.1:9002"})), HasSubstr("--local-agent"));
  EXPECT_THAT(load_error(base({"--relay-id", "relay-1"})), HasSubstr("--relay-id"));
}

// ---- MESH_HOME ----

TEST_F(MeshdConfigTest, MeshHomeGivesTheDefaultSocket) {
  const auto loaded = load_ok(base());
  EXPECT_EQ(loaded.config.mesh_home, dir_ / "home");
  EXPECT_EQ(loaded.config.socket_path(key_.agent_id()), dir_ / "home" / ("meshd-" + key_.agent_id().str() + ".sock"));
}

TEST_F(MeshdConfigTest, MeshHomeDefaultsToDotMeshInHome) {
  ScopedEnv no_mesh_home("MESH_HOME", nullptr);
  ScopedEnv home("HOME", "/home/someone");
  const auto loaded = load_ok(base());
  EXPECT_EQ(loaded.config.mesh_home, "/home/someone/.mesh");
  EXPECT_EQ(loaded.config.socket_path(peer_a_),
            std::filesystem::path("/home/someone/.mesh/meshd-" + peer_a_.str() + ".sock"));
}

TEST_F(MeshdConfigTest, NoHomeAtAllNeedsSocket) {
  ScopedEnv no_mesh_home("MESH_HOME", nullptr);
  ScopedEnv no_home("HOME", nullptr);
  EXPECT_THAT(load_error(base()), HasSubstr("--socket is required"));
  const auto loaded = load_ok(base({"--socket", "/tmp/x.sock"}));
  EXPECT_EQ(loaded.config.socket_path(peer_a_), "/tmp/x.sock");
}

// ---- Config files ----

TEST_F(MeshdConfigTest, JsonConfigWithInlineAcl) {
  const std::string file = write_file("meshd.json", R"({
    "relay": ["ws://127.0.0.1:8080/relay/ws", "ws://127.0.0.2:8080/relay/ws"],
    "local_agent": "http://127.0.0.1:9002",
    "key_file": "agent.key",
    "cp_url": "http://127.0.0.1:8080",
    "plaintext_peer": ")" + peer_a_.str() + R"(",
    "log_level": "warn",
    "acl": )" + acl_json(key_.agent_id()) + "}");
  const auto loaded = load_ok({"--config", file});
  const MeshdConfig& config = loaded.config;
  EXPECT_EQ(config.relay_urls.size(), 2u);
  EXPECT_EQ(config.local_agent_url, "http://127.0.0.1:9002");
  EXPECT_EQ(config.key_file, dir_ / "agent.key");  // relative to the config file
  EXPECT_EQ(config.plaintext_peers, std::vector<AgentId>{peer_a_});
  EXPECT_EQ(config.log_level, LogLevel::warn);
  EXPECT_EQ(config.config_file, file);
  ASSERT_EQ(config.acl.kind, AclSetting::Kind::inline_object);
  auto policy = AclPolicy::from_json(config.acl.inline_text);
  ASSERT_TRUE(policy.ok()) << policy.error().describe();
  EXPECT_TRUE(policy->allows(peer_b_, key_.agent_id(), "echo"));
  EXPECT_FALSE(policy->allows(peer_b_, key_.agent_id(), "other"));
  EXPECT_TRUE(config.load_key().ok());
}

TEST_F(MeshdConfigTest, JsonConfigWithAclFilePath) {
  write_file("acl.json", acl_json(key_.agent_id()));
  const std::string file = write_file("meshd.json", R"({"relay": "ws://127.0.0.1:8080/relay/ws",
    "key_file": "agent.key", "acl": "acl.json", "socket": "run/meshd.sock"})");
  const auto loaded = load_ok({"--config", file});
  EXPECT_EQ(loaded.config.relay_urls, std::vector<std::string>{"ws://127.0.0.1:8080/relay/ws"});
  EXPECT_EQ(loaded.config.acl.kind, AclSetting::Kind::file);
  EXPECT_EQ(loaded.config.acl.file, dir_ / "acl.json");
  EXPECT_EQ(loaded.config.socket, dir_ / "run" / "meshd.sock");
}

TEST_F(MeshdConfigTest, TomlConfigWithInlineAcl) {
  const std::string file = write_file("meshd.toml", R"(
relay = ["ws://127.0.0.1:8080/relay/ws"]
secret_key = ")" + secret_text(key_) + R"("
local_agent = "http://127.0.0.1:9002"
relay_id = "wss://relay.example.com/relay/ws"

[acl]
default_deny = true

[[acl.rules]]
source = ")" + peer_a_.str() + R"("
target = ")" + key_.agent_id().str() + R"("
allowed_capabilities = ["*"]
)");
  ::chmod(file.c_str(), 0600);
  const auto loaded = load_ok({"--config", file});
  const MeshdConfig& config = loaded.config;
  EXPECT_EQ(config.relay_urls, std::vector<std::string>{"ws://127.0.0.1:8080/relay/ws"});
  ASSERT_TRUE(config.secret_key);
  EXPECT_TRUE(loaded.warnings.empty());  // not on the command line, and the file is 0600
  EXPECT_EQ(config.relay_id, "wss://relay.example.com/relay/ws");
  ASSERT_EQ(config.acl.kind, AclSetting::Kind::inline_object);
  auto policy = AclPolicy::from_json(config.acl.inline_text);
  ASSERT_TRUE(policy.ok()) << policy.error().describe();
  EXPECT_TRUE(policy->allows(peer_a_, key_.agent_id(), "anything"));
  EXPECT_FALSE(policy->allows(peer_b_, key_.agent_id(), "anything"));
}

TEST_F(MeshdConfigTest, SecretKeyInAConfigFileOthersCanReadWarns) {
  const std::string file = write_file("meshd.toml", "relay = \"ws://127.0.0.1:8080/relay/ws\"\nsecret_key = \"" +
                                                        secret_text(key_) + "\"\n");
  ::chmod(file.c_str(), 0644);
  const auto loaded = load_ok({"--config", file});
  ASSERT_EQ(loaded.warnings.size(), 1u);
  EXPECT_THAT(loaded.warnings[0], HasSubstr("chmod 600"));
}

TEST_F(MeshdConfigTest, FlagsOverrideTheFile) {
  const std::string file = write_file("meshd.toml", R"(
relay = ["ws://file-relay:8080/relay/ws"]
key_file = "agent.key"
log_level = "debug"
local_agent = "http://127.0.0.1:1111"
[acl]
default_deny = true
rules = []
)");
  const std::string acl_path = write_file("acl.json", acl_json(key_.agent_id()));
  const auto loaded = load_ok({"--config", file, "--relay", "ws://flag-relay:8080/relay/ws", "--log-level", "error",
                               "--secret-key", secret_text(key_), "--acl", acl_path});
  const MeshdConfig& config = loaded.config;
  EXPECT_EQ(config.relay_urls, std::vector<std::string>{"ws://flag-relay:8080/relay/ws"});  // replaced, not appended
  EXPECT_EQ(config.log_level, LogLevel::error);
  EXPECT_EQ(config.local_agent_url, "http://127.0.0.1:1111");  // from the file
  EXPECT_TRUE(config.secret_key);                               // the flag's key replaces the file's key_file
  EXPECT_TRUE(config.key_file.empty());
  EXPECT_EQ(config.acl.kind, AclSetting::Kind::file);
  EXPECT_EQ(config.acl.file, acl_path);
}

TEST_F(MeshdConfigTest, UnknownKeysAreRejectedByName) {
  const std::string json = write_file("meshd.json", R"({"relay": ["ws://x/relay/ws"], "relay_url": "ws://x"})");
  EXPECT_THAT(load_error(base({"--config", json})), HasSubstr("unknown config key \"relay_url\""));
  const std::string toml = write_file("meshd.toml", "relay = [\"ws://x/relay/ws\"]\nlocal-agent = \"http://x\"\n");
  EXPECT_THAT(load_error(base({"--config", toml})), HasSubstr("unknown config key \"local-agent\""));
  const std::string nested = write_file("nested.toml", "config = \"other.toml\"\n");
  EXPECT_THAT(load_error(base({"--config", nested})), HasSubstr("cannot include another"));
}

TEST_F(MeshdConfigTest, ConfigFileErrors) {
  EXPECT_THAT(load_error(base({"--config", (dir_ / "missing.toml").string()})), HasSubstr("does not exist"));
  const std::string yaml = write_file("meshd.yaml", "relay: x\n");
  EXPECT_THAT(load_error(base({"--config", yaml})), HasSubstr(".json or .toml"));
  const std::string broken_json = write_file("broken.json", "{\"relay\": ");
  EXPECT_THAT(load_error(base({"--config", broken_json})), HasSubstr("broken.json"));
  const std::string broken_toml = write_file("broken.toml", "relay = [\n");
  EXPECT_THAT(load_error(base({"--config", broken_toml})), HasSubstr("broken.toml:"));
  const std::string wrong_type = write_file("wrong.toml", "relay = [\"ws://x/relay/ws\"]\nlog_level = 3\n");
  EXPECT_THAT(load_error(base({"--config", wrong_type})), HasSubstr("log_level in"));
  const std::string list_of_numbers = write_file("list.json", R"({"plaintext_peer": [1, 2]})");
  EXPECT_THAT(load_error(base({"--config", list_of_numbers})), HasSubstr("must be an array of strings"));
  const std::string not_object = write_file("array.json", "[1]");
  EXPECT_THAT(load_error(base({"--config", not_object})), HasSubstr("JSON object"));
}

TEST_F(MeshdConfigTest, InvalidInlineAclIsAnErrorAtLoad) {
  const std::string allow_all = write_file("allow.json", R"({"acl": {"default_deny": false, "rules": []}})");
  EXPECT_THAT(load_error(base({"--config", allow_all})), HasSubstr("acl in"));
  const std::string bad_rule =
      write_file("bad.toml", "[acl]\ndefault_deny = true\n[[acl.rules]]\nsource = \"*\"\ntarget = \"bob\"\n"
                             "allowed_capabilities = [\"echo\"]\n");
  EXPECT_THAT(load_error(base({"--config", bad_rule})), HasSubstr("rules[0].target"));
}

TEST_F(MeshdConfigTest, FileValuesAreValidatedWithTheirKeyNamed) {
  const std::string file = write_file("meshd.json", R"({"relay": ["http://127.0.0.1:8080"]})");
  // The flag's relay replaces the file's, so the bad file relay is ignored here...
  EXPECT_EQ(load_ok(base({"--config", file})).config.relay_urls, std::vector<std::string>{"ws://127.0.0.1:8080/relay/ws"});
  // ...and reported with the file's key when it is used.
  const std::string message2 = load_error({"--config", file, "--key-file", key_path_});
  EXPECT_THAT(message2, HasSubstr("relay in " + file + ": must be a ws:// or wss:// URL"));
}

}  // namespace
}  // namespace agent_mesh::meshd
