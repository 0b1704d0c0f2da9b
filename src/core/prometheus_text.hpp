// Prometheus text exposition format 0.0.4 (what `promtool check metrics` accepts): one writer for
// the relay's and the registry's /metrics, each with its own metric-name prefix.
#pragma once

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

}  // namespace agent_mesh
