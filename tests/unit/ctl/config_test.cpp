// meshctl's configuration: config.toml parsing and writing, file modes, and the precedence
// flags > environment > file (cli-mcp-web.md "meshctl").
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "ctl/config.hpp"
#include "ctl/context.hpp"

namespace agent_mesh::ctl {
namespace {

namespace fs = std::filesystem;

class TempHome : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ctl-config-test-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    for (const char* name : {"MESH_HOME", "MESH_CP_URL", "MESH_RELAY_URL", "MESH_TOKEN", "MESH_KEY_FILE", "MESH_AGENT_ID",
                             "MESH_MESHD_SOCKET"}) {
      ::unsetenv(name);
    }
    ::setenv("MESH_HOME", (dir_ / "home").c_str(), 1);
  }
  void TearDown() override {
    ::unsetenv("MESH_HOME");
    ::unsetenv("MESH_CP_URL");
    ::unsetenv("MESH_TOKEN");
    fs::remove_all(dir_);
  }
  static mode_t mode_of(const fs::path& path) {
    struct stat info {};
    EXPECT_EQ(::stat(path.c_str(), &info), 0) << path;
    return info.st_mode & 0777;
  }
  fs::path dir_;
};

TEST_F(TempHome, AMissingFileIsAnEmptyConfiguration) {
  auto file = ConfigFile::load(dir_ / "nothing.toml");
  ASSERT_TRUE(file.ok()) << file.error().message;
  EXPECT_FALSE(file->get("token"));
}

TEST_F(TempHome, ParsesKnownKeysAndRefusesEverythingElse) {
  auto good = ConfigFile::parse("cp_url = 'http://x:1'\ntoken = \"t\"\n", "c.toml");
  ASSERT_TRUE(good.ok()) << good.error().message;
  EXPECT_EQ(good->get("cp_url"), "http://x:1");
  EXPECT_EQ(good->get("token"), "t");

  auto unknown = ConfigFile::parse("cp_ulr = 'x'\n", "c.toml");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message.find("unknown key `cp_ulr`"), std::string::npos) << unknown.error().message;
  EXPECT_NE(unknown.error().message.find("cp_url"), std::string::npos) << "the known keys are listed";

  auto not_string = ConfigFile::parse("token = 5\n", "c.toml");
  ASSERT_FALSE(not_string.ok());
  EXPECT_NE(not_string.error().message.find("`token` must be a string"), std::string::npos);

  auto table = ConfigFile::parse("[token]\nx = 'y'\n", "c.toml");
  EXPECT_FALSE(table.ok());

  auto broken = ConfigFile::parse("token = 'unterminated\n", "c.toml");
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.error().message.find("not valid TOML"), std::string::npos) << broken.error().message;

  EXPECT_FALSE(ConfigFile::parse(std::string(kMaxConfigFileBytes + 1, '#'), "c.toml").ok());
}

TEST_F(TempHome, SaveWritesMode0600InA0700DirectoryAndRoundTrips) {
  const fs::path path = dir_ / "home" / "config.toml";
  auto file = ConfigFile::load(path);
  ASSERT_TRUE(file.ok());
  file->set("token", "tok'en\"with\\quotes");
  file->set("cp_url", "http://127.0.0.1:1");
  ASSERT_TRUE(file->save().ok());
  EXPECT_EQ(mode_of(path), 0600u);
  EXPECT_EQ(mode_of(path.parent_path()), 0700u);
  auto again = ConfigFile::load(path);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->get("token"), "tok'en\"with\\quotes");
  // No temporary files are left next to it.
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(path.parent_path())) ++entries;
  EXPECT_EQ(entries, 1u);
}

TEST_F(TempHome, AFileOthersCanReadIsRefusedWithTheFix) {
  const fs::path path = dir_ / "open.toml";
  fs::create_directories(dir_);
  std::ofstream(path) << "token = 'secret'\n";
  ::chmod(path.c_str(), 0644);
  auto file = ConfigFile::load(path);
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.error().message.find("chmod 600"), std::string::npos) << file.error().message;
}

TEST_F(TempHome, FlagsBeatEnvironmentWhichBeatsTheFile) {
  const fs::path home = dir_ / "home";
  auto file = ConfigFile::load(home / "config.toml");
  ASSERT_TRUE(file.ok());
  file->set("cp_url", "http://file:1");
  file->set("token", "file-token");
  ASSERT_TRUE(file->save().ok());

  std::ostringstream out;
  std::ostringstream err;
  std::istringstream in;
  Context context(out, err, in, false);
  context.load_config();
  EXPECT_EQ(context.cp_url(), "http://file:1");
  EXPECT_EQ(context.source_of("cp_url"), "cp_url in " + (home / "config.toml").string());

  ::setenv("MESH_CP_URL", "http://env:2", 1);
  EXPECT_EQ(context.cp_url(), "http://env:2");
  EXPECT_EQ(context.source_of("cp_url"), "MESH_CP_URL");
  EXPECT_EQ(context.require_token(), "file-token") << "other keys still come from the file";

  context.flags.cp_url = "http://flag:3";
  EXPECT_EQ(context.cp_url(), "http://flag:3");
  EXPECT_EQ(context.source_of("cp_url"), "--cp-url");
}

TEST_F(TempHome, DefaultsAndMissingSettingsSayWhatToDo) {
  std::ostringstream out;
  std::ostringstream err;
  std::istringstream in;
  Context context(out, err, in, false);
  context.load_config();
  EXPECT_EQ(context.cp_url(), "http://127.0.0.1:8080");
  EXPECT_EQ(context.mesh_home(), dir_ / "home");
  EXPECT_FALSE(context.identity());
  EXPECT_FALSE(context.meshd_socket());
  try {
    (void)context.require_token();
    FAIL() << "no token is configured";
  } catch (const CommandFailure& failure) {
    EXPECT_EQ(failure.exit_status, kExitError);
    EXPECT_NE(failure.hint.find("agent-meshctl login"), std::string::npos) << failure.hint;
  }
}

TEST_F(TempHome, TheKeyFileAndTheMeshdSocketFollowTheAgent) {
  const KeyPair key = KeyPair::generate();
  std::ostringstream out;
  std::ostringstream err;
  std::istringstream in;
  Context context(out, err, in, false);
  context.load_config();
  ASSERT_TRUE(key.save(context.key_path(key.agent_id())).ok());
  context.config().set("key_file", context.key_path(key.agent_id()).string());
  EXPECT_EQ(context.identity()->agent_id(), key.agent_id());
  EXPECT_EQ(context.agent_id(), key.agent_id());
  EXPECT_EQ(*context.meshd_socket(), dir_ / "home" / ("meshd-" + key.agent_id().str() + ".sock"));
  context.flags.meshd_socket = "/run/x.sock";
  EXPECT_EQ(*context.meshd_socket(), fs::path("/run/x.sock"));

  context.flags.agent_id = "not-an-id";
  EXPECT_THROW((void)context.agent_id(), CommandFailure);
}

TEST(EnvironmentNames, FollowTheKeys) {
  EXPECT_EQ(environment_name("cp_url"), "MESH_CP_URL");
  EXPECT_EQ(environment_name("meshd_socket"), "MESH_MESHD_SOCKET");
  EXPECT_EQ(environment_name("secret_key"), "") << "a secret in the environment is not offered";
}

}  // namespace
}  // namespace agent_mesh::ctl
