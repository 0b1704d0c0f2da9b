// Prometheus text exposition format 0.0.4 (what `promtool check metrics` accepts): one writer for
// the relay's and the registry's /metrics, each with its own metric-name prefix.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace agent_mesh {

class PrometheusText {
 public:
  explicit PrometheusText(std::string prefix) : prefix_(std::move(prefix)) { out_.reserve(4096); }
  // `# HELP` and `# TYPE` lines of a family (type: counter, gauge, histogram).
  void family(std::string_view name, std::string_view type, std::string_view help);
  // One sample; `labels` is empty or a full `{key="value",...}` block.
  void sample(std::string_view name, std::string_view labels, double value);
  // A histogram's _bucket (cumulative), _sum and _count samples; `counts` has one entry per bound
  // plus the +Inf bucket, each the count of that bucket alone.
  void histogram(std::string_view name, std::span<const double> bounds, std::span<const std::uint64_t> counts,
                 double sum, std::uint64_t count);
  [[nodiscard]] std::string take() { return std::move(out_); }

 private:
  std::string prefix_;
  std::string out_;
};

// A lock-free duration histogram (seconds) written as one Prometheus histogram family's samples.
template <std::size_t N>
class DurationHistogram {
 public:
  explicit constexpr DurationHistogram(std::array<double, N> bounds_s) : bounds_(bounds_s) {}

  void observe_ns(std::uint64_t ns) noexcept {
    const double seconds = static_cast<double>(ns) / 1e9;
    std::size_t bucket = 0;
    while (bucket < N && seconds > bounds_[bucket]) ++bucket;
    buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(ns, std::memory_order_relaxed);
  }
  void write(PrometheusText& text, std::string_view name) const {
    std::array<std::uint64_t, N + 1> counts{};
    for (std::size_t i = 0; i < counts.size(); ++i) counts[i] = buckets_[i].load(std::memory_order_relaxed);
    text.histogram(name, bounds_, counts, static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9,
                   count_.load(std::memory_order_relaxed));
  }

 private:
  std::array<double, N> bounds_;
  std::array<std::atomic<std::uint64_t>, N + 1> buckets_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_ns_{0};
};

}  // namespace agent_mesh
