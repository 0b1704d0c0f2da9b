// status: meshd (its Local API), the relay (its /status) and the registry (/api/v1/status).
#include <boost/json.hpp>

#include "agent_mesh/json.hpp"
#include "ctl/commands.hpp"
#include "ctl/mesh_caller.hpp"
#include "net/http_client.hpp"
#include "net/unix_http_client.hpp"

namespace agent_mesh::ctl {

namespace {

namespace json = boost::json;

// A status check should come back fast; a component slower than this counts as not answering.
constexpr std::chrono::milliseconds kStatusTimeout{3000};

json::value error_object(std::string message) { return json::object{{"error", std::move(message)}}; }

json::value parse_object(const std::string& body, const std::string& who) {
  auto parsed = agent_mesh::json::parse_ijson(body);
  if (!parsed || !parsed->is_object()) return error_object(who + " answered something that is not a JSON object");
  return std::move(parsed).value();
}

json::value http_status(const std::string& url, const std::string& who) {
  net::HttpRequest request;
  request.url = url;
  request.timeout = kStatusTimeout;
  auto answer = net::http_request(request);
  if (!answer) return error_object(answer.error().message);
  if (answer->status != 200) return error_object(who + " answered HTTP " + std::to_string(answer->status));
  return parse_object(answer->body, who);
}

// ws://host:port/relay/ws → http://host:port/status (the relay's status sits at its root).
std::optional<std::string> relay_status_url(const std::string& relay) {
  std::string scheme;
  if (relay.rfind("ws://", 0) == 0) scheme = "http://";
  else if (relay.rfind("wss://", 0) == 0) scheme = "https://";
  else return std::nullopt;
  const std::string rest = relay.substr(scheme == "http://" ? 5 : 6);
  return scheme + rest.substr(0, rest.find('/')) + "/status";
}

void status(Context& context) {
  json::object out;
  // meshd
  const auto socket = context.meshd_socket();
  if (!socket) {
    out["meshd"] = error_object("no agent configured, so no meshd socket to ask");
  } else if (!meshd_answers(*socket)) {
    out["meshd"] = error_object("not running (nothing answers on " + socket->string() + ")");
  } else {
    net::UnixHttpRequest request;
    request.socket_path = socket->string();
    request.target = "/status";
    request.timeout = kStatusTimeout;
    auto answer = net::unix_http_request(request);
    out["meshd"] = !answer ? error_object(answer.error().message)
                   : answer->status != 200 ? error_object("meshd answered HTTP " + std::to_string(answer->status))
                                           : parse_object(answer->body, "meshd");
  }
  // registry
  const std::string cp = context.cp_url();
  json::value registry = http_status(cp + "/api/v1/status", "the registry");
  const bool registry_up = !registry.as_object().contains("error");
  if (registry_up) registry.as_object()["url"] = cp;
  // relay: the configured URL, else the registry's
  std::optional<std::string> relay = context.setting("relay_url");
  if (!relay && registry_up) {
    if (auto info = context.registry()->info(); info) {
      if (const auto* url = info->if_contains("relay_url"); url != nullptr && url->is_string()) relay = std::string(url->as_string());
    }
  }
  if (!relay) {
    out["relay"] = error_object("no relay URL: the registry is not answering and none is configured");
  } else if (auto url = relay_status_url(*relay)) {
    json::value relay_status = http_status(*url, "the relay");
    if (relay_status.is_object()) relay_status.as_object()["url"] = *relay;
    out["relay"] = std::move(relay_status);
  } else {
    out["relay"] = error_object("relay URL " + *relay + " is not ws:// or wss://");
  }
  out["registry"] = registry;

  if (context.json()) {
    context.print_json(out);
  } else {
    const auto line = [&](const std::string& name, const json::value& value, const std::string& good) {
      const auto& object = value.as_object();
      context.out() << name << std::string(10 - name.size(), ' ');
      if (const auto* error = object.if_contains("error")) context.out() << "down: " << cell(error) << "\n";
      else context.out() << good << "\n";
    };
    const auto& meshd = out.at("meshd").as_object();
    std::string meshd_text = "up";
    if (const auto* relay_state = meshd.if_contains("relay"); relay_state != nullptr && relay_state->is_object()) {
      const auto* up = relay_state->as_object().if_contains("connected");
      meshd_text = "agent " + cell(meshd.if_contains("agent_id")) +
                   (up != nullptr && up->is_bool() && up->as_bool() ? ", connected to " : ", NOT connected to ") +
                   cell(relay_state->as_object().if_contains("url")) + ", ACL version " + cell(meshd.if_contains("acl_version"));
    }
    line("meshd", out.at("meshd"), meshd_text);
    const auto& relay_object = out.at("relay").as_object();
    line("relay", out.at("relay"),
         "up at " + cell(relay_object.if_contains("url")) + ", " + cell(relay_object.if_contains("agents_online")) + " agents online");
    line("registry", registry,
         "up at " + cp + ", " + (registry_up ? cell(registry.as_object().if_contains("agents")) : std::string("?")) + " agents");
  }
  if (!registry_up) {
    fail_command("unreachable: the registry at " + cp + " does not answer (" + cell(registry.as_object().if_contains("error")) + ")",
                 "start it (`agent-mesh-server`), or set --cp-url / MESH_CP_URL");
  }
}

}  // namespace

void add_status_command(CLI::App& app, Context& context, Actions& actions) {
  auto* command = add_command(app, "status", "Show whether meshd, the relay and the registry answer", "agent-meshctl status --json");
  actions.add(command, [&context] { status(context); });
}

}  // namespace agent_mesh::ctl
