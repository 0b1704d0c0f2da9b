// agent-mesh-relay: the WebSocket hub (relay.md, protocol §6–§7). This header is free of Asio and
// Beast so that mains and tests compile fast; the implementation lives in relay_server.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent_mesh/identity.hpp"
#include "agent_mesh/key_lifecycle.hpp"
#include "agent_mesh/result.hpp"
#include "net/http_exchange.hpp"
#include "relay_config.hpp"

namespace agent_mesh::relay {

class RelayServer {
 public:
  explicit RelayServer(RelayConfig config);
  ~RelayServer();
  RelayServer(const RelayServer&) = delete;
  RelayServer& operator=(const RelayServer&) = delete;

  // Opens the store, binds the listener. Errors name what failed (bad listen address, port in
  // use, store not writable, wildcard listen without public_url).
  [[nodiscard]] Status start();
  // "http://127.0.0.1:43512": the bound address, for the first stdout line.
  [[nodiscard]] std::string listening_url() const;
  // The relay_id clients must see in the challenge (protocol §6).
  [[nodiscard]] std::string relay_id() const;
  // Runs the server on `threads` threads until it has drained; returns when stopped.
  void run(unsigned threads);
  // Starts a graceful drain (SIGTERM/SIGINT): /health 503, no new connections, clients closed with
  // 1001, queued frames stored, exit within drain_timeout_s. Thread-safe.
  void drain();

  // ---- Embedding (agent-mesh-server, agent-mesh-registry); set before start() ----

  // The relay's listener is the process's HTTP front: requests it does not serve itself (anything
  // but /relay/ws, /health, /status, /metrics, /revocations) go to this handler; without one they
  // get 404. Bodies up to kMaxHandlerBodyBytes reach it; larger ones are answered 413 here.
  static constexpr std::size_t kMaxHandlerBodyBytes = 1024 * 1024;
  void set_http_handler(http::Handler handler);
  // Serve only the handler: no WebSocket endpoint, no offline store (agent-mesh-registry).
  void disable_relay();
  // relay.md "Gate": consulted after an agent proved its key and before it is routed; false
  // refuses the login with auth_failed. Runs on a network thread, so it must answer quickly.
  void set_registration_gate(std::function<bool(const AgentId&)> gate);

  // ---- What the embedding registry reads and pushes (thread-safe, after start()) ----

  // Persists a verified revocation and enforces it at once: live connection closed 4003, stored
  // envelopes dropped, refused from then on (what POST /revocations does). Blocks until stored.
  [[nodiscard]] Status revoke(const Revocation& revocation);
  struct Presence {
    AgentId agent;
    std::int64_t connected_at_ms = 0;
    std::int64_t last_seen_ms = 0;
  };
  [[nodiscard]] std::vector<Presence> online_agents() const;
  [[nodiscard]] std::optional<Presence> presence(const AgentId& agent) const;

  struct Impl;  // public so the connection classes in relay_server.cpp can name it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace agent_mesh::relay
