// agent-meshd: the daemon beside an agent (meshd-sdk.md "meshd"). Everything is in src/meshd/.
#include "meshd/daemon.hpp"

int main(int argc, char** argv) { return agent_mesh::meshd::run_meshd(argc, argv); }
