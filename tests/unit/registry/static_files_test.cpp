// The web root of agent-mesh-server (registry/static_files.cpp): the built UI's files, the strict
// Content-Security-Policy and the other security headers on every answer, and paths that never
// leave the root.
#include "registry/static_files.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace agent_mesh::registry {
namespace {

class StaticFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = std::filesystem::temp_directory_path() /
            ("static-files-test-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_ / "web" / "assets");
    write("web/index.html", "<!doctype html><script type=\"module\" src=\"/assets/app-1a2b.js\"></script>");
    write("web/assets/app-1a2b.js", "console.log('app');");
    write("web/assets/app-1a2b.css", "body{margin:0}");
    write("secret.txt", "outside the web root");
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  void write(const std::string& relative, const std::string& text) {
    std::ofstream(root_ / relative, std::ios::binary) << text;
  }

  static http::Response get(const StaticFiles& files, std::string target, std::string method = "GET") {
    http::Request request;
    request.method = std::move(method);
    request.target = std::move(target);
    return files.serve(request);
  }

  static std::string header(const http::Response& response, std::string_view name) {
    for (const auto& [key, value] : response.fields) {
      if (http::field_name_equal(key, name)) return value;
    }
    return {};
  }

  static void expect_security_headers(const http::Response& response) {
    EXPECT_EQ(header(response, "Content-Security-Policy"),
              "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
              "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
    EXPECT_EQ(header(response, "X-Content-Type-Options"), "nosniff");
    EXPECT_EQ(header(response, "Referrer-Policy"), "no-referrer");
    EXPECT_EQ(header(response, "X-Frame-Options"), "DENY");
    EXPECT_EQ(header(response, "Cross-Origin-Opener-Policy"), "same-origin");
  }

  std::filesystem::path root_;
};

TEST_F(StaticFilesTest, IndexCarriesTheStrictContentSecurityPolicy) {
  StaticFiles files(root_ / "web");
  ASSERT_TRUE(files.available());
  const auto response = get(files, "/");
  EXPECT_EQ(response.status, 200);
  EXPECT_NE(response.body.find("/assets/app-1a2b.js"), std::string::npos);
  EXPECT_EQ(header(response, "Content-Type"), "text/html; charset=utf-8");
  EXPECT_EQ(header(response, "Cache-Control"), "no-cache");
  expect_security_headers(response);
}

TEST_F(StaticFilesTest, PolicyAllowsNoInlineCodeNoEvalAndNoOtherOrigin) {
  const std::string policy(kWebContentSecurityPolicy);
  for (const char* forbidden : {"unsafe-inline", "unsafe-eval", "unsafe-hashes", "wasm-unsafe-eval", "*", "http:",
                                "https:", "ws:", "wss:", "blob:", "data:"}) {
    EXPECT_EQ(policy.find(forbidden), std::string::npos) << forbidden;
  }
  EXPECT_EQ(policy.rfind("default-src 'none';", 0), 0u);
}

TEST_F(StaticFilesTest, AssetsAreImmutableAndTyped) {
  StaticFiles files(root_ / "web");
  auto script = get(files, "/assets/app-1a2b.js");
  EXPECT_EQ(script.status, 200);
  EXPECT_EQ(script.body, "console.log('app');");
  EXPECT_EQ(header(script, "Content-Type"), "text/javascript; charset=utf-8");
  EXPECT_EQ(header(script, "Cache-Control"), "public, max-age=31536000, immutable");
  expect_security_headers(script);
  auto style = get(files, "/assets/app-1a2b.css");
  EXPECT_EQ(header(style, "Content-Type"), "text/css; charset=utf-8");
  expect_security_headers(style);
  auto head = get(files, "/assets/app-1a2b.js", "HEAD");
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(head.body.empty());
  expect_security_headers(head);
}

TEST_F(StaticFilesTest, OnlyHashedAssetsAreImmutable) {
  write("web/favicon.svg", "<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
  write("web/assets/favicon-9f8e.svg", "<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
  StaticFiles files(root_ / "web");
  auto plain = get(files, "/favicon.svg");
  EXPECT_EQ(plain.status, 200);
  EXPECT_EQ(header(plain, "Content-Type"), "image/svg+xml");
  EXPECT_EQ(header(plain, "Cache-Control"), "no-cache");
  expect_security_headers(plain);
  auto hashed = get(files, "/assets/favicon-9f8e.svg");
  EXPECT_EQ(hashed.status, 200);
  EXPECT_EQ(header(hashed, "Cache-Control"), "public, max-age=31536000, immutable");
  EXPECT_EQ(header(get(files, "/index.html"), "Cache-Control"), "no-cache");
  EXPECT_EQ(header(get(files, "/some/route"), "Cache-Control"), "no-cache");
}

TEST_F(StaticFilesTest, ClientRoutesLoadTheAppAndMissingAssetsAre404) {
  StaticFiles files(root_ / "web");
  auto route = get(files, "/agents/some-agent?x=1");
  EXPECT_EQ(route.status, 200);
  EXPECT_NE(route.body.find("<!doctype html>"), std::string::npos);
  expect_security_headers(route);
  auto missing = get(files, "/assets/gone.js");
  EXPECT_EQ(missing.status, 404);
  expect_security_headers(missing);
}

TEST_F(StaticFilesTest, ErrorsCarryTheHeadersToo) {
  StaticFiles files(root_ / "web");
  auto post = get(files, "/", "POST");
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(header(post, "Allow"), "GET, HEAD");
  expect_security_headers(post);
  for (const char* target : {"/../secret.txt", "/assets/../../secret.txt", "/%2e%2e/secret.txt", "/a\\b"}) {
    auto bad = get(files, target);
    EXPECT_EQ(bad.status, 400) << target;
    EXPECT_EQ(bad.body.find("outside the web root"), std::string::npos) << target;
    expect_security_headers(bad);
  }
  StaticFiles none(root_ / "no-such-dir");
  EXPECT_FALSE(none.available());
  auto absent = get(none, "/");
  EXPECT_EQ(absent.status, 404);
  EXPECT_NE(absent.body.find("--web-root"), std::string::npos);
  expect_security_headers(absent);
}

TEST_F(StaticFilesTest, SymlinkOutOfTheRootIsNotFollowed) {
  std::filesystem::create_symlink(root_ / "secret.txt", root_ / "web" / "leak.txt");
  StaticFiles files(root_ / "web");
  auto leak = get(files, "/leak.txt");
  EXPECT_EQ(leak.status, 404);
  EXPECT_EQ(leak.body.find("outside the web root"), std::string::npos);
}

}  // namespace
}  // namespace agent_mesh::registry
