// The public SDK classes: thin handles on a ClientCore (sdk/client_core.hpp).
#include "agent_mesh/mesh_client.hpp"

#include "agent_mesh/mesh_agent.hpp"
#include "sdk/client_core.hpp"

namespace agent_mesh {

// ---- MeshClient ----

MeshClient::MeshClient(KeyPair identity, ClientOptions options)
    : core_(std::make_shared<sdk_detail::ClientCore>(std::move(identity), std::move(options))) {
  core_->start();
}

MeshClient::~MeshClient() { core_->close(std::chrono::milliseconds(0)); }

const AgentId& MeshClient::id() const noexcept { return core_->id(); }

Status MeshClient::wait_connected(std::chrono::milliseconds timeout) { return core_->wait_connected(timeout); }

Pending<Response> MeshClient::request(const AgentId& target, std::string capability, boost::json::value body,
                                      RequestOptions options) {
  return core_->request(target, std::move(capability), std::move(body), std::move(options));
}

StreamCall MeshClient::stream(const AgentId& target, std::string capability, boost::json::value body,
                              RequestOptions options) {
  return core_->stream(target, std::move(capability), std::move(body), std::move(options));
}

ClientStatus MeshClient::status() const { return core_->status(); }

void MeshClient::close(std::chrono::milliseconds grace) { core_->close(grace); }

// ---- StreamCall ----

Result<std::optional<boost::json::value>> StreamCall::next() {
  std::unique_lock lock(state_->mutex);
  state_->changed.wait(lock, [&] { return !state_->chunks.empty() || state_->ended || state_->error; });
  if (!state_->chunks.empty()) {
    boost::json::value chunk = std::move(state_->chunks.front());
    state_->chunks.pop_front();
    return std::optional<boost::json::value>(std::move(chunk));
  }
  if (state_->error) return *state_->error;
  return std::optional<boost::json::value>();
}

Pending<std::optional<boost::json::value>> StreamCall::next_async() {
  Pending<std::optional<boost::json::value>> pending;
  std::unique_lock lock(state_->mutex);
  if (!state_->chunks.empty()) {
    boost::json::value chunk = std::move(state_->chunks.front());
    state_->chunks.pop_front();
    lock.unlock();
    pending.complete(std::optional<boost::json::value>(std::move(chunk)));
  } else if (state_->error) {
    Error error = *state_->error;
    lock.unlock();
    pending.complete(std::move(error));
  } else if (state_->ended) {
    lock.unlock();
    pending.complete(std::optional<boost::json::value>());
  } else {
    // One reader at a time: a second next_async() before the first completes replaces it.
    state_->waiter = pending;
  }
  return pending;
}

void StreamCall::cancel() {
  std::function<void()> cancel;
  {
    std::lock_guard lock(state_->mutex);
    cancel = state_->cancel;
  }
  if (cancel) cancel();
}

bool StreamCall::encrypted() const { return state_->encrypted; }

// ---- MeshAgent ----

MeshAgent::MeshAgent(KeyPair identity, ClientOptions options) : MeshClient(std::move(identity), std::move(options)) {}

void MeshAgent::handle(std::string capability, UnaryHandler handler) {
  core_->set_handler(std::move(capability), nullptr, std::move(handler), nullptr);
}

void MeshAgent::handle_stream(std::string capability, StreamHandler handler) {
  core_->set_handler(std::move(capability), nullptr, nullptr, std::move(handler));
}

void MeshAgent::handle_async(std::string capability, AsyncHandler handler) {
  core_->set_handler(std::move(capability), std::move(handler), nullptr, nullptr);
}

void MeshAgent::handle_any(AsyncHandler handler) { core_->set_handler(std::nullopt, std::move(handler), nullptr, nullptr); }

void MeshAgent::set_acl(AclPolicy policy) { core_->set_acl(std::move(policy)); }

void MeshAgent::set_revoked(std::vector<AgentId> revoked) { core_->set_revoked(std::move(revoked)); }

// ---- Responder ----

namespace {
std::shared_ptr<sdk_detail::ClientCore> core_of(const std::shared_ptr<sdk_detail::ReplyTarget>& target) {
  return target->core.lock();
}
}  // namespace

void Responder::respond(boost::json::value body) const {
  if (auto core = core_of(target_)) core->respond(target_, std::move(body));
}

void Responder::fail(Errc code, std::string message, std::optional<std::int64_t> retry_after_ms) const {
  if (auto core = core_of(target_)) core->respond_error(target_, code, std::move(message), retry_after_ms);
}

Status Responder::chunk(boost::json::value body) const {
  auto core = core_of(target_);
  if (!core) return agent_mesh::fail(Errc::cancelled, "the agent is closed");
  return core->send_chunk(target_, std::move(body));
}

void Responder::end() const {
  if (auto core = core_of(target_)) core->end_stream(target_);
}

}  // namespace agent_mesh
