#include "ctl/mcp_protocol.hpp"

#include <boost/json.hpp>

#include "agent_mesh/json.hpp"
#include "agent_mesh/version.hpp"

namespace agent_mesh::ctl::mcp {

namespace {
namespace json = boost::json;

bool valid_id(const json::value& id) { return id.is_string() || id.is_int64() || id.is_uint64(); }

json::object result_message(json::value id, json::value result) {
  return json::object{{"jsonrpc", "2.0"}, {"id", std::move(id)}, {"result", std::move(result)}};
}
}  // namespace

bool is_supported_version(std::string_view version) noexcept {
  return version == "2025-11-25" || version == "2025-06-18" || version == "2025-03-26";
}

std::string negotiate_version(std::string_view requested) {
  return is_supported_version(requested) ? std::string(requested) : std::string(kLatestVersion);
}

json::object error_message(json::value id, int code, std::string message) {
  return json::object{{"jsonrpc", "2.0"}, {"id", std::move(id)}, {"error", json::object{{"code", code}, {"message", std::move(message)}}}};
}

Session::Handled Session::handle(std::string_view text, const std::function<void(const json::object&)>& send) {
  auto parsed = agent_mesh::json::parse_ijson(text, {.max_bytes = kMaxMessageBytes, .max_depth = 128});
  if (!parsed) {
    Handled out;
    out.response = error_message(nullptr, kParseError, "Parse error: " + parsed.error().message);
    out.was_request = true;
    return out;
  }
  return handle(*parsed, send);
}

Session::Handled Session::handle(const json::value& message, const std::function<void(const json::object&)>& send) {
  Handled out;
  const auto invalid = [&out](json::value id, std::string why) {
    out.response = error_message(std::move(id), kInvalidRequest, "Invalid Request: " + std::move(why));
    out.was_request = true;
    return out;
  };
  if (message.is_array()) return invalid(nullptr, "batches are not supported");
  if (!message.is_object()) return invalid(nullptr, "a message is a JSON object");
  const auto& object = message.as_object();
  const json::value* id = object.if_contains("id");
  const json::value error_id = id != nullptr && valid_id(*id) ? *id : json::value(nullptr);
  const auto* version = object.if_contains("jsonrpc");
  if (version == nullptr || !version->is_string() || version->as_string() != "2.0") return invalid(error_id, "jsonrpc must be \"2.0\"");
  const auto* method_value = object.if_contains("method");
  if (method_value == nullptr) {
    // A response from the client (we send no requests): nothing to answer.
    if (object.contains("result") || object.contains("error")) return out;
    return invalid(error_id, "method is required");
  }
  if (!method_value->is_string()) return invalid(error_id, "method must be a string");
  out.method = std::string(method_value->as_string());
  if (id != nullptr && !valid_id(*id)) return invalid(nullptr, "id must be a string or an integer");
  const json::value* params_value = object.if_contains("params");
  if (params_value != nullptr && !params_value->is_object()) {
    if (id == nullptr) return out;
    out.was_request = true;
    out.response = error_message(*id, kInvalidParams, "Invalid params: params must be an object");
    return out;
  }
  static const json::object kNoParams;
  const json::object& params = params_value != nullptr ? params_value->as_object() : kNoParams;

  if (id == nullptr) {  // a notification: never answered
    if (out.method == "notifications/cancelled") {
      if (const auto* request = params.if_contains("requestId")) {
        std::optional<CancelToken> token;
        {
          const std::lock_guard lock(mutex_);
          const std::string key = json::serialize(*request);
          if (auto found = in_flight_.find(key); found != in_flight_.end()) {
            token = found->second;
            cancelled_.insert(key);
          }
        }
        if (token) token->cancel();
      }
    }
    return out;
  }

  out.was_request = true;
  if (out.method == "initialize") {
    std::string requested;
    if (const auto* asked = params.if_contains("protocolVersion"); asked != nullptr && asked->is_string()) {
      requested = std::string(asked->as_string());
    }
    const std::string agreed = negotiate_version(requested);
    {
      const std::lock_guard lock(mutex_);
      protocol_version_ = agreed;
    }
    out.response = result_message(
        *id, json::object{{"protocolVersion", agreed},
                          {"capabilities", json::object{{"tools", json::object{{"listChanged", true}}}}},
                          {"serverInfo", json::object{{"name", "agent-mesh"}, {"title", "agent-mesh"}, {"version", kVersion}}},
                          {"instructions",
                           "Agents of your agent-mesh groups are tools: one per (online agent, capability), plus "
                           "mesh__search to find agents and mesh__call to call any agent's capability."}});
  } else if (out.method == "ping") {
    out.response = result_message(*id, json::object{});
  } else if (out.method == "tools/list") {
    out.response = result_message(*id, json::object{{"tools", backend_.tools()}});
  } else if (out.method == "tools/call") {
    out.response = call_tool(*id, params, send);
    // MCP: a request the client cancelled gets no response (it has forgotten the ID).
    const std::lock_guard lock(mutex_);
    if (cancelled_.erase(json::serialize(*id)) > 0) out.response.reset();
  } else {
    out.response = error_message(*id, kMethodNotFound, "Method not found: " + out.method);
  }
  return out;
}

json::object Session::call_tool(const json::value& id, const json::object& params,
                                const std::function<void(const json::object&)>& send) {
  const auto* name = params.if_contains("name");
  if (name == nullptr || !name->is_string()) return error_message(id, kInvalidParams, "Invalid params: name (a string) is required");
  const auto* arguments = params.if_contains("arguments");
  if (arguments != nullptr && !arguments->is_object()) {
    return error_message(id, kInvalidParams, "Invalid params: arguments must be an object");
  }
  ToolCall call;
  call.name = std::string(name->as_string());
  if (arguments != nullptr) call.arguments = arguments->as_object();
  std::optional<json::value> token;
  if (const auto* meta = params.if_contains("_meta"); meta != nullptr && meta->is_object()) {
    if (const auto* progress = meta->as_object().if_contains("progressToken");
        progress != nullptr && (progress->is_string() || progress->is_int64() || progress->is_uint64())) {
      token = *progress;
    }
  }
  if (token) {
    auto counter = std::make_shared<std::atomic<std::int64_t>>(0);
    call.progress = [token = *token, counter, send](std::string message) {
      const std::int64_t progress = ++*counter;
      send(json::object{{"jsonrpc", "2.0"},
                        {"method", "notifications/progress"},
                        {"params", json::object{{"progressToken", token}, {"progress", progress}, {"message", std::move(message)}}}});
    };
  } else {
    call.progress = [](std::string) {};
  }
  const std::string key = json::serialize(id);
  {
    const std::lock_guard lock(mutex_);
    in_flight_[key] = call.cancel;
  }
  auto result = backend_.call_tool(call);
  {
    const std::lock_guard lock(mutex_);
    in_flight_.erase(key);
  }
  if (!result) return error_message(id, kInvalidParams, "Invalid params: " + result.error().message);
  return result_message(id, std::move(result).value());
}

std::string Session::protocol_version() const {
  const std::lock_guard lock(mutex_);
  return protocol_version_;
}

void Session::cancel_all() {
  std::vector<CancelToken> tokens;
  {
    const std::lock_guard lock(mutex_);
    for (const auto& [key, token] : in_flight_) tokens.push_back(token);
  }
  for (const auto& token : tokens) token.cancel();
}

}  // namespace agent_mesh::ctl::mcp
