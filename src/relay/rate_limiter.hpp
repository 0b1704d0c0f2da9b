// Rate limiting (relay.md "Rate limiting"): token buckets, keyed by agent ID or source IP, with a
// bounded number of keys and detection of sustained abuse. Sans-IO: every call takes the time
// (milliseconds on a monotonic clock); nothing here reads a clock or sleeps. Not synchronised: each
// limiter is owned by one thread or strand (docs/design.md "Threading plan").
//
// How the relay uses them (relay.md defaults in relay_config.hpp):
//   per agent, messages:   RateLimiter<AgentId>({.rate_per_s = rate_limit, .burst = rate_burst}),
//                          take() per envelope before anything costly; refused → `undeliverable
//                          rate_limited` with retry_after_ms; RateVerdict::abusive → close 4008.
//                          Keyed by agent, not by connection, so reconnecting buys no fresh burst.
//   per IP, connections:   RateLimiter<std::string>({.rate_per_s = ip_connect_rate,
//                          .burst = ip_connect_rate}), take() per accepted connection, keyed by
//                          ip_rate_key(client address).
//   per IP, failed auths:  RateLimiter<std::string>({.rate_per_s = ip_auth_failures / 60,
//                          .burst = ip_auth_failures}), take() per failed authentication;
//                          retry_after_ms(key) > 0 on a new connection → refuse it before the
//                          challenge.
#pragma once

#include <climits>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "agent_mesh/bytes.hpp"
#include "agent_mesh/identity.hpp"

namespace agent_mesh::relay {

// Keys come from clients (agent IDs, IP addresses), so string keys are hashed with the keyed
// SipHash of identity.hpp rather than std::hash: nobody can grind keys into one bucket. AgentId's
// std::hash is keyed already.
template <class Key>
struct RateKeyHash : std::hash<Key> {};
template <>
struct RateKeyHash<std::string> {
  std::size_t operator()(const std::string& key) const noexcept { return keyed_hash(as_bytes(key)); }
};

// `rate_per_s` tokens per second accumulate up to `burst`; a bucket starts full. A take of more
// than `burst` tokens can never succeed.
class TokenBucket {
 public:
  // Preconditions (checked by config validation): rate_per_s > 0, burst > 0.
  TokenBucket(double rate_per_s, double burst, std::int64_t now_ms) noexcept;

  // Takes n tokens if they are there. Time going backwards counts as no time passing.
  [[nodiscard]] bool try_take(std::int64_t now_ms, double n = 1) noexcept;
  // Milliseconds until try_take(now_ms + result, n) succeeds if nothing else is taken: 0 when it
  // would succeed now, otherwise at least 1. For n > burst, the time until the bucket is full.
  [[nodiscard]] std::int64_t retry_after_ms(std::int64_t now_ms, double n = 1) const noexcept;
  [[nodiscard]] double available(std::int64_t now_ms) const noexcept;
  // A full bucket behaves exactly like a fresh one, so an idle key whose bucket is full can be
  // forgotten without giving its owner anything.
  [[nodiscard]] bool is_full(std::int64_t now_ms) const noexcept;

 private:
  void refill(std::int64_t now_ms) noexcept;

  double rate_per_ms_;
  double burst_;
  double tokens_;
  std::int64_t updated_ms_;
};

// When refusals become "sustained abuse" (relay.md: "sustained abuse closes with 4008").
//
// Every refusal tells the sender when to retry (retry_after_ms). A sender that honours it is
// refused at most about once per allowed message, however much it wants to send, and costs the
// relay little. A refusal that arrives before the retry time announced by the previous one is
// *premature*: the sender is ignoring the answer. An episode of abuse starts with a premature
// refusal and lasts while premature refusals keep coming less than `calm_ms` apart. Abuse: an
// episode at least `after_ms` long whose premature refusals average at least `min_refusals` per
// `after_ms`. So a sender honouring retry_after_ms is never closed, whatever its demand, nor is
// one that slips now and then; one that floods on for 10 s is.
struct AbuseRule {
  std::int64_t after_ms = 10000;     // 10 s of continuous flooding
  std::uint64_t min_refusals = 100;  // per after_ms: ≥ 10 premature refusals/s on average
  std::int64_t calm_ms = 1000;       // a 1 s pause without premature refusals ends the episode
};

class AbuseDetector {
 public:
  explicit AbuseDetector(AbuseRule rule = {}) noexcept : rule_(rule) {}

  // Records a refusal answered with retry_after_ms; true once the current episode counts as
  // sustained abuse (on that refusal and every premature one after it until the episode ends).
  [[nodiscard]] bool on_refused(std::int64_t now_ms, std::int64_t retry_after_ms) noexcept;
  // True when no episode is running: the detector is then equivalent to a fresh one.
  [[nodiscard]] bool is_calm(std::int64_t now_ms) const noexcept;

 private:
  AbuseRule rule_;
  std::int64_t retry_at_ms_ = INT64_MIN;  // when the last refusal said to retry
  std::int64_t episode_start_ms_ = 0;
  std::int64_t last_premature_ms_ = 0;
  std::uint64_t premature_refusals_ = 0;  // in the current episode; 0 = no episode
};

enum class RateVerdict : std::uint8_t {
  allowed,
  refused,  // answer `undeliverable rate_limited` with retry_after_ms
  abusive,  // refused, and sustained abuse: close with 4008
};

struct RateDecision {
  RateVerdict verdict = RateVerdict::allowed;
  std::int64_t retry_after_ms = 0;  // 0 when allowed
  [[nodiscard]] bool allowed() const noexcept { return verdict == RateVerdict::allowed; }
};

struct RateLimitOptions {
  double rate_per_s = 1;
  double burst = 1;
  // Memory bound. Idle keys (bucket full, no abuse episode) are dropped first, which changes
  // nothing; past the bound the least recently used key is dropped even if busy (counted in
  // busy_evictions()), so size it above the number of keys active at once.
  std::size_t max_keys = 100000;
  AbuseRule abuse{};
};

// Token buckets by key with a bounded, least-recently-used key table.
template <class Key, class Hash = RateKeyHash<Key>, class Equal = std::equal_to<Key>>
class RateLimiter {
 public:
  explicit RateLimiter(RateLimitOptions options) : options_(options) {}

  // Takes n tokens from key's bucket (a new key starts with a full one).
  [[nodiscard]] RateDecision take(const Key& key, std::int64_t now_ms, double n = 1) {
    drop_idle(now_ms);
    auto found = index_.find(key);
    if (found == index_.end()) {
      if (index_.size() >= options_.max_keys && !entries_.empty()) {
        index_.erase(entries_.back().key);
        entries_.pop_back();
        ++busy_evictions_;
      }
      entries_.push_front(Entry{key, TokenBucket(options_.rate_per_s, options_.burst, now_ms),
                                AbuseDetector(options_.abuse)});
      found = index_.emplace(key, entries_.begin()).first;
    } else {
      entries_.splice(entries_.begin(), entries_, found->second);
    }
    Entry& entry = *found->second;
    if (entry.bucket.try_take(now_ms, n)) return {};
    RateDecision decision;
    decision.retry_after_ms = entry.bucket.retry_after_ms(now_ms, n);
    decision.verdict =
        entry.abuse.on_refused(now_ms, decision.retry_after_ms) ? RateVerdict::abusive : RateVerdict::refused;
    return decision;
  }

  // What take() would answer for retry_after_ms, without taking or touching anything: 0 when n
  // tokens are there (always for an unknown key).
  [[nodiscard]] std::int64_t retry_after_ms(const Key& key, std::int64_t now_ms, double n = 1) const {
    const auto found = index_.find(key);
    return found == index_.end() ? 0 : found->second->bucket.retry_after_ms(now_ms, n);
  }

  // Drops a key's state (e.g. its agent's last connection closed and its bucket is full).
  void forget(const Key& key) {
    if (const auto found = index_.find(key); found != index_.end()) {
      entries_.erase(found->second);
      index_.erase(found);
    }
  }

  [[nodiscard]] std::size_t size() const noexcept { return index_.size(); }
  // Keys dropped while not idle because the table was full: non-zero means max_keys is too small
  // for the traffic (or someone cycles through many keys). For /metrics.
  [[nodiscard]] std::uint64_t busy_evictions() const noexcept { return busy_evictions_; }

 private:
  struct Entry {
    Key key;
    TokenBucket bucket;
    AbuseDetector abuse;
  };

  // The least recently used entries are the likeliest to be idle; stop at the first busy one, so
  // each call costs O(1) amortised (every entry is dropped at most once).
  void drop_idle(std::int64_t now_ms) {
    while (!entries_.empty() && entries_.back().bucket.is_full(now_ms) && entries_.back().abuse.is_calm(now_ms)) {
      index_.erase(entries_.back().key);
      entries_.pop_back();
    }
  }

  RateLimitOptions options_;
  std::list<Entry> entries_;  // most recently used first
  std::unordered_map<Key, typename std::list<Entry>::iterator, Hash, Equal> index_;
  std::uint64_t busy_evictions_ = 0;
};

// The key for per-IP limits: the canonical IPv4 address (an IPv4-mapped IPv6 address counts as
// IPv4), or the /64 prefix of an IPv6 address ("2001:db8:1:2::/64"), since one IPv6 host
// usually holds a whole /64 and could otherwise take a fresh bucket per address. Text that is not
// an IP address is returned unchanged.
[[nodiscard]] std::string ip_rate_key(std::string_view ip);

}  // namespace agent_mesh::relay
