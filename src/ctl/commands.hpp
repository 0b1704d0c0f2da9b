// The command groups of agent-meshctl, one source file each. Each adds its subcommands to the root
// app and registers what runs when one of them is chosen.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "ctl/context.hpp"

namespace agent_mesh::ctl {

// What a chosen (sub)command runs; the deepest parsed command with an action wins.
class Actions {
 public:
  void add(CLI::App* command, std::function<void()> action) { actions_.emplace_back(command, std::move(action)); }
  // The action of the deepest parsed command, or nullptr.
  [[nodiscard]] const std::function<void()>* chosen() const;

 private:
  std::vector<std::pair<CLI::App*, std::function<void()>>> actions_;
};

// A subcommand with its one-line description and an example shown by --help.
CLI::App* add_command(CLI::App& parent, const std::string& name, const std::string& description,
                      const std::string& example);

// The whole tree: global flags and every command (run_meshctl; the tests build it too).
void build_command_tree(CLI::App& app, Context& context, Actions& actions);

void add_identity_commands(CLI::App& app, Context& context, Actions& actions);  // keygen register deregister revoke rotate
void add_login_commands(CLI::App& app, Context& context, Actions& actions);     // login auth-header
void add_registry_commands(CLI::App& app, Context& context, Actions& actions);  // discover acl group setup-key
void add_request_command(CLI::App& app, Context& context, Actions& actions);    // request
void add_status_command(CLI::App& app, Context& context, Actions& actions);     // status
void add_up_command(CLI::App& app, Context& context, Actions& actions);         // up
void add_completion_command(CLI::App& app, Context& context, Actions& actions); // completion
void add_mcp_command(CLI::App& app, Context& context, Actions& actions);        // mcp-server

// register's options, shared with `up` (which registers before it starts meshd).
struct RegisterOptions {
  std::string name;
  std::string capabilities;
  std::string capabilities_file;
  std::string description;
  std::string secret_key;
  std::string setup_key;
  std::string group;
};
// Signs and registers the card (see `register --help`); returns the agent's ID. With `print`, the
// result goes to stdout as `register` prints it.
AgentId register_agent(Context& context, const RegisterOptions& options, bool print);

// Completion scripts generated from the command tree. Empty for an unknown shell.
[[nodiscard]] std::string completion_script(const CLI::App& app, const std::string& shell);

}  // namespace agent_mesh::ctl
