#include "agent_mesh/agent_auth.hpp"

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/limits.hpp"
#include "core/sodium_init.hpp"

namespace agent_mesh {

std::string http_signing_message(std::string_view method, std::string_view request_target, std::string_view host,
                                 std::int64_t ts) {
  std::string message;
  message.reserve(method.size() + request_target.size() + host.size() + 24);
  message.append(method).append(" ").append(request_target).append("\n").append(host).append("\n");
  message.append(std::to_string(ts));
  return message;
}

std::string make_agent_authorization(const KeyPair& key, std::string_view method, std::string_view request_target,
                                     std::string_view host, std::int64_t ts) {
  if (ts < 0 || ts > limits::max_safe_integer) detail::misuse("agent_auth", "make_agent_authorization: ts out of range");
  const std::string message = http_signing_message(method, request_target, host, ts);
  const Signature sig = key.sign(Purpose::http, as_bytes(message));
  std::string header("MeshAgent agent_id=");
  header.append(key.agent_id().str());
  header.append(",ts=").append(std::to_string(ts));
  header.append(",sig=").append(base64url_encode(sig));
  return header;
}

}  // namespace agent_mesh
