// Sliding window of received Noise counters (protocol §5, WireGuard style): accepts each counter
// once, in any order, as long as it is within the window behind the highest seen (at least
// kBits − 63 counters). The caller checks
// first and marks only after the AEAD tag verified, so a forged counter never moves the window.
#pragma once

#include <array>
#include <cstdint>

namespace agent_mesh {

class ReplayWindow {
 public:
  // Protocol §5 asks for at least 2048; 4096 bits (512 bytes per session) tolerate a burst of
  // multi-piece payloads overtaking each other.
  static constexpr std::uint64_t kBits = 4096;

  enum class Verdict : std::uint8_t { fresh, replayed, too_old };

  [[nodiscard]] Verdict check(std::uint64_t counter) const noexcept;
  // Precondition: check(counter) == fresh.
  void mark(std::uint64_t counter) noexcept;
  [[nodiscard]] bool empty() const noexcept { return !any_; }
  [[nodiscard]] std::uint64_t highest() const noexcept { return highest_; }

 private:
  static constexpr std::uint64_t kWords = kBits / 64;
  [[nodiscard]] bool bit(std::uint64_t counter) const noexcept {
    return (bits_[(counter / 64) % kWords] >> (counter % 64)) & 1u;
  }
  std::array<std::uint64_t, kWords> bits_{};
  std::uint64_t highest_ = 0;
  bool any_ = false;
};

}  // namespace agent_mesh
