// The registry's REST API (registry.md) as an http::Handler: requests in, responses out, storage
// behind the RegistryStorage interface. Free of Asio and Beast: the HTTP front (the relay's
// listener in agent-mesh-server and agent-mesh-registry) parses, bounds and delivers requests.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent_mesh/key_lifecycle.hpp"
#include "agent_mesh/result.hpp"
#include "net/http_exchange.hpp"
#include "registry/device_flow.hpp"
#include "registry/storage.hpp"

namespace agent_mesh::registry {

struct RegistryOptions {
  // The URL clients reach this server at (no trailing slash), e.g. "https://mesh.example.com".
  std::string public_url;
  // The relay clients should dial (GET /info, A2A supportedInterfaces), e.g. "wss://.../relay/ws".
  std::string relay_url;
  // --admin-token-file's token (empty: no admin token accepted).
  std::string admin_token;
  // --cors-origin allow-list; empty: no CORS headers at all.
  std::vector<std::string> cors_origins;
  // GitHub (or a stand-in) for the device flow; absent: /oauth/* answer 404 and info says false.
  std::optional<DeviceFlowConfig> oauth;
  // Upper bound of /acl/sync's wait_s (registry.md: ≤ 30).
  std::int64_t max_sync_wait_s = 30;
};

// What the registry needs from its relay(s): in agent-mesh-server the relay object itself, in a
// standalone registry HTTP calls to each --relay-url.
struct RelayLink {
  struct Presence {
    std::string agent_id;
    std::int64_t connected_at_ms = 0;
    std::int64_t last_seen_ms = 0;
  };
  // The relay's live view (empty function: nobody is online).
  std::function<std::vector<Presence>()> online_agents;
  // Enforce a stored revocation at the relays at once (empty function: nothing to push to).
  std::function<Status(const Revocation&)> push_revocation;
};

class RegistryService {
 public:
  // `storage` must outlive the service. `now_ms` is the clock (tests may pass their own).
  RegistryService(std::shared_ptr<RegistryStorage> storage, RegistryOptions options, RelayLink relay,
                  std::function<std::int64_t()> now_ms = {});
  ~RegistryService();
  RegistryService(const RegistryService&) = delete;
  RegistryService& operator=(const RegistryService&) = delete;

  // The http::Handler: answers every path (404 outside /api/v1/). May answer later (long polls,
  // OAuth calls to the provider) and from another thread.
  void handle(http::Request request, http::Responder respond);

  // relay.md "Gate" for an in-process relay: a card is registered for this ID and it is not revoked.
  [[nodiscard]] bool may_authenticate(const std::string& agent_id);

  // --bootstrap: creates the user "admin" with its personal group and an API token when no user
  // exists. Returns the token (to be written to <data-dir>/bootstrap-token and printed once), or
  // nullopt when users exist already (nothing done).
  [[nodiscard]] Result<std::optional<std::string>> bootstrap();

  // Answers every pending long poll now (drain) and stops the worker threads.
  void shutdown();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace agent_mesh::registry
