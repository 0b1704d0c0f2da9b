#include "ctl/context.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <boost/json/serialize.hpp>
#include <condition_variable>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <mutex>
#include <thread>

namespace agent_mesh::ctl {

void fail_command(std::string message, std::string hint, int exit_status) {
  throw CommandFailure(std::move(message), std::move(hint), exit_status);
}

Context::Context(std::ostream& out, std::ostream& err, std::istream& in, bool stderr_is_terminal)
    : out_(out), err_(err), in_(in), stderr_is_terminal_(stderr_is_terminal), mesh_home_(default_mesh_home()) {}

void Context::load_config() {
  auto loaded = ConfigFile::load(mesh_home_ / "config.toml");
  if (!loaded) {
    fail_command(loaded.error().message,
                 "fix or remove the file (`agent-meshctl login` and `register` write a new one), or point "
                 "MESH_HOME at another directory");
  }
  config_ = std::move(loaded).value();
}

void Context::save_config() {
  if (auto saved = config_.save(); !saved) {
    fail_command("cannot save the configuration: " + saved.error().message,
                 "check that " + mesh_home_.string() + " is writable (or set MESH_HOME)");
  }
}

namespace {

std::string flag_value(const GlobalFlags& flags, std::string_view key) {
  if (key == "cp_url") return flags.cp_url;
  if (key == "relay_url") return flags.relay_url;
  if (key == "token") return flags.token;
  if (key == "key_file") return flags.key_file;
  if (key == "agent_id") return flags.agent_id;
  if (key == "meshd_socket") return flags.meshd_socket;
  return {};
}

std::string flag_name(std::string_view key) {
  std::string name = "--";
  for (const char c : key) name.push_back(c == '_' ? '-' : c);
  return name;
}

}  // namespace

std::optional<std::string> Context::setting(std::string_view key) const {
  if (auto flag = flag_value(flags, key); !flag.empty()) return flag;
  if (const auto name = environment_name(key); !name.empty()) {
    if (const char* value = std::getenv(name.c_str()); value != nullptr && *value != '\0') return std::string(value);
  }
  return config_.get(key);
}

std::string Context::source_of(std::string_view key) const {
  if (!flag_value(flags, key).empty()) return flag_name(key);
  if (const auto name = environment_name(key); !name.empty()) {
    if (const char* value = std::getenv(name.c_str()); value != nullptr && *value != '\0') return name;
  }
  if (config_.get(key)) return std::string(key) + " in " + config_.path().string();
  return "the default";
}

std::string Context::cp_url() const {
  std::string url = setting("cp_url").value_or(std::string(kDefaultCpUrl));
  if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
    fail_command("the registry URL `" + url + "` (from " + source_of("cp_url") + ") is not an http:// or https:// URL",
                 "set it to the registry's base URL, e.g. --cp-url http://127.0.0.1:8080");
  }
  while (url.size() > 8 && url.back() == '/') url.pop_back();
  return url;
}

std::string Context::require_token() const {
  if (auto token = setting("token")) return *token;
  fail_command("no API token is configured",
               "log in with `agent-meshctl login` (or `agent-meshctl login --token-stdin < token-file`), or set "
               "MESH_TOKEN");
}

std::optional<KeyPair> Context::identity() const {
  // A key file named by flag or environment wins over anything in the file.
  const char* environment_key_file = std::getenv("MESH_KEY_FILE");
  const bool explicit_file =
      !flags.key_file.empty() || (environment_key_file != nullptr && *environment_key_file != '\0');
  std::optional<std::string> key_file = explicit_file ? setting("key_file") : std::nullopt;
  if (!key_file) {
    if (auto secret = config_.get("secret_key")) {
      auto pair = KeyPair::from_key_file_text(*secret);
      if (!pair) {
        fail_command("secret_key in " + config_.path().string() + " is not a key: " + pair.error().message,
                     "replace it with the `Secret Key` printed by `agent-meshctl keygen`");
      }
      return std::move(pair).value();
    }
    key_file = config_.get("key_file");
  }
  if (!key_file) return std::nullopt;
  auto pair = KeyPair::load(*key_file);
  if (!pair) {
    fail_command(pair.error().message, "check " + source_of("key_file") +
                                           " (a key file holds the 43-character secret key, mode 0600)");
  }
  return std::move(pair).value();
}

KeyPair Context::require_identity() const {
  if (auto key = identity()) return std::move(*key);
  fail_command("no agent key is configured",
               "create one with `agent-meshctl keygen --save` or `agent-meshctl register`, or pass --key-file");
}

std::optional<AgentId> Context::agent_id() const {
  if (auto text = setting("agent_id")) {
    auto id = AgentId::parse(*text);
    if (!id) {
      fail_command("agent_id from " + source_of("agent_id") + " is not an agent ID: " + id.error().message,
                   "an agent ID is 43 base64url characters, as `agent-meshctl keygen` prints it");
    }
    return std::move(id).value();
  }
  if (auto key = identity()) return key->agent_id();
  return std::nullopt;
}

std::filesystem::path Context::key_path(const AgentId& agent) const { return mesh_home_ / "keys" / (agent.str() + ".key"); }

std::optional<std::filesystem::path> Context::meshd_socket() const {
  if (auto socket = setting("meshd_socket")) return std::filesystem::path(*socket);
  if (auto id = agent_id()) return mesh_home_ / ("meshd-" + id->str() + ".sock");
  return std::nullopt;
}

std::string Context::relay_url() const {
  if (auto url = setting("relay_url")) return *url;
  auto info = registry()->info();
  if (!info) fail_registry(info.error(), false);
  if (const auto* url = info->if_contains("relay_url"); url != nullptr && url->is_string() && !url->as_string().empty()) {
    return std::string(url->as_string());
  }
  fail_command("the registry at " + cp_url() + " does not name a relay (GET /api/v1/info has no relay_url)",
               "give the relay's WebSocket URL with --relay-url or MESH_RELAY_URL");
}

std::unique_ptr<RegistryClient> Context::registry(std::optional<KeyPair> key) const {
  return std::make_unique<RegistryClient>(cp_url(), key ? std::move(*key) : KeyPair::generate());
}

boost::json::value Context::call_registry(std::string_view method, std::string_view target,
                                          std::optional<boost::json::value> body, RegistryAuth auth,
                                          std::string_view not_found_hint) const {
  std::optional<std::string> token;
  std::optional<KeyPair> key;
  switch (auth) {
    case RegistryAuth::none: break;
    case RegistryAuth::token: token = require_token(); break;
    case RegistryAuth::agent: key = require_identity(); break;
    case RegistryAuth::token_or_agent:
      token = setting("token");
      if (!token) {
        key = identity();
        if (!key) {
          fail_command("neither an API token nor an agent key is configured",
                       "log in with `agent-meshctl login` (or set MESH_TOKEN), or register an agent with "
                       "`agent-meshctl register`");
        }
      }
      break;
  }
  auto client = registry(std::move(key));
  auto answer = token                       ? client->call(method, target, std::move(body), std::string_view(*token))
                : auth == RegistryAuth::none ? client->call_anonymous(method, target, std::move(body))
                                             : client->call(method, target, std::move(body));
  if (!answer) fail_registry(answer.error(), token.has_value(), not_found_hint);
  return std::move(answer).value();
}

void Context::fail_registry(const Error& error, bool used_token, std::string_view not_found_hint) const {
  const std::string described = error.describe();
  switch (error.code) {
    case Errc::unreachable:
    case Errc::timeout:
      fail_command(described, "is the registry running? meshctl uses " + cp_url() + " (from " + source_of("cp_url") +
                                  "); start it with `agent-mesh-server`, or set --cp-url / MESH_CP_URL");
    case Errc::unauthorized:
      if (used_token) {
        fail_command(described, "the registry refused the API token (" + source_of("token") +
                                    "): log in again with `agent-meshctl login`");
      }
      fail_command(described,
                   "the registry does not accept this agent's signature: register the agent first "
                   "(`agent-meshctl register`), or log in (`agent-meshctl login`) to act with your API token");
    case Errc::forbidden:
      fail_command(described, "you may only manage agents, rules and keys of groups you own or administer "
                              "(`agent-meshctl group list` shows your role)");
    case Errc::not_found:
      fail_command(described, not_found_hint.empty() ? "check the ID (`agent-meshctl discover` lists your agents)"
                                                      : std::string(not_found_hint));
    case Errc::rate_limited: fail_command(described, "the registry is rate limiting: wait a moment and try again");
    case Errc::conflict: fail_command(described, "the registry refused a conflicting change: list the current state and retry");
    case Errc::bad_request:
    case Errc::too_large:
      fail_command(described, "check the arguments (`agent-meshctl <command> --help` shows an example)");
    default: fail_command(described, "try again; if it persists, check the registry's log");
  }
}

void Context::print_json(const boost::json::value& value) const { out_ << boost::json::serialize(value) << "\n"; }

void Context::print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) const {
  std::vector<std::size_t> widths(header.size(), 0);
  for (std::size_t i = 0; i < header.size(); ++i) widths[i] = header[i].size();
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size() && i < widths.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  const auto print_row = [&](const std::vector<std::string>& row) {
    std::string line;
    for (std::size_t i = 0; i < widths.size(); ++i) {
      const std::string& text = i < row.size() ? row[i] : std::string();
      line += text;
      if (i + 1 < widths.size()) line += std::string(widths[i] - text.size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out_ << line << "\n";
  };
  print_row(header);
  for (const auto& row : rows) print_row(row);
}

// ---- Spinner ----

struct Spinner::State {
  std::mutex mutex;
  std::condition_variable wake;
  std::string text;
  bool stop = false;
  std::thread thread;
};

Spinner::Spinner(const Context& context, std::string text) {
  if (!context.stderr_is_terminal()) return;
  state_ = std::make_shared<State>();
  state_->text = std::move(text);
  state_->thread = std::thread([state = state_, &err = context.err()] {
    static constexpr const char* kFrames[] = {"|", "/", "-", "\\"};
    std::size_t frame = 0;
    std::unique_lock lock(state->mutex);
    while (!state->stop) {
      err << "\r\x1b[2K" << kFrames[frame++ % 4] << " " << state->text << std::flush;
      // Redraw period of the spinner: not synchronisation, just animation.
      state->wake.wait_for(lock, std::chrono::milliseconds(120));
    }
    err << "\r\x1b[2K" << std::flush;
  });
}

Spinner::~Spinner() {
  if (!state_) return;
  {
    const std::lock_guard lock(state_->mutex);
    state_->stop = true;
  }
  state_->wake.notify_all();
  state_->thread.join();
}

void Spinner::set_text(std::string text) {
  if (!state_) return;
  const std::lock_guard lock(state_->mutex);
  state_->text = std::move(text);
}

// ---- Interrupts ----

namespace {
// SIGUSR1 is the wake-up call between meshctl's own threads (Interrupts::wake); never sent by users.
sigset_t interrupt_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  return set;
}
}  // namespace

Interrupts::Interrupts() : owner_(pthread_self()) {
  const sigset_t set = interrupt_signals();
  pthread_sigmask(SIG_BLOCK, &set, &previous_);
}

Interrupts::~Interrupts() {
  // A signal that arrived and was not consumed would fire on unblocking: take it first.
  const sigset_t set = interrupt_signals();
  const timespec zero{0, 0};
  while (sigtimedwait(&set, nullptr, &zero) > 0) {
  }
  pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
}

Interrupts::Wait Interrupts::wait(std::chrono::milliseconds timeout) {
  const sigset_t set = interrupt_signals();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const auto left = std::max(std::chrono::nanoseconds(0), deadline - std::chrono::steady_clock::now());
    const timespec wait{static_cast<time_t>(left.count() / 1'000'000'000), static_cast<long>(left.count() % 1'000'000'000)};
    const int signal = sigtimedwait(&set, nullptr, &wait);
    if (signal == SIGINT || signal == SIGTERM) {
      interrupted_ = true;
      return Wait::interrupted;
    }
    if (signal == SIGUSR1) return Wait::woken;
    if (signal < 0 && errno == EINTR) continue;
    return Wait::timeout;  // EAGAIN: the timeout passed
  }
}

void Interrupts::wake() const { pthread_kill(owner_, SIGUSR1); }

// ---- small helpers ----

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string rfc3339(std::int64_t ms) {
  const auto seconds = static_cast<std::time_t>(ms / 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

std::string percent_encode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
        c == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 15]);
    }
  }
  return out;
}

std::string query_string(const std::vector<std::pair<std::string, std::string>>& parameters) {
  std::string out;
  for (const auto& [name, value] : parameters) {
    if (!out.empty()) out.push_back('&');
    out += percent_encode(name) + "=" + percent_encode(value);
  }
  return out;
}

std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> items;
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto comma = text.find(',', start);
    const auto end = comma == std::string_view::npos ? text.size() : comma;
    std::string_view item = text.substr(start, end - start);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!item.empty()) items.emplace_back(item);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return items;
}

std::string cell(const boost::json::value* value) {
  if (value == nullptr || value->is_null()) return "-";
  if (value->is_string()) return std::string(value->as_string());
  return boost::json::serialize(*value);
}

}  // namespace agent_mesh::ctl
