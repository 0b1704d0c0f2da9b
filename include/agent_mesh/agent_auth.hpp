// Agent-signed HTTP (registry.md "Credentials"): what a client puts in
//   Authorization: MeshAgent agent_id=<id>,ts=<decimal ms>,sig=<b64url>
// to call the registry as an agent. Socket-free and clock-free: the caller passes the request's
// method, request-target and Host exactly as they will be sent, and the timestamp (Unix ms, the
// wall clock). The registry's verifier (src/registry/credentials.hpp) checks signatures over the
// same http_signing_message().
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "agent_mesh/identity.hpp"

namespace agent_mesh {

// The message an agent signs (purpose `http`, registry.md):
//   "<METHOD> <request-target as sent>\n<Host header as sent>\n<ts>"
// The body is not covered. The caller passes the exact bytes of the request line's target and
// of the Host header, not a normalised form.
[[nodiscard]] std::string http_signing_message(std::string_view method, std::string_view request_target,
                                               std::string_view host, std::int64_t ts);

// The complete header value for a request signed by `key` at `ts` (Unix ms). Preconditions: ts in
// 0 ..= 2^53 − 1 (aborts otherwise); method, target and host as they will be sent.
[[nodiscard]] std::string make_agent_authorization(const KeyPair& key, std::string_view method,
                                                   std::string_view request_target, std::string_view host,
                                                   std::int64_t ts);

}  // namespace agent_mesh
