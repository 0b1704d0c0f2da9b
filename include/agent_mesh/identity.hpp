// Agent identity (protocol §1, §2): Ed25519 key pairs, agent IDs, domain-separated signatures,
// and the X25519 keys derived from them for Noise.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "agent_mesh/bytes.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh {

using PublicKey = std::array<std::uint8_t, 32>;
using Signature = std::array<std::uint8_t, 64>;
using X25519Key = std::array<std::uint8_t, 32>;

// Every signature covers "agent-mesh/v1/<purpose>\n" ‖ message (protocol §1), so a signature made
// for one purpose never verifies for another.
enum class Purpose : std::uint8_t { auth, envelope, revoke, rotate, card, http };

// "agent-mesh/v1/auth\n" etc.
[[nodiscard]] std::string_view signature_prefix(Purpose purpose) noexcept;
// prefix ‖ message: the exact bytes Ed25519 signs.
[[nodiscard]] Bytes signing_input(Purpose purpose, ByteView message);

// An agent ID: base64url of a 32-byte Ed25519 public key, exactly 43 characters, accepted only if
// libsodium's crypto_core_ed25519_is_valid_point accepts the key (canonical, on the curve, in the
// prime-order subgroup, not of small order). A default-constructed AgentId is empty: it is never
// the result of parse() and equals no valid ID.
class AgentId {
 public:
  AgentId() = default;

  [[nodiscard]] static Result<AgentId> parse(std::string_view text);
  [[nodiscard]] static Result<AgentId> from_public_key(ByteView public_key);

  [[nodiscard]] const std::string& str() const noexcept { return text_; }
  [[nodiscard]] const PublicKey& public_key() const noexcept { return key_; }
  [[nodiscard]] bool empty() const noexcept { return text_.empty(); }
  // The X25519 static public key derived from this identity (crypto_sign_ed25519_pk_to_curve25519).
  [[nodiscard]] X25519Key x25519_public() const;

  friend bool operator==(const AgentId& a, const AgentId& b) noexcept { return a.key_ == b.key_; }
  friend auto operator<=>(const AgentId& a, const AgentId& b) noexcept { return a.key_ <=> b.key_; }

 private:
  PublicKey key_{};
  std::string text_;
};

// Verifies an Ed25519 signature over signing_input(purpose, message) with libsodium's
// crypto_sign_verify_detached semantics, checking the 64-byte length first.
// Error: Errc::bad_request naming the problem ("signature must be 64 bytes", "signature does not
// verify").
[[nodiscard]] Status verify_signature(const AgentId& signer, Purpose purpose, ByteView message,
                                      ByteView signature);
// The raw primitive without domain separation, for test vectors: `signed_bytes` is the complete
// message. Same verdicts as crypto_sign_verify_detached after the length check.
[[nodiscard]] bool ed25519_verify(ByteView public_key, ByteView signed_bytes, ByteView signature) noexcept;

// X25519 (protocol §1): fails with Errc::bad_request if the shared secret is all zeros (a
// low-order public key), which aborts any handshake using it.
[[nodiscard]] Result<X25519Key> x25519(const X25519Key& secret, const X25519Key& public_key);

// Writes `text` to `path` atomically (a temporary file in the same directory, mode 0600, fsync,
// rename, fsync of the directory), creating missing parent directories with mode 0700: key files and
// meshctl's config.toml. Errors: Errc::internal naming the path and the reason.
[[nodiscard]] Status write_private_file(const std::filesystem::path& path, std::string_view text);

// An Ed25519 key pair. The secret seed is wiped (sodium_memzero) when the object dies.
class KeyPair {
 public:
  [[nodiscard]] static KeyPair generate();
  [[nodiscard]] static Result<KeyPair> from_seed(ByteView seed);
  // The secret key file format (protocol §2): 43 base64url characters of the 32-byte seed,
  // optionally followed by exactly one "\n".
  [[nodiscard]] static Result<KeyPair> from_key_file_text(std::string_view text);
  // Reads a key file; refuses one readable by group or others, saying how to fix it (as ssh does).
  [[nodiscard]] static Result<KeyPair> load(const std::filesystem::path& path);

  KeyPair(const KeyPair& other);
  KeyPair& operator=(const KeyPair& other);
  ~KeyPair();

  // Writes the key file atomically (temporary file in the same directory, mode 0600, fsync,
  // rename), creating missing parent directories with mode 0700.
  [[nodiscard]] Status save(const std::filesystem::path& path) const;
  // The key file text: 43 characters and "\n".
  [[nodiscard]] std::string key_file_text() const;

  [[nodiscard]] const AgentId& agent_id() const noexcept { return id_; }
  [[nodiscard]] Signature sign(Purpose purpose, ByteView message) const;
  // The X25519 static secret key derived from this identity (crypto_sign_ed25519_sk_to_curve25519).
  [[nodiscard]] X25519Key x25519_secret() const;

 private:
  KeyPair() = default;
  std::array<std::uint8_t, 64> secret_{};  // libsodium layout: seed ‖ public key
  AgentId id_;
};

}  // namespace agent_mesh

namespace agent_mesh {
// SipHash (crypto_shorthash) under a per-process random key: agent IDs are chosen by clients, so an
// unkeyed hash would let anyone grind IDs into one bucket of a relay's routing table.
[[nodiscard]] std::size_t keyed_hash(ByteView bytes) noexcept;
}  // namespace agent_mesh

template <>
struct std::hash<agent_mesh::AgentId> {
  std::size_t operator()(const agent_mesh::AgentId& id) const noexcept {
    return agent_mesh::keyed_hash(id.public_key());
  }
};
