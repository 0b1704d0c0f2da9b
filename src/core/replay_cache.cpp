#include "agent_mesh/replay_cache.hpp"

#include <algorithm>

namespace agent_mesh {

ReplayCache::ReplayCache(Options options) : options_(options) {
  options_.max_per_sender = std::max<std::size_t>(options_.max_per_sender, 1);
  options_.max_total = std::max<std::size_t>(options_.max_total, 1);
}

void ReplayCache::evict(const Key& key, bool erase_empty_sender) {
  auto sender = senders_.find(key.sender);
  if (sender != senders_.end()) {
    sender->second.ids.erase(key.id);
    sender->second.by_time.erase({key.timestamp, key.id});
    // A sender whose entries are all gone has no floor worth keeping: its floor is at most the
    // timestamp of its oldest remaining entry, so once those have expired the floor is below the
    // freshness horizon, and entries evicted for the global bound are covered by the global floor.
    if (erase_empty_sender && sender->second.ids.empty()) senders_.erase(sender);
  }
  by_time_.erase(key);
}

void ReplayCache::expire(std::int64_t now_ms) {
  // An envelope older than now − max_age_ms fails freshness anyway, so its ID need not be kept.
  // Floors are never reset: a floor below the horizon only refuses what freshness refuses too.
  const std::int64_t horizon = now_ms - options_.max_age_ms;
  while (!by_time_.empty() && by_time_.begin()->timestamp < horizon) {
    const Key oldest = *by_time_.begin();
    evict(oldest, true);
  }
}

Status ReplayCache::remember(const AgentId& sender, const Uuid& id, std::int64_t timestamp, std::int64_t now_ms) {
  expire(now_ms);  // walks only what is due
  if (timestamp <= global_floor_) {
    return fail(Errc::expired, "envelope is older than the replay window kept under load; resend a fresh one");
  }
  SenderState& state = senders_[sender];
  if (timestamp <= state.floor) {
    return fail(Errc::expired, "envelope is older than this sender's replay window; resend a fresh one");
  }
  if (state.ids.contains(id)) return fail(Errc::bad_request, "envelope ID already seen from this sender (replay)");

  if (state.ids.size() >= options_.max_per_sender) {
    const auto [oldest_time, oldest_id] = *state.by_time.begin();
    state.floor = std::max(state.floor, oldest_time);
    evict(Key{oldest_time, sender, oldest_id}, false);  // keep the raised floor
    if (timestamp <= state.floor) {
      return fail(Errc::expired, "envelope is older than this sender's replay window; resend a fresh one");
    }
  }
  if (by_time_.size() >= options_.max_total) {
    const Key oldest = *by_time_.begin();
    global_floor_ = std::max(global_floor_, oldest.timestamp);
    evict(oldest, true);
    if (timestamp <= global_floor_) {
      return fail(Errc::expired, "envelope is older than the replay window kept under load; resend a fresh one");
    }
  }
  SenderState& current = senders_[sender];  // evict() may have erased the entry
  current.ids.emplace(id, timestamp);
  current.by_time.emplace(timestamp, id);
  by_time_.insert(Key{timestamp, sender, id});
  return {};
}

}  // namespace agent_mesh
