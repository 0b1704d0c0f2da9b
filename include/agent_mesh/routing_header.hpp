// The relay's per-envelope routing checks (protocol §6 "Routing checks"; relay.md "Routing").
//
// A relay reads only what it routes by: the top-level `id`, `from`, `to`, `msg_type` (and
// `in_reply_to`) of an envelope, in one pass of Boost.JSON's SAX parser that builds no DOM, parses
// no payload and verifies no signature, and then forwards the frame's bytes unchanged. The pass still
// rejects what is not I-JSON at the envelope's level (invalid JSON, a duplicate top-level member
// name, a number written without fraction or exponent outside ±(2^53−1) anywhere, nesting deeper
// than limits::max_json_depth), so the relay never forwards a frame no receiver could parse.
// Everything else about an envelope (unknown members, timestamp, signature, payload) is the
// receiver's business (§3). Checking `from` against the authenticated ID is the relay's.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string_view>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/envelope.hpp"
#include "agent_mesh/identity.hpp"
#include "agent_mesh/limits.hpp"
#include "agent_mesh/result.hpp"

namespace agent_mesh {

struct RoutingHeader {
  Uuid id;
  AgentId from;
  AgentId to;
  MsgType msg_type = MsgType::request;
  // Present on replies, cancels and handshake step 2; checked as a UUID when present.
  std::optional<Uuid> in_reply_to;
  friend bool operator==(const RoutingHeader&, const RoutingHeader&) = default;
};

// Turns the text of `from` or `to` into an AgentId. AgentId::parse validates the curve point each
// time, which costs tens of microseconds, several times the scan of a typical envelope; a relay can
// pass a resolver that answers from the IDs it has already validated (its connected agents, recent
// destinations) and calls AgentId::parse for the rest. It must return AgentId::parse's verdict.
using AgentIdResolver = std::function<Result<AgentId>(std::string_view text)>;

// Scans one envelope frame. Errors:
//   Errc::too_large     the frame is longer than max_bytes (nothing of it is read);
//   Errc::bad_envelope  anything else, the message naming the member or the JSON problem: not a JSON
//                       object, invalid JSON, duplicate top-level member, unsafe integer, a `type`
//                       member (a control frame), `id` missing or not a UUID v4, `msg_type` missing
//                       or unknown, `in_reply_to` not a UUID, `from`/`to` missing or not valid agent IDs.
// bad_envelope is the code of the `undeliverable` answer (§6). `rejected_id`, if given, receives the
// envelope's `id` whenever the JSON was valid and `id` a UUID (nullopt otherwise), so that answer
// can name the envelope (or carry null). `resolve` defaults to AgentId::parse.
[[nodiscard]] Result<RoutingHeader> scan_routing_header(std::string_view frame,
                                                        std::size_t max_bytes = limits::default_max_envelope_bytes,
                                                        std::optional<Uuid>* rejected_id = nullptr,
                                                        const AgentIdResolver& resolve = {});

}  // namespace agent_mesh
