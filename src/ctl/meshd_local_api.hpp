// meshctl's side of agent-meshd's Local API (meshd-sdk.md "Local API") on its Unix socket.
#pragma once

#include <filesystem>

namespace agent_mesh::ctl {

// True when something accepts connections on the socket (a stale socket file or no file: false).
[[nodiscard]] bool meshd_answers(const std::filesystem::path& socket);

}  // namespace agent_mesh::ctl
