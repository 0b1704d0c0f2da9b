// The seed's echo agent inside mesh-demo: the HTTP server meshd forwards Bob's requests to, with
// the behaviour of scripts/echo_server.py (every POST answers {"agent": NAME, "echo": <body>}; a
// body with "stream": N and an Accept of text/event-stream gets N server-sent events; "sleep_ms": M
// delays the answer, so a cancellation has something to stop). In process, on 127.0.0.1:0.
#pragma once

#include <memory>
#include <string>

#include "agent_mesh/result.hpp"

namespace agent_mesh::demo {

class EchoAgent {
 public:
  static Result<std::unique_ptr<EchoAgent>> start(std::string name);
  ~EchoAgent();
  // "http://127.0.0.1:PORT/"
  [[nodiscard]] std::string url() const;
  // How many requests were abandoned by meshd before the answer (cancel closes the connection).
  [[nodiscard]] int requests_seen() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace agent_mesh::demo
