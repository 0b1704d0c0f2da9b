#include "ctl/app.hpp"

#include <unistd.h>

#include <iostream>

#include "agent_mesh/version.hpp"
#include "ctl/commands.hpp"

namespace agent_mesh::ctl {

const std::function<void()>* Actions::chosen() const {
  const std::function<void()>* best = nullptr;
  int best_depth = -1;
  for (const auto& [command, action] : actions_) {
    if (!command->parsed()) continue;
    int depth = 0;
    for (const CLI::App* parent = command->get_parent(); parent != nullptr; parent = parent->get_parent()) ++depth;
    if (depth > best_depth) {
      best = &action;
      best_depth = depth;
    }
  }
  return best;
}

CLI::App* add_command(CLI::App& parent, const std::string& name, const std::string& description,
                      const std::string& example) {
  CLI::App* command = parent.add_subcommand(name, description);
  command->footer("Example:\n  " + example);
  // Global flags may follow the command: unknown options go up to the root.
  command->fallthrough();
  return command;
}

namespace {

void add_global_flags(CLI::App& app, Context& context) {
  auto& flags = context.flags;
  app.add_flag("--json", flags.json, "Print the API's JSON objects instead of tables");
  app.add_option("--cp-url", flags.cp_url, "Registry URL (env MESH_CP_URL; default http://127.0.0.1:8080)");
  app.add_option("--relay-url", flags.relay_url, "Relay WebSocket URL (env MESH_RELAY_URL; default: from the registry)");
  app.add_option("--token", flags.token, "API token (env MESH_TOKEN; prefer `login`, which saves it)");
  app.add_option("--key-file", flags.key_file, "Agent key file (env MESH_KEY_FILE)");
  app.add_option("--agent-id", flags.agent_id, "Agent ID (env MESH_AGENT_ID)");
  app.add_option("--meshd-socket", flags.meshd_socket, "meshd's Local API socket (env MESH_MESHD_SOCKET)");
}

// CLI11 puts "Run with --help for more information." after usage errors; we add which command's help.
int usage_error(const CLI::Error& error, const CLI::App& app, std::ostream& err) {
  err << "error: " << error.what() << "\n";
  std::string path;
  for (const CLI::App* command = &app; command != nullptr;) {
    const CLI::App* deepest = nullptr;
    for (const CLI::App* sub : command->get_subcommands()) deepest = sub;
    if (deepest == nullptr) break;
    path += " " + deepest->get_name();
    command = deepest;
  }
  err << "hint: see `agent-meshctl" << path << " --help` for the flags and an example\n";
  return kExitUsage;
}

}  // namespace

void build_command_tree(CLI::App& app, Context& context, Actions& actions) {
  app.name("agent-meshctl");
  app.description(
      "agent-meshctl: the agent-mesh command line (registry, keys, ACL, requests).\n"
      "Settings: flags > environment (MESH_*) > $MESH_HOME/config.toml (MESH_HOME default ~/.mesh).");
  app.footer("Example:\n  agent-meshctl login --token-stdin < /var/lib/agent-mesh/bootstrap-token\n"
             "  agent-meshctl register --name bob --capabilities echo\n"
             "  agent-meshctl request --target <agent-id> --capability echo --payload '{\"message\": \"hi\"}'");
  app.set_version_flag("--version", std::string("agent-meshctl ") + std::string(kVersion));
  app.require_subcommand(1);
  add_global_flags(app, context);
  add_identity_commands(app, context, actions);
  add_login_commands(app, context, actions);
  add_registry_commands(app, context, actions);
  add_request_command(app, context, actions);
  add_status_command(app, context, actions);
  add_up_command(app, context, actions);
  add_mcp_command(app, context, actions);
  add_completion_command(app, context, actions);
}

int run_meshctl(int argc, char** argv) {
  Context context(std::cout, std::cerr, std::cin, ::isatty(STDERR_FILENO) == 1);
  CLI::App app;
  Actions actions;
  build_command_tree(app, context, actions);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help, std::cout, std::cerr);
  } catch (const CLI::CallForAllHelp& help) {
    return app.exit(help, std::cout, std::cerr);
  } catch (const CLI::CallForVersion& version) {
    return app.exit(version, std::cout, std::cerr);
  } catch (const CLI::ParseError& error) {
    return usage_error(error, app, std::cerr);
  }
  const auto* action = actions.chosen();
  if (action == nullptr) {
    std::cerr << "error: choose a command\nhint: `agent-meshctl --help` lists them\n";
    return kExitUsage;
  }
  try {
    context.load_config();
    (*action)();
    std::cout.flush();
    return std::cout.good() ? kExitOk : kExitError;
  } catch (const CommandFailure& failure) {
    std::cout.flush();
    std::cerr << "error: " << failure.message << "\n";
    if (!failure.hint.empty()) std::cerr << "hint: " << failure.hint << "\n";
    return failure.exit_status;
  } catch (const std::exception& unexpected) {
    std::cerr << "error: " << unexpected.what() << "\nhint: this is a bug in agent-meshctl; please report it\n";
    return kExitError;
  }
}

}  // namespace agent_mesh::ctl
