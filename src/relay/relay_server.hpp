// agent-mesh-relay: the WebSocket hub (relay.md, protocol §6–§7). This header is free of Asio and
// Beast so that mains and tests compile fast; the implementation lives in relay_server.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "agent_mesh/result.hpp"
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

  struct Impl;  // public so the connection classes in relay_server.cpp can name it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace agent_mesh::relay
