#include "relay_metrics.hpp"

#include <cstdio>

namespace agent_mesh::relay {
namespace {

constexpr std::array<const char*, static_cast<std::size_t>(AuthResult::count)> kAuthNames{
    "ok", "resumed", "bad_signature", "bad_hello", "unsupported_version", "timeout", "revoked", "rate_limited", "not_registered"};

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP agent_mesh_relay_";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE agent_mesh_relay_";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void sample(std::string& out, const char* name, const std::string& labels, double value) {
  char number[64];
  std::snprintf(number, sizeof number, "%.17g", value);
  out += "agent_mesh_relay_";
  out += name;
  out += labels;
  out += ' ';
  out += number;
  out += '\n';
}

}  // namespace

void RelayMetrics::observe_latency_ns(std::uint64_t ns) noexcept {
  const double seconds = static_cast<double>(ns) / 1e9;
  std::size_t bucket = 0;
  while (bucket < kLatencyBuckets.size() && seconds > kLatencyBuckets[bucket]) ++bucket;
  latency_buckets[bucket].fetch_add(1, std::memory_order_relaxed);
  latency_count.fetch_add(1, std::memory_order_relaxed);
  latency_sum_ns.fetch_add(ns, std::memory_order_relaxed);
}

std::string RelayMetrics::render() const {
  std::string out;
  out.reserve(4096);
  auto load = [](const auto& a) { return static_cast<double>(a.load(std::memory_order_relaxed)); };
  family(out, "connections", "gauge", "Open WebSocket connections.");
  sample(out, "connections", "", load(connections));
  family(out, "agents_online", "gauge", "Authenticated agents connected.");
  sample(out, "agents_online", "", load(agents_online));
  family(out, "connections_total", "counter", "WebSocket connections accepted.");
  sample(out, "connections_total", "", load(connections_total));
  family(out, "auth_total", "counter", "Authentication outcomes by result.");
  for (std::size_t i = 0; i < kAuthNames.size(); ++i) {
    sample(out, "auth_total", std::string("{result=\"") + kAuthNames[i] + "\"}", load(auth[i]));
  }
  family(out, "envelopes_routed_total", "counter", "Envelopes delivered live.");
  sample(out, "envelopes_routed_total", "", load(envelopes_routed));
  family(out, "envelopes_stored_total", "counter", "Envelopes stored for offline agents (answered queued).");
  sample(out, "envelopes_stored_total", "", load(envelopes_stored));
  family(out, "envelopes_refused_total", "counter", "Envelopes answered undeliverable, by code.");
  for (int i = 0; i < kErrcCount; ++i) {
    const auto code = static_cast<Errc>(i);
    if (!is_undeliverable_code(code)) continue;
    sample(out, "envelopes_refused_total", "{code=\"" + std::string(to_string(code)) + "\"}",
           load(envelopes_refused[static_cast<std::size_t>(i)]));
  }
  family(out, "bytes_received_total", "counter", "WebSocket payload bytes received.");
  sample(out, "bytes_received_total", "", load(bytes_in));
  family(out, "bytes_sent_total", "counter", "WebSocket payload bytes sent.");
  sample(out, "bytes_sent_total", "", load(bytes_out));
  family(out, "slow_consumers_total", "counter", "Connections closed because their write queue overflowed.");
  sample(out, "slow_consumers_total", "", load(write_queue_drops));
  family(out, "store_messages", "gauge", "Envelopes in the offline store.");
  sample(out, "store_messages", "", load(store_depth));
  family(out, "store_bytes", "gauge", "Bytes of envelopes in the offline store.");
  sample(out, "store_bytes", "", load(store_bytes));
  family(out, "routing_latency_seconds", "histogram", "Time from reading an envelope to handing it off or storing it.");
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < kLatencyBuckets.size(); ++i) {
    cumulative += latency_buckets[i].load(std::memory_order_relaxed);
    char le[32];
    std::snprintf(le, sizeof le, "%g", kLatencyBuckets[i]);
    sample(out, "routing_latency_seconds_bucket", std::string("{le=\"") + le + "\"}", static_cast<double>(cumulative));
  }
  cumulative += latency_buckets[kLatencyBuckets.size()].load(std::memory_order_relaxed);
  sample(out, "routing_latency_seconds_bucket", "{le=\"+Inf\"}", static_cast<double>(cumulative));
  sample(out, "routing_latency_seconds_sum", "", load(latency_sum_ns) / 1e9);
  sample(out, "routing_latency_seconds_count", "", load(latency_count));
  return out;
}

}  // namespace agent_mesh::relay
