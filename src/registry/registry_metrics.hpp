// The registry's Prometheus metrics (registry.md "Other": prefix agent_mesh_registry_, text format
// 0.0.4, passes promtool check metrics). Lock-free counters; render() adds the storage's counts.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "core/prometheus_text.hpp"
#include "registry/storage.hpp"

namespace agent_mesh::registry {

struct RegistryMetrics {
  // Requests by status class (index: 1xx..5xx → 0..4).
  std::array<std::atomic<std::uint64_t>, 5> requests_by_class{};
  std::atomic<std::uint64_t> agent_signatures_refused{0};
  std::atomic<std::uint64_t> tokens_refused{0};
  std::atomic<std::int64_t> sync_waiting{0};  // /acl/sync long polls waiting now
  std::atomic<std::uint64_t> revocations_pushed{0};
  std::atomic<std::uint64_t> revocation_push_failures{0};
  // Request duration histogram (seconds), answered requests only (long polls excluded).
  static constexpr std::array<double, 10> kBuckets{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0};
  DurationHistogram<kBuckets.size()> duration{kBuckets};

  void count_request(int status) noexcept;
  void observe_duration_ns(std::uint64_t ns) noexcept { duration.observe_ns(ns); }
  [[nodiscard]] std::string render(const StatusCounts& counts) const;
};

}  // namespace agent_mesh::registry
