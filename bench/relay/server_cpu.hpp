// The CPU time a server process (the relay or nats-server) spent during the measured window, read
// from /proc/<pid>/stat, and the load generator's own. It tells a throughput limited by the server's CPU from one limited by the
// load generator or by waiting (e.g. on TCP timers), which a rate alone cannot.
#pragma once

#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace agent_mesh::bench {

// utime + stime of `pid` in seconds, or -1 if unreadable.
inline double process_cpu_seconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (pid <= 0 || !std::getline(in, line)) return -1;
  // The command name (field 2) may contain spaces; the fields after its ')' are space-separated.
  const auto close = line.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(line.substr(close + 2));
  std::string field;
  std::uint64_t utime = 0;
  std::uint64_t stime = 0;
  for (int index = 3; fields >> field && index <= 15; ++index) {
    if (index == 14) utime = std::stoull(field);
    if (index == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// This process's CPU time (all threads) in seconds.
inline double own_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

// Samples the server's and the load generator's CPU time at the window's two ends on its own
// thread (so no event loop has to be interrupted). On a 2-core machine the two share the cores:
// a generator near one full core means the rate may be the generator's limit, not the server's.
class ServerCpuSampler {
 public:
  ServerCpuSampler(int pid, std::uint64_t from_steady_ns, std::uint64_t to_steady_ns) : pid_(pid) {
    thread_ = std::thread([this, from_steady_ns, to_steady_ns] {
      using clock = std::chrono::steady_clock;
      const double seconds = static_cast<double>(to_steady_ns - from_steady_ns) / 1e9;
      std::this_thread::sleep_until(clock::time_point(std::chrono::nanoseconds(from_steady_ns)));
      const double server_begin = process_cpu_seconds(pid_);
      const double own_begin = own_cpu_seconds();
      std::this_thread::sleep_until(clock::time_point(std::chrono::nanoseconds(to_steady_ns)));
      const double server_end = process_cpu_seconds(pid_);
      const double own_end = own_cpu_seconds();
      if (server_begin >= 0 && server_end >= 0) server_cores_ = (server_end - server_begin) / seconds;
      own_cores_ = (own_end - own_begin) / seconds;
    });
  }
  ~ServerCpuSampler() {
    if (thread_.joinable()) thread_.join();
  }
  ServerCpuSampler(const ServerCpuSampler&) = delete;
  ServerCpuSampler& operator=(const ServerCpuSampler&) = delete;

  // Each waits for the end of the window. -1 without a pid or when /proc could not be read.
  double cores() {
    if (thread_.joinable()) thread_.join();
    return server_cores_;
  }
  double generator_cores() {
    if (thread_.joinable()) thread_.join();
    return own_cores_;
  }

 private:
  int pid_;
  double server_cores_ = -1;
  double own_cores_ = -1;
  std::thread thread_;
};

}  // namespace agent_mesh::bench
