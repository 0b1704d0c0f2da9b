// The web UI's built files, served at `/` by agent-mesh-server (registry.md: "the web UI at /").
// Read-only, GET and HEAD only; paths are resolved inside the root and never leave it (no "..",
// no symlinks out of it); a path without a file extension that matches nothing gets index.html, so
// the single-page app's own routes load.
#pragma once

#include <filesystem>

#include "net/http_exchange.hpp"

namespace agent_mesh::registry {

class StaticFiles {
 public:
  explicit StaticFiles(std::filesystem::path root);
  [[nodiscard]] bool available() const noexcept { return available_; }
  [[nodiscard]] http::Response serve(const http::Request& request) const;

 private:
  std::filesystem::path root_;
  bool available_ = false;
};

}  // namespace agent_mesh::registry
