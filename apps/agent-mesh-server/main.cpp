// agent-mesh-server: registry + relay + web UI in one process (registry.md).
#include "server/mesh_server.hpp"

int main(int argc, char** argv) {
  return agent_mesh::server::run_mesh_server(argc, argv, agent_mesh::server::Role::all_in_one);
}
