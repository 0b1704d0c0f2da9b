// agent-mesh-registry: the registry alone; revocations go to each --relay-url (registry.md).
#include "server/mesh_server.hpp"

int main(int argc, char** argv) {
  return agent_mesh::server::run_mesh_server(argc, argv, agent_mesh::server::Role::registry_only);
}
