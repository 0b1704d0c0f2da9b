#include "bench_envelope.hpp"

#include <sodium.h>

#include <chrono>

#include "agent_mesh/envelope.hpp"
#include "agent_mesh/limits.hpp"
#include "agent_mesh/routing_header.hpp"

namespace agent_mesh::bench {

std::int64_t wall_ms() noexcept {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::uint64_t steady_ns() noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

namespace {

std::string random_base64url(std::size_t bytes) {
  Bytes raw(bytes);
  randombytes_buf(raw.data(), raw.size());
  return base64url_encode(raw);
}

std::string_view member_value(std::string_view frame, std::string_view key) noexcept {
  const auto at = frame.find(key);
  if (at == std::string_view::npos) return {};
  const auto start = at + key.size();
  const auto end = frame.find('"', start);
  if (end == std::string_view::npos) return {};
  return frame.substr(start, end - start);
}

}  // namespace

EnvelopeWriter::EnvelopeWriter(const AgentId& from, const AgentId& to, std::size_t payload_bytes)
    : from_(from.str()),
      to_(to.str()),
      sid_(random_base64url(limits::sid_bytes)),
      payload_(random_base64url(payload_bytes)) {}

std::string EnvelopeWriter::request(std::string& id_out) {
  id_out = Uuid::generate().to_string();
  return build("request", id_out, {});
}

std::string EnvelopeWriter::response(std::string_view request_id) {
  const std::string id = Uuid::generate().to_string();
  return build("response", id, request_id);
}

std::string EnvelopeWriter::build(std::string_view msg_type, std::string_view id, std::string_view in_reply_to) {
  // Members in JCS order (sorted by name), as a real sender serialises them.
  const std::string n = std::to_string(counter_++);
  const std::string timestamp = std::to_string(wall_ms());
  std::string out;
  out.reserve(payload_.size() + 320);
  out += R"({"encrypted":true,"from":")";
  out += from_;
  out += R"(","id":")";
  out += id;
  if (!in_reply_to.empty()) {
    out += R"(","in_reply_to":")";
    out += in_reply_to;
  }
  out += R"(","msg_type":")";
  out += msg_type;
  out += R"(","n":)";
  out += n;
  out += R"(,"payload":")";
  out += payload_;
  out += R"(","sid":")";
  out += sid_;
  out += R"(","timestamp":)";
  out += timestamp;
  out += R"(,"to":")";
  out += to_;
  out += R"("})";
  return out;
}

std::string_view envelope_id(std::string_view frame) noexcept { return member_value(frame, R"("id":")"); }

std::string_view envelope_in_reply_to(std::string_view frame) noexcept {
  return member_value(frame, R"("in_reply_to":")");
}

std::string self_check_envelopes() {
  const auto alice = KeyPair::generate();
  const auto bob = KeyPair::generate();
  EnvelopeWriter to_bob(alice.agent_id(), bob.agent_id(), 4096);
  EnvelopeWriter to_alice(bob.agent_id(), alice.agent_id(), 4096);
  std::string id;
  const std::string request = to_bob.request(id);
  const std::string response = to_alice.response(id);
  for (const auto* frame : {&request, &response}) {
    auto parsed = Envelope::parse(*frame);
    if (!parsed) return "Envelope::parse refuses the bench envelope: " + parsed.error().message;
    if (!parsed->encrypted || parsed->ciphertext.size() != 4096) return "bench envelope is not a 4096-byte ciphertext";
    auto header = scan_routing_header(*frame);
    if (!header) return "scan_routing_header refuses the bench envelope: " + header.error().message;
  }
  if (envelope_id(request) != id || envelope_in_reply_to(response) != id) return "envelope id extraction disagrees";
  return {};
}

}  // namespace agent_mesh::bench
