// `register --capabilities-file caps.json` (cli-mcp-web.md): a JSON array of
// {"name", "description"?, "input_schema"?, "output_schema"?}. Parsed without I/O; fuzzed by
// fuzz/fuzz_ctl_inputs.cpp.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

#include "agent_mesh/agent_card.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh::ctl {

// A capabilities file is a short list; 1 MiB is the registry's whole request bound.
inline constexpr std::size_t kMaxCapabilitiesFileBytes = 1024 * 1024;

// Errors (bad_request, or too_large past kMaxCapabilitiesFileBytes) name the item and member:
// "[2]: unexpected member `nam`", "[0]: name is required". Names are checked by the card later.
[[nodiscard]] Result<std::vector<CardCapability>> parse_capabilities_file(std::string_view text);

}  // namespace agent_mesh::ctl
