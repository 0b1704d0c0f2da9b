// The registry's storage (registry.md "Storage"): one abstract interface, so the HTTP handlers are
// written once and the scale-out PostgreSQL backend can follow behind the same tests. SqliteStorage
// (sqlite_storage.hpp) is the first implementation.
//
// What lives here and what does not:
//   - Every operation is atomic (one transaction) and returns Result<T>/Status.
//   - Integrity rules the database can enforce atomically live here: uniqueness (409
//     Errc::conflict), "a group keeps an owner", setup-key use counting, card timestamps only
//     growing, revoked IDs never registering again, rules following a rotated card, the ACL
//     version growing in the same transaction as the change.
//   - Business rules ("who may do what", signature checks, size limits of user input, RFC 3339
//     rendering) stay in the handlers.
//
// Conventions (the HTTP layer relies on them):
//   - Times are int64 Unix milliseconds. Every writing operation takes `now` (the storage reads no
//     clock, docs/design.md "Sans-IO core").
//   - IDs: users and groups are UUID v4 (protocol §1). API tokens "tok_", setup keys "sk_" and ACL
//     rules "acl_" followed by base64url of 16 random bytes (22 characters), so a pasted ID says
//     what it is. Audit entries are numbered (int64, growing).
//   - Secret hashes are registry::hash_secret() output: SHA-256 as 64 lower-case hex characters;
//     anything else is Errc::bad_request.
//   - Lists are pages: PageRequest{limit 1..200, cursor}. `cursor` is empty for the first page,
//     otherwise the `next_cursor` of the previous page of the same list, passed back unchanged.
//     Cursors are opaque base64url text; a malformed one, or one from another list, is
//     Errc::bad_request. A page has next_cursor iff more items may follow.
//   - Errors: Errc::not_found / conflict / unauthorized / forbidden / revoked / bad_request with a
//     message naming the problem (safe to show to the client: never a secret, never SQL), and
//     Errc::internal for database failures (log it, answer 500).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent_mesh/result.hpp"

namespace agent_mesh::registry {

// ---- Bounds (each with its reason) ----

// registry.md "Lists": limit default 50, max 200.
inline constexpr std::int64_t kDefaultPageLimit = 50;
inline constexpr std::int64_t kMaxPageLimit = 200;
// Unpaginated sets (a user's groups, an ACL sync answer) are capped so no request can make the
// registry build an unbounded answer. 10,000 rules for one target or agents in one group is far
// beyond any real mesh; past it the answer is truncated, which can only deny (rules only allow).
inline constexpr std::int64_t kMaxGroupsPerUserListed = 1000;
inline constexpr std::int64_t kMaxSnapshotItems = 10000;
// Full-text queries: a search box, not a document. Longer input is Errc::bad_request.
inline constexpr std::size_t kMaxSearchQueryBytes = 1024;
inline constexpr std::size_t kMaxSearchQueryTerms = 32;

// ---- Paging ----

struct PageRequest {
  std::int64_t limit = kDefaultPageLimit;  // 1..kMaxPageLimit, else Errc::bad_request
  std::string cursor;                      // empty: first page
};

template <class T>
struct Page {
  std::vector<T> items;
  std::optional<std::string> next_cursor;  // absent on the last page
};

// ---- Users and groups ----

enum class GroupRole : std::uint8_t { owner, admin, member };

[[nodiscard]] constexpr std::string_view to_string(GroupRole role) noexcept {
  switch (role) {
    case GroupRole::owner: return "owner";
    case GroupRole::admin: return "admin";
    case GroupRole::member: return "member";
  }
  return "member";
}
[[nodiscard]] constexpr std::optional<GroupRole> group_role_from_string(std::string_view text) noexcept {
  if (text == "owner") return GroupRole::owner;
  if (text == "admin") return GroupRole::admin;
  if (text == "member") return GroupRole::member;
  return std::nullopt;
}

struct User {
  std::string id;     // UUID v4
  std::string login;  // unique, compared case-insensitively (ASCII), kept as given
  std::optional<std::string> provider_subject;  // e.g. "github:12345"; unique when present
  std::string personal_group_id;
  std::int64_t created_at = 0;
};

struct NewUser {
  std::string login;
  std::optional<std::string> provider_subject;
};

struct Group {
  std::string id;  // UUID v4
  std::string name;
  std::optional<std::string> personal_user_id;  // set on a user's personal group
  std::string created_by;                       // user id
  std::int64_t created_at = 0;
};

// One of a user's groups (GET /users/me): `personal` is true for this user's own personal group
// only (another user's personal group the user was added to is not "personal" for them).
struct UserGroup {
  Group group;
  GroupRole role = GroupRole::member;
  bool personal = false;
};

struct GroupMember {
  std::string user_id;
  std::string login;
  GroupRole role = GroupRole::member;
  std::int64_t added_at = 0;
};

// ---- API tokens and setup keys ----

struct ApiToken {
  std::string id;  // "tok_" + 22 base64url characters
  std::string user_id;
  std::string name;
  std::int64_t created_at = 0;
  std::optional<std::int64_t> expires_at;  // valid while now < expires_at
};

struct NewApiToken {
  std::string user_id;
  std::string name;
  std::string hash;  // hash_secret(token)
  std::optional<std::int64_t> expires_at;
};

struct TokenMatch {
  std::string token_id;
  User user;
};

struct SetupKey {
  std::string id;  // "sk_" + 22 base64url characters
  std::string group_id;
  std::string created_by;  // actor text, e.g. "user:<id>" or "admin"
  std::optional<std::int64_t> max_uses;  // absent: unlimited
  std::int64_t uses = 0;
  std::optional<std::int64_t> expires_at;  // usable while now < expires_at
  std::int64_t created_at = 0;
  std::optional<std::int64_t> last_used_at;
};

struct NewSetupKey {
  std::string group_id;
  std::string created_by;
  std::string hash;  // hash_secret(key)
  std::optional<std::int64_t> max_uses;  // ≥ 1 when present
  std::optional<std::int64_t> expires_at;
};

struct ConsumedSetupKey {
  std::string setup_key_id;
  std::string group_id;
};

// ---- Agent cards ----

// A stored card. `owner_id` is the user who registered it, or absent when it was registered with a
// setup key (the group's owners and admins then act for it). JSON members are kept as text.
struct AgentCardRecord {
  std::string agent_id;  // 43 base64url characters (protocol §1)
  std::string group_id;
  std::optional<std::string> owner_id;
  std::string name;
  std::optional<std::string> description;
  // JSON array of {name, description?, input_schema?, output_schema?}; each element must be an
  // object with a string `name` (Errc::bad_request otherwise). Names and descriptions are indexed.
  std::string capabilities_json;
  std::optional<std::string> metadata_json;  // a JSON object when present
  std::int64_t timestamp = 0;                // from the signed card
  std::string signature;                     // base64url, as signed
  std::string card_json;                     // the signed registration body as received
  std::int64_t registered_at = 0;            // set by the storage on first insert
  std::int64_t updated_at = 0;               // set by the storage on every put
};

struct PutCardResult {
  AgentCardRecord card;  // as stored
  bool created = false;  // false: an existing card was replaced
  // The card moved from this group (its rules there were deleted).
  std::optional<std::string> moved_from_group;
};

struct SetupKeyRegistration {
  ConsumedSetupKey key;
  PutCardResult put;
};

// The relay's live view, passed in at query time (registry.md: online comes from the relay).
struct OnlineFilter {
  bool online = true;                          // true: only these agents; false: all but these
  std::vector<std::string> online_agent_ids;
};

struct CardQuery {
  std::vector<std::string> visible_groups;  // required: only cards of these groups are returned
  std::optional<std::string> group;         // narrows to one group (still within visible_groups)
  std::optional<std::string> capability;    // exact capability name
  std::optional<std::string> q;             // full text, any user input (see search_cards)
  std::optional<OnlineFilter> online;
  PageRequest page;
};

// ---- ACL ----

struct AclRule {
  std::string id;  // "acl_" + 22 base64url characters
  std::string group_id;
  std::string source;  // "*" or an agent ID
  std::string target;  // an agent ID with a card in group_id
  std::vector<std::string> allowed_capabilities;  // names or {"*"}
  std::string created_by;  // actor text, e.g. "user:<id>" or "admin"
  std::int64_t created_at = 0;
};

struct NewAclRule {
  std::string group_id;
  std::string source;
  std::string target;
  std::vector<std::string> allowed_capabilities;
  std::string created_by;
};

// Everything GET /acl/sync answers for one agent, read in one transaction.
struct AclSnapshot {
  std::int64_t version = 0;
  std::string group_id;                  // the agent's group
  std::vector<AclRule> rules;            // rules whose target is the agent, oldest first
  std::vector<std::string> group_agents; // agent IDs with a card in the group: what "*" expands to
  std::vector<std::string> revoked;      // see revoked_in_group
  // The earliest effective_at still in the future among the group's revocations (a rotation's
  // grace_until): the answer changes then although the version does not, so a long poll should end
  // by that time.
  std::optional<std::int64_t> next_revocation_at;
};

// ---- Revocations and rotation ----

enum class RevocationKind : std::uint8_t { self, admin, rotation };

[[nodiscard]] constexpr std::string_view to_string(RevocationKind kind) noexcept {
  switch (kind) {
    case RevocationKind::self: return "self";
    case RevocationKind::admin: return "admin";
    case RevocationKind::rotation: return "rotation";
  }
  return "self";
}

struct RevocationRecord {
  std::string agent_id;
  RevocationKind kind = RevocationKind::self;
  std::string reason;
  std::int64_t timestamp = 0;     // the object's timestamp
  std::int64_t effective_at = 0;  // revoked from this time on (a rotation's grace_until)
  std::string document_json;      // the object as submitted (self-signed, admin or rotation)
  std::optional<std::string> group_id;  // the group of the agent's card when it was recorded
  std::int64_t recorded_at = 0;
};

struct NewRevocation {
  std::string agent_id;
  RevocationKind kind = RevocationKind::self;
  std::string reason;
  std::int64_t timestamp = 0;
  std::int64_t effective_at = 0;
  std::string document_json;
};

struct StoredRevocation {
  RevocationRecord revocation;  // as stored after the call
  bool changed = false;         // false: an equal-or-earlier revocation was already stored
};

struct RevokedAgents {
  std::vector<std::string> agent_ids;  // effective at `now`, sorted
  std::optional<std::int64_t> next_effective_at;
};

struct CardRotation {
  std::string old_agent_id;
  AgentCardRecord new_card;  // agent_id = the new ID; group_id must equal the old card's
  std::int64_t timestamp = 0;    // the rotation object's timestamp
  std::int64_t grace_until = 0;  // the old ID is revoked from then on
  std::string rotation_json;     // the rotation object as submitted
};

struct RotationResult {
  AgentCardRecord card;          // the card under its new ID
  std::int64_t moved_rules = 0;  // rules whose source or target was renamed
  RevocationRecord old_revocation;
};

// ---- Audit and status ----

struct AuditEntry {
  std::int64_t id = 0;  // assigned by append_audit; grows with every entry
  std::int64_t at = 0;
  std::string actor;   // "user:<id>", "agent:<id>", "admin", "setup_key:<id>"
  std::string action;  // e.g. "card.register", "acl.create"
  std::string target;
  std::string detail_json = "{}";
};

struct StatusCounts {
  std::int64_t users = 0;
  std::int64_t groups = 0;
  std::int64_t agents = 0;
  std::int64_t rules = 0;
  std::int64_t revocations = 0;
};

// ---- The interface ----

// Thread-safe: every implementation may be called from several threads at once.
class RegistryStorage {
 public:
  virtual ~RegistryStorage() = default;

  // -- Users --

  // Creates the user and, in the same transaction, the user's personal group (named after the
  // login) with the user as its owner. Errors: conflict (login taken, compared case-insensitively,
  // or provider subject already linked), bad_request (empty login).
  [[nodiscard]] virtual Result<User> create_user(const NewUser& user, std::int64_t now) = 0;
  // Errors: not_found.
  [[nodiscard]] virtual Result<User> find_user(std::string_view user_id) = 0;
  [[nodiscard]] virtual Result<User> find_user_by_login(std::string_view login) = 0;
  [[nodiscard]] virtual Result<User> find_user_by_subject(std::string_view provider_subject) = 0;
  [[nodiscard]] virtual Result<std::int64_t> count_users() = 0;
  // Every group's id (the admin token sees all groups), at most kMaxSnapshotItems, by id.
  [[nodiscard]] virtual Result<std::vector<std::string>> all_group_ids() = 0;

  // -- Groups --

  // Creates a shared group with `creator_id` as its owner. Errors: not_found (no such user),
  // bad_request (empty name).
  [[nodiscard]] virtual Result<Group> create_group(std::string_view name, std::string_view creator_id,
                                                   std::int64_t now) = 0;
  // Errors: not_found.
  [[nodiscard]] virtual Result<Group> get_group(std::string_view group_id) = 0;
  // The user's groups, personal group first, then by name (at most kMaxGroupsPerUserListed).
  [[nodiscard]] virtual Result<std::vector<UserGroup>> groups_of_user(std::string_view user_id) = 0;
  // The user's role in the group, absent when not a member (or no such group).
  [[nodiscard]] virtual Result<std::optional<GroupRole>> member_role(std::string_view group_id,
                                                                     std::string_view user_id) = 0;
  // Errors: not_found (group or user), conflict (already a member).
  [[nodiscard]] virtual Status add_member(std::string_view group_id, std::string_view user_id, GroupRole role,
                                          std::int64_t now) = 0;
  // Errors: not_found (not a member), conflict (the group's last owner).
  [[nodiscard]] virtual Status remove_member(std::string_view group_id, std::string_view user_id) = 0;
  // Members ordered by user id. Errors: not_found (no such group), bad_request (page).
  [[nodiscard]] virtual Result<Page<GroupMember>> list_members(std::string_view group_id,
                                                               const PageRequest& page) = 0;

  // -- API tokens --

  // Errors: not_found (no such user), bad_request (hash format), conflict (hash already stored).
  [[nodiscard]] virtual Result<ApiToken> create_token(const NewApiToken& token, std::int64_t now) = 0;
  // The user's unrevoked tokens (expired ones included, so they can be cleaned up), oldest first.
  [[nodiscard]] virtual Result<Page<ApiToken>> list_tokens(std::string_view user_id, const PageRequest& page) = 0;
  // Revokes the user's own token. Errors: not_found (unknown, another user's, or already revoked:
  // the answer does not tell which).
  [[nodiscard]] virtual Status revoke_token(std::string_view user_id, std::string_view token_id,
                                            std::int64_t now) = 0;
  // The token's user if the hash is stored, unrevoked and now < expires_at. Errors: unauthorized
  // ("API token unknown or revoked" / "API token expired"), bad_request (hash format).
  [[nodiscard]] virtual Result<TokenMatch> find_token(std::string_view hash, std::int64_t now) = 0;

  // -- Setup keys --

  // Errors: not_found (no such group), bad_request (hash format, max_uses < 1), conflict (hash).
  [[nodiscard]] virtual Result<SetupKey> create_setup_key(const NewSetupKey& key, std::int64_t now) = 0;
  // Errors: not_found (unknown or revoked).
  [[nodiscard]] virtual Result<SetupKey> get_setup_key(std::string_view key_id) = 0;
  // Unrevoked keys of these groups (used-up and expired ones included), oldest first.
  [[nodiscard]] virtual Result<Page<SetupKey>> list_setup_keys(const std::vector<std::string>& group_ids,
                                                               const PageRequest& page) = 0;
  // Errors: not_found (unknown or already revoked).
  [[nodiscard]] virtual Status revoke_setup_key(std::string_view key_id, std::int64_t now) = 0;
  // Checks and counts one use. Errors: unauthorized with "setup key unknown", "setup key
  // revoked", "setup key expired" or "setup key used up"; bad_request (hash format).
  [[nodiscard]] virtual Result<ConsumedSetupKey> consume_setup_key(std::string_view hash, std::int64_t now) = 0;
  // consume_setup_key and put_card in one transaction: the use is counted only if the card is
  // stored. The card's group must be the key's (Errc::forbidden otherwise); owner_id is stored
  // absent. Errors: those of both operations.
  [[nodiscard]] virtual Result<SetupKeyRegistration> register_card_with_setup_key(std::string_view hash,
                                                                                AgentCardRecord card,
                                                                                std::int64_t now) = 0;

  // -- Agent cards --

  // Errors: not_found.
  [[nodiscard]] virtual Result<AgentCardRecord> get_card(std::string_view agent_id) = 0;
  // Inserts, or replaces the card with this agent_id (registered_at kept, updated_at = now; an
  // absent owner_id keeps the stored owner). A card moved to another group loses the rules that
  // targeted it in its old group. Bumps the ACL version when the card is new or moved.
  // Errors: not_found (group, or owner user), conflict (card.timestamp not newer than the stored
  // card's: no replay, no rollback), revoked (a revocation is stored for this agent ID, even one
  // effective later), bad_request (capabilities/metadata JSON).
  [[nodiscard]] virtual Result<PutCardResult> put_card(AgentCardRecord card, std::int64_t now) = 0;
  // Deletes the card and the rules targeting it; bumps the ACL version. Errors: not_found.
  [[nodiscard]] virtual Status delete_card(std::string_view agent_id) = 0;
  // Group-scoped discovery. Without q (or with a q that has no search terms): ordered by agent_id,
  // keyset pagination (stable under inserts and deletes). With q: FTS5 over name, description,
  // capability names and descriptions, ordered by bm25 (name weighs most) then agent_id, paged
  // by offset (a card inserted or deleted between pages can shift the boundary by one). q is any
  // user text: every whitespace-separated term is quoted (a trailing * keeps prefix matching) and
  // the terms are ANDed, so FTS syntax in q is searched for literally and never an error.
  // Errors: bad_request (page, cursor, q longer than kMaxSearchQueryBytes or with more than
  // kMaxSearchQueryTerms terms).
  [[nodiscard]] virtual Result<Page<AgentCardRecord>> search_cards(const CardQuery& query) = 0;

  // -- ACL --

  // Errors: not_found (group, or target without a card in the group), bad_request (empty
  // allowed_capabilities). Bumps the ACL version.
  [[nodiscard]] virtual Result<AclRule> create_rule(const NewAclRule& rule, std::int64_t now) = 0;
  // Errors: not_found.
  [[nodiscard]] virtual Result<AclRule> get_rule(std::string_view rule_id) = 0;
  // Bumps the ACL version. Errors: not_found.
  [[nodiscard]] virtual Status delete_rule(std::string_view rule_id) = 0;
  // Rules of these groups, oldest first.
  [[nodiscard]] virtual Result<Page<AclRule>> list_rules(const std::vector<std::string>& group_ids,
                                                         const PageRequest& page) = 0;
  // Rules whose target is the agent, oldest first (at most kMaxSnapshotItems).
  [[nodiscard]] virtual Result<std::vector<AclRule>> rules_for_target(std::string_view agent_id) = 0;
  // The current ACL version: starts at 1 and grows by one in the transaction of every change that
  // can change an /acl/sync answer (rule created/deleted, card new/moved/deleted/rotated,
  // revocation stored or made earlier).
  [[nodiscard]] virtual Result<std::int64_t> acl_version() = 0;
  // Everything /acl/sync answers for this agent at `now`, consistently. Errors: not_found (no card).
  [[nodiscard]] virtual Result<AclSnapshot> acl_snapshot(std::string_view agent_id, std::int64_t now) = 0;
  // Called with the new version after every commit that bumped it, outside the storage's lock, on
  // the thread that made the change (for waking long polls). One listener; empty to clear.
  virtual void set_acl_listener(std::function<void(std::int64_t version)> listener) = 0;

  // -- Revocations and rotation --

  // Stores a verified revocation. Idempotent per agent: the earliest effective_at wins (a later or
  // equal one changes nothing; an earlier one replaces the stored one). A revocation effective at
  // or before `now` deletes the agent's card and the rules targeting it. Bumps the ACL version
  // when something changed.
  [[nodiscard]] virtual Result<StoredRevocation> store_revocation(const NewRevocation& revocation,
                                                                  std::int64_t now) = 0;
  // Errors: not_found.
  [[nodiscard]] virtual Result<RevocationRecord> get_revocation(std::string_view agent_id) = 0;
  // True iff a revocation with effective_at ≤ now is stored.
  [[nodiscard]] virtual Result<bool> is_revoked(std::string_view agent_id, std::int64_t now) = 0;
  // Every revocation (pending rotations included), in the order they were first stored.
  [[nodiscard]] virtual Result<Page<RevocationRecord>> list_revocations(const PageRequest& page) = 0;
  // Revoked IDs that matter to a group's daemons: revocations recorded for the group's cards, and
  // revoked agents named as the source of one of its rules. At most kMaxSnapshotItems.
  [[nodiscard]] virtual Result<RevokedAgents> revoked_in_group(std::string_view group_id, std::int64_t now) = 0;
  // protocol §7 rotation, in one transaction: the card moves to new_card.agent_id (fields from
  // new_card, registered_at and owner kept), every rule naming the old ID as source or target
  // names the new one, and the old ID is revoked (kind rotation) effective at grace_until.
  // Errors: not_found (no card for the old ID), conflict (a card exists for the new ID),
  // revoked (either ID already has a revocation), bad_request (group differs, JSON).
  [[nodiscard]] virtual Result<RotationResult> rotate_card(const CardRotation& rotation, std::int64_t now) = 0;

  // -- Audit log and status --

  // Appends an entry (its id and `at` are returned as stored). Errors: bad_request (detail not JSON).
  [[nodiscard]] virtual Result<AuditEntry> append_audit(AuditEntry entry) = 0;
  // Newest first.
  [[nodiscard]] virtual Result<Page<AuditEntry>> list_audit(const PageRequest& page) = 0;
  [[nodiscard]] virtual Result<StatusCounts> status_counts() = 0;
};

}  // namespace agent_mesh::registry
