#include "net/unix_socket_probe.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace agent_mesh::net {

UnixSocketProbe probe_unix_socket(const std::filesystem::path& path) {
  const std::string& text = path.native();
  sockaddr_un address{};
  if (text.empty() || text.size() >= sizeof(address.sun_path)) return {UnixSocketProbe::State::unknown, ENAMETOOLONG};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, text.c_str(), text.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return {UnixSocketProbe::State::unknown, errno};
  const int connected = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address));
  const int connect_errno = errno;
  ::close(fd);
  // A full listen backlog answers EAGAIN on a non-blocking Unix socket: someone is serving.
  if (connected == 0 || connect_errno == EAGAIN || connect_errno == EINPROGRESS) return {UnixSocketProbe::State::serving, 0};
  if (connect_errno == ECONNREFUSED || connect_errno == ENOENT) return {UnixSocketProbe::State::not_serving, 0};
  return {UnixSocketProbe::State::unknown, connect_errno};
}

}  // namespace agent_mesh::net
