// Token buckets, keyed limiters and sustained-abuse detection (relay.md "Rate limiting"). Time is
// passed in: no test sleeps.
#include "relay/rate_limiter.hpp"

#include <gtest/gtest.h>

#include <string>

namespace agent_mesh::relay {
namespace {

TEST(TokenBucket, StartsFullAndAllowsTheBurst) {
  TokenBucket bucket(10, 5, 0);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(bucket.try_take(0)) << i;
  EXPECT_FALSE(bucket.try_take(0));
  EXPECT_EQ(bucket.retry_after_ms(0), 100);  // 10 tokens/s: one every 100 ms
}

TEST(TokenBucket, RefillsAtTheRateUpToTheBurst) {
  TokenBucket bucket(10, 5, 0);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(bucket.try_take(0));
  EXPECT_FALSE(bucket.try_take(99));
  EXPECT_TRUE(bucket.try_take(100));
  EXPECT_FALSE(bucket.try_take(100));
  EXPECT_NEAR(bucket.available(10'000), 5.0, 1e-9);  // capped at the burst, not 99 tokens
  EXPECT_TRUE(bucket.is_full(10'000));
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(bucket.try_take(10'000));
  EXPECT_FALSE(bucket.try_take(10'000));
}

TEST(TokenBucket, RetryAfterIsExactlyWhenATakeSucceeds) {
  TokenBucket bucket(3, 1, 1000);  // one token every 333.3 ms
  ASSERT_TRUE(bucket.try_take(1000));
  const std::int64_t wait = bucket.retry_after_ms(1000);
  EXPECT_EQ(wait, 334);
  EXPECT_FALSE(bucket.try_take(1000 + wait - 1));
  EXPECT_EQ(bucket.retry_after_ms(1000 + wait - 1), 1);
  EXPECT_EQ(bucket.retry_after_ms(1000 + wait), 0);
  EXPECT_TRUE(bucket.try_take(1000 + wait));
}

TEST(TokenBucket, FractionalTakesAndTakesAboveTheBurst) {
  TokenBucket bucket(1, 2, 0);
  EXPECT_TRUE(bucket.try_take(0, 1.5));
  EXPECT_FALSE(bucket.try_take(0, 1.0));
  EXPECT_EQ(bucket.retry_after_ms(0, 1.0), 500);
  EXPECT_FALSE(bucket.try_take(1'000'000, 3));  // more than the burst: never
  EXPECT_GE(bucket.retry_after_ms(1'000'000, 3), 1);
}

TEST(TokenBucket, TimeGoingBackwardsGivesNothing) {
  TokenBucket bucket(1000, 1, 5000);
  ASSERT_TRUE(bucket.try_take(5000));
  EXPECT_FALSE(bucket.try_take(0));
  EXPECT_FALSE(bucket.try_take(4000));
  EXPECT_TRUE(bucket.try_take(5001));
}

TEST(TokenBucket, AProductionRateCountsManyMessagesExactly) {
  // relay.md defaults: 500/s, burst 1000. In 10 s a flood gets 1000 + 5000 messages through.
  TokenBucket bucket(500, 1000, 0);
  int allowed = 0;
  for (std::int64_t now = 0; now <= 10'000; ++now) {
    for (int i = 0; i < 5; ++i) allowed += bucket.try_take(now) ? 1 : 0;
  }
  EXPECT_EQ(allowed, 6000);
}

TEST(AbuseDetector, PrematureRefusalsBecomeAbuseAfterTheWindow) {
  AbuseDetector detector(AbuseRule{.after_ms = 10'000, .min_refusals = 100, .calm_ms = 1000});
  EXPECT_TRUE(detector.is_calm(0));
  // Told to wait 1 s each time, the sender comes back every 10 ms.
  EXPECT_FALSE(detector.on_refused(0, 1000));  // the first refusal is never premature
  EXPECT_TRUE(detector.is_calm(0));
  bool abusive = false;
  for (std::int64_t now = 10; now < 10'010; now += 10) abusive = detector.on_refused(now, 1000);
  EXPECT_FALSE(abusive) << "the episode started at 10 ms: not yet 10 s";
  EXPECT_TRUE(detector.on_refused(10'010, 1000));
  EXPECT_FALSE(detector.is_calm(10'500));
  EXPECT_TRUE(detector.is_calm(11'010));
}

TEST(AbuseDetector, ACalmSecondEndsTheEpisode) {
  AbuseDetector detector(AbuseRule{.after_ms = 10'000, .min_refusals = 10, .calm_ms = 1000});
  for (std::int64_t now = 0; now < 9'000; now += 100) ASSERT_FALSE(detector.on_refused(now, 500));
  // A 1 s pause: the next premature refusal starts a new episode, so 10 s must pass again.
  for (std::int64_t now = 9'900 + 1000; now < 20'800; now += 100) EXPECT_FALSE(detector.on_refused(now, 500)) << now;
  EXPECT_TRUE(detector.on_refused(21'000, 500));
}

TEST(AbuseDetector, RefusalsThatHonourRetryAfterAreNeverAbuse) {
  AbuseDetector detector(AbuseRule{.after_ms = 10'000, .min_refusals = 100, .calm_ms = 1000});
  // Refused every 2 ms for a minute, but always exactly when told to retry.
  for (std::int64_t now = 0; now <= 60'000; now += 2) EXPECT_FALSE(detector.on_refused(now, 2)) << now;
  EXPECT_TRUE(detector.is_calm(60'000));
}

TEST(AbuseDetector, FewPrematureRefusalsAreNotAbuse) {
  AbuseDetector detector(AbuseRule{.after_ms = 10'000, .min_refusals = 100, .calm_ms = 1000});
  // Premature every 500 ms: a continuous episode, but 2 per second is under the 10 per second rule.
  for (std::int64_t now = 0; now <= 60'000; now += 500) EXPECT_FALSE(detector.on_refused(now, 1000)) << now;
}

TEST(RateLimiter, KeysHaveSeparateBuckets) {
  RateLimiter<std::string> limiter(RateLimitOptions{.rate_per_s = 1, .burst = 2});
  EXPECT_TRUE(limiter.take("a", 0).allowed());
  EXPECT_TRUE(limiter.take("a", 0).allowed());
  const RateDecision refused = limiter.take("a", 0);
  EXPECT_EQ(refused.verdict, RateVerdict::refused);
  EXPECT_EQ(refused.retry_after_ms, 1000);
  EXPECT_TRUE(limiter.take("b", 0).allowed());
  EXPECT_EQ(limiter.retry_after_ms("a", 0), 1000);
  EXPECT_EQ(limiter.retry_after_ms("b", 0), 0);
  EXPECT_EQ(limiter.retry_after_ms("never seen", 0), 0);
  EXPECT_EQ(limiter.size(), 2U);
  EXPECT_EQ(limiter.take("a", 0).retry_after_ms, 1000);  // refusals take nothing
  EXPECT_TRUE(limiter.take("a", 1000).allowed());
}

TEST(RateLimiter, RetryAfterDoesNotTouchState) {
  RateLimiter<std::string> limiter(RateLimitOptions{.rate_per_s = 1, .burst = 1, .max_keys = 1});
  ASSERT_TRUE(limiter.take("a", 0).allowed());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(limiter.retry_after_ms("a", 0), 1000);
  EXPECT_EQ(limiter.size(), 1U);
}

TEST(RateLimiter, IdleKeysAreDroppedAndComeBackFresh) {
  RateLimiter<std::string> limiter(RateLimitOptions{.rate_per_s = 10, .burst = 1});
  ASSERT_TRUE(limiter.take("a", 0).allowed());
  ASSERT_TRUE(limiter.take("b", 50).allowed());
  EXPECT_EQ(limiter.size(), 2U);
  // At 10'000 both buckets are full again and no abuse episode runs: both are dropped.
  ASSERT_TRUE(limiter.take("c", 10'000).allowed());
  EXPECT_EQ(limiter.size(), 1U);
  EXPECT_EQ(limiter.busy_evictions(), 0U);
  // "a" comes back with a fresh bucket, exactly what it would have had.
  EXPECT_TRUE(limiter.take("a", 10'000).allowed());
  EXPECT_FALSE(limiter.take("a", 10'000).allowed());
}

TEST(RateLimiter, KeyTableIsBoundedLeastRecentlyUsedFirst) {
  RateLimiter<std::string> limiter(RateLimitOptions{.rate_per_s = 1, .burst = 1, .max_keys = 3});
  ASSERT_TRUE(limiter.take("a", 0).allowed());
  ASSERT_TRUE(limiter.take("b", 0).allowed());
  ASSERT_TRUE(limiter.take("c", 0).allowed());
  EXPECT_FALSE(limiter.take("a", 0).allowed());  // "a" is now the most recently used
  ASSERT_TRUE(limiter.take("d", 0).allowed());   // table full, nothing idle: "b" goes
  EXPECT_EQ(limiter.size(), 3U);
  EXPECT_EQ(limiter.busy_evictions(), 1U);
  EXPECT_EQ(limiter.retry_after_ms("b", 0), 0);     // forgotten
  EXPECT_EQ(limiter.retry_after_ms("a", 0), 1000);  // kept
  EXPECT_EQ(limiter.retry_after_ms("c", 0), 1000);
  EXPECT_EQ(limiter.retry_after_ms("d", 0), 1000);
  limiter.forget("a");
  EXPECT_EQ(limiter.size(), 2U);
  EXPECT_TRUE(limiter.take("a", 0).allowed());
}

TEST(RateLimiter, ManyKeysStayWithinTheBound) {
  RateLimiter<std::string> limiter(RateLimitOptions{.rate_per_s = 1, .burst = 1, .max_keys = 100});
  for (int i = 0; i < 10'000; ++i) ASSERT_TRUE(limiter.take("ip" + std::to_string(i), 0).allowed());
  EXPECT_EQ(limiter.size(), 100U);
  EXPECT_EQ(limiter.busy_evictions(), 9'900U);
}

TEST(RateLimiter, SustainedAbuseIsReportedForClosing4008) {
  RateLimiter<std::string> limiter(RateLimitOptions{
      .rate_per_s = 500, .burst = 1000, .max_keys = 10, .abuse = {.after_ms = 10'000, .min_refusals = 100, .calm_ms = 1000}});
  std::int64_t abusive_at = -1;
  // Eight times the allowed rate (8 messages every millisecond), ignoring every retry_after_ms.
  for (std::int64_t now = 0; now <= 30'000 && abusive_at < 0; ++now) {
    for (int i = 0; i < 8 && abusive_at < 0; ++i) {
      if (limiter.take("flooder", now).verdict == RateVerdict::abusive) abusive_at = now;
    }
  }
  // The burst of 1000 lasts about 133 ms, then refusals come several times per announced wait;
  // 10 s of that is abuse.
  ASSERT_GT(abusive_at, 0);
  EXPECT_GE(abusive_at, 10'100);
  EXPECT_LE(abusive_at, 10'200);
  // A neighbour at the allowed rate is never refused.
  for (std::int64_t now = 0; now <= 20'000; now += 2) EXPECT_TRUE(limiter.take("polite", now).allowed());
}

TEST(RateLimiter, HonouringRetryAfterIsNeverAbuse) {
  RateLimiter<std::string> limiter(RateLimitOptions{
      .rate_per_s = 500, .burst = 1000, .max_keys = 10, .abuse = {.after_ms = 10'000, .min_refusals = 100, .calm_ms = 1000}});
  std::int64_t now = 0;
  int refusals = 0;
  // Unbounded demand: send at once after every success, wait retry_after_ms after every refusal.
  while (now < 60'000) {
    const RateDecision decision = limiter.take("bulk", now);
    ASSERT_NE(decision.verdict, RateVerdict::abusive) << now;
    if (decision.allowed()) continue;
    ++refusals;
    ASSERT_GE(decision.retry_after_ms, 1);
    now += decision.retry_after_ms;
  }
  EXPECT_GT(refusals, 10'000);
}

TEST(IpRateKey, NormalisesAddressesAndGroupsIpv6By64) {
  EXPECT_EQ(ip_rate_key("192.0.2.7"), "192.0.2.7");
  EXPECT_EQ(ip_rate_key("::ffff:192.0.2.7"), "192.0.2.7");
  EXPECT_EQ(ip_rate_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::/64");
  EXPECT_EQ(ip_rate_key("2001:db8:1:2::1"), ip_rate_key("2001:db8:1:2:ffff::9"));
  EXPECT_NE(ip_rate_key("2001:db8:1:2::1"), ip_rate_key("2001:db8:1:3::1"));
  EXPECT_EQ(ip_rate_key("[2001:db8::1]"), "2001:db8::/64");
  EXPECT_EQ(ip_rate_key("fe80::1%eth0"), "fe80::/64");
  EXPECT_EQ(ip_rate_key("not an ip"), "not an ip");
}

}  // namespace
}  // namespace agent_mesh::relay
