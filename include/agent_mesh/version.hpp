#pragma once

#include <string_view>

namespace agent_mesh {
inline constexpr std::string_view kVersion = "0.1.0";
// The wire protocol version (protocol.md): `v` in hello/welcome.
inline constexpr int kProtocolVersion = 1;
}  // namespace agent_mesh
