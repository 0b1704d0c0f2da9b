// Result<T>: a value or an agent_mesh::Error. The one return type for fallible operations in every
// component (docs/design.md). Hostile input yields an Error; misuse (reading the value of an error
// result) aborts, following libsodium's "hostile input fails quietly, misuse aborts".
#pragma once

#include <cstdio>
#include <cstdlib>
#include <type_traits>
#include <utility>
#include <variant>

#include "agent_mesh/error.hpp"

namespace agent_mesh {

[[noreturn]] inline void result_misuse(const char* what) noexcept {
  std::fprintf(stderr, "agent_mesh: Result misuse: %s\n", what);
  std::abort();
}

template <class T>
class [[nodiscard]] Result {
 public:
  using value_type = T;

  Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  [[nodiscard]] bool ok() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & {
    if (!ok()) result_misuse("value() on an error");
    return std::get<0>(state_);
  }
  const T& value() const& {
    if (!ok()) result_misuse("value() on an error");
    return std::get<0>(state_);
  }
  T&& value() && {
    if (!ok()) result_misuse("value() on an error");
    return std::get<0>(std::move(state_));
  }
  const Error& error() const& {
    if (ok()) result_misuse("error() on a value");
    return std::get<1>(state_);
  }
  Error&& error() && {
    if (ok()) result_misuse("error() on a value");
    return std::get<1>(std::move(state_));
  }

  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Error> state_;
};

// Result<void>: success or an Error.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), failed_(true) {}  // NOLINT

  [[nodiscard]] bool ok() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return ok(); }
  const Error& error() const& {
    if (!failed_) result_misuse("error() on a value");
    return error_;
  }
  Error&& error() && {
    if (!failed_) result_misuse("error() on a value");
    return std::move(error_);
  }

 private:
  Error error_;
  bool failed_ = false;
};

using Status = Result<void>;

// Shorthand for building errors: `return fail(Errc::bad_request, "sid must be 16 bytes");`
[[nodiscard]] inline Error fail(Errc code, std::string message) {
  return Error{code, std::move(message)};
}

}  // namespace agent_mesh

// Propagate an error from an expression returning Result<...>/Status.
#define AGENT_MESH_TRY(expr)                                  \
  do {                                                        \
    if (auto agent_mesh_try_result_ = (expr); !agent_mesh_try_result_.ok()) \
      return std::move(agent_mesh_try_result_).error();       \
  } while (false)
