// Starts a real binary for an integration test and reads its first stdout line ("listening
// http://host:port"), with a deadline instead of sleeps.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace agent_mesh::test {

class ChildProcess {
 public:
  // Starts `program` with `args`; stdout is a pipe, stderr is inherited (so failures show in logs).
  // With capture_stderr, stderr goes to the same pipe (to check error messages).
  ChildProcess(const std::string& program, const std::vector<std::string>& args, bool capture_stderr = false);
  ~ChildProcess();  // SIGKILL if still running
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // The next stdout line, or nullopt at EOF or when the deadline passes.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);
  // Reads the "listening http://host:port" line and returns the port (0 on failure).
  int wait_listening(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  void signal(int sig);
  // Waits for exit; returns the exit status, or -1 on timeout (the process keeps running).
  int wait_exit(std::chrono::milliseconds timeout);
  [[nodiscard]] int pid() const noexcept { return pid_; }

 private:
  int pid_ = -1;
  int stdout_fd_ = -1;
  std::string buffered_;
  bool exited_ = false;
  int status_ = 0;
};

// Path of a binary built next to the tests (CMake passes AGENT_MESH_BIN_DIR).
std::string binary_path(const std::string& name);

}  // namespace agent_mesh::test
