// reconnect_delay: full jitter, a uniform draw in [0, min(max, initial * 2^attempt)].
#include <gtest/gtest.h>

#include <chrono>
#include <limits>

#include "sdk/relay_link.hpp"

namespace agent_mesh::sdk {
namespace {

using std::chrono::milliseconds;

// unit → 1 gives the ceiling (the draw is in [0, 1), so it gets arbitrarily close to it).
constexpr double kAlmostOne = 1.0 - 1e-12;

TEST(ReconnectDelay, UnitZeroIsZero) {
  for (unsigned attempt : {0u, 1u, 5u, 40u, 1000u}) {
    EXPECT_EQ(reconnect_delay(milliseconds(200), milliseconds(10000), attempt, 0.0), milliseconds(0)) << attempt;
  }
}

TEST(ReconnectDelay, CeilingDoublesPerAttemptUntilTheCap) {
  EXPECT_EQ(reconnect_delay(milliseconds(200), milliseconds(10000), 0, kAlmostOne), milliseconds(199));
  EXPECT_EQ(reconnect_delay(milliseconds(200), milliseconds(10000), 1, kAlmostOne), milliseconds(399));
  EXPECT_EQ(reconnect_delay(milliseconds(200), milliseconds(10000), 3, kAlmostOne), milliseconds(1599));
  // 200 * 2^6 = 12 800 > 10 000: capped.
  EXPECT_EQ(reconnect_delay(milliseconds(200), milliseconds(10000), 6, kAlmostOne), milliseconds(9999));
  EXPECT_EQ(reconnect_delay(milliseconds(200), milliseconds(10000), 6, 1.0), milliseconds(10000));
  EXPECT_EQ(reconnect_delay(milliseconds(200), milliseconds(10000), 2, 0.5), milliseconds(400));
}

TEST(ReconnectDelay, StaysWithinBoundsForEveryDraw) {
  const milliseconds initial(150), max(7000);
  for (unsigned attempt = 0; attempt < 80; ++attempt) {
    const auto ceiling = std::min<std::int64_t>(max.count(), attempt < 40 ? initial.count() << attempt : max.count());
    for (double unit = 0.0; unit < 1.0; unit += 0.0625) {
      const auto delay = reconnect_delay(initial, max, attempt, unit);
      EXPECT_GE(delay.count(), 0) << attempt << " " << unit;
      EXPECT_LE(delay.count(), ceiling) << attempt << " " << unit;
    }
  }
}

TEST(ReconnectDelay, CeilingNeverDecreases) {
  const milliseconds initial(37), max(60000);
  std::int64_t previous = 0;
  for (unsigned attempt = 0; attempt < 200; ++attempt) {
    const auto ceiling = reconnect_delay(initial, max, attempt, kAlmostOne).count();
    EXPECT_GE(ceiling, previous) << attempt;
    previous = ceiling;
  }
  EXPECT_EQ(previous, max.count() - 1);
}

TEST(ReconnectDelay, HugeAttemptsAndDurationsDoNotOverflow) {
  const milliseconds huge(std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(reconnect_delay(milliseconds(200), milliseconds(10000), std::numeric_limits<unsigned>::max(), 1.0),
            milliseconds(10000));
  EXPECT_EQ(reconnect_delay(milliseconds(200), milliseconds(10000), 63, 1.0), milliseconds(10000));
  EXPECT_EQ(reconnect_delay(milliseconds(200), milliseconds(10000), 64, 1.0), milliseconds(10000));
  // A cap this large is never reached by the double product without exceeding int64: it stays positive.
  const auto big = reconnect_delay(huge, huge, std::numeric_limits<unsigned>::max(), 0.5);
  EXPECT_GT(big.count(), 0);
  const auto small = reconnect_delay(milliseconds(1), huge, 62, kAlmostOne);
  EXPECT_GT(small.count(), 0);
}

TEST(ReconnectDelay, DegenerateInputsGiveZeroOrTheCap) {
  EXPECT_EQ(reconnect_delay(milliseconds(0), milliseconds(10000), 10, 0.9), milliseconds(0));
  EXPECT_EQ(reconnect_delay(milliseconds(200), milliseconds(0), 10, 0.9), milliseconds(0));
  EXPECT_EQ(reconnect_delay(milliseconds(-5), milliseconds(10000), 3, 0.9), milliseconds(0));
  // Out-of-range draws are clamped, NaN counts as 0.
  EXPECT_EQ(reconnect_delay(milliseconds(200), milliseconds(10000), 0, -1.0), milliseconds(0));
  EXPECT_EQ(reconnect_delay(milliseconds(200), milliseconds(10000), 0, 7.0), milliseconds(200));
  EXPECT_EQ(reconnect_delay(milliseconds(200), milliseconds(10000), 0, std::numeric_limits<double>::quiet_NaN()),
            milliseconds(0));
}

}  // namespace
}  // namespace agent_mesh::sdk
