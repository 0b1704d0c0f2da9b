// Fuzzes the Noise IK responder (protocol §5): whatever arrives as handshake message 1, and then as
// a transport message, must be refused cleanly or accepted consistently, never crash.
//
// Input layout (all of it attacker-controlled):
//   [2 bytes: big-endian length L of message 1, clamped to what is left][message 1: L bytes]
//   [8 bytes: little-endian transport counter][2 bytes: big-endian AD length A][AD: A bytes]
//   [transport ciphertext: the rest]
// The responder is bob from tests/vectors/agent-mesh/ik-handshake.json (seed 32 × 0xb0) with that
// file's fixed responder ephemeral, so runs are deterministic and the seed corpus can hold a real
// message 1 followed by a real transport message that decrypts.
#include <cstdint>
#include <cstdlib>
#include <optional>

#include "agent_mesh/identity.hpp"
#include "agent_mesh/noise.hpp"

namespace {

using namespace agent_mesh;

class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t size) : rest_(data, size) {}
  // Up to `wanted` bytes (fewer if the input ends).
  ByteView take(std::size_t wanted) {
    const ByteView taken = rest_.first(wanted < rest_.size() ? wanted : rest_.size());
    rest_ = rest_.subspan(taken.size());
    return taken;
  }
  std::uint64_t take_uint(std::size_t bytes, bool little_endian) {
    const ByteView field = take(bytes);
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < field.size(); ++i) {
      const std::uint8_t byte = little_endian ? field[field.size() - 1 - i] : field[i];
      value = (value << 8) | byte;
    }
    return value;
  }
  ByteView rest() const { return rest_; }

 private:
  ByteView rest_;
};

const noise::DhKeyPair& responder_static() {
  static const noise::DhKeyPair key = [] {
    const std::array<std::uint8_t, 32> seed = [] {
      std::array<std::uint8_t, 32> bytes{};
      bytes.fill(0xb0);
      return bytes;
    }();
    auto identity = KeyPair::from_seed(seed);
    if (!identity.ok()) std::abort();
    return noise::DhKeyPair::from_secret(identity->x25519_secret());
  }();
  return key;
}

const noise::DhKeyPair& responder_ephemeral() {
  static const noise::DhKeyPair key = [] {
    X25519Key secret{};
    secret.fill(0xe2);
    return noise::DhKeyPair::from_secret(secret);
  }();
  return key;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Reader input(data, size);
  const ByteView message1 = input.take(input.take_uint(2, false));

  noise::HandshakeConfig config;
  config.pattern = noise::Pattern::IK;
  config.initiator = false;
  config.prologue = Bytes(as_bytes("agent-mesh/v1").begin(), as_bytes("agent-mesh/v1").end());
  config.local_static = responder_static();
  config.local_ephemeral = responder_ephemeral();
  auto created = noise::HandshakeState::create(std::move(config));
  if (!created.ok()) __builtin_trap();
  noise::HandshakeState& responder = *created;

  Bytes request;
  if (!responder.read_message(message1, request).ok()) {
    // A refused message leaves the handshake failed for good.
    Bytes ignored;
    if (responder.is_my_turn() || responder.write_message({}, ignored).ok()) __builtin_trap();
    return 0;
  }
  // Accepted: the initiator's static key is known, the payload fits, and message 2 must follow.
  if (!responder.remote_static().has_value()) __builtin_trap();
  if (message1.size() != 32 + 48 + request.size() + 16) __builtin_trap();
  Bytes message2;
  if (!responder.write_message({}, message2).ok() || message2.size() != 48 || !responder.is_complete()) {
    __builtin_trap();
  }
  const noise::TransportKeys keys = responder.split();

  const std::uint64_t counter = input.take_uint(8, true);
  const ByteView ad = input.take(input.take_uint(2, false));
  const ByteView ciphertext = input.rest();
  // A buffer sized for the largest legal piece, as the session layer uses: decrypt_at itself must
  // refuse ciphertexts shorter than a tag or longer than 65,535 bytes before writing to it.
  std::array<std::uint8_t, noise::kMaxPlaintextBytes> plaintext;
  if (!keys.receive.decrypt_at(counter, ad, ciphertext, plaintext.data())) return 0;

  // It verified: sealing the plaintext again with the same key and counter gives the same bytes.
  const ByteView opened(plaintext.data(), ciphertext.size() - noise::kTagBytes);
  std::array<std::uint8_t, noise::kMaxMessageBytes> resealed;
  keys.receive.encrypt_at(counter, ad, opened, resealed.data());
  for (std::size_t i = 0; i < ciphertext.size(); ++i) {
    if (resealed[i] != ciphertext[i]) __builtin_trap();
  }
  return 0;
}
