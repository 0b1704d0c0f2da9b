#include "registry/registry_metrics.hpp"

#include <cstdio>

namespace agent_mesh::registry {
namespace {

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP agent_mesh_registry_";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE agent_mesh_registry_";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void sample(std::string& out, const char* name, const std::string& labels, double value) {
  char number[64];
  std::snprintf(number, sizeof number, "%.17g", value);
  out += "agent_mesh_registry_";
  out += name;
  out += labels;
  out += ' ';
  out += number;
  out += '\n';
}

double load(const auto& counter) { return static_cast<double>(counter.load(std::memory_order_relaxed)); }

}  // namespace

void RegistryMetrics::count_request(int status) noexcept {
  const int index = status / 100 - 1;
  if (index >= 0 && index < static_cast<int>(requests_by_class.size())) {
    requests_by_class[static_cast<std::size_t>(index)].fetch_add(1, std::memory_order_relaxed);
  }
}

void RegistryMetrics::observe_duration_ns(std::uint64_t ns) noexcept {
  const double seconds = static_cast<double>(ns) / 1e9;
  std::size_t bucket = 0;
  while (bucket < kBuckets.size() && seconds > kBuckets[bucket]) ++bucket;
  duration_buckets[bucket].fetch_add(1, std::memory_order_relaxed);
  duration_count.fetch_add(1, std::memory_order_relaxed);
  duration_sum_ns.fetch_add(ns, std::memory_order_relaxed);
}

std::string RegistryMetrics::render(const StatusCounts& counts) const {
  std::string out;
  out.reserve(2048);
  family(out, "http_requests_total", "counter", "HTTP requests answered, by status class.");
  static constexpr std::array<const char*, 5> kClasses{"1xx", "2xx", "3xx", "4xx", "5xx"};
  for (std::size_t i = 0; i < kClasses.size(); ++i) {
    sample(out, "http_requests_total", std::string("{code=\"") + kClasses[i] + "\"}", load(requests_by_class[i]));
  }
  family(out, "http_request_duration_seconds", "histogram", "Time to answer a request (long polls excluded).");
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < kBuckets.size(); ++i) {
    cumulative += duration_buckets[i].load(std::memory_order_relaxed);
    char le[32];
    std::snprintf(le, sizeof le, "%g", kBuckets[i]);
    sample(out, "http_request_duration_seconds_bucket", std::string("{le=\"") + le + "\"}", static_cast<double>(cumulative));
  }
  cumulative += duration_buckets[kBuckets.size()].load(std::memory_order_relaxed);
  sample(out, "http_request_duration_seconds_bucket", "{le=\"+Inf\"}", static_cast<double>(cumulative));
  sample(out, "http_request_duration_seconds_sum", "", load(duration_sum_ns) / 1e9);
  sample(out, "http_request_duration_seconds_count", "", load(duration_count));
  family(out, "agent_signatures_refused_total", "counter", "Agent-signed requests refused (bad, expired or replayed).");
  sample(out, "agent_signatures_refused_total", "", load(agent_signatures_refused));
  family(out, "tokens_refused_total", "counter", "Bearer tokens refused (unknown, revoked or expired).");
  sample(out, "tokens_refused_total", "", load(tokens_refused));
  family(out, "acl_sync_waiting", "gauge", "ACL sync long polls waiting for a change.");
  sample(out, "acl_sync_waiting", "", load(sync_waiting));
  family(out, "revocations_pushed_total", "counter", "Revocations pushed to relays.");
  sample(out, "revocations_pushed_total", "", load(revocations_pushed));
  family(out, "revocation_push_failures_total", "counter", "Revocation pushes that failed.");
  sample(out, "revocation_push_failures_total", "", load(revocation_push_failures));
  family(out, "users", "gauge", "Registered users.");
  sample(out, "users", "", static_cast<double>(counts.users));
  family(out, "groups", "gauge", "Groups, personal ones included.");
  sample(out, "groups", "", static_cast<double>(counts.groups));
  family(out, "agents", "gauge", "Registered agent cards.");
  sample(out, "agents", "", static_cast<double>(counts.agents));
  family(out, "acl_rules", "gauge", "ACL rules.");
  sample(out, "acl_rules", "", static_cast<double>(counts.rules));
  family(out, "revocations", "gauge", "Stored revocations.");
  sample(out, "revocations", "", static_cast<double>(counts.revocations));
  return out;
}

}  // namespace agent_mesh::registry
