// RelayLink: the client side of the relay connection (protocol §6) for the SDK. It dials the relay
// URLs in turn over ws:// or wss://, authenticates (hello → challenge → auth → welcome, checking the
// challenge's relay_id against the URL dialled or the expected ID), presents the last resume token,
// acknowledges stored envelopes, detects a dead relay (nothing heard for 3 heartbeat intervals),
// reconnects with full-jitter exponential backoff, and stops for good after 4009 (replaced) or 4003
// (revoked).
//
// It owns one I/O thread. Every handler runs on that thread, and so do post()ed functions and the
// wake-up timer: the SDK keeps its Endpoint there without locks. Beast stays in relay_link.cpp.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent_mesh/identity.hpp"
#include "agent_mesh/limits.hpp"
#include "agent_mesh/mesh_client.hpp"
#include "agent_mesh/relay_protocol.hpp"

namespace agent_mesh::sdk {

struct RelayLinkOptions {
  KeyPair identity;
  std::vector<std::string> urls;
  std::optional<std::string> expected_relay_id;
  std::string ca_file;
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds reconnect_initial{200};
  std::chrono::milliseconds reconnect_max{10000};
  // After welcome every frame is at most this (protocol §3); larger frames from the relay close.
  std::size_t max_frame_bytes = limits::default_max_envelope_bytes;
  // Frames waiting to be written (while disconnected, or behind a slow socket).
  std::size_t max_queued_frames = 4096;
};

struct RelayLinkHandlers {
  std::function<void(const ConnectionEvent&)> on_state;
  // An envelope frame from the relay. When it is one of the stored envelopes announced by welcome's
  // `buffered`, the link acks its id after this returns (processed or dropped, protocol §6).
  std::function<void(std::string_view frame)> on_envelope;
  std::function<void(const Queued&)> on_queued;
  std::function<void(const Undeliverable&)> on_undeliverable;
  std::function<void(LogLevel, std::string_view event, std::string_view detail)> on_log;
};

class RelayLink {
 public:
  RelayLink(RelayLinkOptions options, RelayLinkHandlers handlers);
  // Closes (as close()) and joins the thread; no handler runs after it returns.
  ~RelayLink();
  RelayLink(const RelayLink&) = delete;
  RelayLink& operator=(const RelayLink&) = delete;

  // Starts the thread and the first dial.
  void start();
  // Thread-safe: runs `fn` on the link thread (dropped after close()).
  void post(std::function<void()> fn);
  // Link thread only: (re)arms the one wake-up timer.
  void set_wakeup(std::chrono::steady_clock::time_point when, std::function<void()> fn);
  // Link thread only: queues an envelope frame for the relay (written at once when connected, after
  // the next welcome otherwise). false: the queue is full or the link gave up.
  bool send(std::string frame);
  // Link thread only.
  [[nodiscard]] bool connected() const;
  [[nodiscard]] std::string current_url() const;
  // Thread-safe, not from the link thread: flushes queued frames (bounded: 2 s), closes with 1000,
  // stops reconnecting, joins the thread.
  void close();
  [[nodiscard]] bool on_link_thread() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Full jitter (AWS architecture blog "Exponential Backoff And Jitter"): a uniform delay in
// [0, min(max, initial * 2^attempt)]. Pure, so it is unit-tested; `unit` is a uniform draw in [0, 1).
[[nodiscard]] std::chrono::milliseconds reconnect_delay(std::chrono::milliseconds initial, std::chrono::milliseconds max,
                                                        unsigned attempt, double unit);

}  // namespace agent_mesh::sdk
