// Core limits, each with the reason for its value (style: SQLite's sqliteLimit.h). Protocol
// constants the spec fixes are kept apart from implementation choices.
#pragma once

#include <cstddef>
#include <cstdint>

namespace agent_mesh::limits {

// ---- Fixed by the protocol (changing one breaks interoperability) ----

// protocol §1: integers must survive a round trip through an IEEE double (JavaScript).
inline constexpr std::int64_t max_safe_integer = 9007199254740991;  // 2^53 − 1
// protocol §3: every frame before authentication is a control frame of at most 64 KiB.
inline constexpr std::size_t max_control_frame_bytes = 64 * 1024;
// protocol §3: default bound on an envelope frame after authentication.
inline constexpr std::size_t default_max_envelope_bytes = 1024 * 1024;
// protocol §3: signed envelopes more than 2 min in the future are dropped.
inline constexpr std::int64_t default_max_future_ms = 2 * 60 * 1000;
// protocol §3: signed envelopes more than 10 min old are dropped.
inline constexpr std::int64_t default_max_age_ms = 10 * 60 * 1000;
// protocol §4: capability names are [A-Za-z0-9_-]{1,54}.
inline constexpr std::size_t max_capability_name = 54;
// protocol §5: session IDs are 16 bytes.
inline constexpr std::size_t sid_bytes = 16;

// ---- Implementation choices ----

// Largest JSON text the I-JSON parser accepts by default: one maximal envelope frame. Callers
// with smaller frames (control frames, HTTP bodies) pass their own bound.
inline constexpr std::size_t default_max_json_bytes = default_max_envelope_bytes;
// Nesting depth bound: deep enough for any real body, shallow enough that recursion in the JCS
// serialiser and the value tree can never exhaust the stack.
inline constexpr std::size_t max_json_depth = 64;
// Replay cache (protocol §3): signed envelopes are handshakes and plaintext debugging traffic,
// far below the relay's 500 msg/s per agent; 65,536 IDs per sender cover 12 minutes of a busy
// sender, and 1,000,000 IDs in all bound memory to ~150 MB in the worst case. On overflow the
// oldest entries go and the window floor rises, so nothing evicted can be replayed (docs/protocol.md).
inline constexpr std::size_t replay_cache_per_sender = 65536;
inline constexpr std::size_t replay_cache_total = 1000000;
// Key files are 43 characters and an optional newline; anything much larger is not a key file.
inline constexpr std::size_t max_key_file_bytes = 1024;

}  // namespace agent_mesh::limits
