#include "registry/registry_metrics.hpp"

#include <cstdio>

#include "core/prometheus_text.hpp"

namespace agent_mesh::registry {
namespace {

double load(const auto& counter) { return static_cast<double>(counter.load(std::memory_order_relaxed)); }

}  // namespace

void RegistryMetrics::count_request(int status) noexcept {
  const int index = status / 100 - 1;
  if (index >= 0 && index < static_cast<int>(requests_by_class.size())) {
    requests_by_class[static_cast<std::size_t>(index)].fetch_add(1, std::memory_order_relaxed);
  }
}

std::string RegistryMetrics::render(const StatusCounts& counts) const {
  PrometheusText text("agent_mesh_registry_");
  text.family("http_requests_total", "counter", "HTTP requests answered, by status class.");
  static constexpr std::array<const char*, 5> kClasses{"1xx", "2xx", "3xx", "4xx", "5xx"};
  for (std::size_t i = 0; i < kClasses.size(); ++i) {
    text.sample("http_requests_total", std::string("{code=\"") + kClasses[i] + "\"}", load(requests_by_class[i]));
  }
  text.family("http_request_duration_seconds", "histogram", "Time to answer a request (long polls excluded).");
  duration.write(text, "http_request_duration_seconds");
  text.family("agent_signatures_refused_total", "counter", "Agent-signed requests refused (bad, expired or replayed).");
  text.sample("agent_signatures_refused_total", "", load(agent_signatures_refused));
  text.family("tokens_refused_total", "counter", "Bearer tokens refused (unknown, revoked or expired).");
  text.sample("tokens_refused_total", "", load(tokens_refused));
  text.family("acl_sync_waiting", "gauge", "ACL sync long polls waiting for a change.");
  text.sample("acl_sync_waiting", "", load(sync_waiting));
  text.family("revocations_pushed_total", "counter", "Revocations pushed to relays.");
  text.sample("revocations_pushed_total", "", load(revocations_pushed));
  text.family("revocation_push_failures_total", "counter", "Revocation pushes that failed.");
  text.sample("revocation_push_failures_total", "", load(revocation_push_failures));
  text.family("users", "gauge", "Registered users.");
  text.sample("users", "", static_cast<double>(counts.users));
  text.family("groups", "gauge", "Groups, personal ones included.");
  text.sample("groups", "", static_cast<double>(counts.groups));
  text.family("agents", "gauge", "Registered agent cards.");
  text.sample("agents", "", static_cast<double>(counts.agents));
  text.family("acl_rules", "gauge", "ACL rules.");
  text.sample("acl_rules", "", static_cast<double>(counts.rules));
  text.family("revocations", "gauge", "Stored revocations.");
  text.sample("revocations", "", static_cast<double>(counts.revocations));
  return text.take();
}

}  // namespace agent_mesh::registry
