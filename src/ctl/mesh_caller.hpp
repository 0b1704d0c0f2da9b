// One mesh request from meshctl (the `request` command and the MCP adapter's tool calls): through
// the local agent-meshd's Local API when its socket answers, else directly through the relay with
// the configured key (the SDK's MeshClient, kept for later calls). Thread-safe: calls may run
// concurrently.
#pragma once

#include <boost/json/value.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "agent_mesh/error.hpp"
#include "agent_mesh/identity.hpp"
#include "agent_mesh/pending.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh {
class MeshClient;
}

namespace agent_mesh::ctl {

class Context;

struct MeshCall {
  AgentId target;
  std::string capability;
  boost::json::value payload;
  std::chrono::milliseconds timeout{30000};
  // A streamed request: every chunk goes to on_chunk as it arrives; the result is then null.
  bool stream = false;
  std::function<void(const boost::json::value&)> on_chunk;
  std::optional<CancelToken> cancel;
};

class MeshCaller {
 public:
  // Reads what it needs from the context now (socket path, key, registry URL); the relay URL is
  // asked of the registry on the first direct call.
  explicit MeshCaller(const Context& context);
  ~MeshCaller();
  MeshCaller(const MeshCaller&) = delete;
  MeshCaller& operator=(const MeshCaller&) = delete;

  // The answer body, or a protocol §4 error (from meshd, the relay or the peer); "cannot reach the
  // relay" and "no key configured" are unreachable / bad_request with the reason.
  [[nodiscard]] Result<boost::json::value> call(const MeshCall& call);

  // Whether the last call went through meshd (for messages).
  [[nodiscard]] bool meshd_socket_answers() const;

 private:
  [[nodiscard]] Result<boost::json::value> call_meshd(const MeshCall& call) const;
  [[nodiscard]] Result<boost::json::value> call_directly(const MeshCall& call);
  [[nodiscard]] Result<std::shared_ptr<MeshClient>> direct_client(std::chrono::milliseconds connect_wait);

  std::optional<std::filesystem::path> socket_;
  std::optional<KeyPair> key_;
  std::string configured_relay_url_;  // empty: ask the registry
  std::string cp_url_;
  std::mutex mutex_;
  std::shared_ptr<MeshClient> client_;
  std::string relay_url_;  // the relay the direct client dials
  // Why the relay connection last closed (auth_failed: "this agent ID is not registered" ...).
  std::shared_ptr<std::string> last_close_reason_ = std::make_shared<std::string>();
  std::shared_ptr<std::mutex> close_reason_mutex_ = std::make_shared<std::mutex>();
};

// True when something accepts connections on meshd's socket (a stale socket file or no file: false).
[[nodiscard]] bool meshd_answers(const std::filesystem::path& socket);

// What to do after a mesh error (protocol §4 codes), for `request` and the MCP adapter's messages.
[[nodiscard]] std::string mesh_error_hint(Errc code, const std::string& me, const std::string& target,
                                          const std::string& capability, std::chrono::milliseconds timeout);

}  // namespace agent_mesh::ctl
