// Is a process serving on a Unix socket path? One non-blocking connect() tells: meshd asks before it
// replaces a socket file (stale after a crash, or in use by another meshd), meshctl before it sends a
// request through meshd instead of directly.
#pragma once

#include <filesystem>

namespace agent_mesh::net {

struct UnixSocketProbe {
  enum class State {
    serving,      // something accepted (or is about to accept) the connection
    not_serving,  // no file, or a socket file nobody listens on (stale)
    unknown,      // connect() failed otherwise (e.g. permissions); `error` says why
  };
  State state = State::not_serving;
  int error = 0;  // errno of connect() when state == unknown
};

[[nodiscard]] UnixSocketProbe probe_unix_socket(const std::filesystem::path& path);

}  // namespace agent_mesh::net
