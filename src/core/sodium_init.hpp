// Small libsodium helpers shared by the core: one-time initialisation, null-safe pointers for
// empty inputs, wiping secrets, and aborting on misuse (libsodium's own habit: hostile input fails
// quietly, misuse aborts).
#pragma once

#include <sodium.h>

#include <cstdio>
#include <cstdlib>

#include "agent_mesh/bytes.hpp"

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

// libsodium reads `length` bytes from its pointer arguments; an empty span may carry a null
// pointer, which is undefined behaviour to pass on even with length 0. Hand it a valid address.
inline const unsigned char* data_or_empty(ByteView bytes) noexcept {
  static constexpr unsigned char kNothing = 0;
  return bytes.empty() ? &kNothing : bytes.data();
}

// Wipes a secret-bearing container in place.
template <class Container>
void wipe(Container& secret) noexcept {
  if (!secret.empty()) sodium_memzero(secret.data(), secret.size() * sizeof(secret[0]));
}

// A bug in the caller, not hostile input: report and abort.
[[noreturn]] inline void misuse(const char* component, const char* what) noexcept {
  std::fprintf(stderr, "agent_mesh: %s misuse: %s\n", component, what);
  std::abort();
}

}  // namespace agent_mesh::detail
