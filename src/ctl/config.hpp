// meshctl's configuration (cli-mcp-web.md "meshctl"): `$MESH_HOME/config.toml` (directory 0700,
// file 0600, rewritten atomically), environment variables, flags. Precedence: flags > environment >
// file, key by key.
//
// Keys (file key / environment / flag, meaning):
//   cp_url        MESH_CP_URL        --cp-url        registry base URL (default http://127.0.0.1:8080)
//   relay_url     MESH_RELAY_URL     --relay-url     relay WebSocket URL (default: GET /api/v1/info)
//   token         MESH_TOKEN         --token         the user's API token
//   secret_key    -                  -               the agent's key, inline (43 base64url chars)
//   key_file      MESH_KEY_FILE      --key-file      the agent's key file (protocol §2 format)
//   agent_id      MESH_AGENT_ID      --agent-id      the configured agent (meshd socket, deregister)
//   meshd_socket  MESH_MESHD_SOCKET  --meshd-socket  meshd's Local API ($MESH_HOME/meshd-<id>.sock)
//   previous_secret_key, previous_key_file           the key before `rotate`, until `rotate complete`
// Keys meshctl creates go to $MESH_HOME/keys/<agent_id>.key (0600) and are referenced by key_file,
// so agent-meshd can use the same file (`--key-file`).
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent_mesh/result.hpp"

namespace agent_mesh::ctl {

// The registry a user starts with `agent-mesh-server` (there is no hosted instance).
inline constexpr std::string_view kDefaultCpUrl = "http://127.0.0.1:8080";

// Every key config.toml may hold; any other key is an error naming it.
[[nodiscard]] const std::vector<std::string_view>& config_keys();

// A config file holds a handful of short strings; anything near this is not ours.
inline constexpr std::size_t kMaxConfigFileBytes = 64 * 1024;

// config.toml: a flat table of string values.
class ConfigFile {
 public:
  // A missing file is an empty configuration. Errors (bad_request, naming the file): not TOML, a
  // key that is not in config_keys(), a value that is not a string, a file others may read
  // (with the chmod that fixes it), larger than 64 KiB.
  [[nodiscard]] static Result<ConfigFile> load(std::filesystem::path path);
  // The text checks of load() (TOML, known keys, string values); `path` names the file in errors
  // and is where save() writes. Fuzzed by fuzz/fuzz_ctl_inputs.cpp.
  [[nodiscard]] static Result<ConfigFile> parse(std::string_view text, std::filesystem::path path);

  [[nodiscard]] std::optional<std::string> get(std::string_view key) const;
  void set(std::string_view key, std::string value);
  void erase(std::string_view key);
  // Writes the whole file atomically with mode 0600 (its directory created 0700 when missing).
  [[nodiscard]] Status save() const;

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  // The TOML text save() writes.
  [[nodiscard]] std::string to_toml() const;

 private:
  std::filesystem::path path_;
  std::map<std::string, std::string, std::less<>> values_;
};

// $MESH_HOME, or $HOME/.mesh.
[[nodiscard]] std::filesystem::path default_mesh_home();

// The environment variable of a key ("cp_url" → "MESH_CP_URL"), or empty for keys without one.
[[nodiscard]] std::string environment_name(std::string_view key);

}  // namespace agent_mesh::ctl
