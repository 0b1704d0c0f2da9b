// login (OAuth 2.0 device flow through the registry, RFC 8628, or a given token) and auth-header.
#include <boost/json.hpp>
#include <chrono>
#include <iostream>
#include <iterator>

#include "agent_mesh/json.hpp"
#include "ctl/commands.hpp"
#include "net/http_client.hpp"

namespace agent_mesh::ctl {

namespace {

namespace json = boost::json;

constexpr std::string_view kDeviceGrant = "urn:ietf:params:oauth:grant-type:device_code";
// RFC 8628 §3.5: a client that is told slow_down adds 5 s to its interval.
constexpr std::chrono::milliseconds kSlowDownStep{5000};
// RFC 8628 §3.2: without an interval the client waits 5 s between polls.
constexpr std::chrono::milliseconds kDefaultPollInterval{5000};
// A token is 43 characters; anything past a few KiB on stdin is not a token.
constexpr std::size_t kMaxTokenBytes = 4096;

struct OAuthAnswer {
  int status = 0;
  json::object body;
};

// POST to the registry's /oauth endpoints: their errors come in RFC 6749 shape {"error": "<code>"},
// which RegistryClient would flatten, so they are called directly.
OAuthAnswer post_oauth(const Context& context, const std::string& path, const json::object& body) {
  net::HttpRequest request;
  request.method = "POST";
  request.url = context.cp_url() + path;
  request.headers.push_back({"Content-Type", "application/json"});
  request.headers.push_back({"Accept", "application/json"});
  request.body = json::serialize(body);
  auto answer = net::http_request(request);
  if (!answer) context.fail_registry(answer.error(), false);
  OAuthAnswer out;
  out.status = answer->status;
  if (auto parsed = agent_mesh::json::parse_ijson(answer->body); parsed && parsed->is_object()) out.body = parsed->as_object();
  return out;
}

std::string string_member(const json::object& object, std::string_view key) {
  const auto* value = object.if_contains(key);
  return value != nullptr && value->is_string() ? std::string(value->as_string()) : std::string();
}

std::chrono::milliseconds seconds_member(const json::object& object, std::string_view key, std::chrono::milliseconds fallback) {
  const auto* value = object.if_contains(key);
  if (value == nullptr || !value->is_number()) return fallback;
  const double seconds = value->to_number<double>();
  if (!(seconds >= 0) || seconds > 3600) return fallback;
  return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
}

// Checks the token against the registry and returns who it belongs to ("admin token" for the
// registry's --admin-token-file token, which has no user).
json::value check_token(const Context& context, const std::string& token) {
  auto registry = context.registry();
  auto me = registry->call("GET", "/api/v1/users/me", std::nullopt, std::string_view(token));
  if (me) return std::move(me).value();
  if (me.error().code == Errc::forbidden) return json::object{{"admin", true}};
  if (me.error().code == Errc::unauthorized) {
    fail_command("the registry at " + context.cp_url() + " refused the token (" + me.error().message + ")",
                 "check the token (e.g. the bootstrap-token file of `agent-mesh-server --bootstrap`) or log in with "
                 "`agent-meshctl login`; nothing was saved");
  }
  context.fail_registry(me.error(), true);
}

void save_login(Context& context, const std::string& token, const json::value& me) {
  context.config().set("token", token);
  if (!context.flags.cp_url.empty()) context.config().set("cp_url", context.flags.cp_url);
  context.save_config();
  if (context.json()) {
    context.print_json(me);
    return;
  }
  std::string who = "the admin token";
  if (const auto* user = me.as_object().if_contains("user"); user != nullptr && user->is_object()) {
    who = string_member(user->as_object(), "login");
  }
  context.out() << "Logged in as " << who << "\n";
  context.err() << "Saved the token to " << context.config().path().string() << "\n";
}

std::string read_token(Context& context) {
  std::string text;
  char buffer[512];
  while (context.in().read(buffer, sizeof buffer) || context.in().gcount() > 0) {
    text.append(buffer, static_cast<std::size_t>(context.in().gcount()));
    if (text.size() > kMaxTokenBytes) fail_command("stdin holds more than 4 KiB: not a token", "pipe only the token", kExitUsage);
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  while (!text.empty() && (text.front() == ' ' || text.front() == '\n')) text.erase(text.begin());
  if (text.empty() || text.find_first_of(" \t\r\n") != std::string::npos) {
    fail_command("--token-stdin: stdin does not hold one token", "e.g. agent-meshctl login --token-stdin < bootstrap-token", kExitUsage);
  }
  return text;
}

void device_login(Context& context) {
  // Before any thread starts (the spinner): Ctrl-C then ends the wait instead of the process.
  Interrupts interrupts;
  const auto started = post_oauth(context, "/api/v1/oauth/device", json::object{});
  if (started.status == 404) {
    fail_command("the registry at " + context.cp_url() + " has no device login configured (no --oauth-client-id)",
                 "log in with a token instead: agent-meshctl login --token-stdin < token-file (agent-mesh-server "
                 "--bootstrap writes one to <data-dir>/bootstrap-token)");
  }
  if (started.status != 200) {
    fail_command("the registry refused to start a device login (HTTP " + std::to_string(started.status) + ": " +
                     json::serialize(started.body) + ")",
                 "try again later, or log in with --token-stdin");
  }
  const std::string handle = string_member(started.body, "device_code");
  const std::string user_code = string_member(started.body, "user_code");
  std::string uri = string_member(started.body, "verification_uri");
  if (handle.empty() || user_code.empty() || uri.empty()) {
    fail_command("the registry's device login answer is incomplete", "check the registry's version and log");
  }
  auto interval = seconds_member(started.body, "interval", kDefaultPollInterval);
  const auto deadline = std::chrono::steady_clock::now() + seconds_member(started.body, "expires_in", std::chrono::minutes(15));
  context.err() << "Open " << uri << " and enter the code " << user_code << "\n" << std::flush;

  std::string token;
  {
    Spinner spinner(context, "Waiting for approval... (Ctrl-C to cancel)");
    while (token.empty()) {
      if (interrupts.wait_for(interval)) break;
      if (std::chrono::steady_clock::now() > deadline) break;
      const auto polled = post_oauth(context, "/api/v1/oauth/token",
                                     json::object{{"device_code", handle}, {"grant_type", kDeviceGrant}});
      if (polled.status == 200) {
        token = string_member(polled.body, "access_token");
        if (token.empty()) fail_command("the registry answered the login without a token", "try again");
        break;
      }
      const std::string error = string_member(polled.body, "error");
      if (error == "authorization_pending") continue;
      if (error == "slow_down") {
        interval = std::max(interval + kSlowDownStep, seconds_member(polled.body, "interval", interval));
        continue;
      }
      if (error == "expired_token") fail_command("the login code expired before it was approved", "run `agent-meshctl login` again");
      if (error == "access_denied") fail_command("the login was denied at " + uri, "run `agent-meshctl login` again and approve it");
      fail_command("the login failed: " + (error.empty() ? "HTTP " + std::to_string(polled.status) : error) +
                       (string_member(polled.body, "error_description").empty() ? "" : " (" + string_member(polled.body, "error_description") + ")"),
                   "run `agent-meshctl login` again; if it keeps failing, check the registry's log");
    }
  }
  if (interrupts.interrupted()) fail_command("login cancelled; nothing was saved", "", kExitInterrupted);
  if (token.empty()) fail_command("the login code expired before it was approved", "run `agent-meshctl login` again");
  save_login(context, token, check_token(context, token));
}

}  // namespace

void add_login_commands(CLI::App& app, Context& context, Actions& actions) {
  auto token_stdin = std::make_shared<bool>(false);
  auto* login = add_command(app, "login",
                            "Log in: OAuth device flow (prints a code to enter in the browser), or save a given token",
                            "agent-meshctl login --cp-url https://mesh.example.com\n"
                            "  agent-meshctl login --token-stdin < /var/lib/agent-mesh/bootstrap-token");
  login->add_flag("--token-stdin", *token_stdin, "Read an API token from stdin and save it instead");
  actions.add(login, [&context, token_stdin] {
    if (*token_stdin) {
      const std::string token = read_token(context);
      save_login(context, token, check_token(context, token));
    } else {
      device_login(context);
    }
  });

  auto* header = add_command(app, "auth-header", "Print {\"Authorization\": \"Bearer <token>\"} (for MCP clients' headersHelper)",
                             "agent-meshctl auth-header");
  actions.add(header, [&context] {
    context.print_json(json::object{{"Authorization", "Bearer " + context.require_token()}});
  });
}

}  // namespace agent_mesh::ctl
