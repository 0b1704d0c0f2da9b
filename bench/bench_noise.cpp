// Noise hot paths against baselines measured in the same run (docs/performance.md):
//   transport_<size>  CipherState::encrypt_at + decrypt_at   vs  raw crypto_aead_chacha20poly1305_ietf
//                     encrypt + decrypt on the same buffers, key, AD and sizes (64 B, 1 KiB, and the
//                     largest piece, 65,519 B = 64 KiB − 17, protocol §5)
//   ik_handshake      a complete IK handshake, both sides    vs  just the X25519 work it must do
#include <sodium.h>

#include <array>
#include <cstdint>
#include <cstdlib>

#include "agent_mesh/noise.hpp"
#include "ratio_reporter.hpp"

namespace {

using namespace agent_mesh;
using namespace agent_mesh::noise;

// A typical associated data: JCS of an envelope header (protocol §5), about 230 bytes.
constexpr std::string_view kAd =
    R"({"encrypted":true,"from":"vHy8tWNjdfodgkNNRmck2SN39TuYBpXdSdJtDOEiBaU","id":"a6e5000a-0000-4000-8000-)"
    R"(00000000000a","msg_type":"response","n":0,"sid":"9VO97BrfDt2iamVJBHuyrg","timestamp":1764000001000,)"
    R"("to":"cF-6wB9VGYmfQ3vELkAlWumrVL_wDeNDOvfWh9nnGtU"})";

struct TransportBuffers {
  Key key{};
  Bytes plaintext;
  Bytes sealed;
  Bytes opened;
  explicit TransportBuffers(std::size_t size) : plaintext(size, 0x61), sealed(size + kTagBytes), opened(size) {
    if (sodium_init() < 0) std::abort();
    randombytes_buf(key.data(), key.size());
  }
};

template <std::size_t kSize>
void transport_ours(benchmark::State& state) {
  TransportBuffers buffers(kSize);
  CipherState cipher;
  cipher.initialize_key(buffers.key);
  const ByteView ad = as_bytes(kAd);
  std::uint64_t counter = 0;
  for (auto _ : state) {
    cipher.encrypt_at(counter, ad, buffers.plaintext, buffers.sealed.data());
    if (!cipher.decrypt_at(counter, ad, buffers.sealed, buffers.opened.data())) state.SkipWithError("decrypt failed");
    benchmark::DoNotOptimize(buffers.opened.data());
    ++counter;
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kSize * 2));
}

template <std::size_t kSize>
void transport_baseline(benchmark::State& state) {
  TransportBuffers buffers(kSize);
  const ByteView ad = as_bytes(kAd);
  std::array<std::uint8_t, crypto_aead_chacha20poly1305_ietf_NPUBBYTES> nonce{};
  for (auto _ : state) {
    unsigned long long sealed_length = 0, opened_length = 0;
    crypto_aead_chacha20poly1305_ietf_encrypt(buffers.sealed.data(), &sealed_length, buffers.plaintext.data(),
                                              buffers.plaintext.size(), ad.data(), ad.size(), nullptr,
                                              nonce.data(), buffers.key.data());
    if (crypto_aead_chacha20poly1305_ietf_decrypt(buffers.opened.data(), &opened_length, nullptr,
                                                  buffers.sealed.data(), buffers.sealed.size(), ad.data(),
                                                  ad.size(), nonce.data(), buffers.key.data()) != 0) {
      state.SkipWithError("decrypt failed");
    }
    benchmark::DoNotOptimize(buffers.opened.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kSize * 2));
}

BENCHMARK(transport_ours<64>)->Name("transport_64B/ours");
BENCHMARK(transport_baseline<64>)->Name("transport_64B/baseline");
BENCHMARK(transport_ours<1024>)->Name("transport_1KiB/ours");
BENCHMARK(transport_baseline<1024>)->Name("transport_1KiB/baseline");
BENCHMARK(transport_ours<kMaxPlaintextBytes>)->Name("transport_64KiB/ours");
BENCHMARK(transport_baseline<kMaxPlaintextBytes>)->Name("transport_64KiB/baseline");

struct HandshakeKeys {
  DhKeyPair initiator_static = DhKeyPair::generate();
  DhKeyPair responder_static = DhKeyPair::generate();
  Bytes prologue = Bytes{'a', 'g', 'e', 'n', 't', '-', 'm', 'e', 's', 'h', '/', 'v', '1'};
};

// Both sides of one IK handshake, as a session layer runs it: create, write/read message 1 (empty
// payload), write/read message 2, split.
void ik_handshake_ours(benchmark::State& state) {
  const HandshakeKeys keys;
  for (auto _ : state) {
    auto initiator = HandshakeState::create({Pattern::IK, true, keys.prologue, keys.initiator_static,
                                             keys.responder_static.public_key, std::nullopt});
    auto responder = HandshakeState::create(
        {Pattern::IK, false, keys.prologue, keys.responder_static, std::nullopt, std::nullopt});
    if (!initiator.ok() || !responder.ok()) {
      state.SkipWithError("create failed");
      break;
    }
    Bytes message1, message2, payload;
    const bool completed = initiator->write_message({}, message1).ok() &&
                           responder->read_message(message1, payload).ok() &&
                           responder->write_message({}, message2).ok() &&
                           initiator->read_message(message2, payload).ok();
    if (!completed) {
      state.SkipWithError("handshake failed");
      break;
    }
    TransportKeys initiator_keys = initiator->split();
    TransportKeys responder_keys = responder->split();
    benchmark::DoNotOptimize(initiator_keys);
    benchmark::DoNotOptimize(responder_keys);
  }
}
BENCHMARK(ik_handshake_ours)->Name("ik_handshake/ours");

// The X25519 work an IK handshake cannot avoid, counted over both sides:
//   message 1 "e, es, s, ss": the initiator generates e (1 random secret + crypto_scalarmult_base)
//     and computes es, ss; the responder reads it and computes the same es, ss      → 4 scalarmult
//   message 2 "e, ee, se": the responder generates e (random secret + scalarmult_base) and
//     computes ee, se; the initiator reads it and computes ee, se                    → 4 scalarmult
// Total: 8 crypto_scalarmult + 2 key generations (randombytes_buf + crypto_scalarmult_base).
// Everything else ours does (BLAKE2b/HMAC/HKDF, the AEAD of s and the payloads, allocation) is the
// overhead the ratio shows.
void ik_handshake_baseline(benchmark::State& state) {
  const HandshakeKeys keys;
  const DhKeyPair peer_ephemeral = DhKeyPair::generate();
  constexpr int kScalarMults = 8;
  constexpr int kKeyGenerations = 2;
  for (auto _ : state) {
    X25519Key ephemeral_secret{}, ephemeral_public{}, shared{};
    for (int i = 0; i < kKeyGenerations; ++i) {
      randombytes_buf(ephemeral_secret.data(), ephemeral_secret.size());
      if (crypto_scalarmult_base(ephemeral_public.data(), ephemeral_secret.data()) != 0) {
        state.SkipWithError("scalarmult_base failed");
      }
      benchmark::DoNotOptimize(ephemeral_public);
    }
    for (int i = 0; i < kScalarMults; ++i) {
      // Alternate the points so no call is a repeat of the previous one.
      const X25519Key& point = i % 2 == 0 ? peer_ephemeral.public_key : keys.responder_static.public_key;
      if (crypto_scalarmult(shared.data(), keys.initiator_static.secret.data(), point.data()) != 0) {
        state.SkipWithError("scalarmult failed");
      }
      benchmark::DoNotOptimize(shared);
    }
  }
}
BENCHMARK(ik_handshake_baseline)->Name("ik_handshake/baseline");

}  // namespace

AGENT_MESH_BENCH_MAIN()
