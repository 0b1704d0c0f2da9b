// RegistryStorage on one SQLite database file (registry.md "Storage").
//
// Opening: missing parent directories are created 0700 and a new file 0600 (it holds token and
// setup-key hashes and who registered what). Journal WAL, foreign_keys ON, synchronous FULL (a
// token shown once or a counted setup-key use is on disk before the answer), busy_timeout (another
// process, e.g. the sqlite3 shell or a backup, holding a lock briefly is waited for, not an error).
//
// Schema: numbered migrations recorded in `schema_migrations` (one row per applied version),
// applied at open inside one BEGIN IMMEDIATE transaction, so two processes opening a new file at
// once cannot both migrate. A file whose version is newer than this binary knows is refused with
// an error naming both versions (Errc::internal), never misread.
//
// Threading: one connection behind one mutex; every public call is one critical section and one
// transaction. The ACL listener is called after the mutex is released.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>

#include "registry/storage.hpp"

namespace agent_mesh::registry {

// The database file inside --data-dir (registry.md: `--db-path` defaults to `<data-dir>/mesh.db`).
inline constexpr std::string_view kDefaultDbFileName = "mesh.db";

struct SqliteOptions {
  // How long a statement waits for a lock held by another connection before failing.
  int busy_timeout_ms = 5000;
  // false: commits are not fsynced (PRAGMA synchronous = OFF). Only for bulk loads into a fresh
  // file (bench/registry fills 100,000 cards); the servers always keep the default.
  bool fsync_commits = true;
};

namespace sqlite {
class Connection;  // sqlite_db.hpp
}

class SqliteStorage final : public RegistryStorage {
 public:
  // The schema version this binary writes (the number of migrations it knows).
  [[nodiscard]] static std::int64_t schema_version() noexcept;

  // Opens or creates the database and migrates it. Errors: internal, with the path and SQLite's
  // message, or "schema version N is newer than this agent-mesh build understands (M)".
  [[nodiscard]] static Result<std::unique_ptr<SqliteStorage>> open(const std::filesystem::path& path,
                                                                   SqliteOptions options = {});

  SqliteStorage(const SqliteStorage&) = delete;
  SqliteStorage& operator=(const SqliteStorage&) = delete;
  ~SqliteStorage() override;

  Result<User> create_user(const NewUser& user, std::int64_t now) override;
  Result<User> find_user(std::string_view user_id) override;
  Result<User> find_user_by_login(std::string_view login) override;
  Result<User> find_user_by_subject(std::string_view provider_subject) override;
  Result<std::int64_t> count_users() override;
  Result<std::vector<std::string>> all_group_ids() override;

  Result<Group> create_group(std::string_view name, std::string_view creator_id, std::int64_t now) override;
  Result<Group> get_group(std::string_view group_id) override;
  Result<std::vector<UserGroup>> groups_of_user(std::string_view user_id) override;
  Result<std::optional<GroupRole>> member_role(std::string_view group_id, std::string_view user_id) override;
  Status add_member(std::string_view group_id, std::string_view user_id, GroupRole role, std::int64_t now) override;
  Status remove_member(std::string_view group_id, std::string_view user_id) override;
  Result<Page<GroupMember>> list_members(std::string_view group_id, const PageRequest& page) override;

  Result<ApiToken> create_token(const NewApiToken& token, std::int64_t now) override;
  Result<Page<ApiToken>> list_tokens(std::string_view user_id, const PageRequest& page) override;
  Status revoke_token(std::string_view user_id, std::string_view token_id, std::int64_t now) override;
  Result<TokenMatch> find_token(std::string_view hash, std::int64_t now) override;

  Result<SetupKey> create_setup_key(const NewSetupKey& key, std::int64_t now) override;
  Result<SetupKey> get_setup_key(std::string_view key_id) override;
  Result<Page<SetupKey>> list_setup_keys(const std::vector<std::string>& group_ids, const PageRequest& page) override;
  Status revoke_setup_key(std::string_view key_id, std::int64_t now) override;
  Result<ConsumedSetupKey> consume_setup_key(std::string_view hash, std::int64_t now) override;
  Result<SetupKeyRegistration> register_card_with_setup_key(std::string_view hash, AgentCardRecord card,
                                                            std::int64_t now) override;

  Result<AgentCardRecord> get_card(std::string_view agent_id) override;
  Result<PutCardResult> put_card(AgentCardRecord card, std::int64_t now) override;
  Status delete_card(std::string_view agent_id) override;
  Result<Page<AgentCardRecord>> search_cards(const CardQuery& query) override;

  Result<AclRule> create_rule(const NewAclRule& rule, std::int64_t now) override;
  Result<AclRule> get_rule(std::string_view rule_id) override;
  Status delete_rule(std::string_view rule_id) override;
  Result<Page<AclRule>> list_rules(const std::vector<std::string>& group_ids, const PageRequest& page) override;
  Result<std::vector<AclRule>> rules_for_target(std::string_view agent_id) override;
  Result<std::int64_t> acl_version() override;
  Result<AclSnapshot> acl_snapshot(std::string_view agent_id, std::int64_t now) override;
  void set_acl_listener(std::function<void(std::int64_t version)> listener) override;

  Result<StoredRevocation> store_revocation(const NewRevocation& revocation, std::int64_t now) override;
  Result<RevocationRecord> get_revocation(std::string_view agent_id) override;
  Result<bool> is_revoked(std::string_view agent_id, std::int64_t now) override;
  Result<Page<RevocationRecord>> list_revocations(const PageRequest& page) override;
  Result<RevokedAgents> revoked_in_group(std::string_view group_id, std::int64_t now) override;
  Result<RotationResult> rotate_card(const CardRotation& rotation, std::int64_t now) override;

  Result<AuditEntry> append_audit(AuditEntry entry) override;
  Result<Page<AuditEntry>> list_audit(const PageRequest& page) override;
  Result<StatusCounts> status_counts() override;

 private:
  explicit SqliteStorage(std::unique_ptr<sqlite::Connection> connection) noexcept;

  // Runs `body` under the mutex, then tells the listener about a version its transaction
  // committed. Every public operation goes through here.
  template <class Body>
  auto locked(Body&& body) -> decltype(body());

  std::mutex mutex_;
  std::unique_ptr<sqlite::Connection> db_;
  std::mutex listener_mutex_;
  std::function<void(std::int64_t)> listener_;
};

}  // namespace agent_mesh::registry
