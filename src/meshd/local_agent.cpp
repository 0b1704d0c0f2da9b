// The forwarder's HTTP client (local_agent.hpp). The only Beast translation unit of the forwarder;
// the decisions about bodies and answers live in forwarding.cpp.
#include "meshd/local_agent.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "agent_mesh/version.hpp"
#include "meshd/forwarding.hpp"

namespace agent_mesh::meshd {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// Answer headers: ample for any agent, bounded against a broken one.
constexpr std::uint32_t kMaxAnswerHeaderBytes = 64 * 1024;
// Read size for answers (a stream's chunks are parsed as each read completes).
constexpr std::size_t kReadBufferBytes = 16 * 1024;

struct Target {
  std::string host;  // name or address, IPv6 without brackets
  bool host_is_ip = false;
  std::uint16_t port = 80;
  std::string target;       // origin-form path (and query), "/" at least
  std::string host_header;  // Host:
  std::string origin;       // "http://host:port", what messages name
};

Result<Target> parse_url(std::string_view url) {
  const auto bad = [](std::string_view why) {
    return fail(Errc::bad_request, "--local-agent URL " + std::string(why));
  };
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) return bad("is not an absolute http:// URL");
  const boost::urls::url_view& u = *parsed;
  if (u.scheme_id() != boost::urls::scheme::http) return bad("must start with http://");
  if (!u.has_authority() || u.encoded_host().empty()) return bad("has no host");
  if (u.has_userinfo()) return bad("must not contain user info");
  if (u.has_fragment()) return bad("must not contain a #fragment");
  const auto host_type = u.host_type();
  if (host_type != boost::urls::host_type::name && host_type != boost::urls::host_type::ipv4 &&
      host_type != boost::urls::host_type::ipv6)
    return bad("host must be a name or an IP address");
  Target t;
  t.host = u.host_address();
  if (t.host.find('\0') != std::string::npos) return bad("host is malformed");
  t.host_is_ip = host_type != boost::urls::host_type::name;
  if (t.host_is_ip) {
    boost::system::error_code ec;
    (void)asio::ip::make_address(t.host, ec);
    if (ec) return bad("host is not a valid IP address");
  }
  if (u.has_port() && !u.port().empty()) {
    unsigned long value = 0;
    for (const char c : u.port()) {
      if (c < '0' || c > '9' || value > 65535) {
        value = 0;
        break;
      }
      value = value * 10 + static_cast<unsigned long>(c - '0');
    }
    if (value == 0 || value > 65535) return bad("port must be 1..65535");
    t.port = static_cast<std::uint16_t>(value);
  }
  t.target = std::string(u.encoded_path());
  if (t.target.empty()) t.target = "/";
  if (u.has_query()) t.target += "?" + std::string(u.encoded_query());
  const std::string bracketed = host_type == boost::urls::host_type::ipv6 ? "[" + t.host + "]" : t.host;
  t.host_header = t.port == 80 ? bracketed : bracketed + ":" + std::to_string(t.port);
  t.origin = "http://" + bracketed + ":" + std::to_string(t.port);
  return t;
}

std::int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

// ---- ReplySink ----

ReplySink ReplySink::to(Responder responder) {
  ReplySink sink;
  sink.respond = [responder](boost::json::value body) { responder.respond(std::move(body)); };
  sink.fail = [responder](Errc code, std::string message) { responder.fail(code, std::move(message)); };
  sink.chunk = [responder](boost::json::value body) { return responder.chunk(std::move(body)); };
  sink.end = [responder] { responder.end(); };
  return sink;
}

// ---- The forwarder ----

namespace {

struct Call {
  Call(asio::io_context& io, IncomingCall incoming, ReplySink reply)
      : strand(asio::make_strand(io)), stream(strand), call(std::move(incoming)), sink(std::move(reply)) {}

  asio::strand<asio::io_context::executor_type> strand;
  beast::tcp_stream stream;
  IncomingCall call;
  ReplySink sink;
  // Strand only.
  bool cancelled = false;      // the caller cancelled / the deadline passed in the SDK: send nothing
  bool shutting_down = false;  // the forwarder is being destroyed
  bool answered = false;
  std::chrono::milliseconds budget{0};

  void close() {
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream.close();
  }
  // Every final answer goes through these: nothing after a cancel, at most one answer.
  bool may_answer() const { return !cancelled && !answered; }
  void respond(boost::json::value body) {
    if (!may_answer()) return;
    answered = true;
    sink.respond(std::move(body));
  }
  void fail(Error error) {
    if (!may_answer()) return;
    answered = true;
    sink.fail(error.code, std::move(error.message));
  }
  void end() {
    if (!may_answer()) return;
    answered = true;
    sink.end();
  }
};

}  // namespace

struct LocalAgentForwarder::Impl : std::enable_shared_from_this<LocalAgentForwarder::Impl> {
  explicit Impl(Target t) : target(std::move(t)), work(asio::make_work_guard(io)) {}

  Target target;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::vector<std::thread> threads;
  mutable std::mutex mutex;
  std::set<std::shared_ptr<Call>> calls;  // in flight
  bool stopping = false;

  void start() {
    for (int i = 0; i < 2; ++i) threads.emplace_back([this] { io.run(); });
  }

  void shutdown() {
    {
      std::lock_guard lock(mutex);
      if (stopping) return;
      stopping = true;
      for (const auto& call : calls) {
        asio::post(call->strand, [call] {
          call->shutting_down = true;
          call->close();
        });
      }
    }
    work.reset();
    for (auto& thread : threads) thread.join();
    threads.clear();
  }

  void forward(IncomingCall incoming, ReplySink sink) {
    auto call = std::make_shared<Call>(io, std::move(incoming), std::move(sink));
    {
      std::lock_guard lock(mutex);
      if (stopping) {
        call->fail(fail(Errc::unreachable, "meshd is shutting down"));
        return;
      }
      calls.insert(call);
    }
    // The cancel callback may run on any thread, also after this forwarder is gone: it holds
    // nothing but weak references, and reaches the strand only while the forwarder lives.
    call->call.cancelled.on_cancel([weak_impl = weak_from_this(), weak_call = std::weak_ptr<Call>(call)] {
      const auto impl = weak_impl.lock();
      if (!impl) return;
      const auto locked = weak_call.lock();
      if (!locked) return;
      asio::post(locked->strand, [locked] {
        locked->cancelled = true;
        locked->close();
      });
    });
    asio::co_spawn(call->strand, run(call), [self = shared_from_this(), call](const std::exception_ptr& failure) {
      if (failure) {
        try {
          std::rethrow_exception(failure);
        } catch (const std::exception& e) {
          call->fail(fail(Errc::internal, std::string("forwarding to the local agent failed: ") + e.what()));
        }
      }
      call->close();
      std::lock_guard lock(self->mutex);
      self->calls.erase(call);
    });
  }

  [[nodiscard]] Error unreachable(const beast::error_code& ec, std::string_view doing = "") const {
    std::string message = "local agent at " + target.origin + " unreachable: ";
    message += doing;
    message += ec.message();
    return fail(Errc::agent_error, std::move(message));
  }

  [[nodiscard]] Error timed_out(const Call& call, std::string_view stage) const {
    return fail(Errc::timeout, "local agent at " + target.origin + " did not " + std::string(stage) + " within " +
                                   std::to_string(call.budget.count()) + " ms");
  }

  // An I/O error after the call started: nothing to say when cancelled; the deadline → timeout.
  [[nodiscard]] Error io_failed(const Call& call, const beast::error_code& ec, std::string_view stage) const {
    if (call.shutting_down) return fail(Errc::unreachable, "meshd is shutting down");
    if (ec == beast::error::timeout) return timed_out(call, stage);
    if (ec == http::error::end_of_stream || ec == http::error::partial_message || ec == asio::error::eof ||
        ec == asio::error::connection_reset) {
      return fail(Errc::agent_error, "local agent at " + target.origin + " closed the connection before its answer was complete");
    }
    if (ec == http::error::header_limit) {
      return fail(Errc::agent_error, "local agent at " + target.origin + " sent answer headers over " +
                                         std::to_string(kMaxAnswerHeaderBytes) + " bytes");
    }
    if (&ec.category() == &http::make_error_code(http::error::end_of_stream).category()) {
      return fail(Errc::agent_error, "local agent at " + target.origin + " sent a bad HTTP answer: " + ec.message());
    }
    return unreachable(ec);
  }

  asio::awaitable<void> run(std::shared_ptr<Call> call) {
    // The deadline: the caller's (unix ms) mapped onto the steady clock.
    std::int64_t remaining = kDefaultTimeout.count();
    if (call->call.deadline_ms) remaining = *call->call.deadline_ms - unix_ms_now();
    if (remaining <= 0) {
      call->fail(fail(Errc::timeout, "the request's deadline passed before it reached the local agent"));
      co_return;
    }
    call->budget = std::chrono::milliseconds(remaining);
    const auto deadline = Clock::now() + call->budget;

    // Resolve (names only; an IP literal needs none). Asio's resolver cannot be interrupted, so a
    // name is checked against the deadline once it resolves; local agents are on localhost.
    std::vector<tcp::endpoint> endpoints;
    if (target.host_is_ip) {
      endpoints.emplace_back(asio::ip::make_address(target.host), target.port);
    } else {
      tcp::resolver resolver(call->strand);
      auto [ec, results] = co_await resolver.async_resolve(target.host, std::to_string(target.port), use_tuple);
      if (call->cancelled) co_return;
      if (ec) {
        call->fail(io_failed(*call, ec, "resolve"));
        co_return;
      }
      for (const auto& entry : results) endpoints.push_back(entry.endpoint());
      if (Clock::now() >= deadline) {
        call->fail(timed_out(*call, "resolve"));
        co_return;
      }
    }
    if (call->cancelled || call->shutting_down) {
      call->fail(fail(Errc::unreachable, "meshd is shutting down"));
      co_return;
    }

    // Every operation from here on is bounded by the deadline (tcp_stream closes the socket then).
    call->stream.expires_at(deadline);
    {
      auto [ec, endpoint] = co_await call->stream.async_connect(endpoints, use_tuple);
      (void)endpoint;
      if (call->cancelled) co_return;
      if (ec) {
        if (ec == beast::error::timeout || call->shutting_down) {
          call->fail(io_failed(*call, ec, "accept the connection"));
        } else {
          call->fail(unreachable(ec));
        }
        co_return;
      }
    }

    http::request<http::string_body> request{http::verb::post, target.target, 11};
    request.set(http::field::host, target.host_header);
    request.set(http::field::user_agent, "agent-meshd/" + std::string(kVersion));
    request.set(http::field::content_type, "application/json");
    if (call->call.stream) request.set(http::field::accept, "text/event-stream, application/x-ndjson");
    request.set("X-Mesh-From", call->call.from.str());
    request.set("X-Mesh-Capability", call->call.capability);
    request.set("X-Mesh-Request-Id", call->call.id.to_string());
    request.body() = forwarded_body(call->call.capability, call->call.body);
    request.keep_alive(false);
    request.prepare_payload();
    {
      auto [ec, written] = co_await http::async_write(call->stream, request, use_tuple);
      (void)written;
      if (call->cancelled) co_return;
      if (ec) {
        if (ec == beast::error::timeout || call->shutting_down) {
          call->fail(io_failed(*call, ec, "take the request"));
        } else {
          call->fail(unreachable(ec, "sending the request failed: "));
        }
        co_return;
      }
    }

    http::response_parser<http::buffer_body> parser;
    parser.header_limit(kMaxAnswerHeaderBytes);
    parser.body_limit(boost::none);  // bounded below: a stream may be long, a whole answer may not
    beast::flat_buffer buffer;
    {
      auto [ec, read] = co_await http::async_read_header(call->stream, buffer, parser, use_tuple);
      (void)read;
      if (call->cancelled) co_return;
      if (ec) {
        call->fail(io_failed(*call, ec, "answer"));
        co_return;
      }
    }
    const int status = static_cast<int>(parser.get().result_int());
    const std::string content_type(parser.get()[http::field::content_type]);
    const bool success = status >= 200 && status <= 299;
    std::optional<StreamBodyParser> chunks;
    if (call->call.stream && success) {
      if (auto kind = StreamBodyParser::kind_for(content_type)) chunks.emplace(*kind);
    }

    std::string body;
    std::vector<char> read_buffer(kReadBufferBytes);
    while (!parser.is_done()) {
      parser.get().body().data = read_buffer.data();
      parser.get().body().size = read_buffer.size();
      auto [ec, read] = co_await http::async_read_some(call->stream, buffer, parser, use_tuple);
      (void)read;
      if (call->cancelled) co_return;
      if (ec == http::error::need_buffer) ec = {};
      if (ec) {
        call->fail(io_failed(*call, ec, chunks ? "end its stream" : "answer"));
        co_return;
      }
      const std::size_t got = read_buffer.size() - parser.get().body().size;
      const std::string_view bytes(read_buffer.data(), got);
      if (!chunks) {
        if (body.size() + got > kMaxRawAnswerBytes) {
          call->fail(fail(Errc::too_large, "local agent's answer is larger than " +
                                               std::to_string(kMaxRawAnswerBytes) + " bytes"));
          co_return;
        }
        body.append(bytes);
        continue;
      }
      auto parsed = chunks->feed(bytes);
      if (!parsed) {
        call->fail(std::move(parsed).error());
        co_return;
      }
      if (!send_chunks(*call, std::move(*parsed))) co_return;
      if (chunks->error()) {  // after the chunks parsed before it
        call->fail(*chunks->error());
        co_return;
      }
    }
    call->close();  // one request per connection; the answer is complete

    if (chunks) {
      auto parsed = chunks->finish();
      if (!parsed) {
        call->fail(std::move(parsed).error());
        co_return;
      }
      if (!send_chunks(*call, std::move(*parsed))) co_return;
      if (chunks->error()) {
        call->fail(*chunks->error());
        co_return;
      }
      call->end();
      co_return;
    }
    auto answer = interpret_unary_answer(status, content_type, body);
    if (!answer) {
      call->fail(std::move(answer).error());
      co_return;
    }
    if (!call->call.stream) {
      call->respond(std::move(*answer));
      co_return;
    }
    // A stream request answered with one JSON value: that value is the stream's only chunk.
    if (!send_chunks(*call, {std::move(*answer)})) co_return;
    call->end();
  }

  // false: stop (cancelled, or the SDK refused the chunk because the call is over).
  static bool send_chunks(Call& call, std::vector<boost::json::value> values) {
    for (auto& value : values) {
      if (!call.may_answer()) return false;
      if (auto sent = call.sink.chunk(std::move(value)); !sent) {
        call.answered = true;  // the SDK considers the call finished; nothing more to say
        call.close();
        return false;
      }
    }
    return true;
  }
};

LocalAgentForwarder::LocalAgentForwarder(std::string local_agent_url) {
  auto target = parse_url(local_agent_url);
  if (!target) throw std::invalid_argument(target.error().message);
  impl_ = std::make_shared<Impl>(std::move(*target));
  impl_->start();
}

LocalAgentForwarder::~LocalAgentForwarder() { impl_->shutdown(); }

Status LocalAgentForwarder::validate_url(std::string_view local_agent_url) {
  auto target = parse_url(local_agent_url);
  if (!target) return std::move(target).error();
  return {};
}

void LocalAgentForwarder::forward(IncomingCall call, Responder responder) {
  impl_->forward(std::move(call), ReplySink::to(std::move(responder)));
}

void LocalAgentForwarder::forward(IncomingCall call, ReplySink sink) { impl_->forward(std::move(call), std::move(sink)); }

std::size_t LocalAgentForwarder::in_flight() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->calls.size();
}

}  // namespace agent_mesh::meshd
