#include "relay_metrics.hpp"

#include <cstdio>

#include "core/prometheus_text.hpp"

namespace agent_mesh::relay {
namespace {

constexpr std::array<const char*, static_cast<std::size_t>(AuthResult::count)> kAuthNames{
    "ok", "resumed", "bad_signature", "bad_hello", "unsupported_version", "timeout", "revoked", "rate_limited", "not_registered"};

}  // namespace

std::string RelayMetrics::render() const {
  PrometheusText text("agent_mesh_relay_");
  auto load = [](const auto& a) { return static_cast<double>(a.load(std::memory_order_relaxed)); };
  text.family("connections", "gauge", "Open WebSocket connections.");
  text.sample("connections", "", load(connections));
  text.family("agents_online", "gauge", "Authenticated agents connected.");
  text.sample("agents_online", "", load(agents_online));
  text.family("connections_total", "counter", "WebSocket connections accepted.");
  text.sample("connections_total", "", load(connections_total));
  text.family("auth_total", "counter", "Authentication outcomes by result.");
  for (std::size_t i = 0; i < kAuthNames.size(); ++i) {
    text.sample("auth_total", std::string("{result=\"") + kAuthNames[i] + "\"}", load(auth[i]));
  }
  text.family("envelopes_routed_total", "counter", "Envelopes delivered live.");
  text.sample("envelopes_routed_total", "", load(envelopes_routed));
  text.family("envelopes_stored_total", "counter", "Envelopes stored for offline agents (answered queued).");
  text.sample("envelopes_stored_total", "", load(envelopes_stored));
  text.family("envelopes_refused_total", "counter", "Envelopes answered undeliverable, by code.");
  for (int i = 0; i < kErrcCount; ++i) {
    const auto code = static_cast<Errc>(i);
    if (!is_undeliverable_code(code)) continue;
    text.sample("envelopes_refused_total", "{code=\"" + std::string(to_string(code)) + "\"}",
           load(envelopes_refused[static_cast<std::size_t>(i)]));
  }
  text.family("bytes_received_total", "counter", "WebSocket payload bytes received.");
  text.sample("bytes_received_total", "", load(bytes_in));
  text.family("bytes_sent_total", "counter", "WebSocket payload bytes sent.");
  text.sample("bytes_sent_total", "", load(bytes_out));
  text.family("slow_consumers_total", "counter", "Connections closed because their write queue overflowed.");
  text.sample("slow_consumers_total", "", load(write_queue_drops));
  text.family("store_messages", "gauge", "Envelopes in the offline store.");
  text.sample("store_messages", "", load(store_depth));
  text.family("store_bytes", "gauge", "Bytes of envelopes in the offline store.");
  text.sample("store_bytes", "", load(store_bytes));
  text.family("routing_latency_seconds", "histogram", "Time from reading an envelope to handing it off or storing it.");
  latency.write(text, "routing_latency_seconds");
  return text.take();
}

}  // namespace agent_mesh::relay
