// LocalAgentForwarder (src/meshd/local_agent.hpp) against a scripted HTTP server on loopback: the
// request it sends, unary and streamed answers, errors, the deadline and cancellation.
#include "meshd/local_agent.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "meshd/forwarding.hpp"

namespace agent_mesh::meshd {
namespace {

using namespace std::chrono_literals;

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

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool set_ = false;
};

bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// One request as the server received it.
struct Received {
  std::string head;  // request line and headers
  std::string body;
  [[nodiscard]] std::string header(std::string_view name) const {
    std::string lower_head = head;
    for (char& c : lower_head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string key = "\r\n" + std::string(name) + ":";
    for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const auto at = lower_head.find(key);
    if (at == std::string::npos) return "<absent>";
    auto start = at + key.size();
    while (start < head.size() && head[start] == ' ') ++start;
    return head.substr(start, head.find("\r\n", start) - start);
  }
};

// A loopback HTTP/1.1 server that reads one request per connection and hands the socket to a
// script; the script writes the answer (and may wait); the connection closes when it returns.
class ScriptedServer {
 public:
  using Script = std::function<void(int fd, const Received&)>;

  explicit ScriptedServer(Script script) : script_(std::move(script)) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    const int one = 1;
    ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 || ::listen(listener_, 16) != 0) {
      throw std::runtime_error("cannot listen");
    }
    socklen_t length = sizeof(address);
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~ScriptedServer() {
    stopping_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    ::close(listener_);
    thread_.join();
    for (auto& worker : workers_) worker.join();
  }

  [[nodiscard]] std::string url(std::string_view path = "") const {
    return "http://127.0.0.1:" + std::to_string(port_) + std::string(path);
  }
  Received wait_request() {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, 5s, [&] { return !received_.empty(); })) return {};
    return received_.front();
  }
  std::atomic<bool> stopping_{false};

 private:
  void run() {
    for (;;) {
      const int fd = ::accept(listener_, nullptr, nullptr);
      if (fd < 0) return;
      workers_.emplace_back([this, fd] { serve(fd); });
    }
  }
  void serve(int fd) {
    std::string data;
    char buffer[4096];
    std::size_t header_end = std::string::npos;
    std::size_t content_length = 0;
    while (true) {
      if (header_end == std::string::npos) {
        header_end = data.find("\r\n\r\n");
        if (header_end != std::string::npos) {
          Received probe{data.substr(0, header_end + 2), ""};
          const std::string length = probe.header("content-length");
          content_length = length == "<absent>" ? 0 : std::stoul(length);
        }
      }
      if (header_end != std::string::npos && data.size() >= header_end + 4 + content_length) break;
      const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) {
        ::close(fd);
        return;
      }
      data.append(buffer, static_cast<std::size_t>(n));
    }
    Received request{data.substr(0, header_end + 2), data.substr(header_end + 4, content_length)};
    {
      std::lock_guard lock(mutex_);
      received_.push_back(request);
    }
    cv_.notify_all();
    script_(fd, request);
    ::close(fd);
  }

  Script script_;
  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::thread thread_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Received> received_;
};

std::string json_answer(int status, std::string_view body, std::string_view type = "application/json") {
  return "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: " + std::string(type) +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + std::string(body);
}

// Waits until the peer closes the connection (read returns 0 or fails).
bool wait_peer_closed(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (::poll(&p, 1, 50) > 0) {
      char byte;
      const ssize_t n = ::recv(fd, &byte, 1, 0);
      if (n <= 0) return true;
    }
  }
  return false;
}

// Everything a call answered, in order: "respond <json>", "fail <code> <message>", "chunk <json>", "end".
class Recorder {
 public:
  ReplySink sink() {
    ReplySink s;
    s.respond = [this](boost::json::value body) { add("respond " + boost::json::serialize(body)); };
    s.fail = [this](Errc code, std::string message) { add("fail " + std::string(to_string(code)) + " " + message); };
    s.chunk = [this](boost::json::value body) -> Status {
      add("chunk " + boost::json::serialize(body));
      return {};
    };
    s.end = [this] { add("end"); };
    return s;
  }
  // Waits until `count` events were recorded (or 5 s), then returns them all.
  std::vector<std::string> wait(std::size_t count, std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, timeout, [&] { return events_.size() >= count; });
    return events_;
  }
  std::vector<std::string> events() {
    std::lock_guard lock(mutex_);
    return events_;
  }

 private:
  void add(std::string event) {
    std::lock_guard lock(mutex_);  // notify under the lock (see Latch::set)
    events_.push_back(std::move(event));
    cv_.notify_all();
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::string> events_;
};

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

IncomingCall make_call(boost::json::value body, bool stream = false, std::int64_t timeout_ms = 5000) {
  IncomingCall call;
  call.from = KeyPair::generate().agent_id();
  call.id = Uuid::generate();
  call.capability = "echo";
  call.body = std::move(body);
  call.stream = stream;
  call.deadline_ms = now_ms() + timeout_ms;
  return call;
}

// ---- URLs ----

TEST(LocalAgentUrl, Validation) {
  EXPECT_TRUE(LocalAgentForwarder::validate_url("http://127.0.0.1:9002"));
  EXPECT_TRUE(LocalAgentForwarder::validate_url("http://localhost:9002/agent?x=1"));
  EXPECT_TRUE(LocalAgentForwarder::validate_url("http://[::1]:9002/"));
  EXPECT_TRUE(LocalAgentForwarder::validate_url("http://localhost"));
  for (const std::string_view bad : {"", "127.0.0.1:9002", "https://localhost:9002", "ftp://x", "http://:80",
                                     "http://user@localhost:1", "http://localhost:0", "http://localhost:70000",
                                     "http://localhost:1/#frag"}) {
    auto checked = LocalAgentForwarder::validate_url(bad);
    EXPECT_FALSE(checked) << bad;
    if (!checked) {
      EXPECT_EQ(checked.error().code, Errc::bad_request);
    }
  }
  EXPECT_THROW(LocalAgentForwarder("not a url"), std::invalid_argument);
}

// ---- Unary ----

TEST(LocalAgentForwarder, PostsTheForwardedBodyWithMeshHeaders) {
  ScriptedServer server([](int fd, const Received& request) {
    write_all(fd, json_answer(200, R"({"agent":"bob","echo":)" + request.body + "}"));
  });
  LocalAgentForwarder forwarder(server.url("/agent/in"));
  Recorder recorder;
  IncomingCall call = make_call(boost::json::parse(R"({"message":"hello from alice"})"));
  const std::string from = call.from.str();
  const std::string id = call.id.to_string();
  forwarder.forward(call, recorder.sink());
  const auto events = recorder.wait(1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], R"(respond {"agent":"bob","echo":{"capability":"echo","message":"hello from alice"}})");
  const Received request = server.wait_request();
  EXPECT_TRUE(request.head.starts_with("POST /agent/in HTTP/1.1\r\n")) << request.head;
  EXPECT_EQ(request.header("content-type"), "application/json");
  EXPECT_EQ(request.header("x-mesh-from"), from);
  EXPECT_EQ(request.header("x-mesh-capability"), "echo");
  EXPECT_EQ(request.header("x-mesh-request-id"), id);
  EXPECT_EQ(request.header("accept"), "<absent>");
  EXPECT_EQ(request.header("host"), "127.0.0.1:" + server.url().substr(server.url().rfind(':') + 1));
  EXPECT_EQ(request.body, R"({"capability":"echo","message":"hello from alice"})");
}

TEST(LocalAgentForwarder, DefaultPathIsSlash) {
  ScriptedServer server([](int fd, const Received&) { write_all(fd, json_answer(200, "1")); });
  LocalAgentForwarder forwarder(server.url());
  Recorder recorder;
  forwarder.forward(make_call(boost::json::value(5)), recorder.sink());
  EXPECT_EQ(recorder.wait(1), std::vector<std::string>{"respond 1"});
  const Received request = server.wait_request();
  EXPECT_TRUE(request.head.starts_with("POST / HTTP/1.1\r\n")) << request.head;
  EXPECT_EQ(request.body, R"({"capability":"echo","data":5})");
}

TEST(LocalAgentForwarder, ProtocolErrorPassesThrough) {
  ScriptedServer server([](int fd, const Received&) {
    write_all(fd, json_answer(429, R"({"error":{"code":"rate_limited","message":"slow down"}})"));
  });
  LocalAgentForwarder forwarder(server.url());
  Recorder recorder;
  forwarder.forward(make_call(boost::json::object{}), recorder.sink());
  EXPECT_EQ(recorder.wait(1), std::vector<std::string>{"fail rate_limited slow down"});
}

TEST(LocalAgentForwarder, NonJsonAnswerIsAgentError) {
  ScriptedServer server([](int fd, const Received&) { write_all(fd, json_answer(500, "Traceback: boom", "text/plain")); });
  LocalAgentForwarder forwarder(server.url());
  Recorder recorder;
  forwarder.forward(make_call(boost::json::object{}), recorder.sink());
  EXPECT_EQ(recorder.wait(1), std::vector<std::string>{"fail agent_error local agent answered HTTP 500: Traceback: boom"});
}

TEST(LocalAgentForwarder, ChunkedAndCloseDelimitedAnswers) {
  ScriptedServer chunked([](int fd, const Received&) {
    write_all(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n");
  });
  ScriptedServer close_delimited([](int fd, const Received&) {
    write_all(fd, "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"x\":true}");
  });
  LocalAgentForwarder a(chunked.url());
  LocalAgentForwarder b(close_delimited.url());
  Recorder ra, rb;
  a.forward(make_call(1), ra.sink());
  b.forward(make_call(1), rb.sink());
  EXPECT_EQ(ra.wait(1), std::vector<std::string>{"respond [1,2]"});
  EXPECT_EQ(rb.wait(1), std::vector<std::string>{R"(respond {"x":true})"});
}

TEST(LocalAgentForwarder, OversizedAnswerIsTooLarge) {
  ScriptedServer server([](int fd, const Received&) {
    const std::string body = "\"" + std::string(kMaxRawAnswerBytes, 'x') + "\"";
    write_all(fd, json_answer(200, body));
  });
  LocalAgentForwarder forwarder(server.url());
  Recorder recorder;
  forwarder.forward(make_call(1), recorder.sink());
  const auto events = recorder.wait(1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].starts_with("fail too_large ")) << events[0];
}

TEST(LocalAgentForwarder, ConnectionRefusedIsAgentError) {
  // A port nobody listens on: bind one, then close it.
  std::string url;
  {
    ScriptedServer gone([](int, const Received&) {});
    url = gone.url("/secret-path");
  }
  LocalAgentForwarder forwarder(url);
  Recorder recorder;
  forwarder.forward(make_call(1), recorder.sink());
  const auto events = recorder.wait(1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].starts_with("fail agent_error local agent at http://127.0.0.1:")) << events[0];
  EXPECT_NE(events[0].find("unreachable"), std::string::npos) << events[0];
  EXPECT_EQ(events[0].find("secret-path"), std::string::npos) << events[0];
}

TEST(LocalAgentForwarder, DeadlineIsTimeout) {
  Latch release;
  ScriptedServer server([&release](int, const Received&) { release.wait_for(10s); });
  LocalAgentForwarder forwarder(server.url());
  Recorder recorder;
  const auto started = std::chrono::steady_clock::now();
  forwarder.forward(make_call(1, false, 300), recorder.sink());
  const auto events = recorder.wait(1);
  release.set();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].starts_with("fail timeout ")) << events[0];
  EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);
}

TEST(LocalAgentForwarder, PastDeadlineIsTimeoutAtOnce) {
  ScriptedServer server([](int fd, const Received&) { write_all(fd, json_answer(200, "1")); });
  LocalAgentForwarder forwarder(server.url());
  Recorder recorder;
  forwarder.forward(make_call(1, false, -10), recorder.sink());
  const auto events = recorder.wait(1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].starts_with("fail timeout ")) << events[0];
}

TEST(LocalAgentForwarder, CancelClosesTheLocalConnectionAndSendsNothing) {
  Latch closed;
  ScriptedServer server([&closed](int fd, const Received&) {
    if (wait_peer_closed(fd, 5s)) closed.set();
  });
  LocalAgentForwarder forwarder(server.url());
  Recorder recorder;
  IncomingCall call = make_call(1);
  CancelToken token = call.cancelled;
  forwarder.forward(std::move(call), recorder.sink());
  server.wait_request();
  token.cancel();
  EXPECT_TRUE(closed.wait_for(5s));
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(recorder.events().empty());
  EXPECT_EQ(forwarder.in_flight(), 0u);
}

TEST(LocalAgentForwarder, ShutdownAnswersCallsInFlight) {
  Latch release;
  ScriptedServer server([&release](int, const Received&) { release.wait_for(10s); });
  Recorder recorder;
  {
    LocalAgentForwarder forwarder(server.url());
    forwarder.forward(make_call(1), recorder.sink());
    server.wait_request();
    EXPECT_EQ(forwarder.in_flight(), 1u);
  }
  release.set();
  EXPECT_EQ(recorder.events(), std::vector<std::string>{"fail unreachable meshd is shutting down"});
}

// ---- Streams ----

TEST(LocalAgentForwarder, SseStreamArrivesChunkByChunk) {
  Latch first_seen;
  ScriptedServer server([&first_seen](int fd, const Received&) {
    write_all(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n");
    write_all(fd, ": hello\n\ndata: {\"n\":0}\n\n");
    // The rest only once the first chunk went out: proves chunks are not held until the end.
    if (!first_seen.wait_for(5s)) return;
    write_all(fd, "data: {\"n\":1}\r\n\r\ndata: 2\n\n");
  });
  LocalAgentForwarder forwarder(server.url());
  Recorder recorder;
  ReplySink sink = recorder.sink();
  auto chunk = sink.chunk;
  sink.chunk = [chunk, &first_seen](boost::json::value body) {
    auto sent = chunk(std::move(body));
    first_seen.set();
    return sent;
  };
  forwarder.forward(make_call(boost::json::object{{"to", 3}}, true), sink);
  EXPECT_EQ(recorder.wait(4), (std::vector<std::string>{R"(chunk {"n":0})", R"(chunk {"n":1})", "chunk 2", "end"}));
  EXPECT_EQ(server.wait_request().header("accept"), "text/event-stream, application/x-ndjson");
}

TEST(LocalAgentForwarder, NdjsonStreamChunked) {
  ScriptedServer server([](int fd, const Received&) {
    write_all(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n");
    write_all(fd, "4\r\n1\n{\"\r\n");
    std::this_thread::sleep_for(20ms);
    write_all(fd, "6\r\na\":2}\n\r\n3\r\n[3]\r\n0\r\n\r\n");
  });
  LocalAgentForwarder forwarder(server.url());
  Recorder recorder;
  forwarder.forward(make_call(1, true), recorder.sink());
  EXPECT_EQ(recorder.wait(4), (std::vector<std::string>{"chunk 1", R"(chunk {"a":2})", "chunk [3]", "end"}));
}

TEST(LocalAgentForwarder, JsonAnswerToAStreamIsOneChunk) {
  ScriptedServer server([](int fd, const Received&) { write_all(fd, json_answer(200, R"({"whole":true})")); });
  LocalAgentForwarder forwarder(server.url());
  Recorder recorder;
  forwarder.forward(make_call(1, true), recorder.sink());
  EXPECT_EQ(recorder.wait(2), (std::vector<std::string>{R"(chunk {"whole":true})", "end"}));
}

TEST(LocalAgentForwarder, BadStreamChunkFailsTheStream) {
  ScriptedServer server([](int fd, const Received&) {
    write_all(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n1\nnope\n2\n");
  });
  LocalAgentForwarder forwarder(server.url());
  Recorder recorder;
  forwarder.forward(make_call(1, true), recorder.sink());
  const auto events = recorder.wait(2);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0], "chunk 1");
  EXPECT_TRUE(events[1].starts_with("fail agent_error ")) << events[1];
}

TEST(LocalAgentForwarder, StreamErrorStatusIsAnError) {
  ScriptedServer server([](int fd, const Received&) {
    write_all(fd, json_answer(403, R"({"error":{"code":"acl_denied","message":"no"}})"));
  });
  LocalAgentForwarder forwarder(server.url());
  Recorder recorder;
  forwarder.forward(make_call(1, true), recorder.sink());
  EXPECT_EQ(recorder.wait(1), std::vector<std::string>{"fail acl_denied no"});
}

TEST(LocalAgentForwarder, StreamDeadline) {
  Latch release;
  ScriptedServer server([&release](int fd, const Received&) {
    write_all(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n");
    release.wait_for(10s);
  });
  LocalAgentForwarder forwarder(server.url());
  Recorder recorder;
  forwarder.forward(make_call(1, true, 400), recorder.sink());
  const auto events = recorder.wait(2);
  release.set();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0], "chunk 1");
  EXPECT_TRUE(events[1].starts_with("fail timeout ")) << events[1];
}

TEST(LocalAgentForwarder, RefusedChunkStopsTheStream) {
  Latch closed;
  ScriptedServer server([&closed](int fd, const Received&) {
    write_all(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\ndata: 2\n\n");
    if (wait_peer_closed(fd, 5s)) closed.set();
  });
  LocalAgentForwarder forwarder(server.url());
  Recorder recorder;
  ReplySink sink = recorder.sink();
  auto record = sink.chunk;
  sink.chunk = [record](boost::json::value body) -> Status {
    (void)record(std::move(body));
    return fail(Errc::cancelled, "the request finished");
  };
  forwarder.forward(make_call(1, true), sink);
  EXPECT_TRUE(closed.wait_for(5s));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(recorder.events(), std::vector<std::string>{"chunk 1"});
}

}  // namespace
}  // namespace agent_mesh::meshd
