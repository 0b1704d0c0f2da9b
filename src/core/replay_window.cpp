#include "agent_mesh/replay_window.hpp"

namespace agent_mesh {

ReplayWindow::Verdict ReplayWindow::check(std::uint64_t counter) const noexcept {
  if (!any_ || counter > highest_) return Verdict::fresh;
  // Measured in words: a counter whose word has been recycled by the ring is too old, so the
  // window always covers at least kBits − 63 counters behind the highest.
  if (highest_ / 64 - counter / 64 >= kWords) return Verdict::too_old;
  return bit(counter) ? Verdict::replayed : Verdict::fresh;
}

void ReplayWindow::mark(std::uint64_t counter) noexcept {
  if (!any_ || counter > highest_) {
    // Clear the words the window slides over. A jump of a whole window or more clears everything.
    const std::uint64_t first_new_word = any_ ? highest_ / 64 + 1 : 0;
    const std::uint64_t last_new_word = counter / 64;
    if (!any_ || last_new_word - (first_new_word - 1) >= kWords) {
      bits_.fill(0);
    } else {
      for (std::uint64_t w = first_new_word; w <= last_new_word; ++w) bits_[w % kWords] = 0;
    }
    highest_ = counter;
    any_ = true;
  }
  bits_[(counter / 64) % kWords] |= std::uint64_t{1} << (counter % 64);
}

}  // namespace agent_mesh
