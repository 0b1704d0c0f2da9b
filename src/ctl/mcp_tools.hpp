// The MCP adapter's tools (cli-mcp-web.md "Tools"): one per (online agent, capability) from the
// registry, `mesh__search`, `mesh__call`, and in receive mode `mesh__get_messages` and
// `mesh__reply_message` over the ReceiveInbox.
#pragma once

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "agent_mesh/identity.hpp"
#include "ctl/mcp_protocol.hpp"
#include "ctl/mesh_caller.hpp"
#include "net/http_server.hpp"

namespace agent_mesh::ctl {
class Context;
}

namespace agent_mesh::ctl::mcp {

// Limits, each with its reason.
// The per-agent tool list is re-read at most this often (cli-mcp-web.md: cached 60 s).
inline constexpr std::chrono::seconds kToolListTtl{60};
// Tools from GET /agents?online=true: at most this many agents (the registry's page size).
inline constexpr int kMaxListedAgents = 200;
// While a call waits, a progress notification at least this often (clients time out at 60 s).
inline constexpr std::chrono::seconds kProgressHeartbeat{20};
// Messages waiting in receive mode; past it new ones are refused (rate_limited).
inline constexpr std::size_t kMaxInboxMessages = 1000;

// Receive mode: requests meshd forwards to `--receive-port`, waiting for mesh__reply_message.
class ReceiveInbox {
 public:
  explicit ReceiveInbox(std::chrono::milliseconds reply_timeout) : reply_timeout_(reply_timeout) {}
  // The HTTP handler for meshd's forwarded requests: blocks until the reply, the timeout (→ 504
  // `timeout`, which meshd passes on) or meshd closing the connection (the caller cancelled).
  void serve(net::ServerRequest request, const std::shared_ptr<net::ResponseWriter>& writer);
  // Returns and removes the messages not yet handed out; they stay open for a reply.
  [[nodiscard]] boost::json::array take_messages();
  // Answers an open message. Errors: bad_request for an unknown (or already answered, timed out)
  // message_id.
  [[nodiscard]] Status reply(const std::string& message_id, boost::json::value payload);

 private:
  struct Waiting {
    std::optional<boost::json::value> reply;
    bool gone = false;
  };
  std::chrono::milliseconds reply_timeout_;
  std::mutex mutex_;
  std::condition_variable replied_;
  std::deque<boost::json::object> pending_;                 // not yet handed out
  std::map<std::string, std::shared_ptr<Waiting>> open_;   // by message_id: awaiting a reply
};

class MeshTools final : public Backend {
 public:
  // Reads the token, key and registry URL from the context now. `inbox`: receive mode.
  MeshTools(const Context& context, std::shared_ptr<ReceiveInbox> inbox);
  ~MeshTools() override;

  [[nodiscard]] boost::json::array tools() override;
  [[nodiscard]] Result<boost::json::object> call_tool(const ToolCall& call) override;
  // Re-reads the agents (when the cache is older than kToolListTtl); true when the tool names
  // changed since the last list (the transports then send notifications/tools/list_changed).
  [[nodiscard]] bool refresh();

 private:
  struct AgentTool {
    std::string name;
    AgentId agent;
    std::string capability;
    boost::json::object definition;
  };
  [[nodiscard]] Result<boost::json::value> registry_get(const std::string& target) const;
  [[nodiscard]] Result<boost::json::array> registry_agents(const std::string& query) const;
  [[nodiscard]] std::vector<AgentTool> load_agent_tools() const;
  // unreachable when the registry says the target is offline or unknown; nullopt when it is online
  // or the registry cannot tell.
  [[nodiscard]] std::optional<Error> target_presence(const AgentId& target) const;
  [[nodiscard]] Result<boost::json::object> search(const boost::json::object& arguments) const;
  [[nodiscard]] Result<boost::json::object> mesh_call(const ToolCall& call, const AgentId& target, const std::string& capability,
                                                      boost::json::value payload, std::chrono::milliseconds timeout,
                                                      bool stream);

  std::optional<std::string> token_;
  std::optional<KeyPair> key_;
  std::string cp_url_;
  std::shared_ptr<ReceiveInbox> inbox_;
  std::unique_ptr<MeshCaller> caller_;
  std::mutex mutex_;
  std::vector<AgentTool> agent_tools_;
  std::chrono::steady_clock::time_point loaded_at_{};
  bool loaded_ = false;
};

}  // namespace agent_mesh::ctl::mcp
