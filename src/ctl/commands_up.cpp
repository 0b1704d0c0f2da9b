// up: one command to bring an agent online: make sure there is a key, register the card, then run
// agent-meshd's daemon in this process, in the foreground, until Ctrl-C.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <mutex>

#include "ctl/commands.hpp"
#include "meshd/daemon.hpp"
#include "meshd/meshd_config.hpp"

namespace agent_mesh::ctl {

namespace {

// How long running requests get to finish after Ctrl-C (meshd's SIGTERM drain).
constexpr std::chrono::milliseconds kDrainGrace{10000};

struct UpOptions {
  std::string local_agent;
  std::string name;
  std::string capabilities;
  std::string description;
};

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "agent";
  return name;
}

void up(Context& context, const UpOptions& options) {
  if (options.local_agent.rfind("http://", 0) != 0) {
    fail_command("--local-agent must be an http:// URL of the agent's local server", "e.g. --local-agent http://127.0.0.1:9002",
                 kExitUsage);
  }
  // Register when asked to (a name or capabilities given) or when the agent has no card yet.
  bool registered = false;
  if (options.name.empty() && options.capabilities.empty()) {
    if (auto key = context.identity()) {
      registered = context.registry(*key)->call("GET", "/api/v1/agents/" + key->agent_id().str()).ok();
    }
  }
  if (!registered) {
    if (options.capabilities.empty()) {
      fail_command("the agent is not registered yet, and `up` needs its capabilities to register it",
                   "pass --capabilities a,b (and --name NAME)", kExitUsage);
    }
    RegisterOptions card;
    card.name = options.name.empty() ? host_name() : options.name;
    card.capabilities = options.capabilities;
    card.description = options.description;
    (void)register_agent(context, card, false);
  }

  const KeyPair key = context.require_identity();
  meshd::MeshdConfig config;
  config.relay_urls = {context.relay_url()};
  config.local_agent_url = options.local_agent;
  config.cp_url = context.cp_url();
  config.mesh_home = context.mesh_home();
  std::string seed = key.key_file_text();
  if (!seed.empty() && seed.back() == '\n') seed.pop_back();
  config.secret_key = seed;
  if (auto socket = context.setting("meshd_socket")) config.socket = *socket;

  // Before the daemon's threads start, so Ctrl-C reaches this thread and not the default action.
  Interrupts interrupts;
  std::mutex print_mutex;
  std::atomic<bool> connected{false};
  const std::string relay = config.relay_urls.front();
  auto log = [&](LogLevel level, std::string_view event, std::string_view detail) {
    const std::lock_guard lock(print_mutex);
    if (event == "relay.connected") {
      connected = true;
      context.err() << "Connected to " << relay << "\n" << std::flush;
      return;
    }
    if (level == LogLevel::debug) return;
    context.err() << "[" << meshd::to_string(level) << "] " << event << (detail.empty() ? "" : ": ") << detail << "\n"
                  << std::flush;
  };
  context.err() << "Connecting to " << relay << " ...\n" << std::flush;
  auto daemon = meshd::Daemon::start(config, log);
  if (!daemon) fail_command("agent-meshd did not start: " + daemon.error().message, "see the lines above");
  {
    const std::lock_guard lock(print_mutex);
    context.out() << "agent " << (*daemon)->agent_id().str() << " socket " << (*daemon)->socket_path().string() << "\n"
                  << std::flush;
    context.err() << "Serving " << options.local_agent << " as " << (*daemon)->agent_id().str()
                  << ". Press Ctrl-C to stop.\n"
                  << std::flush;
  }
  while (!interrupts.wait_for(std::chrono::hours(24))) {
  }
  {
    const std::lock_guard lock(print_mutex);
    context.err() << "Stopping: finishing requests in flight (up to " << kDrainGrace.count() / 1000 << " s) ...\n" << std::flush;
  }
  const bool finished = (*daemon)->stop(kDrainGrace);
  {
    const std::lock_guard lock(print_mutex);
    context.err() << "Stopped cleanly.\n" << std::flush;
  }
  if (!finished) {
    // The registry sync thread is still in a long poll holding the daemon's objects (Daemon::stop).
    std::cout.flush();
    std::_Exit(kExitOk);
  }
}

}  // namespace

void add_up_command(CLI::App& app, Context& context, Actions& actions) {
  auto options = std::make_shared<UpOptions>();
  auto* command = add_command(app, "up",
                              "Bring an agent online: ensure a key, register its card, run agent-meshd in the foreground "
                              "(Ctrl-C stops it cleanly)",
                              "agent-meshctl up --local-agent http://127.0.0.1:9002 --name bob --capabilities echo");
  command->add_option("--local-agent", options->local_agent, "The agent's local HTTP server")->required();
  command->add_option("--name", options->name, "The agent's name (default: the host name)");
  command->add_option("--capabilities", options->capabilities, "Capability names, comma-separated");
  command->add_option("--description", options->description, "What the agent does");
  actions.add(command, [&context, options] { up(context, *options); });
}

}  // namespace agent_mesh::ctl
