// The Noise Protocol Framework, revision 34, for Noise_*_25519_ChaChaPoly_BLAKE2b on libsodium.
//
// Section numbers below are the Noise specification's unless marked "protocol §", which refers to
// the agent-mesh protocol (docs: spec/protocol.md). Only IK travels on the wire (protocol §5); the
// handshake engine is generic and table-driven so that the cacophony vectors of every interactive
// fundamental pattern (§7.4, §7.5) check it.
//
// Error policy (as in identity.cpp): hostile input fails with Errc::bad_request and a message that
// names the problem; misuse (an explicit-nonce call without a key, a split before completion) and
// "impossible" libsodium failures abort. Every buffer that held a secret is wiped.
#include "agent_mesh/noise.hpp"

#include <sodium.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <string>

#include "sodium_init.hpp"

namespace agent_mesh::noise {
namespace {

static_assert(kKeyBytes == crypto_aead_chacha20poly1305_ietf_KEYBYTES);
static_assert(kTagBytes == crypto_aead_chacha20poly1305_ietf_ABYTES);
static_assert(crypto_aead_chacha20poly1305_ietf_NPUBBYTES == 12);
static_assert(kDhBytes == crypto_scalarmult_BYTES);
static_assert(kDhBytes == crypto_scalarmult_SCALARBYTES);
static_assert(kHashBytes <= crypto_generichash_BYTES_MAX);

// BLAKE2b's block length, the HMAC block size (§12.8: BLOCKLEN = 128).
constexpr std::size_t kHashBlockBytes = 128;

[[noreturn]] void noise_misuse(const char* what) noexcept { detail::misuse("noise", what); }
using detail::data_or_empty;
using detail::wipe;

// ---- Hash functions (§4.3, §12.8) ----

// BLAKE2b-512 over the concatenation of `parts`.
void blake2b(std::initializer_list<ByteView> parts, std::uint8_t* out) {
  crypto_generichash_state state;
  if (crypto_generichash_init(&state, nullptr, 0, kHashBytes) != 0) noise_misuse("BLAKE2b init failed");
  for (const ByteView part : parts) {
    if (crypto_generichash_update(&state, data_or_empty(part), part.size()) != 0) {
      noise_misuse("BLAKE2b update failed");
    }
  }
  if (crypto_generichash_final(&state, out, kHashBytes) != 0) noise_misuse("BLAKE2b final failed");
  sodium_memzero(&state, sizeof state);  // the state holds chaining-key material in HMAC
}

// HMAC-HASH(key, data) per RFC 2104 with BLOCKLEN 128 (§4.3). Every key Noise passes here is
// HASHLEN = 64 bytes, shorter than a block, so it is zero-padded and never pre-hashed.
void hmac_blake2b(const Hash& key, std::initializer_list<ByteView> data, Hash& out) {
  std::array<std::uint8_t, kHashBlockBytes> padded_key{};
  std::copy(key.begin(), key.end(), padded_key.begin());
  for (auto& byte : padded_key) byte ^= 0x36;  // ipad

  crypto_generichash_state state;
  Hash inner{};
  if (crypto_generichash_init(&state, nullptr, 0, kHashBytes) != 0 ||
      crypto_generichash_update(&state, padded_key.data(), padded_key.size()) != 0) {
    noise_misuse("HMAC-BLAKE2b inner hash failed");
  }
  for (const ByteView part : data) {
    if (crypto_generichash_update(&state, data_or_empty(part), part.size()) != 0) {
      noise_misuse("HMAC-BLAKE2b inner hash failed");
    }
  }
  if (crypto_generichash_final(&state, inner.data(), inner.size()) != 0) {
    noise_misuse("HMAC-BLAKE2b inner hash failed");
  }

  for (auto& byte : padded_key) byte ^= 0x36 ^ 0x5c;  // ipad → opad
  blake2b({padded_key, inner}, out.data());

  wipe(padded_key);
  wipe(inner);
  sodium_memzero(&state, sizeof state);
}

// HKDF(chaining_key, input_key_material, num_outputs) (§4.3) with two or three outputs.
// `third` may be null for two outputs.
void hkdf(const Hash& chaining_key, ByteView input_key_material, Hash& first, Hash& second,
          Hash* third) {
  Hash temp_key{};
  hmac_blake2b(chaining_key, {input_key_material}, temp_key);
  static constexpr std::uint8_t kOne = 0x01, kTwo = 0x02, kThree = 0x03;
  hmac_blake2b(temp_key, {ByteView(&kOne, 1)}, first);
  hmac_blake2b(temp_key, {first, ByteView(&kTwo, 1)}, second);
  if (third != nullptr) hmac_blake2b(temp_key, {second, ByteView(&kThree, 1)}, *third);
  wipe(temp_key);
}

// HASHLEN is 64, so an HKDF output used as a cipher key is truncated to its first 32 bytes (§5.2).
Key truncate_to_key(const Hash& output) {
  Key key{};
  std::copy_n(output.begin(), key.size(), key.begin());
  return key;
}

// §12.3: 32 bits of zeros followed by the little-endian encoding of n.
using Nonce = std::array<std::uint8_t, crypto_aead_chacha20poly1305_ietf_NPUBBYTES>;
Nonce chachapoly_nonce(std::uint64_t counter) noexcept {
  Nonce nonce{};
  for (std::size_t i = 0; i < 8; ++i) nonce[4 + i] = static_cast<std::uint8_t>(counter >> (8 * i));
  return nonce;
}

// ---- Handshake patterns (§7) ----

enum class Token : std::uint8_t { e, s, ee, es, se, ss };

constexpr std::size_t kMaxTokensPerMessage = 6;
constexpr std::size_t kMaxMessagesPerPattern = 3;

struct MessageTokens {
  std::array<Token, kMaxTokensPerMessage> tokens{};
  std::size_t count = 0;
};

// Parses one message pattern in the spec's own notation, e.g. "e, es, s, ss". Evaluated at compile
// time: a typo in the table below is a compile error (the throw is not a constant expression).
constexpr MessageTokens parse_tokens(std::string_view text) {
  MessageTokens message;
  while (!text.empty()) {
    const std::size_t comma = text.find(',');
    std::string_view word = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    while (!word.empty() && word.front() == ' ') word.remove_prefix(1);
    Token token{};
    if (word == "e") token = Token::e;
    else if (word == "s") token = Token::s;
    else if (word == "ee") token = Token::ee;
    else if (word == "es") token = Token::es;
    else if (word == "se") token = Token::se;
    else if (word == "ss") token = Token::ss;
    else throw "unknown Noise token";
    if (message.count == kMaxTokensPerMessage) throw "too many tokens in one message";
    message.tokens[message.count++] = token;
  }
  return message;
}

struct PatternSpec {
  Pattern pattern{};
  std::string_view name;
  // Pre-messages (§7.1): these patterns only ever pre-share static keys, so a flag per side
  // suffices ("-> s" for the initiator, "<- s" for the responder).
  bool initiator_static_known = false;
  bool responder_static_known = false;
  std::array<MessageTokens, kMaxMessagesPerPattern> messages{};
  std::size_t message_count = 0;
};

constexpr PatternSpec make_pattern(Pattern pattern, std::string_view name, bool initiator_static_known,
                                   bool responder_static_known,
                                   std::initializer_list<std::string_view> messages) {
  PatternSpec spec{pattern, name, initiator_static_known, responder_static_known, {}, 0};
  for (const std::string_view message : messages) {
    if (spec.message_count == kMaxMessagesPerPattern) throw "too many messages in one pattern";
    spec.messages[spec.message_count++] = parse_tokens(message);
  }
  return spec;
}

// The interactive fundamental patterns of §7.4 (one-way patterns, deferred patterns and PSK
// modifiers are not supported). Messages alternate, starting with the initiator.
constexpr bool kPre = true;   // the pre-message gives this side's static key
constexpr bool kNone = false;
constexpr std::array kPatterns = {
    //           pattern       name  -> s  <- s   messages
    make_pattern(Pattern::NN, "NN", kNone, kNone, {"e", "e, ee"}),
    make_pattern(Pattern::NK, "NK", kNone, kPre, {"e, es", "e, ee"}),
    make_pattern(Pattern::NX, "NX", kNone, kNone, {"e", "e, ee, s, es"}),
    make_pattern(Pattern::XN, "XN", kNone, kNone, {"e", "e, ee", "s, se"}),
    make_pattern(Pattern::XK, "XK", kNone, kPre, {"e, es", "e, ee", "s, se"}),
    make_pattern(Pattern::XX, "XX", kNone, kNone, {"e", "e, ee, s, es", "s, se"}),
    make_pattern(Pattern::KN, "KN", kPre, kNone, {"e", "e, ee, se"}),
    make_pattern(Pattern::KK, "KK", kPre, kPre, {"e, es, ss", "e, ee, se"}),
    make_pattern(Pattern::KX, "KX", kPre, kNone, {"e", "e, ee, se, s, es"}),
    make_pattern(Pattern::IN, "IN", kNone, kNone, {"e, s", "e, ee, se"}),
    make_pattern(Pattern::IK, "IK", kNone, kPre, {"e, es, s, ss", "e, ee, se"}),
    make_pattern(Pattern::IX, "IX", kNone, kNone, {"e, s", "e, ee, se, s, es"}),
};

const PatternSpec& spec_of(Pattern pattern) {
  for (const PatternSpec& spec : kPatterns) {
    if (spec.pattern == pattern) return spec;
  }
  noise_misuse("unknown Pattern value");
}

// Whether the pattern uses this side's static key at all: a pre-message, an "s" it sends, or a DH
// token whose local half is the static key.
bool uses_local_static(const PatternSpec& spec, bool initiator) {
  if (initiator ? spec.initiator_static_known : spec.responder_static_known) return true;
  for (std::size_t index = 0; index < spec.message_count; ++index) {
    const bool we_send = (index % 2 == 0) == initiator;
    const MessageTokens& message = spec.messages[index];
    for (std::size_t t = 0; t < message.count; ++t) {
      switch (message.tokens[t]) {
        case Token::s:
          if (we_send) return true;
          break;
        case Token::ss:
          return true;
        case Token::es:  // the responder's static
          if (!initiator) return true;
          break;
        case Token::se:  // the initiator's static
          if (initiator) return true;
          break;
        case Token::e:
        case Token::ee:
          break;
      }
    }
  }
  return false;
}

constexpr std::string_view kProtocolPrefix = "Noise_";
constexpr std::string_view kProtocolSuffix = "_25519_ChaChaPoly_BLAKE2b";

}  // namespace

// ---- DhKeyPair (§4.1, §12.1) ----

DhKeyPair::~DhKeyPair() { wipe(secret); }

DhKeyPair DhKeyPair::generate() {
  detail::ensure_sodium();
  X25519Key secret{};
  randombytes_buf(secret.data(), secret.size());
  DhKeyPair pair = from_secret(secret);
  wipe(secret);
  return pair;
}

DhKeyPair DhKeyPair::from_secret(const X25519Key& secret) {
  detail::ensure_sodium();
  DhKeyPair pair;
  pair.secret = secret;
  if (crypto_scalarmult_base(pair.public_key.data(), pair.secret.data()) != 0) {
    noise_misuse("crypto_scalarmult_base failed");
  }
  return pair;
}

// ---- CipherState (§5.1) ----

CipherState::~CipherState() { wipe(key_); }

void CipherState::initialize_key(const std::optional<Key>& key) {
  detail::ensure_sodium();  // encrypt_at/decrypt_at stay free of the check: a key comes through here
  if (key) {
    key_ = *key;
    has_key_ = true;
  } else {
    wipe(key_);
    has_key_ = false;
  }
  nonce_ = 0;
}

Status CipherState::encrypt_with_ad(ByteView ad, ByteView plaintext, Bytes& out) {
  if (!has_key_) {
    out.insert(out.end(), plaintext.begin(), plaintext.end());
    return {};
  }
  if (nonce_ > kMaxNonce) return fail(Errc::bad_request, "noise: nonce exhausted (n = 2^64-1, Noise §5.1)");
  if (plaintext.size() > kMaxPlaintextBytes) {
    return fail(Errc::bad_request, "noise: plaintext of " + std::to_string(plaintext.size()) +
                                       " bytes does not fit a 65535-byte message");
  }
  const std::size_t start = out.size();
  out.resize(start + plaintext.size() + kTagBytes);
  encrypt_at(nonce_, ad, plaintext, out.data() + start);
  ++nonce_;
  return {};
}

Status CipherState::decrypt_with_ad(ByteView ad, ByteView ciphertext, Bytes& out) {
  if (!has_key_) {
    out.insert(out.end(), ciphertext.begin(), ciphertext.end());
    return {};
  }
  if (nonce_ > kMaxNonce) return fail(Errc::bad_request, "noise: nonce exhausted (n = 2^64-1, Noise §5.1)");
  if (ciphertext.size() < kTagBytes) {
    return fail(Errc::bad_request, "noise: ciphertext of " + std::to_string(ciphertext.size()) +
                                       " bytes is shorter than a 16-byte tag");
  }
  if (ciphertext.size() > kMaxMessageBytes) {
    return fail(Errc::bad_request, "noise: ciphertext of " + std::to_string(ciphertext.size()) +
                                       " bytes is longer than 65535");
  }
  const std::size_t start = out.size();
  out.resize(start + ciphertext.size() - kTagBytes);
  if (!decrypt_at(nonce_, ad, ciphertext, out.data() + start)) {
    sodium_memzero(out.data() + start, out.size() - start);
    out.resize(start);
    return fail(Errc::bad_request, "noise: authentication failed (bad tag)");
  }
  ++nonce_;
  return {};
}

void CipherState::encrypt_at(std::uint64_t nonce, ByteView ad, ByteView plaintext, std::uint8_t* out) const {
  if (!has_key_) noise_misuse("CipherState::encrypt_at without a key");
  if (nonce > kMaxNonce) noise_misuse("CipherState::encrypt_at with the reserved nonce 2^64-1");
  if (plaintext.size() > kMaxPlaintextBytes) noise_misuse("CipherState::encrypt_at: plaintext too long");
  const Nonce nonce_bytes = chachapoly_nonce(nonce);
  unsigned long long ciphertext_length = 0;
  if (crypto_aead_chacha20poly1305_ietf_encrypt(out, &ciphertext_length, data_or_empty(plaintext),
                                                plaintext.size(), data_or_empty(ad), ad.size(), nullptr,
                                                nonce_bytes.data(), key_.data()) != 0) {
    noise_misuse("crypto_aead_chacha20poly1305_ietf_encrypt failed");
  }
}

bool CipherState::decrypt_at(std::uint64_t nonce, ByteView ad, ByteView ciphertext, std::uint8_t* out) const {
  if (!has_key_) noise_misuse("CipherState::decrypt_at without a key");
  // Hostile lengths and counters fail quietly: they come off the wire.
  if (ciphertext.size() < kTagBytes || ciphertext.size() > kMaxMessageBytes || nonce > kMaxNonce) {
    return false;
  }
  const Nonce nonce_bytes = chachapoly_nonce(nonce);
  unsigned long long plaintext_length = 0;
  return crypto_aead_chacha20poly1305_ietf_decrypt(out, &plaintext_length, nullptr, ciphertext.data(),
                                                   ciphertext.size(), data_or_empty(ad), ad.size(),
                                                   nonce_bytes.data(), key_.data()) == 0;
}

// ---- SymmetricState (§5.2) ----

SymmetricState::SymmetricState(std::string_view protocol_name) {
  detail::ensure_sodium();
  // h = protocol_name padded with zeros if it fits HASHLEN, else HASH(protocol_name).
  const ByteView name = as_bytes(protocol_name);
  if (name.size() <= h_.size()) {
    std::copy(name.begin(), name.end(), h_.begin());
  } else {
    blake2b({name}, h_.data());
  }
  ck_ = h_;
  cipher_.initialize_key(std::nullopt);
}

SymmetricState::~SymmetricState() {
  wipe(ck_);
  wipe(h_);
}

void SymmetricState::mix_key(ByteView input_key_material) {
  Hash new_chaining_key{}, temp_key{};
  hkdf(ck_, input_key_material, new_chaining_key, temp_key, nullptr);
  ck_ = new_chaining_key;
  cipher_.initialize_key(truncate_to_key(temp_key));
  wipe(new_chaining_key);
  wipe(temp_key);
}

void SymmetricState::mix_hash(ByteView data) { blake2b({h_, data}, h_.data()); }

void SymmetricState::mix_key_and_hash(ByteView input_key_material) {
  Hash new_chaining_key{}, temp_hash{}, temp_key{};
  hkdf(ck_, input_key_material, new_chaining_key, temp_hash, &temp_key);
  ck_ = new_chaining_key;
  mix_hash(temp_hash);
  cipher_.initialize_key(truncate_to_key(temp_key));
  wipe(new_chaining_key);
  wipe(temp_hash);
  wipe(temp_key);
}

Status SymmetricState::encrypt_and_hash(ByteView plaintext, Bytes& out) {
  const std::size_t start = out.size();
  AGENT_MESH_TRY(cipher_.encrypt_with_ad(h_, plaintext, out));
  mix_hash(ByteView(out).subspan(start));
  return {};
}

Status SymmetricState::decrypt_and_hash(ByteView ciphertext, Bytes& out) {
  AGENT_MESH_TRY(cipher_.decrypt_with_ad(h_, ciphertext, out));
  mix_hash(ciphertext);
  return {};
}

std::pair<CipherState, CipherState> SymmetricState::split() const {
  Hash first{}, second{};
  hkdf(ck_, {}, first, second, nullptr);
  std::pair<CipherState, CipherState> ciphers;
  ciphers.first.initialize_key(truncate_to_key(first));
  ciphers.second.initialize_key(truncate_to_key(second));
  wipe(first);
  wipe(second);
  return ciphers;
}

// ---- Protocol names (§8) ----

std::string protocol_name(Pattern pattern) {
  std::string name(kProtocolPrefix);
  name += spec_of(pattern).name;
  name += kProtocolSuffix;
  return name;
}

std::optional<Pattern> pattern_from_protocol_name(std::string_view name) {
  if (!name.starts_with(kProtocolPrefix) || !name.ends_with(kProtocolSuffix)) return std::nullopt;
  name.remove_prefix(kProtocolPrefix.size());
  name.remove_suffix(kProtocolSuffix.size());
  for (const PatternSpec& spec : kPatterns) {
    if (spec.name == name) return spec.pattern;
  }
  return std::nullopt;
}

// ---- HandshakeState (§5.3) ----

namespace {

std::string role_name(bool initiator) { return initiator ? "initiator" : "responder"; }

// DH(key_pair, public_key) (§4.1) mixed into the chaining key. An all-zero result means the peer
// sent a low-order point: protocol §1 aborts the handshake (libsodium also refuses such points).
Status mix_dh(SymmetricState& symmetric, const DhKeyPair& local, const X25519Key& remote) {
  X25519Key shared{};
  const bool refused = crypto_scalarmult(shared.data(), local.secret.data(), remote.data()) != 0;
  if (refused || sodium_is_zero(shared.data(), shared.size()) == 1) {
    wipe(shared);
    return fail(Errc::bad_request, "all-zero DH (low-order key)");
  }
  symmetric.mix_key(shared);
  wipe(shared);
  return {};
}

// The four DH tokens (§7.1), the same for writing and reading: which keys meet depends only on
// the token and on which side we are.
Status mix_dh_token(Token token, SymmetricState& symmetric, const HandshakeConfig& config,
                    const std::optional<X25519Key>& remote_ephemeral) {
  switch (token) {
    case Token::ee: return mix_dh(symmetric, *config.local_ephemeral, *remote_ephemeral);
    case Token::es:
      return config.initiator ? mix_dh(symmetric, *config.local_ephemeral, *config.remote_static)
                              : mix_dh(symmetric, *config.local_static, *remote_ephemeral);
    case Token::se:
      return config.initiator ? mix_dh(symmetric, *config.local_static, *remote_ephemeral)
                              : mix_dh(symmetric, *config.local_ephemeral, *config.remote_static);
    case Token::ss: return mix_dh(symmetric, *config.local_static, *config.remote_static);
    case Token::e:
    case Token::s: break;
  }
  return fail(Errc::internal, "not a DH token");
}

}  // namespace

HandshakeState::HandshakeState(HandshakeConfig config, SymmetricState symmetric)
    : config_(std::move(config)), symmetric_(std::move(symmetric)) {}

Result<HandshakeState> HandshakeState::create(HandshakeConfig config) {
  const PatternSpec& spec = spec_of(config.pattern);
  const std::string where = "noise " + std::string(spec.name) + " " + role_name(config.initiator) + ": ";

  if (uses_local_static(spec, config.initiator) && !config.local_static) {
    return fail(Errc::bad_request, where + "the pattern needs a local static key");
  }
  const bool remote_static_premessage =
      config.initiator ? spec.responder_static_known : spec.initiator_static_known;
  if (remote_static_premessage && !config.remote_static) {
    return fail(Errc::bad_request, where + "the pattern needs the peer's static key in advance");
  }
  if (!remote_static_premessage && config.remote_static) {
    // Accepting it would mean silently replacing it with whatever the peer sends: refuse instead.
    return fail(Errc::bad_request,
                where + "the peer's static key cannot be preset (the peer sends it, or the pattern has "
                        "none); compare remote_static() after the handshake instead");
  }

  // Initialize() (§5.3): protocol name, prologue, then the pre-message keys, initiator's first.
  SymmetricState symmetric(protocol_name(config.pattern));
  symmetric.mix_hash(config.prologue);
  if (spec.initiator_static_known) {
    symmetric.mix_hash(config.initiator ? ByteView(config.local_static->public_key)
                                        : ByteView(*config.remote_static));
  }
  if (spec.responder_static_known) {
    symmetric.mix_hash(config.initiator ? ByteView(*config.remote_static)
                                        : ByteView(config.local_static->public_key));
  }
  return HandshakeState(std::move(config), std::move(symmetric));
}

bool HandshakeState::is_complete() const noexcept {
  return !failed_ && message_index_ == spec_of(config_.pattern).message_count;
}

bool HandshakeState::is_my_turn() const noexcept {
  return !failed_ && !is_complete() && (message_index_ % 2 == 0) == config_.initiator;
}

Status HandshakeState::fail_handshake(std::string message) {
  failed_ = true;
  // The state is dead: drop the ephemeral secret now rather than at destruction.
  config_.local_ephemeral.reset();
  return fail(Errc::bad_request, "noise handshake: " + message);
}

namespace {

// Why a write (or read) is refused before it starts, or an empty string if it may proceed.
std::string turn_problem(bool failed, bool complete, bool my_turn, bool writing, std::size_t index) {
  if (failed) return "already failed; start a new handshake";
  if (complete) return "already complete; use split()";
  const std::string number = std::to_string(index + 1);
  if (writing && !my_turn) return "not our turn to write: waiting for the peer's message " + number;
  if (!writing && my_turn) return "not our turn to read: we must write message " + number + " first";
  return {};
}

}  // namespace

Status HandshakeState::write_message(ByteView payload, Bytes& message) {
  if (std::string problem = turn_problem(failed_, is_complete(), is_my_turn(), true, message_index_);
      !problem.empty()) {
    return fail_handshake(std::move(problem));
  }
  if (payload.size() > kMaxMessageBytes) {
    return fail_handshake("payload of " + std::to_string(payload.size()) +
                          " bytes does not fit a 65535-byte message");
  }

  const PatternSpec& spec = spec_of(config_.pattern);
  const MessageTokens& tokens = spec.messages[message_index_];
  const std::size_t start = message.size();
  auto abandon = [&](std::string problem) {
    message.resize(start);
    return fail_handshake(std::move(problem));
  };

  for (std::size_t t = 0; t < tokens.count; ++t) {
    Status step;
    switch (tokens.tokens[t]) {
      case Token::e:
        // Tests may fix the ephemeral; otherwise it is fresh from the CSPRNG (§5.3, "e").
        if (!config_.local_ephemeral) config_.local_ephemeral = DhKeyPair::generate();
        message.insert(message.end(), config_.local_ephemeral->public_key.begin(),
                       config_.local_ephemeral->public_key.end());
        symmetric_.mix_hash(config_.local_ephemeral->public_key);
        break;
      case Token::s:
        step = symmetric_.encrypt_and_hash(config_.local_static->public_key, message);
        break;
      case Token::ee:
      case Token::es:
      case Token::se:
      case Token::ss:
        step = mix_dh_token(tokens.tokens[t], symmetric_, config_, remote_ephemeral_);
        break;
    }
    if (!step.ok()) return abandon(step.error().message);
  }
  if (auto step = symmetric_.encrypt_and_hash(payload, message); !step.ok()) {
    return abandon(step.error().message);
  }
  if (message.size() - start > kMaxMessageBytes) {
    return abandon("message of " + std::to_string(message.size() - start) +
                   " bytes is longer than 65535 (payload too large)");
  }
  ++message_index_;
  return {};
}

Status HandshakeState::read_message(ByteView message, Bytes& payload) {
  if (std::string problem = turn_problem(failed_, is_complete(), is_my_turn(), false, message_index_);
      !problem.empty()) {
    return fail_handshake(std::move(problem));
  }
  if (message.size() > kMaxMessageBytes) {
    return fail_handshake("message of " + std::to_string(message.size()) + " bytes is longer than 65535");
  }

  const PatternSpec& spec = spec_of(config_.pattern);
  const MessageTokens& tokens = spec.messages[message_index_];
  const std::string number = std::to_string(message_index_ + 1);
  ByteView rest = message;
  auto too_short = [&](std::string_view what, std::size_t needed) {
    return fail_handshake("message " + number + " too short for " + std::string(what) + " (needs " +
                          std::to_string(needed) + " bytes, " + std::to_string(rest.size()) + " left)");
  };

  for (std::size_t t = 0; t < tokens.count; ++t) {
    Status step;
    switch (tokens.tokens[t]) {
      case Token::e: {
        if (rest.size() < kDhBytes) return too_short("the ephemeral key", kDhBytes);
        X25519Key remote_ephemeral{};
        std::copy_n(rest.begin(), kDhBytes, remote_ephemeral.begin());
        remote_ephemeral_ = remote_ephemeral;
        symmetric_.mix_hash(rest.first(kDhBytes));
        rest = rest.subspan(kDhBytes);
        break;
      }
      case Token::s: {
        // Encrypted (with a tag) once a DH has keyed the cipher, plain before (§5.3, "s").
        const std::size_t length = kDhBytes + (symmetric_.has_key() ? kTagBytes : 0);
        if (rest.size() < length) return too_short("the static key", length);
        Bytes remote_static;
        if (!symmetric_.decrypt_and_hash(rest.first(length), remote_static).ok()) {
          return fail_handshake("cannot decrypt the peer's static key in message " + number +
                                " (authentication failed)");
        }
        X25519Key key{};
        std::copy_n(remote_static.begin(), kDhBytes, key.begin());
        config_.remote_static = key;
        rest = rest.subspan(length);
        break;
      }
      case Token::ee:
      case Token::es:
      case Token::se:
      case Token::ss:
        step = mix_dh_token(tokens.tokens[t], symmetric_, config_, remote_ephemeral_);
        break;
    }
    if (!step.ok()) return fail_handshake(step.error().message);
  }
  if (symmetric_.has_key() && rest.size() < kTagBytes) return too_short("the payload's tag", kTagBytes);
  if (!symmetric_.decrypt_and_hash(rest, payload).ok()) {
    return fail_handshake("cannot decrypt the payload of message " + number + " (authentication failed)");
  }
  ++message_index_;
  return {};
}

TransportKeys HandshakeState::split() const {
  if (!is_complete()) noise_misuse("HandshakeState::split before the handshake is complete");
  auto [initiator_to_responder, responder_to_initiator] = symmetric_.split();
  if (config_.initiator) return TransportKeys{initiator_to_responder, responder_to_initiator};
  return TransportKeys{responder_to_initiator, initiator_to_responder};
}

}  // namespace agent_mesh::noise
