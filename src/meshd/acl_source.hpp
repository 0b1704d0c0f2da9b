// meshd's ACL (meshd-sdk.md "ACL"): the policy from the ACL file (watched) or the config file's
// inline object, plus the rules and revocations of the registry's ACL sync, published as one union
// to the MeshAgent.
//
// The file is watched by polling: every 250 ms a stat(2) (device, inode, size, mtime in ns); the
// file is read when that changed, or when its mtime is less than 2 s old (two writes within one
// timestamp tick with the same size would otherwise look unchanged, git's "racy clean" problem).
// A change is decided by the content, not the stamp: a touch without a change does nothing. So a
// valid change applies within ~250 ms (the spec asks for 1 s). Polling rather than inotify because
// it also follows editors that replace the file by rename, symlink swaps (Kubernetes ConfigMaps)
// and network file systems, at the cost of one stat(2) per poll.
//
//   - a valid change → the new file policy is published (with the synced rules added);
//   - an invalid change (bad JSON, a bad rule, default_deny false, too large, unreadable) → the
//     previous policy stays and the reason is logged once (until the content changes again);
//   - the file disappears → the last policy stays, logged once; when it comes back it is read again;
//   - a missing or invalid file at start is an error at start (AclFeed::create).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "agent_mesh/acl.hpp"
#include "agent_mesh/mesh_client.hpp"
#include "agent_mesh/result.hpp"
#include "meshd/meshd_config.hpp"

namespace agent_mesh::meshd {

// What one look at the ACL file found.
struct AclFileObservation {
  enum class Kind : std::uint8_t { content, missing, unreadable };
  Kind kind = Kind::missing;
  std::string text;  // content: the file's bytes; unreadable: why

  [[nodiscard]] static AclFileObservation content(std::string bytes) { return {Kind::content, std::move(bytes)}; }
  [[nodiscard]] static AclFileObservation missing() { return {Kind::missing, {}}; }
  [[nodiscard]] static AclFileObservation unreadable(std::string why) { return {Kind::unreadable, std::move(why)}; }
};

// Reads the file, at most limits::max_acl_file_bytes + 1 bytes (so AclPolicy::from_json reports
// the file as too large instead of meshd reading a runaway file whole).
[[nodiscard]] AclFileObservation read_acl_file(const std::filesystem::path& path);

// Sans-IO: what a look at the ACL file means for the policy. No clock, no file system.
class AclFileTracker {
 public:
  struct Outcome {
    enum class Kind : std::uint8_t {
      unchanged,  // nothing to do or to log
      applied,    // `policy` is the file's new policy
      rejected,   // invalid or unreadable: keep the previous policy; `message` says why
      deleted,    // the file is gone: keep the last policy; `message` says so
    };
    Kind kind = Kind::unchanged;
    std::optional<AclPolicy> policy;
    std::string message;
  };

  // `label` names the file in messages ("ACL file /etc/meshd/acl.json").
  explicit AclFileTracker(std::string label) : label_(std::move(label)) {}

  // The first look, at start: the file must exist and hold a valid policy. Errors name the file:
  // not_found when it is missing, the parser's code otherwise.
  [[nodiscard]] Result<AclPolicy> start(const AclFileObservation& observation);
  // Every later look.
  [[nodiscard]] Outcome observe(const AclFileObservation& observation);

 private:
  std::string label_;
  std::optional<std::string> last_text_;  // the last content seen, valid or not
  bool missing_ = false;                  // the deletion was reported
  std::string unreadable_;                // the unreadable reason reported
};

class AclFeed {
 public:
  // Called with the union of the file (or inline) rules and the synced rules, the synced revoked
  // list and the sync version (0 before any sync). Serialised (one call at a time, in order); must
  // not call back into the AclFeed.
  using Publish = std::function<void(AclPolicy policy, std::vector<AgentId> revoked, std::int64_t version)>;
  using Log = std::function<void(LogLevel level, std::string_view event, std::string_view detail)>;

  struct Options {
    AclSetting setting;
    // How often the watcher looks at the file; 0: no watcher thread (tests call poll() or
    // observe_file() themselves).
    std::chrono::milliseconds poll_interval{250};
    Log log;  // may be empty
  };

  // Reads the initial policy (a missing or invalid file, or an invalid inline object, is an error
  // naming it). Publishes nothing and starts no thread yet.
  [[nodiscard]] static Result<std::unique_ptr<AclFeed>> create(Options options);

  ~AclFeed();
  AclFeed(const AclFeed&) = delete;
  AclFeed& operator=(const AclFeed&) = delete;

  // Publishes the current union at once, then after every change; starts the watcher thread for a
  // file setting. Call once.
  void start(Publish publish);
  // Stops and joins the watcher thread without waiting out its poll interval. Idempotent.
  void stop();

  // One watcher step: stat the file, read it if it may have changed, apply what it holds.
  void poll();
  // The decision step with a given observation (what poll() does after reading).
  void observe_file(const AclFileObservation& observation);
  // The registry's answer replaces the previous synced rules and revoked list; published at once.
  void set_synced(AclSync sync);

  struct Snapshot {
    std::int64_t version = 0;  // the sync version, 0 before any sync
    std::size_t rules = 0;     // in the published union
    std::size_t local_rules = 0;
    std::size_t synced_rules = 0;
    std::size_t revoked = 0;
    bool synced = false;      // a sync was applied
    bool configured = false;  // a file or inline ACL was configured
  };
  [[nodiscard]] Snapshot snapshot() const;

 private:
  struct FileStamp {
    std::uint64_t device = 0;
    std::uint64_t inode = 0;
    std::int64_t size = 0;
    std::int64_t mtime_ns = 0;
    friend bool operator==(const FileStamp&, const FileStamp&) = default;
  };

  explicit AclFeed(Options options);
  void publish_locked();
  void apply_outcome_locked(AclFileTracker::Outcome outcome);
  void log(LogLevel level, std::string_view event, std::string_view detail) const;
  void watch();

  Options options_;
  mutable std::mutex mutex_;  // everything below
  AclFileTracker tracker_;
  AclPolicy local_;  // the file's or the inline policy
  std::optional<AclSync> synced_;
  std::size_t published_rules_ = 0;
  Publish publish_;
  std::optional<FileStamp> stamp_;

  std::mutex stop_mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread watcher_;
};

}  // namespace agent_mesh::meshd
