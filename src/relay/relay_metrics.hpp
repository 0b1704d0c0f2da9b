// The relay's counters and their Prometheus text rendering (relay.md "Observability"). Counters
// are relaxed atomics: they are read for /metrics only, never used to make decisions.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "agent_mesh/error.hpp"
#include "core/prometheus_text.hpp"

namespace agent_mesh::relay {

enum class AuthResult : std::uint8_t { ok, resumed, bad_signature, bad_hello, unsupported_version, timeout, revoked, rate_limited, not_registered, count };

struct RelayMetrics {
  std::atomic<std::int64_t> connections{0};      // open WebSocket connections (authenticated or not)
  std::atomic<std::int64_t> agents_online{0};
  std::atomic<std::uint64_t> connections_total{0};
  std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(AuthResult::count)> auth{};
  std::atomic<std::uint64_t> envelopes_routed{0};   // delivered live
  std::atomic<std::uint64_t> envelopes_stored{0};   // answered `queued`
  std::array<std::atomic<std::uint64_t>, kErrcCount> envelopes_refused{};  // `undeliverable`, by code
  std::atomic<std::uint64_t> bytes_in{0};
  std::atomic<std::uint64_t> bytes_out{0};
  std::atomic<std::uint64_t> write_queue_drops{0};  // connections cut as slow consumers
  std::atomic<std::int64_t> store_depth{0};
  std::atomic<std::int64_t> store_bytes{0};
  // Routing latency: from a frame read to its hand-off (live) or store commit, in buckets.
  static constexpr std::array<double, 10> kLatencyBuckets{0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                                          0.0025, 0.005, 0.01, 0.05, 0.25};
  DurationHistogram<kLatencyBuckets.size()> latency{kLatencyBuckets};

  void observe_latency_ns(std::uint64_t ns) noexcept { latency.observe_ns(ns); }
  void count_auth(AuthResult result) noexcept {
    auth[static_cast<std::size_t>(result)].fetch_add(1, std::memory_order_relaxed);
  }
  void count_refused(Errc code) noexcept {
    envelopes_refused[static_cast<std::size_t>(code)].fetch_add(1, std::memory_order_relaxed);
  }
  // Prometheus text format 0.0.4, prefix agent_mesh_relay_.
  [[nodiscard]] std::string render() const;
};

}  // namespace agent_mesh::relay
