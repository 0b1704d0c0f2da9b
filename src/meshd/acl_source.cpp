#include "meshd/acl_source.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace agent_mesh::meshd {
namespace {

// A file modified this recently is read on every poll even when its stat(2) looks unchanged: two
// writes within one timestamp tick with the same size have the same stamp. File systems with a
// coarse mtime (1 s on some, 2 s on FAT) are covered by 2 s.
constexpr std::int64_t kRacyWindowNs = 2'000'000'000;

std::string errno_text(int error_number) { return std::strerror(error_number); }

}  // namespace

AclFileObservation read_acl_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    const int error_number = errno;
    if (error_number == ENOENT || error_number == ENOTDIR) return AclFileObservation::missing();
    return AclFileObservation::unreadable("cannot open it: " + errno_text(error_number));
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    return AclFileObservation::unreadable("it is not a regular file");
  }
  // One byte past the bound, so the parser reports "too large" rather than a truncated document.
  const std::size_t cap = limits::max_acl_file_bytes + 1;
  std::string text;
  text.resize(std::min<std::size_t>(cap, info.st_size > 0 ? static_cast<std::size_t>(info.st_size) + 1 : 4096));
  std::size_t used = 0;
  while (used < cap) {
    if (used == text.size()) text.resize(std::min(cap, text.size() * 2));
    const ssize_t got = ::read(fd, text.data() + used, text.size() - used);
    if (got < 0) {
      if (errno == EINTR) continue;
      const int error_number = errno;
      ::close(fd);
      return AclFileObservation::unreadable("cannot read it: " + errno_text(error_number));
    }
    if (got == 0) break;
    used += static_cast<std::size_t>(got);
  }
  ::close(fd);
  text.resize(used);
  return AclFileObservation::content(std::move(text));
}

// ---- AclFileTracker ----

Result<AclPolicy> AclFileTracker::start(const AclFileObservation& observation) {
  switch (observation.kind) {
    case AclFileObservation::Kind::missing:
      return fail(Errc::not_found, label_ + " does not exist");
    case AclFileObservation::Kind::unreadable:
      return fail(Errc::bad_request, label_ + ": " + observation.text);
    case AclFileObservation::Kind::content: break;
  }
  last_text_ = observation.text;
  auto policy = AclPolicy::from_json(observation.text);
  if (!policy) return fail(policy.error().code, label_ + ": " + policy.error().message);
  return policy;
}

AclFileTracker::Outcome AclFileTracker::observe(const AclFileObservation& observation) {
  Outcome outcome;
  switch (observation.kind) {
    case AclFileObservation::Kind::missing:
      unreadable_.clear();
      if (!missing_) {
        missing_ = true;
        outcome.kind = Outcome::Kind::deleted;
        outcome.message = label_ + " was deleted or renamed; keeping the last policy until it comes back";
      }
      return outcome;
    case AclFileObservation::Kind::unreadable:
      missing_ = false;
      if (unreadable_ != observation.text) {
        unreadable_ = observation.text;
        outcome.kind = Outcome::Kind::rejected;
        outcome.message = label_ + ": " + observation.text + "; keeping the previous policy";
      }
      return outcome;
    case AclFileObservation::Kind::content: break;
  }
  missing_ = false;
  unreadable_.clear();
  if (last_text_ && *last_text_ == observation.text) return outcome;
  last_text_ = observation.text;
  auto policy = AclPolicy::from_json(observation.text);
  if (!policy) {
    outcome.kind = Outcome::Kind::rejected;
    outcome.message = label_ + ": " + policy.error().message + "; keeping the previous policy";
    return outcome;
  }
  outcome.kind = Outcome::Kind::applied;
  outcome.policy = std::move(policy).value();
  return outcome;
}

// ---- AclFeed ----

AclFeed::AclFeed(Options options)
    : options_(std::move(options)), tracker_("ACL file " + options_.setting.file.string()) {}

Result<std::unique_ptr<AclFeed>> AclFeed::create(Options options) {
  std::unique_ptr<AclFeed> feed(new AclFeed(std::move(options)));
  switch (feed->options_.setting.kind) {
    case AclSetting::Kind::none: break;
    case AclSetting::Kind::inline_object: {
      auto policy = AclPolicy::from_json(feed->options_.setting.inline_text);
      if (!policy) return fail(policy.error().code, "inline acl: " + policy.error().message);
      feed->local_ = std::move(policy).value();
      break;
    }
    case AclSetting::Kind::file: {
      auto policy = feed->tracker_.start(read_acl_file(feed->options_.setting.file));
      if (!policy) return fail(policy.error().code, "--acl: " + policy.error().message);
      feed->local_ = std::move(policy).value();
      break;
    }
  }
  return feed;
}

AclFeed::~AclFeed() { stop(); }

void AclFeed::start(Publish publish) {
  {
    std::lock_guard lock(mutex_);
    publish_ = std::move(publish);
    publish_locked();
  }
  if (options_.setting.kind == AclSetting::Kind::file && options_.poll_interval.count() > 0 && !watcher_.joinable()) {
    // The stamp of the file as read at start, so the first poll does not re-read it needlessly.
    poll();
    watcher_ = std::thread([this] { watch(); });
  }
}

void AclFeed::stop() {
  {
    std::lock_guard lock(stop_mutex_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (watcher_.joinable() && watcher_.get_id() != std::this_thread::get_id()) watcher_.join();
}

void AclFeed::watch() {
  std::unique_lock lock(stop_mutex_);
  while (!stopping_) {
    if (stop_cv_.wait_for(lock, options_.poll_interval, [this] { return stopping_; })) break;
    lock.unlock();
    poll();
    lock.lock();
  }
}

void AclFeed::poll() {
  if (options_.setting.kind != AclSetting::Kind::file) return;
  const std::filesystem::path& path = options_.setting.file;
  std::lock_guard lock(mutex_);
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) {
    const int error_number = errno;
    stamp_.reset();
    if (error_number == ENOENT || error_number == ENOTDIR) {
      apply_outcome_locked(tracker_.observe(AclFileObservation::missing()));
    } else {
      apply_outcome_locked(tracker_.observe(AclFileObservation::unreadable("cannot stat it: " + errno_text(error_number))));
    }
    return;
  }
  FileStamp stamp;
  stamp.device = static_cast<std::uint64_t>(info.st_dev);
  stamp.inode = static_cast<std::uint64_t>(info.st_ino);
  stamp.size = static_cast<std::int64_t>(info.st_size);
  stamp.mtime_ns = static_cast<std::int64_t>(info.st_mtim.tv_sec) * 1'000'000'000 + info.st_mtim.tv_nsec;
  const std::int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count();
  const std::int64_t age_ns = now_ns - stamp.mtime_ns;
  const bool racy = age_ns < kRacyWindowNs && age_ns > -kRacyWindowNs;
  if (stamp_ && *stamp_ == stamp && !racy) return;
  stamp_ = stamp;
  apply_outcome_locked(tracker_.observe(read_acl_file(path)));
}

void AclFeed::observe_file(const AclFileObservation& observation) {
  std::lock_guard lock(mutex_);
  apply_outcome_locked(tracker_.observe(observation));
}

void AclFeed::apply_outcome_locked(AclFileTracker::Outcome outcome) {
  switch (outcome.kind) {
    case AclFileTracker::Outcome::Kind::unchanged: return;
    case AclFileTracker::Outcome::Kind::rejected: log(LogLevel::error, "acl.invalid", outcome.message); return;
    case AclFileTracker::Outcome::Kind::deleted: log(LogLevel::warn, "acl.deleted", outcome.message); return;
    case AclFileTracker::Outcome::Kind::applied: break;
  }
  local_ = std::move(*outcome.policy);
  log(LogLevel::info, "acl.reloaded",
      "ACL file " + options_.setting.file.string() + ": " + std::to_string(local_.rules().size()) + " rules");
  publish_locked();
}

void AclFeed::set_synced(AclSync sync) {
  std::lock_guard lock(mutex_);
  const bool changed = !synced_ || synced_->version != sync.version || synced_->policy.rules() != sync.policy.rules() ||
                       synced_->revoked != sync.revoked;
  log(changed ? LogLevel::info : LogLevel::debug, "acl.synced",
      "registry version " + std::to_string(sync.version) + ": " + std::to_string(sync.policy.rules().size()) +
          " rules, " + std::to_string(sync.revoked.size()) + " revoked");
  synced_ = std::move(sync);
  if (changed) publish_locked();
}

void AclFeed::publish_locked() {
  AclPolicy policy = local_;
  std::vector<AgentId> revoked;
  std::int64_t version = 0;
  if (synced_) {
    policy.add(synced_->policy);
    revoked = synced_->revoked;
    version = synced_->version;
  }
  published_rules_ = policy.rules().size();
  if (publish_) publish_(std::move(policy), std::move(revoked), version);
}

AclFeed::Snapshot AclFeed::snapshot() const {
  std::lock_guard lock(mutex_);
  Snapshot snapshot;
  snapshot.rules = published_rules_;
  snapshot.local_rules = local_.rules().size();
  snapshot.configured = options_.setting.kind != AclSetting::Kind::none;
  if (synced_) {
    snapshot.synced = true;
    snapshot.version = synced_->version;
    snapshot.synced_rules = synced_->policy.rules().size();
    snapshot.revoked = synced_->revoked.size();
  }
  return snapshot;
}

void AclFeed::log(LogLevel level, std::string_view event, std::string_view detail) const {
  if (options_.log) options_.log(level, event, detail);
}

}  // namespace agent_mesh::meshd
