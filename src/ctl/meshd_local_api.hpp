// meshctl's side of agent-meshd's Local API (meshd-sdk.md "Local API") on its Unix socket.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>

#include "agent_mesh/error.hpp"

namespace agent_mesh::ctl {

// True when something accepts connections on the socket (a stale socket file or no file: false).
[[nodiscard]] bool meshd_answers(const std::filesystem::path& socket);

// What to do after a mesh error (protocol §4 codes), for `request` and the MCP adapter's messages.
[[nodiscard]] std::string mesh_error_hint(Errc code, const std::string& me, const std::string& target,
                                          const std::string& capability, std::chrono::milliseconds timeout);

}  // namespace agent_mesh::ctl
