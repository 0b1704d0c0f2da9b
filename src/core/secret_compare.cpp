#include "agent_mesh/secret_compare.hpp"

#include <sodium.h>

#include <array>

namespace agent_mesh {

bool secrets_equal(std::string_view expected, std::string_view presented) noexcept {
  if (expected.empty()) return false;
  if (sodium_init() < 0) return false;
  std::array<unsigned char, crypto_generichash_BYTES> a{};
  std::array<unsigned char, crypto_generichash_BYTES> b{};
  crypto_generichash(a.data(), a.size(), reinterpret_cast<const unsigned char*>(expected.data()), expected.size(), nullptr, 0);
  crypto_generichash(b.data(), b.size(), reinterpret_cast<const unsigned char*>(presented.data()), presented.size(), nullptr, 0);
  const bool equal = sodium_memcmp(a.data(), b.data(), a.size()) == 0;
  sodium_memzero(a.data(), a.size());
  sodium_memzero(b.data(), b.size());
  return equal;
}

}  // namespace agent_mesh
