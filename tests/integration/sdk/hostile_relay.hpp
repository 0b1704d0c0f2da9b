// HostileRelay: a minimal relay for SDK tests that plays the attacker protocol §5 defends against.
//
// Toward its clients it speaks protocol §6 correctly (hello → challenge with relay_id
// "ws://127.0.0.1:<port>/relay/ws" → auth checked with verify_auth → welcome), answers `ping` with
// `pong`, ignores acks, and routes envelope frames by their `to` member to the connected agent, like
// the real relay (scan_routing_header, `from` must be the authenticated ID). But every envelope
// passes through a test-controlled Tamper hook before it is forwarded: the hook returns the frames
// to deliver to `to` (none: drop; two: duplicate; edited text: tamper) and may hold frames for a
// later release() (reorder) or inject() arbitrary frames to any agent. Everything received from the
// agents and everything sent to them is recorded, so a test can assert what the relay saw.
//
// The relay runs on its own I/O thread; the hook runs on that thread and must not block. Every
// public member is thread-safe and may be called from the hook. Beast stays in hostile_relay.cpp.
#pragma once

#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "agent_mesh/identity.hpp"

namespace agent_mesh::test {

class HostileRelay {
 public:
  // frame: the envelope exactly as the sender sent it; from: the authenticated sender (equal to the
  // frame's `from`, which the relay checks); to: the frame's `to`. Returns the frames to deliver to
  // `to`, in order.
  using Tamper = std::function<std::vector<std::string>(const std::string& frame, const AgentId& from, const AgentId& to)>;

  struct Held {
    AgentId to;
    std::string frame;
  };

  // Listens on 127.0.0.1:0 and starts the I/O thread.
  HostileRelay();
  // Closes every connection (without a close handshake) and joins the thread.
  ~HostileRelay();
  HostileRelay(const HostileRelay&) = delete;
  HostileRelay& operator=(const HostileRelay&) = delete;

  [[nodiscard]] int port() const;
  // ws://127.0.0.1:<port>/relay/ws, also the relay_id of the challenge.
  [[nodiscard]] const std::string& url() const;

  // Replaces the hook; an empty function forwards every frame unchanged (the default).
  void set_tamper(Tamper tamper);

  // Keeps `frame` for a later release() instead of delivering it (call it from the hook and return
  // nothing for the frame).
  void hold(const AgentId& to, std::string frame);
  [[nodiscard]] std::size_t held_count() const;
  // Waits until at least `count` frames are held.
  [[nodiscard]] bool wait_held(std::size_t count, std::chrono::milliseconds timeout) const;
  // Removes and returns the held frames, oldest first (to deliver edited, with inject()).
  [[nodiscard]] std::vector<Held> take_held();
  // Delivers the held frames, oldest first / newest first.
  void release();
  void release_reversed();

  // Delivers `frame` to `to` as if relayed (no checks, no hook). Returns once the frame is queued on
  // the connection, so frames the relay forwards afterwards follow it. false: `to` is not connected.
  bool inject(const AgentId& to, std::string frame);

  [[nodiscard]] bool connected(const AgentId& agent) const;
  [[nodiscard]] bool wait_connected(const AgentId& agent, std::chrono::milliseconds timeout) const;

  // Every envelope frame received from an agent, before the hook, in arrival order.
  [[nodiscard]] std::vector<std::string> received() const;
  // Every envelope frame sent to an agent (forwarded, released or injected), in sending order.
  [[nodiscard]] std::vector<std::string> forwarded() const;
  // Every envelope frame the relay saw either way: received() followed by forwarded().
  [[nodiscard]] std::vector<std::string> all_frames() const;
  // Waits until `predicate(received())` holds.
  [[nodiscard]] bool wait_received(const std::function<bool(const std::vector<std::string>&)>& predicate,
                                   std::chrono::milliseconds timeout) const;
  // Waits until `predicate(forwarded())` holds.
  [[nodiscard]] bool wait_forwarded(const std::function<bool(const std::vector<std::string>&)>& predicate,
                                    std::chrono::milliseconds timeout) const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// ---- Editing envelope frames: parse with Boost.JSON, change members, serialise again. ----
// (The receiver does not care about member order; the AEAD associated data is the JCS of the header,
// so whatever changes a header member's value is what matters.)
namespace frame {

[[nodiscard]] boost::json::object parse(const std::string& text);
[[nodiscard]] std::string dump(const boost::json::object& object);
// Applies `edit` to the parsed frame and serialises the result.
[[nodiscard]] std::string edit(const std::string& text, const std::function<void(boost::json::object&)>& change);
// A string member, "" when absent or not a string.
[[nodiscard]] std::string str(const std::string& text, const std::string& member);
[[nodiscard]] std::string msg_type(const std::string& text);
[[nodiscard]] bool encrypted(const std::string& text);
// Flips one byte of the decoded `payload` ciphertext (at `index`, counted from the end when negative).
[[nodiscard]] std::string flip_ciphertext_byte(const std::string& text, std::ptrdiff_t index);
// A fresh UUID v4 / random base64url sid (16 bytes) / random base64url bytes.
[[nodiscard]] std::string new_uuid();
[[nodiscard]] std::string random_sid();
[[nodiscard]] std::string random_b64(std::size_t bytes);

}  // namespace frame

}  // namespace agent_mesh::test
