// Pending<T>: the result of an SDK call that completes later, usable three ways without tying the
// caller to an event loop (no Asio in the SDK's public headers):
//
//   auto reply = client.request(bob, "echo", body).get();          // block this thread
//   auto reply = co_await client.request(bob, "echo", body);       // C++20 coroutine
//   client.request(bob, "echo", body).then([](Result<Response> r) { ... });  // callback
//
// A coroutine or callback resumes on the SDK thread that completed the call: keep it short, or hop
// to your own executor. CancelToken: a shared flag that, when set, stops what it was handed to (a
// request: the SDK sends `cancel` to the peer and the call completes with Errc::cancelled).
#pragma once

#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "agent_mesh/result.hpp"

namespace agent_mesh {

namespace detail {

template <class T>
class PendingState {
 public:
  // The first completion wins; later ones are ignored (a reply racing a timeout).
  bool complete(Result<T> value) {
    std::function<void(Result<T>)> callback;
    std::coroutine_handle<> waiter;
    {
      std::lock_guard lock(mutex_);
      if (value_) return false;
      value_.emplace(std::move(value));
      callback = std::move(callback_);
      waiter = std::exchange(waiter_, nullptr);
    }
    done_.notify_all();
    if (callback) callback(*value_);
    if (waiter) waiter.resume();
    return true;
  }
  [[nodiscard]] bool ready() const {
    std::lock_guard lock(mutex_);
    return value_.has_value();
  }
  Result<T> wait() {
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return value_.has_value(); });
    return *value_;
  }
  std::optional<Result<T>> wait_for(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    if (!done_.wait_for(lock, timeout, [&] { return value_.has_value(); })) return std::nullopt;
    return *value_;
  }
  void then(std::function<void(Result<T>)> callback) {
    {
      std::lock_guard lock(mutex_);
      if (!value_) {
        callback_ = std::move(callback);
        return;
      }
    }
    callback(*value_);
  }
  // false: already complete, resume at once.
  bool suspend(std::coroutine_handle<> waiter) {
    std::lock_guard lock(mutex_);
    if (value_) return false;
    waiter_ = waiter;
    return true;
  }
  Result<T> value() const {
    std::lock_guard lock(mutex_);
    return *value_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable done_;
  std::optional<Result<T>> value_;
  std::function<void(Result<T>)> callback_;
  std::coroutine_handle<> waiter_;
};

}  // namespace detail

template <class T>
class [[nodiscard]] Pending {
 public:
  Pending() : state_(std::make_shared<detail::PendingState<T>>()) {}
  explicit Pending(std::shared_ptr<detail::PendingState<T>> state) : state_(std::move(state)) {}

  // Blocks until the call completes.
  Result<T> get() const { return state_->wait(); }
  // nullopt if it has not completed within `timeout`.
  std::optional<Result<T>> wait_for(std::chrono::milliseconds timeout) const { return state_->wait_for(timeout); }
  [[nodiscard]] bool ready() const { return state_->ready(); }
  // Runs `callback` once with the result: now if complete, else on the completing thread.
  void then(std::function<void(Result<T>)> callback) const { state_->then(std::move(callback)); }

  // co_await support.
  bool await_ready() const { return state_->ready(); }
  bool await_suspend(std::coroutine_handle<> waiter) const { return state_->suspend(waiter); }
  Result<T> await_resume() const { return state_->value(); }

  // For the SDK: completes the call (first completion wins).
  bool complete(Result<T> value) const { return state_->complete(std::move(value)); }

 private:
  std::shared_ptr<detail::PendingState<T>> state_;
};

// A cancellation flag shared by copies. cancel() runs the registered callbacks once, on the
// cancelling thread; a callback registered after cancel() runs at once.
class CancelToken {
 public:
  CancelToken() : state_(std::make_shared<State>()) {}

  void cancel() const {
    std::vector<std::function<void()>> callbacks;
    {
      std::lock_guard lock(state_->mutex);
      if (state_->cancelled) return;
      state_->cancelled = true;
      callbacks.swap(state_->callbacks);
    }
    for (auto& callback : callbacks) callback();
  }
  [[nodiscard]] bool cancelled() const {
    std::lock_guard lock(state_->mutex);
    return state_->cancelled;
  }
  void on_cancel(std::function<void()> callback) const {
    {
      std::lock_guard lock(state_->mutex);
      if (!state_->cancelled) {
        state_->callbacks.push_back(std::move(callback));
        return;
      }
    }
    callback();
  }

 private:
  struct State {
    std::mutex mutex;
    bool cancelled = false;
    std::vector<std::function<void()>> callbacks;
  };
  std::shared_ptr<State> state_;
};

}  // namespace agent_mesh
