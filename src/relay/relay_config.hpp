// The relay's configuration (relay.md "Configuration"): every key with its documented default, read
// from a TOML file (`--config relay.toml`) and overridden by flags (a flag is its key with `_` → `-`,
// spec README "Conventions"; the dotted key `cluster.nats_url` is the flag `--cluster-nats-url`).
// Unknown keys, wrong types and invalid values are errors that name the key.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "agent_mesh/limits.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh::relay {

// Defaults, each with the reason for its value (relay.md unless said otherwise). These are
// production values: tests and benchmarks set their own limits by flag (relay.md "Rate limiting").
namespace defaults {
// Loopback: exposing a server is an explicit choice (spec README "Binaries and defaults").
inline constexpr std::string_view listen = "127.0.0.1:9800";
// 0 = one io_context per core (docs/design.md "Threading plan").
inline constexpr std::int64_t threads = 0;
// protocol §3: the default bound on an envelope frame.
inline constexpr std::int64_t max_envelope_bytes = static_cast<std::int64_t>(limits::default_max_envelope_bytes);
// protocol §6: ping every 30 s; a connection silent for 3 intervals is presumed dead.
inline constexpr std::int64_t heartbeat_ms = 30000;
// protocol §6: auth completes within 5 s of the TCP accept.
inline constexpr std::int64_t auth_timeout_ms = 5000;
// protocol §6: a resume token is valid until 5 min after its connection closes.
inline constexpr std::int64_t resume_ttl_s = 300;
// Four maximal envelopes: a reader a few frames behind is not cut, a stalled one is (4010).
inline constexpr std::int64_t write_queue_bytes = 4 * 1024 * 1024;
// Messages per second per agent: far above any interactive agent, low enough that one agent
// cannot monopolise a relay core.
inline constexpr double rate_limit = 500;
// Two seconds of the sustained rate, so bursty but well-behaved senders are never refused.
inline constexpr double rate_burst = 1000;
// Connection attempts per second per source IP: a reconnect storm of one host, not a flood.
inline constexpr double ip_connect_rate = 20;
// Failed authentications per minute per source IP: a misconfigured client, not key guessing.
inline constexpr double ip_auth_failures = 10;
// Per offline agent: 1000 messages / 16 MiB, enough for a restart window without letting one
// absent agent fill the store.
inline constexpr std::int64_t buffer_max_messages = 1000;
inline constexpr std::int64_t buffer_max_bytes = 16 * 1024 * 1024;
// Receivers accept handshakes and signed envelopes for 10 min after their timestamp (protocol §3);
// keeping them longer would only deliver envelopes the receiver drops.
inline constexpr std::int64_t buffer_ttl_s = 600;
// The whole store: a disk budget an operator can plan for.
inline constexpr std::int64_t store_max_bytes = 1024LL * 1024 * 1024;
// Shutdown: enough to flush queues and store the rest, short enough for an orchestrator's grace.
inline constexpr std::int64_t drain_timeout_s = 10;
inline constexpr std::string_view log_level = "info";
inline constexpr std::string_view log_format = "text";
}  // namespace defaults

// The address to bind: an IP literal (IPv6 without its brackets) and a port (0 = ephemeral).
struct ListenAddress {
  std::string host = "127.0.0.1";
  std::uint16_t port = 9800;
  bool ipv6 = false;

  // "127.0.0.1:9800", "[::1]:0", "0.0.0.0:443". `localhost` is accepted as 127.0.0.1; other host
  // names are refused (a server binds addresses, not names). Error: bad_request.
  [[nodiscard]] static Result<ListenAddress> parse(std::string_view text);
  // 0.0.0.0 or :: (every interface).
  [[nodiscard]] bool is_wildcard() const noexcept;
  // "host:port", IPv6 in brackets; `port` is usually the bound port (this->port may be 0).
  [[nodiscard]] std::string authority(std::uint16_t bound_port) const;
};

// An IP address or CIDR network from `trusted_proxies`.
struct IpNetwork {
  std::array<std::uint8_t, 16> address{};  // IPv4 in the first 4 bytes
  bool ipv6 = false;
  int prefix_bits = 0;  // 32 or 128 for a single address

  // "10.0.0.1", "10.0.0.0/8", "::1", "fd00::/8". Host bits below the prefix must be zero, so a
  // typo such as "10.0.0.1/8" is caught. Error: bad_request.
  [[nodiscard]] static Result<IpNetwork> parse(std::string_view text);
  // True if `ip` (the textual peer address, as Asio prints it) lies in this network. An
  // IPv4-mapped IPv6 address (::ffff:a.b.c.d, what a dual-stack socket reports) counts as the IPv4
  // address. Unparsable text is never contained.
  [[nodiscard]] bool contains(std::string_view ip) const noexcept;
};

enum class LogFormat : std::uint8_t { text, json };

struct RelayConfig {
  ListenAddress listen{};  // `listen`
  // `public_url`: the relay_id clients verify (protocol §6). Empty: derived by relay_id().
  std::string public_url{};
  std::filesystem::path tls_cert{};  // both or neither
  std::filesystem::path tls_key{};
  // Where the offline store lives. Default: $MESH_HOME/relay, MESH_HOME defaulting to ~/.mesh.
  std::filesystem::path data_dir{};
  std::filesystem::path admin_token_file{};  // empty: admin endpoints refuse everything
  std::int64_t threads = defaults::threads;
  std::int64_t max_envelope_bytes = defaults::max_envelope_bytes;
  std::int64_t heartbeat_ms = defaults::heartbeat_ms;
  std::int64_t auth_timeout_ms = defaults::auth_timeout_ms;
  std::int64_t resume_ttl_s = defaults::resume_ttl_s;
  std::int64_t write_queue_bytes = defaults::write_queue_bytes;
  double rate_limit = defaults::rate_limit;              // messages per second per agent
  double rate_burst = defaults::rate_burst;              // bucket size, messages
  double ip_connect_rate = defaults::ip_connect_rate;    // connection attempts per second per IP
  double ip_auth_failures = defaults::ip_auth_failures;  // failed authentications per minute per IP
  std::int64_t buffer_max_messages = defaults::buffer_max_messages;
  std::int64_t buffer_max_bytes = defaults::buffer_max_bytes;
  std::int64_t buffer_ttl_s = defaults::buffer_ttl_s;
  std::int64_t store_max_bytes = defaults::store_max_bytes;
  std::int64_t drain_timeout_s = defaults::drain_timeout_s;
  std::vector<IpNetwork> trusted_proxies{};
  std::string log_level{defaults::log_level};  // trace|debug|info|warn|error|critical|off (spdlog)
  LogFormat log_format = LogFormat::text;
  std::string registry_url{};                  // http(s)://; with it, the registration gate is on
  std::filesystem::path registry_token_file{};  // required with registry_url
  std::string cluster_nats_url{};               // `cluster.nats_url`, nats:// or tls:// (scale-out.md)
  std::filesystem::path config_file{};          // the --config file read, empty if none

  [[nodiscard]] bool tls_enabled() const noexcept { return !tls_cert.empty(); }
  // The relay_id (protocol §6): public_url, or else ws(s)://<listen host>:<bound port>/relay/ws
  // (wss when TLS is configured). Pass the port actually bound, since listen.port may be 0.
  [[nodiscard]] std::string relay_id(std::uint16_t bound_port) const;
  // True if the peer address is in trusted_proxies (then X-Forwarded-For is believed).
  [[nodiscard]] bool is_trusted_proxy(std::string_view peer_ip) const noexcept;
};

// Flags a program adds to the relay's (agent-mesh-server, agent-mesh-registry): their values come
// back in LoadedConfig::extra, keyed by the flag without its dashes.
struct ExtraFlag {
  enum class Kind : std::uint8_t { text, list, boolean };
  std::string name;  // "db-path" for --db-path
  std::string help;
  Kind kind = Kind::text;
  std::string value_name = "TEXT";
};

// Who is parsing: the program's name, --help text and its extra flags.
struct CommandLine {
  std::string program = "agent-mesh-relay";
  std::string description;  // empty: the relay's own
  std::string examples;     // empty: the relay's own
  std::vector<ExtraFlag> extra;
};

// What the command line asked for.
struct LoadedConfig {
  RelayConfig config;  // valid only when !exit_now
  // --help or --version: print exit_text to stdout and exit with status 0, starting nothing.
  bool exit_now = false;
  std::string exit_text;
  // Values of CommandLine::extra flags that were given (a boolean flag given: {"true"}).
  std::map<std::string, std::vector<std::string>> extra;
};

// Parses the command line: `--config FILE` (TOML), then one flag per key overriding the file, then
// validates the result. Errors (Errc::bad_request) name the key or flag: an unknown flag or TOML
// key, a value of the wrong type, or a value that breaks a rule (port range, positive limits,
// write_queue_bytes ≥ max_envelope_bytes, a wildcard listen address without public_url, ...).
// argv[0] is the program name, as in main.
[[nodiscard]] Result<LoadedConfig> load_relay_config(int argc, const char* const* argv);
[[nodiscard]] Result<LoadedConfig> load_relay_config(int argc, const char* const* argv, const CommandLine& command);

// The rules load_relay_config applies after merging file and flags; exposed for callers that
// build a RelayConfig in code (tests, agent-mesh-server). Error: bad_request naming the key.
[[nodiscard]] Status validate(const RelayConfig& config);

}  // namespace agent_mesh::relay
