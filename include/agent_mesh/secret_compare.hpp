// Comparing secrets (API tokens, admin tokens, bearer tokens) without leaking through timing.
#pragma once

#include <string_view>

namespace agent_mesh {

// True iff `presented` equals `expected`, in time independent of where they differ and of their
// lengths (both are hashed with BLAKE2b-256, the digests compared with sodium_memcmp). An empty
// `expected` (an unset secret) matches nothing, not even an empty `presented`.
[[nodiscard]] bool secrets_equal(std::string_view expected, std::string_view presented) noexcept;

}  // namespace agent_mesh
