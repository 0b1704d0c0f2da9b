// meshd's Local API (src/meshd/local_api.hpp) over a real Unix socket in a temporary directory,
// with fake hooks in place of the SDK, driven by a small blocking Beast client.
#include "meshd/local_api.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json.hpp>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "sdk/client_core.hpp"  // sdk_detail::StreamState, to make StreamCalls without a relay

namespace agent_mesh::meshd {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using stream_protocol = asio::local::stream_protocol;

// A flag one thread sets and another waits for.
class Latch {
 public:
  // Notifies under the lock: the waiter may destroy the latch as soon as it wakes.
  void set() {
    std::lock_guard lock(mutex_);
    set_ = true;
    cv_.notify_all();
  }
  bool wait_for(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return set_; });
  }
  bool is_set() {
    std::lock_guard lock(mutex_);
    return set_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool set_ = false;
};

struct Reply {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  bool chunked = false;
  [[nodiscard]] std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

class Client {
 public:
  explicit Client(const fs::path& path) : socket_(io_) { socket_.connect(stream_protocol::endpoint(path.string())); }

  void send(http::verb method, std::string target, std::string body = "", bool keep_alive = true) {
    http::request<http::string_body> request{method, target, 11};
    request.set(http::field::host, "localhost");
    if (!body.empty() || method == http::verb::post) {
      request.set(http::field::content_type, "application/json");
      request.body() = std::move(body);
    }
    request.keep_alive(keep_alive);
    request.prepare_payload();
    http::write(socket_, request);
  }
  void send_raw(std::string_view bytes) { asio::write(socket_, asio::buffer(bytes)); }

  Reply read() {
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    http::read(socket_, buffer_, parser);
    Reply reply;
    reply.status = static_cast<int>(parser.get().result_int());
    for (const auto& field : parser.get()) {
      std::string name(field.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      reply.headers[name] = std::string(field.value());
    }
    reply.chunked = parser.chunked();
    reply.body = parser.get().body();
    return reply;
  }
  // Reads the head of a response only (for streams the test leaves early).
  int read_head() {
    parser_.emplace();
    http::read_header(socket_, buffer_, *parser_);
    return static_cast<int>(parser_->get().result_int());
  }

  Reply exchange(http::verb method, std::string target, std::string body = "") {
    send(method, std::move(target), std::move(body));
    return read();
  }
  Reply post(const boost::json::value& body) { return exchange(http::verb::post, "/request", boost::json::serialize(body)); }

  void shutdown_send() { socket_.shutdown(stream_protocol::socket::shutdown_send); }
  void close() { socket_.close(); }
  // True if the server closed the connection (read returns EOF) within the timeout.
  bool closed_by_server() {
    beast::error_code ec;
    char byte = 0;
    socket_.read_some(asio::buffer(&byte, 1), ec);
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }

 private:
  asio::io_context io_;
  stream_protocol::socket socket_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::string_body>> parser_;
};

std::string new_agent_id() { return KeyPair::generate().agent_id().str(); }

boost::json::object request_body(std::string target, std::string capability = "echo") {
  return boost::json::object{{"target", std::move(target)}, {"capability", std::move(capability)},
                             {"payload", {{"message", "hello"}}}};
}

std::string error_body(Errc code, std::string_view message) { return Error{code, std::string(message)}.to_http_json(); }

// What a request hook saw.
struct Seen {
  std::mutex mutex;
  int calls = 0;
  std::string target;
  std::string capability;
  boost::json::value payload;
  RequestOptions options;
  Latch called;
};

class LocalApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "meshd-api-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    socket_ = dir_ / "home" / "meshd.sock";
  }
  void TearDown() override {
    server_.reset();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  void start(LocalApiServer::Hooks hooks) {
    auto started = LocalApiServer::start(socket_, std::move(hooks));
    ASSERT_TRUE(started) << started.error().describe();
    server_ = std::move(*started);
  }

  // Hooks whose request completes with `result` (now), recording what it saw.
  LocalApiServer::Hooks answering(Result<Response> result) {
    LocalApiServer::Hooks hooks;
    hooks.request = [this, result](const AgentId& target, std::string capability, boost::json::value payload,
                                   RequestOptions options) {
      {
        std::lock_guard lock(seen_.mutex);
        ++seen_.calls;
        seen_.target = target.str();
        seen_.capability = std::move(capability);
        seen_.payload = std::move(payload);
        seen_.options = std::move(options);
      }
      seen_.called.set();
      Pending<Response> pending;
      pending.complete(result);
      return pending;
    };
    return hooks;
  }

  // Hooks whose request never completes on its own; the Pending is kept in pending_.
  LocalApiServer::Hooks holding() {
    LocalApiServer::Hooks hooks;
    hooks.request = [this](const AgentId&, std::string, boost::json::value, RequestOptions options) {
      {
        std::lock_guard lock(seen_.mutex);
        ++seen_.calls;
        seen_.options = std::move(options);
      }
      seen_.called.set();
      return pending_;
    };
    return hooks;
  }

  LocalApiServer::Hooks streaming(std::shared_ptr<sdk_detail::StreamState> state) {
    LocalApiServer::Hooks hooks;
    hooks.stream = [this, state](const AgentId& target, std::string capability, boost::json::value payload,
                                 RequestOptions options) {
      {
        std::lock_guard lock(seen_.mutex);
        ++seen_.calls;
        seen_.target = target.str();
        seen_.capability = std::move(capability);
        seen_.payload = std::move(payload);
        seen_.options = std::move(options);
      }
      seen_.called.set();
      return StreamCall(state);
    };
    return hooks;
  }

  fs::path dir_;
  fs::path socket_;
  std::unique_ptr<LocalApiServer> server_;
  Seen seen_;
  Pending<Response> pending_;
};

// ---- The socket ----

TEST_F(LocalApiTest, SocketIsPrivate) {
  start(answering(Response{}));
  struct stat st {};
  ASSERT_EQ(::lstat(socket_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // The missing parent was created 0700.
  ASSERT_EQ(::stat(socket_.parent_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(server_->socket_path(), socket_);
}

TEST_F(LocalApiTest, StopRemovesTheSocketFile) {
  start(answering(Response{}));
  ASSERT_TRUE(fs::exists(fs::symlink_status(socket_)));
  server_->stop();
  EXPECT_FALSE(fs::exists(fs::symlink_status(socket_)));
  server_->stop();  // idempotent
}

TEST_F(LocalApiTest, StaleSocketIsReplaced) {
  fs::create_directories(socket_.parent_path());
  // A socket file nobody listens on, as a crashed daemon leaves it.
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strcpy(address.sun_path, socket_.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ::close(fd);
  ASSERT_TRUE(fs::is_socket(socket_));
  start(answering(Response{boost::json::value(1), true}));
  Client client(socket_);
  EXPECT_EQ(client.post(request_body(new_agent_id())).status, 200);
}

TEST_F(LocalApiTest, LiveSocketIsNotStolen) {
  start(answering(Response{}));
  auto second = LocalApiServer::start(socket_, answering(Response{}));
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message.find("another process"), std::string::npos) << second.error().message;
  // The first server still answers.
  Client client(socket_);
  EXPECT_EQ(client.post(request_body(new_agent_id())).status, 200);
}

TEST_F(LocalApiTest, OtherFileInTheWayIsAnError) {
  fs::create_directories(socket_.parent_path());
  std::ofstream(socket_) << "not a socket";
  auto started = LocalApiServer::start(socket_, answering(Response{}));
  ASSERT_FALSE(started);
  EXPECT_NE(started.error().message.find("not a socket"), std::string::npos) << started.error().message;
  EXPECT_TRUE(fs::is_regular_file(socket_));
}

TEST_F(LocalApiTest, SharedDirectoryOfAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a directory to another user";
  const fs::path shared = dir_ / "shared";
  fs::create_directories(shared);
  ASSERT_EQ(::chmod(shared.c_str(), 0777), 0);
  ASSERT_EQ(::chown(shared.c_str(), 65534, 65534), 0);
  auto started = LocalApiServer::start(shared / "meshd.sock", answering(Response{}));
  ASSERT_FALSE(started);
  EXPECT_NE(started.error().message.find("writable by other users"), std::string::npos) << started.error().message;
}

TEST_F(LocalApiTest, TooLongPathIsRefused) {
  auto started = LocalApiServer::start(dir_ / std::string(120, 'x'), answering(Response{}));
  ASSERT_FALSE(started);
  EXPECT_EQ(started.error().code, Errc::bad_request);
}

// ---- POST /request ----

TEST_F(LocalApiTest, RequestReturnsTheBodyVerbatim) {
  auto body = boost::json::parse(R"({"zeta":1,"alpha":{"b":[1,2],"a":"x"}})");
  start(answering(Response{body, false}));
  const std::string target = new_agent_id();
  auto request = request_body(target, "echo");
  request["timeout_ms"] = 2500;
  Client client(socket_);
  const Reply reply = client.post(request);
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, R"({"zeta":1,"alpha":{"b":[1,2],"a":"x"}})");
  EXPECT_EQ(reply.header("x-mesh-encrypted"), "false");
  EXPECT_EQ(reply.header("content-type"), "application/json");
  std::lock_guard lock(seen_.mutex);
  EXPECT_EQ(seen_.target, target);
  EXPECT_EQ(seen_.capability, "echo");
  EXPECT_EQ(boost::json::serialize(seen_.payload), R"({"message":"hello"})");
  ASSERT_TRUE(seen_.options.timeout);
  EXPECT_EQ(*seen_.options.timeout, 2500ms);
  ASSERT_TRUE(seen_.options.cancel);
  EXPECT_FALSE(seen_.options.cancel->cancelled());
}

TEST_F(LocalApiTest, RequestWithoutTimeoutLeavesTheDefault) {
  start(answering(Response{boost::json::value("ok"), true}));
  Client client(socket_);
  const Reply reply = client.post(request_body(new_agent_id()));
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, R"("ok")");
  EXPECT_EQ(reply.header("x-mesh-encrypted"), "true");
  std::lock_guard lock(seen_.mutex);
  EXPECT_FALSE(seen_.options.timeout);
}

TEST_F(LocalApiTest, RequestCompletedLaterFromAnotherThread) {
  start(holding());
  Client client(socket_);
  std::thread completer([&] {
    ASSERT_TRUE(seen_.called.wait_for(5s));
    std::this_thread::sleep_for(100ms);
    pending_.complete(Response{boost::json::object{{"late", true}}, true});
  });
  const Reply reply = client.post(request_body(new_agent_id()));
  completer.join();
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, R"({"late":true})");
  EXPECT_EQ(reply.header("x-mesh-encrypted"), "true");
}

TEST_F(LocalApiTest, KeepAliveServesSeveralRequests) {
  start(answering(Response{boost::json::value(7), true}));
  Client client(socket_);
  for (int i = 0; i < 3; ++i) {
    const Reply reply = client.post(request_body(new_agent_id()));
    EXPECT_EQ(reply.status, 200);
    EXPECT_EQ(reply.body, "7");
  }
  EXPECT_EQ(client.exchange(http::verb::get, "/nope").status, 404);
  EXPECT_EQ(seen_.calls, 3);
}

TEST_F(LocalApiTest, ErrorsMapToStatuses) {
  struct Case {
    Errc code;
    int status;
  };
  for (const auto& c : std::vector<Case>{{Errc::acl_denied, 403},
                                         {Errc::revoked, 403},
                                         {Errc::unknown_capability, 404},
                                         {Errc::bad_request, 400},
                                         {Errc::too_large, 413},
                                         {Errc::rate_limited, 429},
                                         {Errc::timeout, 504},
                                         {Errc::expired, 504},
                                         {Errc::unreachable, 502},
                                         {Errc::no_session, 502},
                                         {Errc::agent_error, 502},
                                         {Errc::internal, 500},
                                         {Errc::cancelled, 499}}) {
    EXPECT_EQ(local_api_status(c.code), c.status) << to_string(c.code);
    LocalApiTest::TearDown();
    SetUp();
    start(answering(Error{c.code, "it went wrong"}));
    Client client(socket_);
    const Reply reply = client.post(request_body(new_agent_id()));
    EXPECT_EQ(reply.status, c.status) << to_string(c.code);
    EXPECT_EQ(reply.body, error_body(c.code, "it went wrong"));
    EXPECT_EQ(reply.header("content-type"), "application/json");
  }
}

TEST_F(LocalApiTest, ValidationErrors) {
  start(answering(Response{}));
  const std::string id = new_agent_id();
  const auto with = [&](std::string_view key, boost::json::value value) {
    auto body = request_body(id);
    body[key] = std::move(value);
    return boost::json::serialize(body);
  };
  const auto without = [&](std::string_view key) {
    auto body = request_body(id);
    body.erase(key);
    return boost::json::serialize(body);
  };
  const std::vector<std::string> bad = {
      "",
      "not json",
      "[1,2]",
      R"({"target":"x","target":"y","capability":"echo","payload":1})",  // duplicate member
      without("target"),
      without("capability"),
      without("payload"),
      with("target", "not-an-agent-id"),
      with("target", 42),
      with("capability", "has space"),
      with("capability", ""),
      with("capability", boost::json::string(std::string(55, 'a'))),
      with("timeout_ms", 0),
      with("timeout_ms", -5),
      with("timeout_ms", 1.5),
      with("timeout_ms", "100"),
      with("stream", "yes"),
      with("extra", 1),
  };
  Client client(socket_);
  for (const auto& body : bad) {
    const Reply reply = client.exchange(http::verb::post, "/request", body);
    EXPECT_EQ(reply.status, 400) << body;
    auto parsed = boost::json::parse(reply.body);
    EXPECT_EQ(parsed.at("error").at("code").as_string(), "bad_request") << body;
    EXPECT_FALSE(parsed.at("error").at("message").as_string().empty());
  }
  EXPECT_EQ(seen_.calls, 0);
  // A valid capability of 54 characters and a big timeout are fine.
  auto ok = request_body(id, std::string(54, 'a'));
  ok["timeout_ms"] = 600000;
  ok["stream"] = false;
  EXPECT_EQ(client.post(ok).status, 200);
}

TEST_F(LocalApiTest, RequestBodyOverOneMebibyteIs413) {
  start(answering(Response{}));
  Client client(socket_);
  const std::string body(kMaxLocalRequestBodyBytes + 1, ' ');
  const Reply reply = client.exchange(http::verb::post, "/request", body);
  EXPECT_EQ(reply.status, 413);
  EXPECT_EQ(boost::json::parse(reply.body).at("error").at("code").as_string(), "too_large");
  EXPECT_EQ(seen_.calls, 0);
}

TEST_F(LocalApiTest, RequestBodyOfExactlyOneMebibyteIsRead) {
  start(answering(Response{}));
  Client client(socket_);
  std::string body = boost::json::serialize(request_body(new_agent_id()));
  body += std::string(kMaxLocalRequestBodyBytes - body.size(), ' ');
  EXPECT_EQ(client.exchange(http::verb::post, "/request", body).status, 200);
}

TEST_F(LocalApiTest, UnknownPathAndWrongMethod) {
  start(answering(Response{}));
  Client client(socket_);
  const Reply unknown = client.exchange(http::verb::get, "/nothing/here");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(boost::json::parse(unknown.body).at("error").at("code").as_string(), "not_found");

  const Reply get_request = client.exchange(http::verb::get, "/request");
  EXPECT_EQ(get_request.status, 405);
  EXPECT_EQ(get_request.header("allow"), "POST");
  EXPECT_TRUE(boost::json::parse(get_request.body).at("error").is_object());

  const Reply post_status = client.exchange(http::verb::post, "/status", "{}");
  EXPECT_EQ(post_status.status, 405);
  EXPECT_EQ(post_status.header("allow"), "GET");
  const Reply delete_agents = client.exchange(http::verb::delete_, "/agents");
  EXPECT_EQ(delete_agents.status, 405);
  EXPECT_EQ(delete_agents.header("allow"), "GET");
}

TEST_F(LocalApiTest, MalformedHttpGets400) {
  start(answering(Response{}));
  Client client(socket_);
  client.send_raw("THIS IS NOT HTTP\r\n\r\n");
  EXPECT_EQ(client.read().status, 400);
}

TEST_F(LocalApiTest, ExpectContinueIsHonoured) {
  start(answering(Response{boost::json::value(1), true}));
  Client client(socket_);
  const std::string body = boost::json::serialize(request_body(new_agent_id()));
  client.send_raw("POST /request HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: " +
                  std::to_string(body.size()) + "\r\n\r\n");
  EXPECT_EQ(client.read_head(), 100);
  client.send_raw(body);
  EXPECT_EQ(client.read().status, 200);
}

// ---- Early close → cancel ----

TEST_F(LocalApiTest, ClosingEarlyCancelsAUnaryRequest) {
  start(holding());
  Client client(socket_);
  client.send(http::verb::post, "/request", boost::json::serialize(request_body(new_agent_id())));
  ASSERT_TRUE(seen_.called.wait_for(5s));
  Latch cancelled;
  {
    std::lock_guard lock(seen_.mutex);
    ASSERT_TRUE(seen_.options.cancel);
    seen_.options.cancel->on_cancel([&cancelled] { cancelled.set(); });
  }
  EXPECT_FALSE(cancelled.is_set());
  client.close();
  EXPECT_TRUE(cancelled.wait_for(5s));
  // A completion after the client left goes nowhere (and must not crash).
  pending_.complete(Response{boost::json::value(1), true});
}

TEST_F(LocalApiTest, HalfCloseStillGetsTheAnswer) {
  start(holding());
  Client client(socket_);
  client.send(http::verb::post, "/request", boost::json::serialize(request_body(new_agent_id())), false);
  client.shutdown_send();
  ASSERT_TRUE(seen_.called.wait_for(5s));
  std::this_thread::sleep_for(100ms);  // let the server see the EOF
  pending_.complete(Response{boost::json::value("still here"), true});
  const Reply reply = client.read();
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, R"("still here")");
  std::lock_guard lock(seen_.mutex);
  EXPECT_FALSE(seen_.options.cancel->cancelled());
}

TEST_F(LocalApiTest, PipelinedRequestIsServedAfterTheFirst) {
  start(holding());
  Client client(socket_);
  client.send(http::verb::post, "/request", boost::json::serialize(request_body(new_agent_id())));
  ASSERT_TRUE(seen_.called.wait_for(5s));
  client.send(http::verb::get, "/elsewhere");  // arrives while the first waits
  std::this_thread::sleep_for(50ms);
  pending_.complete(Response{boost::json::value(1), true});
  EXPECT_EQ(client.read().status, 200);
  EXPECT_EQ(client.read().status, 404);
  std::lock_guard lock(seen_.mutex);
  EXPECT_FALSE(seen_.options.cancel->cancelled());
}

// ---- Streams ----

TEST_F(LocalApiTest, StreamIsNdjson) {
  auto state = std::make_shared<sdk_detail::StreamState>();
  state->encrypted = false;
  start(streaming(state));
  ASSERT_TRUE(state->push(boost::json::parse(R"({"n":0,"a":"x"})")));
  ASSERT_TRUE(state->push(boost::json::value(1)));
  std::thread producer([&] {
    ASSERT_TRUE(seen_.called.wait_for(5s));
    std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(state->push(boost::json::parse("[2]")));
    state->finish(std::nullopt);
  });
  auto request = request_body(new_agent_id(), "count");
  request["stream"] = true;
  Client client(socket_);
  const Reply reply = client.post(request);
  producer.join();
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.header("content-type"), "application/x-ndjson");
  EXPECT_EQ(reply.header("x-mesh-encrypted"), "false");
  EXPECT_TRUE(reply.chunked);
  EXPECT_EQ(reply.body,
            "{\"seq\":0,\"body\":{\"n\":0,\"a\":\"x\"}}\n"
            "{\"seq\":1,\"body\":1}\n"
            "{\"seq\":2,\"body\":[2]}\n"
            "{\"end\":3}\n");
  std::lock_guard lock(seen_.mutex);
  EXPECT_EQ(seen_.capability, "count");
  // The connection stays usable after a stream.
  EXPECT_EQ(client.exchange(http::verb::get, "/x").status, 404);
}

TEST_F(LocalApiTest, StreamEndsWithAnErrorLine) {
  auto state = std::make_shared<sdk_detail::StreamState>();
  start(streaming(state));
  ASSERT_TRUE(state->push(boost::json::value("first")));
  state->finish(Error{Errc::acl_denied, "bob does not allow count"});
  auto request = request_body(new_agent_id(), "count");
  request["stream"] = true;
  Client client(socket_);
  const Reply reply = client.post(request);
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.header("x-mesh-encrypted"), "true");
  EXPECT_EQ(reply.body, "{\"seq\":0,\"body\":\"first\"}\n" + error_body(Errc::acl_denied, "bob does not allow count") + "\n");
}

TEST_F(LocalApiTest, EmptyStream) {
  auto state = std::make_shared<sdk_detail::StreamState>();
  start(streaming(state));
  state->finish(std::nullopt);
  auto request = request_body(new_agent_id(), "count");
  request["stream"] = true;
  Client client(socket_);
  EXPECT_EQ(client.post(request).body, "{\"end\":0}\n");
}

TEST_F(LocalApiTest, ClosingEarlyCancelsAStream) {
  auto state = std::make_shared<sdk_detail::StreamState>();
  Latch stream_cancelled;
  state->cancel = [&stream_cancelled] { stream_cancelled.set(); };
  start(streaming(state));
  auto request = request_body(new_agent_id(), "count");
  request["stream"] = true;
  Client client(socket_);
  client.send(http::verb::post, "/request", boost::json::serialize(request));
  EXPECT_EQ(client.read_head(), 200);  // the head goes out before the first chunk
  ASSERT_TRUE(seen_.called.wait_for(5s));
  Latch token_cancelled;
  {
    std::lock_guard lock(seen_.mutex);
    ASSERT_TRUE(seen_.options.cancel);
    seen_.options.cancel->on_cancel([&token_cancelled] { token_cancelled.set(); });
  }
  ASSERT_TRUE(state->push(boost::json::value(1)));
  client.close();
  EXPECT_TRUE(token_cancelled.wait_for(5s));
  EXPECT_TRUE(stream_cancelled.wait_for(5s));
  server_.reset();  // the state's callbacks must not outlive anything they touch
}

// ---- GET /status, GET /agents ----

TEST_F(LocalApiTest, StatusComesFromTheHook) {
  LocalApiServer::Hooks hooks;
  hooks.status = [] { return boost::json::object{{"agent_id", "me"}, {"connected", true}}; };
  start(hooks);
  Client client(socket_);
  const Reply reply = client.exchange(http::verb::get, "/status");
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, R"({"agent_id":"me","connected":true})");
  EXPECT_EQ(reply.header("content-type"), "application/json");
}

TEST_F(LocalApiTest, AgentsPassesTheQuery) {
  std::mutex mutex;
  std::vector<std::pair<std::optional<std::string>, std::optional<std::string>>> calls;
  LocalApiServer::Hooks hooks;
  hooks.agents = [&](std::optional<std::string> capability, std::optional<std::string> q) -> Result<boost::json::value> {
    std::lock_guard lock(mutex);
    calls.emplace_back(capability, q);
    if (q == "fail") return Error{Errc::unauthorized, "registry said no"};
    return boost::json::value{{"items", boost::json::array{}}};
  };
  start(hooks);
  Client client(socket_);
  Reply reply = client.exchange(http::verb::get, "/agents?capability=echo&q=hello+w%C3%B6rld");
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, R"({"items":[]})");
  EXPECT_EQ(client.exchange(http::verb::get, "/agents").status, 200);
  EXPECT_EQ(client.exchange(http::verb::get, "/agents?capability=&q=").status, 200);
  reply = client.exchange(http::verb::get, "/agents?q=fail");
  EXPECT_EQ(reply.status, 401);
  EXPECT_EQ(reply.body, error_body(Errc::unauthorized, "registry said no"));
  EXPECT_EQ(client.exchange(http::verb::get, "/agents?capability=bad%20name").status, 400);
  EXPECT_EQ(client.exchange(http::verb::get, "/agents?q=%FF").status, 400);
  std::lock_guard lock(mutex);
  ASSERT_EQ(calls.size(), 4u);
  EXPECT_EQ(calls[0].first, "echo");
  EXPECT_EQ(calls[0].second, "hello w\xC3\xB6rld");
  EXPECT_EQ(calls[1].first, std::nullopt);
  EXPECT_EQ(calls[1].second, std::nullopt);
  EXPECT_EQ(calls[2].first, std::nullopt);
  EXPECT_EQ(calls[2].second, std::nullopt);
}

TEST_F(LocalApiTest, MissingHooksAreInternalErrors) {
  start(LocalApiServer::Hooks{});
  Client client(socket_);
  EXPECT_EQ(client.exchange(http::verb::get, "/status").status, 500);
  EXPECT_EQ(client.exchange(http::verb::get, "/agents").status, 500);
  EXPECT_EQ(client.post(request_body(new_agent_id())).status, 500);
}

// ---- Shutdown ----

TEST_F(LocalApiTest, StopWaitsForRequestsInFlight) {
  start(holding());
  Client client(socket_);
  client.send(http::verb::post, "/request", boost::json::serialize(request_body(new_agent_id())));
  ASSERT_TRUE(seen_.called.wait_for(5s));
  std::thread completer([&] {
    std::this_thread::sleep_for(200ms);
    pending_.complete(Response{boost::json::value("done"), true});
  });
  Client idle(socket_);
  server_->stop(5s);
  completer.join();
  const Reply reply = client.read();
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, R"("done")");
  EXPECT_TRUE(idle.closed_by_server());
  EXPECT_FALSE(fs::exists(fs::symlink_status(socket_)));
}

TEST_F(LocalApiTest, StopAfterGraceCancelsWhatIsLeft) {
  start(holding());
  Client client(socket_);
  client.send(http::verb::post, "/request", boost::json::serialize(request_body(new_agent_id())));
  ASSERT_TRUE(seen_.called.wait_for(5s));
  server_->stop(50ms);
  std::lock_guard lock(seen_.mutex);
  EXPECT_TRUE(seen_.options.cancel->cancelled());
  EXPECT_TRUE(client.closed_by_server());
}

}  // namespace
}  // namespace agent_mesh::meshd
