// agent-meshctl as a black box: the real binary run as a child process with its own MESH_HOME, a
// clean environment, arguments and optional stdin, its exit status, stdout and stderr captured
// separately (child_process.hpp merges stderr into stdout, so this file has its own fork/exec with
// three pipes), every wait bounded by a deadline. Around it: a real agent-mesh-server
// (registry_fixture.hpp's MeshServer with --bootstrap), agent-meshd and scripts/echo_server.py.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "registry/registry_fixture.hpp"

extern char** environ;

namespace agent_mesh::test::ctl {

using namespace std::chrono_literals;
using Env = std::map<std::string, std::string>;

inline std::string ctl_binary() {
#ifdef AGENT_MESH_CTL_BINARY
  return AGENT_MESH_CTL_BINARY;
#else
  return binary_path("agent-meshctl");
#endif
}

// ---------------------------------------------------------------------------------------------
// Results

struct CtlResult {
  int exit = -1;  // exit status, 128+signal, -1 when it had to be killed at the deadline
  std::string out;
  std::string err;
  bool timed_out = false;
  std::string command;  // for messages

  [[nodiscard]] std::vector<std::string> out_lines() const { return split_lines(out); }
  [[nodiscard]] std::vector<std::string> err_lines() const { return split_lines(err); }
  // stdout without its trailing newline(s).
  [[nodiscard]] std::string out_trimmed() const {
    std::string s = out;
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
  }
  [[nodiscard]] std::string describe() const {
    std::ostringstream text;
    text << "\n$ " << command << "\nexit " << exit << (timed_out ? " (killed at the deadline)" : "")
         << "\n--- stdout ---\n"
         << out << "\n--- stderr ---\n"
         << err << "\n--------------";
    return text.str();
  }
  static std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }
};

// Ignore SIGPIPE once: writing stdin to a child that already exited must not kill the test.
inline void ignore_sigpipe() {
  static const bool done = [] {
    ::signal(SIGPIPE, SIG_IGN);
    return true;
  }();
  (void)done;
}

// ---------------------------------------------------------------------------------------------
// One agent-meshctl run (or any program), started at once; read stderr while it runs (device flow),
// then finish() for the result.

class CtlProcess {
 public:
  CtlProcess(const std::string& program, const std::vector<std::string>& args, const Env& env,
             std::optional<std::string> stdin_text) {
    ignore_sigpipe();
    command_ = program;
    for (const auto& a : args) command_ += " " + a;
    int in_pipe[2] = {-1, -1};
    int out_pipe[2];
    int err_pipe[2];
    if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    if (stdin_text && ::pipe2(in_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    std::vector<std::string> env_strings;
    for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(program.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);

    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork");
    if (pid_ == 0) {
      int in_fd = stdin_text ? in_pipe[0] : ::open("/dev/null", O_RDONLY);
      ::dup2(in_fd, STDIN_FILENO);
      ::dup2(out_pipe[1], STDOUT_FILENO);
      ::dup2(err_pipe[1], STDERR_FILENO);
      ::execve(program.c_str(), argv.data(), envp.data());
      std::fprintf(stderr, "exec %s failed: %s\n", program.c_str(), std::strerror(errno));
      ::_exit(127);
    }
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    out_fd_ = out_pipe[0];
    err_fd_ = err_pipe[0];
    if (stdin_text) {
      ::close(in_pipe[0]);
      in_fd_ = in_pipe[1];
      stdin_ = *stdin_text;
      ::fcntl(in_fd_, F_SETFL, O_NONBLOCK);
      if (stdin_.empty()) close_fd(in_fd_);
    }
  }
  ~CtlProcess() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    close_fd(in_fd_);
    close_fd(out_fd_);
    close_fd(err_fd_);
  }
  CtlProcess(const CtlProcess&) = delete;
  CtlProcess& operator=(const CtlProcess&) = delete;

  // Reads until `predicate(stdout, stderr)` holds, the outputs close or the deadline passes.
  bool wait_for(const std::function<bool(const std::string&, const std::string&)>& predicate,
                std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (predicate(out_, err_)) return true;
      if (out_fd_ < 0 && err_fd_ < 0) return false;
      if (!pump(deadline)) return predicate(out_, err_);
    }
  }
  bool wait_for_stderr(const std::string& needle, std::chrono::milliseconds timeout) {
    return wait_for([&](const std::string&, const std::string& err) { return err.find(needle) != std::string::npos; },
                    timeout);
  }
  [[nodiscard]] const std::string& out() const { return out_; }
  [[nodiscard]] const std::string& err() const { return err_; }
  void signal(int sig) {
    if (pid_ > 0 && !reaped_) ::kill(pid_, sig);
  }

  // Reads both outputs to EOF and waits for the exit; SIGKILL at the deadline.
  CtlResult finish(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    CtlResult result;
    result.command = command_;
    while ((out_fd_ >= 0 || err_fd_ >= 0) && pump(deadline)) {
    }
    if (out_fd_ >= 0 || err_fd_ >= 0) result.timed_out = true;
    int status = 0;
    if (!result.timed_out) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
      if (pidfd >= 0) {
        pollfd p{pidfd, POLLIN, 0};
        ::poll(&p, 1, std::max<int>(1, static_cast<int>(left.count())));
        ::close(pidfd);
      }
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped_ = true;
      } else {
        result.timed_out = true;
      }
    }
    if (result.timed_out) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      reaped_ = true;
      result.exit = -1;
    } else {
      result.exit = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    result.out = out_;
    result.err = err_;
    return result;
  }

 private:
  static void close_fd(int& fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  // One poll round; false when the deadline passed.
  bool pump(std::chrono::steady_clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd fds[3];
    int n = 0;
    int out_index = -1;
    int err_index = -1;
    int in_index = -1;
    if (out_fd_ >= 0) {
      out_index = n;
      fds[n++] = {out_fd_, POLLIN, 0};
    }
    if (err_fd_ >= 0) {
      err_index = n;
      fds[n++] = {err_fd_, POLLIN, 0};
    }
    if (in_fd_ >= 0) {
      in_index = n;
      fds[n++] = {in_fd_, POLLOUT, 0};
    }
    if (n == 0) return true;
    const int ready = ::poll(fds, static_cast<nfds_t>(n), static_cast<int>(left.count()));
    if (ready <= 0) return ready == 0 ? std::chrono::steady_clock::now() < deadline : true;
    auto drain = [](int& fd, std::string& into) {
      char buffer[8192];
      const ssize_t got = ::read(fd, buffer, sizeof buffer);
      if (got > 0) {
        into.append(buffer, static_cast<std::size_t>(got));
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        close_fd(fd);
      }
    };
    if (out_index >= 0 && (fds[out_index].revents & (POLLIN | POLLHUP | POLLERR)) != 0) drain(out_fd_, out_);
    if (err_index >= 0 && (fds[err_index].revents & (POLLIN | POLLHUP | POLLERR)) != 0) drain(err_fd_, err_);
    if (in_index >= 0 && fds[in_index].revents != 0) {
      const ssize_t wrote = ::write(in_fd_, stdin_.data() + stdin_written_, stdin_.size() - stdin_written_);
      if (wrote > 0) stdin_written_ += static_cast<std::size_t>(wrote);
      if (wrote < 0 && errno != EAGAIN && errno != EINTR) close_fd(in_fd_);
      if (stdin_written_ >= stdin_.size()) close_fd(in_fd_);
    }
    return true;
  }

  std::string command_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int in_fd_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  std::string stdin_;
  std::size_t stdin_written_ = 0;
  std::string out_;
  std::string err_;
};

// ---------------------------------------------------------------------------------------------
// Small helpers

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}
inline unsigned file_mode(const std::filesystem::path& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return 0xFFFF;
  return st.st_mode & 07777;
}
inline bool is_agent_id(const std::string& s) {
  static const std::regex pattern("^[A-Za-z0-9_-]{43}$");
  return std::regex_match(s, pattern) && AgentId::parse(s).ok();
}
inline bool is_uuid(const std::string& s) {
  static const std::regex pattern("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$");
  return std::regex_match(s, pattern);
}
// A registry resource ID (rules `acl_...`, setup keys `sk_...`): one word, no spaces.
inline bool is_resource_id(const std::string& s) {
  static const std::regex pattern("^[A-Za-z0-9_-]{6,}$");
  return std::regex_match(s, pattern);
}
inline std::optional<boost::json::value> parse_json(const std::string& text) {
  boost::system::error_code ec;
  auto value = boost::json::parse(text, ec);
  if (ec) return std::nullopt;
  return value;
}
inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}
inline std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
inline std::string json_string(const boost::json::value& v, std::string_view key) {
  if (!v.is_object()) return {};
  const auto* member = v.as_object().if_contains(key);
  return member != nullptr && member->is_string() ? std::string(member->as_string()) : std::string();
}
// A valid agent ID nobody registered.
inline std::string random_agent_id() { return KeyPair::generate().agent_id().str(); }

// Polls `condition` (an effect in another process: a long poll, a relay connection) until it holds
// or `timeout` passes. A bounded wait for a condition, not a sleep standing in for synchronisation.
template <class F>
bool eventually(F condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(100ms);
  }
  return condition();
}

// A loopback TCP port that refuses connections: bound (so nobody else takes it) but not listening.
class ClosedPort {
 public:
  ClosedPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) throw std::runtime_error("bind");
    socklen_t size = sizeof address;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &size);
    port_ = ntohs(address.sin_port);
  }
  ~ClosedPort() { ::close(fd_); }
  ClosedPort(const ClosedPort&) = delete;
  ClosedPort& operator=(const ClosedPort&) = delete;
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] std::string ws_url() const { return "ws://127.0.0.1:" + std::to_string(port_) + "/relay/ws"; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// A stale Unix socket file: bound, then closed, so connect() is refused (a crashed meshd's leftover).
inline void make_stale_socket(const std::filesystem::path& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  ::unlink(path.c_str());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    throw std::runtime_error("bind " + path.string());
  }
  ::close(fd);
}

// Every error: exit status `code`, nothing on stdout, stderr starting `error: ` with a `hint: ` line.
inline ::testing::AssertionResult IsCliError(const CtlResult& r, int code) {
  if (r.timed_out) return ::testing::AssertionFailure() << "timed out" << r.describe();
  if (r.exit != code) return ::testing::AssertionFailure() << "expected exit " << code << r.describe();
  if (!r.out.empty()) return ::testing::AssertionFailure() << "stdout must be empty on error" << r.describe();
  if (r.err.rfind("error: ", 0) != 0) return ::testing::AssertionFailure() << "stderr must start with `error: `" << r.describe();
  bool hint = false;
  for (const auto& line : r.err_lines()) hint = hint || line.rfind("hint: ", 0) == 0;
  if (!hint) return ::testing::AssertionFailure() << "stderr has no `hint: ` line" << r.describe();
  return ::testing::AssertionSuccess();
}
inline ::testing::AssertionResult IsOk(const CtlResult& r) {
  if (r.timed_out || r.exit != 0) return ::testing::AssertionFailure() << "expected exit 0" << r.describe();
  return ::testing::AssertionSuccess();
}

// A MESH_HOME directory (not created: the CLI must create it with 0700) with its own HOME.
struct MeshHome {
  std::filesystem::path path;
  std::filesystem::path user_home;

  [[nodiscard]] std::filesystem::path config() const { return path / "config.toml"; }
  [[nodiscard]] std::filesystem::path key_path(const std::string& agent_id) const {
    return path / "keys" / (agent_id + ".key");
  }
  [[nodiscard]] std::filesystem::path meshd_socket(const std::string& agent_id) const {
    return path / ("meshd-" + agent_id + ".sock");
  }
  // Writes config.toml (creating MESH_HOME 0700, the file 0600 as the CLI would).
  void write_config(const std::string& toml) const {
    std::filesystem::create_directories(path);
    ::chmod(path.c_str(), 0700);
    write_text(config(), toml);
    ::chmod(config().c_str(), 0600);
  }
  [[nodiscard]] std::string read_config() const { return read_text(config()); }
  // The value of `key = "value"` in config.toml ("" when absent).
  [[nodiscard]] std::string config_value(const std::string& key) const {
    const std::regex line("^\\s*" + key + "\\s*=\\s*[\"']([^\"']*)[\"']\\s*$");
    std::istringstream in(read_config());
    for (std::string text; std::getline(in, text);) {
      std::smatch m;
      if (std::regex_match(text, m, line)) return m[1];
    }
    return {};
  }
  [[nodiscard]] bool config_has(const std::string& key) const {
    const std::regex line("^\\s*" + key + "\\s*=.*$");
    std::istringstream in(read_config());
    for (std::string text; std::getline(in, text);) {
      if (std::regex_match(text, line)) return true;
    }
    return false;
  }
  // Concatenation of every regular file under MESH_HOME (to prove a secret was never written).
  [[nodiscard]] std::string all_files_text() const {
    std::string all;
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return all;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(path, ec)) {
      if (entry.is_regular_file()) all += read_text(entry.path()) + "\n";
    }
    return all;
  }
};

inline std::string toml_line(const std::string& key, const std::string& value) {
  return key + " = \"" + value + "\"\n";
}

// A started agent-meshd ("agent <agent_id> socket <path>" read from its first line).
struct Meshd {
  std::unique_ptr<ChildProcess> process;
  std::string agent;
  std::string socket;
};

// ---------------------------------------------------------------------------------------------
// The fixture: a fresh agent-mesh-server per test, temporary MESH_HOMEs, helpers to run the CLI.

class CtlTest : public ::testing::Test {
 protected:
  // Overridden by fixtures that need another server set-up.
  virtual MeshServer::Options server_options() { return MeshServer::Options{.extra = {}, .oauth = true}; }

  void SetUp() override {
    root_ = std::filesystem::temp_directory_path() /
            ("meshctl-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_);
    server_ = std::make_unique<MeshServer>(server_options());
    ASSERT_GT(server_->port(), 0);
    token_ = server_->bootstrap_token();
    ASSERT_FALSE(token_.empty()) << "no bootstrap token";
    group_ = server_->personal_group(token_);
    ASSERT_TRUE(is_uuid(group_)) << group_;
  }
  void TearDown() override {
    meshds_.clear();
    echoes_.clear();
    server_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(root_, ignored);
  }

  // A new MESH_HOME under this test's directory (the directory itself is not created).
  MeshHome new_home(const std::string& name) {
    MeshHome home{root_ / name / "mesh", root_ / name / "home"};
    std::filesystem::create_directories(home.user_home);
    return home;
  }
  // A MESH_HOME whose config.toml already holds cp_url and the bootstrap user's token.
  MeshHome logged_in_home(const std::string& name) {
    auto home = new_home(name);
    home.write_config(toml_line("cp_url", server_->base_url()) + toml_line("token", token_));
    return home;
  }

  // The environment: nothing inherited but PATH; HOME and MESH_HOME point into the test directory.
  static Env base_env(const MeshHome& home) {
    Env env;
    const char* path = std::getenv("PATH");
    env["PATH"] = path != nullptr ? path : "/usr/bin:/bin";
    env["HOME"] = home.user_home.string();
    env["MESH_HOME"] = home.path.string();
    env["LC_ALL"] = "C.UTF-8";
    return env;
  }

  // Runs agent-meshctl with `args`; `env` entries are added to (or, if empty, removed from) the base.
  CtlResult ctl(const MeshHome& home, const std::vector<std::string>& args, const Env& extra = {},
                std::optional<std::string> stdin_text = std::nullopt,
                std::chrono::milliseconds timeout = 30s) {
    CtlProcess process(ctl_binary(), args, merged(home, extra), std::move(stdin_text));
    return process.finish(timeout);
  }
  std::unique_ptr<CtlProcess> start_ctl(const MeshHome& home, const std::vector<std::string>& args,
                                        const Env& extra = {}, std::optional<std::string> stdin_text = std::nullopt) {
    return std::make_unique<CtlProcess>(ctl_binary(), args, merged(home, extra), std::move(stdin_text));
  }
  static Env merged(const MeshHome& home, const Env& extra) {
    Env env = base_env(home);
    for (const auto& [k, v] : extra) {
      if (v.empty()) {
        env.erase(k);
      } else {
        env[k] = v;
      }
    }
    return env;
  }

  // `register` in `home` (which must already hold a token); returns the agent ID printed on stdout.
  std::string register_agent(const MeshHome& home, const std::string& name, const std::string& capabilities,
                             std::vector<std::string> extra_args = {}) {
    std::vector<std::string> args{"register", "--name", name, "--capabilities", capabilities};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    auto r = ctl(home, args);
    EXPECT_TRUE(IsOk(r));
    const std::string id = r.out_trimmed();
    EXPECT_TRUE(is_agent_id(id)) << r.describe();
    return id;
  }

  // An agent registered over REST (not through the CLI), with its key.
  KeyPair register_over_rest(const std::string& name, const std::vector<std::string>& capabilities,
                             const std::string& description = "") {
    auto key = KeyPair::generate();
    auto reply = server_->as(token_, "POST", "/api/v1/agents",
                             signed_card(key, group_, name, capabilities, wall_ms(), description));
    EXPECT_EQ(reply.status, 201) << reply.body;
    return key;
  }

  // scripts/echo_server.py on an ephemeral port; returns the port.
  int start_echo(const std::string& name) {
    auto process = std::make_unique<ChildProcess>(
        "/usr/bin/env", std::vector<std::string>{"python3", std::string(AGENT_MESH_SCRIPTS_DIR) + "/echo_server.py", "0", name});
    const int port = process->wait_listening();
    EXPECT_GT(port, 0) << "echo_server.py did not start";
    echoes_.push_back(std::move(process));
    return port;
  }

  // agent-meshd for the key in `key_file`, relay = this server, optional local agent / socket.
  Meshd* start_meshd(const std::filesystem::path& key_file, const std::filesystem::path& socket,
                     std::optional<int> echo_port, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--relay", server_->relay_id(), "--key-file", key_file.string(),
                                  "--socket", socket.string(), "--log-level", "warn"};
    if (echo_port) {
      args.push_back("--local-agent");
      args.push_back("http://127.0.0.1:" + std::to_string(*echo_port));
    }
    args.insert(args.end(), extra.begin(), extra.end());
    auto meshd = std::make_unique<Meshd>();
    meshd->process = std::make_unique<ChildProcess>(binary_path("agent-meshd"), args);
    auto line = meshd->process->read_line(15s);
    EXPECT_TRUE(line.has_value()) << "agent-meshd printed nothing";
    if (line) {
      std::istringstream words(*line);
      std::string agent_word;
      std::string socket_word;
      words >> agent_word >> meshd->agent >> socket_word >> meshd->socket;
      EXPECT_EQ(agent_word, "agent") << *line;
    }
    meshds_.push_back(std::move(meshd));
    return meshds_.back().get();
  }

  // Waits until the registry reports `agent_id` online (its daemon is connected to the relay).
  bool wait_online(const std::string& agent_id, std::chrono::milliseconds timeout = 10s) {
    return eventually(
        [&] {
          auto reply = server_->as(token_, "GET", "/api/v1/agents/" + agent_id);
          const auto* online = reply.object().if_contains("online");
          return reply.status == 200 && online != nullptr && online->is_bool() && online->as_bool();
        },
        timeout);
  }

  static int& counter() {
    static int value = 0;
    return value;
  }

  std::filesystem::path root_;
  std::unique_ptr<MeshServer> server_;
  std::string token_;
  std::string group_;
  std::vector<std::unique_ptr<Meshd>> meshds_;
  std::vector<std::unique_ptr<ChildProcess>> echoes_;
};

}  // namespace agent_mesh::test::ctl
