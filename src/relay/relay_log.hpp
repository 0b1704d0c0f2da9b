// The relay's log: one line per connection event on stderr (stdout carries only the listening
// line), as text or JSON (`log_format`), at `log_level`. Never a payload or a secret: callers pass
// agent IDs, addresses, codes and counts only.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "relay/relay_config.hpp"

namespace agent_mesh::relay {

enum class LogLevel : int { trace, debug, info, warn, error };

void init_logging(const RelayConfig& config);
[[nodiscard]] bool log_enabled(LogLevel level) noexcept;
// log_event(LogLevel::info, "connection.authenticated", {{"agent", id}, {"ip", ip}})
// text: `connection.authenticated agent=... ip=...`; json: {"event":...,"level":...,"ts":...,...}.
void log_event(LogLevel level, std::string_view event,
               std::initializer_list<std::pair<std::string_view, std::string>> fields = {});

}  // namespace agent_mesh::relay
