#include "relay/registry_gate.hpp"

#include "net/http_client.hpp"

namespace agent_mesh::relay {

RegistryGate::RegistryGate(Options options) : options_(std::move(options)) {
  while (!options_.registry_url.empty() && options_.registry_url.back() == '/') options_.registry_url.pop_back();
  for (std::size_t i = 0; i < options_.threads; ++i) threads_.emplace_back([this] { work(); });
}

RegistryGate::~RegistryGate() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& thread : threads_) thread.join();
  // Logins still waiting are refused rather than left hanging.
  for (auto& job : jobs_) job.done(false, "relay stopping");
}

void RegistryGate::check(const AgentId& agent, Done done) {
  const auto now = std::chrono::steady_clock::now();
  {
    std::unique_lock lock(mutex_);
    if (auto it = cache_.find(agent.str()); it != cache_.end() && it->second.until > now) {
      const bool registered = it->second.registered;
      lock.unlock();
      done(registered, registered ? "" : "not registered with the registry (cached)");
      return;
    }
    if (stopping_ || jobs_.size() >= options_.max_queued) {
      lock.unlock();
      done(false, "too many logins waiting for the registry");
      return;
    }
    jobs_.push_back({agent, std::move(done)});
  }
  wake_.notify_one();
}

void RegistryGate::work() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    ask(job);
  }
}

void RegistryGate::ask(const Job& job) {
  net::HttpRequest request;
  request.method = "GET";
  request.url = options_.registry_url + "/api/v1/agents/" + job.agent.str();
  request.headers.push_back({"Authorization", "Bearer " + options_.token});
  request.timeout = options_.timeout;
  request.max_response_body_bytes = 512 * 1024;
  auto response = net::http_request(request);
  if (!response) {
    job.done(false, "registry unreachable: " + response.error().message);
    return;
  }
  if (response->status != 200 && response->status != 404) {
    job.done(false, "registry answered " + std::to_string(response->status));
    return;
  }
  const bool registered = response->status == 200;
  {
    std::lock_guard lock(mutex_);
    if (cache_.size() >= options_.max_cached) {
      // Drop what has expired; if that is not enough, start over (bounded memory beats hit rate).
      const auto now = std::chrono::steady_clock::now();
      std::erase_if(cache_, [now](const auto& entry) { return entry.second.until <= now; });
      if (cache_.size() >= options_.max_cached) cache_.clear();
    }
    cache_[job.agent.str()] = {registered, std::chrono::steady_clock::now() +
                                               (registered ? options_.registered_ttl : options_.unregistered_ttl)};
  }
  job.done(registered, registered ? "" : "not registered with the registry (or revoked there)");
}

}  // namespace agent_mesh::relay
