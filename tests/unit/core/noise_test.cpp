// Noise (revision 34) for 25519/ChaChaPoly/BLAKE2b: the cacophony vectors for every pattern the
// engine supports (IK and XX are mandatory, protocol §5), Wycheproof ChaCha20-Poly1305 through the
// explicit-nonce CipherState, the agent-mesh IK vectors (our prologue, transport with explicit
// counters and multi-piece payloads), and the ways a handshake must fail.
#include "agent_mesh/noise.hpp"

#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "agent_mesh/encoding.hpp"
#include "test_vectors.hpp"

namespace agent_mesh::noise {
namespace {

namespace json = boost::json;
using test::hex;
using test::load_vectors;
using test::str;

constexpr std::string_view kPrologue = "agent-mesh/v1";  // protocol §5

void init_sodium() { ASSERT_GE(sodium_init(), 0); }

using test::fixed;

Bytes bytes_of(std::string_view text) {
  const ByteView view = as_bytes(text);
  return Bytes(view.begin(), view.end());
}

Bytes concat(ByteView a, ByteView b) {
  Bytes out(a.begin(), a.end());
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

template <class T>
void expect_error(const Result<T>& result, Errc code, const std::string& substring) {
  ASSERT_FALSE(result.ok()) << "expected an error containing \"" << substring << "\"";
  EXPECT_EQ(result.error().code, code) << result.error().describe();
  EXPECT_NE(result.error().message.find(substring), std::string::npos)
      << "message \"" << result.error().message << "\" lacks \"" << substring << "\"";
}

HandshakeState must_create(HandshakeConfig config) {
  auto state = HandshakeState::create(std::move(config));
  if (!state.ok()) throw std::runtime_error("HandshakeState::create: " + state.error().describe());
  return std::move(state).value();
}

// ---------------------------------------------------------------------------------------------
// Protocol names.

TEST(NoiseProtocolName, RoundTripsEverySupportedPattern) {
  for (const Pattern pattern : {Pattern::IK, Pattern::XX, Pattern::NN, Pattern::NK, Pattern::KK, Pattern::IX,
                                Pattern::XK, Pattern::KX, Pattern::IN, Pattern::XN, Pattern::KN, Pattern::NX}) {
    const std::string name = protocol_name(pattern);
    EXPECT_TRUE(name.starts_with("Noise_")) << name;
    EXPECT_TRUE(name.ends_with("_25519_ChaChaPoly_BLAKE2b")) << name;
    EXPECT_EQ(pattern_from_protocol_name(name), pattern) << name;
  }
  EXPECT_EQ(protocol_name(Pattern::IK), "Noise_IK_25519_ChaChaPoly_BLAKE2b");
}

TEST(NoiseProtocolName, RefusesOtherSuitesAndModifiers) {
  for (const char* name :
       {"Noise_IK_25519_ChaChaPoly_BLAKE2s", "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b", "Noise_IK1_25519_ChaChaPoly_BLAKE2b",
        "Noise_N_25519_ChaChaPoly_BLAKE2b", "Noise_IK_448_ChaChaPoly_BLAKE2b", "Noise_IK_25519_AESGCM_BLAKE2b",
        "NoiseIK_25519_ChaChaPoly_BLAKE2b", "Noise__25519_ChaChaPoly_BLAKE2b", "", "IK"}) {
    EXPECT_FALSE(pattern_from_protocol_name(name).has_value()) << name;
  }
}

// ---------------------------------------------------------------------------------------------
// Cacophony vectors.

std::optional<Bytes> optional_hex(const json::object& vector, const char* field) {
  const auto* value = vector.if_contains(field);
  if (value == nullptr) return std::nullopt;
  return hex(str(*value));
}

HandshakeConfig cacophony_config(const json::object& vector, Pattern pattern, bool initiator) {
  const std::string side = initiator ? "init_" : "resp_";
  HandshakeConfig config;
  config.pattern = pattern;
  config.initiator = initiator;
  config.prologue = hex(str(vector.at(side + "prologue")));
  if (auto secret = optional_hex(vector, (side + "static").c_str())) {
    config.local_static = DhKeyPair::from_secret(fixed<32>(*secret));
  }
  if (auto remote = optional_hex(vector, (side + "remote_static").c_str())) {
    config.remote_static = fixed<32>(*remote);
  }
  if (auto ephemeral = optional_hex(vector, (side + "ephemeral").c_str())) {
    config.local_ephemeral = DhKeyPair::from_secret(fixed<32>(*ephemeral));
  }
  return config;
}

// Plays one vector: the handshake messages alternate initiator/responder and must match byte for
// byte in both directions, then the transport messages continue the alternation on the split
// CipherStates (encrypt_with_ad/decrypt_with_ad, empty AD).
void run_cacophony_vector(const json::object& vector, Pattern pattern) {
  HandshakeState initiator = must_create(cacophony_config(vector, pattern, true));
  HandshakeState responder = must_create(cacophony_config(vector, pattern, false));
  const auto& messages = vector.at("messages").as_array();

  std::size_t index = 0;
  for (; index < messages.size() && !(initiator.is_complete() && responder.is_complete()); ++index) {
    SCOPED_TRACE("handshake message " + std::to_string(index + 1));
    const bool from_initiator = index % 2 == 0;
    HandshakeState& sender = from_initiator ? initiator : responder;
    HandshakeState& receiver = from_initiator ? responder : initiator;
    const Bytes payload = hex(str(messages[index].at("payload")));
    const std::string expected = str(messages[index].at("ciphertext"));

    ASSERT_TRUE(sender.is_my_turn());
    ASSERT_FALSE(receiver.is_my_turn());
    Bytes wire;
    const auto written = sender.write_message(payload, wire);
    ASSERT_TRUE(written.ok()) << written.error().describe();
    EXPECT_EQ(hex_encode(wire), expected);

    Bytes received;
    const auto read = receiver.read_message(hex(expected), received);
    ASSERT_TRUE(read.ok()) << read.error().describe();
    EXPECT_EQ(received, payload);
  }
  ASSERT_TRUE(initiator.is_complete());
  ASSERT_TRUE(responder.is_complete());
  EXPECT_EQ(hex_encode(initiator.handshake_hash()), str(vector.at("handshake_hash")));
  EXPECT_EQ(responder.handshake_hash(), initiator.handshake_hash());

  // Each side now knows the other's static key if the peer has one.
  if (auto secret = optional_hex(vector, "resp_static")) {
    ASSERT_TRUE(initiator.remote_static().has_value());
    EXPECT_EQ(*initiator.remote_static(), DhKeyPair::from_secret(fixed<32>(*secret)).public_key);
  }
  if (auto secret = optional_hex(vector, "init_static")) {
    ASSERT_TRUE(responder.remote_static().has_value());
    EXPECT_EQ(*responder.remote_static(), DhKeyPair::from_secret(fixed<32>(*secret)).public_key);
  }

  TransportKeys initiator_keys = initiator.split();
  TransportKeys responder_keys = responder.split();
  for (; index < messages.size(); ++index) {
    SCOPED_TRACE("transport message " + std::to_string(index + 1));
    const bool from_initiator = index % 2 == 0;
    CipherState& send = from_initiator ? initiator_keys.send : responder_keys.send;
    CipherState& receive = from_initiator ? responder_keys.receive : initiator_keys.receive;
    const Bytes payload = hex(str(messages[index].at("payload")));

    Bytes wire;
    ASSERT_TRUE(send.encrypt_with_ad({}, payload, wire).ok());
    EXPECT_EQ(hex_encode(wire), str(messages[index].at("ciphertext")));
    Bytes received;
    ASSERT_TRUE(receive.decrypt_with_ad({}, wire, received).ok());
    EXPECT_EQ(received, payload);
  }
}

TEST(NoiseCacophony, EverySupportedBlake2bVectorPassesByteForByte) {
  const json::value vectors = load_vectors("noise-cacophony-25519-chachapoly.json");
  std::map<std::string, int> run_per_protocol;
  std::map<std::string, int> skipped_by_reason;
  for (const auto& entry : vectors.at("vectors").as_array()) {
    const json::object& vector = entry.as_object();
    const std::string name = str(vector.at("protocol_name"));
    if (!name.ends_with("_BLAKE2b")) {
      ++skipped_by_reason["BLAKE2s suite"];
      continue;
    }
    if (name.find("psk") != std::string::npos || vector.contains("init_psks") || vector.contains("resp_psks")) {
      ++skipped_by_reason["PSK modifier"];
      continue;
    }
    if (name.find("fallback") != std::string::npos) {
      ++skipped_by_reason["fallback modifier"];
      continue;
    }
    const auto pattern = pattern_from_protocol_name(name);
    if (!pattern) {
      ++skipped_by_reason["pattern not in the table (one-way or deferred)"];
      continue;
    }
    SCOPED_TRACE(name);
    run_cacophony_vector(vector, *pattern);
    ++run_per_protocol[name];
  }

  for (const auto& [name, count] : run_per_protocol) std::printf("  ran %d x %s\n", count, name.c_str());
  for (const auto& [reason, count] : skipped_by_reason) std::printf("  skipped %d: %s\n", count, reason.c_str());
  EXPECT_GT(run_per_protocol["Noise_IK_25519_ChaChaPoly_BLAKE2b"], 0);
  EXPECT_GT(run_per_protocol["Noise_XX_25519_ChaChaPoly_BLAKE2b"], 0);
  // Every interactive fundamental pattern the table lists has a vector in the file.
  EXPECT_EQ(run_per_protocol.size(), 12u);
}

// ---------------------------------------------------------------------------------------------
// Wycheproof ChaCha20-Poly1305.

std::uint64_t little_endian_u64(const std::uint8_t* bytes) {
  std::uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

TEST(WycheproofChaCha20Poly1305, EveryCaseMatchesTheExpectedVerdict) {
  init_sodium();
  const json::value vectors = load_vectors("wycheproof-chacha20_poly1305_test.json");
  std::size_t through_cipher_state = 0, tampered_through_cipher_state = 0;
  std::size_t direct_valid = 0, direct_invalid = 0, unusable_sizes = 0, cases = 0;

  for (const auto& group : vectors.at("testGroups").as_array()) {
    for (const auto& test : group.at("tests").as_array()) {
      ++cases;
      SCOPED_TRACE("tcId " + std::to_string(test.at("tcId").as_int64()) + ": " + str(test.at("comment")));
      const Bytes key = hex(str(test.at("key")));
      const Bytes iv = hex(str(test.at("iv")));
      const Bytes aad = hex(str(test.at("aad")));
      const Bytes message = hex(str(test.at("msg")));
      const Bytes tag = hex(str(test.at("tag")));
      const Bytes sealed = concat(hex(str(test.at("ct"))), tag);
      const bool valid = str(test.at("result")) == "valid";
      ASSERT_TRUE(valid || str(test.at("result")) == "invalid");

      if (key.size() != kKeyBytes || iv.size() != 12 || tag.size() != kTagBytes) {
        // The IETF construction takes exactly these sizes; Wycheproof marks the rest invalid.
        EXPECT_FALSE(valid);
        ++unusable_sizes;
        continue;
      }

      const bool noise_nonce = std::all_of(iv.begin(), iv.begin() + 4, [](std::uint8_t b) { return b == 0; });
      if (noise_nonce) {
        // 4 zero bytes ‖ LE64 counter (Noise §12.3): exactly what encrypt_at/decrypt_at build.
        const std::uint64_t counter = little_endian_u64(iv.data() + 4);
        CipherState cipher;
        cipher.initialize_key(fixed<kKeyBytes>(key));
        Bytes opened(sealed.size() >= kTagBytes ? sealed.size() - kTagBytes : 0);
        if (valid) {
          Bytes produced(message.size() + kTagBytes);
          cipher.encrypt_at(counter, aad, message, produced.data());
          EXPECT_EQ(hex_encode(produced), hex_encode(sealed));
          ASSERT_TRUE(cipher.decrypt_at(counter, aad, sealed, opened.data()));
          EXPECT_EQ(opened, message);
          // Wycheproof has no invalid case with such a nonce: make one by flipping a tag bit.
          Bytes forged = sealed;
          forged.back() ^= 0x01;
          EXPECT_FALSE(cipher.decrypt_at(counter, aad, forged, opened.data()));
          EXPECT_FALSE(cipher.decrypt_at(counter + 1, aad, sealed, opened.data()));
          ++tampered_through_cipher_state;
        } else {
          EXPECT_FALSE(cipher.decrypt_at(counter, aad, sealed, opened.data()));
        }
        ++through_cipher_state;
        continue;
      }

      // Any other nonce cannot be expressed as a Noise counter: check libsodium directly, which
      // confirms the file is read correctly.
      Bytes opened(sealed.size() >= kTagBytes ? sealed.size() - kTagBytes : 0);
      unsigned long long opened_length = 0;
      const bool opens = crypto_aead_chacha20poly1305_ietf_decrypt(opened.data(), &opened_length, nullptr,
                                                                   sealed.data(), sealed.size(), aad.data(),
                                                                   aad.size(), iv.data(), key.data()) == 0;
      if (valid) {
        Bytes produced(message.size() + kTagBytes);
        unsigned long long produced_length = 0;
        ASSERT_EQ(crypto_aead_chacha20poly1305_ietf_encrypt(produced.data(), &produced_length, message.data(),
                                                            message.size(), aad.data(), aad.size(), nullptr,
                                                            iv.data(), key.data()),
                  0);
        EXPECT_EQ(hex_encode(produced), hex_encode(sealed));
        EXPECT_TRUE(opens);
        EXPECT_EQ(opened, message);
        ++direct_valid;
      } else {
        EXPECT_FALSE(opens);
        ++direct_invalid;
      }
    }
  }
  std::printf("  %zu cases: %zu through CipherState (%zu also tampered), %zu valid + %zu invalid via "
              "libsodium, %zu with unusable sizes\n",
              cases, through_cipher_state, tampered_through_cipher_state, direct_valid, direct_invalid,
              unusable_sizes);
  EXPECT_EQ(static_cast<std::int64_t>(cases), vectors.at("numberOfTests").as_int64());
  EXPECT_GT(through_cipher_state, 0u);
  EXPECT_GT(tampered_through_cipher_state, 0u);
  EXPECT_GT(direct_valid, 0u);
  EXPECT_GT(direct_invalid, 0u);
}

// ---------------------------------------------------------------------------------------------
// agent-mesh IK vectors (tests/vectors/agent-mesh/ik-handshake.json): our prologue, identity-derived
// static keys, explicit-counter and multi-piece transport (protocol §5).

std::uint64_t json_counter(const json::value& value) {
  if (value.is_string()) return std::stoull(str(value));
  return value.to_number<std::uint64_t>();
}

std::string sha256_hex(ByteView bytes) {
  std::array<std::uint8_t, crypto_hash_sha256_BYTES> digest{};
  crypto_hash_sha256(digest.data(), bytes.data(), bytes.size());
  return hex_encode(digest);
}

struct AgentMeshSession {
  TransportKeys initiator;
  TransportKeys responder;
};

TEST(NoiseAgentMeshVectors, IkHandshakesAndTransportMatch) {
  init_sodium();
  const json::value vectors = load_vectors("agent-mesh/ik-handshake.json");
  ASSERT_EQ(str(vectors.at("protocol_name")), protocol_name(Pattern::IK));
  const Bytes prologue = hex(str(vectors.at("prologue_hex")));
  ASSERT_EQ(prologue, bytes_of(kPrologue));
  const auto& identities = vectors.at("identities").as_object();
  auto static_key = [&](const json::value& name) {
    const auto& identity = identities.at(str(name));
    DhKeyPair pair = DhKeyPair::from_secret(fixed<32>(hex(str(identity.at("x25519_private_hex")))));
    EXPECT_EQ(hex_encode(pair.public_key), str(identity.at("x25519_public_hex")));
    return pair;
  };

  std::map<std::string, AgentMeshSession> sessions;
  for (const auto& handshake : vectors.at("handshakes").as_array()) {
    const std::string name = str(handshake.at("name"));
    SCOPED_TRACE("handshake " + name);
    const DhKeyPair initiator_static = static_key(handshake.at("initiator"));
    const DhKeyPair responder_static = static_key(handshake.at("responder"));

    HandshakeConfig initiator_config{Pattern::IK, true, prologue, initiator_static,
                                     responder_static.public_key,
                                     DhKeyPair::from_secret(fixed<32>(hex(str(handshake.at("initiator_ephemeral_private_hex")))))};
    HandshakeConfig responder_config{Pattern::IK, false, prologue, responder_static, std::nullopt,
                                     DhKeyPair::from_secret(fixed<32>(hex(str(handshake.at("responder_ephemeral_private_hex")))))};
    EXPECT_EQ(hex_encode(initiator_config.local_ephemeral->public_key), str(handshake.at("initiator_ephemeral_public_hex")));
    EXPECT_EQ(hex_encode(responder_config.local_ephemeral->public_key), str(handshake.at("responder_ephemeral_public_hex")));
    HandshakeState initiator = must_create(std::move(initiator_config));
    HandshakeState responder = must_create(std::move(responder_config));

    const auto& message1 = handshake.at("message1");
    Bytes wire1;
    ASSERT_TRUE(initiator.write_message(bytes_of(str(message1.at("payload_utf8"))), wire1).ok());
    EXPECT_EQ(hex_encode(wire1), str(message1.at("noise_hex")));
    Bytes payload1;
    ASSERT_TRUE(responder.read_message(wire1, payload1).ok());
    EXPECT_EQ(as_text(payload1), str(message1.at("payload_utf8")));
    // protocol §5: the responder checks the static key in message 1 against the sender's identity.
    ASSERT_TRUE(responder.remote_static().has_value());
    EXPECT_EQ(*responder.remote_static(), initiator_static.public_key);

    const auto& message2 = handshake.at("message2");
    Bytes wire2;
    ASSERT_TRUE(responder.write_message({}, wire2).ok());
    EXPECT_EQ(hex_encode(wire2), str(message2.at("noise_hex")));
    Bytes payload2;
    ASSERT_TRUE(initiator.read_message(wire2, payload2).ok());
    EXPECT_TRUE(payload2.empty());

    ASSERT_TRUE(initiator.is_complete() && responder.is_complete());
    EXPECT_EQ(hex_encode(initiator.handshake_hash()), str(handshake.at("handshake_hash_hex")));
    EXPECT_EQ(responder.handshake_hash(), initiator.handshake_hash());
    EXPECT_EQ(base64url_encode(ByteView(initiator.handshake_hash()).first(16)), str(handshake.at("sid")));

    AgentMeshSession session{initiator.split(), responder.split()};
    // The transport keys are not exposed; show they are the vector's by sealing the same probe.
    const auto& keys = handshake.at("transport_keys");
    for (const auto& [field, ours] :
         {std::pair{"initiator_to_responder_hex", &session.initiator.send},
          std::pair{"responder_to_initiator_hex", &session.responder.send}}) {
      CipherState reference;
      reference.initialize_key(fixed<kKeyBytes>(hex(str(keys.at(field)))));
      const Bytes probe = bytes_of("probe");
      Bytes expected(probe.size() + kTagBytes), produced(probe.size() + kTagBytes);
      reference.encrypt_at(7, {}, probe, expected.data());
      ours->encrypt_at(7, {}, probe, produced.data());
      EXPECT_EQ(produced, expected) << field;
    }
    sessions.emplace(name, std::move(session));
  }

  std::size_t exact = 0, hashed = 0;
  for (const auto& transport : vectors.at("transport").as_array()) {
    SCOPED_TRACE(str(transport.at("name")));
    AgentMeshSession& session = sessions.at(str(transport.at("handshake")));
    const bool from_initiator = str(transport.at("direction")) == "initiator->responder";
    const CipherState& send = from_initiator ? session.initiator.send : session.responder.send;
    const CipherState& receive = from_initiator ? session.responder.receive : session.initiator.receive;
    const std::uint64_t first_counter = json_counter(transport.at("n"));
    const Bytes ad = bytes_of(str(transport.at("ad_utf8")));

    Bytes plaintext;
    if (const auto* literal = transport.as_object().if_contains("plaintext_utf8")) {
      plaintext = bytes_of(str(*literal));
    } else {
      const auto& rule = transport.at("plaintext_rule");
      const std::string repeated = str(rule.at("repeat"));
      std::string text = str(rule.at("prefix"));
      for (std::int64_t i = 0; i < rule.at("count").as_int64(); ++i) text += repeated;
      text += str(rule.at("suffix"));
      plaintext = bytes_of(text);
      EXPECT_EQ(sha256_hex(plaintext), str(transport.at("plaintext_sha256_hex")));
    }

    // Seal piece by piece (protocol §5: 65,519-byte pieces, consecutive counters, same AD).
    const auto& pieces = transport.at("piece_details").as_array();
    ASSERT_EQ(pieces.size(), (plaintext.size() + kMaxPlaintextBytes - 1) / kMaxPlaintextBytes);
    Bytes ciphertext;
    for (std::size_t i = 0; i < pieces.size(); ++i) {
      const ByteView piece = ByteView(plaintext).subspan(i * kMaxPlaintextBytes).first(
          std::min(kMaxPlaintextBytes, plaintext.size() - i * kMaxPlaintextBytes));
      EXPECT_EQ(json_counter(pieces[i].at("counter")), first_counter + i);
      const std::size_t start = ciphertext.size();
      ciphertext.resize(start + piece.size() + kTagBytes);
      send.encrypt_at(first_counter + i, ad, piece, ciphertext.data() + start);
      EXPECT_EQ(hex_encode(ByteView(ciphertext).subspan(ciphertext.size() - kTagBytes)),
                str(pieces[i].at("tag_hex")));
    }
    if (const auto* expected = transport.as_object().if_contains("ciphertext_hex")) {
      EXPECT_EQ(hex_encode(ciphertext), str(*expected));
      ++exact;
    } else {
      EXPECT_EQ(sha256_hex(ciphertext), str(transport.at("ciphertext_sha256_hex")));
      ++hashed;
    }

    // Open: split every 65,535 bytes, piece i with counter n + i.
    Bytes opened;
    for (std::size_t offset = 0, i = 0; offset < ciphertext.size(); offset += kMaxMessageBytes, ++i) {
      const ByteView piece =
          ByteView(ciphertext).subspan(offset).first(std::min(kMaxMessageBytes, ciphertext.size() - offset));
      const std::size_t start = opened.size();
      opened.resize(start + piece.size() - kTagBytes);
      ASSERT_TRUE(receive.decrypt_at(first_counter + i, ad, piece, opened.data() + start));
    }
    EXPECT_EQ(opened, plaintext);
  }
  EXPECT_GT(exact, 0u);
  EXPECT_GT(hashed, 0u);
}

// ---------------------------------------------------------------------------------------------
// A live IK handshake with random keys, and the ways it must fail.

struct IkFixture {
  DhKeyPair initiator_static = DhKeyPair::generate();
  DhKeyPair responder_static = DhKeyPair::generate();

  HandshakeState initiator(std::string_view prologue = kPrologue) const {
    return initiator_expecting(responder_static.public_key, prologue);
  }
  HandshakeState initiator_expecting(const X25519Key& responder_key, std::string_view prologue = kPrologue) const {
    HandshakeConfig config;
    config.initiator = true;
    config.prologue = bytes_of(prologue);
    config.local_static = initiator_static;
    config.remote_static = responder_key;
    return must_create(std::move(config));
  }
  HandshakeState responder(std::string_view prologue = kPrologue) const { return responder_with(responder_static, prologue); }
  static HandshakeState responder_with(const DhKeyPair& key, std::string_view prologue = kPrologue) {
    HandshakeConfig config;
    config.initiator = false;
    config.prologue = bytes_of(prologue);
    config.local_static = key;
    return must_create(std::move(config));
  }
  static Bytes write(HandshakeState& state, ByteView payload = {}) {
    Bytes message;
    const auto status = state.write_message(payload, message);
    if (!status.ok()) throw std::runtime_error("write_message: " + status.error().describe());
    return message;
  }
};

TEST(NoiseHandshake, IkRoundTripThenTransportAtExplicitCounters) {
  IkFixture keys;
  HandshakeState initiator = keys.initiator();
  HandshakeState responder = keys.responder();
  EXPECT_TRUE(initiator.is_initiator());
  EXPECT_FALSE(responder.is_initiator());
  EXPECT_FALSE(responder.remote_static().has_value());

  const Bytes request = bytes_of(R"({"msg_type":"request","capability":"echo","body":{},"timeout_ms":1000})");
  const Bytes message1 = IkFixture::write(initiator, request);
  EXPECT_EQ(message1.size(), 32 + 48 + request.size() + 16);  // e, encrypted s, encrypted payload
  Bytes received;
  ASSERT_TRUE(responder.read_message(message1, received).ok());
  EXPECT_EQ(received, request);
  ASSERT_TRUE(responder.remote_static().has_value());
  EXPECT_EQ(*responder.remote_static(), keys.initiator_static.public_key);

  const Bytes message2 = IkFixture::write(responder);
  EXPECT_EQ(message2.size(), 32u + 16u);
  Bytes empty;
  ASSERT_TRUE(initiator.read_message(message2, empty).ok());
  EXPECT_TRUE(empty.empty());
  ASSERT_TRUE(initiator.is_complete());
  ASSERT_TRUE(responder.is_complete());
  EXPECT_FALSE(initiator.is_my_turn());
  EXPECT_FALSE(responder.is_my_turn());
  EXPECT_EQ(initiator.handshake_hash(), responder.handshake_hash());

  const TransportKeys initiator_keys = initiator.split();
  const TransportKeys responder_keys = responder.split();
  const Bytes ad = bytes_of(R"({"encrypted":true,"n":0})");
  const Bytes plaintext = bytes_of("a transport message");
  for (const std::uint64_t counter : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{5}, (std::uint64_t{1} << 53) - 1}) {
    SCOPED_TRACE("counter " + std::to_string(counter));
    for (const bool from_initiator : {true, false}) {
      const CipherState& send = from_initiator ? initiator_keys.send : responder_keys.send;
      const CipherState& receive = from_initiator ? responder_keys.receive : initiator_keys.receive;
      const CipherState& wrong_direction = from_initiator ? initiator_keys.receive : responder_keys.receive;
      Bytes sealed(plaintext.size() + kTagBytes);
      send.encrypt_at(counter, ad, plaintext, sealed.data());
      Bytes opened(plaintext.size());
      ASSERT_TRUE(receive.decrypt_at(counter, ad, sealed, opened.data()));
      EXPECT_EQ(opened, plaintext);
      EXPECT_FALSE(wrong_direction.decrypt_at(counter, ad, sealed, opened.data()));
      // The explicit forms never move the internal nonce.
      EXPECT_EQ(send.nonce(), 0u);
      EXPECT_EQ(receive.nonce(), 0u);
    }
  }
}

TEST(NoiseHandshake, XxRoundTripLearnsBothStaticKeys) {
  const DhKeyPair initiator_static = DhKeyPair::generate(), responder_static = DhKeyPair::generate();
  HandshakeState initiator = must_create({Pattern::XX, true, {}, initiator_static, std::nullopt, std::nullopt});
  HandshakeState responder = must_create({Pattern::XX, false, {}, responder_static, std::nullopt, std::nullopt});
  Bytes payload;
  ASSERT_TRUE(responder.read_message(IkFixture::write(initiator), payload).ok());
  ASSERT_TRUE(initiator.read_message(IkFixture::write(responder), payload).ok());
  ASSERT_TRUE(responder.read_message(IkFixture::write(initiator), payload).ok());
  ASSERT_TRUE(initiator.is_complete() && responder.is_complete());
  EXPECT_EQ(*initiator.remote_static(), responder_static.public_key);
  EXPECT_EQ(*responder.remote_static(), initiator_static.public_key);
  EXPECT_EQ(initiator.handshake_hash(), responder.handshake_hash());
}

TEST(NoiseHandshake, RandomEphemeralsDifferBetweenHandshakes) {
  IkFixture keys;
  HandshakeState first = keys.initiator(), second = keys.initiator();
  const Bytes a = IkFixture::write(first), b = IkFixture::write(second);
  EXPECT_NE(Bytes(a.begin(), a.begin() + 32), Bytes(b.begin(), b.begin() + 32));
}

TEST(NoiseHandshake, CreateRefusesMissingOrMisplacedKeys) {
  const DhKeyPair key = DhKeyPair::generate();
  expect_error(HandshakeState::create({Pattern::IK, true, {}, key, std::nullopt, std::nullopt}), Errc::bad_request,
               "needs the peer's static key");
  expect_error(HandshakeState::create({Pattern::IK, true, {}, std::nullopt, key.public_key, std::nullopt}),
               Errc::bad_request, "needs a local static key");
  expect_error(HandshakeState::create({Pattern::IK, false, {}, std::nullopt, std::nullopt, std::nullopt}),
               Errc::bad_request, "needs a local static key");
  expect_error(HandshakeState::create({Pattern::IK, false, {}, key, key.public_key, std::nullopt}),
               Errc::bad_request, "cannot be preset");
  expect_error(HandshakeState::create({Pattern::XX, true, {}, key, key.public_key, std::nullopt}),
               Errc::bad_request, "cannot be preset");
  // NN needs no static key at all; an unused local one is harmless.
  EXPECT_TRUE(HandshakeState::create({Pattern::NN, true, {}, key, std::nullopt, std::nullopt}).ok());
  EXPECT_TRUE(HandshakeState::create({Pattern::NN, false, {}, std::nullopt, std::nullopt, std::nullopt}).ok());
}

// A responder that has read a valid message 1 once must accept it; flipping one byte anywhere in
// the encrypted part must fail authentication.
TEST(NoiseHandshake, TamperedMessage1FailsOnTheResponder) {
  IkFixture keys;
  HandshakeState initiator = keys.initiator();
  const Bytes message1 = IkFixture::write(initiator, bytes_of("payload"));
  for (const std::size_t offset : {std::size_t{0}, std::size_t{31}, std::size_t{32}, std::size_t{60},
                                   std::size_t{79}, std::size_t{80}, message1.size() - 1}) {
    SCOPED_TRACE("byte " + std::to_string(offset));
    Bytes tampered = message1;
    tampered[offset] ^= 0x40;
    HandshakeState responder = keys.responder();
    Bytes payload{0xaa};
    expect_error(responder.read_message(tampered, payload), Errc::bad_request, "authentication failed");
    EXPECT_EQ(payload, Bytes{0xaa});  // untouched on failure
    EXPECT_FALSE(responder.is_complete());
  }
  HandshakeState responder = keys.responder();
  Bytes payload;
  EXPECT_TRUE(responder.read_message(message1, payload).ok());
}

TEST(NoiseHandshake, TamperedMessage2FailsOnTheInitiator) {
  IkFixture keys;
  HandshakeState responder = keys.responder();
  HandshakeState good_initiator = keys.initiator();
  Bytes payload;
  ASSERT_TRUE(responder.read_message(IkFixture::write(good_initiator), payload).ok());
  const Bytes message2 = IkFixture::write(responder);
  for (const std::size_t offset : {std::size_t{0}, std::size_t{32}, message2.size() - 1}) {
    SCOPED_TRACE("byte " + std::to_string(offset));
    HandshakeState initiator = good_initiator;  // a copy waiting for message 2
    Bytes tampered = message2;
    tampered[offset] ^= 0x01;
    expect_error(initiator.read_message(tampered, payload), Errc::bad_request, "cannot decrypt the payload of message 2");
  }
  EXPECT_TRUE(good_initiator.read_message(message2, payload).ok());
}

TEST(NoiseHandshake, WrongPrologueFailsOnTheResponder) {
  IkFixture keys;
  HandshakeState initiator = keys.initiator("agent-mesh/v1");
  HandshakeState responder = keys.responder("agent-mesh/v2");
  Bytes payload;
  expect_error(responder.read_message(IkFixture::write(initiator), payload), Errc::bad_request,
               "cannot decrypt the peer's static key in message 1");
}

TEST(NoiseHandshake, ResponderWithAnotherStaticKeyFails) {
  IkFixture keys;
  HandshakeState initiator = keys.initiator();
  HandshakeState impostor = IkFixture::responder_with(DhKeyPair::generate());
  Bytes payload;
  expect_error(impostor.read_message(IkFixture::write(initiator), payload), Errc::bad_request,
               "cannot decrypt the peer's static key in message 1");
}

// The Curve25519 points of small order (and their non-canonical encodings): X25519 with any of them
// is all zeros, which protocol §1 makes a handshake failure.
const std::vector<std::string>& low_order_points() {
  static const std::vector<std::string> points = {
      "0000000000000000000000000000000000000000000000000000000000000000",  // 0 (order 4)
      "0100000000000000000000000000000000000000000000000000000000000000",  // 1 (order 1)
      "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",  // order 8
      "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",  // order 8
      "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  // p - 1 (order 2)
      "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  // p ≡ 0
      "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  // p + 1 ≡ 1
  };
  return points;
}

TEST(NoiseHandshake, LowOrderEphemeralInMessage1IsAnAllZeroDh) {
  IkFixture keys;
  HandshakeState initiator = keys.initiator();
  const Bytes message1 = IkFixture::write(initiator);
  for (const std::string& point : low_order_points()) {
    SCOPED_TRACE(point);
    Bytes forged = message1;
    const Bytes key = hex(point);
    std::copy(key.begin(), key.end(), forged.begin());
    HandshakeState responder = keys.responder();
    Bytes payload;
    expect_error(responder.read_message(forged, payload), Errc::bad_request, "all-zero DH (low-order key)");
    EXPECT_FALSE(responder.is_my_turn());
  }
}

TEST(NoiseHandshake, LowOrderEphemeralInMessage2IsAnAllZeroDh) {
  IkFixture keys;
  HandshakeState responder = keys.responder();
  HandshakeState good_initiator = keys.initiator();
  Bytes payload;
  ASSERT_TRUE(responder.read_message(IkFixture::write(good_initiator), payload).ok());
  const Bytes message2 = IkFixture::write(responder);
  for (const std::string& point : low_order_points()) {
    SCOPED_TRACE(point);
    HandshakeState initiator = good_initiator;
    Bytes forged = message2;
    const Bytes key = hex(point);
    std::copy(key.begin(), key.end(), forged.begin());
    expect_error(initiator.read_message(forged, payload), Errc::bad_request, "all-zero DH (low-order key)");
  }
}

TEST(NoiseHandshake, LowOrderPeerStaticKeyIsAnAllZeroDh) {
  // IK initiator given a low-order responder key: the first DH (es) fails while writing.
  IkFixture keys;
  HandshakeState initiator = keys.initiator_expecting(fixed<32>(hex(low_order_points()[2])));
  Bytes message{0x01};
  expect_error(initiator.write_message({}, message), Errc::bad_request, "all-zero DH (low-order key)");
  EXPECT_EQ(message, Bytes{0x01});  // nothing half-written is left behind
}

TEST(NoiseHandshake, MessagesTooShortForTheNextToken) {
  IkFixture keys;
  HandshakeState initiator = keys.initiator();
  const Bytes message1 = IkFixture::write(initiator);  // 32 + 48 + 16 bytes
  const std::vector<std::pair<std::size_t, std::string>> cases = {
      {0, "too short for the ephemeral key"},
      {31, "too short for the ephemeral key"},
      {32, "too short for the static key"},
      {32 + 47, "too short for the static key"},
      {32 + 48, "too short for the payload's tag"},
      {32 + 48 + 15, "too short for the payload's tag"},
  };
  for (const auto& [length, problem] : cases) {
    SCOPED_TRACE("length " + std::to_string(length));
    HandshakeState responder = keys.responder();
    Bytes payload;
    expect_error(responder.read_message(ByteView(message1).first(length), payload), Errc::bad_request, problem);
  }
}

TEST(NoiseHandshake, MessagesLongerThan65535BytesAreRefused) {
  IkFixture keys;
  {
    HandshakeState responder = keys.responder();
    const Bytes huge(kMaxMessageBytes + 1, 0x42);
    Bytes payload;
    expect_error(responder.read_message(huge, payload), Errc::bad_request, "longer than 65535");
  }
  {
    // protocol §5: message 1 holds at most 65,439 payload bytes (65,535 − 32 − 48 − 16).
    HandshakeState initiator = keys.initiator();
    Bytes message;
    ASSERT_TRUE(initiator.write_message(Bytes(65439, 0x61), message).ok());
    EXPECT_EQ(message.size(), kMaxMessageBytes);
    HandshakeState responder = keys.responder();
    Bytes payload;
    ASSERT_TRUE(responder.read_message(message, payload).ok());
    EXPECT_EQ(payload.size(), 65439u);
  }
  {
    HandshakeState initiator = keys.initiator();
    Bytes message;
    expect_error(initiator.write_message(Bytes(65440, 0x61), message), Errc::bad_request, "longer than 65535");
    EXPECT_TRUE(message.empty());
  }
  {
    HandshakeState initiator = keys.initiator();
    Bytes message;
    expect_error(initiator.write_message(Bytes(kMaxMessageBytes + 1, 0x61), message), Errc::bad_request,
                 "does not fit a 65535-byte message");
  }
}

TEST(NoiseHandshake, WritingOrReadingOutOfTurnFails) {
  IkFixture keys;
  {
    HandshakeState responder = keys.responder();
    EXPECT_FALSE(responder.is_my_turn());
    Bytes message;
    expect_error(responder.write_message({}, message), Errc::bad_request, "not our turn to write");
    EXPECT_TRUE(message.empty());
  }
  {
    HandshakeState initiator = keys.initiator();
    EXPECT_TRUE(initiator.is_my_turn());
    Bytes payload;
    expect_error(initiator.read_message(Bytes(48, 0), payload), Errc::bad_request, "not our turn to read");
  }
  {
    // Writing twice in a row.
    HandshakeState initiator = keys.initiator();
    (void)IkFixture::write(initiator);
    Bytes message;
    expect_error(initiator.write_message({}, message), Errc::bad_request, "not our turn to write");
  }
  {
    // Anything after completion.
    HandshakeState initiator = keys.initiator();
    HandshakeState responder = keys.responder();
    Bytes payload;
    ASSERT_TRUE(responder.read_message(IkFixture::write(initiator), payload).ok());
    const Bytes message2 = IkFixture::write(responder);
    ASSERT_TRUE(initiator.read_message(message2, payload).ok());
    Bytes message;
    expect_error(initiator.write_message({}, message), Errc::bad_request, "already complete");
    expect_error(responder.read_message(message2, payload), Errc::bad_request, "already complete");
  }
}

TEST(NoiseHandshake, EveryCallAfterAFailureFails) {
  IkFixture keys;
  HandshakeState initiator = keys.initiator();
  const Bytes message1 = IkFixture::write(initiator);
  HandshakeState responder = keys.responder();
  Bytes tampered = message1;
  tampered.back() ^= 0x01;
  Bytes payload;
  ASSERT_FALSE(responder.read_message(tampered, payload).ok());
  EXPECT_FALSE(responder.is_my_turn());
  EXPECT_FALSE(responder.is_complete());
  // Even the genuine message is refused now, and so is writing.
  expect_error(responder.read_message(message1, payload), Errc::bad_request, "already failed");
  Bytes message;
  expect_error(responder.write_message({}, message), Errc::bad_request, "already failed");
  EXPECT_TRUE(message.empty());

  // A wrong-turn call fails the handshake too.
  HandshakeState other = keys.initiator();
  ASSERT_FALSE(other.read_message(message1, payload).ok());
  expect_error(other.write_message({}, message), Errc::bad_request, "already failed");
}

// ---------------------------------------------------------------------------------------------
// CipherState.

TEST(NoiseCipherState, DecryptAtRefusesWrongCounterWrongAdAndTruncation) {
  init_sodium();
  CipherState cipher;
  Key key{};
  randombytes_buf(key.data(), key.size());
  cipher.initialize_key(key);
  const Bytes ad = bytes_of("header"), plaintext = bytes_of("hello, agent");
  Bytes sealed(plaintext.size() + kTagBytes);
  cipher.encrypt_at(42, ad, plaintext, sealed.data());
  Bytes opened(plaintext.size());
  ASSERT_TRUE(cipher.decrypt_at(42, ad, sealed, opened.data()));
  EXPECT_EQ(opened, plaintext);

  EXPECT_FALSE(cipher.decrypt_at(41, ad, sealed, opened.data()));
  EXPECT_FALSE(cipher.decrypt_at(43, ad, sealed, opened.data()));
  EXPECT_FALSE(cipher.decrypt_at(42 + (std::uint64_t{1} << 32), ad, sealed, opened.data()));
  EXPECT_FALSE(cipher.decrypt_at(42, bytes_of("headex"), sealed, opened.data()));
  EXPECT_FALSE(cipher.decrypt_at(42, {}, sealed, opened.data()));
  EXPECT_FALSE(cipher.decrypt_at(42, ad, ByteView(sealed).first(sealed.size() - 1), opened.data()));
  EXPECT_FALSE(cipher.decrypt_at(42, ad, ByteView(sealed).first(kTagBytes - 1), opened.data()));
  EXPECT_FALSE(cipher.decrypt_at(42, ad, ByteView{}, opened.data()));
  EXPECT_FALSE(cipher.decrypt_at(UINT64_MAX, ad, sealed, opened.data()));  // reserved nonce
  CipherState other;
  Key other_key = key;
  other_key[0] ^= 1;
  other.initialize_key(other_key);
  EXPECT_FALSE(other.decrypt_at(42, ad, sealed, opened.data()));

  // An empty plaintext still carries a tag that verifies.
  std::array<std::uint8_t, kTagBytes> tag_only{};
  cipher.encrypt_at(0, {}, {}, tag_only.data());
  EXPECT_TRUE(cipher.decrypt_at(0, {}, tag_only, nullptr));
}

TEST(NoiseCipherState, EncryptAtWorksInPlace) {
  CipherState cipher;
  cipher.initialize_key(Key{1, 2, 3});
  const Bytes plaintext = bytes_of("in place");
  Bytes separate(plaintext.size() + kTagBytes);
  cipher.encrypt_at(9, {}, plaintext, separate.data());
  Bytes buffer = plaintext;
  buffer.resize(plaintext.size() + kTagBytes);
  cipher.encrypt_at(9, {}, ByteView(buffer).first(plaintext.size()), buffer.data());
  EXPECT_EQ(buffer, separate);
  ASSERT_TRUE(cipher.decrypt_at(9, {}, buffer, buffer.data()));
  EXPECT_EQ(Bytes(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(plaintext.size())), plaintext);
}

TEST(NoiseCipherState, WithAdFormsAdvanceTheNonceAndPassThroughWithoutAKey) {
  CipherState cipher;
  EXPECT_FALSE(cipher.has_key());
  Bytes out;
  ASSERT_TRUE(cipher.encrypt_with_ad({}, bytes_of("clear"), out).ok());
  EXPECT_EQ(out, bytes_of("clear"));  // §5.1: no key, no encryption
  EXPECT_EQ(cipher.nonce(), 0u);

  cipher.initialize_key(Key{7});
  Bytes first, second;
  ASSERT_TRUE(cipher.encrypt_with_ad({}, bytes_of("x"), first).ok());
  ASSERT_TRUE(cipher.encrypt_with_ad({}, bytes_of("x"), second).ok());
  EXPECT_EQ(cipher.nonce(), 2u);
  EXPECT_NE(first, second);

  CipherState receiver;
  receiver.initialize_key(Key{7});
  Bytes opened{0x55};
  expect_error(receiver.decrypt_with_ad({}, second, opened), Errc::bad_request, "authentication failed");
  EXPECT_EQ(opened, Bytes{0x55});  // untouched, nonce not advanced
  EXPECT_EQ(receiver.nonce(), 0u);
  ASSERT_TRUE(receiver.decrypt_with_ad({}, first, opened).ok());
  ASSERT_TRUE(receiver.decrypt_with_ad({}, second, opened).ok());
  EXPECT_EQ(opened, bytes_of("\x55xx"));
  expect_error(receiver.decrypt_with_ad({}, Bytes(15, 0), opened), Errc::bad_request, "shorter than a 16-byte tag");

  cipher.set_nonce(UINT64_MAX);
  expect_error(cipher.encrypt_with_ad({}, bytes_of("x"), first), Errc::bad_request, "nonce exhausted");
  cipher.set_nonce(0);
  expect_error(cipher.encrypt_with_ad({}, Bytes(kMaxPlaintextBytes + 1, 0), first), Errc::bad_request,
               "does not fit");
}

}  // namespace
}  // namespace agent_mesh::noise
