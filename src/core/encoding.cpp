#include "agent_mesh/encoding.hpp"

#include <sodium.h>

#include <array>

#include "sodium_init.hpp"

namespace agent_mesh {
namespace {

constexpr char kBase64UrlAlphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// 0..63 for alphabet characters, 0xff otherwise.
constexpr std::array<std::uint8_t, 256> make_base64url_table() {
  std::array<std::uint8_t, 256> table{};
  for (auto& entry : table) entry = 0xff;
  for (std::uint8_t i = 0; i < 64; ++i) table[static_cast<unsigned char>(kBase64UrlAlphabet[i])] = i;
  return table;
}
constexpr auto kBase64UrlValue = make_base64url_table();

constexpr char kHexDigits[] = "0123456789abcdef";

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Describes a rejected character without echoing hostile bytes verbatim.
std::string describe_char(char c, std::size_t offset) {
  const auto byte = static_cast<unsigned char>(c);
  std::string out = "character ";
  if (byte >= 0x21 && byte < 0x7f) {
    out += '\'';
    out += c;
    out += '\'';
  } else {
    out += "0x";
    out += kHexDigits[byte >> 4];
    out += kHexDigits[byte & 0xf];
  }
  out += " at offset " + std::to_string(offset);
  return out;
}

// Decodes into `out` (exactly decoded-size bytes). Canonical only (protocol §1).
Status decode_into(std::string_view text, std::uint8_t* out) {
  if (text.size() % 4 == 1) {
    return fail(Errc::bad_request,
                "base64url length " + std::to_string(text.size()) + " is impossible (≡ 1 mod 4)");
  }
  std::size_t o = 0;
  std::uint32_t acc = 0;
  int bits = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const std::uint8_t v = kBase64UrlValue[static_cast<unsigned char>(c)];
    if (v == 0xff) {
      if (c == '=') return fail(Errc::bad_request, "base64url must not be padded ('=' at offset " + std::to_string(i) + ")");
      return fail(Errc::bad_request, "base64url contains a non-alphabet " + describe_char(c, i));
    }
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = static_cast<std::uint8_t>(acc >> bits);
    }
  }
  // The 2 or 4 leftover bits must be zero, or two texts would decode to the same bytes.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) {
    return fail(Errc::bad_request, "base64url is not canonical: non-zero unused trailing bits");
  }
  return {};
}

std::size_t decoded_size(std::size_t text_size) noexcept { return text_size / 4 * 3 + (text_size % 4 == 0 ? 0 : text_size % 4 - 1); }

}  // namespace

std::string base64url_encode(ByteView bytes) {
  std::string out;
  out.resize(base64url_encoded_size(bytes.size()));
  std::size_t o = 0;
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t{bytes[i]} << 16) | (std::uint32_t{bytes[i + 1]} << 8) | bytes[i + 2];
    out[o++] = kBase64UrlAlphabet[(v >> 18) & 63];
    out[o++] = kBase64UrlAlphabet[(v >> 12) & 63];
    out[o++] = kBase64UrlAlphabet[(v >> 6) & 63];
    out[o++] = kBase64UrlAlphabet[v & 63];
  }
  const std::size_t rest = bytes.size() - i;
  if (rest == 1) {
    const std::uint32_t v = std::uint32_t{bytes[i]} << 16;
    out[o++] = kBase64UrlAlphabet[(v >> 18) & 63];
    out[o++] = kBase64UrlAlphabet[(v >> 12) & 63];
  } else if (rest == 2) {
    const std::uint32_t v = (std::uint32_t{bytes[i]} << 16) | (std::uint32_t{bytes[i + 1]} << 8);
    out[o++] = kBase64UrlAlphabet[(v >> 18) & 63];
    out[o++] = kBase64UrlAlphabet[(v >> 12) & 63];
    out[o++] = kBase64UrlAlphabet[(v >> 6) & 63];
  }
  return out;
}

Result<Bytes> base64url_decode(std::string_view text) {
  if (text.size() % 4 == 1) {
    return fail(Errc::bad_request,
                "base64url length " + std::to_string(text.size()) + " is impossible (≡ 1 mod 4)");
  }
  Bytes out(decoded_size(text.size()));
  AGENT_MESH_TRY(decode_into(text, out.data()));
  return out;
}

Status base64url_decode_exact(std::string_view text, std::span<std::uint8_t> out) {
  if (text.size() != base64url_encoded_size(out.size())) {
    return fail(Errc::bad_request, "expected base64url of " + std::to_string(out.size()) +
                                       " bytes (" + std::to_string(base64url_encoded_size(out.size())) +
                                       " characters), got " + std::to_string(text.size()) + " characters");
  }
  return decode_into(text, out.data());
}

std::string hex_encode(ByteView bytes) {
  std::string out(bytes.size() * 2, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    out[2 * i] = kHexDigits[bytes[i] >> 4];
    out[2 * i + 1] = kHexDigits[bytes[i] & 0xf];
  }
  return out;
}

Result<Bytes> hex_decode(std::string_view text) {
  if (text.size() % 2 != 0) return fail(Errc::bad_request, "hex has an odd number of digits");
  Bytes out(text.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = hex_value(text[2 * i]);
    const int lo = hex_value(text[2 * i + 1]);
    if (hi < 0) return fail(Errc::bad_request, "hex contains a non-hex " + describe_char(text[2 * i], 2 * i));
    if (lo < 0) return fail(Errc::bad_request, "hex contains a non-hex " + describe_char(text[2 * i + 1], 2 * i + 1));
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return out;
}

// ---- UUID v4 ----

Result<Uuid> Uuid::parse(std::string_view text) {
  if (text.size() != 36) {
    return fail(Errc::bad_request, "UUID must be 36 characters (8-4-4-4-12), got " + std::to_string(text.size()));
  }
  Uuid uuid;
  std::size_t byte = 0;
  for (std::size_t i = 0; i < 36;) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return fail(Errc::bad_request, "UUID must have '-' at offset " + std::to_string(i));
      ++i;
      continue;
    }
    const char hi_c = text[i];
    const char lo_c = text[i + 1];
    // Lower case only: one text form per UUID (protocol §1).
    const bool hi_ok = (hi_c >= '0' && hi_c <= '9') || (hi_c >= 'a' && hi_c <= 'f');
    const bool lo_ok = (lo_c >= '0' && lo_c <= '9') || (lo_c >= 'a' && lo_c <= 'f');
    if (!hi_ok) return fail(Errc::bad_request, "UUID must be lower-case hex: " + describe_char(hi_c, i));
    if (!lo_ok) return fail(Errc::bad_request, "UUID must be lower-case hex: " + describe_char(lo_c, i + 1));
    uuid.bytes_[byte++] = static_cast<std::uint8_t>(hex_value(hi_c) << 4 | hex_value(lo_c));
    i += 2;
  }
  if ((uuid.bytes_[6] >> 4) != 4) return fail(Errc::bad_request, "UUID is not version 4 (version nibble must be 4)");
  if ((uuid.bytes_[8] >> 6) != 2) return fail(Errc::bad_request, "UUID variant nibble must be 8, 9, a or b");
  return uuid;
}

bool Uuid::is_valid(std::string_view text) noexcept {
  // parse() allocates only on failure paths; validity checks are cheap enough to reuse it.
  return parse(text).ok();
}

Uuid Uuid::generate() {
  detail::ensure_sodium();
  Uuid uuid;
  randombytes_buf(uuid.bytes_.data(), uuid.bytes_.size());
  uuid.bytes_[6] = static_cast<std::uint8_t>((uuid.bytes_[6] & 0x0f) | 0x40);
  uuid.bytes_[8] = static_cast<std::uint8_t>((uuid.bytes_[8] & 0x3f) | 0x80);
  return uuid;
}

std::string Uuid::to_string() const {
  std::string out;
  out.reserve(36);
  for (std::size_t i = 0; i < bytes_.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += kHexDigits[bytes_[i] >> 4];
    out += kHexDigits[bytes_[i] & 0xf];
  }
  return out;
}

}  // namespace agent_mesh
