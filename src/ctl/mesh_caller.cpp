#include "ctl/mesh_caller.hpp"

#include <boost/json.hpp>

#include "agent_mesh/json.hpp"
#include "agent_mesh/mesh_client.hpp"
#include "agent_mesh/registry_client.hpp"
#include "ctl/context.hpp"
#include "ctl/local_api_answers.hpp"
#include "net/unix_http_client.hpp"
#include "net/unix_socket_probe.hpp"

namespace agent_mesh::ctl {

namespace {

namespace json = boost::json;

// Room beyond the request's own deadline for meshd to answer with its `timeout` error.
constexpr std::chrono::milliseconds kLocalApiSlack{5000};
// The longest a direct call waits for the relay connection (within its own timeout).
constexpr std::chrono::milliseconds kMaxConnectWait{10000};
// An error answer from meshd is one small JSON object.
constexpr std::size_t kMaxErrorBodyBytes = 64 * 1024;

}  // namespace

MeshCaller::MeshCaller(const Context& context)
    : socket_(context.meshd_socket()), key_(context.identity()), cp_url_(context.cp_url()) {
  if (auto relay = context.setting("relay_url")) configured_relay_url_ = *relay;
}

MeshCaller::~MeshCaller() {
  if (client_) client_->close(std::chrono::milliseconds(0));
}

bool meshd_answers(const std::filesystem::path& socket) {
  return net::probe_unix_socket(socket).state == net::UnixSocketProbe::State::serving;
}

std::string mesh_error_hint(Errc code, const std::string& me, const std::string& target, const std::string& capability,
                            std::chrono::milliseconds timeout) {
  switch (code) {
    case Errc::acl_denied:
      return "the target's ACL does not allow this: its owner can grant it with `agent-meshctl acl add --source " + me +
             " --target " + target + " --capabilities " + capability + "`";
    case Errc::unknown_capability:
      return "the target does not serve `" + capability + "` (`agent-meshctl discover` lists capabilities)";
    case Errc::unreachable:
    case Errc::no_session:
      return "the target is not connected now (`agent-meshctl discover --online`), or its agent is down; check the relay "
             "with `agent-meshctl status`";
    case Errc::timeout:
    case Errc::expired:
      return "no answer within " + std::to_string(timeout.count() / 1000) + " s: raise --timeout, or check the target agent";
    case Errc::revoked: return "one of the two agents' keys is revoked";
    case Errc::rate_limited: return "slow down and try again";
    case Errc::agent_error: return "the target agent failed; its owner can check its log";
    case Errc::too_large: return "the payload or the answer is too large for one message";
    case Errc::bad_request: return "check the request (`agent-meshctl request --help`)";
    case Errc::auth_failed:
      return "this agent (" + me + ") must be registered before the relay lets it in: `agent-meshctl register`";
    default: return "see `agent-meshctl status`";
  }
}

bool MeshCaller::meshd_socket_answers() const { return socket_ && meshd_answers(*socket_); }

Result<json::value> MeshCaller::call(const MeshCall& call) {
  if (meshd_socket_answers()) return call_meshd(call);
  return call_directly(call);
}

Result<json::value> MeshCaller::call_meshd(const MeshCall& call) const {
  json::object body{{"target", call.target.str()}, {"capability", call.capability}, {"payload", call.payload},
                    {"timeout_ms", call.timeout.count()}};
  if (call.stream) body["stream"] = true;
  net::UnixHttpRequest request;
  request.socket_path = socket_->string();
  request.method = "POST";
  request.target = "/request";
  request.body = json::serialize(body);
  request.timeout = call.timeout + kLocalApiSlack;
  request.cancel = call.cancel;

  if (!call.stream) {
    auto answer = net::unix_http_request(request);
    if (!answer) return std::move(answer).error();
    if (answer->status != 200) return local_api_error(answer->status, answer->body);
    auto parsed = agent_mesh::json::parse_ijson(answer->body);
    if (!parsed) return fail(Errc::internal, "meshd's answer is not JSON: " + parsed.error().message);
    return parsed;
  }

  // NDJSON: {"seq", "body"} lines, then {"end": n} or {"error": {...}}.
  int status = 0;
  std::string error_body;
  StreamLineReader reader;
  std::optional<Error> stream_error;
  request.on_headers = [&](const net::HttpResponse& response) { status = response.status; };
  request.on_body = [&](std::string_view bytes) {
    if (status != 200) {
      error_body.append(bytes.substr(0, kMaxErrorBodyBytes - std::min(error_body.size(), kMaxErrorBodyBytes)));
      return true;
    }
    auto events = reader.feed(bytes);
    if (!events) {
      stream_error = events.error();
      return false;
    }
    for (auto& event : *events) {
      if (event.kind == StreamLineReader::Event::Kind::chunk && call.on_chunk) call.on_chunk(event.body);
      if (event.kind == StreamLineReader::Event::Kind::error) {
        stream_error = event.error;
        return false;
      }
    }
    return true;
  };
  auto answer = net::unix_http_request(request);
  if (status != 0 && status != 200) return local_api_error(status, error_body);
  if (stream_error) return *stream_error;
  if (!answer) return std::move(answer).error();
  if (!reader.finished()) return fail(Errc::unreachable, "meshd's stream ended without its end line");
  return json::value(nullptr);
}

Result<std::shared_ptr<MeshClient>> MeshCaller::direct_client(std::chrono::milliseconds connect_wait) {
  std::shared_ptr<MeshClient> client;
  {
    const std::lock_guard lock(mutex_);
    if (!client_) {
      if (!key_) {
        return fail(Errc::bad_request,
                    "agent-meshd is not running and no agent key is configured for a direct request: start "
                    "agent-meshd, or configure a key (`agent-meshctl register` / --key-file)");
      }
      std::string relay = configured_relay_url_;
      if (relay.empty()) {
        auto info = RegistryClient(cp_url_, *key_).info();
        if (!info) return fail(info.error().code, "cannot ask the registry for the relay's URL: " + info.error().message);
        if (const auto* url = info->if_contains("relay_url"); url != nullptr && url->is_string()) {
          relay = std::string(url->as_string());
        }
        if (relay.empty()) return fail(Errc::unreachable, "the registry at " + cp_url_ + " names no relay (set --relay-url)");
      }
      ClientOptions options;
      options.relay_urls = {relay};
      options.on_connection = [reason = last_close_reason_, reason_mutex = close_reason_mutex_](const ConnectionEvent& event) {
        if (event.kind == ConnectionEvent::Kind::connected || event.reason.empty()) return;
        const std::lock_guard reason_lock(*reason_mutex);
        *reason = event.reason;
      };
      relay_url_ = relay;
      client_ = std::make_shared<MeshClient>(*key_, options);
    }
    client = client_;
  }
  if (auto connected = client->wait_connected(connect_wait); !connected) {
    std::string reason;
    {
      const std::lock_guard lock(*close_reason_mutex_);
      reason = *last_close_reason_;
    }
    // The relay refusing this agent (auth_failed: not registered, revoked ...) says more than a timeout.
    if (reason.rfind("auth_failed", 0) == 0 || reason.find("not registered") != std::string::npos) {
      return fail(Errc::auth_failed, "the relay at " + relay_url_ + " refused this agent: " + reason);
    }
    return fail(connected.error().code == Errc::timeout ? Errc::unreachable : connected.error().code,
                "cannot reach the relay at " + relay_url_ + ": " + connected.error().message +
                    (reason.empty() ? "" : " (last close: " + reason + ")"));
  }
  return client;
}

Result<json::value> MeshCaller::call_directly(const MeshCall& call) {
  auto client = direct_client(std::min(call.timeout, kMaxConnectWait));
  if (!client) return std::move(client).error();
  RequestOptions options{call.timeout, call.cancel};
  if (!call.stream) {
    auto answer = (*client)->request(call.target, call.capability, call.payload, options).get();
    if (!answer) return std::move(answer).error();
    return std::move(answer->body);
  }
  auto stream = (*client)->stream(call.target, call.capability, call.payload, options);
  while (true) {
    auto chunk = stream.next();
    if (!chunk) return std::move(chunk).error();
    if (!*chunk) return json::value(nullptr);
    if (call.on_chunk) call.on_chunk(**chunk);
  }
}

}  // namespace agent_mesh::ctl
