// SqliteStorage: agent cards and their search index, ACL rules and the ACL version, revocations
// and rotation (storage.hpp for the contracts).
#include <array>
#include <boost/json/value.hpp>
#include <utility>

#include "agent_mesh/json.hpp"
#include "registry/sqlite_db.hpp"

namespace agent_mesh::registry {

using sqlite::Binding;
using sqlite::clip;
using sqlite::Connection;
using sqlite::Query;
using sqlite::Transaction;

namespace {

// ---- Cards: columns, validation, index maintenance ----

constexpr const char* kCardColumns =
    "c.agent_id, c.group_id, c.owner_id, c.name, c.description, c.capabilities, c.metadata, c.timestamp_ms, "
    "c.signature, c.card_json, c.registered_at, c.updated_at";

AgentCardRecord read_card(const Query& query, int first) {
  AgentCardRecord card;
  card.agent_id = query.text(first);
  card.group_id = query.text(first + 1);
  card.owner_id = query.optional_text(first + 2);
  card.name = query.text(first + 3);
  card.description = query.optional_text(first + 4);
  card.capabilities_json = query.text(first + 5);
  card.metadata_json = query.optional_text(first + 6);
  card.timestamp = query.integer(first + 7);
  card.signature = query.text(first + 8);
  card.card_json = query.text(first + 9);
  card.registered_at = query.integer(first + 10);
  card.updated_at = query.integer(first + 11);
  return card;
}

struct IndexedCapability {
  std::string name;
  std::optional<std::string> description;
};

// The capability names and descriptions to index, from capabilities_json; checks metadata_json
// too. The handlers have already parsed the signed card strictly; this guards the index against a
// caller that did not. Error: bad_request.
Result<std::vector<IndexedCapability>> indexed_capabilities(const AgentCardRecord& card) {
  if (card.agent_id.empty()) return fail(Errc::bad_request, "card: agent_id must not be empty");
  if (card.name.empty()) return fail(Errc::bad_request, "card: name must not be empty");
  if (card.metadata_json) {
    auto metadata = json::parse_ijson(*card.metadata_json);
    if (!metadata || !metadata->is_object()) return fail(Errc::bad_request, "card: metadata must be a JSON object");
  }
  auto parsed = json::parse_ijson(card.capabilities_json);
  if (!parsed) return fail(Errc::bad_request, "card: capabilities: " + parsed.error().message);
  if (!parsed->is_array()) return fail(Errc::bad_request, "card: capabilities must be a JSON array");
  std::vector<IndexedCapability> capabilities;
  for (const boost::json::value& element : parsed->as_array()) {
    const std::string where = "card: capabilities[" + std::to_string(capabilities.size()) + "]";
    if (!element.is_object()) return fail(Errc::bad_request, where + " must be an object");
    const auto& object = element.as_object();
    const auto* name = object.if_contains("name");
    if (name == nullptr || !name->is_string() || name->as_string().empty()) {
      return fail(Errc::bad_request, where + ".name must be a non-empty string");
    }
    IndexedCapability capability;
    capability.name = std::string(name->as_string());
    if (const auto* description = object.if_contains("description")) {
      if (!description->is_string()) return fail(Errc::bad_request, where + ".description must be a string");
      capability.description = std::string(description->as_string());
    }
    capabilities.push_back(std::move(capability));
  }
  return capabilities;
}

// Rewrites the card's capability rows and its FTS row (rowid = cards.seq).
Status write_card_index(Connection& db, std::int64_t seq, const AgentCardRecord& card,
                        const std::vector<IndexedCapability>& capabilities) {
  {
    Query remove(db, "DELETE FROM card_capabilities WHERE card_seq = ?1");
    AGENT_MESH_TRY(remove.bind(1, seq));
    AGENT_MESH_TRY(remove.run());
  }
  {
    Query remove(db, "DELETE FROM cards_fts WHERE rowid = ?1");
    AGENT_MESH_TRY(remove.bind(1, seq));
    AGENT_MESH_TRY(remove.run());
  }
  std::string names;
  std::string descriptions;
  for (const IndexedCapability& capability : capabilities) {
    // A repeated name (a card the handlers would have refused) is indexed once.
    Query insert(db, "INSERT OR IGNORE INTO card_capabilities (card_seq, name, description) VALUES (?1, ?2, ?3)");
    AGENT_MESH_TRY(insert.bind(1, seq));
    AGENT_MESH_TRY(insert.bind(2, capability.name));
    AGENT_MESH_TRY(insert.bind(3, capability.description));
    AGENT_MESH_TRY(insert.run());
    names += capability.name;
    names += '\n';
    if (capability.description) {
      descriptions += *capability.description;
      descriptions += '\n';
    }
  }
  Query insert(db,
               "INSERT INTO cards_fts (rowid, name, description, capability_names, capability_descriptions) "
               "VALUES (?1, ?2, ?3, ?4, ?5)");
  AGENT_MESH_TRY(insert.bind(1, seq));
  AGENT_MESH_TRY(insert.bind(2, card.name));
  AGENT_MESH_TRY(insert.bind(3, card.description.value_or("")));
  AGENT_MESH_TRY(insert.bind(4, names));
  AGENT_MESH_TRY(insert.bind(5, descriptions));
  return insert.run();
}

// Deletes a card with its FTS row; the schema deletes its capability rows and the rules targeting
// it (foreign keys with ON DELETE CASCADE).
Status delete_card_row(Connection& db, std::int64_t seq) {
  {
    Query remove(db, "DELETE FROM cards_fts WHERE rowid = ?1");
    AGENT_MESH_TRY(remove.bind(1, seq));
    AGENT_MESH_TRY(remove.run());
  }
  Query remove(db, "DELETE FROM cards WHERE seq = ?1");
  AGENT_MESH_TRY(remove.bind(1, seq));
  return remove.run();
}

Result<bool> has_revocation(Connection& db, std::string_view agent_id) {
  Query query(db, "SELECT 1 FROM revocations WHERE agent_id = ?1");
  AGENT_MESH_TRY(query.bind(1, agent_id));
  return query.step();
}

// ---- Full-text query building ----

bool is_separator(char c) noexcept {
  // ASCII whitespace and every other control character (NUL included) separate terms.
  return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f;
}

// An FTS5 query from any user text: each term becomes a quoted string (inner quotes doubled),
// which FTS5 treats as a phrase of whatever tokens it contains, so operators (AND, OR, NOT, NEAR),
// column filters, parentheses, ^ and - are searched for as text. A term ending in * keeps prefix
// matching ("transl*" → "transl" *). Terms are ANDed (juxtaposition). Returns "" for a query
// without terms. Error: bad_request for the size bounds.
Result<std::string> fts_query(std::string_view q) {
  if (q.size() > kMaxSearchQueryBytes) {
    return fail(Errc::bad_request, "q must be at most " + std::to_string(kMaxSearchQueryBytes) + " bytes");
  }
  std::string query;
  std::size_t terms = 0;
  std::size_t i = 0;
  while (i < q.size()) {
    while (i < q.size() && is_separator(q[i])) ++i;
    const std::size_t start = i;
    while (i < q.size() && !is_separator(q[i])) ++i;
    std::string_view term = q.substr(start, i - start);
    bool prefix = false;
    while (!term.empty() && term.back() == '*') {
      term.remove_suffix(1);
      prefix = true;
    }
    if (term.empty()) continue;
    if (++terms > kMaxSearchQueryTerms) {
      return fail(Errc::bad_request, "q must have at most " + std::to_string(kMaxSearchQueryTerms) + " terms");
    }
    if (!query.empty()) query += ' ';
    query += '"';
    for (const char c : term) {
      if (c == '"') query += '"';
      query += c;
    }
    query += '"';
    if (prefix) query += " *";
  }
  return query;
}

// bm25 column weights for cards_fts (name, description, capability_names,
// capability_descriptions): a match in the name counts most, then a capability name, then the
// description, then a capability description.
constexpr const char* kRankExpression = "bm25(cards_fts, 10.0, 3.0, 5.0, 1.0)";

// ---- ACL rules ----

constexpr const char* kRuleColumns =
    "r.seq, r.id, r.group_id, r.source, r.target, r.allowed_capabilities, r.created_by, r.created_at";

Result<AclRule> read_rule(const Connection& db, const Query& query, int first) {
  AclRule rule;
  rule.id = query.text(first + 1);
  rule.group_id = query.text(first + 2);
  rule.source = query.text(first + 3);
  rule.target = query.text(first + 4);
  auto allowed = sqlite::parse_json_string_array(db, query.text(first + 5));
  if (!allowed) return std::move(allowed).error();
  rule.allowed_capabilities = std::move(allowed).value();
  rule.created_by = query.text(first + 6);
  rule.created_at = query.integer(first + 7);
  return rule;
}

Result<std::vector<AclRule>> rules_for_target_in(Connection& db, std::string_view agent_id) {
  Query query(db, std::string("SELECT ") + kRuleColumns + " FROM acl_rules r WHERE r.target = ?1 ORDER BY r.seq LIMIT ?2");
  AGENT_MESH_TRY(query.bind(1, agent_id));
  AGENT_MESH_TRY(query.bind(2, kMaxSnapshotItems));
  std::vector<AclRule> rules;
  for (;;) {
    auto row = query.step();
    if (!row) return std::move(row).error();
    if (!*row) break;
    auto rule = read_rule(db, query, 0);
    if (!rule) return std::move(rule).error();
    rules.push_back(std::move(rule).value());
  }
  return rules;
}

// ---- Revocations ----

constexpr const char* kRevocationColumns =
    "v.agent_id, v.kind, v.reason, v.timestamp_ms, v.effective_at, v.document, v.group_id, v.recorded_at, v.seq";

Result<RevocationRecord> read_revocation(const Connection& db, const Query& query, int first) {
  RevocationRecord record;
  record.agent_id = query.text(first);
  const std::string kind = query.text(first + 1);
  if (kind == "self") {
    record.kind = RevocationKind::self;
  } else if (kind == "admin") {
    record.kind = RevocationKind::admin;
  } else if (kind == "rotation") {
    record.kind = RevocationKind::rotation;
  } else {
    return fail(Errc::internal, "registry database " + db.path() + ": unknown revocation kind in a row");
  }
  record.reason = query.text(first + 2);
  record.timestamp = query.integer(first + 3);
  record.effective_at = query.integer(first + 4);
  record.document_json = query.text(first + 5);
  record.group_id = query.optional_text(first + 6);
  record.recorded_at = query.integer(first + 7);
  return record;
}

Result<std::optional<RevocationRecord>> find_revocation(Connection& db, std::string_view agent_id) {
  Query query(db, std::string("SELECT ") + kRevocationColumns + " FROM revocations v WHERE v.agent_id = ?1");
  AGENT_MESH_TRY(query.bind(1, agent_id));
  auto row = query.step();
  if (!row) return std::move(row).error();
  if (!*row) return std::optional<RevocationRecord>{};
  auto record = read_revocation(db, query, 0);
  if (!record) return std::move(record).error();
  return std::optional<RevocationRecord>{std::move(record).value()};
}

// Stores (or makes earlier) a revocation inside the caller's write transaction; see
// RegistryStorage::store_revocation. `group_hint` is recorded when the agent has no card (a
// rotation has already renamed it).
Result<StoredRevocation> store_revocation_in(Connection& db, const NewRevocation& revocation, std::int64_t now,
                                             const std::optional<std::string>& group_hint = std::nullopt) {
  auto existing = find_revocation(db, revocation.agent_id);
  if (!existing) return std::move(existing).error();
  if (*existing && (*existing)->effective_at <= revocation.effective_at) {
    return StoredRevocation{std::move(**existing), false};
  }
  std::optional<std::int64_t> card_seq;
  std::optional<std::string> group_id;
  {
    Query card(db, "SELECT seq, group_id FROM cards WHERE agent_id = ?1");
    AGENT_MESH_TRY(card.bind(1, revocation.agent_id));
    auto row = card.step();
    if (!row) return std::move(row).error();
    if (*row) {
      card_seq = card.integer(0);
      group_id = card.text(1);
    }
  }
  if (!group_id) group_id = group_hint;
  if (!group_id && *existing) group_id = (*existing)->group_id;

  RevocationRecord record;
  record.agent_id = revocation.agent_id;
  record.kind = revocation.kind;
  record.reason = revocation.reason;
  record.timestamp = revocation.timestamp;
  record.effective_at = revocation.effective_at;
  record.document_json = revocation.document_json;
  record.group_id = group_id;
  record.recorded_at = now;
  {
    // An earlier revocation replaces the stored one in place, keeping its position in the list.
    Query write(db, *existing ? "UPDATE revocations SET kind = ?2, reason = ?3, timestamp_ms = ?4, effective_at = ?5, "
                                "document = ?6, group_id = ?7, recorded_at = ?8 WHERE agent_id = ?1"
                              : "INSERT INTO revocations (agent_id, kind, reason, timestamp_ms, effective_at, document, "
                                "group_id, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    AGENT_MESH_TRY(write.bind(1, record.agent_id));
    AGENT_MESH_TRY(write.bind(2, to_string(record.kind)));
    AGENT_MESH_TRY(write.bind(3, record.reason));
    AGENT_MESH_TRY(write.bind(4, record.timestamp));
    AGENT_MESH_TRY(write.bind(5, record.effective_at));
    AGENT_MESH_TRY(write.bind(6, record.document_json));
    AGENT_MESH_TRY(write.bind(7, record.group_id));
    AGENT_MESH_TRY(write.bind(8, now));
    AGENT_MESH_TRY(write.run());
  }
  // A revoked agent is no longer discoverable and no longer a rule target.
  if (card_seq && record.effective_at <= now) AGENT_MESH_TRY(delete_card_row(db, *card_seq));
  AGENT_MESH_TRY(sqlite::bump_acl_version(db));
  return StoredRevocation{std::move(record), true};
}

Result<RevokedAgents> revoked_in_group_in(Connection& db, std::string_view group_id, std::int64_t now) {
  Query query(db,
              "SELECT agent_id, effective_at FROM revocations WHERE group_id = ?1 "
              "OR agent_id IN (SELECT source FROM acl_rules WHERE group_id = ?1) ORDER BY agent_id LIMIT ?2");
  AGENT_MESH_TRY(query.bind(1, group_id));
  AGENT_MESH_TRY(query.bind(2, kMaxSnapshotItems));
  RevokedAgents revoked;
  for (;;) {
    auto row = query.step();
    if (!row) return std::move(row).error();
    if (!*row) break;
    const std::int64_t effective_at = query.integer(1);
    if (effective_at <= now) {
      revoked.agent_ids.push_back(query.text(0));
    } else if (!revoked.next_effective_at || effective_at < *revoked.next_effective_at) {
      revoked.next_effective_at = effective_at;
    }
  }
  return revoked;
}

}  // namespace

// ---- Cards ----

Result<PutCardResult> sqlite::put_card_in(Connection& db, AgentCardRecord card, std::int64_t now) {
  auto capabilities = indexed_capabilities(card);
  if (!capabilities) return std::move(capabilities).error();
  auto revoked = has_revocation(db, card.agent_id);
  if (!revoked) return std::move(revoked).error();
  if (*revoked) return fail(Errc::revoked, "agent " + clip(card.agent_id) + " is revoked");
  {
    Query group(db, "SELECT 1 FROM groups WHERE id = ?1");
    AGENT_MESH_TRY(group.bind(1, card.group_id));
    auto row = group.step();
    if (!row) return std::move(row).error();
    if (!*row) return fail(Errc::not_found, "group not found");
  }
  if (card.owner_id) {
    Query owner(db, "SELECT 1 FROM users WHERE id = ?1");
    AGENT_MESH_TRY(owner.bind(1, *card.owner_id));
    auto row = owner.step();
    if (!row) return std::move(row).error();
    if (!*row) return fail(Errc::not_found, "owner user not found");
  }

  PutCardResult result;
  std::optional<std::int64_t> seq;
  {
    Query existing(db, "SELECT seq, group_id, owner_id, timestamp_ms, registered_at FROM cards WHERE agent_id = ?1");
    AGENT_MESH_TRY(existing.bind(1, card.agent_id));
    auto row = existing.step();
    if (!row) return std::move(row).error();
    if (*row) {
      seq = existing.integer(0);
      if (card.timestamp <= existing.integer(3)) {
        return fail(Errc::conflict, "card timestamp is not newer than the stored card's (no replay, no rollback)");
      }
      if (existing.text(1) != card.group_id) result.moved_from_group = existing.text(1);
      if (!card.owner_id) card.owner_id = existing.optional_text(2);
      card.registered_at = existing.integer(4);
    }
  }
  card.updated_at = now;
  if (seq) {
    Query update(db,
                 "UPDATE cards SET group_id = ?2, owner_id = ?3, name = ?4, description = ?5, capabilities = ?6, "
                 "metadata = ?7, timestamp_ms = ?8, signature = ?9, card_json = ?10, updated_at = ?11 WHERE seq = ?1");
    AGENT_MESH_TRY(update.bind(1, *seq));
    AGENT_MESH_TRY(update.bind(2, card.group_id));
    AGENT_MESH_TRY(update.bind(3, card.owner_id));
    AGENT_MESH_TRY(update.bind(4, card.name));
    AGENT_MESH_TRY(update.bind(5, card.description));
    AGENT_MESH_TRY(update.bind(6, card.capabilities_json));
    AGENT_MESH_TRY(update.bind(7, card.metadata_json));
    AGENT_MESH_TRY(update.bind(8, card.timestamp));
    AGENT_MESH_TRY(update.bind(9, card.signature));
    AGENT_MESH_TRY(update.bind(10, card.card_json));
    AGENT_MESH_TRY(update.bind(11, now));
    AGENT_MESH_TRY(update.run());
    if (result.moved_from_group) {
      // Its rules belonged to the old group (a rule's target is an agent of the rule's group).
      Query remove(db, "DELETE FROM acl_rules WHERE target = ?1 AND group_id <> ?2");
      AGENT_MESH_TRY(remove.bind(1, card.agent_id));
      AGENT_MESH_TRY(remove.bind(2, card.group_id));
      AGENT_MESH_TRY(remove.run());
      AGENT_MESH_TRY(bump_acl_version(db));
    }
  } else {
    card.registered_at = now;
    Query insert(db,
                 "INSERT INTO cards (agent_id, group_id, owner_id, name, description, capabilities, metadata, "
                 "timestamp_ms, signature, card_json, registered_at, updated_at) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11) RETURNING seq");
    AGENT_MESH_TRY(insert.bind(1, card.agent_id));
    AGENT_MESH_TRY(insert.bind(2, card.group_id));
    AGENT_MESH_TRY(insert.bind(3, card.owner_id));
    AGENT_MESH_TRY(insert.bind(4, card.name));
    AGENT_MESH_TRY(insert.bind(5, card.description));
    AGENT_MESH_TRY(insert.bind(6, card.capabilities_json));
    AGENT_MESH_TRY(insert.bind(7, card.metadata_json));
    AGENT_MESH_TRY(insert.bind(8, card.timestamp));
    AGENT_MESH_TRY(insert.bind(9, card.signature));
    AGENT_MESH_TRY(insert.bind(10, card.card_json));
    AGENT_MESH_TRY(insert.bind(11, now));
    auto row = insert.step();
    if (!row) return std::move(row).error();
    seq = insert.integer(0);
    AGENT_MESH_TRY(insert.run());
    result.created = true;
    // A new agent of the group: "*" expands to one more ID.
    AGENT_MESH_TRY(bump_acl_version(db));
  }
  AGENT_MESH_TRY(write_card_index(db, *seq, card, *capabilities));
  result.card = std::move(card);
  return result;
}

Result<AgentCardRecord> SqliteStorage::get_card(std::string_view agent_id) {
  return locked([&]() -> Result<AgentCardRecord> {
    Query query(*db_, std::string("SELECT ") + kCardColumns + " FROM cards c WHERE c.agent_id = ?1");
    AGENT_MESH_TRY(query.bind(1, agent_id));
    auto row = query.step();
    if (!row) return std::move(row).error();
    if (!*row) return fail(Errc::not_found, "agent not found");
    return read_card(query, 0);
  });
}

Result<PutCardResult> SqliteStorage::put_card(AgentCardRecord card, std::int64_t now) {
  return locked([&]() -> Result<PutCardResult> {
    Transaction transaction(*db_);
    AGENT_MESH_TRY(transaction.begin_write());
    auto put = sqlite::put_card_in(*db_, std::move(card), now);
    if (!put) return std::move(put).error();
    AGENT_MESH_TRY(transaction.commit());
    return put;
  });
}

Status SqliteStorage::delete_card(std::string_view agent_id) {
  return locked([&]() -> Status {
    Connection& db = *db_;
    Transaction transaction(db);
    AGENT_MESH_TRY(transaction.begin_write());
    std::int64_t seq = 0;
    {
      Query query(db, "SELECT seq FROM cards WHERE agent_id = ?1");
      AGENT_MESH_TRY(query.bind(1, agent_id));
      auto row = query.step();
      if (!row) return std::move(row).error();
      if (!*row) return fail(Errc::not_found, "agent not found");
      seq = query.integer(0);
    }
    AGENT_MESH_TRY(delete_card_row(db, seq));
    AGENT_MESH_TRY(sqlite::bump_acl_version(db));
    return transaction.commit();
  });
}

Result<Page<AgentCardRecord>> SqliteStorage::search_cards(const CardQuery& request) {
  AGENT_MESH_TRY(sqlite::check_page_limit(request.page.limit));
  std::string match;
  if (request.q) {
    auto built = fts_query(*request.q);
    if (!built) return std::move(built).error();
    match = std::move(built).value();
  }
  const bool full_text = !match.empty();
  // Full text pages by offset (bm25 scores move as the corpus changes, so they make no stable
  // key); the rest by agent_id. Different kinds, so one cannot be passed to the other.
  const char* cursor_kind = full_text ? "cards-q" : "cards";
  std::int64_t offset = 0;
  std::string after;
  if (!request.page.cursor.empty()) {
    if (full_text) {
      auto decoded = sqlite::decode_integer_cursor(cursor_kind, request.page.cursor);
      if (!decoded) return std::move(decoded).error();
      offset = *decoded;
    } else {
      auto decoded = sqlite::decode_cursor(cursor_kind, request.page.cursor);
      if (!decoded) return std::move(decoded).error();
      after = std::move(decoded).value();
    }
  }
  if (request.visible_groups.empty()) return Page<AgentCardRecord>{};

  // One SQL text per combination of filters (at most 16), each prepared once and cached.
  std::string sql = std::string("SELECT ") + kCardColumns;
  std::vector<Binding> bindings;
  if (full_text) {
    sql += " FROM cards_fts JOIN cards c ON c.seq = cards_fts.rowid WHERE cards_fts MATCH ?";
    bindings.emplace_back(match);
    sql += " AND c.group_id IN (SELECT value FROM json_each(?))";
  } else {
    sql += " FROM cards c WHERE c.group_id IN (SELECT value FROM json_each(?))";
  }
  bindings.emplace_back(sqlite::json_string_array(request.visible_groups));
  if (request.group) {
    sql += " AND c.group_id = ?";
    bindings.emplace_back(*request.group);
  }
  if (request.capability) {
    sql += " AND c.seq IN (SELECT card_seq FROM card_capabilities WHERE name = ?)";
    bindings.emplace_back(*request.capability);
  }
  if (request.online) {
    sql += request.online->online ? " AND c.agent_id IN (SELECT value FROM json_each(?))"
                                  : " AND c.agent_id NOT IN (SELECT value FROM json_each(?))";
    bindings.emplace_back(sqlite::json_string_array(request.online->online_agent_ids));
  }
  if (full_text) {
    sql += std::string(" ORDER BY ") + kRankExpression + ", c.agent_id LIMIT ? OFFSET ?";
    bindings.emplace_back(request.page.limit + 1);
    bindings.emplace_back(offset);
  } else {
    sql += " AND c.agent_id > ? ORDER BY c.agent_id LIMIT ?";
    bindings.emplace_back(after);
    bindings.emplace_back(request.page.limit + 1);
  }

  return locked([&]() -> Result<Page<AgentCardRecord>> {
    Query query(*db_, sql);
    AGENT_MESH_TRY(query.bind_all(bindings));
    std::vector<AgentCardRecord> cards;
    for (;;) {
      auto row = query.step();
      if (!row) {
        // The quoting above makes every q a valid FTS5 query; should one still be refused, it is
        // the client's input, not a server failure.
        if (full_text && query.last_error_code() == SQLITE_ERROR) {
          return fail(Errc::bad_request, "q is not a valid search query");
        }
        return std::move(row).error();
      }
      if (!*row) break;
      cards.push_back(read_card(query, 0));
    }
    const std::int64_t limit = request.page.limit;
    if (full_text) {
      return sqlite::finish_page(std::move(cards), limit, [&](const AgentCardRecord&) {
        return sqlite::encode_cursor("cards-q", std::to_string(offset + limit));
      });
    }
    return sqlite::finish_page(std::move(cards), limit, [](const AgentCardRecord& last) {
      return sqlite::encode_cursor("cards", last.agent_id);
    });
  });
}

// ---- ACL ----

Result<AclRule> SqliteStorage::create_rule(const NewAclRule& rule, std::int64_t now) {
  if (rule.source.empty()) return fail(Errc::bad_request, "rule source must be \"*\" or an agent ID");
  if (rule.target.empty()) return fail(Errc::bad_request, "rule target must be an agent ID");
  if (rule.allowed_capabilities.empty()) {
    return fail(Errc::bad_request, "allowed_capabilities must name at least one capability or \"*\"");
  }
  return locked([&]() -> Result<AclRule> {
    Connection& db = *db_;
    Transaction transaction(db);
    AGENT_MESH_TRY(transaction.begin_write());
    {
      Query group(db, "SELECT 1 FROM groups WHERE id = ?1");
      AGENT_MESH_TRY(group.bind(1, rule.group_id));
      auto row = group.step();
      if (!row) return std::move(row).error();
      if (!*row) return fail(Errc::not_found, "group not found");
    }
    {
      Query target(db, "SELECT 1 FROM cards WHERE agent_id = ?1 AND group_id = ?2");
      AGENT_MESH_TRY(target.bind(1, rule.target));
      AGENT_MESH_TRY(target.bind(2, rule.group_id));
      auto row = target.step();
      if (!row) return std::move(row).error();
      if (!*row) return fail(Errc::not_found, "the target agent is not registered in this group");
    }
    AclRule stored;
    stored.id = sqlite::random_id("acl_");
    stored.group_id = rule.group_id;
    stored.source = rule.source;
    stored.target = rule.target;
    stored.allowed_capabilities = rule.allowed_capabilities;
    stored.created_by = rule.created_by;
    stored.created_at = now;
    Query insert(db,
                 "INSERT INTO acl_rules (id, group_id, source, target, allowed_capabilities, created_by, created_at) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    AGENT_MESH_TRY(insert.bind(1, stored.id));
    AGENT_MESH_TRY(insert.bind(2, stored.group_id));
    AGENT_MESH_TRY(insert.bind(3, stored.source));
    AGENT_MESH_TRY(insert.bind(4, stored.target));
    AGENT_MESH_TRY(insert.bind(5, sqlite::json_string_array(stored.allowed_capabilities)));
    AGENT_MESH_TRY(insert.bind(6, stored.created_by));
    AGENT_MESH_TRY(insert.bind(7, now));
    AGENT_MESH_TRY(insert.run());
    AGENT_MESH_TRY(sqlite::bump_acl_version(db));
    AGENT_MESH_TRY(transaction.commit());
    return stored;
  });
}

Result<AclRule> SqliteStorage::get_rule(std::string_view rule_id) {
  return locked([&]() -> Result<AclRule> {
    Query query(*db_, std::string("SELECT ") + kRuleColumns + " FROM acl_rules r WHERE r.id = ?1");
    AGENT_MESH_TRY(query.bind(1, rule_id));
    auto row = query.step();
    if (!row) return std::move(row).error();
    if (!*row) return fail(Errc::not_found, "rule not found");
    return read_rule(*db_, query, 0);
  });
}

Status SqliteStorage::delete_rule(std::string_view rule_id) {
  return locked([&]() -> Status {
    Connection& db = *db_;
    Transaction transaction(db);
    AGENT_MESH_TRY(transaction.begin_write());
    Query remove(db, "DELETE FROM acl_rules WHERE id = ?1");
    AGENT_MESH_TRY(remove.bind(1, rule_id));
    AGENT_MESH_TRY(remove.run());
    if (sqlite3_changes(db.handle()) == 0) return fail(Errc::not_found, "rule not found");
    AGENT_MESH_TRY(sqlite::bump_acl_version(db));
    return transaction.commit();
  });
}

Result<Page<AclRule>> SqliteStorage::list_rules(const std::vector<std::string>& group_ids, const PageRequest& page) {
  AGENT_MESH_TRY(sqlite::check_page_limit(page.limit));
  std::int64_t after = 0;
  if (!page.cursor.empty()) {
    auto decoded = sqlite::decode_integer_cursor("rules", page.cursor);
    if (!decoded) return std::move(decoded).error();
    after = *decoded;
  }
  const std::string groups = sqlite::json_string_array(group_ids);
  return locked([&]() -> Result<Page<AclRule>> {
    Query query(*db_, std::string("SELECT ") + kRuleColumns +
                          " FROM acl_rules r WHERE r.group_id IN (SELECT value FROM json_each(?1)) AND r.seq > ?2 "
                          "ORDER BY r.seq LIMIT ?3");
    AGENT_MESH_TRY(query.bind(1, groups));
    AGENT_MESH_TRY(query.bind(2, after));
    AGENT_MESH_TRY(query.bind(3, page.limit + 1));
    std::vector<std::pair<std::int64_t, AclRule>> rows;
    for (;;) {
      auto row = query.step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      auto rule = read_rule(*db_, query, 0);
      if (!rule) return std::move(rule).error();
      rows.emplace_back(query.integer(0), std::move(rule).value());
    }
    auto keyed = sqlite::finish_page(std::move(rows), page.limit, [](const auto& last) {
      return sqlite::encode_cursor("rules", std::to_string(last.first));
    });
    Page<AclRule> result;
    result.next_cursor = std::move(keyed.next_cursor);
    for (auto& [seq, rule] : keyed.items) result.items.push_back(std::move(rule));
    return result;
  });
}

Result<std::vector<AclRule>> SqliteStorage::rules_for_target(std::string_view agent_id) {
  return locked([&] { return rules_for_target_in(*db_, agent_id); });
}

Result<std::int64_t> SqliteStorage::acl_version() {
  return locked([&] { return sqlite::read_acl_version(*db_); });
}

Result<AclSnapshot> SqliteStorage::acl_snapshot(std::string_view agent_id, std::int64_t now) {
  return locked([&]() -> Result<AclSnapshot> {
    Connection& db = *db_;
    Transaction transaction(db);
    AGENT_MESH_TRY(transaction.begin_read());
    AclSnapshot snapshot;
    auto version = sqlite::read_acl_version(db);
    if (!version) return std::move(version).error();
    snapshot.version = *version;
    {
      Query card(db, "SELECT group_id FROM cards WHERE agent_id = ?1");
      AGENT_MESH_TRY(card.bind(1, agent_id));
      auto row = card.step();
      if (!row) return std::move(row).error();
      if (!*row) return fail(Errc::not_found, "agent not found");
      snapshot.group_id = card.text(0);
    }
    auto rules = rules_for_target_in(db, agent_id);
    if (!rules) return std::move(rules).error();
    snapshot.rules = std::move(rules).value();
    {
      Query agents(db, "SELECT agent_id FROM cards WHERE group_id = ?1 ORDER BY agent_id LIMIT ?2");
      AGENT_MESH_TRY(agents.bind(1, snapshot.group_id));
      AGENT_MESH_TRY(agents.bind(2, kMaxSnapshotItems));
      for (;;) {
        auto row = agents.step();
        if (!row) return std::move(row).error();
        if (!*row) break;
        snapshot.group_agents.push_back(agents.text(0));
      }
    }
    auto revoked = revoked_in_group_in(db, snapshot.group_id, now);
    if (!revoked) return std::move(revoked).error();
    snapshot.revoked = std::move(revoked->agent_ids);
    snapshot.next_revocation_at = revoked->next_effective_at;
    AGENT_MESH_TRY(transaction.commit());
    return snapshot;
  });
}

// ---- Revocations and rotation ----

Result<StoredRevocation> SqliteStorage::store_revocation(const NewRevocation& revocation, std::int64_t now) {
  if (revocation.agent_id.empty()) return fail(Errc::bad_request, "revocation: agent_id must not be empty");
  if (auto document = json::parse_ijson(revocation.document_json); !document || !document->is_object()) {
    return fail(Errc::bad_request, "revocation: the document must be a JSON object");
  }
  return locked([&]() -> Result<StoredRevocation> {
    Transaction transaction(*db_);
    AGENT_MESH_TRY(transaction.begin_write());
    auto stored = store_revocation_in(*db_, revocation, now);
    if (!stored) return std::move(stored).error();
    AGENT_MESH_TRY(transaction.commit());
    return stored;
  });
}

Result<RevocationRecord> SqliteStorage::get_revocation(std::string_view agent_id) {
  return locked([&]() -> Result<RevocationRecord> {
    auto found = find_revocation(*db_, agent_id);
    if (!found) return std::move(found).error();
    if (!*found) return fail(Errc::not_found, "no revocation for this agent");
    return std::move(**found);
  });
}

Result<bool> SqliteStorage::is_revoked(std::string_view agent_id, std::int64_t now) {
  return locked([&]() -> Result<bool> {
    Query query(*db_, "SELECT 1 FROM revocations WHERE agent_id = ?1 AND effective_at <= ?2");
    AGENT_MESH_TRY(query.bind(1, agent_id));
    AGENT_MESH_TRY(query.bind(2, now));
    return query.step();
  });
}

Result<Page<RevocationRecord>> SqliteStorage::list_revocations(const PageRequest& page) {
  AGENT_MESH_TRY(sqlite::check_page_limit(page.limit));
  std::int64_t after = 0;
  if (!page.cursor.empty()) {
    auto decoded = sqlite::decode_integer_cursor("revocations", page.cursor);
    if (!decoded) return std::move(decoded).error();
    after = *decoded;
  }
  return locked([&]() -> Result<Page<RevocationRecord>> {
    Query query(*db_, std::string("SELECT ") + kRevocationColumns +
                          " FROM revocations v WHERE v.seq > ?1 ORDER BY v.seq LIMIT ?2");
    AGENT_MESH_TRY(query.bind(1, after));
    AGENT_MESH_TRY(query.bind(2, page.limit + 1));
    std::vector<std::pair<std::int64_t, RevocationRecord>> rows;
    for (;;) {
      auto row = query.step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      auto record = read_revocation(*db_, query, 0);
      if (!record) return std::move(record).error();
      rows.emplace_back(query.integer(8), std::move(record).value());
    }
    auto keyed = sqlite::finish_page(std::move(rows), page.limit, [](const auto& last) {
      return sqlite::encode_cursor("revocations", std::to_string(last.first));
    });
    Page<RevocationRecord> result;
    result.next_cursor = std::move(keyed.next_cursor);
    for (auto& [seq, record] : keyed.items) result.items.push_back(std::move(record));
    return result;
  });
}

Result<RevokedAgents> SqliteStorage::revoked_in_group(std::string_view group_id, std::int64_t now) {
  return locked([&] { return revoked_in_group_in(*db_, group_id, now); });
}

Result<RotationResult> SqliteStorage::rotate_card(const CardRotation& rotation, std::int64_t now) {
  const std::string& old_id = rotation.old_agent_id;
  AgentCardRecord card = rotation.new_card;
  if (old_id == card.agent_id) return fail(Errc::bad_request, "rotation: old and new agent IDs must differ");
  auto capabilities = indexed_capabilities(card);
  if (!capabilities) return std::move(capabilities).error();
  if (auto document = json::parse_ijson(rotation.rotation_json); !document || !document->is_object()) {
    return fail(Errc::bad_request, "rotation: the rotation object must be a JSON object");
  }
  return locked([&]() -> Result<RotationResult> {
    Connection& db = *db_;
    Transaction transaction(db);
    AGENT_MESH_TRY(transaction.begin_write());
    std::int64_t seq = 0;
    {
      Query old_card(db, "SELECT seq, group_id, owner_id, registered_at FROM cards WHERE agent_id = ?1");
      AGENT_MESH_TRY(old_card.bind(1, old_id));
      auto row = old_card.step();
      if (!row) return std::move(row).error();
      if (!*row) return fail(Errc::not_found, "no card is registered for the old agent ID");
      seq = old_card.integer(0);
      if (old_card.text(1) != card.group_id) {
        return fail(Errc::bad_request, "rotation: the new card must stay in the old card's group");
      }
      card.owner_id = old_card.optional_text(2);
      card.registered_at = old_card.integer(3);
    }
    const std::array<const std::string*, 2> ids{&old_id, &card.agent_id};
    for (const std::string* id : ids) {
      auto revoked = has_revocation(db, *id);
      if (!revoked) return std::move(revoked).error();
      if (*revoked) return fail(Errc::revoked, "agent " + clip(*id) + " is revoked");
    }
    {
      Query taken(db, "SELECT 1 FROM cards WHERE agent_id = ?1");
      AGENT_MESH_TRY(taken.bind(1, card.agent_id));
      auto row = taken.step();
      if (!row) return std::move(row).error();
      if (*row) return fail(Errc::conflict, "a card is already registered for the new agent ID");
    }
    RotationResult result;
    {
      Query count(db, "SELECT count(*) FROM acl_rules WHERE source = ?1 OR target = ?1");
      AGENT_MESH_TRY(count.bind(1, old_id));
      auto row = count.step();
      if (!row) return std::move(row).error();
      result.moved_rules = count.integer(0);
    }
    card.updated_at = now;
    {
      // Renaming the card renames the rules targeting it (ON UPDATE CASCADE); capability rows
      // follow seq, which does not change.
      Query update(db,
                   "UPDATE cards SET agent_id = ?2, name = ?3, description = ?4, capabilities = ?5, metadata = ?6, "
                   "timestamp_ms = ?7, signature = ?8, card_json = ?9, updated_at = ?10 WHERE seq = ?1");
      AGENT_MESH_TRY(update.bind(1, seq));
      AGENT_MESH_TRY(update.bind(2, card.agent_id));
      AGENT_MESH_TRY(update.bind(3, card.name));
      AGENT_MESH_TRY(update.bind(4, card.description));
      AGENT_MESH_TRY(update.bind(5, card.capabilities_json));
      AGENT_MESH_TRY(update.bind(6, card.metadata_json));
      AGENT_MESH_TRY(update.bind(7, card.timestamp));
      AGENT_MESH_TRY(update.bind(8, card.signature));
      AGENT_MESH_TRY(update.bind(9, card.card_json));
      AGENT_MESH_TRY(update.bind(10, now));
      AGENT_MESH_TRY(update.run());
    }
    {
      Query sources(db, "UPDATE acl_rules SET source = ?2 WHERE source = ?1");
      AGENT_MESH_TRY(sources.bind(1, old_id));
      AGENT_MESH_TRY(sources.bind(2, card.agent_id));
      AGENT_MESH_TRY(sources.run());
    }
    AGENT_MESH_TRY(write_card_index(db, seq, card, *capabilities));
    NewRevocation revocation;
    revocation.agent_id = old_id;
    revocation.kind = RevocationKind::rotation;
    revocation.reason = "rotated to " + card.agent_id;
    revocation.timestamp = rotation.timestamp;
    revocation.effective_at = rotation.grace_until;
    revocation.document_json = rotation.rotation_json;
    auto stored = store_revocation_in(db, revocation, now, card.group_id);  // bumps the ACL version
    if (!stored) return std::move(stored).error();
    AGENT_MESH_TRY(transaction.commit());
    result.card = std::move(card);
    result.old_revocation = std::move(stored->revocation);
    return result;
  });
}

}  // namespace agent_mesh::registry
