// relay.md "Gate" for a relay beside a standalone registry: with `registry_url` set, only agents
// the registry knows (a card, no effective revocation) may authenticate. The relay asks
// `GET <registry_url>/api/v1/agents/{agent_id}` with `registry_token_file`'s admin token, off the
// network threads, and caches the answer: 60 s for "registered" (relay.md), 5 s for "not
// registered" (so a freshly registered agent is not locked out for a minute). When the registry
// cannot be asked, the login is refused (fail closed) and nothing is cached.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "agent_mesh/identity.hpp"

namespace agent_mesh::relay {

class RegistryGate {
 public:
  struct Options {
    std::string registry_url;  // http(s)://host[:port], no trailing slash needed
    std::string token;         // the registry's admin token
    std::chrono::milliseconds registered_ttl{60'000};
    std::chrono::milliseconds unregistered_ttl{5'000};
    std::chrono::milliseconds timeout{5'000};
    std::size_t max_cached = 100'000;
    std::size_t max_queued = 10'000;  // logins waiting for the registry; beyond: refused
    std::size_t threads = 2;
  };
  // The verdict for one agent: registered (true), or refused with a reason for the log.
  using Done = std::function<void(bool registered, std::string reason)>;

  explicit RegistryGate(Options options);
  ~RegistryGate();
  RegistryGate(const RegistryGate&) = delete;
  RegistryGate& operator=(const RegistryGate&) = delete;

  // Calls `done` once: at once from the cache, otherwise later from a gate thread.
  void check(const AgentId& agent, Done done);

 private:
  struct Cached {
    bool registered = false;
    std::chrono::steady_clock::time_point until;
  };
  struct Job {
    AgentId agent;
    Done done;
  };
  void work();
  void ask(const Job& job);

  Options options_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> jobs_;
  std::unordered_map<std::string, Cached> cache_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace agent_mesh::relay
