// request: through the local agent-meshd when its socket answers, else directly through the relay
// with the configured key (daemonless, the SDK's MeshClient).
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstring>
#include <optional>

#include "agent_mesh/json.hpp"
#include "agent_mesh/mesh_client.hpp"
#include "ctl/commands.hpp"
#include "ctl/local_api_answers.hpp"
#include "ctl/meshd_local_api.hpp"
#include "net/unix_http_client.hpp"

namespace agent_mesh::ctl {

bool meshd_answers(const std::filesystem::path& socket) {
  const std::string path = socket.string();
  sockaddr_un address{};
  if (path.empty() || path.size() >= sizeof(address.sun_path)) return false;
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const bool connected = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0;
  ::close(fd);
  return connected;
}

namespace {

namespace json = boost::json;

// How often a daemonless wait looks for Ctrl-C (the answer itself wakes the wait at once).
constexpr std::chrono::milliseconds kInterruptCheck{50};
// Room beyond the request's own deadline for meshd to answer with its `timeout` error.
constexpr std::chrono::milliseconds kLocalApiSlack{5000};
// Time to reach the relay before a daemonless request says so (within the request's timeout).
constexpr std::chrono::milliseconds kMaxConnectWait{10000};

struct RequestOptions {
  std::string target;
  std::string capability;
  std::string payload;
  bool stream = false;
  double timeout_s = 30;
};

// What to do after a mesh error (protocol §4 codes).
std::string hint_for(Errc code, const RequestOptions& options, const std::string& me) {
  switch (code) {
    case Errc::acl_denied:
      return "the target's ACL does not allow this: its owner can grant it with `agent-meshctl acl add --source " + me +
             " --target " + options.target + " --capabilities " + options.capability + "`";
    case Errc::unknown_capability:
      return "the target does not serve `" + options.capability + "` (`agent-meshctl discover` lists capabilities)";
    case Errc::unreachable:
    case Errc::no_session:
      return "the target is not connected now (`agent-meshctl discover --online`), or its agent is down";
    case Errc::timeout:
    case Errc::expired:
      return "no answer within --timeout " + std::to_string(static_cast<long>(options.timeout_s)) +
             " s: raise it, or check the target agent";
    case Errc::revoked: return "one of the two agents' keys is revoked";
    case Errc::rate_limited: return "slow down and try again";
    case Errc::agent_error: return "the target agent failed; its owner can check its log";
    case Errc::too_large: return "the payload or the answer is too large for one message";
    default: return "see `agent-meshctl request --help`";
  }
}

[[noreturn]] void fail_mesh(const Error& error, const RequestOptions& options, const std::string& me) {
  fail_command(error.describe(), hint_for(error.code, options, me));
}

void print_body(Context& context, const json::value& body) {
  context.out() << json::serialize(body) << "\n" << std::flush;
}

void request_through_meshd(Context& context, const RequestOptions& options, const json::value& payload,
                           const std::filesystem::path& socket, const std::string& me) {
  const auto timeout = std::chrono::milliseconds(static_cast<std::int64_t>(options.timeout_s * 1000));
  json::object body{{"target", options.target}, {"capability", options.capability}, {"payload", payload},
                    {"timeout_ms", timeout.count()}};
  if (options.stream) body["stream"] = true;
  net::UnixHttpRequest request;
  request.socket_path = socket.string();
  request.method = "POST";
  request.target = "/request";
  request.body = json::serialize(body);
  request.timeout = timeout + kLocalApiSlack;

  if (!options.stream) {
    std::optional<Spinner> spinner;
    spinner.emplace(context, "Waiting for " + options.target.substr(0, 8) + "… to answer " + options.capability);
    auto answer = net::unix_http_request(request);
    spinner.reset();
    if (!answer) fail_command(answer.error().describe(), "is agent-meshd still running? (`agent-meshctl status`)");
    if (answer->status != 200) fail_mesh(local_api_error(answer->status, answer->body), options, me);
    auto parsed = agent_mesh::json::parse_ijson(answer->body);
    if (!parsed) fail_command("meshd's answer is not JSON: " + parsed.error().message, "check agent-meshd's log");
    return print_body(context, *parsed);
  }

  // NDJSON: {"seq", "body"} lines, then {"end": n} or {"error": {...}}.
  int status = 0;
  std::string error_body;
  StreamLineReader reader;
  std::optional<Error> stream_error;
  request.on_headers = [&](const net::HttpResponse& response) { status = response.status; };
  request.on_body = [&](std::string_view bytes) {
    if (status != 200) {
      // An error answer is one small JSON object; keep at most 64 KiB of it.
      error_body.append(bytes.substr(0, (64 * 1024) - std::min<std::size_t>(error_body.size(), 64 * 1024)));
      return true;
    }
    auto events = reader.feed(bytes);
    if (!events) {
      stream_error = events.error();
      return false;
    }
    for (auto& event : *events) {
      if (event.kind == StreamLineReader::Event::Kind::chunk) print_body(context, event.body);
      if (event.kind == StreamLineReader::Event::Kind::error) {
        stream_error = event.error;
        return false;
      }
    }
    return true;
  };
  auto answer = net::unix_http_request(request);
  if (status != 0 && status != 200) fail_mesh(local_api_error(status, error_body), options, me);
  if (stream_error) fail_mesh(*stream_error, options, me);
  if (!answer) fail_command(answer.error().describe(), "is agent-meshd still running? (`agent-meshctl status`)");
  if (!reader.finished()) fail_command("the stream ended without its end line", "check agent-meshd's log");
}

void request_directly(Context& context, const RequestOptions& options, const json::value& payload, const std::string& me) {
  auto key = context.identity();
  if (!key) {
    fail_command("agent-meshd is not running and no agent key is configured for a direct request",
                 "start agent-meshd for your agent, or configure a key (`agent-meshctl register` / --key-file)");
  }
  const std::string relay = context.relay_url();
  const auto timeout = std::chrono::milliseconds(static_cast<std::int64_t>(options.timeout_s * 1000));
  // Before the client's threads start, so they inherit the blocked signals.
  Interrupts interrupts;
  ClientOptions client_options;
  client_options.relay_urls = {relay};
  client_options.default_timeout = timeout;
  MeshClient client(std::move(*key), client_options);
  std::optional<Spinner> spinner;
  spinner.emplace(context, "Connecting to " + relay);
  if (auto connected = client.wait_connected(std::min(timeout, kMaxConnectWait)); !connected) {
    fail_command("cannot reach the relay at " + relay + ": " + connected.error().describe(),
                 "is the relay running? meshctl uses " + relay + " (from " + context.source_of("relay_url") +
                     ", else the registry's /api/v1/info); set --relay-url or MESH_RELAY_URL");
  }
  CancelToken cancel;
  agent_mesh::RequestOptions request_options{timeout, cancel};
  const auto check_interrupt = [&] {
    if (interrupts.wait_for(std::chrono::milliseconds(0))) cancel.cancel();
  };
  if (!options.stream) {
    spinner->set_text("Waiting for " + options.target.substr(0, 8) + "… to answer " + options.capability);
    auto pending = client.request(*AgentId::parse(options.target), options.capability, payload, request_options);
    std::optional<Result<Response>> result;
    while (!(result = pending.wait_for(kInterruptCheck))) check_interrupt();
    spinner.reset();
    if (interrupts.interrupted()) fail_command("request cancelled", "", kExitInterrupted);
    if (!*result) fail_mesh(result->error(), options, me);
    return print_body(context, (*result)->body);
  }
  spinner.reset();  // chunks are the progress from here on
  auto stream = client.stream(*AgentId::parse(options.target), options.capability, payload, request_options);
  while (true) {
    auto next = stream.next_async();
    std::optional<Result<std::optional<json::value>>> chunk;
    while (!(chunk = next.wait_for(kInterruptCheck))) check_interrupt();
    if (interrupts.interrupted()) fail_command("request cancelled", "", kExitInterrupted);
    if (!*chunk) fail_mesh(chunk->error(), options, me);
    if (!**chunk) return;
    print_body(context, ***chunk);
  }
}

void request(Context& context, const RequestOptions& options) {
  if (!AgentId::parse(options.target)) {
    fail_command("--target: `" + options.target + "` is not an agent ID", "`agent-meshctl discover` lists agent IDs", kExitUsage);
  }
  auto payload = agent_mesh::json::parse_ijson(options.payload);
  if (!payload) {
    fail_command("--payload is not valid JSON: " + payload.error().message,
                 "quote it for the shell, e.g. --payload '{\"message\": \"hello\"}'");
  }
  if (!(options.timeout_s > 0) || options.timeout_s > 3600) {
    fail_command("--timeout must be between 0 and 3600 seconds", "e.g. --timeout 30", kExitUsage);
  }
  const auto me = context.agent_id();
  if (me && me->str() == options.target) {
    fail_command("--target is this agent itself", "a request goes to another agent (`agent-meshctl discover`)", kExitUsage);
  }
  const std::string me_text = me ? me->str() : std::string("<your-agent-id>");
  const auto socket = context.meshd_socket();
  if (socket && meshd_answers(*socket)) return request_through_meshd(context, options, *payload, *socket, me_text);
  if (socket && (context.setting("meshd_socket") || std::filesystem::exists(*socket))) {
    context.err() << "note: agent-meshd does not answer on " << socket->string() << "; sending directly\n";
  }
  request_directly(context, options, *payload, me_text);
}

}  // namespace

void add_request_command(CLI::App& app, Context& context, Actions& actions) {
  auto options = std::make_shared<RequestOptions>();
  auto* command = add_command(app, "request",
                              "Call an agent's capability and print its answer (through agent-meshd when it runs, else directly)",
                              "agent-meshctl request --target <agent-id> --capability echo --payload '{\"message\": \"hello\"}'");
  command->add_option("--target", options->target, "The agent to call")->required();
  command->add_option("--capability", options->capability, "The capability to call")->required();
  command->add_option("--payload", options->payload, "The request body (JSON)")->required();
  command->add_flag("--stream", options->stream, "A streamed answer: print each chunk as it arrives (one JSON per line)");
  command->add_option("--timeout", options->timeout_s, "Seconds to wait for the answer (default 30)");
  actions.add(command, [&context, options] { request(context, *options); });
}

}  // namespace agent_mesh::ctl
