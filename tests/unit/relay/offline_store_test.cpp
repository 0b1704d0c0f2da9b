// The durable offline store (relay.md "Offline buffering", "Revocation"; protocol §6 resume tokens,
// §7 revocations) on real SQLite files in a temporary directory. Time is passed in: no test sleeps.
#include "relay/offline_store.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace agent_mesh::relay {
namespace {

using ::testing::HasSubstr;

constexpr std::int64_t kNow = 1'700'000'000'000;  // a plausible Unix time in ms
constexpr std::int64_t kTtlMs = 600'000;

class OfflineStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "relay-store-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    path_ = dir_ / "data" / std::string(kStoreFileName);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  OfflineStore open(StoreLimits limits = {}) {
    auto store = OfflineStore::open(path_, limits);
    EXPECT_TRUE(store.ok()) << (store.ok() ? "" : store.error().describe());
    if (!store.ok()) std::abort();
    return std::move(store).value();
  }

  // A frame whose bytes identify it; the store never parses frames.
  static std::string frame(std::size_t size, char fill) { return std::string(size, fill); }

  static void expect_code(const Status& status, Errc code) {
    ASSERT_FALSE(status.ok());
    EXPECT_EQ(status.error().code, code) << status.error().describe();
  }

  std::filesystem::path dir_;
  std::filesystem::path path_;
  KeyPair alice_ = KeyPair::generate();
  KeyPair bob_ = KeyPair::generate();
  KeyPair carol_ = KeyPair::generate();
  const AgentId& alice() const { return alice_.agent_id(); }
  const AgentId& bob() const { return bob_.agent_id(); }
  const AgentId& carol() const { return carol_.agent_id(); }
};

TEST_F(OfflineStoreTest, StoresAndLoadsInArrivalOrder) {
  OfflineStore store = open();
  const Uuid first = Uuid::generate();
  const Uuid second = Uuid::generate();
  const Uuid third = Uuid::generate();
  ASSERT_TRUE(store.store(bob(), alice(), first, kNow, kNow, "frame-1").ok());
  ASSERT_TRUE(store.store(bob(), carol(), second, kNow - 5, kNow + 1, "frame-two").ok());
  ASSERT_TRUE(store.store(carol(), alice(), Uuid::generate(), kNow, kNow + 2, "for carol").ok());
  ASSERT_TRUE(store.store(bob(), alice(), third, kNow, kNow + 3, std::string("\0binary\xff", 8)).ok());

  EXPECT_EQ(store.stored_messages(), 4);
  EXPECT_EQ(store.store_bytes(), 7 + 9 + 9 + 8);
  EXPECT_EQ(store.messages_for(bob()), 3);
  EXPECT_EQ(store.bytes_for(bob()), 7 + 9 + 8);
  EXPECT_EQ(store.messages_for(carol()), 1);
  EXPECT_EQ(store.messages_for(alice()), 0);
  EXPECT_EQ(store.bytes_for(alice()), 0);

  auto page = store.load(bob());
  ASSERT_TRUE(page.ok()) << page.error().describe();
  ASSERT_EQ(page->size(), 3U);
  EXPECT_EQ((*page)[0].id, first);
  EXPECT_EQ((*page)[0].frame, "frame-1");
  EXPECT_EQ((*page)[1].id, second);
  EXPECT_EQ((*page)[2].id, third);
  EXPECT_EQ((*page)[2].frame, std::string("\0binary\xff", 8));  // bytes unchanged
  EXPECT_LT((*page)[0].seq, (*page)[1].seq);
  EXPECT_LT((*page)[1].seq, (*page)[2].seq);

  // Paging by seq, by count and by bytes.
  auto rest = store.load(bob(), (*page)[0].seq, 1);
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest->size(), 1U);
  EXPECT_EQ(rest->front().id, second);
  EXPECT_TRUE(store.load(bob(), (*page)[2].seq)->empty());
  EXPECT_EQ(store.load(bob(), 0, 256, 16)->size(), 2U);  // 7 + 9 bytes fit in 16
  EXPECT_EQ(store.load(bob(), 0, 256, 15)->size(), 1U);
  EXPECT_EQ(store.load(bob(), 0, 256, 1)->size(), 1U);  // always at least one
  EXPECT_TRUE(store.load(bob(), 0, 0)->empty());
  EXPECT_TRUE(store.load(alice())->empty());
}

TEST_F(OfflineStoreTest, PerAgentMessageBound) {
  OfflineStore store = open(StoreLimits{.buffer_max_messages = 2});
  ASSERT_TRUE(store.store(bob(), alice(), Uuid::generate(), kNow, kNow, "a").ok());
  ASSERT_TRUE(store.store(bob(), alice(), Uuid::generate(), kNow, kNow, "b").ok());
  const Status full = store.store(bob(), alice(), Uuid::generate(), kNow, kNow, "c");
  expect_code(full, Errc::buffer_full);
  EXPECT_THAT(full.error().message, HasSubstr("buffer_max_messages"));
  EXPECT_TRUE(store.store(carol(), alice(), Uuid::generate(), kNow, kNow, "c").ok()) << "other agents unaffected";
  EXPECT_EQ(store.messages_for(bob()), 2);
}

TEST_F(OfflineStoreTest, PerAgentByteBound) {
  OfflineStore store = open(StoreLimits{.buffer_max_bytes = 25});
  ASSERT_TRUE(store.store(bob(), alice(), Uuid::generate(), kNow, kNow, frame(10, 'a')).ok());
  ASSERT_TRUE(store.store(bob(), alice(), Uuid::generate(), kNow, kNow, frame(10, 'b')).ok());
  const Status full = store.store(bob(), alice(), Uuid::generate(), kNow, kNow, frame(10, 'c'));
  expect_code(full, Errc::buffer_full);
  EXPECT_THAT(full.error().message, HasSubstr("buffer_max_bytes"));
  EXPECT_TRUE(store.store(bob(), alice(), Uuid::generate(), kNow, kNow, frame(5, 'd')).ok()) << "exactly 25 fits";
  expect_code(store.store(bob(), alice(), Uuid::generate(), kNow, kNow, "e"), Errc::buffer_full);
  expect_code(store.store(carol(), alice(), Uuid::generate(), kNow, kNow, frame(26, 'f')), Errc::buffer_full);
  EXPECT_EQ(store.bytes_for(bob()), 25);
}

TEST_F(OfflineStoreTest, WholeStoreByteBound) {
  OfflineStore store = open(StoreLimits{.store_max_bytes = 30});
  ASSERT_TRUE(store.store(bob(), alice(), Uuid::generate(), kNow, kNow, frame(20, 'a')).ok());
  const Status full = store.store(carol(), alice(), Uuid::generate(), kNow, kNow, frame(11, 'b'));
  expect_code(full, Errc::buffer_full);
  EXPECT_THAT(full.error().message, HasSubstr("store_max_bytes"));
  ASSERT_TRUE(store.store(carol(), alice(), Uuid::generate(), kNow, kNow, frame(10, 'c')).ok());
  EXPECT_EQ(store.store_bytes(), 30);
  // Acknowledging frees room again.
  const Uuid id = store.load(bob())->front().id;
  ASSERT_EQ(store.ack(bob(), std::span(&id, 1)).value(), 1);
  EXPECT_TRUE(store.store(carol(), alice(), Uuid::generate(), kNow, kNow, frame(11, 'b')).ok());
}

TEST_F(OfflineStoreTest, DuplicatesAreStoredOnce) {
  OfflineStore store = open(StoreLimits{.buffer_max_messages = 1});
  const Uuid id = Uuid::generate();
  ASSERT_TRUE(store.store(bob(), alice(), id, kNow, kNow, "original").ok());
  // The same (to, id) again: `queued` again, nothing stored twice, even though the buffer is full.
  EXPECT_TRUE(store.store(bob(), alice(), id, kNow, kNow + 10, "original").ok());
  EXPECT_TRUE(store.store(bob(), carol(), id, kNow, kNow + 20, "a different frame").ok());
  EXPECT_EQ(store.messages_for(bob()), 1);
  EXPECT_EQ(store.load(bob())->front().frame, "original");
  // The same id to another recipient is another envelope.
  EXPECT_TRUE(store.store(carol(), alice(), id, kNow, kNow, "copy").ok());
  EXPECT_EQ(store.stored_messages(), 2);
}

TEST_F(OfflineStoreTest, DuplicatesWithinABatchAreStoredOnce) {
  OfflineStore store = open();
  const Uuid id = Uuid::generate();
  const std::vector<EnvelopeToStore> batch{{bob(), alice(), id, kNow, "x"}, {bob(), alice(), id, kNow, "x"}};
  auto results = store.store_batch(batch, kNow);
  ASSERT_TRUE(results.ok());
  EXPECT_TRUE((*results)[0].ok());
  EXPECT_TRUE((*results)[1].ok());
  EXPECT_EQ(store.messages_for(bob()), 1);
  EXPECT_EQ(store.store_bytes(), 1);
}

TEST_F(OfflineStoreTest, BatchAnswersEachEnvelope) {
  OfflineStore store = open(StoreLimits{.buffer_max_messages = 2});
  const std::vector<EnvelopeToStore> batch{
      {bob(), alice(), Uuid::generate(), kNow, "1"},
      {bob(), alice(), Uuid::generate(), kNow, "2"},
      {bob(), alice(), Uuid::generate(), kNow, "3"},             // over the bound
      {carol(), alice(), Uuid::generate(), kNow - kTtlMs - 1, "old"},  // expired already
      {carol(), alice(), Uuid::generate(), kNow, "4"},
  };
  auto results = store.store_batch(batch, kNow);
  ASSERT_TRUE(results.ok()) << results.error().describe();
  ASSERT_EQ(results->size(), 5U);
  EXPECT_TRUE((*results)[0].ok());
  EXPECT_TRUE((*results)[1].ok());
  expect_code((*results)[2], Errc::buffer_full);
  expect_code((*results)[3], Errc::expired);
  EXPECT_TRUE((*results)[4].ok());
  EXPECT_EQ(store.stored_messages(), 3);
  EXPECT_TRUE(store.store_batch({}, kNow)->empty());
}

TEST_F(OfflineStoreTest, AckDeletesOnlyTheRecipientsEnvelopes) {
  OfflineStore store = open();
  std::vector<Uuid> ids;
  for (int i = 0; i < 4; ++i) {
    ids.push_back(Uuid::generate());
    ASSERT_TRUE(store.store(bob(), alice(), ids.back(), kNow, kNow, "frame" + std::to_string(i)).ok());
  }
  const std::vector<Uuid> acked{ids[0], ids[2], Uuid::generate()};
  EXPECT_EQ(store.ack(carol(), acked).value(), 0) << "not carol's to acknowledge";
  EXPECT_EQ(store.ack(bob(), acked).value(), 2) << "unknown IDs are ignored";
  EXPECT_EQ(store.ack(bob(), acked).value(), 0);
  EXPECT_EQ(store.ack(bob(), std::span<const Uuid>{}).value(), 0);
  auto left = store.load(bob());
  ASSERT_EQ(left->size(), 2U);
  EXPECT_EQ((*left)[0].id, ids[1]);
  EXPECT_EQ((*left)[1].id, ids[3]);
  EXPECT_EQ(store.messages_for(bob()), 2);
  EXPECT_EQ(store.bytes_for(bob()), 12);
  EXPECT_EQ(store.ack(bob(), std::vector<Uuid>{ids[1], ids[3]}).value(), 2);
  EXPECT_EQ(store.messages_for(bob()), 0);
  EXPECT_EQ(store.stored_messages(), 0);
  EXPECT_EQ(store.store_bytes(), 0);
}

TEST_F(OfflineStoreTest, TtlCountsFromTimestampOrStorageWhicheverIsEarlier) {
  OfflineStore store = open(StoreLimits{.buffer_ttl_ms = kTtlMs});
  const Uuid current = Uuid::generate();
  const Uuid future = Uuid::generate();
  const Uuid old = Uuid::generate();
  ASSERT_TRUE(store.store(bob(), alice(), current, kNow, kNow, "current").ok());
  // 2 min ahead (receivers accept that): counted from storage, so no extra lifetime.
  ASSERT_TRUE(store.store(bob(), carol(), future, kNow + 120'000, kNow, "future").ok());
  // 5 min old: counted from its timestamp, so 5 min left.
  ASSERT_TRUE(store.store(bob(), alice(), old, kNow - 300'000, kNow, "old").ok());
  // Older than the TTL: refused at once, the receiver would drop it.
  expect_code(store.store(bob(), alice(), Uuid::generate(), kNow - kTtlMs - 1, kNow, "stale"), Errc::expired);
  EXPECT_TRUE(store.store(bob(), alice(), Uuid::generate(), kNow - kTtlMs, kNow, "just in time").ok());

  EXPECT_TRUE(store.expire(kNow).value().empty()) << "expired only once past the TTL";
  auto expired = store.expire(kNow + 1);
  ASSERT_TRUE(expired.ok());
  ASSERT_EQ(expired->size(), 1U) << "the just-in-time one";
  EXPECT_TRUE(store.expire(kNow + 300'000).value().empty());
  expired = store.expire(kNow + 300'001);
  ASSERT_EQ(expired->size(), 1U);
  EXPECT_EQ(expired->front().id, old);
  EXPECT_EQ(expired->front().from, alice());
  EXPECT_EQ(expired->front().to, bob());
  EXPECT_TRUE(store.expire(kNow + kTtlMs).value().empty());
  expired = store.expire(kNow + kTtlMs + 1);
  ASSERT_EQ(expired->size(), 2U);
  std::vector<Uuid> ids{(*expired)[0].id, (*expired)[1].id};
  EXPECT_THAT(ids, ::testing::UnorderedElementsAre(current, future));
  EXPECT_EQ(store.stored_messages(), 0);
  EXPECT_EQ(store.store_bytes(), 0);
  EXPECT_EQ(store.messages_for(bob()), 0);
}

TEST_F(OfflineStoreTest, ExpireWorksInBoundedBatches) {
  OfflineStore store = open(StoreLimits{.buffer_ttl_ms = 1000});
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(store.store(bob(), alice(), Uuid::generate(), kNow, kNow, "x").ok());
  EXPECT_EQ(store.expire(kNow + 5000, 2)->size(), 2U);
  EXPECT_EQ(store.expire(kNow + 5000, 2)->size(), 2U);
  EXPECT_EQ(store.expire(kNow + 5000, 2)->size(), 1U);
  EXPECT_EQ(store.stored_messages(), 0);
}

TEST_F(OfflineStoreTest, DropAgentDeletesBothDirections) {
  OfflineStore store = open();
  ASSERT_TRUE(store.store(bob(), alice(), Uuid::generate(), kNow, kNow, "alice to bob").ok());
  ASSERT_TRUE(store.store(alice(), bob(), Uuid::generate(), kNow, kNow, "bob to alice").ok());
  ASSERT_TRUE(store.store(carol(), alice(), Uuid::generate(), kNow, kNow, "alice to carol").ok());
  ASSERT_TRUE(store.store(carol(), bob(), Uuid::generate(), kNow, kNow, "bob to carol").ok());
  EXPECT_EQ(store.drop_agent(alice()).value(), 3);
  EXPECT_EQ(store.stored_messages(), 1);
  EXPECT_EQ(store.messages_for(bob()), 0);
  EXPECT_EQ(store.messages_for(alice()), 0);
  ASSERT_EQ(store.load(carol())->size(), 1U);
  EXPECT_EQ(store.load(carol())->front().frame, "bob to carol");
  EXPECT_EQ(store.store_bytes(), 12);
  EXPECT_EQ(store.drop_agent(alice()).value(), 0);
}

TEST_F(OfflineStoreTest, ReopeningKeepsEverything) {
  const Uuid first = Uuid::generate();
  const Uuid second = Uuid::generate();
  std::int64_t last_seq = 0;
  {
    OfflineStore store = open();
    ASSERT_TRUE(store.store(bob(), alice(), first, kNow, kNow, "one").ok());
    ASSERT_TRUE(store.store(bob(), alice(), second, kNow, kNow, "two").ok());
    ASSERT_TRUE(store.store(carol(), alice(), Uuid::generate(), kNow, kNow, "three").ok());
    last_seq = store.load(carol())->back().seq;
    // The newest envelope is acknowledged: its seq must still never come back.
    const Uuid carols = store.load(carol())->front().id;
    ASSERT_EQ(store.ack(carol(), std::span(&carols, 1)).value(), 1);
  }
  OfflineStore store = open();
  EXPECT_EQ(store.stored_messages(), 2);
  EXPECT_EQ(store.store_bytes(), 6);
  EXPECT_EQ(store.messages_for(bob()), 2);
  EXPECT_EQ(store.bytes_for(bob()), 6);
  auto page = store.load(bob());
  ASSERT_EQ(page->size(), 2U);
  EXPECT_EQ((*page)[0].id, first);
  EXPECT_EQ((*page)[1].frame, "two");
  ASSERT_TRUE(store.store(bob(), alice(), Uuid::generate(), kNow, kNow, "four").ok());
  EXPECT_GT(store.load(bob())->back().seq, last_seq) << "seq is never reused";
}

TEST_F(OfflineStoreTest, KillMinus9LosesNothingQueued) {
  // relay.md: "A crash or kill -9 loses nothing that was answered queued". A child process stores
  // envelopes, reports each success (the moment the relay would answer `queued`) through a pipe,
  // and is killed with SIGKILL mid-stream; every reported envelope must be there after reopening.
  int report[2];
  ASSERT_EQ(::pipe(report), 0);
  const AgentId to = bob();
  const AgentId from = alice();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(report[0]);
    auto store = OfflineStore::open(path_);
    if (!store.ok()) ::_exit(3);
    for (int i = 0;; ++i) {
      if (!store->store(to, from, Uuid::generate(), kNow, kNow, "frame " + std::to_string(i)).ok()) ::_exit(4);
      const char queued = 'q';
      if (::write(report[1], &queued, 1) != 1) ::_exit(5);
      if (i == 40) ::raise(SIGKILL);  // no destructor, no close, no checkpoint
    }
  }
  ::close(report[1]);
  int answered = 0;
  char byte = 0;
  while (::read(report[0], &byte, 1) == 1) ++answered;
  ::close(report[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  EXPECT_EQ(answered, 41);

  OfflineStore store = open();
  EXPECT_EQ(store.messages_for(bob()), answered);
  auto page = store.load(bob(), 0, 1000);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(static_cast<int>(page->size()), answered);
  for (int i = 0; i < answered; ++i) EXPECT_EQ((*page)[static_cast<std::size_t>(i)].frame, "frame " + std::to_string(i));
}

TEST_F(OfflineStoreTest, OneRelayOwnsTheStore) {
  OfflineStore store = open();
  auto second = OfflineStore::open(path_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, Errc::internal);
  EXPECT_THAT(second.error().message, HasSubstr("another agent-mesh-relay"));
  EXPECT_TRUE(store.store(bob(), alice(), Uuid::generate(), kNow, kNow, "still mine").ok());
}

TEST_F(OfflineStoreTest, FilesArePrivate) {
  { OfflineStore store = open(); }
  struct stat info {};
  ASSERT_EQ(::stat(path_.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600U);
  ASSERT_EQ(::stat(path_.parent_path().c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0700U);
}

TEST_F(OfflineStoreTest, NewerSchemaIsRefused) {
  { OfflineStore store = open(); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  int version = 0;
  sqlite3_stmt* select = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT version FROM schema_version", -1, &select, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(select), SQLITE_ROW);
  version = sqlite3_column_int(select, 0);
  sqlite3_finalize(select);
  EXPECT_EQ(version, 1);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE schema_version SET version = 99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto store = OfflineStore::open(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.error().message, HasSubstr("schema version 99 is newer"));
}

TEST_F(OfflineStoreTest, ResumeTokensAreHashedAndSingleUse) {
  OfflineStore store = open();
  const ResumeToken token = ResumeToken::generate();
  EXPECT_EQ(token.text.size(), 43U);
  ASSERT_EQ(ResumeToken::hash_of(token.text), token.hash);
  EXPECT_FALSE(ResumeToken::hash_of("not a token").has_value());
  EXPECT_FALSE(ResumeToken::hash_of(token.text.substr(1)).has_value());
  EXPECT_NE(ResumeToken::generate().hash, token.hash);

  ASSERT_TRUE(store.put_resume_token(token.hash, alice(), kResumeTokenOpen).ok());
  EXPECT_EQ(store.resume_token_count().value(), 1);
  auto agent = store.consume_resume_token(token.hash, kNow);
  ASSERT_TRUE(agent.ok());
  ASSERT_TRUE(agent->has_value());
  EXPECT_EQ(**agent, alice());
  // Single use: the second presentation gets nothing (a normal challenge).
  EXPECT_FALSE(store.consume_resume_token(token.hash, kNow).value().has_value());
  EXPECT_EQ(store.resume_token_count().value(), 0);
  EXPECT_FALSE(store.consume_resume_token(ResumeToken::generate().hash, kNow).value().has_value());
}

TEST_F(OfflineStoreTest, ResumeTokensPresentedByOthersAreConsumedToo) {
  OfflineStore store = open();
  const ResumeToken token = ResumeToken::generate();
  ASSERT_TRUE(store.put_resume_token(token.hash, alice(), kResumeTokenOpen).ok());
  // Bob presents Alice's token: the caller sees a foreign agent and challenges; the token is gone.
  auto agent = store.consume_resume_token(token.hash, kNow);
  ASSERT_TRUE(agent.value().has_value());
  EXPECT_NE(**agent, bob());
  EXPECT_FALSE(store.consume_resume_token(token.hash, kNow).value().has_value()) << "Alice cannot use it now";
}

TEST_F(OfflineStoreTest, ResumeTokensExpireAfterTheirConnectionCloses) {
  OfflineStore store = open();
  const ResumeToken open_token = ResumeToken::generate();
  const ResumeToken closed_token = ResumeToken::generate();
  const ResumeToken late_token = ResumeToken::generate();
  ASSERT_TRUE(store.put_resume_token(open_token.hash, alice(), kResumeTokenOpen).ok());
  ASSERT_TRUE(store.put_resume_token(closed_token.hash, bob(), kResumeTokenOpen).ok());
  ASSERT_TRUE(store.put_resume_token(late_token.hash, carol(), kResumeTokenOpen).ok());
  // Bob's and Carol's connections close at kNow: valid for 5 more minutes.
  ASSERT_TRUE(store.set_resume_token_expiry(closed_token.hash, kNow + 300'000).ok());
  ASSERT_TRUE(store.set_resume_token_expiry(late_token.hash, kNow + 300'000).ok());
  EXPECT_TRUE(store.set_resume_token_expiry(ResumeToken::generate().hash, kNow).ok()) << "unknown: no error";

  // Valid strictly before the expiry instant, so a TTL of 0 means "expired on close".
  EXPECT_EQ(store.consume_resume_token(closed_token.hash, kNow + 299'999).value(), bob());
  EXPECT_FALSE(store.consume_resume_token(late_token.hash, kNow + 300'000).value().has_value());
  // Expired tokens are purged by expire(); open ones stay however much time passes.
  const ResumeToken purged = ResumeToken::generate();
  ASSERT_TRUE(store.put_resume_token(purged.hash, bob(), kNow + 1000).ok());
  EXPECT_EQ(store.resume_token_count().value(), 2);
  ASSERT_TRUE(store.expire(kNow + 1001).ok());
  EXPECT_EQ(store.resume_token_count().value(), 1);
  ASSERT_TRUE(store.expire(INT64_MAX - 1).ok());
  EXPECT_EQ(store.consume_resume_token(open_token.hash, kNow + 10'000'000).value(), alice());
}

TEST_F(OfflineStoreTest, ResumeTokensSurviveRestartAndOpenOnesAreClosed) {
  const ResumeToken open_token = ResumeToken::generate();
  const ResumeToken closed_token = ResumeToken::generate();
  {
    OfflineStore store = open();
    ASSERT_TRUE(store.put_resume_token(open_token.hash, alice(), kResumeTokenOpen).ok());
    ASSERT_TRUE(store.put_resume_token(closed_token.hash, bob(), kNow + 100).ok());
  }
  OfflineStore store = open();
  EXPECT_EQ(store.resume_token_count().value(), 2);
  // At start, connections open at the crash count as closed now.
  ASSERT_TRUE(store.close_open_resume_tokens(kNow + 300'000).ok());
  EXPECT_EQ(store.consume_resume_token(closed_token.hash, kNow + 99).value(), bob());
  EXPECT_FALSE(store.consume_resume_token(open_token.hash, kNow + 300'000).value().has_value());
}

TEST_F(OfflineStoreTest, ResumeTokensPerAgentAreBounded) {
  OfflineStore store = open(StoreLimits{.max_resume_tokens_per_agent = 3});
  std::vector<ResumeToken> tokens;
  for (int i = 0; i < 5; ++i) {
    tokens.push_back(ResumeToken::generate());
    ASSERT_TRUE(store.put_resume_token(tokens.back().hash, alice(), kResumeTokenOpen).ok());
  }
  const ResumeToken bobs = ResumeToken::generate();
  ASSERT_TRUE(store.put_resume_token(bobs.hash, bob(), kResumeTokenOpen).ok());
  EXPECT_EQ(store.resume_token_count().value(), 4);
  EXPECT_FALSE(store.consume_resume_token(tokens[0].hash, kNow).value().has_value()) << "oldest dropped";
  EXPECT_FALSE(store.consume_resume_token(tokens[1].hash, kNow).value().has_value());
  EXPECT_EQ(store.consume_resume_token(tokens[4].hash, kNow).value(), alice());
  EXPECT_EQ(store.consume_resume_token(bobs.hash, kNow).value(), bob());
}

TEST_F(OfflineStoreTest, RevocationDropsMessagesAndPersists) {
  Revocation self_signed;
  self_signed.agent_id = alice();
  self_signed.reason = "key compromised";
  self_signed.timestamp = kNow;
  self_signed.sign(alice_);
  Revocation admin;  // by the registry over the admin channel: no signature
  admin.agent_id = carol();
  admin.reason = "laptop lost";
  admin.timestamp = kNow + 1;

  const ResumeToken alices_token = ResumeToken::generate();
  {
    OfflineStore store = open();
    ASSERT_TRUE(store.store(bob(), alice(), Uuid::generate(), kNow, kNow, "from alice").ok());
    ASSERT_TRUE(store.store(alice(), bob(), Uuid::generate(), kNow, kNow, "to alice").ok());
    ASSERT_TRUE(store.store(bob(), carol(), Uuid::generate(), kNow, kNow, "from carol").ok());
    ASSERT_TRUE(store.put_resume_token(alices_token.hash, alice(), kResumeTokenOpen).ok());
    EXPECT_FALSE(store.is_revoked(alice()));

    auto result = store.add_revocation(self_signed);
    ASSERT_TRUE(result.ok()) << result.error().describe();
    EXPECT_TRUE(result->newly_revoked);
    EXPECT_EQ(result->dropped_messages, 2);
    EXPECT_TRUE(store.is_revoked(alice()));
    EXPECT_FALSE(store.is_revoked(bob()));
    EXPECT_EQ(store.stored_messages(), 1);
    EXPECT_EQ(store.resume_token_count().value(), 0) << "a revoked agent cannot resume";

    // Refused from then on, in both directions.
    expect_code(store.store(alice(), bob(), Uuid::generate(), kNow, kNow, "x"), Errc::revoked);
    expect_code(store.store(bob(), alice(), Uuid::generate(), kNow, kNow, "x"), Errc::revoked);

    result = store.add_revocation(self_signed);
    ASSERT_TRUE(result.ok());
    EXPECT_FALSE(result->newly_revoked);
    EXPECT_EQ(result->dropped_messages, 0);

    result = store.add_revocation(admin);
    ASSERT_TRUE(result.ok());
    EXPECT_TRUE(result->newly_revoked);
    EXPECT_EQ(result->dropped_messages, 1);
    EXPECT_EQ(store.stored_messages(), 0);
    EXPECT_EQ(store.revocation_count(), 2U);
  }
  // After a restart: still revoked, still refused, the documents intact.
  OfflineStore store = open();
  EXPECT_TRUE(store.is_revoked(alice()));
  EXPECT_TRUE(store.is_revoked(carol()));
  EXPECT_FALSE(store.is_revoked(bob()));
  expect_code(store.store(bob(), carol(), Uuid::generate(), kNow, kNow, "x"), Errc::revoked);
  auto revocations = store.load_revocations();
  ASSERT_TRUE(revocations.ok()) << revocations.error().describe();
  ASSERT_EQ(revocations->size(), 2U);
  EXPECT_EQ((*revocations)[0], self_signed);
  EXPECT_TRUE((*revocations)[0].verify().ok());
  EXPECT_EQ((*revocations)[1], admin);
  EXPECT_FALSE((*revocations)[1].signature.has_value());
}

TEST_F(OfflineStoreTest, StoreLimitsFollowTheConfig) {
  RelayConfig config;
  config.buffer_max_messages = 7;
  config.buffer_max_bytes = 70;
  config.buffer_ttl_s = 3;
  config.store_max_bytes = 700;
  const StoreLimits limits = store_limits_of(config);
  EXPECT_EQ(limits.buffer_max_messages, 7);
  EXPECT_EQ(limits.buffer_max_bytes, 70);
  EXPECT_EQ(limits.buffer_ttl_ms, 3000);
  EXPECT_EQ(limits.store_max_bytes, 700);
  const StoreLimits defaults;
  EXPECT_EQ(defaults.buffer_max_messages, 1000);
  EXPECT_EQ(defaults.buffer_max_bytes, 16 * 1024 * 1024);
  EXPECT_EQ(defaults.buffer_ttl_ms, 600'000);
  EXPECT_EQ(defaults.store_max_bytes, 1024LL * 1024 * 1024);
}

}  // namespace
}  // namespace agent_mesh::relay
