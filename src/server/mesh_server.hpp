// agent-mesh-server (registry + relay + web UI in one process, registry.md) and
// agent-mesh-registry (the registry alone, pushing revocations to --relay-url relays) share this,
// and so does mesh-demo, which runs the server inside its own process (EmbeddedServer).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent_mesh/result.hpp"

namespace agent_mesh::server {

enum class Role { all_in_one, registry_only };

// Parses the command line, starts, runs until SIGTERM/SIGINT has drained; returns the exit status.
int run_mesh_server(int argc, char** argv, Role role);

// The same server (same flags, same code) running on background threads of the calling process:
//
//   auto server = EmbeddedServer::start({"--listen", "127.0.0.1:0", "--data-dir", dir, "--bootstrap"});
//   if (!server) { std::cerr << server.error().describe() << "\n"; return 1; }
//   RegistryClient registry((*server)->listening_url(), key);       // http://127.0.0.1:<port>
//   ClientOptions options; options.relay_urls = {(*server)->relay_url()};
//   ... (*server)->bootstrap_token() ...
//   (*server)->stop();                                              // or let it go out of scope
//
// Unlike run_mesh_server it installs no signal handling (the process's signal mask and dispositions
// are left alone), prints nothing on stdout and does not print the bootstrap token (it is returned
// by bootstrap_token(), and written to <data-dir>/bootstrap-token as always). Logging goes to stderr
// at --log-level like the binaries' (the log configuration is process-wide).
class EmbeddedServer {
 public:
  // `args`: the flags as on the command line, without the program name. Returns once the listener
  // is bound (port 0 → listening_url() has the actual port) and the registry is ready. Errors:
  // Errc::bad_request for flags or configuration the command line would refuse with status 2
  // (including --help and --version), Errc::internal for what would exit with 1 (port in use,
  // storage not writable, ...); the message starts with the program's name.
  [[nodiscard]] static Result<std::unique_ptr<EmbeddedServer>> start(std::vector<std::string> args,
                                                                     Role role = Role::all_in_one);

  // "http://127.0.0.1:43512": the bound address (registry under /api/v1/, web UI at /).
  [[nodiscard]] std::string listening_url() const;
  // With --bootstrap: the admin user's API token it created; when users existed already, the token
  // an earlier --bootstrap left in <data-dir>/bootstrap-token if that file is there. Otherwise nullopt.
  [[nodiscard]] std::optional<std::string> bootstrap_token() const;
  // The relay's WebSocket URL (its relay_id, "ws://127.0.0.1:43512/relay/ws", or from --public-url);
  // for Role::registry_only the first --relay-url's, or empty.
  [[nodiscard]] std::string relay_url() const;

  // Graceful stop as on SIGTERM: long polls answered, relay clients closed with 1001, returns when
  // drained (at most the drain timeout). Idempotent; the destructor calls it.
  void stop();
  ~EmbeddedServer();
  EmbeddedServer(const EmbeddedServer&) = delete;
  EmbeddedServer& operator=(const EmbeddedServer&) = delete;

 private:
  struct State;
  explicit EmbeddedServer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace agent_mesh::server
