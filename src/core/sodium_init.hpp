// libsodium must be initialised once before use; every core entry point that touches libsodium
// calls ensure_sodium() first (thread-safe: a function-local static).
#pragma once

#include <sodium.h>

#include <cstdio>
#include <cstdlib>

namespace agent_mesh::detail {

inline void ensure_sodium() noexcept {
  static const bool initialised = [] {
    if (sodium_init() < 0) {
      std::fputs("agent_mesh: libsodium failed to initialise\n", stderr);
      std::abort();
    }
    return true;
  }();
  (void)initialised;
}

}  // namespace agent_mesh::detail
