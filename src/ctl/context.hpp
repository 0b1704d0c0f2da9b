// What every meshctl command shares: the resolved settings (flags > environment > config.toml), the
// identity and token, the registry client, output (a table for people, JSON with --json) and errors
// that say what to do next.
#pragma once

#include <boost/json/value.hpp>
#include <chrono>
#include <pthread.h>

#include <csignal>
#include <exception>
#include <filesystem>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent_mesh/identity.hpp"
#include "agent_mesh/registry_client.hpp"
#include "agent_mesh/result.hpp"
#include "ctl/config.hpp"

namespace agent_mesh::ctl {

// Exit statuses (cli-mcp-web.md): 0 ok, 1 error, 2 usage. 130 after Ctrl-C, as shells report it.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitInterrupted = 130;

// A command that cannot go on: what was wrong, and what to do next. run_meshctl prints
// "error: <message>" and "hint: <hint>" on stderr and exits with `exit_status`.
struct CommandFailure : std::exception {
  CommandFailure(std::string message_, std::string hint_, int exit_status_ = kExitError)
      : message(std::move(message_)), hint(std::move(hint_)), exit_status(exit_status_) {}
  [[nodiscard]] const char* what() const noexcept override { return message.c_str(); }
  std::string message;
  std::string hint;
  int exit_status;
};

[[noreturn]] void fail_command(std::string message, std::string hint, int exit_status = kExitError);

// The global flags (given before or after the command); empty = not given.
struct GlobalFlags {
  bool json = false;
  std::string cp_url;
  std::string relay_url;
  std::string token;
  std::string key_file;
  std::string agent_id;
  std::string meshd_socket;
};

// How a registry call authenticates.
enum class RegistryAuth : std::uint8_t {
  none,
  token,           // the user's API token (required)
  agent,           // the configured agent's signature (required)
  token_or_agent,  // the token when configured, else the agent's signature
};

class Context {
 public:
  Context(std::ostream& out, std::ostream& err, std::istream& in, bool stderr_is_terminal);

  GlobalFlags flags;

  // Reads $MESH_HOME/config.toml (missing: empty). CommandFailure for a broken file.
  void load_config();

  [[nodiscard]] std::ostream& out() const noexcept { return out_; }
  [[nodiscard]] std::ostream& err() const noexcept { return err_; }
  [[nodiscard]] std::istream& in() const noexcept { return in_; }
  [[nodiscard]] bool json() const noexcept { return flags.json; }
  [[nodiscard]] bool stderr_is_terminal() const noexcept { return stderr_is_terminal_; }

  [[nodiscard]] const std::filesystem::path& mesh_home() const noexcept { return mesh_home_; }
  [[nodiscard]] ConfigFile& config() noexcept { return config_; }
  // Rewrites config.toml (CommandFailure when it cannot).
  void save_config();

  // One key, flag > environment > file; nullopt when none is set (or set empty).
  [[nodiscard]] std::optional<std::string> setting(std::string_view key) const;
  // Where a key's value came from, for messages: "--cp-url", "MESH_CP_URL", "cp_url in <file>".
  [[nodiscard]] std::string source_of(std::string_view key) const;

  [[nodiscard]] std::string cp_url() const;
  // The API token, or CommandFailure telling how to log in.
  [[nodiscard]] std::string require_token() const;
  // The configured key: --key-file / MESH_KEY_FILE, else secret_key or key_file of the file.
  // nullopt when none is configured; CommandFailure for a key that cannot be read.
  [[nodiscard]] std::optional<KeyPair> identity() const;
  [[nodiscard]] KeyPair require_identity() const;
  // agent_id setting, else the configured key's ID; CommandFailure for a malformed agent_id.
  [[nodiscard]] std::optional<AgentId> agent_id() const;
  // $MESH_HOME/keys/<agent_id>.key
  [[nodiscard]] std::filesystem::path key_path(const AgentId& agent) const;
  // meshd_socket, else $MESH_HOME/meshd-<agent_id>.sock; nullopt without an agent.
  [[nodiscard]] std::optional<std::filesystem::path> meshd_socket() const;
  // relay_url, else the registry's GET /api/v1/info.
  [[nodiscard]] std::string relay_url() const;

  // A registry client for cp_url with `identity` (a throw-away key when none: token-only calls).
  [[nodiscard]] std::unique_ptr<RegistryClient> registry(std::optional<KeyPair> identity = std::nullopt) const;
  // One registry call; a failure becomes a CommandFailure whose hint fits the error (log in,
  // register, check the URL ...). `not_found_hint` replaces the generic one for 404.
  [[nodiscard]] boost::json::value call_registry(std::string_view method, std::string_view target,
                                                 std::optional<boost::json::value> body, RegistryAuth auth,
                                                 std::string_view not_found_hint = {}) const;
  // The CommandFailure for a registry error (also for RegistryClient's own methods).
  [[noreturn]] void fail_registry(const Error& error, bool used_token, std::string_view not_found_hint = {}) const;

  void print_json(const boost::json::value& value) const;
  // Columns separated by two spaces, padded to the widest cell; the header in capitals.
  void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) const;

 private:
  std::ostream& out_;
  std::ostream& err_;
  std::istream& in_;
  bool stderr_is_terminal_;
  std::filesystem::path mesh_home_;
  ConfigFile config_;
};

// A spinner on stderr while something waits, only when stderr is a terminal (else nothing).
class Spinner {
 public:
  Spinner(const Context& context, std::string text);
  ~Spinner();  // clears the line
  Spinner(const Spinner&) = delete;
  Spinner& operator=(const Spinner&) = delete;
  void set_text(std::string text);

 private:
  struct State;
  std::shared_ptr<State> state_;
};

// SIGINT/SIGTERM taken out of their default action (which would kill the process mid-write) and
// delivered here instead, so a waiting command can stop cleanly. Construct it on the thread that
// waits, before any other thread starts: threads inherit the blocked mask. The destructor restores
// the previous mask.
class Interrupts {
 public:
  enum class Wait : std::uint8_t { timeout, interrupted, woken };
  Interrupts();
  ~Interrupts();
  Interrupts(const Interrupts&) = delete;
  Interrupts& operator=(const Interrupts&) = delete;
  // Waits up to `timeout` for SIGINT or SIGTERM (interrupted) or for wake() from another thread
  // (woken), whichever comes first.
  Wait wait(std::chrono::milliseconds timeout);
  // True when interrupted, now or by an earlier signal.
  bool wait_for(std::chrono::milliseconds timeout) { return interrupted_ || wait(timeout) == Wait::interrupted; }
  // Ends the constructing thread's wait() early (from any thread; a wake before the wait is kept).
  void wake() const;
  [[nodiscard]] bool interrupted() const noexcept { return interrupted_; }

 private:
  sigset_t previous_{};
  pthread_t owner_;
  bool interrupted_ = false;
};

// Wall-clock Unix ms.
[[nodiscard]] std::int64_t now_ms();
// Unix ms → "2026-11-27T01:02:03Z".
[[nodiscard]] std::string rfc3339(std::int64_t ms);
// RFC 3986 percent-encoding, unreserved characters kept: for IDs put into a path.
[[nodiscard]] std::string percent_encode(std::string_view text);
// "a=1&b=x%20y": RFC 3986 percent-encoding of each name and value (unreserved characters kept).
[[nodiscard]] std::string query_string(const std::vector<std::pair<std::string, std::string>>& parameters);

// "a, b ,c" → {"a","b","c"} (empty items dropped).
[[nodiscard]] std::vector<std::string> split_list(std::string_view text);
// Text of a JSON value for a table cell: strings without quotes, the rest serialised.
[[nodiscard]] std::string cell(const boost::json::value* value);

}  // namespace agent_mesh::ctl
