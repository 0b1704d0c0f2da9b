#include "relay/rate_limiter.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cmath>

namespace agent_mesh::relay {
namespace {
// Tokens are doubles: after waiting retry_after_ms, rounding must not leave a bucket a hair short
// of what it promised.
constexpr double kTokenEpsilon = 1e-9;
}  // namespace

TokenBucket::TokenBucket(double rate_per_s, double burst, std::int64_t now_ms) noexcept
    : rate_per_ms_(rate_per_s / 1000.0), burst_(burst), tokens_(burst), updated_ms_(now_ms) {}

void TokenBucket::refill(std::int64_t now_ms) noexcept {
  if (now_ms <= updated_ms_) return;
  tokens_ = std::min(burst_, tokens_ + static_cast<double>(now_ms - updated_ms_) * rate_per_ms_);
  updated_ms_ = now_ms;
}

double TokenBucket::available(std::int64_t now_ms) const noexcept {
  if (now_ms <= updated_ms_) return tokens_;
  return std::min(burst_, tokens_ + static_cast<double>(now_ms - updated_ms_) * rate_per_ms_);
}

bool TokenBucket::try_take(std::int64_t now_ms, double n) noexcept {
  refill(now_ms);
  if (n > burst_ + kTokenEpsilon || tokens_ + kTokenEpsilon < n) return false;
  tokens_ = std::max(0.0, tokens_ - n);
  return true;
}

std::int64_t TokenBucket::retry_after_ms(std::int64_t now_ms, double n) const noexcept {
  const double wanted = std::min(n, burst_);
  const double missing = wanted - available(now_ms);
  if (missing <= kTokenEpsilon && n <= burst_ + kTokenEpsilon) return 0;
  const double wait = std::ceil(std::max(missing, 0.0) / rate_per_ms_);
  // Bounded so a tiny configured rate cannot overflow the conversion.
  constexpr double kMaxWaitMs = 9.0e15;
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(std::min(wait, kMaxWaitMs)));
}

bool TokenBucket::is_full(std::int64_t now_ms) const noexcept {
  return available(now_ms) + kTokenEpsilon >= burst_;
}

bool AbuseDetector::on_refused(std::int64_t now_ms, std::int64_t retry_after_ms) noexcept {
  const bool premature = now_ms < retry_at_ms_;
  retry_at_ms_ = now_ms + retry_after_ms;
  if (!premature) return false;
  if (premature_refusals_ == 0 || now_ms - last_premature_ms_ >= rule_.calm_ms) {
    episode_start_ms_ = now_ms;
    premature_refusals_ = 0;
  }
  ++premature_refusals_;
  last_premature_ms_ = std::max(last_premature_ms_, now_ms);
  const std::int64_t duration_ms = now_ms - episode_start_ms_;
  if (duration_ms < rule_.after_ms) return false;
  // Average rate over the whole episode: premature / duration ≥ min_refusals / after_ms.
  return static_cast<double>(premature_refusals_) * static_cast<double>(rule_.after_ms) >=
         static_cast<double>(rule_.min_refusals) * static_cast<double>(duration_ms);
}

bool AbuseDetector::is_calm(std::int64_t now_ms) const noexcept {
  return premature_refusals_ == 0 || now_ms - last_premature_ms_ >= rule_.calm_ms;
}

std::string ip_rate_key(std::string_view ip) {
  std::string text(ip);
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') text = text.substr(1, text.size() - 2);
  if (const auto zone = text.find('%'); zone != std::string::npos) text.resize(zone);
  std::array<std::uint8_t, 16> bytes{};
  char buffer[INET6_ADDRSTRLEN] = {};
  if (text.find(':') == std::string::npos) {
    if (inet_pton(AF_INET, text.c_str(), bytes.data()) != 1) return std::string(ip);
    inet_ntop(AF_INET, bytes.data(), buffer, sizeof buffer);
    return buffer;
  }
  if (inet_pton(AF_INET6, text.c_str(), bytes.data()) != 1) return std::string(ip);
  static constexpr std::array<std::uint8_t, 12> kMappedPrefix{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::equal(kMappedPrefix.begin(), kMappedPrefix.end(), bytes.begin())) {
    inet_ntop(AF_INET, bytes.data() + 12, buffer, sizeof buffer);
    return buffer;
  }
  std::fill(bytes.begin() + 8, bytes.end(), std::uint8_t{0});
  inet_ntop(AF_INET6, bytes.data(), buffer, sizeof buffer);
  return std::string(buffer) + "/64";
}

}  // namespace agent_mesh::relay
