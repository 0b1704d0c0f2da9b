// agent-mesh-server (registry + relay + web UI in one process, registry.md) and
// agent-mesh-registry (the registry alone, pushing revocations to --relay-url relays) share this.
#pragma once

namespace agent_mesh::server {

enum class Role { all_in_one, registry_only };

// Parses the command line, starts, runs until SIGTERM/SIGINT has drained; returns the exit status.
int run_mesh_server(int argc, char** argv, Role role);

}  // namespace agent_mesh::server
