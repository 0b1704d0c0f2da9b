// meshd's ACL feed (meshd-sdk.md "ACL"): the file tracker's decisions on injected contents, the
// union with the registry's synced rules and revocations, and one real watched file.
#include "meshd/acl_source.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

namespace agent_mesh::meshd {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

std::string acl_text(const std::vector<std::pair<std::string, std::string>>& rules, const AgentId& target) {
  std::string text = R"({"default_deny": true, "rules": [)";
  for (std::size_t i = 0; i < rules.size(); ++i) {
    if (i > 0) text += ", ";
    text += R"({"source": ")" + rules[i].first + R"(", "target": ")" + target.str() +
            R"(", "allowed_capabilities": [")" + rules[i].second + R"("]})";
  }
  return text + "]}";
}

// What the feed published, and what it logged.
struct Recorder {
  struct Published {
    AclPolicy policy;
    std::vector<AgentId> revoked;
    std::int64_t version = 0;
  };
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<Published> published;
  std::vector<std::pair<LogLevel, std::string>> logs;

  AclFeed::Publish publisher() {
    return [this](AclPolicy policy, std::vector<AgentId> revoked, std::int64_t version) {
      {
        std::lock_guard lock(mutex);
        published.push_back({std::move(policy), std::move(revoked), version});
      }
      cv.notify_all();
    };
  }
  AclFeed::Log logger() {
    return [this](LogLevel level, std::string_view event, std::string_view detail) {
      std::lock_guard lock(mutex);
      logs.emplace_back(level, std::string(event) + ": " + std::string(detail));
    };
  }
  std::size_t count() {
    std::lock_guard lock(mutex);
    return published.size();
  }
  Published last() {
    std::lock_guard lock(mutex);
    return published.back();
  }
  bool logged(LogLevel level, std::string_view needle) {
    std::lock_guard lock(mutex);
    for (const auto& [logged_level, text] : logs) {
      if (logged_level == level && text.find(needle) != std::string::npos) return true;
    }
    return false;
  }
  // Waits until more than `seen` publications happened, at most `timeout`.
  bool wait_beyond(std::size_t seen, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, timeout, [&] { return published.size() > seen; });
  }
};

class AclSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "meshd-acl-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    path_ = dir_ / "acl.json";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes the file atomically (temporary file + rename), as editors and config tools do.
  void write_acl(const std::string& text) {
    const auto temporary = dir_ / "acl.json.tmp";
    { std::ofstream(temporary) << text; }
    std::filesystem::rename(temporary, path_);
  }

  std::unique_ptr<AclFeed> create_file_feed(std::chrono::milliseconds poll_interval = 0ms) {
    AclFeed::Options options;
    options.setting.kind = AclSetting::Kind::file;
    options.setting.file = path_;
    options.poll_interval = poll_interval;
    options.log = recorder_.logger();
    auto feed = AclFeed::create(std::move(options));
    EXPECT_TRUE(feed.ok()) << (feed.ok() ? "" : feed.error().describe());
    if (!feed.ok()) return nullptr;
    return std::move(feed).value();
  }

  std::filesystem::path dir_;
  std::filesystem::path path_;
  Recorder recorder_;
  AgentId self_ = KeyPair::generate().agent_id();
  AgentId alice_ = KeyPair::generate().agent_id();
  AgentId carol_ = KeyPair::generate().agent_id();
};

// ---- AclFileTracker (sans-IO) ----

TEST_F(AclSourceTest, TrackerStartNeedsAValidFile) {
  AclFileTracker missing("ACL file /x/acl.json");
  auto none = missing.start(AclFileObservation::missing());
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, Errc::not_found);
  EXPECT_THAT(none.error().message, HasSubstr("/x/acl.json does not exist"));

  AclFileTracker invalid("ACL file /x/acl.json");
  auto bad = invalid.start(AclFileObservation::content(R"({"default_deny": false, "rules": []})"));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message, HasSubstr("/x/acl.json"));
  EXPECT_THAT(bad.error().message, HasSubstr("default_deny"));

  AclFileTracker good("ACL file /x/acl.json");
  auto policy = good.start(AclFileObservation::content(acl_text({{"*", "echo"}}, self_)));
  ASSERT_TRUE(policy.ok()) << policy.error().describe();
  EXPECT_TRUE(policy->allows(alice_, self_, "echo"));
}

TEST_F(AclSourceTest, TrackerDecisions) {
  AclFileTracker tracker("ACL file acl.json");
  const std::string first = acl_text({{"*", "echo"}}, self_);
  ASSERT_TRUE(tracker.start(AclFileObservation::content(first)).ok());
  using Kind = AclFileTracker::Outcome::Kind;

  // The same bytes again (a touch): nothing.
  EXPECT_EQ(tracker.observe(AclFileObservation::content(first)).kind, Kind::unchanged);

  // A valid change.
  auto applied = tracker.observe(AclFileObservation::content(acl_text({{alice_.str(), "sum"}}, self_)));
  ASSERT_EQ(applied.kind, Kind::applied);
  ASSERT_TRUE(applied.policy);
  EXPECT_TRUE(applied.policy->allows(alice_, self_, "sum"));
  EXPECT_FALSE(applied.policy->allows(alice_, self_, "echo"));

  // An invalid change: rejected with the parser's reason, once.
  auto rejected = tracker.observe(AclFileObservation::content(R"({"default_deny": true, "rules": [{"source": "*"}]})"));
  ASSERT_EQ(rejected.kind, Kind::rejected);
  EXPECT_FALSE(rejected.policy);
  EXPECT_THAT(rejected.message, HasSubstr("rules[0]"));
  EXPECT_THAT(rejected.message, HasSubstr("keeping the previous policy"));
  EXPECT_EQ(tracker.observe(AclFileObservation::content(R"({"default_deny": true, "rules": [{"source": "*"}]})")).kind,
            Kind::unchanged);
  auto not_json = tracker.observe(AclFileObservation::content("{\"default_deny\": tru"));
  EXPECT_EQ(not_json.kind, Kind::rejected);

  // Deleted: reported once; the same content coming back is nothing new.
  auto deleted = tracker.observe(AclFileObservation::missing());
  EXPECT_EQ(deleted.kind, Kind::deleted);
  EXPECT_THAT(deleted.message, HasSubstr("keeping the last policy"));
  EXPECT_EQ(tracker.observe(AclFileObservation::missing()).kind, Kind::unchanged);
  EXPECT_EQ(tracker.observe(AclFileObservation::content(first)).kind, Kind::applied);
  EXPECT_EQ(tracker.observe(AclFileObservation::missing()).kind, Kind::deleted);  // reported again after a return

  // Unreadable: reported once per reason.
  EXPECT_EQ(tracker.observe(AclFileObservation::unreadable("cannot open it: Permission denied")).kind, Kind::rejected);
  EXPECT_EQ(tracker.observe(AclFileObservation::unreadable("cannot open it: Permission denied")).kind, Kind::unchanged);
}

TEST_F(AclSourceTest, TooLargeFileIsRejected) {
  AclFileTracker tracker("ACL file acl.json");
  ASSERT_TRUE(tracker.start(AclFileObservation::content(acl_text({}, self_))).ok());
  auto outcome = tracker.observe(AclFileObservation::content(std::string(limits::max_acl_file_bytes + 1, ' ')));
  EXPECT_EQ(outcome.kind, AclFileTracker::Outcome::Kind::rejected);
}

// ---- AclFeed with injected observations ----

TEST_F(AclSourceTest, FileChangeIsPublished) {
  write_acl(acl_text({{"*", "echo"}}, self_));
  auto feed = create_file_feed();
  ASSERT_TRUE(feed);
  EXPECT_EQ(recorder_.count(), 0u);  // nothing before start
  feed->start(recorder_.publisher());
  ASSERT_EQ(recorder_.count(), 1u);
  EXPECT_TRUE(recorder_.last().policy.allows(alice_, self_, "echo"));
  EXPECT_EQ(recorder_.last().version, 0);

  feed->observe_file(AclFileObservation::content(acl_text({{"*", "echo"}}, self_)));  // same bytes
  EXPECT_EQ(recorder_.count(), 1u);

  feed->observe_file(AclFileObservation::content(acl_text({{alice_.str(), "sum"}}, self_)));
  ASSERT_EQ(recorder_.count(), 2u);
  EXPECT_TRUE(recorder_.last().policy.allows(alice_, self_, "sum"));
  EXPECT_FALSE(recorder_.last().policy.allows(carol_, self_, "sum"));
  EXPECT_FALSE(recorder_.last().policy.allows(alice_, self_, "echo"));
  EXPECT_TRUE(recorder_.logged(LogLevel::info, "acl.reloaded"));
  EXPECT_EQ(feed->snapshot().rules, 1u);
}

TEST_F(AclSourceTest, InvalidChangeKeepsThePreviousPolicyAndSaysWhy) {
  write_acl(acl_text({{"*", "echo"}}, self_));
  auto feed = create_file_feed();
  ASSERT_TRUE(feed);
  feed->start(recorder_.publisher());
  ASSERT_EQ(recorder_.count(), 1u);

  feed->observe_file(AclFileObservation::content(R"({"default_deny": false, "rules": []})"));
  EXPECT_EQ(recorder_.count(), 1u);
  EXPECT_TRUE(recorder_.logged(LogLevel::error, "default_deny"));
  EXPECT_TRUE(recorder_.logged(LogLevel::error, path_.string()));

  feed->observe_file(AclFileObservation::missing());
  EXPECT_EQ(recorder_.count(), 1u);
  EXPECT_TRUE(recorder_.logged(LogLevel::warn, "acl.deleted"));
  EXPECT_EQ(feed->snapshot().rules, 1u);  // the last policy stays

  feed->observe_file(AclFileObservation::content(acl_text({{"*", "echo"}, {"*", "sum"}}, self_)));
  ASSERT_EQ(recorder_.count(), 2u);
  EXPECT_TRUE(recorder_.last().policy.allows(alice_, self_, "sum"));
}

TEST_F(AclSourceTest, SyncedRulesAreUnionedAndRevokedPublished) {
  write_acl(acl_text({{alice_.str(), "echo"}}, self_));
  auto feed = create_file_feed();
  ASSERT_TRUE(feed);
  feed->start(recorder_.publisher());

  const AgentId revoked = KeyPair::generate().agent_id();
  auto sync = AclSync::parse(R"({"version": 7, "rules": [{"id": "r1", "source": ")" + carol_.str() +
                             R"(", "target": ")" + self_.str() + R"(", "allowed_capabilities": ["sum"]}], "revoked": [")" +
                             revoked.str() + R"("]})");
  ASSERT_TRUE(sync.ok()) << sync.error().describe();
  feed->set_synced(std::move(sync).value());
  ASSERT_EQ(recorder_.count(), 2u);
  auto published = recorder_.last();
  EXPECT_TRUE(published.policy.allows(alice_, self_, "echo"));  // the file's
  EXPECT_TRUE(published.policy.allows(carol_, self_, "sum"));   // the registry's
  EXPECT_FALSE(published.policy.allows(carol_, self_, "echo"));
  EXPECT_EQ(published.revoked, std::vector<AgentId>{revoked});
  EXPECT_EQ(published.version, 7);
  EXPECT_EQ(feed->snapshot().version, 7);
  EXPECT_EQ(feed->snapshot().rules, 2u);
  EXPECT_EQ(feed->snapshot().revoked, 1u);

  // A file change keeps the synced rules and revocations.
  feed->observe_file(AclFileObservation::content(acl_text({{alice_.str(), "other"}}, self_)));
  ASSERT_EQ(recorder_.count(), 3u);
  published = recorder_.last();
  EXPECT_TRUE(published.policy.allows(alice_, self_, "other"));
  EXPECT_FALSE(published.policy.allows(alice_, self_, "echo"));
  EXPECT_TRUE(published.policy.allows(carol_, self_, "sum"));
  EXPECT_EQ(published.revoked, std::vector<AgentId>{revoked});

  // The same sync again publishes nothing; a new one replaces the old rules.
  auto same = AclSync::parse(R"({"version": 7, "rules": [{"id": "r1", "source": ")" + carol_.str() +
                             R"(", "target": ")" + self_.str() + R"(", "allowed_capabilities": ["sum"]}], "revoked": [")" +
                             revoked.str() + R"("]})");
  ASSERT_TRUE(same.ok());
  feed->set_synced(std::move(same).value());
  EXPECT_EQ(recorder_.count(), 3u);
  auto emptied = AclSync::parse(R"({"version": 8, "rules": [], "revoked": []})");
  ASSERT_TRUE(emptied.ok());
  feed->set_synced(std::move(emptied).value());
  ASSERT_EQ(recorder_.count(), 4u);
  published = recorder_.last();
  EXPECT_FALSE(published.policy.allows(carol_, self_, "sum"));
  EXPECT_TRUE(published.revoked.empty());
  EXPECT_EQ(published.version, 8);
}

TEST_F(AclSourceTest, InlineAndNone) {
  AclFeed::Options inline_options;
  inline_options.setting.kind = AclSetting::Kind::inline_object;
  inline_options.setting.inline_text = acl_text({{"*", "echo"}}, self_);
  auto inline_feed = AclFeed::create(std::move(inline_options));
  ASSERT_TRUE(inline_feed.ok());
  (*inline_feed)->start(recorder_.publisher());
  ASSERT_EQ(recorder_.count(), 1u);
  EXPECT_TRUE(recorder_.last().policy.allows(carol_, self_, "echo"));
  EXPECT_TRUE((*inline_feed)->snapshot().configured);

  Recorder none_recorder;
  auto none_feed = AclFeed::create(AclFeed::Options{});
  ASSERT_TRUE(none_feed.ok());
  (*none_feed)->start(none_recorder.publisher());
  ASSERT_EQ(none_recorder.count(), 1u);
  EXPECT_TRUE(none_recorder.last().policy.empty());  // deny everything
  EXPECT_FALSE((*none_feed)->snapshot().configured);
}

TEST_F(AclSourceTest, MissingOrInvalidFileAtStartIsAnError) {
  AclFeed::Options options;
  options.setting.kind = AclSetting::Kind::file;
  options.setting.file = path_;
  auto missing = AclFeed::create(options);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.error().message, HasSubstr("--acl: ACL file " + path_.string() + " does not exist"));

  write_acl("{}");
  auto invalid = AclFeed::create(options);
  ASSERT_FALSE(invalid.ok());
  EXPECT_THAT(invalid.error().message, HasSubstr(path_.string()));
}

// ---- Real files ----

TEST_F(AclSourceTest, PollReadsTheRealFile) {
  write_acl(acl_text({{"*", "echo"}}, self_));
  auto feed = create_file_feed();
  ASSERT_TRUE(feed);
  feed->start(recorder_.publisher());
  feed->poll();
  EXPECT_EQ(recorder_.count(), 1u);  // unchanged
  write_acl(acl_text({{"*", "sum"}}, self_));
  feed->poll();
  ASSERT_EQ(recorder_.count(), 2u);
  EXPECT_TRUE(recorder_.last().policy.allows(alice_, self_, "sum"));
  std::filesystem::remove(path_);
  feed->poll();
  EXPECT_EQ(recorder_.count(), 2u);
  EXPECT_TRUE(recorder_.logged(LogLevel::warn, "acl.deleted"));
  // Rewritten in place (same inode), same size, within the same second: still seen.
  write_acl(acl_text({{"*", "abc"}}, self_));
  feed->poll();
  ASSERT_EQ(recorder_.count(), 3u);
  { std::ofstream(path_) << acl_text({{"*", "xyz"}}, self_); }
  feed->poll();
  ASSERT_EQ(recorder_.count(), 4u);
  EXPECT_TRUE(recorder_.last().policy.allows(alice_, self_, "xyz"));
}

TEST_F(AclSourceTest, WatcherAppliesAChangeWithinTheDeadline) {
  write_acl(acl_text({{"*", "echo"}}, self_));
  auto feed = create_file_feed(250ms);
  ASSERT_TRUE(feed);
  feed->start(recorder_.publisher());
  const std::size_t seen = recorder_.count();
  ASSERT_EQ(seen, 1u);
  write_acl(acl_text({{alice_.str(), "sum"}}, self_));
  ASSERT_TRUE(recorder_.wait_beyond(seen, 2s)) << "the change was not applied within 2 s";
  EXPECT_TRUE(recorder_.last().policy.allows(alice_, self_, "sum"));
}

TEST_F(AclSourceTest, StopDoesNotWaitOutThePollInterval) {
  write_acl(acl_text({{"*", "echo"}}, self_));
  auto feed = create_file_feed(std::chrono::milliseconds(60'000));
  ASSERT_TRUE(feed);
  feed->start(recorder_.publisher());
  const auto started = std::chrono::steady_clock::now();
  feed.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 1s);
}

}  // namespace
}  // namespace agent_mesh::meshd
