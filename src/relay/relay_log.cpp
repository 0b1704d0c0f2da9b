#include "relay/relay_log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <boost/json.hpp>

#include "agent_mesh/json.hpp"

namespace agent_mesh::relay {
namespace {

std::shared_ptr<spdlog::logger>& logger() {
  static std::shared_ptr<spdlog::logger> instance = spdlog::stderr_logger_mt("agent-mesh-relay");
  return instance;
}
bool json_format = false;

spdlog::level::level_enum to_spdlog(LogLevel level) {
  switch (level) {
    case LogLevel::trace: return spdlog::level::trace;
    case LogLevel::debug: return spdlog::level::debug;
    case LogLevel::info: return spdlog::level::info;
    case LogLevel::warn: return spdlog::level::warn;
    case LogLevel::error: return spdlog::level::err;
  }
  return spdlog::level::info;
}

}  // namespace

void init_logging(const RelayConfig& config) {
  json_format = config.log_format == LogFormat::json;
  auto& log = logger();
  log->set_level(spdlog::level::from_str(config.log_level));
  // JSON lines carry their own timestamp and level members; text lines get them from the pattern.
  log->set_pattern(json_format ? "%v" : "%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
  log->flush_on(spdlog::level::info);
}

bool log_enabled(LogLevel level) noexcept { return logger()->should_log(to_spdlog(level)); }

void log_event(LogLevel level, std::string_view event,
               std::initializer_list<std::pair<std::string_view, std::string>> fields) {
  if (!log_enabled(level)) return;
  std::string line;
  if (json_format) {
    boost::json::object object;
    object["event"] = event;
    const auto name = spdlog::level::to_string_view(to_spdlog(level));
    object["level"] = std::string(name.data(), name.size());
    object["ts"] = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
    for (const auto& [key, value] : fields) object[key] = value;
    line = json::serialize_jcs(object);
  } else {
    line = std::string(event);
    for (const auto& [key, value] : fields) {
      line += ' ';
      line += key;
      line += '=';
      // Values are IDs, addresses and codes; quote anything with spaces so lines stay parseable.
      if (value.find(' ') != std::string::npos) {
        line += '"' + value + '"';
      } else {
        line += value;
      }
    }
  }
  logger()->log(to_spdlog(level), line);
}

}  // namespace agent_mesh::relay
