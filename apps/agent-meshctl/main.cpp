// agent-meshctl: the CLI (cli-mcp-web.md "meshctl"). Everything is in src/ctl/.
#include "ctl/app.hpp"

int main(int argc, char** argv) { return agent_mesh::ctl::run_meshctl(argc, argv); }
