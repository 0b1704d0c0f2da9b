// net::http_request against real local servers: the GitHub stand-in (tests/support/
// github-standin.mjs, over HTTP and HTTPS) and raw TCP listeners in this file for what no proper
// server does (never answering, lying about lengths, closing early, a full accept queue).
// Short timeouts everywhere; nothing sleeps to synchronise.
#include "net/http_client.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>

#include "github_standin.hpp"

namespace agent_mesh::net {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A loopback TCP listener that plays a scripted peer: for each connection it reads the request
// head (when asked to), writes `reply`, then either closes or holds the connection open until the
// listener is destroyed.
class RawServer {
 public:
  struct Script {
    std::string reply;              // written after the request head; empty: never answer
    bool close_after_reply = false;
    int backlog = 16;
    bool accept = true;             // false: never accept (the queue fills up)
  };

  explicit RawServer(Script script) : script_(std::move(script)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    EXPECT_EQ(::listen(fd_, script_.backlog), 0);
    socklen_t length = sizeof address;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    if (script_.accept) thread_ = std::thread([this] { serve(); });
  }
  ~RawServer() {
    ::shutdown(fd_, SHUT_RDWR);  // wakes accept()
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
    for (const int fd : connections_) ::close(fd);
  }
  RawServer(const RawServer&) = delete;
  RawServer& operator=(const RawServer&) = delete;

  [[nodiscard]] int port() const noexcept { return port_; }
  [[nodiscard]] std::string url(const std::string& path = "/") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }

 private:
  void serve() {
    for (;;) {
      const int connection = ::accept(fd_, nullptr, nullptr);
      if (connection < 0) return;
      std::string head;
      char chunk[4096];
      while (head.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::recv(connection, chunk, sizeof chunk, 0);
        if (n <= 0) break;
        head.append(chunk, static_cast<std::size_t>(n));
      }
      if (!script_.reply.empty()) {
        (void)!::send(connection, script_.reply.data(), script_.reply.size(), MSG_NOSIGNAL);
      }
      if (script_.close_after_reply) {
        ::close(connection);
      } else {
        connections_.push_back(connection);
      }
    }
  }

  Script script_;
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::vector<int> connections_;  // touched by the server thread until it is joined
};

// A port with nothing listening: bound, read, closed.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

HttpRequest get(const std::string& url, std::chrono::milliseconds timeout = 5s) {
  HttpRequest request;
  request.url = url;
  request.timeout = timeout;
  return request;
}

boost::json::object echo_of(const HttpResponse& response) { return boost::json::parse(response.body).as_object(); }

std::string text(const boost::json::value& value) {
  return value.is_string() ? std::string(value.as_string()) : boost::json::serialize(value);
}

// ---- Against the stand-in over HTTP ----

class HttpClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { standin_ = new test::GithubStandIn(); }
  static void TearDownTestSuite() {
    delete standin_;
    standin_ = nullptr;
  }
  void SetUp() override { ASSERT_FALSE(standin_->base_url().empty()) << "the stand-in did not start (node?)"; }
  static test::GithubStandIn* standin_;
};
test::GithubStandIn* HttpClientTest::standin_ = nullptr;

TEST_F(HttpClientTest, GetSendsHostUserAgentAndHeadersAndReadsTheResponse) {
  HttpRequest request = get(standin_->url("/_control/echo?x=1&y=a%20b"));
  request.headers = {{"X-Test", "yes"}, {"Accept", "application/json"}};
  auto response = http_request(request);
  ASSERT_TRUE(response.ok()) << response.error().describe();
  EXPECT_EQ(response->status, 200);
  for (const auto& header : response->headers) {
    for (const char c : header.name) EXPECT_FALSE(c >= 'A' && c <= 'Z') << header.name << " is not lowercased";
  }
  ASSERT_TRUE(response->header("Content-Type").has_value());
  EXPECT_EQ(*response->header("CONTENT-TYPE"), "application/json; charset=utf-8");
  EXPECT_FALSE(response->header("x-nothing").has_value());

  const auto echo = echo_of(*response);
  EXPECT_EQ(text(echo.at("method")), "GET");
  EXPECT_EQ(text(echo.at("url")), "/_control/echo?x=1&y=a%20b") << "path and query go as written";
  const auto& headers = echo.at("headers").as_object();
  EXPECT_EQ(text(headers.at("host")), "127.0.0.1:" + std::to_string(standin_->port()));
  EXPECT_EQ(text(headers.at("x-test")), "yes");
  EXPECT_EQ(text(headers.at("connection")), "close");
  EXPECT_EQ(text(headers.at("user-agent")).rfind("agent-mesh/", 0), 0u);
  EXPECT_FALSE(headers.contains("content-length")) << "a GET without a body has no Content-Length";
}

TEST_F(HttpClientTest, PostSendsTheBodyWithItsLength) {
  HttpRequest request = get(standin_->url("/_control/echo"));
  request.method = "POST";
  request.headers = {{"Content-Type", "text/plain"}, {"User-Agent", "custom/1"},
                     {"Host", "evil.example"}, {"Content-Length", "999"}};
  request.body = "hello, body";
  auto response = http_request(request);
  ASSERT_TRUE(response.ok()) << response.error().describe();
  const auto echo = echo_of(*response);
  EXPECT_EQ(text(echo.at("method")), "POST");
  EXPECT_EQ(text(echo.at("body")), "hello, body");
  const auto& headers = echo.at("headers").as_object();
  EXPECT_EQ(text(headers.at("content-length")), "11") << "the client sets the length, not the caller";
  EXPECT_EQ(text(headers.at("host")), "127.0.0.1:" + std::to_string(standin_->port()));
  EXPECT_EQ(text(headers.at("user-agent")), "custom/1");

  request.body.clear();
  response = http_request(request);
  ASSERT_TRUE(response.ok()) << response.error().describe();
  EXPECT_EQ(text(echo_of(*response).at("headers").at("content-length")), "0") << "an empty POST says so";
}

TEST_F(HttpClientTest, AnyStatusIsAResponseNotAnError) {
  for (const int status : {201, 301, 404, 500, 503}) {
    auto response = http_request(get(standin_->url("/_control/status?code=" + std::to_string(status))));
    ASSERT_TRUE(response.ok()) << response.error().describe();
    EXPECT_EQ(response->status, status);
  }
  HttpRequest head = get(standin_->url("/_control/status?code=200"));
  head.method = "HEAD";
  auto response = http_request(head);
  ASSERT_TRUE(response.ok()) << response.error().describe();
  EXPECT_EQ(response->status, 200);
  EXPECT_TRUE(response->body.empty()) << "HEAD: a Content-Length without a body";
}

TEST_F(HttpClientTest, ChunkedBodyUpToTheLimitPassesOneByteMoreIsTooLarge) {
  auto response = http_request(get(standin_->url("/_control/bytes?n=" + std::to_string(kDefaultMaxResponseBodyBytes))));
  ASSERT_TRUE(response.ok()) << response.error().describe();
  EXPECT_EQ(response->body.size(), kDefaultMaxResponseBodyBytes);
  EXPECT_FALSE(response->header("content-length").has_value()) << "the stand-in sends it chunked";

  response = http_request(get(standin_->url("/_control/bytes?n=" + std::to_string(kDefaultMaxResponseBodyBytes + 1))));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code, Errc::too_large);
  EXPECT_EQ(response.error().message, "http_client: response body from 127.0.0.1:" + std::to_string(standin_->port()) +
                                          " exceeds 1048576 bytes");

  HttpRequest small = get(standin_->url("/_control/bytes?n=101"));
  small.max_response_body_bytes = 100;
  response = http_request(small);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code, Errc::too_large);
}

TEST_F(HttpClientTest, AServerThatNeverAnswersTimesOut) {
  const auto started = Clock::now();
  auto response = http_request(get(standin_->url("/_control/hang"), 300ms));
  const auto elapsed = Clock::now() - started;
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code, Errc::timeout);
  EXPECT_EQ(response.error().message, "http_client: GET to 127.0.0.1:" + std::to_string(standin_->port()) +
                                          " timed out after 300 ms reading the response");
  EXPECT_GE(elapsed, 290ms);
  EXPECT_LT(elapsed, 3s);
}

// ---- Raw peers ----

TEST(HttpClient, ConnectionRefusedIsUnreachableAndNamesThePeerOnly) {
  const int port = free_port();
  HttpRequest request = get("http://127.0.0.1:" + std::to_string(port) + "/secret-path?token=q-secret");
  request.headers = {{"Authorization", "Bearer h-secret"}};
  request.body = "b-secret";
  auto response = http_request(request);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code, Errc::unreachable);
  EXPECT_EQ(response.error().message,
            "http_client: connect to 127.0.0.1:" + std::to_string(port) + " failed: Connection refused");
}

TEST(HttpClient, ASilentPeerTimesOutWithinTheDeadline) {
  RawServer server({.reply = ""});
  const auto started = Clock::now();
  auto response = http_request(get(server.url(), 250ms));
  const auto elapsed = Clock::now() - started;
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code, Errc::timeout);
  EXPECT_NE(response.error().message.find("timed out after 250 ms reading the response"), std::string::npos)
      << response.error().message;
  EXPECT_GE(elapsed, 240ms);
  EXPECT_LT(elapsed, 3s);
}

TEST(HttpClient, AFullAcceptQueueTimesOutWhileConnecting) {
  // With the accept queue full, Linux drops further SYNs: connect() neither succeeds nor fails.
  RawServer server({.reply = "", .close_after_reply = false, .backlog = 0, .accept = false});
  std::vector<int> fillers;
  for (int i = 0; i < 4; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<std::uint16_t>(server.port()));
    (void)::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
    fillers.push_back(fd);
  }
  const auto started = Clock::now();
  auto response = http_request(get(server.url(), 300ms));
  const auto elapsed = Clock::now() - started;
  for (const int fd : fillers) ::close(fd);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code, Errc::timeout) << response.error().message;
  EXPECT_NE(response.error().message.find("timed out after 300 ms connecting"), std::string::npos)
      << response.error().message;
  EXPECT_LT(elapsed, 3s);
}

TEST(HttpClient, ADeclaredLengthOverTheLimitFailsBeforeTheBodyArrives) {
  // The body never comes: only the early check on Content-Length can end this before the deadline.
  RawServer server({.reply = "HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n"});
  auto response = http_request(get(server.url(), 5s));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code, Errc::too_large) << response.error().message;
}

TEST(HttpClient, OversizedHeadersAreTooLarge) {
  RawServer server({.reply = "HTTP/1.1 200 OK\r\nX-Big: " + std::string(kMaxResponseHeaderBytes, 'a') + "\r\n\r\n",
                    .close_after_reply = true});
  auto response = http_request(get(server.url(), 5s));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code, Errc::too_large) << response.error().message;
}

TEST(HttpClient, AResponseCutShortIsUnreachable) {
  RawServer server({.reply = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", .close_after_reply = true});
  auto response = http_request(get(server.url(), 5s));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code, Errc::unreachable);
  EXPECT_EQ(response.error().message, "http_client: 127.0.0.1:" + std::to_string(server.port()) +
                                          " closed the connection before the response was complete");
}

TEST(HttpClient, ABodyEndingAtCloseIsComplete) {
  RawServer server({.reply = "HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\nuntil the end", .close_after_reply = true});
  auto response = http_request(get(server.url(), 5s));
  ASSERT_TRUE(response.ok()) << response.error().describe();
  EXPECT_EQ(response->body, "until the end");
  EXPECT_EQ(*response->header("x-a"), "1");
}

TEST(HttpClient, APeerNotSpeakingHttpIsUnreachable) {
  RawServer server({.reply = "SSH-2.0-OpenSSH_9.2\r\n\r\n", .close_after_reply = true});
  auto response = http_request(get(server.url(), 5s));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code, Errc::unreachable);
  EXPECT_NE(response.error().message.find("bad HTTP response from 127.0.0.1:"), std::string::npos)
      << response.error().message;
}

TEST(HttpClient, MalformedRequestsAreRefusedWithoutEchoingSecrets) {
  const auto refused = [](HttpRequest request) {
    SCOPED_TRACE(request.url + " " + request.method);
    auto response = http_request(request);
    EXPECT_FALSE(response.ok());
    if (response.ok()) return Error{};
    EXPECT_EQ(response.error().code, Errc::bad_request) << response.error().message;
    EXPECT_EQ(response.error().message.find("secret"), std::string::npos) << response.error().message;
    return response.error();
  };
  refused(get("ftp://127.0.0.1/secret"));
  refused(get("not a url secret"));
  refused(get("/relative/secret"));
  refused(get("http://user:secret@127.0.0.1:1/"));
  refused(get("http://127.0.0.1:99999/secret"));
  refused(get("http://127.0.0.1:0/secret"));
  refused(get("http://127.0.0.1:000080000/secret"));
  HttpRequest request = get("http://127.0.0.1:1/");
  request.headers = {{"Authorization", "Bearer secret\r\nX-Injected: 1"}};
  EXPECT_EQ(refused(request).message, "http_client: request header Authorization contains CR, LF or NUL");
  request.headers = {{"Bad Name", "x"}};
  refused(request);
  request.headers.clear();
  request.method = "GE T";
  refused(request);
  request.method = "GET";
  request.timeout = 0ms;
  refused(request);
}

TEST(HttpClient, NameResolutionIsBoundedByTheDeadline) {
  // `.invalid` never resolves (RFC 6761): either the resolver says so or the deadline passes.
  const auto started = Clock::now();
  auto response = http_request(get("http://agent-mesh-test.invalid/", 1500ms));
  ASSERT_FALSE(response.ok());
  EXPECT_TRUE(response.error().code == Errc::unreachable || response.error().code == Errc::timeout)
      << response.error().describe();
  EXPECT_NE(response.error().message.find("resolving agent-mesh-test.invalid:80"), std::string::npos)
      << response.error().message;
  EXPECT_LT(Clock::now() - started, 3s);
}

TEST(HttpClient, FormUrlencodeIsTheWhatwgFormEncoding) {
  EXPECT_EQ(form_urlencode({}), "");
  EXPECT_EQ(form_urlencode({{"client_id", "abc123"}, {"scope", "read:user repo"}}),
            "client_id=abc123&scope=read%3Auser+repo");
  EXPECT_EQ(form_urlencode({{"k", "*-._~!&=+/%\xC3\xA9"}}), "k=*-._%7E%21%26%3D%2B%2F%25%C3%A9");
  EXPECT_EQ(form_urlencode({{"grant_type", "urn:ietf:params:oauth:grant-type:device_code"}}),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code");
}

// ---- HTTPS against the stand-in with a throw-away certificate ----

class HttpsClientTest : public ::testing::Test {
 protected:
  // One certificate for `localhost` only (no IP address in it), so the same server shows SNI,
  // a good name check and a failing IP check.
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(std::filesystem::temp_directory_path() /
                                     ("http-client-tls-" + std::to_string(::getpid())));
    std::filesystem::create_directories(*dir_);
    const std::string cert = (*dir_ / "cert.pem").string(), key = (*dir_ / "key.pem").string();
    const std::string command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
                                "-subj /CN=localhost -addext subjectAltName=DNS:localhost -keyout " + key +
                                " -out " + cert + " 2>/dev/null";
    if (std::system(command.c_str()) != 0) return;
    cert_ = new std::string(cert);
    standin_ = new test::GithubStandIn({"--tls-cert", cert, "--tls-key", key});
  }
  static void TearDownTestSuite() {
    delete standin_;
    delete cert_;
    if (dir_ != nullptr) std::filesystem::remove_all(*dir_);
    delete dir_;
    standin_ = nullptr;
    cert_ = nullptr;
    dir_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(cert_, nullptr) << "openssl could not make a certificate";
    ASSERT_EQ(standin_->base_url().rfind("https://127.0.0.1:", 0), 0u) << "the TLS stand-in did not start";
  }
  static std::string localhost_url(const std::string& path) {
    return "https://localhost:" + std::to_string(standin_->port()) + path;
  }
  static test::GithubStandIn* standin_;
  static std::string* cert_;
  static std::filesystem::path* dir_;
};
test::GithubStandIn* HttpsClientTest::standin_ = nullptr;
std::string* HttpsClientTest::cert_ = nullptr;
std::filesystem::path* HttpsClientTest::dir_ = nullptr;

TEST_F(HttpsClientTest, VerifiesTheCertificateAgainstTheExtraCaAndSendsSni) {
  HttpRequest request = get(localhost_url("/_control/echo"));
  request.ca_file = *cert_;
  auto response = http_request(request);
  ASSERT_TRUE(response.ok()) << response.error().describe();
  EXPECT_EQ(response->status, 200);
  const auto echo = echo_of(*response);
  EXPECT_EQ(text(echo.at("sni")), "localhost");
  EXPECT_EQ(text(echo.at("headers").at("host")), "localhost:" + std::to_string(standin_->port()));
}

TEST_F(HttpsClientTest, TrustsTheSystemStore) {
  // OpenSSL's default verify paths honour SSL_CERT_FILE: pointing it at our certificate shows that
  // requests without ca_file verify against the system store.
  ::setenv("SSL_CERT_FILE", cert_->c_str(), 1);
  auto response = http_request(get(localhost_url("/_control/echo")));
  ::unsetenv("SSL_CERT_FILE");
  ASSERT_TRUE(response.ok()) << response.error().describe();
  EXPECT_EQ(response->status, 200);
}

TEST_F(HttpsClientTest, AnUntrustedCertificateFailsTheHandshake) {
  auto response = http_request(get(localhost_url("/_control/echo")));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code, Errc::unreachable);
  EXPECT_NE(response.error().message.find("TLS handshake with localhost:" + std::to_string(standin_->port()) + " failed"),
            std::string::npos)
      << response.error().message;
  EXPECT_NE(response.error().message.find("self-signed certificate"), std::string::npos) << response.error().message;
}

TEST_F(HttpsClientTest, ACertificateForAnotherNameFailsTheHandshake) {
  // Trusted, but issued to `localhost`, not to 127.0.0.1.
  HttpRequest request = get(standin_->url("/_control/echo"));
  request.ca_file = *cert_;
  auto response = http_request(request);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code, Errc::unreachable);
  EXPECT_NE(response.error().message.find("IP address mismatch"), std::string::npos) << response.error().message;
}

TEST_F(HttpsClientTest, PlainHttpToATlsPortAndTimeoutsOverTls) {
  const std::string plain = "http://127.0.0.1:" + std::to_string(standin_->port()) + "/_control/echo";
  auto response = http_request(get(plain, 2s));
  ASSERT_FALSE(response.ok()) << "a TLS server does not answer plaintext HTTP with a 200";

  HttpRequest hang = get(localhost_url("/_control/hang"), 300ms);
  hang.ca_file = *cert_;
  response = http_request(hang);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code, Errc::timeout) << response.error().message;
}

TEST_F(HttpsClientTest, AMissingCaFileIsABadRequest) {
  HttpRequest request = get(localhost_url("/"));
  request.ca_file = (*dir_ / "missing.pem").string();
  auto response = http_request(request);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code, Errc::bad_request) << response.error().message;
}

}  // namespace
}  // namespace agent_mesh::net
