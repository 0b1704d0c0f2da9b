// meshd's configuration (meshd-sdk.md "meshd"): flags, an optional config file (`--config`, JSON or
// TOML by extension) whose keys are the flags with `-` → `_`, and the defaults `MESH_HOME` gives.
//
// Keys (flag / config key, default):
//   --relay URL            relay        (required, repeatable: the fail-over list, tried in order)
//                                        ws:// or wss:// only. An http(s):// URL is refused with a
//                                        message suggesting ws(s)://HOST:PORT/relay/ws: meshd does
//                                        not guess the path, since the URL is also the relay_id it
//                                        verifies (protocol §6).
//   --local-agent URL      local_agent  (none: every incoming request → unknown_capability)
//   --secret-key KEY       secret_key   \ exactly one of the two; no default key file (meshctl keeps
//   --key-file FILE        key_file     / its key in config.toml, so there is no one file to guess).
//                                        --secret-key on the command line works but is visible to
//                                        other local users: a warning says so.
//   --cp-url URL           cp_url       (none: no ACL sync, GET /agents → unreachable)
//   --acl FILE             acl          (in a config file: a file path, or an inline ACL object
//                                        {"default_deny": true, "rules": [...]}, TOML: an [acl]
//                                        table with [[acl.rules]]; none: deny all)
//   --socket PATH          socket       ($MESH_HOME/meshd-<agent_id>.sock)
//   --plaintext-peer ID    plaintext_peer (repeatable)
//   --relay-id ID          relay_id     (none: the URL dialled)
//   --log-level LEVEL      log_level    (info; debug, info, warn or error)
//   --config FILE          (flag only)
// In a config file a repeatable key takes an array of strings (a single string is accepted too).
// Flags override the file key by key; a repeatable flag replaces the file's whole list; a key flag
// (--secret-key/--key-file) replaces the file's key setting, --acl the file's `acl`. Relative paths
// in a config file are relative to the file's directory. Unknown keys are errors naming the key.
// `MESH_HOME` defaults to $HOME/.mesh.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent_mesh/identity.hpp"
#include "agent_mesh/mesh_client.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh::meshd {

// Where the ACL comes from.
struct AclSetting {
  enum class Kind : std::uint8_t { none, file, inline_object };
  Kind kind = Kind::none;
  std::filesystem::path file;  // Kind::file
  // Kind::inline_object: the object as JSON text, already checked with AclPolicy::from_json.
  std::string inline_text;
};

struct MeshdConfig {
  std::vector<std::string> relay_urls;
  std::string local_agent_url;  // empty: none
  // Exactly one of the two is set after loading.
  std::optional<std::string> secret_key;  // key file text (43 base64url characters)
  std::filesystem::path key_file;
  std::string cp_url;  // empty: none
  AclSetting acl;
  std::filesystem::path socket;  // empty: socket_path(agent_id) picks the default
  std::vector<AgentId> plaintext_peers;
  std::optional<std::string> relay_id;
  LogLevel log_level = LogLevel::info;
  std::filesystem::path mesh_home;    // $MESH_HOME, or $HOME/.mesh
  std::filesystem::path config_file;  // the --config file read, empty if none

  // The Local API socket: `socket`, or $MESH_HOME/meshd-<agent_id>.sock.
  [[nodiscard]] std::filesystem::path socket_path(const AgentId& agent) const;
  // The identity from secret_key or key_file (KeyPair::load refuses a key file others can read).
  [[nodiscard]] Result<KeyPair> load_key() const;
};

struct LoadedMeshdConfig {
  MeshdConfig config;  // valid only when !exit_now
  // --help or --version: print exit_text on stdout and exit 0.
  bool exit_now = false;
  std::string exit_text;
  // Printed on stderr by the daemon before it starts (e.g. the --secret-key warning).
  std::vector<std::string> warnings;
};

// argv[0] is the program name. Errors are bad_request (not_found for a missing --config file) and
// name the flag or key: "--relay: must be a ws:// or wss:// URL ...".
[[nodiscard]] Result<LoadedMeshdConfig> load_meshd_config(int argc, const char* const* argv);

// "debug" → LogLevel::debug, ...; nullopt for anything else.
[[nodiscard]] std::optional<LogLevel> parse_log_level(std::string_view text);
[[nodiscard]] std::string_view to_string(LogLevel level) noexcept;

// Overwrites the value of --secret-key in argv (both "--secret-key KEY" and "--secret-key=KEY")
// with 'x' characters, so later reads of /proc/<pid>/cmdline no longer show it. Best effort: a
// `ps` that ran before this still saw it, hence the warning.
void scrub_secret_arguments(int argc, char** argv) noexcept;

}  // namespace agent_mesh::meshd
