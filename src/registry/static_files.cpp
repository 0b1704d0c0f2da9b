#include "registry/static_files.hpp"

#include <fstream>
#include <sstream>
#include <string_view>
#include <system_error>

#include "agent_mesh/error.hpp"

namespace agent_mesh::registry {

namespace {

// Built UI assets are small; anything larger is not ours to serve from memory.
constexpr std::uintmax_t kMaxFileBytes = 32 * 1024 * 1024;

std::string_view content_type(const std::filesystem::path& path) {
  const std::string ext = path.extension().string();
  if (ext == ".html") return "text/html; charset=utf-8";
  if (ext == ".js" || ext == ".mjs") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".json" || ext == ".map") return "application/json";
  if (ext == ".svg") return "image/svg+xml";
  if (ext == ".png") return "image/png";
  if (ext == ".ico") return "image/x-icon";
  if (ext == ".woff2") return "font/woff2";
  if (ext == ".txt") return "text/plain; charset=utf-8";
  if (ext == ".wasm") return "application/wasm";
  return "application/octet-stream";
}

// Every answer from the web root carries the headers; the app needs nothing else (no inline
// script or style, no external origin: the registry and the relay are this origin).
void secure(http::Response& response) {
  response.set("Content-Security-Policy", std::string(kWebContentSecurityPolicy));
  response.set("X-Content-Type-Options", "nosniff");
  response.set("Referrer-Policy", "no-referrer");
  response.set("X-Frame-Options", "DENY");
  response.set("Cross-Origin-Opener-Policy", "same-origin");
  response.set("Cross-Origin-Resource-Policy", "same-origin");
}

http::Response error(int status, Errc code, std::string message) {
  auto response = http::Response::json(status, Error{code, std::move(message)}.to_http_json());
  secure(response);
  return response;
}

}  // namespace

StaticFiles::StaticFiles(std::filesystem::path root) {
  std::error_code ec;
  root_ = std::filesystem::weakly_canonical(root, ec);
  available_ = !ec && std::filesystem::is_regular_file(root_ / "index.html", ec);
}

http::Response StaticFiles::serve(const http::Request& request) const {
  if (request.method != "GET" && request.method != "HEAD") {
    auto response = error(405, Errc::bad_request, "the web UI is read-only (GET)");
    response.set("Allow", "GET, HEAD");
    return response;
  }
  if (!available_) {
    return error(404, Errc::not_found, "no web UI is installed here (see --web-root); the API is under /api/v1/");
  }
  std::string_view path = request.path();
  if (path.empty() || path.front() != '/' || path.find('\0') != std::string_view::npos ||
      path.find('%') != std::string_view::npos || path.find('\\') != std::string_view::npos) {
    return error(400, Errc::bad_request, "bad path");
  }
  std::filesystem::path relative = std::string(path.substr(1));
  for (const auto& part : relative) {
    if (part == "..") return error(400, Errc::bad_request, "bad path");
  }
  std::error_code ec;
  std::filesystem::path file = root_ / relative;
  if (path == "/" || std::filesystem::is_directory(file, ec)) file /= "index.html";
  auto resolved = std::filesystem::weakly_canonical(file, ec);
  const bool inside = !ec && std::mismatch(root_.begin(), root_.end(), resolved.begin(), resolved.end()).first == root_.end();
  if (!inside || !std::filesystem::is_regular_file(resolved, ec)) {
    // Client-side routes (no extension) load the app; a missing asset is a 404.
    if (relative.has_extension()) return error(404, Errc::not_found, "no such file");
    resolved = root_ / "index.html";
  }
  const auto size = std::filesystem::file_size(resolved, ec);
  if (ec || size > kMaxFileBytes) return error(404, Errc::not_found, "no such file");
  std::ifstream in(resolved, std::ios::binary);
  std::ostringstream body;
  body << in.rdbuf();
  http::Response response{200, {}, request.method == "HEAD" ? std::string() : std::move(body).str()};
  response.set("Content-Type", std::string(content_type(resolved)));
  // Vite writes content-hashed names under assets/, which never change; anything else (index.html,
  // an unhashed icon) must be revalidated to pick up new builds.
  const bool hashed = resolved.filename() != "index.html" && !relative.empty() && *relative.begin() == "assets";
  response.set("Cache-Control", hashed ? "public, max-age=31536000, immutable" : "no-cache");
  secure(response);
  return response;
}

}  // namespace agent_mesh::registry
