// Starts tests/support/github-standin.mjs (the local stand-in for GitHub's OAuth device flow) as a
// child process and waits for its `listening http(s)://127.0.0.1:<port>` line: a deadline, no
// sleeps. Used by the net and registry unit tests (they link agent_mesh_child_process).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "child_process.hpp"

namespace agent_mesh::test {

class GithubStandIn {
 public:
  explicit GithubStandIn(const std::vector<std::string>& flags = {}) {
    std::vector<std::string> args{"node", std::string(AGENT_MESH_TEST_SUPPORT_DIR) + "/github-standin.mjs"};
    args.insert(args.end(), flags.begin(), flags.end());
    // execv needs a path; env finds node on PATH.
    process_ = std::make_unique<ChildProcess>("/usr/bin/env", args);
    const auto line = process_->read_line(std::chrono::seconds(15));
    const std::string prefix = "listening ";
    if (line && line->rfind(prefix, 0) == 0) base_url_ = line->substr(prefix.size());
  }

  // "http://127.0.0.1:<port>" (https with --tls-cert), or empty when it did not start.
  [[nodiscard]] const std::string& base_url() const noexcept { return base_url_; }
  [[nodiscard]] std::string url(const std::string& path) const { return base_url_ + path; }
  [[nodiscard]] int port() const { return std::stoi(base_url_.substr(base_url_.rfind(':') + 1)); }

 private:
  std::unique_ptr<ChildProcess> process_;
  std::string base_url_;
};

}  // namespace agent_mesh::test
