// The web UI's built files, served at `/` by agent-mesh-server (registry.md: "the web UI at /").
// Read-only, GET and HEAD only; paths are resolved inside the root and never leave it (no "..",
// no symlinks out of it); a path without a file extension that matches nothing gets index.html, so
// the single-page app's own routes load. Only files under /assets/ (the build's content-hashed
// names) are cached as immutable; everything else is revalidated. Every answer carries a strict
// Content-Security-Policy (kWebContentSecurityPolicy), nosniff, no-referrer and framing denied.
#pragma once

#include <filesystem>
#include <string_view>

#include "net/http_exchange.hpp"

namespace agent_mesh::registry {

// Scripts, styles, fetches and WebSockets from this origin only; no inline code, no eval, no
// plug-ins, no framing, no forms posting anywhere, images from the origin only (no data: URLs).
inline constexpr std::string_view kWebContentSecurityPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

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
