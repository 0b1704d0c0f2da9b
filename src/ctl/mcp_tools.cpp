#include "ctl/mcp_tools.hpp"

#include <algorithm>
#include <boost/json.hpp>
#include <set>
#include <thread>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/json.hpp"
#include "agent_mesh/registry_client.hpp"
#include "ctl/context.hpp"

namespace agent_mesh::ctl::mcp {

namespace {

namespace json = boost::json;

constexpr std::chrono::milliseconds kDefaultCallTimeout{30000};
constexpr double kMaxCallTimeoutS = 3600;

json::object text_result(const json::value& body, const json::object& structured, bool is_error) {
  json::object result{{"content", json::array{json::object{{"type", "text"}, {"text", json::serialize(body)}}}},
                      {"structuredContent", structured}};
  if (is_error) result["isError"] = true;
  return result;
}

json::object body_result(const json::value& body) {
  return text_result(body, body.is_object() ? body.as_object() : json::object{{"result", body}}, false);
}

json::object error_result(const Error& error) {
  const json::object structured{{"error", json::object{{"code", to_string(error.code)}, {"message", error.message}}}};
  json::object result{{"content", json::array{json::object{{"type", "text"}, {"text", error.describe()}}}},
                      {"structuredContent", structured},
                      {"isError", true}};
  return result;
}

const json::object kObjectSchema{{"type", "object"}};

json::object fixed_tool(std::string name, std::string description, json::object properties, json::array required) {
  json::object schema{{"type", "object"}, {"properties", std::move(properties)}};
  if (!required.empty()) schema["required"] = std::move(required);
  return json::object{{"name", std::move(name)}, {"description", std::move(description)}, {"inputSchema", std::move(schema)}};
}

json::array fixed_tools(bool receive_mode) {
  json::array tools;
  tools.push_back(fixed_tool("mesh__search",
                             "Find agents of your agent-mesh groups by text and/or capability; returns their IDs, "
                             "names, descriptions, online state and capabilities with input schemas.",
                             json::object{{"query", json::object{{"type", "string"}, {"description", "full text over names and descriptions"}}},
                                          {"capability", json::object{{"type", "string"}, {"description", "exact capability name"}}},
                                          {"online", json::object{{"type", "boolean"}, {"description", "only agents online now"}}}},
                             {}));
  tools.push_back(fixed_tool(
      "mesh__call", "Call any agent's capability through the mesh (end-to-end encrypted) and return its answer.",
      json::object{{"agent_id", json::object{{"type", "string"}, {"description", "the agent's ID (43 characters)"}}},
                   {"capability", json::object{{"type", "string"}}},
                   {"payload", json::object{{"type", "object"}, {"description", "the request body"}}},
                   {"timeout_s", json::object{{"type", "number"}, {"description", "seconds to wait (default 30)"}}},
                   {"stream", json::object{{"type", "boolean"}, {"description", "a streamed answer: chunks as progress, all chunks in the result"}}}},
      json::array{"agent_id", "capability", "payload"}));
  if (receive_mode) {
    tools.push_back(fixed_tool("mesh__get_messages",
                               "Return (and remove from the queue) the requests other agents sent to this agent; answer "
                               "each with mesh__reply_message before it times out.",
                               json::object{}, {}));
    tools.push_back(fixed_tool("mesh__reply_message", "Answer a request received with mesh__get_messages.",
                               json::object{{"message_id", json::object{{"type", "string"}}},
                                            {"payload", json::object{{"description", "the answer (JSON)"}}}},
                               json::array{"message_id", "payload"}));
  }
  return tools;
}

Result<std::chrono::milliseconds> timeout_argument(const json::object& arguments) {
  const auto* value = arguments.if_contains("timeout_s");
  if (value == nullptr) return kDefaultCallTimeout;
  if (!value->is_number()) return fail(Errc::bad_request, "timeout_s must be a number of seconds");
  const double seconds = value->to_number<double>();
  if (!(seconds > 0) || seconds > kMaxCallTimeoutS) return fail(Errc::bad_request, "timeout_s must be in (0, 3600]");
  return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
}

}  // namespace

// ---- receive mode ----

void ReceiveInbox::serve(net::ServerRequest request, const std::shared_ptr<net::ResponseWriter>& writer) {
  const auto answer_error = [&writer](int status, Errc code, std::string message) {
    (void)writer->respond(status, {{"Content-Type", "application/json"}}, Error{code, std::move(message)}.to_http_json());
  };
  if (request.method != "POST") return answer_error(405, Errc::bad_request, "meshd POSTs requests here");
  const auto from = request.header("x-mesh-from");
  if (!from || !AgentId::parse(*from)) {
    return answer_error(400, Errc::bad_request, "X-Mesh-From is missing: only agent-meshd forwards requests here");
  }
  auto body = agent_mesh::json::parse_ijson(request.body);
  if (!body) return answer_error(400, Errc::bad_request, "the body is not JSON: " + body.error().message);
  std::string capability(request.header("x-mesh-capability").value_or(""));
  json::value payload = *body;
  // meshd puts "capability" first into an object body, {"capability", "data"} around anything else.
  if (payload.is_object()) {
    auto& object = payload.as_object();
    if (const auto* named = object.if_contains("capability"); named != nullptr && named->is_string() && capability.empty()) {
      capability = std::string(named->as_string());
    }
    object.erase("capability");
    if (object.size() == 1 && object.contains("data") && !object.at("data").is_object()) {
      json::value data = object.at("data");
      payload = std::move(data);
    }
  }
  std::string message_id(request.header("x-mesh-request-id").value_or(""));
  if (message_id.empty()) message_id = Uuid::generate().to_string();

  auto waiting = std::make_shared<Waiting>();
  {
    const std::lock_guard lock(mutex_);
    if (open_.size() >= kMaxInboxMessages) return answer_error(429, Errc::rate_limited, "too many messages wait for a reply");
    if (open_.contains(message_id)) return answer_error(409, Errc::bad_request, "a message with this ID is already open");
    open_[message_id] = waiting;
    pending_.push_back(json::object{{"message_id", message_id},
                                    {"from", std::string(*from)},
                                    {"capability", capability},
                                    {"payload", payload},
                                    {"received_at", rfc3339(now_ms())}});
  }
  writer->on_close([this, waiting] {
    const std::lock_guard lock(mutex_);
    waiting->gone = true;
    replied_.notify_all();
  });
  std::unique_lock lock(mutex_);
  replied_.wait_for(lock, reply_timeout_, [&] { return waiting->reply.has_value() || waiting->gone; });
  open_.erase(message_id);
  std::erase_if(pending_, [&](const json::object& message) { return message.at("message_id").as_string() == message_id; });
  std::optional<json::value> reply = waiting->reply;
  lock.unlock();
  if (reply) {
    (void)writer->respond(200, {{"Content-Type", "application/json"}}, json::serialize(*reply));
  } else if (!waiting->gone) {
    answer_error(504, Errc::timeout,
                 "no reply within " + std::to_string(reply_timeout_.count() / 1000) + " s (mesh__reply_message)");
  }
}

json::array ReceiveInbox::take_messages() {
  const std::lock_guard lock(mutex_);
  json::array out;
  for (auto& message : pending_) out.push_back(std::move(message));
  pending_.clear();
  return out;
}

Status ReceiveInbox::reply(const std::string& message_id, json::value payload) {
  const std::lock_guard lock(mutex_);
  auto found = open_.find(message_id);
  if (found == open_.end() || found->second->gone || found->second->reply) {
    return fail(Errc::bad_request, "no open message " + message_id + " (already answered, timed out or cancelled)");
  }
  found->second->reply = std::move(payload);
  std::erase_if(pending_, [&](const json::object& message) { return message.at("message_id").as_string() == message_id; });
  replied_.notify_all();
  return {};
}

// ---- tools ----

MeshTools::MeshTools(const Context& context, std::shared_ptr<ReceiveInbox> inbox)
    : token_(context.setting("token")),
      key_(context.identity()),
      cp_url_(context.cp_url()),
      inbox_(std::move(inbox)),
      caller_(std::make_unique<MeshCaller>(context)) {}

MeshTools::~MeshTools() = default;

Result<json::value> MeshTools::registry_get(const std::string& target) const {
  if (!token_ && !key_) return fail(Errc::unauthorized, "no API token or agent key configured: run `agent-meshctl login`");
  // The user's token when there is one (it sees every group of the user), else the agent's signature.
  RegistryClient registry(cp_url_, key_ ? *key_ : KeyPair::generate());
  return token_ ? registry.call("GET", target, std::nullopt, std::string_view(*token_)) : registry.call("GET", target);
}

Result<json::array> MeshTools::registry_agents(const std::string& query) const {
  auto answer = registry_get("/api/v1/agents?" + query);
  if (!answer) return std::move(answer).error();
  if (const auto* items = answer->as_object().if_contains("items"); items != nullptr && items->is_array()) return items->as_array();
  return json::array{};
}

std::vector<MeshTools::AgentTool> MeshTools::load_agent_tools() const {
  auto agents = registry_agents(query_string({{"online", "true"}, {"limit", std::to_string(kMaxListedAgents)}}));
  std::vector<AgentTool> tools;
  if (!agents) return tools;
  // Tool names use the first 8 characters of the agent ID, 12 when two listed agents share them.
  std::map<std::string, int> prefixes;
  for (const auto& item : *agents) {
    if (const auto* id = item.as_object().if_contains("agent_id"); id != nullptr && id->is_string()) {
      ++prefixes[std::string(id->as_string()).substr(0, 8)];
    }
  }
  for (const auto& item : *agents) {
    const auto& card = item.as_object();
    const auto* id_value = card.if_contains("agent_id");
    if (id_value == nullptr || !id_value->is_string()) continue;
    auto agent = AgentId::parse(id_value->as_string());
    if (!agent || (key_ && *agent == key_->agent_id())) continue;  // never a tool to call oneself
    const std::string id = agent->str();
    const std::string prefix = id.substr(0, prefixes[id.substr(0, 8)] > 1 ? 12 : 8);
    const std::string agent_name = card.contains("name") ? cell(card.if_contains("name")) : id;
    const std::string agent_description =
        card.contains("description") && card.at("description").is_string() ? std::string(card.at("description").as_string()) : "";
    const auto* capabilities = card.if_contains("capabilities");
    if (capabilities == nullptr || !capabilities->is_array()) continue;
    for (const auto& capability_value : capabilities->as_array()) {
      const auto& capability = capability_value.as_object();
      const std::string name(capability.at("name").as_string());
      // The card's own words: the capability's description, else the agent's.
      std::string description;
      if (const auto* text = capability.if_contains("description"); text != nullptr && text->is_string()) {
        description = std::string(text->as_string());
      } else if (!agent_description.empty()) {
        description = agent_description;
      } else {
        description = "`" + name + "` of agent " + agent_name + " (" + id + ")";
      }
      json::value schema = kObjectSchema;
      if (const auto* input = capability.if_contains("input_schema"); input != nullptr && input->is_object()) schema = *input;
      AgentTool tool;
      tool.name = prefix + "__" + name;
      tool.agent = *agent;
      tool.capability = name;
      tool.definition = json::object{{"name", tool.name}, {"description", description}, {"inputSchema", schema}};
      tools.push_back(std::move(tool));
    }
  }
  return tools;
}

bool MeshTools::refresh() {
  auto fresh = load_agent_tools();
  const std::lock_guard lock(mutex_);
  std::set<std::string> before;
  std::set<std::string> after;
  for (const auto& tool : agent_tools_) before.insert(tool.name);
  for (const auto& tool : fresh) after.insert(tool.name);
  const bool changed = loaded_ && before != after;
  agent_tools_ = std::move(fresh);
  loaded_at_ = std::chrono::steady_clock::now();
  loaded_ = true;
  return changed;
}

json::array MeshTools::tools() {
  bool stale = false;
  {
    const std::lock_guard lock(mutex_);
    stale = !loaded_ || std::chrono::steady_clock::now() - loaded_at_ > kToolListTtl;
  }
  if (stale) (void)refresh();
  json::array tools = fixed_tools(inbox_ != nullptr);
  const std::lock_guard lock(mutex_);
  for (const auto& tool : agent_tools_) tools.push_back(tool.definition);
  return tools;
}

std::optional<Error> MeshTools::target_presence(const AgentId& target) const {
  auto card = registry_get("/api/v1/agents/" + target.str());
  if (!card) {
    if (card.error().code == Errc::not_found) {
      return Error{Errc::unreachable, "no agent " + target.str() + " in your groups (mesh__search lists them)"};
    }
    return std::nullopt;
  }
  const auto* online = card->is_object() ? card->as_object().if_contains("online") : nullptr;
  if (online != nullptr && online->is_bool() && !online->as_bool()) {
    const auto* seen = card->as_object().if_contains("last_seen");
    return Error{Errc::unreachable, "agent " + target.str() + " is offline" +
                                        (seen != nullptr && seen->is_string() ? " (last seen " + std::string(seen->as_string()) + ")" : "")};
  }
  return std::nullopt;
}

Result<json::object> MeshTools::search(const json::object& arguments) const {
  std::vector<std::pair<std::string, std::string>> query{{"limit", "50"}};
  for (const char* name : {"query", "capability"}) {
    if (const auto* value = arguments.if_contains(name)) {
      if (!value->is_string()) return fail(Errc::bad_request, std::string(name) + " must be a string");
      if (!value->as_string().empty()) query.emplace_back(std::string(name) == "query" ? "q" : name, std::string(value->as_string()));
    }
  }
  if (const auto* online = arguments.if_contains("online")) {
    if (!online->is_bool()) return fail(Errc::bad_request, "online must be a boolean");
    if (online->as_bool()) query.emplace_back("online", "true");
  }
  auto agents = registry_agents(query_string(query));
  if (!agents) return error_result(agents.error());
  json::array found;
  for (const auto& item : *agents) {
    const auto& card = item.as_object();
    json::array capabilities;
    if (const auto* list = card.if_contains("capabilities"); list != nullptr && list->is_array()) {
      for (const auto& capability : list->as_array()) {
        const auto& object = capability.as_object();
        capabilities.push_back(json::object{{"name", object.at("name")},
                                            {"description", object.contains("description") ? object.at("description") : json::value(nullptr)},
                                            {"input_schema", object.contains("input_schema") ? object.at("input_schema") : json::value(nullptr)}});
      }
    }
    found.push_back(json::object{{"agent_id", card.contains("agent_id") ? card.at("agent_id") : json::value(nullptr)},
                                 {"name", card.contains("name") ? card.at("name") : json::value(nullptr)},
                                 {"description", card.contains("description") ? card.at("description") : json::value(nullptr)},
                                 {"online", card.contains("online") ? card.at("online") : json::value(false)},
                                 {"capabilities", std::move(capabilities)}});
  }
  return body_result(json::object{{"agents", std::move(found)}});
}

Result<json::object> MeshTools::mesh_call(const ToolCall& call, const AgentId& target, const std::string& capability,
                                          json::value payload, std::chrono::milliseconds timeout, bool stream) {
  // An assistant waits on the call: an agent the registry knows to be offline (or does not know)
  // fails now with unreachable instead of its request sitting in the relay's store until the
  // timeout. Without registry access the call is simply made.
  if (auto presence = target_presence(target); presence) return error_result(*presence);
  MeshCall request;
  request.target = target;
  request.capability = capability;
  request.payload = std::move(payload);
  request.timeout = timeout;
  request.stream = stream;
  request.cancel = call.cancel;
  auto chunks = std::make_shared<json::array>();
  auto chunks_mutex = std::make_shared<std::mutex>();
  request.on_chunk = [&call, chunks, chunks_mutex](const json::value& chunk) {
    std::size_t count = 0;
    {
      const std::lock_guard lock(*chunks_mutex);
      chunks->push_back(chunk);
      count = chunks->size();
    }
    call.progress("chunk " + std::to_string(count) + ": " + json::serialize(chunk).substr(0, 200));
  };

  // The call runs on its own thread so this one can send progress while it waits.
  std::mutex mutex;
  std::condition_variable done;
  std::optional<Result<json::value>> result;
  std::thread worker([&] {
    auto answer = caller_->call(request);
    const std::lock_guard lock(mutex);
    result = std::move(answer);
    done.notify_all();
  });
  {
    std::unique_lock lock(mutex);
    const auto started = std::chrono::steady_clock::now();
    while (!done.wait_for(lock, kProgressHeartbeat, [&] { return result.has_value(); })) {
      const auto waited = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started);
      lock.unlock();
      call.progress("waiting for " + capability + " of " + target.str().substr(0, 8) + " (" + std::to_string(waited.count()) + " s)");
      lock.lock();
    }
  }
  worker.join();
  if (!*result) return error_result(result->error());
  if (!stream) return body_result(**result);
  const std::lock_guard lock(*chunks_mutex);
  return text_result(*chunks, json::object{{"chunks", *chunks}}, false);
}

Result<json::object> MeshTools::call_tool(const ToolCall& call) {
  const auto& arguments = call.arguments;
  if (call.name == "mesh__search") return search(arguments);
  if (call.name == "mesh__call") {
    const auto* agent_value = arguments.if_contains("agent_id");
    if (agent_value == nullptr || !agent_value->is_string()) return fail(Errc::bad_request, "agent_id (a string) is required");
    auto agent = AgentId::parse(agent_value->as_string());
    if (!agent) return fail(Errc::bad_request, "agent_id is not an agent ID: " + agent.error().message);
    const auto* capability = arguments.if_contains("capability");
    if (capability == nullptr || !capability->is_string()) return fail(Errc::bad_request, "capability (a string) is required");
    const auto* payload = arguments.if_contains("payload");
    if (payload == nullptr) return fail(Errc::bad_request, "payload is required (the request body)");
    auto timeout = timeout_argument(arguments);
    if (!timeout) return std::move(timeout).error();
    bool stream = false;
    if (const auto* flag = arguments.if_contains("stream")) {
      if (!flag->is_bool()) return fail(Errc::bad_request, "stream must be a boolean");
      stream = flag->as_bool();
    }
    return mesh_call(call, *agent, std::string(capability->as_string()), *payload, *timeout, stream);
  }
  if (inbox_ && call.name == "mesh__get_messages") {
    json::array messages = inbox_->take_messages();
    return text_result(messages, json::object{{"messages", messages}}, false);
  }
  if (inbox_ && call.name == "mesh__reply_message") {
    const auto* id = arguments.if_contains("message_id");
    if (id == nullptr || !id->is_string()) return fail(Errc::bad_request, "message_id (a string) is required");
    const auto* payload = arguments.if_contains("payload");
    if (payload == nullptr) return fail(Errc::bad_request, "payload is required (the answer)");
    if (auto replied = inbox_->reply(std::string(id->as_string()), *payload); !replied) return error_result(replied.error());
    return body_result(json::object{{"message_id", *id}, {"replied", true}});
  }
  std::optional<AgentTool> tool;
  {
    bool stale = false;
    {
      const std::lock_guard lock(mutex_);
      stale = !loaded_;
    }
    if (stale) (void)refresh();
    const std::lock_guard lock(mutex_);
    for (const auto& candidate : agent_tools_) {
      if (candidate.name == call.name) tool = candidate;
    }
  }
  if (!tool) return fail(Errc::bad_request, "unknown tool " + call.name + " (tools/list shows the current ones)");
  return mesh_call(call, tool->agent, tool->capability, json::value(arguments), kDefaultCallTimeout, false);
}

}  // namespace agent_mesh::ctl::mcp
