// mcp-server: the MCP adapter (cli-mcp-web.md "MCP adapter") over stdio or Streamable HTTP, with the
// optional receive endpoint for meshd.
#include <sodium.h>
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <condition_variable>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/json.hpp"
#include "agent_mesh/secret_compare.hpp"
#include "ctl/commands.hpp"
#include "ctl/mcp_protocol.hpp"
#include "ctl/mcp_tools.hpp"
#include "net/http_server.hpp"

namespace agent_mesh::ctl {

namespace {

namespace json = boost::json;
using mcp::MeshTools;
using mcp::Session;

// Sessions one HTTP server keeps at once; past it initialize is answered 503.
constexpr std::size_t kMaxHttpSessions = 256;
// A comment on every GET stream this often, so a client that went away is noticed.
constexpr std::chrono::seconds kStreamKeepalive{25};
// Requests handled at once in stdio mode.
constexpr int kMaxStdioCalls = 64;
// How long shutdown waits for calls in flight (they are cancelled first).
constexpr std::chrono::seconds kShutdownGrace{5};

struct McpOptions {
  bool stdio = false;
  std::string listen = "127.0.0.1:8090";
  int receive_port = -1;
  double receive_timeout_s = 25;
  std::vector<std::string> allow_origins;
};

std::string sse_event(const json::value& message) { return "event: message\ndata: " + json::serialize(message) + "\n\n"; }

// Repeats `task` every `period` until stopped; stop() returns once it has.
class Ticker {
 public:
  Ticker(std::chrono::milliseconds period, std::function<void()> task)
      : thread_([this, period, task = std::move(task)] {
          std::unique_lock lock(mutex_);
          while (!stop_) {
            if (wake_.wait_for(lock, period, [this] { return stop_; })) break;
            lock.unlock();
            task();
            lock.lock();
          }
        }) {}
  ~Ticker() { stop(); }
  void stop() {
    {
      const std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

std::unique_ptr<net::HttpServer> start_receive_server(const McpOptions& options, const std::shared_ptr<mcp::ReceiveInbox>& inbox) {
  if (options.receive_port < 0) return nullptr;
  net::HttpServerOptions server_options;
  server_options.port = static_cast<std::uint16_t>(options.receive_port);
  auto server = net::HttpServer::start(server_options, [inbox](net::ServerRequest request, std::shared_ptr<net::ResponseWriter> writer) {
    inbox->serve(std::move(request), writer);
  });
  if (!server) fail_command("--receive-port: " + server.error().message, "choose another port (0 picks a free one)");
  return std::move(server).value();
}

// ---- stdio ----

void run_stdio(Context& context, MeshTools& tools, Interrupts& interrupts) {
  Session session(tools);
  std::mutex out_mutex;
  const auto send = [&out_mutex](const json::object& message) {
    const std::lock_guard lock(out_mutex);
    std::cout << json::serialize(message) << "\n" << std::flush;
  };
  std::mutex calls_mutex;
  std::condition_variable calls_done;
  int calls = 0;
  std::atomic<bool> input_ended{false};

  Ticker refresher(std::chrono::duration_cast<std::chrono::milliseconds>(mcp::kToolListTtl), [&] {
    if (tools.refresh()) send(json::object{{"jsonrpc", "2.0"}, {"method", "notifications/tools/list_changed"}});
  });

  std::thread reader([&] {
    std::string line;
    while (std::getline(std::cin, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      if (line.size() > mcp::kMaxMessageBytes) {
        send(mcp::error_message(nullptr, mcp::kInvalidRequest, "Invalid Request: a message is at most 4 MiB"));
        continue;
      }
      // tools/call and tools/list may block (mesh, registry): on their own thread.
      auto parsed = agent_mesh::json::parse_ijson(line, {.max_bytes = mcp::kMaxMessageBytes, .max_depth = 128});
      const bool blocking = parsed && parsed->is_object() && parsed->as_object().contains("id") &&
                            parsed->as_object().if_contains("method") != nullptr &&
                            (parsed->as_object().at("method") == "tools/call" || parsed->as_object().at("method") == "tools/list");
      if (!blocking) {
        auto handled = parsed ? session.handle(*parsed, send) : session.handle(line, send);
        if (handled.response) send(*handled.response);
        continue;
      }
      {
        std::unique_lock lock(calls_mutex);
        calls_done.wait(lock, [&] { return calls < kMaxStdioCalls; });
        ++calls;
      }
      std::thread([&, message = std::move(parsed).value()] {
        auto handled = session.handle(message, send);
        if (handled.response) send(*handled.response);
        const std::lock_guard lock(calls_mutex);
        --calls;
        calls_done.notify_all();
      }).detach();
    }
    input_ended = true;
    interrupts.wake();
  });
  while (interrupts.wait(std::chrono::hours(24)) == Interrupts::Wait::timeout) {
  }
  refresher.stop();
  session.cancel_all();
  {
    std::unique_lock lock(calls_mutex);
    calls_done.wait_for(lock, kShutdownGrace, [&] { return calls == 0; });
  }
  if (!input_ended) {
    // The reader blocks in getline on a stdin that stays open: leave without waiting for it.
    std::cout.flush();
    std::_Exit(kExitOk);
  }
  reader.join();
  (void)context;
}

// ---- Streamable HTTP ----

struct HttpSession {
  explicit HttpSession(MeshTools& tools) : session(tools) {}
  Session session;
  std::mutex mutex;
  std::shared_ptr<net::ResponseWriter> stream;  // the GET stream, if open
};

class McpHttp {
 public:
  McpHttp(MeshTools& tools, std::string token, std::vector<std::string> allow_origins)
      : tools_(tools), token_(std::move(token)), allow_origins_(std::move(allow_origins)) {}

  void handle(net::ServerRequest request, const std::shared_ptr<net::ResponseWriter>& writer) {
    const auto plain_error = [&writer](int status, Errc code, std::string message, std::vector<net::HttpHeader> extra = {}) {
      extra.push_back({"Content-Type", "application/json"});
      (void)writer->respond(status, std::move(extra), Error{code, std::move(message)}.to_http_json());
    };
    const auto rpc_error = [&writer](int status, int code, std::string message) {
      (void)writer->respond(status, {{"Content-Type", "application/json"}}, json::serialize(mcp::error_message(nullptr, code, std::move(message))));
    };
    if (request.path() != "/mcp") return plain_error(404, Errc::not_found, "the MCP endpoint is /mcp");
    // DNS rebinding: a page on some other name resolving to 127.0.0.1 sends that name as Host.
    if (!loopback_host(request.header("host").value_or(""))) {
      return plain_error(403, Errc::forbidden, "Host must be a loopback name (127.0.0.1, localhost, [::1])");
    }
    if (auto origin = request.header("origin"); origin && !allowed_origin(*origin)) {
      return plain_error(403, Errc::forbidden, "Origin " + std::string(*origin) + " is not allowed (see --allow-origin)");
    }
    const std::string_view authorization = request.header("authorization").value_or("");
    constexpr std::string_view kBearer = "Bearer ";
    if (authorization.size() <= kBearer.size() || authorization.substr(0, kBearer.size()) != kBearer ||
        !secrets_equal(token_, authorization.substr(kBearer.size()))) {
      return plain_error(401, Errc::unauthorized,
                         "a Bearer token is required: the API token meshctl uses (`agent-meshctl auth-header` prints the header)",
                         {{"WWW-Authenticate", "Bearer"}});
    }
    if (auto version = request.header("mcp-protocol-version"); version && !mcp::is_supported_version(*version)) {
      return rpc_error(400, mcp::kInvalidRequest, "Unsupported MCP-Protocol-Version " + std::string(*version));
    }
    const auto session_header = request.header("mcp-session-id");
    if (request.method == "POST") return post(request, writer, rpc_error);
    if (request.method != "GET" && request.method != "DELETE") {
      return plain_error(405, Errc::bad_request, "use POST, GET or DELETE", {{"Allow", "GET, POST, DELETE"}});
    }
    if (!session_header) return rpc_error(400, mcp::kInvalidRequest, "Bad Request: Mcp-Session-Id is required");
    auto found = find(*session_header);
    if (!found) return rpc_error(404, mcp::kInvalidRequest, "Session not found: initialize again");
    if (request.method == "DELETE") {
      {
        const std::lock_guard lock(mutex_);
        sessions_.erase(std::string(*session_header));
      }
      found->session.cancel_all();
      const std::lock_guard lock(found->mutex);
      if (found->stream) found->stream->end();
      (void)writer->respond(200, {{"Content-Type", "application/json"}}, "{}");
      return;
    }
    const std::string_view accept = request.header("accept").value_or("");
    if (accept.find("text/event-stream") == std::string_view::npos) {
      return plain_error(406, Errc::bad_request, "GET opens an SSE stream: Accept: text/event-stream");
    }
    if (!writer->start_stream(200, {{"Content-Type", "text/event-stream"}, {"Cache-Control", "no-cache"}})) return;
    const std::lock_guard lock(found->mutex);
    if (found->stream) found->stream->end();
    found->stream = writer;
  }

  void notify_all(const json::object& message) {
    std::vector<std::shared_ptr<HttpSession>> all;
    {
      const std::lock_guard lock(mutex_);
      for (const auto& [id, session] : sessions_) all.push_back(session);
    }
    for (const auto& session : all) {
      const std::lock_guard lock(session->mutex);
      if (session->stream && !session->stream->write(sse_event(message))) session->stream.reset();
    }
  }

  void keepalive() {
    std::vector<std::shared_ptr<HttpSession>> all;
    {
      const std::lock_guard lock(mutex_);
      for (const auto& [id, session] : sessions_) all.push_back(session);
    }
    for (const auto& session : all) {
      const std::lock_guard lock(session->mutex);
      if (session->stream && !session->stream->write(": keepalive\n\n")) session->stream.reset();
    }
  }

  void close_all() {
    std::map<std::string, std::shared_ptr<HttpSession>> all;
    {
      const std::lock_guard lock(mutex_);
      all.swap(sessions_);
    }
    for (const auto& [id, session] : all) session->session.cancel_all();
  }

 private:
  template <class RpcError>
  void post(const net::ServerRequest& request, const std::shared_ptr<net::ResponseWriter>& writer, const RpcError& rpc_error) {
    const std::string_view type = request.header("content-type").value_or("");
    if (type.find("application/json") == std::string_view::npos) {
      (void)writer->respond(415, {{"Content-Type", "application/json"}},
                            Error{Errc::bad_request, "Content-Type must be application/json"}.to_http_json());
      return;
    }
    auto parsed = agent_mesh::json::parse_ijson(request.body, {.max_bytes = mcp::kMaxMessageBytes, .max_depth = 128});
    if (!parsed) return rpc_error(400, mcp::kParseError, "Parse error: " + parsed.error().message);
    const json::object* object = parsed->is_object() ? &parsed->as_object() : nullptr;
    const bool initialize = object != nullptr && object->contains("id") && object->if_contains("method") != nullptr &&
                            object->at("method") == "initialize";
    std::shared_ptr<HttpSession> session;
    std::string session_id;
    if (initialize) {
      std::array<std::uint8_t, 24> random{};
      randombytes_buf(random.data(), random.size());
      session_id = base64url_encode(ByteView(random.data(), random.size()));
      session = std::make_shared<HttpSession>(tools_);
      const std::lock_guard lock(mutex_);
      if (sessions_.size() >= kMaxHttpSessions) return rpc_error(503, mcp::kInternalError, "too many MCP sessions");
      sessions_[session_id] = session;
    } else {
      const auto header = request.header("mcp-session-id");
      if (!header) return rpc_error(400, mcp::kInvalidRequest, "Bad Request: Mcp-Session-Id is required (initialize first)");
      session = find(*header);
      if (!session) return rpc_error(404, mcp::kInvalidRequest, "Session not found: initialize again");
      session_id = std::string(*header);
    }
    const bool is_request = object != nullptr && object->contains("id") && object->contains("method");
    const bool is_call = is_request && object->at("method") == "tools/call";
    const std::string_view accept = request.header("accept").value_or("");
    std::vector<net::HttpHeader> headers{{"Mcp-Session-Id", session_id}};
    if (is_call && accept.find("text/event-stream") != std::string_view::npos) {
      // SSE: progress notifications first, the response last.
      headers.push_back({"Content-Type", "text/event-stream"});
      headers.push_back({"Cache-Control", "no-cache"});
      if (!writer->start_stream(200, headers)) return;
      const auto send = [writer](const json::object& message) { (void)writer->write(sse_event(message)); };
      auto handled = session->session.handle(*parsed, send);
      if (handled.response) (void)writer->write(sse_event(*handled.response));
      writer->end();  // without a response when the client cancelled the call
      return;
    }
    auto handled = session->session.handle(*parsed, [](const json::object&) {});
    if (!handled.response) {
      (void)writer->respond(202, headers, "");
      return;
    }
    headers.push_back({"Content-Type", "application/json"});
    (void)writer->respond(200, headers, json::serialize(*handled.response));
  }

  std::shared_ptr<HttpSession> find(std::string_view id) {
    const std::lock_guard lock(mutex_);
    auto found = sessions_.find(std::string(id));
    return found == sessions_.end() ? nullptr : found->second;
  }

  static bool loopback_host(std::string_view host) {
    std::string_view name = host;
    if (name.starts_with("[")) {
      name = name.substr(0, name.find(']') + 1);
    } else if (auto colon = name.rfind(':'); colon != std::string_view::npos) {
      name = name.substr(0, colon);
    }
    return name == "127.0.0.1" || name == "localhost" || name == "[::1]";
  }

  bool allowed_origin(std::string_view origin) const {
    for (const auto& allowed : allow_origins_) {
      if (origin == allowed) return true;
    }
    for (std::string_view scheme : {"http://", "https://"}) {
      if (!origin.starts_with(scheme)) continue;
      const std::string_view host = origin.substr(scheme.size());
      if (loopback_host(host)) return true;
    }
    return false;
  }

  MeshTools& tools_;
  std::string token_;
  std::vector<std::string> allow_origins_;
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<HttpSession>> sessions_;
};

void run_http(Context& context, const McpOptions& options, MeshTools& tools, Interrupts& interrupts,
              const std::unique_ptr<net::HttpServer>& receive_server) {
  const auto colon = options.listen.rfind(':');
  if (colon == std::string::npos) fail_command("--listen must be HOST:PORT", "e.g. --listen 127.0.0.1:8090", kExitUsage);
  std::string host = options.listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = -1;
  try {
    port = std::stoi(options.listen.substr(colon + 1));
  } catch (const std::exception&) {
  }
  if (port < 0 || port > 65535) fail_command("--listen: bad port in " + options.listen, "e.g. --listen 127.0.0.1:8090", kExitUsage);

  McpHttp mcp_http(tools, *context.setting("token"), options.allow_origins);
  net::HttpServerOptions server_options;
  server_options.host = host;
  server_options.port = static_cast<std::uint16_t>(port);
  server_options.max_body_bytes = mcp::kMaxMessageBytes;
  auto server = net::HttpServer::start(server_options, [&mcp_http](net::ServerRequest request, std::shared_ptr<net::ResponseWriter> writer) {
    mcp_http.handle(std::move(request), writer);
  });
  if (!server) fail_command("--listen: " + server.error().message, "choose another address or port (port 0 picks a free one)");
  context.out() << "listening http://" << ((*server)->host().find(':') != std::string::npos ? "[" + (*server)->host() + "]" : (*server)->host())
                << ":" << (*server)->port() << "\n";
  if (receive_server) context.out() << "receive http://127.0.0.1:" << receive_server->port() << "\n";
  context.out() << std::flush;
  context.err() << "MCP endpoint: http://" << host << ":" << (*server)->port() << "/mcp (Bearer token required)\n" << std::flush;

  Ticker refresher(std::chrono::duration_cast<std::chrono::milliseconds>(mcp::kToolListTtl), [&] {
    if (tools.refresh()) mcp_http.notify_all(json::object{{"jsonrpc", "2.0"}, {"method", "notifications/tools/list_changed"}});
  });
  Ticker keepalive(std::chrono::duration_cast<std::chrono::milliseconds>(kStreamKeepalive), [&] { mcp_http.keepalive(); });
  while (!interrupts.wait_for(std::chrono::hours(24))) {
  }
  context.err() << "Stopping the MCP server\n";
  refresher.stop();
  keepalive.stop();
  mcp_http.close_all();
  (*server)->stop();
}

void mcp_server(Context& context, const McpOptions& options, const CLI::App& command) {
  if (options.stdio && command.count("--listen") > 0) {
    fail_command("--stdio and --listen exclude each other", "pick one transport", kExitUsage);
  }
  if (!options.stdio && !context.setting("token")) {
    fail_command("the MCP HTTP server needs an API token to check its clients' Bearer token, and none is configured",
                 "run `agent-meshctl login` first (or use --stdio)");
  }
  if (!(options.receive_timeout_s > 0) || options.receive_timeout_s > 3600) {
    fail_command("--receive-timeout-s must be in (0, 3600]", "e.g. --receive-timeout-s 25", kExitUsage);
  }
  // Before any thread starts: Ctrl-C and SIGTERM end the server cleanly.
  Interrupts interrupts;
  std::shared_ptr<mcp::ReceiveInbox> inbox;
  if (options.receive_port >= 0) {
    inbox = std::make_shared<mcp::ReceiveInbox>(std::chrono::milliseconds(static_cast<std::int64_t>(options.receive_timeout_s * 1000)));
  }
  auto receive_server = start_receive_server(options, inbox);
  if (receive_server && options.stdio) {
    context.err() << "receive http://127.0.0.1:" << receive_server->port() << "\n" << std::flush;
  }
  MeshTools tools(context, inbox);
  if (options.stdio) {
    run_stdio(context, tools, interrupts);
  } else {
    run_http(context, options, tools, interrupts, receive_server);
  }
  if (receive_server) receive_server->stop();
}

}  // namespace

void add_mcp_command(CLI::App& app, Context& context, Actions& actions) {
  auto options = std::make_shared<McpOptions>();
  auto* command = add_command(app, "mcp-server",
                              "MCP adapter: mesh agents as tools for AI coding assistants (Streamable HTTP, or --stdio)",
                              "agent-meshctl mcp-server --stdio            # in .mcp.json: {\"command\": \"agent-meshctl\", \"args\": [\"mcp-server\", \"--stdio\"]}\n"
                              "  agent-meshctl mcp-server --listen 127.0.0.1:8090 --receive-port 9100");
  command->add_flag("--stdio", options->stdio, "Speak MCP on stdin/stdout (logs on stderr)");
  command->add_option("--listen", options->listen, "HTTP address (default 127.0.0.1:8090; the endpoint is /mcp)");
  command->add_option("--receive-port", options->receive_port,
                      "Receive mode: an HTTP endpoint on 127.0.0.1:N for meshd's --local-agent (0: any free port)");
  command->add_option("--receive-timeout-s", options->receive_timeout_s, "Seconds a received request waits for its reply (default 25)");
  command->add_option("--allow-origin", options->allow_origins, "An extra allowed Origin (repeatable; loopback origins always are)");
  actions.add(command, [&context, options, command] { mcp_server(context, *options, *command); });
}

}  // namespace agent_mesh::ctl
