// Core hot paths against baselines measured in the same run (docs/performance.md):
//   envelope receive (parse + checks + verify + replay)  vs  raw crypto_sign_verify_detached
//   I-JSON parse                                         vs  boost::json::parse
//   JCS serialise                                        vs  boost::json::serialize
//   base64url encode/decode                              vs  libsodium sodium_bin2base64/base642bin
#include <sodium.h>

#include <boost/json.hpp>
#include <chrono>

#include "agent_mesh/envelope.hpp"
#include "agent_mesh/json.hpp"
#include "agent_mesh/replay_cache.hpp"
#include "ratio_reporter.hpp"

namespace {

using namespace agent_mesh;

struct Fixture {
  KeyPair alice = KeyPair::generate();
  KeyPair bob = KeyPair::generate();
  std::int64_t now = 1764000600000;
  std::string frame;
  Envelope envelope;
  std::string signing_input;

  Fixture() {
    envelope.id = Uuid::generate();
    envelope.from = alice.agent_id();
    envelope.to = bob.agent_id();
    envelope.msg_type = MsgType::request;
    envelope.timestamp = now;
    envelope.payload = body_to_json(RequestBody{
        "summarise", boost::json::value{{"text", std::string(512, 'x')}, {"max_words", 100}, {"lang", "en"}}, 30000});
    envelope.sign(alice);
    frame = envelope.serialize();
    signing_input = std::string(signature_prefix(Purpose::envelope)) + envelope.signing_input();
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

void EnvelopeReceive_ours(benchmark::State& state) {
  auto& f = fixture();
  ReplayCache replay;
  for (auto _ : state) {
    // A fresh ID per iteration would cost a re-sign; clear the cache instead by moving time.
    auto env = receive_envelope(f.frame, f.bob.agent_id(), f.now, FreshnessPolicy{}, replay);
    benchmark::DoNotOptimize(env);
    replay = ReplayCache{};
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * f.frame.size()));
}
BENCHMARK(EnvelopeReceive_ours)->Name("envelope_receive/ours");

void EnvelopeReceive_baseline(benchmark::State& state) {
  auto& f = fixture();
  for (auto _ : state) {
    int rc = crypto_sign_verify_detached(f.envelope.signature->data(),
                                         reinterpret_cast<const unsigned char*>(f.signing_input.data()),
                                         f.signing_input.size(), f.alice.agent_id().public_key().data());
    benchmark::DoNotOptimize(rc);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * f.frame.size()));
}
BENCHMARK(EnvelopeReceive_baseline)->Name("envelope_receive/baseline");

void Parse_ours(benchmark::State& state) {
  auto& f = fixture();
  for (auto _ : state) {
    auto v = json::parse_ijson(f.frame);
    benchmark::DoNotOptimize(v);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * f.frame.size()));
}
BENCHMARK(Parse_ours)->Name("json_parse/ours");

void Parse_baseline(benchmark::State& state) {
  auto& f = fixture();
  for (auto _ : state) {
    auto v = boost::json::parse(f.frame);
    benchmark::DoNotOptimize(v);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * f.frame.size()));
}
BENCHMARK(Parse_baseline)->Name("json_parse/baseline");

void Serialize_ours(benchmark::State& state) {
  auto value = boost::json::parse(fixture().frame);
  for (auto _ : state) {
    auto s = json::serialize_jcs(value);
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(Serialize_ours)->Name("json_serialize/ours");

void Serialize_baseline(benchmark::State& state) {
  auto value = boost::json::parse(fixture().frame);
  for (auto _ : state) {
    auto s = boost::json::serialize(value);
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(Serialize_baseline)->Name("json_serialize/baseline");

const Bytes& payload_bytes() {
  static const Bytes bytes = [] {
    Bytes b(4096);
    randombytes_buf(b.data(), b.size());
    return b;
  }();
  return bytes;
}

void Encode_ours(benchmark::State& state) {
  for (auto _ : state) {
    auto s = base64url_encode(payload_bytes());
    benchmark::DoNotOptimize(s);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * payload_bytes().size()));
}
BENCHMARK(Encode_ours)->Name("base64url_encode_4k/ours");

void Encode_baseline(benchmark::State& state) {
  const auto& bytes = payload_bytes();
  for (auto _ : state) {
    std::string s(sodium_base64_encoded_len(bytes.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
    sodium_bin2base64(s.data(), s.size(), bytes.data(), bytes.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    benchmark::DoNotOptimize(s);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes.size()));
}
BENCHMARK(Encode_baseline)->Name("base64url_encode_4k/baseline");

void Decode_ours(benchmark::State& state) {
  const std::string text = base64url_encode(payload_bytes());
  for (auto _ : state) {
    auto b = base64url_decode(text);
    benchmark::DoNotOptimize(b);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * payload_bytes().size()));
}
BENCHMARK(Decode_ours)->Name("base64url_decode_4k/ours");

void Decode_baseline(benchmark::State& state) {
  const std::string text = base64url_encode(payload_bytes());
  for (auto _ : state) {
    Bytes b(payload_bytes().size());
    std::size_t len = 0;
    sodium_base642bin(b.data(), b.size(), text.data(), text.size(), nullptr, &len, nullptr,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    benchmark::DoNotOptimize(b);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * payload_bytes().size()));
}
BENCHMARK(Decode_baseline)->Name("base64url_decode_4k/baseline");

}  // namespace

AGENT_MESH_BENCH_MAIN()
