#include "meshd/meshd_config.hpp"

#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <boost/json/serialize.hpp>
#include <boost/url/parse.hpp>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <system_error>
#include <toml++/toml.h>
#include <utility>
#include <variant>

#include "agent_mesh/acl.hpp"
#include "agent_mesh/json.hpp"
#include "agent_mesh/version.hpp"
#include "meshd/local_agent.hpp"

namespace agent_mesh::meshd {
namespace {

// A config file holds a few URLs and paths plus possibly an inline ACL (at most
// limits::max_acl_file_bytes as JSON); 8 MiB leaves room for TOML's and JSON's whitespace.
constexpr std::size_t kMaxConfigFileBytes = 8 * 1024 * 1024;

// ---- Settings ----

enum class Kind : std::uint8_t { text, path, list, acl };

struct Setting {
  std::string_view key;  // config key; the flag is "--" + key with '_' → '-'
  Kind kind;
  std::string_view value_name;
  std::string_view help;
};

constexpr Setting kSettings[] = {
    {"relay", Kind::list, "URL",
     "relay WebSocket URL, ws:// or wss:// (repeatable: a fail-over list, tried in order), "
     "e.g. ws://127.0.0.1:8080/relay/ws"},
    {"local_agent", Kind::text, "URL",
     "the local agent's HTTP server that incoming requests are POSTed to, e.g. http://127.0.0.1:9002 "
     "(without it every request is answered unknown_capability)"},
    {"secret_key", Kind::text, "KEY",
     "the agent's secret key (43 base64url characters); visible to other local users, prefer --key-file"},
    {"key_file", Kind::path, "FILE", "file holding the agent's secret key (mode 0600), e.g. ~/.mesh/alice.key"},
    {"cp_url", Kind::text, "URL",
     "registry (control plane) URL, e.g. http://127.0.0.1:8080: ACL sync, revocations, discovery"},
    {"acl", Kind::acl, "FILE",
     "ACL file {\"default_deny\": true, \"rules\": [...]}, watched for changes (a config file may hold "
     "the object inline); none: every request is denied"},
    {"socket", Kind::path, "PATH", "Local API Unix socket (default: $MESH_HOME/meshd-<agent_id>.sock)"},
    {"plaintext_peer", Kind::list, "ID",
     "agent ID exchanged with in signed plaintext, without Noise (repeatable; both ends must say so)"},
    {"relay_id", Kind::text, "ID", "the relay_id the relay must present, when it differs from the URL dialled"},
    {"log_level", Kind::text, "LEVEL", "debug, info, warn or error (default: info)"},
};

const Setting* find_setting(std::string_view key) {
  for (const Setting& setting : kSettings) {
    if (setting.key == key) return &setting;
  }
  return nullptr;
}

std::string flag_name(std::string_view key) {
  std::string flag = "--";
  for (const char c : key) flag += c == '_' ? '-' : c;
  return flag;
}

std::string known_keys() {
  std::string out;
  for (const Setting& setting : kSettings) {
    if (!out.empty()) out += ", ";
    out += setting.key;
  }
  return out;
}

// One setting's value and where it came from ("--relay" or "relay in /etc/meshd.toml"), so errors
// name what the user wrote.
struct RawValue {
  std::variant<std::string, std::vector<std::string>> value;
  bool inline_acl = false;  // `acl` given as an object: value holds its JSON text
  bool from_flag = false;
  std::string where;
};

using RawSettings = std::map<std::string, RawValue, std::less<>>;

// ---- Paths ----

std::string home_directory() {
  const char* home = std::getenv("HOME");
  return home != nullptr ? std::string(home) : std::string();
}

// A path written in a config file: "~/" expands to $HOME, relative paths are relative to the file.
std::string resolve_file_path(const std::string& text, const std::filesystem::path& config_dir) {
  if (text == "~" || text.starts_with("~/")) {
    const std::string home = home_directory();
    if (!home.empty()) return home + text.substr(1);
  }
  const std::filesystem::path path(text);
  if (path.is_absolute() || text.empty()) return text;
  return (config_dir / path).lexically_normal().string();
}

// ---- Config files ----

Result<std::string> read_config_text(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return fail(Errc::not_found, "--config: " + path.string() + " does not exist");
  }
  if (!std::filesystem::is_regular_file(path, ec)) {
    return fail(Errc::bad_request, "--config: " + path.string() + " is not a regular file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(Errc::internal, "--config: cannot open " + path.string() + ": " + std::strerror(errno));
  // Read through a bounded buffer rather than trusting the size stat(2) reported a moment ago.
  std::string text;
  std::array<char, 64 * 1024> buffer{};
  while (text.size() <= kMaxConfigFileBytes && in.read(buffer.data(), buffer.size()).gcount() > 0) {
    text.append(buffer.data(), static_cast<std::size_t>(in.gcount()));
  }
  if (text.size() > kMaxConfigFileBytes) {
    return fail(Errc::too_large, "--config: " + path.string() + " is larger than " +
                                     std::to_string(kMaxConfigFileBytes) + " bytes");
  }
  return text;
}

// The value of one key, as a string or an array of strings (a single string for a list key).
Status take_value(const Setting& setting, const std::string& where, std::variant<std::string, std::vector<std::string>>&& value,
                  const std::filesystem::path& config_dir, RawSettings& out) {
  RawValue raw;
  raw.where = where;
  if (setting.kind == Kind::list) {
    if (auto* one = std::get_if<std::string>(&value)) {
      raw.value = std::vector<std::string>{std::move(*one)};
    } else {
      raw.value = std::move(value);
    }
  } else {
    auto* text = std::get_if<std::string>(&value);
    if (text == nullptr) return fail(Errc::bad_request, where + " must be a string, not an array");
    if (setting.kind == Kind::path || setting.kind == Kind::acl) *text = resolve_file_path(*text, config_dir);
    raw.value = std::move(*text);
  }
  out[std::string(setting.key)] = std::move(raw);
  return {};
}

std::string where_in_file(std::string_view key, const std::filesystem::path& file) {
  return std::string(key) + " in " + file.string();
}

Status unknown_key(std::string_view key, const std::filesystem::path& file) {
  if (key == "config") {
    return fail(Errc::bad_request, "config key \"config\" in " + file.string() +
                                       ": a config file cannot include another one");
  }
  return fail(Errc::bad_request, "unknown config key \"" + std::string(key) + "\" in " + file.string() +
                                     " (known keys: " + known_keys() + ")");
}

// -- JSON --

Status read_json_config(const std::filesystem::path& file, std::string_view text, RawSettings& out) {
  json::ParseOptions options;
  options.max_bytes = kMaxConfigFileBytes;
  auto parsed = json::parse_ijson(text, options);
  if (!parsed) return fail(Errc::bad_request, file.string() + ": " + parsed.error().message);
  const auto* object = parsed->if_object();
  if (object == nullptr) return fail(Errc::bad_request, file.string() + ": must hold a JSON object of settings");
  const std::filesystem::path dir = file.parent_path();
  for (const auto& [name, node] : *object) {
    const std::string_view key(name.data(), name.size());
    const Setting* setting = find_setting(key);
    if (setting == nullptr) return unknown_key(key, file);
    const std::string where = where_in_file(key, file);
    if (setting->kind == Kind::acl && node.is_object()) {
      auto policy = AclPolicy::from_json(boost::json::serialize(node));
      if (!policy) return fail(Errc::bad_request, where + ": " + policy.error().message);
      RawValue raw;
      raw.value = boost::json::serialize(node);
      raw.inline_acl = true;
      raw.where = where;
      out[std::string(key)] = std::move(raw);
      continue;
    }
    if (const auto* text_value = node.if_string()) {
      AGENT_MESH_TRY(take_value(*setting, where, std::string(*text_value), dir, out));
      continue;
    }
    if (const auto* array = node.if_array(); array != nullptr && setting->kind == Kind::list) {
      std::vector<std::string> items;
      for (const auto& item : *array) {
        const auto* item_text = item.if_string();
        if (item_text == nullptr) return fail(Errc::bad_request, where + " must be an array of strings");
        items.emplace_back(*item_text);
      }
      AGENT_MESH_TRY(take_value(*setting, where, std::move(items), dir, out));
      continue;
    }
    std::string expected = setting->kind == Kind::list  ? "a string or an array of strings"
                           : setting->kind == Kind::acl ? "a file path or an ACL object"
                                                        : "a string";
    return fail(Errc::bad_request, where + " must be " + expected);
  }
  return {};
}

// -- TOML --

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

// An inline ACL written as TOML ([acl] with [[acl.rules]]) as the JSON value it stands for.
Result<boost::json::value> toml_to_json(const toml::node& node, const std::string& where) {
  if (const auto* table = node.as_table()) {
    boost::json::object object;
    for (const auto& [name, child] : *table) {
      auto value = toml_to_json(child, where + "." + std::string(name.str()));
      if (!value) return std::move(value).error();
      object[name.str()] = std::move(value).value();
    }
    return boost::json::value(std::move(object));
  }
  if (const auto* array = node.as_array()) {
    boost::json::array out;
    std::size_t index = 0;
    for (const auto& child : *array) {
      auto value = toml_to_json(child, where + "[" + std::to_string(index++) + "]");
      if (!value) return std::move(value).error();
      out.push_back(std::move(value).value());
    }
    return boost::json::value(std::move(out));
  }
  if (const auto* text = node.as_string()) return boost::json::value(text->get());
  if (const auto* integer = node.as_integer()) return boost::json::value(integer->get());
  if (const auto* number = node.as_floating_point()) return boost::json::value(number->get());
  if (const auto* boolean = node.as_boolean()) return boost::json::value(boolean->get());
  return fail(Errc::bad_request, where + ": " + std::string(toml_type_name(node)) + " has no JSON equivalent");
}

Status read_toml_config(const std::filesystem::path& file, std::string_view text, RawSettings& out) {
  toml::table table;
  try {
    table = toml::parse(text, file.string());
  } catch (const toml::parse_error& error) {
    return fail(Errc::bad_request, file.string() + ":" + std::to_string(error.source().begin.line) + ":" +
                                       std::to_string(error.source().begin.column) + ": " +
                                       std::string(error.description()));
  }
  const std::filesystem::path dir = file.parent_path();
  for (const auto& [name, node] : table) {
    const std::string key(name.str());
    const Setting* setting = find_setting(key);
    if (setting == nullptr) return unknown_key(key, file);
    const std::string where = where_in_file(key, file);
    if (setting->kind == Kind::acl && node.is_table()) {
      auto value = toml_to_json(node, where);
      if (!value) return std::move(value).error();
      const std::string json_text = boost::json::serialize(*value);
      auto policy = AclPolicy::from_json(json_text);
      if (!policy) return fail(Errc::bad_request, where + ": " + policy.error().message);
      RawValue raw;
      raw.value = json_text;
      raw.inline_acl = true;
      raw.where = where;
      out[key] = std::move(raw);
      continue;
    }
    if (const auto* text_value = node.as_string()) {
      AGENT_MESH_TRY(take_value(*setting, where, std::string(text_value->get()), dir, out));
      continue;
    }
    if (const auto* array = node.as_array(); array != nullptr && setting->kind == Kind::list) {
      std::vector<std::string> items;
      for (const auto& item : *array) {
        const auto* item_text = item.as_string();
        if (item_text == nullptr) return fail(Errc::bad_request, where + " must be an array of strings");
        items.push_back(item_text->get());
      }
      AGENT_MESH_TRY(take_value(*setting, where, std::move(items), dir, out));
      continue;
    }
    std::string expected = setting->kind == Kind::list  ? "a string or an array of strings"
                           : setting->kind == Kind::acl ? "a file path or an [acl] table"
                                                        : "a string";
    return fail(Errc::bad_request, where + " must be " + expected + ", not " + std::string(toml_type_name(node)));
  }
  return {};
}

Status read_config_file(const std::filesystem::path& file, RawSettings& out) {
  const std::string extension = file.extension().string();
  if (extension != ".json" && extension != ".toml") {
    return fail(Errc::bad_request, "--config: " + file.string() +
                                       ": the file name must end in .json or .toml (that says how to read it)");
  }
  auto text = read_config_text(file);
  if (!text) return std::move(text).error();
  if (extension == ".json") return read_json_config(file, *text, out);
  return read_toml_config(file, *text, out);
}

// ---- Validation ----

std::string quote_value(std::string_view text) {
  // Values quoted in messages are cut, so a pasted blob does not flood the terminal.
  constexpr std::size_t kMaxQuoted = 200;
  std::string out = "\"";
  out += text.substr(0, kMaxQuoted);
  if (text.size() > kMaxQuoted) out += "...";
  out += "\"";
  return out;
}

Result<std::string> check_relay_url(const std::string& url, const std::string& where) {
  const auto bad = [&](std::string_view why) { return fail(Errc::bad_request, where + ": " + std::string(why)); };
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) return bad("must be a ws:// or wss:// URL, got " + quote_value(url));
  const std::string scheme(parsed->scheme());
  if (scheme == "http" || scheme == "https") {
    // The relay URL is also the relay_id the client verifies (protocol §6), so meshd does not
    // rewrite it: it says what to write instead.
    std::string suggestion = (scheme == "https" ? "wss://" : "ws://") + std::string(parsed->encoded_host_and_port());
    const std::string path(parsed->encoded_path());
    suggestion += (path.empty() || path == "/") ? "/relay/ws" : path;
    return bad("must be a ws:// or wss:// URL, got " + quote_value(url) + " (did you mean " + suggestion +
               "? agent-mesh-server serves its relay at /relay/ws)");
  }
  if (scheme != "ws" && scheme != "wss") return bad("must be a ws:// or wss:// URL, got " + quote_value(url));
  if (!parsed->has_authority() || parsed->encoded_host().empty()) return bad("has no host: " + quote_value(url));
  if (parsed->has_userinfo()) return bad("must not contain user info: " + quote_value(url));
  if (parsed->has_fragment()) return bad("must not contain a #fragment: " + quote_value(url));
  return url;
}

Result<std::string> check_http_url(const std::string& url, const std::string& where) {
  const auto bad = [&](std::string_view why) { return fail(Errc::bad_request, where + ": " + std::string(why)); };
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) return bad("must be an http:// or https:// URL, got " + quote_value(url));
  const std::string scheme(parsed->scheme());
  if (scheme != "http" && scheme != "https") return bad("must be an http:// or https:// URL, got " + quote_value(url));
  if (!parsed->has_authority() || parsed->encoded_host().empty()) return bad("has no host: " + quote_value(url));
  if (parsed->has_userinfo()) return bad("must not contain user info: " + quote_value(url));
  if (parsed->has_query() || parsed->has_fragment()) return bad("must not contain a query or fragment: " + quote_value(url));
  std::string out = url;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

// The --secret-key text checked without ever quoting it.
Status check_secret_key(const std::string& text, const std::string& where) {
  auto pair = KeyPair::from_key_file_text(text);
  if (pair) return {};
  std::string message = pair.error().message;
  if (message.starts_with("key file ")) message = "the key " + message.substr(std::strlen("key file "));
  return fail(Errc::bad_request, where + ": not a secret key: " + message);
}

const RawValue* find(const RawSettings& raw, std::string_view key) {
  const auto it = raw.find(key);
  return it == raw.end() ? nullptr : &it->second;
}

const std::string& text_of(const RawValue& value) { return std::get<std::string>(value.value); }
const std::vector<std::string>& list_of(const RawValue& value) { return std::get<std::vector<std::string>>(value.value); }

bool file_readable_by_others(const std::filesystem::path& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return false;
  return (info.st_mode & (S_IRGRP | S_IROTH)) != 0;
}

Result<std::filesystem::path> mesh_home_directory() {
  if (const char* mesh_home = std::getenv("MESH_HOME"); mesh_home != nullptr && *mesh_home != '\0') {
    return std::filesystem::path(mesh_home);
  }
  const std::string home = home_directory();
  if (!home.empty()) return std::filesystem::path(home) / ".mesh";
  return fail(Errc::bad_request, "neither MESH_HOME nor HOME is set");
}

Status build(const RawSettings& raw, const std::filesystem::path& config_file, LoadedMeshdConfig& loaded) {
  MeshdConfig& config = loaded.config;
  config.config_file = config_file;

  // Relays.
  if (const RawValue* relays = find(raw, "relay")) {
    for (const std::string& url : list_of(*relays)) {
      auto checked = check_relay_url(url, relays->where);
      if (!checked) return std::move(checked).error();
      if (std::find(config.relay_urls.begin(), config.relay_urls.end(), *checked) == config.relay_urls.end()) {
        config.relay_urls.push_back(std::move(checked).value());
      }
    }
  }
  if (config.relay_urls.empty()) {
    return fail(Errc::bad_request,
                "--relay: at least one relay URL is required, e.g. --relay ws://127.0.0.1:8080/relay/ws");
  }

  if (const RawValue* local = find(raw, "local_agent")) {
    if (auto valid = LocalAgentForwarder::validate_url(text_of(*local)); !valid) {
      std::string message = valid.error().message;
      if (!local->from_flag) message = local->where + ": " + message;
      return fail(Errc::bad_request, message);
    }
    config.local_agent_url = text_of(*local);
  }

  // The key: exactly one of secret_key and key_file.
  const RawValue* secret = find(raw, "secret_key");
  const RawValue* key_file = find(raw, "key_file");
  if (secret != nullptr && key_file != nullptr) {
    return fail(Errc::bad_request, "--secret-key and --key-file: give exactly one of them (" + secret->where +
                                       ", " + key_file->where + ")");
  }
  if (secret == nullptr && key_file == nullptr) {
    return fail(Errc::bad_request,
                "--secret-key or --key-file is required: meshd needs the agent's secret key, e.g. --key-file "
                "~/.mesh/agent.key (agent-meshctl keygen makes one)");
  }
  if (secret != nullptr) {
    AGENT_MESH_TRY(check_secret_key(text_of(*secret), secret->where));
    config.secret_key = text_of(*secret);
    if (secret->from_flag) {
      loaded.warnings.emplace_back(
          "warning: --secret-key on the command line is visible to other local users (ps, /proc/<pid>/cmdline; "
          "meshd blanks it once started, but not before); prefer --key-file with a file of mode 0600");
    } else if (file_readable_by_others(config_file)) {
      loaded.warnings.push_back("warning: " + config_file.string() +
                                " holds secret_key but other users may read it; run chmod 600 " + config_file.string());
    }
  } else {
    if (text_of(*key_file).empty()) return fail(Errc::bad_request, key_file->where + ": must not be empty");
    config.key_file = text_of(*key_file);
  }

  if (const RawValue* cp = find(raw, "cp_url")) {
    auto checked = check_http_url(text_of(*cp), cp->where);
    if (!checked) return std::move(checked).error();
    config.cp_url = std::move(checked).value();
  }

  if (const RawValue* acl = find(raw, "acl")) {
    if (acl->inline_acl) {
      config.acl.kind = AclSetting::Kind::inline_object;
      config.acl.inline_text = text_of(*acl);
    } else {
      if (text_of(*acl).empty()) return fail(Errc::bad_request, acl->where + ": must not be empty");
      config.acl.kind = AclSetting::Kind::file;
      config.acl.file = text_of(*acl);
    }
  }

  if (const RawValue* socket = find(raw, "socket")) {
    if (text_of(*socket).empty()) return fail(Errc::bad_request, socket->where + ": must not be empty");
    config.socket = text_of(*socket);
  }

  if (const RawValue* peers = find(raw, "plaintext_peer")) {
    for (const std::string& text : list_of(*peers)) {
      auto id = AgentId::parse(text);
      if (!id) {
        return fail(Errc::bad_request,
                    peers->where + ": not an agent ID: " + quote_value(text) + " (" + id.error().message + ")");
      }
      if (std::find(config.plaintext_peers.begin(), config.plaintext_peers.end(), *id) == config.plaintext_peers.end()) {
        config.plaintext_peers.push_back(std::move(id).value());
      }
    }
  }

  if (const RawValue* relay_id = find(raw, "relay_id")) {
    auto checked = check_relay_url(text_of(*relay_id), relay_id->where);
    if (!checked) return std::move(checked).error();
    config.relay_id = std::move(checked).value();
  }

  if (const RawValue* level = find(raw, "log_level")) {
    const auto parsed = parse_log_level(text_of(*level));
    if (!parsed) {
      return fail(Errc::bad_request,
                  level->where + ": must be debug, info, warn or error, got " + quote_value(text_of(*level)));
    }
    config.log_level = *parsed;
  }

  auto mesh_home = mesh_home_directory();
  if (mesh_home) {
    config.mesh_home = std::move(mesh_home).value();
  } else if (config.socket.empty()) {
    return fail(Errc::bad_request, "--socket is required: " + mesh_home.error().message +
                                       " (MESH_HOME locates the default socket)");
  }
  return {};
}

constexpr std::string_view kDescription =
    "agent-meshd: the daemon beside an agent. It keeps the agent's relay connection, checks the ACL on\n"
    "every incoming request and forwards it to the local agent's HTTP server (--local-agent), and\n"
    "offers a Local API on a Unix socket (POST /request, GET /status, GET /agents) for outgoing ones.";

constexpr std::string_view kExamples =
    "Examples:\n"
    "  agent-meshd --relay ws://127.0.0.1:8080/relay/ws --key-file ~/.mesh/bob.key \\\n"
    "      --local-agent http://127.0.0.1:9002 --acl ~/.mesh/acl.json\n"
    "  agent-meshd --relay wss://relay-a.example.com/relay/ws --relay wss://relay-b.example.com/relay/ws \\\n"
    "      --key-file bob.key --cp-url https://mesh.example.com --local-agent http://127.0.0.1:9002\n"
    "  agent-meshd --config meshd.toml --log-level debug      # flags override the file\n"
    "\n"
    "meshd.toml (every key is also a flag, _ -> -; unknown keys are an error; meshd.json alike):\n"
    "  relay = [\"ws://127.0.0.1:8080/relay/ws\"]\n"
    "  key_file = \"bob.key\"                  # relative to this file\n"
    "  local_agent = \"http://127.0.0.1:9002\"\n"
    "  [acl]                                 # or: acl = \"acl.json\"\n"
    "  default_deny = true\n"
    "  [[acl.rules]]\n"
    "  source = \"*\"\n"
    "  target = \"<bob's agent ID>\"\n"
    "  allowed_capabilities = [\"echo\"]\n"
    "\n"
    "MESH_HOME (default ~/.mesh) holds the default socket, $MESH_HOME/meshd-<agent_id>.sock.\n"
    "On start the first line on stdout is `agent <agent_id> socket <path>`.";

}  // namespace

std::optional<LogLevel> parse_log_level(std::string_view text) {
  if (text == "debug") return LogLevel::debug;
  if (text == "info") return LogLevel::info;
  if (text == "warn") return LogLevel::warn;
  if (text == "error") return LogLevel::error;
  return std::nullopt;
}

std::string_view to_string(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
  }
  return "info";
}

std::filesystem::path MeshdConfig::socket_path(const AgentId& agent) const {
  std::filesystem::path path = socket.empty() ? mesh_home / ("meshd-" + agent.str() + ".sock") : socket;
  std::error_code ec;
  if (auto absolute = std::filesystem::absolute(path, ec); !ec) path = absolute.lexically_normal();
  return path;
}

Result<KeyPair> MeshdConfig::load_key() const {
  if (secret_key) {
    auto pair = KeyPair::from_key_file_text(*secret_key);
    if (!pair) return fail(Errc::bad_request, "--secret-key: not a secret key");
    return pair;
  }
  auto pair = KeyPair::load(key_file);
  if (!pair) return fail(pair.error().code, "--key-file: " + pair.error().message);
  return pair;
}

void scrub_secret_arguments(int argc, char** argv) noexcept {
  constexpr std::string_view kFlag = "--secret-key";
  for (int i = 1; i < argc; ++i) {
    char* arg = argv[i];
    if (arg == nullptr) continue;
    const std::string_view text(arg);
    if (text == "--") break;
    if (text == kFlag && i + 1 < argc && argv[i + 1] != nullptr) {
      std::memset(argv[i + 1], 'x', std::strlen(argv[i + 1]));
      ++i;
    } else if (text.starts_with(kFlag) && text.size() > kFlag.size() && text[kFlag.size()] == '=') {
      std::memset(arg + kFlag.size() + 1, 'x', text.size() - kFlag.size() - 1);
    }
  }
}

Result<LoadedMeshdConfig> load_meshd_config(int argc, const char* const* argv) {
  CLI::App app{std::string(kDescription), "agent-meshd"};
  app.footer(std::string(kExamples));
  app.set_version_flag("--version", "agent-meshd " + std::string(kVersion));
  app.get_formatter()->column_width(30);

  std::string config_path;
  app.add_option("--config", config_path, "settings file, .json or .toml (keys: the flags with - -> _); flags override it")
      ->type_name("FILE");

  struct FlagValue {
    std::string text;
    std::vector<std::string> list;
    CLI::Option* option = nullptr;
  };
  std::vector<FlagValue> flags(std::size(kSettings));  // sized once: CLI11 keeps pointers into it
  for (std::size_t i = 0; i < std::size(kSettings); ++i) {
    const Setting& setting = kSettings[i];
    CLI::Option* option = nullptr;
    if (setting.kind == Kind::list) {
      option = app.add_option(flag_name(setting.key), flags[i].list, std::string(setting.help));
    } else {
      option = app.add_option(flag_name(setting.key), flags[i].text, std::string(setting.help))
                   ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    }
    option->type_name(std::string(setting.value_name));
    flags[i].option = option;
  }

  LoadedMeshdConfig loaded;
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

  RawSettings raw;
  if (!config_path.empty()) AGENT_MESH_TRY(read_config_file(config_path, raw));
  // Flags override the file. The key is one setting given two ways: a key flag drops both file keys.
  bool key_flag = false;
  for (std::size_t i = 0; i < std::size(kSettings); ++i) {
    const std::string_view key = kSettings[i].key;
    if ((key == "secret_key" || key == "key_file") && flags[i].option->count() > 0) key_flag = true;
  }
  if (key_flag) {
    raw.erase("secret_key");
    raw.erase("key_file");
  }
  for (std::size_t i = 0; i < std::size(kSettings); ++i) {
    if (flags[i].option->count() == 0) continue;
    const Setting& setting = kSettings[i];
    RawValue value;
    value.from_flag = true;
    value.where = flag_name(setting.key);
    if (setting.kind == Kind::list) {
      value.value = flags[i].list;
    } else {
      value.value = flags[i].text;
    }
    raw[std::string(setting.key)] = std::move(value);
  }
  AGENT_MESH_TRY(build(raw, config_path, loaded));
  return loaded;
}

}  // namespace agent_mesh::meshd
