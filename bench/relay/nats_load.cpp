// The NATS side of the load generator, the anchor of benchmark 1: the same request/reply pattern
// with the same envelope bytes through a nats-server on loopback, on the C client (libnats).
//
// Like the relay side, every agent has its own connection (a requester and a responder per pair)
// and each pair has one request in flight, as `nats bench service` runs it. The requester is the
// asynchronous form of natsConnection_Request: it publishes with a per-pair reply subject and its
// subscription callback on that subject sends the next request, so no thread blocks per pair.
// Publishes go out at once (SendAsap), and each subscription keeps libnats's default delivery
// thread: the client's best settings for one-in-flight traffic (the shared delivery pool measured
// 2x slower for one pair and no faster for 100 here).
#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "agent_mesh/identity.hpp"
#include "bench_envelope.hpp"
#include "load.hpp"
#include "server_cpu.hpp"

namespace agent_mesh::bench {

namespace {

void check(natsStatus status, const char* what) {
  if (status != NATS_OK) throw std::runtime_error(std::string(what) + ": " + natsStatus_GetText(status));
}

struct Shared {
  std::uint64_t measure_from = 0;
  std::uint64_t measure_to = 0;
  std::mutex done_mutex;
  std::condition_variable done_cv;
  int pairs_done = 0;
  int subscriptions_closed = 0;  // on-complete callbacks: no handler of that subscription runs any more
};

void on_subscription_complete(void* closure) {
  auto& shared = *static_cast<Shared*>(closure);
  std::lock_guard lock(shared.done_mutex);
  ++shared.subscriptions_closed;
  shared.done_cv.notify_all();
}

struct NatsPair {
  NatsPair(Shared& s, int index, std::size_t payload_bytes, const KeyPair& requester, const KeyPair& responder)
      : shared(s),
        subject("bench.request." + std::to_string(index)),
        inbox("bench.reply." + std::to_string(index)),
        response_writer(responder.agent_id(), requester.agent_id(), payload_bytes),
        request_writer(requester.agent_id(), responder.agent_id(), payload_bytes) {}
  ~NatsPair() {
    if (request_sub != nullptr) natsSubscription_Destroy(request_sub);
    if (reply_sub != nullptr) natsSubscription_Destroy(reply_sub);
    if (requester_conn != nullptr) natsConnection_Destroy(requester_conn);
    if (responder_conn != nullptr) natsConnection_Destroy(responder_conn);
  }
  NatsPair(const NatsPair&) = delete;
  NatsPair& operator=(const NatsPair&) = delete;

  Shared& shared;
  std::string subject;
  std::string inbox;
  natsConnection* requester_conn = nullptr;
  natsConnection* responder_conn = nullptr;
  natsSubscription* request_sub = nullptr;  // on the responder's connection
  natsSubscription* reply_sub = nullptr;    // on the requester's connection
  EnvelopeWriter response_writer;           // used by the responder callback only

  // The requester's state. One request is in flight, so its callbacks never overlap; the mutex
  // makes that ordering visible to the final read (and is uncontended while the run lasts).
  std::mutex mutex;
  EnvelopeWriter request_writer;
  std::string outstanding;
  std::uint64_t sent_at = 0;
  LatencyHistogram latency;
  std::uint64_t round_trips = 0;
  std::uint64_t errors = 0;
  std::string first_error;
  bool done = false;

  // Called with `mutex` held.
  void send_request() {
    const std::string frame = request_writer.request(outstanding);
    sent_at = steady_ns();
    const natsStatus s = natsConnection_PublishRequest(requester_conn, subject.c_str(), inbox.c_str(), frame.data(),
                                                       static_cast<int>(frame.size()));
    if (s != NATS_OK) {
      note_error(std::string("publish request: ") + natsStatus_GetText(s));
      finish();
    }
  }
  void note_error(std::string what) {
    ++errors;
    if (first_error.empty()) first_error = std::move(what);
  }
  void finish() {
    if (done) return;
    done = true;
    std::lock_guard lock(shared.done_mutex);
    ++shared.pairs_done;
    shared.done_cv.notify_all();
  }
};

void on_request(natsConnection* nc, natsSubscription*, natsMsg* msg, void* closure) {
  auto& pair = *static_cast<NatsPair*>(closure);
  const std::string_view text(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
  const std::string reply = pair.response_writer.response(envelope_id(text));
  const char* reply_to = natsMsg_GetReply(msg);
  if (reply_to != nullptr) natsConnection_Publish(nc, reply_to, reply.data(), static_cast<int>(reply.size()));
  natsMsg_Destroy(msg);
}

void on_reply(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  const std::uint64_t received = steady_ns();
  auto& pair = *static_cast<NatsPair*>(closure);
  const std::string_view text(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
  std::lock_guard lock(pair.mutex);
  if (envelope_in_reply_to(text) != pair.outstanding) {
    pair.note_error("reply to another request");
  } else if (received >= pair.shared.measure_from && received <= pair.shared.measure_to) {
    pair.latency.record(received - pair.sent_at);
    ++pair.round_trips;
  }
  natsMsg_Destroy(msg);
  if (pair.done) return;
  if (steady_ns() < pair.shared.measure_to) {
    pair.send_request();
  } else {
    pair.finish();
  }
}

natsConnection* connect(int port) {
  natsOptions* options = nullptr;
  check(natsOptions_Create(&options), "natsOptions_Create");
  const std::string url = "nats://127.0.0.1:" + std::to_string(port);
  natsOptions_SetURL(options, url.c_str());
  natsOptions_SetSendAsap(options, true);
  natsOptions_SetAllowReconnect(options, false);  // a lost server ends the run, loudly
  natsConnection* conn = nullptr;
  const natsStatus s = natsConnection_Connect(&conn, options);
  natsOptions_Destroy(options);
  check(s, "natsConnection_Connect");
  return conn;
}

}  // namespace

RequestReplyResult run_nats_request_reply(const RequestReplyOptions& options) {
  if (options.rate > 0) throw std::runtime_error("the NATS target runs closed loop only");
  check(nats_Open(-1), "nats_Open");
  Shared shared;
  RequestReplyResult result;
  result.seconds = options.window.duration_s;
  {
    std::vector<std::unique_ptr<NatsPair>> pairs;
    for (int i = 0; i < options.pairs; ++i) {
      // Real identities, as on the relay side, so the envelopes carry real agent IDs.
      const KeyPair requester = KeyPair::generate();
      const KeyPair responder = KeyPair::generate();
      auto pair = std::make_unique<NatsPair>(shared, i, options.payload_bytes, requester, responder);
      pair->responder_conn = connect(options.port);
      pair->requester_conn = connect(options.port);
      check(natsConnection_Subscribe(&pair->request_sub, pair->responder_conn, pair->subject.c_str(), on_request,
                                     pair.get()),
            "subscribe (responder)");
      check(natsConnection_Subscribe(&pair->reply_sub, pair->requester_conn, pair->inbox.c_str(), on_reply, pair.get()),
            "subscribe (requester)");
      check(natsSubscription_SetOnCompleteCB(pair->request_sub, on_subscription_complete, &shared), "on-complete");
      check(natsSubscription_SetOnCompleteCB(pair->reply_sub, on_subscription_complete, &shared), "on-complete");
      // Both subscriptions are known to the server before the first request is published.
      check(natsConnection_Flush(pair->responder_conn), "flush (responder)");
      check(natsConnection_Flush(pair->requester_conn), "flush (requester)");
      pairs.push_back(std::move(pair));
    }
    const std::uint64_t start = steady_ns();
    shared.measure_from = start + static_cast<std::uint64_t>(options.window.warmup_s * 1e9);
    shared.measure_to = shared.measure_from + static_cast<std::uint64_t>(options.window.duration_s * 1e9);
    ServerCpuSampler cpu(options.server_pid, shared.measure_from, shared.measure_to);
    for (auto& pair : pairs) {
      std::lock_guard lock(pair->mutex);
      pair->send_request();
    }
    {
      // Every pair stops after the window; a pair whose last reply never comes is given up after
      // the grace period (its count is complete anyway: replies after the window are not counted).
      std::unique_lock lock(shared.done_mutex);
      const auto deadline = std::chrono::steady_clock::time_point(std::chrono::nanoseconds(shared.measure_to)) +
                            std::chrono::seconds(5);
      shared.done_cv.wait_until(lock, deadline, [&] { return shared.pairs_done == options.pairs; });
    }
    result.server_cores = cpu.cores();
    result.generator_cores = cpu.generator_cores();
    // A handler may still be running or about to run once more after Unsubscribe returns: the
    // pairs are read and freed only after every subscription's on-complete callback (bounded).
    int unsubscribed = 0;
    for (auto& pair : pairs) {
      if (natsSubscription_Unsubscribe(pair->reply_sub) == NATS_OK) ++unsubscribed;
      if (natsSubscription_Unsubscribe(pair->request_sub) == NATS_OK) ++unsubscribed;
    }
    {
      std::unique_lock lock(shared.done_mutex);
      const bool all_closed = shared.done_cv.wait_for(lock, std::chrono::seconds(5),
                                                      [&] { return shared.subscriptions_closed >= unsubscribed; });
      if (!all_closed) {
        // A handler may still use them: leaking is the safe choice in a process about to exit.
        for (auto& pair : pairs) (void)pair.release();
        throw std::runtime_error("NATS subscriptions did not close within 5 s");
      }
    }
    for (auto& pair : pairs) {
      std::lock_guard lock(pair->mutex);
      result.latency.merge(pair->latency);
      result.round_trips += pair->round_trips;
      result.errors += pair->errors;
      if (result.first_error.empty()) result.first_error = pair->first_error;
      if (!pair->done) {
        ++result.errors;
        if (result.first_error.empty()) result.first_error = "a pair's last reply never came";
      }
    }
  }
  nats_CloseAndWait(5000);
  return result;
}

}  // namespace agent_mesh::bench
