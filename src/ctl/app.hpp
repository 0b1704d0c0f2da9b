// agent-meshctl's entry point: the command tree (CLI11), global flags, exit statuses and error
// printing (cli-mcp-web.md "meshctl").
#pragma once

namespace agent_mesh::ctl {

// Runs one command line; returns the exit status (0 ok, 1 error, 2 usage, 130 interrupted).
[[nodiscard]] int run_meshctl(int argc, char** argv);

}  // namespace agent_mesh::ctl
