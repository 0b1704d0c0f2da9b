// Canonical text encodings (protocol §1): base64url without padding, lower-case hex, UUID v4.
// Decoders are strict: every byte string has exactly one accepted text form, so an alias of a
// revoked key or a replayed ID can never pass as something new.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent_mesh/bytes.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh {

// RFC 4648 §5 without padding.
[[nodiscard]] std::string base64url_encode(ByteView bytes);
// Rejects padding, whitespace, characters outside the alphabet, lengths ≡ 1 (mod 4) and non-zero
// unused trailing bits. Errors are Errc::bad_request naming the problem.
[[nodiscard]] Result<Bytes> base64url_decode(std::string_view text);
// Decodes into exactly `out.size()` bytes; any other decoded length is an error.
[[nodiscard]] Status base64url_decode_exact(std::string_view text, std::span<std::uint8_t> out);
// The length of the encoding of n bytes.
[[nodiscard]] constexpr std::size_t base64url_encoded_size(std::size_t n) noexcept {
  return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
}

// Lower-case hex.
[[nodiscard]] std::string hex_encode(ByteView bytes);
// Accepts upper and lower case; rejects odd lengths and non-hex characters.
[[nodiscard]] Result<Bytes> hex_decode(std::string_view text);

// UUID version 4 in lower-case canonical 8-4-4-4-12 text (protocol §1).
class Uuid {
 public:
  // Strict parse: lower-case hex, dashes at 8/13/18/23, version nibble 4, variant nibble 8..b.
  [[nodiscard]] static Result<Uuid> parse(std::string_view text);
  // A fresh random UUID v4 from libsodium's CSPRNG.
  [[nodiscard]] static Uuid generate();
  [[nodiscard]] static bool is_valid(std::string_view text) noexcept;

  [[nodiscard]] std::string to_string() const;
  [[nodiscard]] const std::array<std::uint8_t, 16>& bytes() const noexcept { return bytes_; }
  friend bool operator==(const Uuid&, const Uuid&) = default;
  friend auto operator<=>(const Uuid&, const Uuid&) = default;

 private:
  std::array<std::uint8_t, 16> bytes_{};
};

}  // namespace agent_mesh
