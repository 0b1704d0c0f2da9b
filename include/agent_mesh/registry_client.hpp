// RegistryClient: the SDK's registry helpers (meshd-sdk.md "Optional registry helpers"): register a
// signed card, discover agents, follow the ACL sync, and any other registry call, over the
// registry's REST API (registry.md) with agent-signed HTTP (agent_mesh/agent_auth.hpp).
//
//   agent_mesh::RegistryClient registry("https://mesh.example.com", agent_mesh::KeyPair::load("bob.key").value());
//   agent_mesh::AgentCard card;
//   card.group_id = agent_mesh::Uuid::parse(group_id).value();   // e.g. from call("GET", "/api/v1/users/me", ...)
//   card.name = "bob";
//   card.capabilities.emplace_back().name = "echo";
//   if (auto stored = registry.register_card(card, user_token); !stored) {
//     std::cerr << stored.error().describe() << "\n";            // e.g. "unauthorized: ..."
//   }
//   auto page = registry.discover({.capability = "echo"});        // {"items": [...], "next_cursor"?}
//   auto acl = registry.acl_sync(/*since=*/0, /*wait_s=*/25);      // long poll: returns on a change
//
// Blocking: every method performs one HTTP request (one connection, `Connection: close`) on the
// calling thread and returns when it is answered or its timeout has passed. Thread-safe: methods may
// be called from any number of threads at once. No global state. Not copyable or movable (hold it
// in a std::unique_ptr to pass it around).
//
// Credentials per call (registry.md "Credentials"):
//   info()                     none
//   register_card()            the user's API token (Bearer); the card is signed with the identity
//   register_with_setup_key()  the setup key in the body, nothing else
//   update_card(), deregister(), discover(), acl_sync()
//                              the identity's signature (Authorization: MeshAgent ...), which needs
//                              the identity registered (discovery sees its group only)
//   call()                     a Bearer token when given, otherwise the identity's signature
//   call_anonymous()           none
//
// Errors: the registry's `{"error": {"code", "message"}}` becomes an Error with that code and
// message (an unknown code → Errc::internal with "<code>: <message>"); a non-2xx answer without that
// shape → a code from its status (400 bad_request, 401 unauthorized, 403 forbidden, 404 not_found,
// 409 conflict, 413 too_large, 429 rate_limited, 502/503/504 unreachable, others internal); no
// connection (refused, DNS, TLS) → Errc::unreachable and a timeout → Errc::timeout, both naming the
// registry's URL; a base URL that is not http(s)://host[:port][/prefix] → Errc::bad_request from
// every call.
//
// Signature timestamps are the wall clock in ms, made strictly increasing per RegistryClient, so two
// identical requests in the same millisecond still carry different signatures (Ed25519 is
// deterministic and the registry refuses a repeated signature). Two RegistryClient objects with the
// same identity should not send the same request in the same millisecond.
#pragma once

#include <atomic>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "agent_mesh/acl.hpp"
#include "agent_mesh/agent_card.hpp"
#include "agent_mesh/identity.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh {

struct RegistryClientOptions {
  // Extra PEM file of trusted CA certificates for https (in addition to the system store).
  std::string ca_file{};
  // Per request, every step together (resolve, connect, TLS, write, read). acl_sync() uses
  // wait_s + 10 s instead.
  std::chrono::milliseconds timeout{10'000};
};

// GET /api/v1/agents?capability=&q=&online=&group=&limit=&cursor= (registry.md "Agent cards");
// members left empty are not sent.
struct DiscoverQuery {
  std::optional<std::string> capability{};  // exact capability name
  std::optional<std::string> q{};           // full text over names and descriptions
  std::optional<bool> online{};
  std::optional<std::string> group{};   // a group ID among the caller's
  std::optional<int> limit{};           // default 50, max 200 (the registry's)
  std::optional<std::string> cursor{};  // next_cursor of the previous page
};

class RegistryClient {
 public:
  // `base_url`: http(s)://host[:port], optionally with a path prefix ("https://example.com/mesh");
  // a trailing '/' is ignored. The URL is checked here; a bad one makes every call fail with
  // Errc::bad_request.
  RegistryClient(std::string base_url, KeyPair identity, RegistryClientOptions options = {});

  [[nodiscard]] const AgentId& agent_id() const noexcept { return identity_.agent_id(); }
  [[nodiscard]] const std::string& base_url() const noexcept { return base_url_; }

  // GET /api/v1/info → {version, relay_url, oauth}. No credentials.
  [[nodiscard]] Result<boost::json::object> info() const;

  // POST /api/v1/agents with `Authorization: Bearer <user_token>`. The card is completed and signed
  // here: agent_id = the identity's (a card naming another agent → bad_request), timestamp = now when
  // 0. Returns the stored card resource (registry.md "Agent cards").
  [[nodiscard]] Result<boost::json::object> register_card(AgentCard card, std::string_view user_token) const;
  // POST /api/v1/register-with-key {setup_key, card}; the card is completed and signed as above.
  [[nodiscard]] Result<boost::json::object> register_with_setup_key(AgentCard card, std::string_view setup_key) const;
  // PUT /api/v1/agents/{agent_id}, agent-signed; the card is completed and signed as above (its
  // timestamp must be newer than the stored card's: leave it 0 for now).
  [[nodiscard]] Result<boost::json::object> update_card(AgentCard card) const;
  // DELETE /api/v1/agents/{agent_id}, agent-signed.
  [[nodiscard]] Status deregister() const;

  // GET /api/v1/agents?..., agent-signed → {"items": [cards], "next_cursor"?}.
  [[nodiscard]] Result<boost::json::object> discover(const DiscoverQuery& query = {}) const;

  // GET /api/v1/acl/sync?agent_id=<identity>&since=<since>&wait_s=<wait_s>, agent-signed: a long
  // poll that answers as soon as the ACL version exceeds `since`, otherwise after wait_s seconds
  // (0 ..= 30) with the current state. The request's timeout is wait_s + 10 s.
  [[nodiscard]] Result<AclSync> acl_sync(std::int64_t since, int wait_s) const;

  // Any other registry call: `target` is the path and query as sent, e.g. "/api/v1/users/me" or
  // "/api/v1/acl?limit=10" (already percent-encoded). With a body it is sent as JSON. Authenticated
  // with `Authorization: Bearer <bearer_token>` when given, otherwise agent-signed. Returns the
  // answer's JSON (null for an empty body, e.g. 204).
  [[nodiscard]] Result<boost::json::value> call(std::string_view method, std::string_view target,
                                                std::optional<boost::json::value> body = std::nullopt,
                                                std::optional<std::string_view> bearer_token = std::nullopt) const;
  // The same without credentials: calls anyone may make (GET /api/v1/info, a self-signed
  // revocation's POST /api/v1/revocations, the device login).
  [[nodiscard]] Result<boost::json::value> call_anonymous(std::string_view method, std::string_view target,
                                                          std::optional<boost::json::value> body = std::nullopt) const;

 private:
  enum class Auth : std::uint8_t { none, bearer, agent };
  struct Sent {
    std::string method{};
    std::string target{};  // path and query, without the base URL's prefix
    std::optional<std::string> body{};  // JSON text
    Auth auth = Auth::none;
    std::string token{};  // Auth::bearer
    std::chrono::milliseconds timeout{0};  // 0: options_.timeout
  };
  // The body of a 2xx answer, or the error (see above).
  [[nodiscard]] Result<std::string> perform(const Sent& request) const;
  // perform(), then the body as JSON (null when empty).
  [[nodiscard]] Result<boost::json::value> perform_json(const Sent& request) const;
  [[nodiscard]] Result<boost::json::object> perform_object(const Sent& request) const;
  [[nodiscard]] Result<std::string> signed_card_json(AgentCard card) const;
  // Wall-clock Unix ms, strictly increasing across calls on this object.
  [[nodiscard]] std::int64_t next_timestamp() const;

  std::string base_url_;     // as given, without a trailing '/'
  std::string prefix_;       // the base URL's path, without a trailing '/' ("" or "/mesh")
  std::string host_header_;  // the Host header net::http_request sends for base_url_
  std::optional<Error> url_error_;
  KeyPair identity_;
  RegistryClientOptions options_;
  mutable std::atomic<std::int64_t> last_timestamp_{0};
};

}  // namespace agent_mesh
