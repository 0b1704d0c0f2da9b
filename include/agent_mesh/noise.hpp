// The Noise Protocol Framework (revision 34) for DH 25519, cipher ChaChaPoly, hash BLAKE2b, on
// libsodium. Generic over handshake patterns: a table of the 12 interactive fundamental patterns
// (Noise §7.4), each checked against its cacophony vector; only IK is used on the wire (protocol §5).
// Pure: no I/O; ephemeral keys come from libsodium's CSPRNG unless a test fixes them.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "agent_mesh/bytes.hpp"
#include "agent_mesh/identity.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh::noise {

inline constexpr std::size_t kKeyBytes = 32;
inline constexpr std::size_t kHashBytes = 64;  // BLAKE2b-512
inline constexpr std::size_t kTagBytes = 16;
inline constexpr std::size_t kDhBytes = 32;
inline constexpr std::size_t kMaxMessageBytes = 65535;  // Noise §3
// The largest plaintext in one transport message: 65,535 − 16 (protocol §5).
inline constexpr std::size_t kMaxPlaintextBytes = kMaxMessageBytes - kTagBytes;
// Nonce 2^64−1 is reserved (Noise §5.1); agent-mesh caps counters at 2^53−1 anyway.
inline constexpr std::uint64_t kMaxNonce = UINT64_MAX - 1;

using Key = std::array<std::uint8_t, kKeyBytes>;
using Hash = std::array<std::uint8_t, kHashBytes>;

// An X25519 key pair. The secret is wiped on destruction.
struct DhKeyPair {
  X25519Key secret{};
  X25519Key public_key{};
  DhKeyPair() = default;
  DhKeyPair(const DhKeyPair&) = default;
  DhKeyPair& operator=(const DhKeyPair&) = default;
  ~DhKeyPair();
  // A fresh random key pair.
  [[nodiscard]] static DhKeyPair generate();
  // The key pair for a given secret (public = X25519 base-point multiplication).
  [[nodiscard]] static DhKeyPair from_secret(const X25519Key& secret);
};

// Noise §5.1. Holds k and n; `encrypt_with_ad`/`decrypt_with_ad` use and advance the internal
// nonce (handshake phase). The `*_at` forms take an explicit counter and leave the state alone:
// agent-mesh transport messages carry their counter (protocol §5), so loss or reordering never
// desynchronises a session.
class CipherState {
 public:
  CipherState() = default;
  CipherState(const CipherState&) = default;
  CipherState& operator=(const CipherState&) = default;
  ~CipherState();

  void initialize_key(const std::optional<Key>& key);
  [[nodiscard]] bool has_key() const noexcept { return has_key_; }
  void set_nonce(std::uint64_t nonce) noexcept { nonce_ = nonce; }
  [[nodiscard]] std::uint64_t nonce() const noexcept { return nonce_; }

  // Appends the ciphertext (plaintext unchanged when there is no key) to `out`. `ad` and
  // `plaintext` must not point into `out` (appending may reallocate it). Errors (bad_request):
  // plaintext longer than kMaxPlaintextBytes, nonce exhausted (n = 2^64−1, Noise §5.1).
  [[nodiscard]] Status encrypt_with_ad(ByteView ad, ByteView plaintext, Bytes& out);
  // Appends the plaintext to `out`; on failure `out` is left as it was and n is not advanced.
  // Same aliasing rule. Errors (bad_request): ciphertext shorter than a tag or longer than
  // kMaxMessageBytes, nonce exhausted, authentication failure.
  [[nodiscard]] Status decrypt_with_ad(ByteView ad, ByteView ciphertext, Bytes& out);

  // Explicit-nonce AEAD: `out` must have room for plaintext.size() + 16 bytes; it may equal
  // plaintext.data() (in place) but must not overlap it otherwise. No allocation.
  // Precondition (aborts otherwise, as misuse): has_key(), nonce <= kMaxNonce and
  // plaintext.size() <= kMaxPlaintextBytes.
  void encrypt_at(std::uint64_t nonce, ByteView ad, ByteView plaintext, std::uint8_t* out) const;
  // `out` must have room for ciphertext.size() − 16 bytes (same overlap rule). Returns false if the
  // tag does not verify (then `out` holds nothing useful), the ciphertext is shorter than a tag or
  // longer than kMaxMessageBytes, or nonce is the reserved 2^64−1. Precondition: has_key().
  [[nodiscard]] bool decrypt_at(std::uint64_t nonce, ByteView ad, ByteView ciphertext, std::uint8_t* out) const;

 private:
  Key key_{};
  bool has_key_ = false;
  std::uint64_t nonce_ = 0;
};

// Noise §5.2.
class SymmetricState {
 public:
  explicit SymmetricState(std::string_view protocol_name);
  SymmetricState(const SymmetricState&) = default;
  SymmetricState& operator=(const SymmetricState&) = default;
  ~SymmetricState();

  void mix_key(ByteView input_key_material);
  void mix_hash(ByteView data);
  void mix_key_and_hash(ByteView input_key_material);
  [[nodiscard]] const Hash& handshake_hash() const noexcept { return h_; }
  [[nodiscard]] Status encrypt_and_hash(ByteView plaintext, Bytes& out);
  [[nodiscard]] Status decrypt_and_hash(ByteView ciphertext, Bytes& out);
  [[nodiscard]] bool has_key() const noexcept { return cipher_.has_key(); }
  // (c1, c2): c1 encrypts initiator → responder.
  [[nodiscard]] std::pair<CipherState, CipherState> split() const;

 private:
  CipherState cipher_;
  Hash ck_{};
  Hash h_{};
};

enum class Pattern : std::uint8_t { IK, XX, NN, NK, KK, IX, XK, KX, IN, XN, KN, NX };

// "Noise_IK_25519_ChaChaPoly_BLAKE2b" for Pattern::IK.
[[nodiscard]] std::string protocol_name(Pattern pattern);
// Parses "Noise_<pattern>_25519_ChaChaPoly_BLAKE2b"; nullopt for anything else (other suites,
// PSK modifiers).
[[nodiscard]] std::optional<Pattern> pattern_from_protocol_name(std::string_view name);

// What create() requires: `local_static` when this side's static key is used (IK: both sides;
// XX: both sides); `remote_static` exactly when the pattern's pre-message gives the peer's key
// (IK initiator: yes; IK responder: no). A remote_static for a key the peer sends in a handshake
// message (or never uses) is refused rather than silently replaced: compare remote_static() after
// the handshake instead.
struct HandshakeConfig {
  Pattern pattern = Pattern::IK;
  bool initiator = true;
  Bytes prologue;
  std::optional<DhKeyPair> local_static;
  std::optional<X25519Key> remote_static;       // pre-known (e.g. IK's responder key)
  std::optional<DhKeyPair> local_ephemeral;     // tests only: fixed instead of random
};

// The transport keys after a completed handshake, named by direction for this side.
struct TransportKeys {
  CipherState send;
  CipherState receive;
};

// Noise §5.3. write_message/read_message alternate per the pattern; after the last message,
// split() gives the transport keys. Any failure (bad tag, all-zero DH, wrong turn, wrong length)
// leaves the handshake failed: every later call fails too.
class HandshakeState {
 public:
  // Errors: bad_request if a key the pattern needs is missing.
  [[nodiscard]] static Result<HandshakeState> create(HandshakeConfig config);

  // Appends the handshake message to `message` (nothing on failure). Errors (bad_request): not our
  // turn, handshake finished or failed, payload too large for a 65,535-byte message (IK message 1:
  // at most 65,439 payload bytes), all-zero DH (a low-order preset peer key).
  // `payload` must not point into `message`.
  [[nodiscard]] Status write_message(ByteView payload, Bytes& message);
  // Appends the decrypted payload to `payload` (nothing on failure). Errors (bad_request): not our
  // turn, handshake finished or failed, longer than 65,535 bytes, too short for the next token,
  // "all-zero DH (low-order key)", authentication failure. `message` must not point into `payload`.
  [[nodiscard]] Status read_message(ByteView message, Bytes& payload);

  [[nodiscard]] bool is_complete() const noexcept;
  [[nodiscard]] bool is_my_turn() const noexcept;
  [[nodiscard]] bool is_initiator() const noexcept { return config_.initiator; }
  [[nodiscard]] const Hash& handshake_hash() const noexcept { return symmetric_.handshake_hash(); }
  // The peer's static key once it is known (pre-known or received).
  [[nodiscard]] const std::optional<X25519Key>& remote_static() const noexcept { return config_.remote_static; }
  // Precondition: is_complete() (aborts otherwise, as misuse).
  [[nodiscard]] TransportKeys split() const;

 private:
  HandshakeState(HandshakeConfig config, SymmetricState symmetric);
  Status fail_handshake(std::string message);

  HandshakeConfig config_;
  SymmetricState symmetric_;
  std::optional<X25519Key> remote_ephemeral_;
  std::size_t message_index_ = 0;
  bool failed_ = false;
};

}  // namespace agent_mesh::noise
