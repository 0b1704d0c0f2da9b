#include "sdk/client_core.hpp"

#include <boost/json.hpp>
#include <chrono>
#include <future>

namespace agent_mesh::sdk_detail {

std::int64_t wall_clock_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

namespace {

// Blocking handlers waiting for a worker; past it requests are refused with rate_limited.
constexpr std::size_t kMaxQueuedHandlers = 4096;
// Without traffic the core still ticks once a second: session lifetimes and the replay cache.
constexpr std::int64_t kIdleTickMs = 1000;

EndpointOptions endpoint_options(const ClientOptions& options) {
  EndpointOptions out = options.endpoint;
  out.default_timeout_ms = options.default_timeout.count();
  out.plaintext_peers.insert(out.plaintext_peers.end(), options.plaintext_peers.begin(), options.plaintext_peers.end());
  return out;
}

sdk::RelayLinkOptions link_options(const KeyPair& identity, const ClientOptions& options) {
  return sdk::RelayLinkOptions{.identity = identity,
                               .urls = options.relay_urls,
                               .expected_relay_id = options.expected_relay_id,
                               .ca_file = options.ca_file,
                               .connect_timeout = options.connect_timeout,
                               .reconnect_initial = options.reconnect_initial,
                               .reconnect_max = options.reconnect_max,
                               .max_frame_bytes = options.endpoint.max_envelope_bytes,
                               .max_queued_frames = options.max_queued_frames};
}

Error closed_error() { return Error{Errc::cancelled, "the client is closed"}; }

}  // namespace

// ---- StreamState ----

bool StreamState::push(boost::json::value chunk) {
  std::optional<Pending<std::optional<boost::json::value>>> waiting;
  {
    std::lock_guard lock(mutex);
    if (ended || error) return true;
    if (waiter) {
      waiting = std::move(waiter);
      waiter.reset();
    } else {
      if (chunks.size() >= kMaxBufferedChunks) return false;
      chunks.push_back(std::move(chunk));
    }
  }
  if (waiting) {
    waiting->complete(std::optional<boost::json::value>(std::move(chunk)));
  } else {
    changed.notify_all();
  }
  return true;
}

void StreamState::finish(std::optional<Error> failure) {
  std::optional<Pending<std::optional<boost::json::value>>> waiting;
  {
    std::lock_guard lock(mutex);
    if (ended || error) return;
    if (failure) {
      error = std::move(failure);
    } else {
      ended = true;
    }
    cancel = nullptr;
    if (waiter && chunks.empty()) {
      waiting = std::move(waiter);
      waiter.reset();
    }
  }
  changed.notify_all();
  if (waiting) {
    if (error) {
      waiting->complete(*error);
    } else {
      waiting->complete(std::optional<boost::json::value>());
    }
  }
}

// ---- ClientCore ----

ClientCore::ClientCore(KeyPair identity, ClientOptions options)
    : id_(identity.agent_id()), options_(std::move(options)), endpoint_(identity, endpoint_options(options_)) {
  if (options_.relay_urls.empty()) {
    std::fprintf(stderr, "agent_mesh::MeshClient: ClientOptions::relay_urls is empty\n");
    std::abort();
  }
  sdk::RelayLinkHandlers handlers;
  handlers.on_state = [this](const ConnectionEvent& event) { on_connection(event); };
  handlers.on_envelope = [this](std::string_view frame) {
    endpoint_.receive(frame, wall_clock_ms());
    pump();
  };
  handlers.on_queued = [this](const Queued& queued) { log(LogLevel::debug, "envelope.queued", queued.id.to_string()); };
  handlers.on_undeliverable = [this](const Undeliverable& undeliverable) {
    log(LogLevel::info, "envelope.undeliverable", std::string(to_string(undeliverable.code)));
    if (!undeliverable.id) return;
    endpoint_.undeliverable(*undeliverable.id, undeliverable.code, undeliverable.retry_after_ms, wall_clock_ms());
    pump();
  };
  handlers.on_log = options_.on_log;
  link_ = std::make_unique<sdk::RelayLink>(link_options(identity, options_), std::move(handlers));
}

ClientCore::~ClientCore() {
  close(std::chrono::milliseconds(0));
}

void ClientCore::start() {
  workers_ = std::make_unique<WorkerPool>(options_.handler_threads, kMaxQueuedHandlers);
  link_->start();
  on_io([this] { arm_wakeup(); });
}

void ClientCore::log(LogLevel level, std::string_view event, std::string_view detail) const {
  if (options_.on_log) options_.on_log(level, event, detail);
}

void ClientCore::on_io(std::function<void()> fn) { link_->post(std::move(fn)); }

Status ClientCore::wait_connected(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!changed_.wait_for(lock, timeout, [&] { return connected_ || gave_up_ || closed_; })) {
    return fail(Errc::timeout, "not connected to a relay within " + std::to_string(timeout.count()) + " ms");
  }
  if (connected_) return {};
  if (gave_up_) return *gave_up_;
  return closed_error();
}

Pending<Response> ClientCore::request(const AgentId& target, std::string capability, boost::json::value body,
                                      RequestOptions options) {
  Pending<Response> pending;
  {
    std::lock_guard lock(mutex_);
    if (closing_) {
      pending.complete(closed_error());
      return pending;
    }
    if (gave_up_) {
      pending.complete(*gave_up_);
      return pending;
    }
  }
  const std::int64_t timeout_ms = options.timeout.value_or(options_.default_timeout).count();
  std::weak_ptr<ClientCore> weak = weak_from_this();
  on_io([this, weak, target, capability = std::move(capability), body = std::move(body), timeout_ms, pending,
         cancel = std::move(options.cancel)]() mutable {
    const RequestHandle handle =
        endpoint_.request(target, std::move(capability), std::move(body), false, timeout_ms, wall_clock_ms());
    unary_.emplace(handle, UnaryCall{pending, !endpoint_.is_plaintext_peer(target)});
    if (cancel) {
      cancel->on_cancel([weak, handle] {
        if (auto core = weak.lock()) {
          core->on_io([raw = core.get(), handle] {
            raw->endpoint_.cancel(handle, wall_clock_ms());
            raw->pump();
          });
        }
      });
    }
    pump();
  });
  return pending;
}

StreamCall ClientCore::stream(const AgentId& target, std::string capability, boost::json::value body,
                              RequestOptions options) {
  auto state = std::make_shared<StreamState>();
  state->encrypted = !endpoint_.is_plaintext_peer(target);
  {
    std::lock_guard lock(mutex_);
    if (closing_ || gave_up_) {
      state->finish(closing_ ? closed_error() : *gave_up_);
      return StreamCall(state);
    }
  }
  const std::int64_t timeout_ms = options.timeout.value_or(options_.default_timeout).count();
  std::weak_ptr<ClientCore> weak = weak_from_this();
  on_io([this, weak, target, capability = std::move(capability), body = std::move(body), timeout_ms, state,
         cancel = std::move(options.cancel)]() mutable {
    const RequestHandle handle =
        endpoint_.request(target, std::move(capability), std::move(body), true, timeout_ms, wall_clock_ms());
    streams_.emplace(handle, state);
    auto cancel_fn = [weak, handle] {
      if (auto core = weak.lock()) {
        core->on_io([raw = core.get(), handle] {
          raw->endpoint_.cancel(handle, wall_clock_ms());
          raw->pump();
        });
      }
    };
    {
      std::lock_guard lock(state->mutex);
      if (!state->ended && !state->error) state->cancel = cancel_fn;
    }
    if (cancel) cancel->on_cancel(cancel_fn);
    pump();
  });
  return StreamCall(state);
}

ClientStatus ClientCore::status() const {
  std::lock_guard lock(mutex_);
  ClientStatus out;
  out.agent = id_;
  out.connected = connected_;
  out.relay_url = relay_url_;
  out.connected_since_ms = connected_since_ms_;
  out.sessions = sessions_;
  out.requests_in_flight = in_flight_;
  out.requests_served = serving_;
  return out;
}

void ClientCore::close(std::chrono::milliseconds grace) {
  {
    std::unique_lock lock(mutex_);
    if (closed_) return;
    closing_ = true;
    // Requests in flight both ways may finish within the grace period (meshd: SIGTERM, 10 s).
    changed_.wait_for(lock, grace, [&] { return in_flight_ == 0 && serving_ == 0; });
  }
  if (link_) {
    auto done = std::make_shared<std::promise<void>>();
    auto finished = done->get_future();
    on_io([this, done] {
      fail_everything(closed_error());
      for (auto& [key, call] : served_) {
        call.target->finished = true;
        call.cancelled.cancel();
      }
      served_.clear();
      pump();
      done->set_value();
    });
    // The I/O thread may already be gone (a link that gave up still runs; a failed start does not).
    finished.wait_for(std::chrono::seconds(2));
    link_->close();
  }
  if (workers_) workers_->stop();
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    connected_ = false;
  }
  changed_.notify_all();
}

// ---- serving ----

void ClientCore::set_handler(std::optional<std::string> capability, AsyncHandler async, UnaryHandler unary,
                             StreamHandler stream) {
  std::lock_guard lock(mutex_);
  Handlers handlers{std::move(async), std::move(unary), std::move(stream)};
  if (capability) {
    handlers_[*capability] = std::move(handlers);
  } else {
    any_handler_ = std::move(handlers);
  }
}

void ClientCore::set_acl(AclPolicy policy) {
  auto shared = std::make_shared<const AclPolicy>(std::move(policy));
  std::lock_guard lock(mutex_);
  acl_ = std::move(shared);
}

void ClientCore::set_revoked(std::vector<AgentId> revoked) {
  auto shared = std::make_shared<const std::unordered_set<AgentId>>(revoked.begin(), revoked.end());
  std::lock_guard lock(mutex_);
  revoked_ = std::move(shared);
}

void ClientCore::on_incoming(IncomingRequest request) {
  const std::int64_t now = wall_clock_ms();
  auto refuse = [&](Errc code, std::string message, std::optional<std::int64_t> retry_after_ms = std::nullopt) {
    log(LogLevel::info, "request.refused",
        std::string(to_string(code)) + " from " + request.from.str() + " for " + request.capability);
    (void)endpoint_.respond_error(request.from, request.id, code, std::move(message), now, retry_after_ms);
  };
  std::optional<Handlers> handlers;
  std::shared_ptr<const AclPolicy> acl;
  std::shared_ptr<const std::unordered_set<AgentId>> revoked;
  bool closing = false;
  {
    std::lock_guard lock(mutex_);
    closing = closing_;
    acl = acl_;
    revoked = revoked_;
    if (auto it = handlers_.find(request.capability); it != handlers_.end()) {
      handlers = it->second;
    } else if (any_handler_) {
      handlers = any_handler_;
    }
  }
  if (closing) return refuse(Errc::unreachable, "the agent is shutting down");
  if (revoked->contains(request.from)) return refuse(Errc::revoked, "the caller's key is revoked");
  if (!acl->allows(request.from, id_, request.capability)) {
    return refuse(Errc::acl_denied, "no ACL rule allows " + request.from.str() + " to call '" + request.capability +
                                        "' on " + id_.str());
  }
  if (!handlers) return refuse(Errc::unknown_capability, "no handler for capability '" + request.capability + "'");

  IncomingCall call;
  call.from = request.from;
  call.id = request.id;
  call.capability = std::move(request.capability);
  call.body = std::move(request.body);
  call.stream = request.stream;
  call.encrypted = !endpoint_.is_plaintext_peer(request.from);
  call.deadline_ms = request.deadline_ms;
  auto target = std::make_shared<ReplyTarget>();
  target->core = weak_from_this();
  target->from = call.from;
  target->id = call.id;
  target->stream = call.stream;
  served_[{call.from, call.id}] = ServedCall{call.cancelled, call.deadline_ms, target};
  run_handler(*handlers, std::move(call), target);
}

void ClientCore::run_handler(const Handlers& handlers, IncomingCall call, const std::shared_ptr<ReplyTarget>& target) {
  if (call.stream && !handlers.stream && !handlers.async) {
    respond_error(target, Errc::bad_request, "capability '" + call.capability + "' does not stream", std::nullopt);
    return;
  }
  if (!call.stream && !handlers.unary && !handlers.async) {
    respond_error(target, Errc::bad_request, "capability '" + call.capability + "' only streams", std::nullopt);
    return;
  }
  if (handlers.async) {
    try {
      handlers.async(std::move(call), Responder(target));
    } catch (const std::exception& error) {
      respond_error(target, Errc::internal, std::string("handler threw: ") + error.what(), std::nullopt);
    }
    return;
  }
  std::weak_ptr<ClientCore> weak = weak_from_this();
  std::function<void()> task;
  if (call.stream) {
    task = [weak, fn = handlers.stream, call = std::move(call), target] {
      ChunkWriter write = [weak, target](boost::json::value chunk) -> Status {
        auto core = weak.lock();
        if (!core) return closed_error();
        return core->send_chunk(target, std::move(chunk));
      };
      Status outcome;
      try {
        outcome = fn(call, write);
      } catch (const std::exception& error) {
        outcome = fail(Errc::internal, std::string("handler threw: ") + error.what());
      }
      auto core = weak.lock();
      if (!core) return;
      if (outcome) {
        core->end_stream(target);
      } else {
        core->respond_error(target, outcome.error().code, outcome.error().message, std::nullopt);
      }
    };
  } else {
    task = [weak, fn = handlers.unary, call = std::move(call), target] {
      Result<boost::json::value> outcome = fail(Errc::internal, "handler did not run");
      try {
        outcome = fn(call);
      } catch (const std::exception& error) {
        outcome = fail(Errc::internal, std::string("handler threw: ") + error.what());
      }
      auto core = weak.lock();
      if (!core) return;
      if (outcome) {
        core->respond(target, std::move(outcome).value());
      } else {
        core->respond_error(target, outcome.error().code, outcome.error().message, std::nullopt);
      }
    };
  }
  if (!workers_->submit(std::move(task))) {
    respond_error(target, Errc::rate_limited, "every handler thread is busy", 1000);
  }
}

void ClientCore::finish_served(const std::shared_ptr<ReplyTarget>& target) {
  auto it = served_.find({target->from, target->id});
  if (it != served_.end() && it->second.target == target) served_.erase(it);
}

void ClientCore::respond(const std::shared_ptr<ReplyTarget>& target, boost::json::value body) {
  if (target->finished.exchange(true)) return;
  on_io([this, target, body = std::move(body)]() mutable {
    if (auto sent = endpoint_.respond(target->from, target->id, std::move(body), wall_clock_ms()); !sent) {
      log(LogLevel::debug, "reply.dropped", sent.error().describe());
    }
    finish_served(target);
    pump();
  });
}

void ClientCore::respond_error(const std::shared_ptr<ReplyTarget>& target, Errc code, std::string message,
                               std::optional<std::int64_t> retry_after_ms) {
  if (target->finished.exchange(true)) return;
  on_io([this, target, code, message = std::move(message), retry_after_ms]() mutable {
    if (auto sent = endpoint_.respond_error(target->from, target->id, code, std::move(message), wall_clock_ms(),
                                            retry_after_ms);
        !sent) {
      log(LogLevel::debug, "reply.dropped", sent.error().describe());
    }
    finish_served(target);
    pump();
  });
}

Status ClientCore::send_chunk(const std::shared_ptr<ReplyTarget>& target, boost::json::value body) {
  if (target->finished) return fail(Errc::cancelled, "the request finished, was cancelled or timed out");
  if (!target->stream) return fail(Errc::bad_request, "only a stream request is answered with chunks");
  auto send = [this, target](boost::json::value chunk) -> Status {
    Status sent = endpoint_.send_chunk(target->from, target->id, std::move(chunk), wall_clock_ms());
    if (!sent) {
      target->finished = true;
      finish_served(target);
    }
    return sent;
  };
  if (link_->on_link_thread()) {
    Status sent = send(std::move(body));
    on_io([this] { pump(); });
    return sent;
  }
  // From a handler thread: wait for the I/O thread's verdict, which also paces a fast producer.
  // If the client closes first, the queued function is destroyed unrun and the promise breaks.
  auto verdict = std::make_shared<std::promise<Status>>();
  auto result = verdict->get_future();
  on_io([this, send, verdict, body = std::move(body)]() mutable {
    verdict->set_value(send(std::move(body)));
    pump();
  });
  verdict.reset();
  try {
    return result.get();
  } catch (const std::future_error&) {
    return closed_error();
  }
}

void ClientCore::end_stream(const std::shared_ptr<ReplyTarget>& target) {
  if (target->finished.exchange(true)) return;
  on_io([this, target] {
    if (auto sent = endpoint_.end_stream(target->from, target->id, wall_clock_ms()); !sent) {
      log(LogLevel::debug, "reply.dropped", sent.error().describe());
    }
    finish_served(target);
    pump();
  });
}

void ClientCore::on_peer_cancelled(const PeerCancelled& cancelled) {
  auto it = served_.find({cancelled.from, cancelled.id});
  if (it == served_.end()) return;
  ServedCall call = std::move(it->second);
  served_.erase(it);
  call.target->finished = true;
  call.cancelled.cancel();
}

// ---- events ----

void ClientCore::complete_unary(RequestHandle handle, Result<Response> result) {
  auto it = unary_.find(handle);
  if (it == unary_.end()) return;
  Pending<Response> pending = std::move(it->second.pending);
  unary_.erase(it);
  pending.complete(std::move(result));
}

void ClientCore::finish_stream(RequestHandle handle, std::optional<Error> failure) {
  auto it = streams_.find(handle);
  if (it == streams_.end()) return;
  auto state = std::move(it->second);
  streams_.erase(it);
  state->finish(std::move(failure));
}

void ClientCore::fail_everything(const Error& error) {
  std::vector<RequestHandle> handles;
  for (const auto& [handle, call] : unary_) handles.push_back(handle);
  for (const auto& [handle, state] : streams_) handles.push_back(handle);
  for (RequestHandle handle : handles) {
    complete_unary(handle, error);
    finish_stream(handle, error);
    endpoint_.cancel(handle, wall_clock_ms());
  }
}

void ClientCore::pump() {
  for (;;) {
    for (auto& frame : endpoint_.take_outgoing()) {
      if (!link_->send(std::move(frame.frame))) {
        log(LogLevel::warn, "frame.dropped", "the relay connection's send queue is full or closed");
      }
    }
    auto events = endpoint_.take_events();
    if (events.empty()) break;
    for (auto& event : events) {
      if (auto* incoming = std::get_if<IncomingRequest>(&event)) {
        on_incoming(std::move(*incoming));
      } else if (auto* cancelled = std::get_if<PeerCancelled>(&event)) {
        on_peer_cancelled(*cancelled);
      } else if (auto* response = std::get_if<ResponseEvent>(&event)) {
        auto it = unary_.find(response->handle);
        if (it != unary_.end()) {
          const bool encrypted = it->second.encrypted;
          complete_unary(response->handle, Response{std::move(response->body), encrypted});
        }
      } else if (auto* chunk = std::get_if<ChunkEvent>(&event)) {
        auto it = streams_.find(chunk->handle);
        if (it != streams_.end() && !it->second->push(std::move(chunk->body))) {
          const RequestHandle handle = chunk->handle;
          finish_stream(handle, Error{Errc::internal, "more than 1024 stream chunks waiting for the reader"});
          endpoint_.cancel(handle, wall_clock_ms());
        }
      } else if (auto* end = std::get_if<StreamEndEvent>(&event)) {
        finish_stream(end->handle, std::nullopt);
      } else if (auto* failure = std::get_if<FailureEvent>(&event)) {
        complete_unary(failure->handle, failure->error);
        finish_stream(failure->handle, failure->error);
      }
    }
  }
  {
    std::lock_guard lock(mutex_);
    sessions_ = endpoint_.sessions().session_count();
    in_flight_ = unary_.size() + streams_.size();
    serving_ = served_.size();
  }
  changed_.notify_all();
  arm_wakeup();
}

void ClientCore::arm_wakeup() {
  const std::int64_t now = wall_clock_ms();
  std::int64_t next = now + kIdleTickMs;
  if (auto deadline = endpoint_.next_deadline()) next = std::min(next, *deadline);
  const auto when = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max<std::int64_t>(0, next - now));
  link_->set_wakeup(when, [this] { on_tick(); });
}

void ClientCore::on_tick() {
  const std::int64_t now = wall_clock_ms();
  endpoint_.tick(now);
  // Served requests past their deadline: the caller stopped waiting, so the handler should stop.
  for (auto it = served_.begin(); it != served_.end();) {
    if (it->second.deadline_ms && now >= *it->second.deadline_ms) {
      it->second.target->finished = true;
      it->second.cancelled.cancel();
      it = served_.erase(it);
    } else {
      ++it;
    }
  }
  pump();
}

void ClientCore::on_connection(const ConnectionEvent& event) {
  {
    std::lock_guard lock(mutex_);
    switch (event.kind) {
      case ConnectionEvent::Kind::connected:
        connected_ = true;
        relay_url_ = event.relay_url;
        connected_since_ms_ = wall_clock_ms();
        break;
      case ConnectionEvent::Kind::disconnected:
        connected_ = false;
        break;
      case ConnectionEvent::Kind::gave_up:
        connected_ = false;
        if (!closing_) {
          const Errc code = event.close_code == close_code::revoked ? Errc::revoked : Errc::unreachable;
          // The link's reason may start with the code's name already ("revoked: ..."): say it once.
          std::string message = event.reason;
          const std::string prefix = std::string(to_string(code)) + ": ";
          if (message.starts_with(prefix)) message.erase(0, prefix.size());
          gave_up_ = Error{code, std::move(message)};
        }
        break;
    }
  }
  changed_.notify_all();
  if (event.kind == ConnectionEvent::Kind::gave_up && gave_up_) {
    fail_everything(*gave_up_);
    pump();
  }
  if (options_.on_connection) options_.on_connection(event);
}

}  // namespace agent_mesh::sdk_detail
