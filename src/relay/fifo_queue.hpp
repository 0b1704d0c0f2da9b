// A first-in first-out queue that holds no memory while empty. The relay keeps three queues per
// connection and most connections are idle most of the time: libstdc++'s std::deque allocates
// ~600 bytes even when empty, which at 10,000 idle connections was a tenth of the relay's memory
// (bench/relay "idle"). A vector with a moving head costs nothing empty, and gives its memory
// back once it drains after a burst.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace agent_mesh::relay {

template <class T>
class FifoQueue {
 public:
  FifoQueue() = default;
  FifoQueue(const FifoQueue&) = delete;
  FifoQueue& operator=(const FifoQueue&) = delete;
  // A moved-from queue is empty (std::exchange(queue, {}) relies on it).
  FifoQueue(FifoQueue&& other) noexcept
      : items_(std::exchange(other.items_, {})), head_(std::exchange(other.head_, 0)) {}
  FifoQueue& operator=(FifoQueue&& other) noexcept {
    items_ = std::exchange(other.items_, {});
    head_ = std::exchange(other.head_, 0);
    return *this;
  }
  ~FifoQueue() = default;

  [[nodiscard]] bool empty() const noexcept { return head_ == items_.size(); }
  [[nodiscard]] std::size_t size() const noexcept { return items_.size() - head_; }

  void push_back(T item) { items_.push_back(std::move(item)); }
  [[nodiscard]] T& front() noexcept { return items_[head_]; }
  [[nodiscard]] T& operator[](std::size_t index) noexcept { return items_[head_ + index]; }

  void pop_front() {
    items_[head_] = T{};  // release what the item owns now, not when the slot is reused
    if (++head_ == items_.size()) {
      clear();
    } else if (head_ >= kCompactAfter && head_ * 2 >= items_.size()) {
      // Mostly consumed: move the live tail to the front so a long-lived queue stays bounded by
      // what it holds, not by everything it ever held.
      items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }

  void clear() noexcept {
    items_.clear();
    head_ = 0;
    if (items_.capacity() > kKeepCapacity) std::vector<T>().swap(items_);
  }

  auto begin() noexcept { return items_.begin() + static_cast<std::ptrdiff_t>(head_); }
  auto end() noexcept { return items_.end(); }

 private:
  static constexpr std::size_t kCompactAfter = 32;
  static constexpr std::size_t kKeepCapacity = 16;  // small enough to keep for the next burst
  std::vector<T> items_;
  std::size_t head_ = 0;
};

}  // namespace agent_mesh::relay
