// A log-linear latency histogram: 64 sub-buckets per power of two, so every recorded value is
// reported within 1/64 (~1.6 %) of its true value whatever its magnitude, in constant memory (a
// run of any length costs the same ~20 KiB per histogram) and with O(1) recording. Exact sorting
// of samples would need memory growing with the run; a fixed set of linear buckets would lose
// either the microsecond floor or the second-long tail.
#pragma once

#include <array>
#include <bit>
#include <cstdint>

namespace agent_mesh::bench {

class LatencyHistogram {
 public:
  void record(std::uint64_t ns) noexcept {
    ++counts_[index_of(ns)];
    ++count_;
    if (ns > max_) max_ = ns;
  }
  void merge(const LatencyHistogram& other) noexcept {
    for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    if (other.max_ > max_) max_ = other.max_;
  }
  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
  [[nodiscard]] std::uint64_t max() const noexcept { return max_; }

  // The value at quantile q (0 < q ≤ 1): the midpoint of the bucket holding the ceil(q·count)-th
  // smallest sample. 0 when nothing was recorded.
  [[nodiscard]] std::uint64_t quantile(double q) const noexcept {
    if (count_ == 0) return 0;
    auto rank = static_cast<std::uint64_t>(q * static_cast<double>(count_) + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > count_) rank = count_;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= rank) return midpoint_of(i);
    }
    return max_;
  }

 private:
  static constexpr unsigned kSubBits = 6;                       // 64 sub-buckets per octave
  static constexpr std::uint64_t kLinear = 2ULL << kSubBits;    // values below 128 ns are exact
  static constexpr unsigned kMaxExponent = 44;                  // 2^44 ns ≈ 4.9 h: clamp beyond
  static constexpr std::size_t kBuckets = kLinear + (kMaxExponent - kSubBits) * (1ULL << kSubBits);

  static std::size_t index_of(std::uint64_t v) noexcept {
    if (v < kLinear) return static_cast<std::size_t>(v);
    unsigned exponent = static_cast<unsigned>(std::bit_width(v)) - 1;  // ≥ kSubBits + 1
    if (exponent > kMaxExponent) return kBuckets - 1;
    const unsigned shift = exponent - kSubBits;
    const std::uint64_t top = v >> shift;  // in [64, 128)
    return static_cast<std::size_t>(kLinear + (exponent - kSubBits - 1) * (1ULL << kSubBits) +
                                    (top - (1ULL << kSubBits)));
  }
  static std::uint64_t midpoint_of(std::size_t index) noexcept {
    if (index < kLinear) return index;
    const std::size_t rest = index - kLinear;
    const unsigned exponent = static_cast<unsigned>(rest >> kSubBits) + kSubBits + 1;
    const unsigned shift = exponent - kSubBits;
    const std::uint64_t top = (rest & ((1ULL << kSubBits) - 1)) + (1ULL << kSubBits);
    return (top << shift) + ((1ULL << shift) >> 1);
  }

  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t count_ = 0;
  std::uint64_t max_ = 0;
};

}  // namespace agent_mesh::bench
