// The command tree: every command of cli-mcp-web.md's table exists with an example, the deepest
// chosen command runs, and the completion scripts are generated from the same tree.
#include <gtest/gtest.h>

#include <sstream>

#include "ctl/commands.hpp"

namespace agent_mesh::ctl {
namespace {

struct Tree {
  std::ostringstream out;
  std::ostringstream err;
  std::istringstream in;
  Context context{out, err, in, false};
  CLI::App app;
  Actions actions;
  Tree() { build_command_tree(app, context, actions); }
};

TEST(CommandTree, HasEveryCommandOfTheSpecWithAnExample) {
  Tree tree;
  const std::vector<std::vector<std::string>> commands = {
      {"keygen"}, {"login"}, {"register"}, {"deregister"}, {"discover"}, {"request"}, {"status"}, {"revoke"},
      {"rotate"}, {"rotate", "complete"}, {"acl", "list"}, {"acl", "add"}, {"acl", "remove"}, {"group", "list"},
      {"group", "create"}, {"group", "add-member"}, {"group", "remove-member"}, {"setup-key", "create"},
      {"setup-key", "list"}, {"setup-key", "revoke"}, {"up"}, {"auth-header"}, {"completion"}};
  for (const auto& path : commands) {
    const CLI::App* command = &tree.app;
    for (const auto& name : path) command = command->get_subcommand(name);
    ASSERT_NE(command, nullptr);
    const std::string footer = command->get_footer();
    std::string joined;
    for (const auto& name : path) joined += " " + name;
    EXPECT_TRUE(footer.rfind("Example:\n  ", 0) == 0 && footer.find("agent-meshctl" + joined) != std::string::npos)
        << path.back() << ": " << command->get_footer();
    EXPECT_FALSE(command->get_description().empty()) << path.back();
  }
}

TEST(CommandTree, TheDeepestParsedCommandRuns) {
  Tree tree;
  std::string ran;
  Actions actions;
  actions.add(tree.app.get_subcommand("rotate"), [&] { ran = "rotate"; });
  actions.add(tree.app.get_subcommand("rotate")->get_subcommand("complete"), [&] { ran = "rotate complete"; });
  tree.app.parse(std::vector<std::string>{"complete", "rotate"});  // CLI11 takes the arguments reversed
  ASSERT_NE(actions.chosen(), nullptr);
  (*actions.chosen())();
  EXPECT_EQ(ran, "rotate complete");
}

TEST(CommandTree, GlobalFlagsMayFollowTheCommand) {
  Tree tree;
  tree.app.parse(std::vector<std::string>{"--cp-url=http://x:1", "--json", "discover"});
  EXPECT_TRUE(tree.context.flags.json);
  EXPECT_EQ(tree.context.flags.cp_url, "http://x:1");
}

TEST(Completion, BashKnowsEveryLevelAndSkipsOptionValues) {
  Tree tree;
  const std::string script = completion_script(tree.app, "bash");
  EXPECT_NE(script.find("complete -F _agent_meshctl agent-meshctl"), std::string::npos);
  EXPECT_NE(script.find("\"acl\") words=\"add list remove\""), std::string::npos) << script;
  EXPECT_NE(script.find("\"rotate\") words=\"complete\""), std::string::npos);
  EXPECT_NE(script.find("--name"), std::string::npos);
  EXPECT_NE(script.find("--capabilities|"), std::string::npos) << "an option taking a value skips its value";
  EXPECT_EQ(script.find("--json|"), std::string::npos) << "a flag does not";
}

TEST(Completion, ZshAndFishAreGeneratedOthersAreNot) {
  Tree tree;
  EXPECT_NE(completion_script(tree.app, "zsh").find("bashcompinit"), std::string::npos);
  const std::string fish = completion_script(tree.app, "fish");
  EXPECT_NE(fish.find("complete -c agent-meshctl -n '__fish_seen_subcommand_from acl' -a add"), std::string::npos) << fish;
  EXPECT_TRUE(completion_script(tree.app, "tcsh").empty());
}

}  // namespace
}  // namespace agent_mesh::ctl
