// agent-meshd's main program (meshd-sdk.md "meshd"): configuration, the MeshAgent, the forwarder to
// the local agent, the ACL feed, the registry sync and the Local API, started in that order and
// stopped on SIGTERM/SIGINT.
//
// Start: config → key → ACL (a bad ACL file stops the start) → the first ACL sync with the registry
// (with --cp-url; a failure is logged and retried later) → MeshAgent → Local API → the first stdout
// line `agent <agent_id> socket <path>` (flushed) → the registry sync's long poll.
// Stop (SIGTERM/SIGINT): the Local API stops accepting and the agent stops taking new requests at
// once; requests in flight both ways get up to 10 s; the relay connection closes with 1000; exit 0.
// A second signal during the drain exits at once (status 1).
//
// Exit status: 0 after a signal, 2 for a configuration error (bad flag, key or ACL), 1 when a
// resource cannot be had (socket in use, ...).
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string_view>

#include "agent_mesh/mesh_client.hpp"
#include "agent_mesh/result.hpp"
#include "meshd/meshd_config.hpp"

namespace agent_mesh::meshd {

[[nodiscard]] int run_meshd(int argc, char** argv);

// The daemon's parts running in the calling process (run_meshd uses it; so does mesh-demo, for an
// in-process meshd). No signal handling and nothing printed on stdout.
class Daemon {
 public:
  // Starts in the order above (the Local API is up when it returns, the registry sync started).
  // Logs to stderr at config.log_level unless `log` is given. Errors (already logged):
  // Errc::bad_request for the configuration (key, ACL, local agent URL), Errc::internal otherwise.
  [[nodiscard]] static Result<std::unique_ptr<Daemon>> start(
      const MeshdConfig& config, std::function<void(LogLevel, std::string_view, std::string_view)> log = nullptr);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  [[nodiscard]] const AgentId& agent_id() const noexcept;
  [[nodiscard]] std::filesystem::path socket_path() const;
  // The drain of SIGTERM: stop accepting, finish what is in flight up to `grace`, close the relay
  // connection with 1000. Returns false if the registry sync thread was still in a long poll
  // (it then still holds its objects; a process should leave with _Exit). Idempotent.
  bool stop(std::chrono::milliseconds grace = std::chrono::seconds(10));

 private:
  struct Parts;
  explicit Daemon(std::unique_ptr<Parts> parts);
  std::unique_ptr<Parts> parts_;
};

}  // namespace agent_mesh::meshd
