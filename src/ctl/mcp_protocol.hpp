// The MCP adapter's protocol side (cli-mcp-web.md "MCP adapter"): JSON-RPC 2.0 messages of one MCP
// session, independent of the transport (stdio or Streamable HTTP). The tools themselves are a
// Backend (mcp_tools.hpp).
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <functional>
#include <map>
#include <set>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "agent_mesh/pending.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh::ctl::mcp {

// The revisions answered as asked; any other request gets the newest.
inline constexpr std::string_view kLatestVersion = "2025-11-25";
[[nodiscard]] bool is_supported_version(std::string_view version) noexcept;
[[nodiscard]] std::string negotiate_version(std::string_view requested);

// JSON-RPC 2.0 error codes.
inline constexpr int kParseError = -32700;
inline constexpr int kInvalidRequest = -32600;
inline constexpr int kMethodNotFound = -32601;
inline constexpr int kInvalidParams = -32602;
inline constexpr int kInternalError = -32603;

// A message is at most this large (a mesh payload is at most ~760 KiB, plus JSON-RPC around it).
inline constexpr std::size_t kMaxMessageBytes = 4 * 1024 * 1024;

[[nodiscard]] boost::json::object error_message(boost::json::value id, int code, std::string message);

struct ToolCall {
  std::string name;
  boost::json::object arguments;
  // progress(message): a notifications/progress for the call when the client asked for progress
  // (a no-op otherwise); thread-safe.
  std::function<void(std::string message)> progress;
  CancelToken cancel;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // tools/list's `tools`.
  [[nodiscard]] virtual boost::json::array tools() = 0;
  // A CallToolResult object; an Error means bad params or an unknown tool (JSON-RPC -32602) with
  // its message. Blocks for the whole call.
  [[nodiscard]] virtual Result<boost::json::object> call_tool(const ToolCall& call) = 0;
};

// One MCP session. Thread-safe: messages may be handled concurrently (a tools/call blocks its
// thread; notifications/cancelled comes on another).
class Session {
 public:
  // Sends a message to the client outside any response (progress notifications go through the
  // per-request `send` of handle() instead).
  explicit Session(Backend& backend) : backend_(backend) {}

  struct Handled {
    // The response to send, for a request; nullopt for notifications, client responses and a
    // tools/call the client cancelled.
    std::optional<boost::json::object> response;
    bool was_request = false;
    std::string method;  // "" when not a request/notification
  };

  // Parses and handles one message. `send` carries notifications related to this request (progress)
  // and must be thread-safe. Blocks for a tools/call.
  [[nodiscard]] Handled handle(std::string_view text, const std::function<void(const boost::json::object&)>& send);
  // The same for an already parsed message.
  [[nodiscard]] Handled handle(const boost::json::value& message, const std::function<void(const boost::json::object&)>& send);

  // The revision agreed at initialize ("" before).
  [[nodiscard]] std::string protocol_version() const;
  // Cancels every call in flight (the transport is closing).
  void cancel_all();

 private:
  [[nodiscard]] boost::json::object call_tool(const boost::json::value& id, const boost::json::object& params,
                                              const std::function<void(const boost::json::object&)>& send);

  Backend& backend_;
  mutable std::mutex mutex_;
  std::string protocol_version_;
  std::map<std::string, CancelToken> in_flight_;  // by serialised request id
  std::set<std::string> cancelled_;               // in flight, cancelled by notifications/cancelled
};

}  // namespace agent_mesh::ctl::mcp
