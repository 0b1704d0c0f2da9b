#include "meshd/daemon.hpp"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "agent_mesh/mesh_agent.hpp"
#include "agent_mesh/registry_client.hpp"
#include "agent_mesh/version.hpp"
#include "meshd/acl_source.hpp"
#include "meshd/local_agent.hpp"
#include "meshd/local_api.hpp"
#include "meshd/meshd_config.hpp"

namespace agent_mesh::meshd {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// meshd-sdk.md: on SIGTERM, requests in flight get up to 10 s.
constexpr std::chrono::milliseconds kDrainGrace = 10s;
// The registry's ACL long poll: registry.md's example value; the registry caps it at 30.
constexpr int kSyncWaitS = 25;
// Between two sync requests at least this long, so a registry that answers at once every time
// (a bug, a version going backwards) cannot make meshd spin; far below the 2 s the spec allows
// for a change to reach a daemon.
constexpr auto kSyncMinInterval = 250ms;
// Backoff after a failed sync: jittered in [half, full] of min(30 s, 1 s · 2^failures).
constexpr auto kSyncBackoffInitial = 1000ms;
constexpr auto kSyncBackoffMax = 30000ms;
// At shutdown the sync thread may sit in a long poll (up to wait_s + 10 s); this long is waited
// for it before meshd exits without it.
constexpr auto kSyncStopWait = 250ms;
// meshd-sdk.md: discovery is cached 10 s per (capability, q).
constexpr auto kDiscoveryTtl = 10s;
// Distinct (capability, q) pairs cached; Local API callers choose them, so the map is bounded.
constexpr std::size_t kDiscoveryCacheEntries = 256;

constexpr int kExitConfig = 2;
constexpr int kExitRuntime = 1;

// ---- Logging: one line per event on stderr, `<UTC time> <level> <event>: <detail>` ----

class Logger {
 public:
  explicit Logger(LogLevel min_level) : min_level_(min_level) {}

  void operator()(LogLevel level, std::string_view event, std::string_view detail) const {
    if (static_cast<int>(level) < static_cast<int>(min_level_)) return;
    const auto now = std::chrono::system_clock::now();
    const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
    const auto millis =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm utc{};
    gmtime_r(&seconds, &utc);
    char stamp[64];
    std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900, utc.tm_mon + 1,
                  utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, static_cast<int>(millis));
    std::string line = stamp;
    line += ' ';
    line += to_string(level);
    line += ' ';
    line += event;
    if (!detail.empty()) {
      line += ": ";
      line += detail;
    }
    line += '\n';
    std::lock_guard lock(mutex_);
    std::fwrite(line.data(), 1, line.size(), stderr);
    std::fflush(stderr);
  }

 private:
  LogLevel min_level_;
  mutable std::mutex mutex_;
};

using LogFn = std::function<void(LogLevel, std::string_view, std::string_view)>;

std::string millis_text(std::chrono::milliseconds ms) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f s", static_cast<double>(ms.count()) / 1000.0);
  return text;
}

// ---- Stop request: set by the signal thread, awaited by main ----

struct StopSignal {
  std::mutex mutex;
  std::condition_variable cv;
  int signal = 0;

  void request(int received) {
    {
      std::lock_guard lock(mutex);
      signal = received;
    }
    cv.notify_all();
  }
  int wait() {
    std::unique_lock lock(mutex);
    cv.wait(lock, [this] { return signal != 0; });
    return signal;
  }
};

// ---- Registry: ACL sync loop and the discovery cache ----

class RegistrySync : public std::enable_shared_from_this<RegistrySync> {
 public:
  // `synced_version`: the version of a sync already done (Daemon::start's first one), 0 for none.
  RegistrySync(std::shared_ptr<RegistryClient> registry, std::shared_ptr<AclFeed> feed, LogFn log,
               std::int64_t synced_version)
      : registry_(std::move(registry)), feed_(std::move(feed)), log_(std::move(log)), synced_version_(synced_version) {
    state_.synced = synced_version > 0;
  }

  void start() {
    auto self = shared_from_this();
    thread_ = std::thread([self] { self->run(); });
  }

  // Asks the loop to stop and waits up to `wait` for it. A loop still inside a long poll is left
  // behind (detached; it owns what it uses). Returns true if the thread finished.
  bool stop(std::chrono::milliseconds wait) {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (!thread_.joinable()) return true;
    std::unique_lock lock(mutex_);
    const bool finished = cv_.wait_for(lock, wait, [this] { return finished_; });
    lock.unlock();
    if (finished) {
      thread_.join();
    } else {
      thread_.detach();
    }
    return finished;
  }

  struct State {
    bool synced = false;
    std::string last_error;
  };
  State state() const {
    std::lock_guard lock(mutex_);
    return state_;
  }

 private:
  // Sleeps `delay` unless stopped first. Returns false when stopping.
  bool pause(std::chrono::milliseconds delay) {
    std::unique_lock lock(mutex_);
    return !cv_.wait_for(lock, delay, [this] { return stopping_; });
  }
  bool stopping() const {
    std::lock_guard lock(mutex_);
    return stopping_;
  }

  static std::string hint(const Error& error) {
    switch (error.code) {
      case Errc::not_found: return " (is this agent registered? agent-meshctl register)";
      case Errc::unauthorized: return " (the registry refused this agent's signature: is its clock right?)";
      case Errc::forbidden: return " (the registry does not let this agent read its ACL)";
      default: return "";
    }
  }

  void run() {
    std::mt19937_64 random{std::random_device{}()};
    std::int64_t version = synced_version_;
    bool first = synced_version_ == 0;
    unsigned failures = 0;
    while (!stopping()) {
      // The first request answers at once (wait_s 0) so the rules arrive right after start.
      auto answer = registry_->acl_sync(version, first ? 0 : kSyncWaitS);
      if (stopping()) break;
      if (answer) {
        if (failures > 0 || first) {
          log_(LogLevel::info, "registry.synced", "ACL sync with " + registry_->base_url() + " is up");
        }
        first = false;
        failures = 0;
        version = answer->version;
        {
          std::lock_guard lock(mutex_);
          state_.synced = true;
          state_.last_error.clear();
        }
        feed_->set_synced(std::move(answer).value());
        if (!pause(std::chrono::duration_cast<std::chrono::milliseconds>(kSyncMinInterval))) break;
        continue;
      }
      const Error& error = answer.error();
      const auto ceiling = std::min<std::chrono::milliseconds>(
          kSyncBackoffMax, kSyncBackoffInitial * (1LL << std::min(failures, 5u)));
      std::uniform_int_distribution<std::int64_t> jitter(ceiling.count() / 2, ceiling.count());
      const std::chrono::milliseconds delay{jitter(random)};
      ++failures;
      {
        std::lock_guard lock(mutex_);
        state_.last_error = error.describe();
      }
      log_(LogLevel::warn, "registry.sync_failed",
           "ACL sync with " + registry_->base_url() + " failed: " + error.describe() + hint(error) + "; retrying in " +
               millis_text(delay));
      if (!pause(delay)) break;
    }
    std::lock_guard lock(mutex_);
    finished_ = true;
    cv_.notify_all();
  }

  std::shared_ptr<RegistryClient> registry_;
  std::shared_ptr<AclFeed> feed_;
  LogFn log_;
  const std::int64_t synced_version_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool finished_ = false;
  State state_;
  std::thread thread_;
};

class DiscoveryCache {
 public:
  explicit DiscoveryCache(std::shared_ptr<RegistryClient> registry) : registry_(std::move(registry)) {}

  Result<boost::json::value> find(std::optional<std::string> capability, std::optional<std::string> q) {
    Key key{capability, q};
    {
      std::lock_guard lock(mutex_);
      if (auto it = entries_.find(key); it != entries_.end() && Clock::now() - it->second.at < kDiscoveryTtl) {
        return it->second.value;
      }
    }
    DiscoverQuery query;
    query.capability = std::move(capability);
    query.q = std::move(q);
    auto page = registry_->discover(query);
    if (!page) return std::move(page).error();  // errors are not cached: the next call retries
    boost::json::value value(std::move(page).value());
    std::lock_guard lock(mutex_);
    const auto now = Clock::now();
    if (entries_.size() >= kDiscoveryCacheEntries) {
      std::erase_if(entries_, [&](const auto& entry) { return now - entry.second.at >= kDiscoveryTtl; });
    }
    if (entries_.size() >= kDiscoveryCacheEntries) entries_.clear();
    entries_[std::move(key)] = Entry{now, value};
    return value;
  }

 private:
  using Key = std::pair<std::optional<std::string>, std::optional<std::string>>;
  struct Entry {
    Clock::time_point at;
    boost::json::value value;
  };
  std::shared_ptr<RegistryClient> registry_;
  std::mutex mutex_;
  std::map<Key, Entry> entries_;
};

// ---- Relay connection events ----

// The SDK logs every connection event itself (relay.connected, relay.disconnected, relay.gave_up,
// relay.closed); meshd adds what the operator should do when another process took the identity.
void log_connection(const LogFn& log, const ConnectionEvent& event, const std::atomic<bool>& stopping) {
  if (stopping || event.kind != ConnectionEvent::Kind::gave_up) return;
  if (event.close_code && *event.close_code == close_code::replaced) {
    log(LogLevel::error, "meshd.replaced",
        "another process connected to the relay as this agent, so this meshd no longer reconnects; stop one "
        "of them (this meshd keeps its Local API up and answers requests unreachable until it is stopped)");
  } else if (event.close_code && *event.close_code == close_code::revoked) {
    log(LogLevel::error, "meshd.revoked",
        "this agent's key is revoked; requests fail until meshd is restarted with a new key");
  }
}

std::string acl_description(const MeshdConfig& config) {
  switch (config.acl.kind) {
    case AclSetting::Kind::none: return "none";
    case AclSetting::Kind::inline_object: return "inline (" + config.config_file.string() + ")";
    case AclSetting::Kind::file: return config.acl.file.string();
  }
  return "none";
}

Error start_error(const LogFn& log, std::string_view event, const Error& error, Errc code) {
  log(LogLevel::error, event, error.message);
  return Error{code, error.message};
}

}  // namespace

struct Daemon::Parts {
  LogFn log;
  AgentId self;
  std::shared_ptr<AclFeed> feed;
  std::shared_ptr<LocalAgentForwarder> forwarder;
  std::shared_ptr<std::atomic<bool>> stopping = std::make_shared<std::atomic<bool>>(false);
  std::shared_ptr<MeshAgent> agent;
  std::shared_ptr<RegistryClient> registry;
  std::shared_ptr<DiscoveryCache> discovery;
  std::shared_ptr<RegistrySync> sync;
  std::unique_ptr<LocalApiServer> local_api;
  bool stopped = false;
  bool sync_finished = true;
};

Daemon::Daemon(std::unique_ptr<Parts> parts) : parts_(std::move(parts)) {}

Daemon::~Daemon() { stop(); }

const AgentId& Daemon::agent_id() const noexcept { return parts_->self; }

std::filesystem::path Daemon::socket_path() const { return parts_->local_api->socket_path(); }

// Errors: Errc::bad_request for what the configuration got wrong (key, ACL, local agent URL),
// Errc::internal for resources (the socket); both already logged.
Result<std::unique_ptr<Daemon>> Daemon::start(const MeshdConfig& config, std::function<void(LogLevel, std::string_view, std::string_view)> log_sink) {
  auto parts = std::make_unique<Parts>();
  if (log_sink) {
    parts->log = std::move(log_sink);
  } else {
    auto logger = std::make_shared<Logger>(config.log_level);
    parts->log = [logger](LogLevel level, std::string_view event, std::string_view detail) { (*logger)(level, event, detail); };
  }
  const LogFn log = parts->log;

  auto key = config.load_key();
  if (!key) return start_error(log, "meshd.key", key.error(), Errc::bad_request);
  parts->self = key->agent_id();

  AclFeed::Options acl_options;
  acl_options.setting = config.acl;
  acl_options.log = log;
  auto created_feed = AclFeed::create(std::move(acl_options));
  if (!created_feed) return start_error(log, "meshd.acl", created_feed.error(), Errc::bad_request);
  parts->feed = std::move(created_feed).value();
  auto feed = parts->feed;

  if (!config.local_agent_url.empty()) {
    try {
      parts->forwarder = std::make_shared<LocalAgentForwarder>(config.local_agent_url);
    } catch (const std::exception& error) {
      return start_error(log, "meshd.local_agent", Error{Errc::bad_request, error.what()}, Errc::bad_request);
    }
  }
  auto forwarder = parts->forwarder;

  // The first ACL sync happens before the relay connection: messages the relay stored for this
  // agent arrive right after it connects, and must meet the registry's rules, not an empty policy
  // (default deny would refuse them). A registry that does not answer only delays this; the sync
  // thread keeps trying.
  std::int64_t synced_version = 0;
  if (!config.cp_url.empty()) {
    parts->registry = std::make_shared<RegistryClient>(config.cp_url, *key);
    auto first = parts->registry->acl_sync(0, 0);
    if (first) {
      synced_version = first->version;
      feed->set_synced(std::move(first).value());
      log(LogLevel::info, "registry.synced", "ACL sync with " + config.cp_url + " is up");
    } else {
      log(LogLevel::warn, "registry.first_sync_failed",
          "the first ACL sync with " + config.cp_url + " failed (" + first.error().describe() +
              "); requests are refused until a sync succeeds (retrying in the background)");
    }
  }

  auto stopping = parts->stopping;
  ClientOptions options;
  options.relay_urls = config.relay_urls;
  options.expected_relay_id = config.relay_id;
  options.plaintext_peers = config.plaintext_peers;
  options.on_log = log;
  options.on_connection = [log, stopping](const ConnectionEvent& event) { log_connection(log, event, *stopping); };
  parts->agent = std::make_shared<MeshAgent>(*key, std::move(options));
  auto agent = parts->agent;
  // Every capability goes to the local agent; the SDK has checked revocation and the ACL first.
  if (forwarder) {
    agent->handle_any([forwarder](IncomingCall call, Responder responder) {
      forwarder->forward(std::move(call), std::move(responder));
    });
  } else {
    agent->handle_any([](IncomingCall call, Responder responder) {
      responder.fail(Errc::unknown_capability,
                     "no capability \"" + call.capability + "\" here: this agent runs without a local agent");
    });
  }

  std::weak_ptr<MeshAgent> weak_agent = agent;
  feed->start([weak_agent](AclPolicy policy, std::vector<AgentId> revoked, std::int64_t) {
    if (auto target = weak_agent.lock()) {
      target->set_revoked(std::move(revoked));
      target->set_acl(std::move(policy));
    }
  });
  if (config.acl.kind == AclSetting::Kind::none) {
    log(LogLevel::warn, "acl.none",
        config.cp_url.empty()
            ? "no ACL configured (--acl, or an inline acl in --config): every incoming request will be denied"
            : "no ACL file configured: incoming requests are denied until the registry's ACL sync allows them");
  }

  if (!config.cp_url.empty()) {
    parts->discovery = std::make_shared<DiscoveryCache>(parts->registry);
    parts->sync = std::make_shared<RegistrySync>(parts->registry, feed, log, synced_version);
  }
  auto discovery = parts->discovery;
  auto sync = parts->sync;

  LocalApiServer::Hooks hooks;
  hooks.request = [agent](const AgentId& target, std::string capability, boost::json::value payload,
                          RequestOptions request_options) {
    return agent->request(target, std::move(capability), std::move(payload), std::move(request_options));
  };
  hooks.stream = [agent](const AgentId& target, std::string capability, boost::json::value payload,
                         RequestOptions request_options) {
    return agent->stream(target, std::move(capability), std::move(payload), std::move(request_options));
  };
  const std::string local_agent_url = config.local_agent_url;
  const std::string cp_url = config.cp_url;
  std::weak_ptr<RegistrySync> weak_sync = sync;
  hooks.status = [agent, feed, weak_sync, local_agent_url, cp_url]() {
    const ClientStatus status = agent->status();
    const AclFeed::Snapshot acl = feed->snapshot();
    boost::json::object out;
    out["agent_id"] = status.agent.str();
    out["version"] = kVersion;
    boost::json::object relay;
    relay["connected"] = status.connected;
    relay["url"] = status.relay_url;
    if (status.connected) relay["connected_since_ms"] = status.connected_since_ms;
    out["relay"] = std::move(relay);
    out["sessions"] = status.sessions;
    out["requests_in_flight"] = status.requests_in_flight;
    out["requests_served"] = status.requests_served;
    out["acl_version"] = acl.version;
    out["acl_rules"] = acl.rules;
    out["acl_revoked"] = acl.revoked;
    out["local_agent"] = local_agent_url.empty() ? boost::json::value(nullptr) : boost::json::value(local_agent_url);
    if (cp_url.empty()) {
      out["registry"] = nullptr;
    } else {
      boost::json::object registry_state;
      registry_state["url"] = cp_url;
      registry_state["synced"] = acl.synced;
      if (auto live = weak_sync.lock()) {
        const auto state = live->state();
        if (!state.last_error.empty()) registry_state["last_error"] = state.last_error;
      }
      out["registry"] = std::move(registry_state);
    }
    return out;
  };
  hooks.agents = [discovery](std::optional<std::string> capability,
                             std::optional<std::string> q) -> Result<boost::json::value> {
    if (!discovery) {
      return fail(Errc::unreachable, "no --cp-url configured: discovery needs the registry");
    }
    return discovery->find(std::move(capability), std::move(q));
  };

  auto api = LocalApiServer::start(config.socket_path(parts->self), std::move(hooks));
  if (!api) {
    agent->close(std::chrono::milliseconds(0));
    return start_error(log, "meshd.socket", api.error(), Errc::internal);
  }
  parts->local_api = std::move(api).value();

  std::string relays;
  for (const std::string& url : config.relay_urls) relays += (relays.empty() ? "" : ", ") + url;
  log(LogLevel::info, "meshd.started",
      "agent " + parts->self.str() + ", relay " + relays + ", local agent " +
          (config.local_agent_url.empty() ? std::string("none") : config.local_agent_url) + ", acl " +
          acl_description(config) + ", registry " + (config.cp_url.empty() ? std::string("none") : config.cp_url));
  if (sync) sync->start();
  return std::unique_ptr<Daemon>(new Daemon(std::move(parts)));
}

bool Daemon::stop(std::chrono::milliseconds grace) {
  Parts& p = *parts_;
  if (p.stopped) return p.sync_finished;
  p.stopped = true;
  p.stopping->store(true);
  // The Local API stops accepting at once and the agent stops taking new requests; both wait for
  // what is in flight, side by side, so the whole drain stays within `grace`.
  std::thread api_stopper([&p, grace] { p.local_api->stop(grace); });
  p.agent->close(grace);
  api_stopper.join();
  p.feed->stop();
  if (p.sync) p.sync_finished = p.sync->stop(std::chrono::duration_cast<std::chrono::milliseconds>(kSyncStopWait));
  p.local_api.reset();
  p.forwarder.reset();
  p.log(LogLevel::info, "meshd.stopped", "relay connection closed");
  return p.sync_finished;
}

int run_meshd(int argc, char** argv) {
  auto loaded = load_meshd_config(argc, argv);
  scrub_secret_arguments(argc, argv);
  if (!loaded) {
    std::cerr << "agent-meshd: " << loaded.error().message << "\n";
    return kExitConfig;
  }
  if (loaded->exit_now) {
    std::cout << loaded->exit_text << std::flush;
    return 0;
  }
  for (const std::string& warning : loaded->warnings) std::cerr << "agent-meshd: " << warning << "\n";
  const MeshdConfig& config = loaded->config;

  // Every thread started from here on inherits the mask; only the signal thread takes them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto daemon = Daemon::start(config);
  if (!daemon) return daemon.error().code == Errc::bad_request ? kExitConfig : kExitRuntime;

  auto stop_signal = std::make_shared<StopSignal>();
  std::thread([signals, stop_signal] {
    int received = 0;
    if (sigwait(&signals, &received) != 0) return;
    stop_signal->request(received);
    // A second signal while draining: the user does not want to wait.
    if (sigwait(&signals, &received) != 0) return;
    static constexpr char kMessage[] = "agent-meshd: second signal, exiting without draining\n";
    std::fwrite(kMessage, 1, sizeof kMessage - 1, stderr);
    std::fflush(stderr);
    std::_Exit(1);
  }).detach();

  // The first stdout line (spec README "Binaries and defaults"): tests and meshctl read it.
  std::cout << "agent " << (*daemon)->agent_id().str() << " socket " << (*daemon)->socket_path().string() << std::endl;

  const int received = stop_signal->wait();
  std::cerr << "agent-meshd: " << (received == SIGINT ? "SIGINT" : "SIGTERM") << ": finishing requests in flight (up to "
            << millis_text(kDrainGrace) << ")" << std::endl;
  const bool sync_finished = (*daemon)->stop(kDrainGrace);
  if (!sync_finished) {
    // The sync thread is inside the registry's long poll and keeps its objects alive; exiting
    // through exit() would run library cleanups (OpenSSL's atexit handler) under its feet.
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(0);
  }
  daemon->reset();
  return 0;
}

}  // namespace agent_mesh::meshd
