// Bounded memory of signed-envelope IDs per sender (protocol §3: remembered 12 min, duplicates
// dropped). Pure: time is passed in.
//
// An entry is kept while its envelope could still pass the freshness check, i.e. until its
// timestamp is older than now − max_age_ms. Memory is bounded per sender and in total; when a bound
// is hit the entry with the oldest timestamp is evicted and a floor rises to its timestamp:
// envelopes at or below the floor are refused (Errc::expired), so an evicted ID can never be
// replayed. Under a flood a sender's older envelopes are refused rather than risk a replay.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <unordered_map>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/identity.hpp"
#include "agent_mesh/limits.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh {

class ReplayCache {
 public:
  struct Options {
    std::int64_t max_age_ms = limits::default_max_age_ms;
    std::size_t max_per_sender = limits::replay_cache_per_sender;
    std::size_t max_total = limits::replay_cache_total;
  };

  ReplayCache() : ReplayCache(Options{}) {}
  explicit ReplayCache(Options options);

  // Records (sender, id) seen with `timestamp`. Errors: Errc::bad_request for a duplicate ID,
  // Errc::expired for a timestamp at or below a floor (see above).
  [[nodiscard]] Status remember(const AgentId& sender, const Uuid& id, std::int64_t timestamp,
                                std::int64_t now_ms);
  // Drops entries too old to pass freshness any more; remember() calls it too.
  void expire(std::int64_t now_ms);

  [[nodiscard]] std::size_t size() const noexcept { return by_time_.size(); }

 private:
  struct Key {
    std::int64_t timestamp;
    AgentId sender;
    Uuid id;
    friend auto operator<=>(const Key&, const Key&) = default;
  };
  struct SenderState {
    std::map<Uuid, std::int64_t> ids;                  // id -> timestamp
    std::set<std::pair<std::int64_t, Uuid>> by_time;  // (timestamp, id), oldest first
    std::int64_t floor = INT64_MIN;
  };
  void evict(const Key& key, bool erase_empty_sender);

  Options options_;
  std::set<Key> by_time_;  // every entry, oldest first
  std::unordered_map<AgentId, SenderState> senders_;
  std::int64_t global_floor_ = INT64_MIN;
};

}  // namespace agent_mesh
