#include "relay/relay_config.hpp"

#include <arpa/inet.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <map>
#include <optional>
#include <system_error>
#include <toml++/toml.h>
#include <utility>
#include <variant>

#include "agent_mesh/version.hpp"

namespace agent_mesh::relay {
namespace {

// ---- Addresses ----

struct ParsedIp {
  std::array<std::uint8_t, 16> bytes{};
  bool ipv6 = false;
};

// An IPv4 or IPv6 literal (no brackets, no zone). An IPv4-mapped IPv6 address is returned as IPv4
// when `unmap` is set, so "::ffff:10.0.0.1" from a dual-stack socket matches "10.0.0.0/8".
std::optional<ParsedIp> parse_ip(std::string_view text, bool unmap) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  const std::string copy(text);  // inet_pton wants a terminated string
  ParsedIp ip;
  if (copy.find(':') == std::string::npos) {
    if (inet_pton(AF_INET, copy.c_str(), ip.bytes.data()) != 1) return std::nullopt;
    return ip;
  }
  if (inet_pton(AF_INET6, copy.c_str(), ip.bytes.data()) != 1) return std::nullopt;
  ip.ipv6 = true;
  static constexpr std::array<std::uint8_t, 12> kMappedPrefix{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (unmap && std::equal(kMappedPrefix.begin(), kMappedPrefix.end(), ip.bytes.begin())) {
    std::array<std::uint8_t, 16> v4{};
    std::copy_n(ip.bytes.begin() + 12, 4, v4.begin());
    ip.bytes = v4;
    ip.ipv6 = false;
  }
  return ip;
}

std::string ip_to_text(const ParsedIp& ip) {
  char buffer[INET6_ADDRSTRLEN] = {};
  inet_ntop(ip.ipv6 ? AF_INET6 : AF_INET, ip.bytes.data(), buffer, sizeof buffer);
  return buffer;
}

std::optional<unsigned> parse_decimal(std::string_view text, unsigned max) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value > max) return std::nullopt;
  return value;
}

bool bit_set(const std::array<std::uint8_t, 16>& bytes, int bit) {
  return (bytes[static_cast<std::size_t>(bit / 8)] >> (7 - bit % 8)) & 1;
}

bool starts_with_ci(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    const char c = text[i];
    const char lower = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    if (lower != prefix[i]) return false;
  }
  return true;
}

// "scheme://authority[/path]" with one of `schemes` and a non-empty authority, no whitespace.
bool is_url_with_scheme(std::string_view url, std::initializer_list<std::string_view> schemes) {
  if (url.find_first_of(" \t\r\n") != std::string_view::npos) return false;
  for (const std::string_view scheme : schemes) {
    if (!starts_with_ci(url, scheme)) continue;
    const std::string_view rest = url.substr(scheme.size());
    const std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
    return !authority.empty();
  }
  return false;
}

// ---- Settings: one table drives the TOML reader, the flags and the help ----

enum class Kind : std::uint8_t { string, integer, number, string_list };

using RawValue = std::variant<std::string, std::int64_t, double, std::vector<std::string>>;

std::string_view kind_name(Kind kind) {
  switch (kind) {
    case Kind::string: return "a string";
    case Kind::integer: return "an integer";
    case Kind::number: return "a number";
    case Kind::string_list: return "an array of strings";
  }
  return "a value";
}

std::string_view type_label(Kind kind) {
  switch (kind) {
    case Kind::string: return "TEXT";
    case Kind::integer: return "INT";
    case Kind::number: return "NUMBER";
    case Kind::string_list: return "LIST";
  }
  return "VALUE";
}

using Assign = Status (*)(RelayConfig&, const RawValue&);

struct Setting {
  std::string_view key;  // the TOML key; dotted keys are nested tables
  Kind kind;
  std::string_view help;
  Assign assign;  // called with a RawValue of `kind`
  std::string_view value_name = {};  // in --help; empty: from `kind`
};

template <auto member>
Status assign_integer(RelayConfig& config, const RawValue& value) {
  config.*member = std::get<std::int64_t>(value);
  return {};
}
template <auto member>
Status assign_number(RelayConfig& config, const RawValue& value) {
  config.*member = std::get<double>(value);
  return {};
}
template <auto member>
Status assign_string(RelayConfig& config, const RawValue& value) {
  config.*member = std::get<std::string>(value);
  return {};
}

Status assign_listen(RelayConfig& config, const RawValue& value) {
  auto parsed = ListenAddress::parse(std::get<std::string>(value));
  if (!parsed) return fail(Errc::bad_request, "listen: " + parsed.error().message);
  config.listen = std::move(parsed).value();
  return {};
}

Status assign_log_format(RelayConfig& config, const RawValue& value) {
  const auto& text = std::get<std::string>(value);
  if (text == "text") {
    config.log_format = LogFormat::text;
  } else if (text == "json") {
    config.log_format = LogFormat::json;
  } else {
    return fail(Errc::bad_request, "log_format must be \"text\" or \"json\"");
  }
  return {};
}

Status assign_trusted_proxies(RelayConfig& config, const RawValue& value) {
  config.trusted_proxies.clear();
  for (const auto& entry : std::get<std::vector<std::string>>(value)) {
    auto network = IpNetwork::parse(entry);
    if (!network) return fail(Errc::bad_request, "trusted_proxies: " + network.error().message);
    config.trusted_proxies.push_back(*network);
  }
  return {};
}

// relay.md "Configuration", in its order (plus `threads`, docs/design.md "Threading plan").
const Setting kSettings[] = {
    {"listen", Kind::string, "address to bind, HOST:PORT or [IPV6]:PORT; port 0 picks a free port", &assign_listen, "HOST:PORT"},
    {"public_url", Kind::string, "ws:// or wss:// URL clients dial: the relay_id (required with a wildcard listen)",
     &assign_string<&RelayConfig::public_url>, "URL"},
    {"tls_cert", Kind::string, "PEM certificate chain for wss:// (with tls_key)", &assign_string<&RelayConfig::tls_cert>, "FILE"},
    {"tls_key", Kind::string, "PEM private key for wss:// (with tls_cert)", &assign_string<&RelayConfig::tls_key>, "FILE"},
    {"data_dir", Kind::string, "directory of the offline store (default $MESH_HOME/relay, MESH_HOME=~/.mesh)",
     &assign_string<&RelayConfig::data_dir>, "DIR"},
    {"admin_token_file", Kind::string, "file holding the admin Bearer token (POST /revocations, /status?agents=1)",
     &assign_string<&RelayConfig::admin_token_file>, "FILE"},
    {"threads", Kind::integer, "network threads, 0 = one per core", &assign_integer<&RelayConfig::threads>},
    {"max_envelope_bytes", Kind::integer, "largest envelope frame accepted (bytes)",
     &assign_integer<&RelayConfig::max_envelope_bytes>},
    {"heartbeat_ms", Kind::integer, "WebSocket ping interval (ms)", &assign_integer<&RelayConfig::heartbeat_ms>},
    {"auth_timeout_ms", Kind::integer, "time from TCP accept to completed auth (ms)",
     &assign_integer<&RelayConfig::auth_timeout_ms>},
    {"resume_ttl_s", Kind::integer, "resume token lifetime after its connection closes (s)",
     &assign_integer<&RelayConfig::resume_ttl_s>},
    {"write_queue_bytes", Kind::integer, "per-connection outgoing queue bound (bytes, >= max_envelope_bytes)",
     &assign_integer<&RelayConfig::write_queue_bytes>},
    {"rate_limit", Kind::number, "messages per second per agent", &assign_number<&RelayConfig::rate_limit>},
    {"rate_burst", Kind::number, "burst of messages per agent", &assign_number<&RelayConfig::rate_burst>},
    {"ip_connect_rate", Kind::number, "connection attempts per second per source IP",
     &assign_number<&RelayConfig::ip_connect_rate>},
    {"ip_auth_failures", Kind::number, "failed authentications per minute per source IP",
     &assign_number<&RelayConfig::ip_auth_failures>},
    {"buffer_max_messages", Kind::integer, "stored messages per offline agent",
     &assign_integer<&RelayConfig::buffer_max_messages>},
    {"buffer_max_bytes", Kind::integer, "stored bytes per offline agent", &assign_integer<&RelayConfig::buffer_max_bytes>},
    {"buffer_ttl_s", Kind::integer, "lifetime of a stored message, from its timestamp or storage if earlier (s)",
     &assign_integer<&RelayConfig::buffer_ttl_s>},
    {"store_max_bytes", Kind::integer, "stored bytes in all", &assign_integer<&RelayConfig::store_max_bytes>},
    {"drain_timeout_s", Kind::integer, "shutdown deadline after SIGTERM/SIGINT (s)",
     &assign_integer<&RelayConfig::drain_timeout_s>},
    {"trusted_proxies", Kind::string_list, "proxies whose X-Forwarded-For is believed (IPs or CIDRs, comma-separated)",
     &assign_trusted_proxies, "CIDR,..."},
    {"log_level", Kind::string, "trace, debug, info, warn, error, critical or off", &assign_string<&RelayConfig::log_level>, "LEVEL"},
    {"log_format", Kind::string, "text or json", &assign_log_format, "FORMAT"},
    {"registry_url", Kind::string, "registry base URL (http/https): only its registered agents may authenticate",
     &assign_string<&RelayConfig::registry_url>, "URL"},
    {"registry_token_file", Kind::string, "file holding the admin token sent to the registry",
     &assign_string<&RelayConfig::registry_token_file>, "FILE"},
    {"cluster.nats_url", Kind::string, "NATS URL (nats:// or tls://) to join a relay cluster (scale-out.md)",
     &assign_string<&RelayConfig::cluster_nats_url>, "URL"},
};

const Setting* find_setting(std::string_view key) {
  for (const auto& setting : kSettings) {
    if (setting.key == key) return &setting;
  }
  return nullptr;
}

bool is_table_prefix(std::string_view prefix) {
  return std::any_of(std::begin(kSettings), std::end(kSettings), [&](const Setting& setting) {
    return setting.key.size() > prefix.size() && setting.key.starts_with(prefix) && setting.key[prefix.size()] == '.';
  });
}

// "max_envelope_bytes" → "--max-envelope-bytes"; "cluster.nats_url" → "--cluster-nats-url".
std::string flag_name(std::string_view key) {
  std::string flag = "--";
  for (const char c : key) flag += (c == '_' || c == '.') ? '-' : c;
  return flag;
}

// "heartbeat_ms (--heartbeat-ms)": how errors name a setting, so both spellings are findable.
std::string key_and_flag(std::string_view key) {
  return std::string(key) + " (" + flag_name(key) + ")";
}

// ---- TOML ----

std::string_view toml_type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    default: return "a date or time";
  }
}

Result<RawValue> raw_from_toml(const Setting& setting, const toml::node& node, const std::string& file) {
  const auto type_error = [&] {
    return fail(Errc::bad_request, "config key \"" + std::string(setting.key) + "\" in " + file + " must be " +
                                       std::string(kind_name(setting.kind)) + ", not " +
                                       std::string(toml_type_name(node)));
  };
  switch (setting.kind) {
    case Kind::string:
      if (const auto* text = node.as_string()) return RawValue{text->get()};
      return type_error();
    case Kind::integer:
      if (const auto* integer = node.as_integer()) return RawValue{integer->get()};
      return type_error();
    case Kind::number:
      if (const auto* integer = node.as_integer()) return RawValue{static_cast<double>(integer->get())};
      if (const auto* number = node.as_floating_point()) return RawValue{number->get()};
      return type_error();
    case Kind::string_list: {
      const auto* array = node.as_array();
      if (array == nullptr) return type_error();
      std::vector<std::string> items;
      for (const auto& item : *array) {
        const auto* text = item.as_string();
        if (text == nullptr) return type_error();
        items.push_back(text->get());
      }
      return RawValue{std::move(items)};
    }
  }
  return type_error();
}

using RawSettings = std::map<std::string_view, RawValue>;

Status read_toml_table(const toml::table& table, const std::string& prefix, const std::string& file,
                       RawSettings& out) {
  for (const auto& [name, node] : table) {
    const std::string key = prefix + std::string(name.str());
    if (const auto* nested = node.as_table(); nested != nullptr && is_table_prefix(key)) {
      AGENT_MESH_TRY(read_toml_table(*nested, key + ".", file, out));
      continue;
    }
    const Setting* setting = find_setting(key);
    if (setting == nullptr) {
      if (is_table_prefix(key)) {
        return fail(Errc::bad_request, "config key \"" + key + "\" in " + file + " must be a table, not " +
                                           std::string(toml_type_name(node)));
      }
      return fail(Errc::bad_request, "unknown config key \"" + key + "\" in " + file);
    }
    auto raw = raw_from_toml(*setting, node, file);
    if (!raw) return std::move(raw).error();
    out[setting->key] = std::move(raw).value();
  }
  return {};
}

Status read_toml_file(const std::filesystem::path& path, RawSettings& out) {
  const std::string file = path.string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return fail(Errc::not_found, "config file " + file + " does not exist or is not a regular file");
  }
  try {
    const toml::table table = toml::parse_file(file);
    return read_toml_table(table, "", file, out);
  } catch (const toml::parse_error& error) {
    return fail(Errc::bad_request, file + ":" + std::to_string(error.source().begin.line) + ":" +
                                       std::to_string(error.source().begin.column) + ": " +
                                       std::string(error.description()));
  }
}

// ---- Flags ----

Result<RawValue> raw_from_flag(const Setting& setting, const std::string& text,
                               const std::vector<std::string>& list) {
  const auto type_error = [&] {
    return fail(Errc::bad_request, flag_name(setting.key) + " must be " + std::string(kind_name(setting.kind)) +
                                       ", got \"" + text + "\"");
  };
  switch (setting.kind) {
    case Kind::string: return RawValue{text};
    case Kind::integer: {
      std::int64_t value = 0;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
      if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) return type_error();
      return RawValue{value};
    }
    case Kind::number: {
      double value = 0;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
      if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) return type_error();
      return RawValue{value};
    }
    case Kind::string_list: return RawValue{list};
  }
  return type_error();
}

struct FlagValue {
  std::string text;
  std::vector<std::string> list;
  CLI::Option* option = nullptr;
};

constexpr std::string_view kDescription =
    "agent-mesh-relay: the WebSocket relay of an agent-mesh network. It routes end-to-end encrypted\n"
    "envelopes between authenticated agents, stores them durably for offline agents and enforces\n"
    "revocations; it never sees a payload in clear.";

constexpr std::string_view kExamples =
    "Examples:\n"
    "  agent-mesh-relay                                  # 127.0.0.1:9800, store in ~/.mesh/relay\n"
    "  agent-mesh-relay --listen 127.0.0.1:0 --data-dir /tmp/relay --rate-limit 100000\n"
    "  agent-mesh-relay --listen 0.0.0.0:443 --public-url wss://relay.example.com/relay/ws \\\n"
    "      --tls-cert /etc/relay/cert.pem --tls-key /etc/relay/key.pem --data-dir /var/lib/agent-mesh-relay\n"
    "  agent-mesh-relay --config relay.toml --log-level debug   # flags override the file\n"
    "\n"
    "relay.toml (every key is also a flag, _ -> -; unknown keys are an error):\n"
    "  listen = \"0.0.0.0:9800\"\n"
    "  public_url = \"wss://relay.example.com/relay/ws\"\n"
    "  data_dir = \"/var/lib/agent-mesh-relay\"\n"
    "  trusted_proxies = [\"10.0.0.0/8\"]\n"
    "  [cluster]\n"
    "  nats_url = \"nats://127.0.0.1:4222\"\n"
    "\n"
    "On start the first line on stdout is `listening http://<host>:<port>` with the bound port.";

std::string default_text(const Setting& setting) {
  const std::string_view key = setting.key;
  if (key == "listen") return std::string(defaults::listen);
  if (key == "log_level") return std::string(defaults::log_level);
  if (key == "log_format") return std::string(defaults::log_format);
  if (key == "threads") return std::to_string(defaults::threads);
  if (key == "max_envelope_bytes") return std::to_string(defaults::max_envelope_bytes);
  if (key == "heartbeat_ms") return std::to_string(defaults::heartbeat_ms);
  if (key == "auth_timeout_ms") return std::to_string(defaults::auth_timeout_ms);
  if (key == "resume_ttl_s") return std::to_string(defaults::resume_ttl_s);
  if (key == "write_queue_bytes") return std::to_string(defaults::write_queue_bytes);
  if (key == "rate_limit") return std::to_string(static_cast<std::int64_t>(defaults::rate_limit));
  if (key == "rate_burst") return std::to_string(static_cast<std::int64_t>(defaults::rate_burst));
  if (key == "ip_connect_rate") return std::to_string(static_cast<std::int64_t>(defaults::ip_connect_rate));
  if (key == "ip_auth_failures") return std::to_string(static_cast<std::int64_t>(defaults::ip_auth_failures));
  if (key == "buffer_max_messages") return std::to_string(defaults::buffer_max_messages);
  if (key == "buffer_max_bytes") return std::to_string(defaults::buffer_max_bytes);
  if (key == "buffer_ttl_s") return std::to_string(defaults::buffer_ttl_s);
  if (key == "store_max_bytes") return std::to_string(defaults::store_max_bytes);
  if (key == "drain_timeout_s") return std::to_string(defaults::drain_timeout_s);
  return "";
}

Status apply_default_data_dir(RelayConfig& config) {
  if (!config.data_dir.empty()) return {};
  if (const char* mesh_home = std::getenv("MESH_HOME"); mesh_home != nullptr && *mesh_home != '\0') {
    config.data_dir = std::filesystem::path(mesh_home) / "relay";
    return {};
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    config.data_dir = std::filesystem::path(home) / ".mesh" / "relay";
    return {};
  }
  return fail(Errc::bad_request, "data_dir (--data-dir) is required: neither MESH_HOME nor HOME is set");
}

// ---- Validation helpers ----

Status require_range(std::string_view key, std::int64_t value, std::int64_t min, std::int64_t max) {
  if (value < min || value > max) {
    std::string rule = min == 1 ? "positive" : min == 0 ? "zero or more" : "at least " + std::to_string(min);
    return fail(Errc::bad_request, key_and_flag(key) + " must be " + rule + " and at most " + std::to_string(max) +
                                       " (got " + std::to_string(value) + ")");
  }
  return {};
}

Status require_rate(std::string_view key, double value, double min) {
  const bool in_range = min == 0 ? value > 0 : value >= min;
  if (!std::isfinite(value) || !in_range) {
    return fail(Errc::bad_request, key_and_flag(key) + " must be a finite number " +
                                       (min == 0 ? std::string("above 0") : "of at least " + std::to_string(min)));
  }
  return {};
}

}  // namespace

// ---- ListenAddress ----

Result<ListenAddress> ListenAddress::parse(std::string_view text) {
  std::string_view host;
  std::string_view port_text;
  bool bracketed = false;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return fail(Errc::bad_request, "expected [IPV6]:PORT, e.g. [::1]:9800");
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
    bracketed = true;
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return fail(Errc::bad_request, "expected HOST:PORT, e.g. 127.0.0.1:9800");
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return fail(Errc::bad_request, "an IPv6 address goes in brackets, e.g. [::1]:9800");
    }
  }
  const auto port = parse_decimal(port_text, 65535);
  if (!port) return fail(Errc::bad_request, "port must be a number from 0 to 65535");
  if (!bracketed && host == "localhost") host = "127.0.0.1";
  const auto ip = parse_ip(host, /*unmap=*/false);
  if (!ip || ip->ipv6 != bracketed) {
    return fail(Errc::bad_request, "host must be an IP address (127.0.0.1, 0.0.0.0, [::1], [::]), not a name");
  }
  ListenAddress address;
  address.host = ip_to_text(*ip);
  address.port = static_cast<std::uint16_t>(*port);
  address.ipv6 = ip->ipv6;
  return address;
}

bool ListenAddress::is_wildcard() const noexcept { return host == "0.0.0.0" || host == "::"; }

std::string ListenAddress::authority(std::uint16_t bound_port) const {
  const std::string port_text = std::to_string(bound_port);
  return ipv6 ? "[" + host + "]:" + port_text : host + ":" + port_text;
}

// ---- IpNetwork ----

Result<IpNetwork> IpNetwork::parse(std::string_view text) {
  const auto slash = text.find('/');
  const std::string_view address_text = text.substr(0, slash);
  const auto ip = parse_ip(address_text, /*unmap=*/false);
  if (!ip) return fail(Errc::bad_request, "expected an IP address or CIDR network (10.0.0.0/8, fd00::/8)");
  IpNetwork network;
  network.address = ip->bytes;
  network.ipv6 = ip->ipv6;
  const int max_bits = ip->ipv6 ? 128 : 32;
  network.prefix_bits = max_bits;
  if (slash != std::string_view::npos) {
    const auto bits = parse_decimal(text.substr(slash + 1), static_cast<unsigned>(max_bits));
    if (!bits) return fail(Errc::bad_request, "prefix length must be 0 to " + std::to_string(max_bits));
    network.prefix_bits = static_cast<int>(*bits);
  }
  for (int bit = network.prefix_bits; bit < max_bits; ++bit) {
    if (bit_set(network.address, bit)) {
      return fail(Errc::bad_request, "host bits are set below the prefix length (did you mean the network address?)");
    }
  }
  // An IPv4-mapped network written in IPv6 form matches IPv4 peers (contains() unmaps them).
  static constexpr std::array<std::uint8_t, 12> kMappedPrefix{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (network.ipv6 && network.prefix_bits >= 96 &&
      std::equal(kMappedPrefix.begin(), kMappedPrefix.end(), network.address.begin())) {
    std::array<std::uint8_t, 16> v4{};
    std::copy_n(network.address.begin() + 12, 4, v4.begin());
    network.address = v4;
    network.ipv6 = false;
    network.prefix_bits -= 96;
  }
  return network;
}

bool IpNetwork::contains(std::string_view ip_text) const noexcept {
  if (ip_text.starts_with('[') && ip_text.ends_with(']')) ip_text = ip_text.substr(1, ip_text.size() - 2);
  ip_text = ip_text.substr(0, ip_text.find('%'));  // an IPv6 zone does not change the address
  std::optional<ParsedIp> ip;
  try {
    ip = parse_ip(ip_text, /*unmap=*/true);
  } catch (...) {  // std::string allocation; treat as "not contained"
    return false;
  }
  if (!ip || ip->ipv6 != ipv6) return false;
  for (int bit = 0; bit < prefix_bits; ++bit) {
    if (bit_set(ip->bytes, bit) != bit_set(address, bit)) return false;
  }
  return true;
}

// ---- RelayConfig ----

std::string RelayConfig::relay_id(std::uint16_t bound_port) const {
  if (!public_url.empty()) return public_url;
  return std::string(tls_enabled() ? "wss://" : "ws://") + listen.authority(bound_port) + "/relay/ws";
}

bool RelayConfig::is_trusted_proxy(std::string_view peer_ip) const noexcept {
  return std::any_of(trusted_proxies.begin(), trusted_proxies.end(),
                     [&](const IpNetwork& network) { return network.contains(peer_ip); });
}

Status validate(const RelayConfig& config) {
  if (config.listen.is_wildcard() && config.public_url.empty()) {
    return fail(Errc::bad_request, "listen " + config.listen.authority(config.listen.port) +
                                       " is a wildcard address: public_url (--public-url) is required, since "
                                       "clients verify it as the relay_id (protocol §6)");
  }
  if (!config.public_url.empty() && !is_url_with_scheme(config.public_url, {"ws://", "wss://"})) {
    return fail(Errc::bad_request, "public_url (--public-url) must be a ws:// or wss:// URL with a host, e.g. "
                                   "wss://relay.example.com/relay/ws");
  }
  if (config.tls_cert.empty() != config.tls_key.empty()) {
    return fail(Errc::bad_request, "tls_cert (--tls-cert) and tls_key (--tls-key) must be given together");
  }
  // Integers stay below 2^53 (protocol §1) and seconds below 2^53 / 1000, so converting them to
  // milliseconds or adding them to a clock can never overflow.
  constexpr std::int64_t kMaxInteger = limits::max_safe_integer;
  constexpr std::int64_t kMaxSeconds = limits::max_safe_integer / 1000;
  AGENT_MESH_TRY(require_range("threads", config.threads, 0, 1024));
  AGENT_MESH_TRY(require_range("max_envelope_bytes", config.max_envelope_bytes, 1, kMaxInteger));
  AGENT_MESH_TRY(require_range("heartbeat_ms", config.heartbeat_ms, 1, kMaxInteger));
  AGENT_MESH_TRY(require_range("auth_timeout_ms", config.auth_timeout_ms, 1, kMaxInteger));
  AGENT_MESH_TRY(require_range("resume_ttl_s", config.resume_ttl_s, 0, kMaxSeconds));
  AGENT_MESH_TRY(require_range("write_queue_bytes", config.write_queue_bytes, 1, kMaxInteger));
  if (config.write_queue_bytes < config.max_envelope_bytes) {
    return fail(Errc::bad_request, "write_queue_bytes (--write-queue-bytes) must be at least max_envelope_bytes (" +
                                       std::to_string(config.max_envelope_bytes) + "), or no maximal envelope "
                                       "could ever be queued (got " + std::to_string(config.write_queue_bytes) + ")");
  }
  AGENT_MESH_TRY(require_rate("rate_limit", config.rate_limit, 0));
  // A bucket smaller than one message could never let one through.
  AGENT_MESH_TRY(require_rate("rate_burst", config.rate_burst, 1));
  AGENT_MESH_TRY(require_rate("ip_connect_rate", config.ip_connect_rate, 0));
  AGENT_MESH_TRY(require_rate("ip_auth_failures", config.ip_auth_failures, 0));
  AGENT_MESH_TRY(require_range("buffer_max_messages", config.buffer_max_messages, 1, kMaxInteger));
  AGENT_MESH_TRY(require_range("buffer_max_bytes", config.buffer_max_bytes, 1, kMaxInteger));
  AGENT_MESH_TRY(require_range("buffer_ttl_s", config.buffer_ttl_s, 1, kMaxSeconds));
  AGENT_MESH_TRY(require_range("store_max_bytes", config.store_max_bytes, 1, kMaxInteger));
  AGENT_MESH_TRY(require_range("drain_timeout_s", config.drain_timeout_s, 0, kMaxSeconds));
  static constexpr std::array<std::string_view, 7> kLevels{"trace", "debug", "info", "warn", "error", "critical", "off"};
  if (std::find(kLevels.begin(), kLevels.end(), config.log_level) == kLevels.end()) {
    return fail(Errc::bad_request,
                "log_level (--log-level) must be one of trace, debug, info, warn, error, critical, off");
  }
  if (!config.registry_url.empty() && !is_url_with_scheme(config.registry_url, {"http://", "https://"})) {
    return fail(Errc::bad_request, "registry_url (--registry-url) must be an http:// or https:// URL");
  }
  if (!config.registry_url.empty() && config.registry_token_file.empty()) {
    return fail(Errc::bad_request, "registry_token_file (--registry-token-file) is required with registry_url: "
                                   "the relay authenticates to the registry with that token");
  }
  if (config.registry_url.empty() && !config.registry_token_file.empty()) {
    return fail(Errc::bad_request, "registry_token_file (--registry-token-file) is set without registry_url");
  }
  if (!config.cluster_nats_url.empty() && !is_url_with_scheme(config.cluster_nats_url, {"nats://", "tls://"})) {
    return fail(Errc::bad_request, "cluster.nats_url (--cluster-nats-url) must be a nats:// or tls:// URL");
  }
  if (config.data_dir.empty()) return fail(Errc::bad_request, "data_dir (--data-dir) must not be empty");
  return {};
}

Result<LoadedConfig> load_relay_config(int argc, const char* const* argv) {
  return load_relay_config(argc, argv, CommandLine{});
}

Result<LoadedConfig> load_relay_config(int argc, const char* const* argv, const CommandLine& command) {
  CLI::App app{command.description.empty() ? std::string(kDescription) : command.description, command.program};
  app.footer(command.examples.empty() ? std::string(kExamples) : command.examples);
  app.set_version_flag("--version", command.program + " " + std::string(kVersion));
  app.get_formatter()->column_width(34);

  // The program's own flags, before the relay's so --help lists them first.
  struct ExtraValue {
    std::string text;
    std::vector<std::string> list;
    bool flag = false;
    CLI::Option* option = nullptr;
  };
  std::vector<ExtraValue> extra_values(command.extra.size());  // sized once: CLI11 keeps pointers
  for (std::size_t i = 0; i < command.extra.size(); ++i) {
    const ExtraFlag& flag = command.extra[i];
    const std::string name = "--" + flag.name;
    switch (flag.kind) {
      case ExtraFlag::Kind::text:
        extra_values[i].option = app.add_option(name, extra_values[i].text, flag.help)
                                     ->type_name(flag.value_name)
                                     ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
        break;
      case ExtraFlag::Kind::list:
        extra_values[i].option = app.add_option(name, extra_values[i].list, flag.help)->type_name(flag.value_name);
        break;
      case ExtraFlag::Kind::boolean:
        extra_values[i].option = app.add_flag(name, extra_values[i].flag, flag.help);
        break;
    }
  }

  std::string config_path;
  app.add_option("--config", config_path, "TOML file of settings; flags override it")->type_name("FILE");

  std::vector<FlagValue> flags(std::size(kSettings));  // sized once: CLI11 keeps pointers into it
  for (std::size_t i = 0; i < std::size(kSettings); ++i) {
    const Setting& setting = kSettings[i];
    CLI::Option* option = nullptr;
    if (setting.kind == Kind::string_list) {
      option = app.add_option(flag_name(setting.key), flags[i].list, std::string(setting.help))->delimiter(',');
    } else {
      option = app.add_option(flag_name(setting.key), flags[i].text, std::string(setting.help))
                   ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    }
    option->type_name(std::string(setting.value_name.empty() ? type_label(setting.kind) : setting.value_name));
    if (const std::string shown = default_text(setting); !shown.empty()) option->default_str(shown);
    flags[i].option = option;
  }

  LoadedConfig loaded;
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    loaded.exit_now = true;
    loaded.exit_text = app.help();
    return loaded;
  } catch (const CLI::CallForAllHelp&) {
    loaded.exit_now = true;
    loaded.exit_text = app.help("", CLI::AppFormatMode::All);
    return loaded;
  } catch (const CLI::CallForVersion& version) {
    loaded.exit_now = true;
    loaded.exit_text = std::string(version.what()) + "\n";
    return loaded;
  } catch (const CLI::ParseError& error) {
    return fail(Errc::bad_request, std::string(error.what()) + " (see --help)");
  }

  for (std::size_t i = 0; i < command.extra.size(); ++i) {
    if (extra_values[i].option->count() == 0) continue;
    auto& values = loaded.extra[command.extra[i].name];
    switch (command.extra[i].kind) {
      case ExtraFlag::Kind::text: values.push_back(extra_values[i].text); break;
      case ExtraFlag::Kind::list: values = extra_values[i].list; break;
      case ExtraFlag::Kind::boolean: values.push_back("true"); break;
    }
  }

  RawSettings raw;
  if (!config_path.empty()) AGENT_MESH_TRY(read_toml_file(config_path, raw));
  for (std::size_t i = 0; i < std::size(kSettings); ++i) {
    if (flags[i].option->count() == 0) continue;
    auto value = raw_from_flag(kSettings[i], flags[i].text, flags[i].list);
    if (!value) return std::move(value).error();
    raw[kSettings[i].key] = std::move(value).value();
  }

  RelayConfig& config = loaded.config;
  config.listen = ListenAddress::parse(defaults::listen).value();
  config.config_file = config_path;
  for (const Setting& setting : kSettings) {
    if (const auto found = raw.find(setting.key); found != raw.end()) {
      AGENT_MESH_TRY(setting.assign(config, found->second));
    }
  }
  AGENT_MESH_TRY(apply_default_data_dir(config));
  AGENT_MESH_TRY(validate(config));
  return loaded;
}

}  // namespace agent_mesh::relay
