#include "server/mesh_server.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json/serialize.hpp>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agent_mesh/json.hpp"
#include "net/http_client.hpp"
#include "registry/registry_service.hpp"
#include "registry/sqlite_storage.hpp"
#include "registry/static_files.hpp"
#include "relay/relay_config.hpp"
#include "relay/relay_log.hpp"
#include "relay/relay_server.hpp"

namespace agent_mesh::server {

namespace {

using relay::ExtraFlag;

std::vector<ExtraFlag> extra_flags(Role role) {
  using Kind = ExtraFlag::Kind;
  std::vector<ExtraFlag> flags{
      {"db-path", "Registry database (default: <data-dir>/mesh.db)", Kind::text, "FILE"},
      {"bootstrap",
       "With no user yet: create user admin with an API token, written to <data-dir>/bootstrap-token (0600) and "
       "printed once on stderr",
       Kind::boolean, ""},
      {"cors-origin", "Origin allowed to call the API from a browser (repeatable; default: none)", Kind::list, "ORIGIN"},
      {"oauth-device-url", "OAuth device authorization endpoint (GitHub: https://github.com/login/device/code)",
       Kind::text, "URL"},
      {"oauth-token-url", "OAuth token endpoint (GitHub: https://github.com/login/oauth/access_token)", Kind::text,
       "URL"},
      {"oauth-user-url", "OAuth user endpoint (GitHub: https://api.github.com/user)", Kind::text, "URL"},
      {"oauth-client-id", "OAuth app client ID (enables login with the device flow)", Kind::text, "ID"},
      {"oauth-client-secret-file", "File holding the OAuth app's client secret", Kind::text, "FILE"},
  };
  if (role == Role::all_in_one) {
    flags.push_back({"web-root", "Directory of the built web UI served at / (default: the one installed with the binary)",
                     Kind::text, "DIR"});
  } else {
    flags.push_back({"relay-url", "A relay's http(s):// base URL to push revocations to and read liveness from (repeatable)",
                     Kind::list, "URL"});
    flags.push_back({"relay-admin-token-file", "File holding the relays' admin token", Kind::text, "FILE"});
  }
  return flags;
}

std::string first(const relay::LoadedConfig& loaded, const std::string& name) {
  auto it = loaded.extra.find(name);
  return it == loaded.extra.end() || it->second.empty() ? std::string() : it->second.front();
}

// agent-mesh-server's --public-url is the http(s):// URL clients reach (registry.md); the relay
// inside verifies ws(s)://<same authority>/relay/ws as its relay_id. Rewrites the argument so the
// relay's own parser sees the WebSocket URL.
std::vector<std::string> rewrite_public_url(std::vector<std::string> args, std::string& http_public_url) {
  auto to_ws = [&](std::string& value) {
    std::string base = value;
    while (!base.empty() && base.back() == '/') base.pop_back();
    if (base.starts_with("http://")) {
      http_public_url = base;
      value = "ws://" + base.substr(7) + "/relay/ws";
    } else if (base.starts_with("https://")) {
      http_public_url = base;
      value = "wss://" + base.substr(8) + "/relay/ws";
    }
  };
  for (std::size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--public-url" && i + 1 < args.size()) {
      to_ws(args[i + 1]);
    } else if (args[i].starts_with("--public-url=")) {
      std::string value = args[i].substr(13);
      to_ws(value);
      args[i] = "--public-url=" + value;
    }
  }
  return args;
}

Result<std::string> read_secret(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) return fail(Errc::bad_request, what + " " + path + ": cannot read it");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  if (text.empty()) return fail(Errc::bad_request, what + " " + path + " is empty");
  return text;
}

// Writes the bootstrap token with mode 0600 from the start (never readable by others, not even
// briefly), replacing an older file atomically.
Status write_token_file(const std::filesystem::path& path, const std::string& token) {
  const std::string temporary = path.string() + ".tmp";
  ::unlink(temporary.c_str());
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return fail(Errc::internal, "bootstrap: cannot create " + temporary + ": " + std::strerror(errno));
  const std::string line = token + "\n";
  const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!written || ::rename(temporary.c_str(), path.c_str()) != 0) {
    ::unlink(temporary.c_str());
    return fail(Errc::internal, "bootstrap: cannot write " + path.string());
  }
  return {};
}

std::filesystem::path default_web_root(const char* argv0) {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) exe = argv0;
  return exe.parent_path().parent_path() / "share" / "agent-mesh" / "web";
}

// A standalone registry's view of its relays: revocations posted to each, liveness read from each
// one's admin /status?agents=1 (cached for a second: discovery pages ask per request).
class RemoteRelays {
 public:
  RemoteRelays(std::vector<std::string> urls, std::string admin_token)
      : urls_(std::move(urls)), admin_token_(std::move(admin_token)) {
    for (auto& url : urls_) {
      while (!url.empty() && url.back() == '/') url.pop_back();
    }
    pusher_ = std::thread([this] { push_loop(); });
  }
  ~RemoteRelays() {
    {
      std::lock_guard lock(push_mutex_);
      stopping_ = true;
    }
    push_wake_.notify_one();
    pusher_.join();
  }
  RemoteRelays(const RemoteRelays&) = delete;
  RemoteRelays& operator=(const RemoteRelays&) = delete;

  // Queued for the pusher thread: a slow relay never holds up a network thread. A revocation
  // that does not reach a relay is pushed again at the registry's next start (api_acl.cpp).
  Status push(const Revocation& revocation) {
    {
      std::lock_guard lock(push_mutex_);
      if (queue_.size() >= 10000) return fail(Errc::rate_limited, "too many revocations waiting for the relays");
      queue_.push_back(revocation);
    }
    push_wake_.notify_one();
    return {};
  }

 private:
  void push_loop() {
    for (;;) {
      Revocation next;
      {
        std::unique_lock lock(push_mutex_);
        push_wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        next = std::move(queue_.front());
        queue_.pop_front();
      }
      if (auto pushed = push_now(next); !pushed) {
        relay::log_event(relay::LogLevel::warn, "registry.revocation_push_failed",
                         {{"agent", next.agent_id.str()}, {"error", pushed.error().message}});
      }
    }
  }

  Status push_now(const Revocation& revocation) {
    Status result;
    for (const auto& url : urls_) {
      net::HttpRequest request;
      request.method = "POST";
      request.url = url + "/revocations";
      request.headers.emplace_back("Content-Type", "application/json");
      if (!admin_token_.empty()) request.headers.emplace_back("Authorization", "Bearer " + admin_token_);
      request.body = revocation.serialize();
      request.timeout = std::chrono::seconds(5);
      auto response = net::http_request(request);
      if (!response) {
        result = std::move(response).error();
      } else if (response->status != 200) {
        result = fail(Errc::unreachable, "relay " + url + " answered " + std::to_string(response->status));
      }
    }
    return result;
  }


 public:
  std::vector<registry::RelayLink::Presence> online() {
    std::lock_guard lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    if (now - fetched_ < std::chrono::seconds(1)) return cached_;
    fetched_ = now;
    cached_.clear();
    for (const auto& url : urls_) {
      net::HttpRequest request;
      request.method = "GET";
      request.url = url + "/status?agents=1";
      if (!admin_token_.empty()) request.headers.emplace_back("Authorization", "Bearer " + admin_token_);
      request.timeout = std::chrono::seconds(2);
      auto response = net::http_request(request);
      if (!response || response->status != 200) continue;
      auto body = json::parse_ijson(response->body);
      if (!body || !body->is_object()) continue;
      const auto* agents = body->as_object().if_contains("agents");
      if (agents == nullptr || !agents->is_array()) continue;
      for (const auto& entry : agents->as_array()) {
        if (!entry.is_object()) continue;
        const auto& object = entry.as_object();
        const auto* id = object.if_contains("agent_id");
        if (id == nullptr || !id->is_string()) continue;
        registry::RelayLink::Presence presence;
        presence.agent_id = std::string(id->as_string());
        if (const auto* at = object.if_contains("connected_at"); at && at->is_int64()) presence.connected_at_ms = at->as_int64();
        if (const auto* seen = object.if_contains("last_seen"); seen && seen->is_int64()) presence.last_seen_ms = seen->as_int64();
        cached_.push_back(std::move(presence));
      }
    }
    return cached_;
  }

 private:
  std::vector<std::string> urls_;
  std::string admin_token_;
  std::mutex mutex_;
  std::chrono::steady_clock::time_point fetched_{};
  std::vector<registry::RelayLink::Presence> cached_;
  std::mutex push_mutex_;
  std::condition_variable push_wake_;
  std::deque<Revocation> queue_;
  bool stopping_ = false;
  std::thread pusher_;
};


// Why starting failed, and the exit status the command line reports for it (2: bad flags or
// configuration, 1: could not start).
struct Failure {
  int exit_code = 1;
  std::string message;
};

Failure failure(int exit_code, std::string message) { return Failure{exit_code, std::move(message)}; }

std::string program_name(Role role) { return role == Role::all_in_one ? "agent-mesh-server" : "agent-mesh-registry"; }

// Everything a running server holds, shared by run_mesh_server (the binaries) and EmbeddedServer.
// Built in two steps so the command line can block its signals between them: parse() reads the
// flags and starts no thread; open() opens storage, binds the listener, runs --bootstrap and wires
// the registry behind the relay's HTTP front. The front then runs on run()'s threads.
class Instance {
 public:
  explicit Instance(Role role) : role_(role), program_(program_name(role)) {}
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;
  ~Instance() { shutdown(); }

  // `args[0]` is the program (argv[0]), the rest the flags.
  std::optional<Failure> parse(std::vector<std::string> args) {
    relay::CommandLine command;
    command.program = program_;
    command.description =
        role_ == Role::all_in_one
            ? "agent-mesh-server: the registry (/api/v1/), the relay (/relay/ws) and the web UI (/) in one process.\n"
              "Every relay setting is also a flag here; --public-url is the http(s):// URL clients reach."
            : "agent-mesh-registry: the registry's REST API (/api/v1/) alone; relays run separately (--relay-url).";
    command.examples = "\nExamples:\n  " + program_ +
                       " --listen 127.0.0.1:8080 --data-dir /var/lib/agent-mesh --bootstrap\n  " + program_ +
                       " --listen 0.0.0.0:8080 --public-url https://mesh.example.com --trusted-proxies 127.0.0.1/32\n";
    command.extra = extra_flags(role_);
    argv0_ = args.empty() ? program_ : args.front();
    args = rewrite_public_url(std::move(args), http_public_url_);
    std::vector<const char*> arg_pointers;
    for (const auto& arg : args) arg_pointers.push_back(arg.c_str());
    auto loaded = relay::load_relay_config(static_cast<int>(arg_pointers.size()), arg_pointers.data(), command);
    if (!loaded) {
      std::string message = loaded.error().message;
      if (message.find("wildcard address") != std::string::npos) {
        // The relay's wording names its ws:// relay_id; here the flag takes the site's URL.
        message = message.substr(0, message.find(':')) +
                  ": a wildcard address needs --public-url, the http(s):// URL clients reach, e.g. "
                  "--public-url https://mesh.example.com (the relay inside then verifies "
                  "wss://mesh.example.com/relay/ws)";
      }
      return failure(2, std::move(message));
    }
    loaded_ = std::move(loaded).value();
    return std::nullopt;
  }

  // --help or --version: print exit_text() and exit 0 without open().
  [[nodiscard]] bool exit_now() const { return loaded_.exit_now; }
  [[nodiscard]] const std::string& exit_text() const { return loaded_.exit_text; }

  // Starts logging, opens storage, binds the listener, bootstraps, installs the handlers. The
  // bootstrap token, when one was created, is in bootstrap_token() (written to
  // <data-dir>/bootstrap-token already); the caller decides whether to print it.
  std::optional<Failure> open() {
    const relay::RelayConfig& config = loaded_.config;
    relay::init_logging(config);

    std::error_code dir_ec;
    std::filesystem::create_directories(config.data_dir, dir_ec);
    if (dir_ec) return failure(1, "data_dir " + config.data_dir.string() + ": " + dir_ec.message());
    const std::string db_path_flag = first(loaded_, "db-path");
    const std::filesystem::path db_path =
        db_path_flag.empty() ? config.data_dir / "mesh.db" : std::filesystem::path(db_path_flag);
    auto opened = registry::SqliteStorage::open(db_path);
    if (!opened) return failure(1, opened.error().message);
    std::shared_ptr<registry::RegistryStorage> storage = std::move(opened).value();

    registry::RegistryOptions options;
    if (!config.admin_token_file.empty()) {
      auto token = read_secret(config.admin_token_file.string(), "admin_token_file");
      if (!token) return failure(2, token.error().message);
      options.admin_token = std::move(token).value();
    }
    if (auto it = loaded_.extra.find("cors-origin"); it != loaded_.extra.end()) options.cors_origins = it->second;
    const std::string client_id = first(loaded_, "oauth-client-id");
    if (!client_id.empty()) {
      registry::DeviceFlowConfig oauth;
      oauth.client_id = client_id;
      const std::string device_url = first(loaded_, "oauth-device-url");
      const std::string token_url = first(loaded_, "oauth-token-url");
      const std::string user_url = first(loaded_, "oauth-user-url");
      if (!device_url.empty()) oauth.device_url = device_url;
      if (!token_url.empty()) oauth.token_url = token_url;
      if (!user_url.empty()) oauth.user_url = user_url;
      const std::string secret_file = first(loaded_, "oauth-client-secret-file");
      if (secret_file.empty()) return failure(2, "--oauth-client-secret-file is required with --oauth-client-id");
      auto secret = read_secret(secret_file, "--oauth-client-secret-file");
      if (!secret) return failure(2, secret.error().message);
      oauth.client_secret = std::move(secret).value();
      options.oauth = std::move(oauth);
    }

    front_ = std::make_unique<relay::RelayServer>(config);
    if (role_ == Role::registry_only) front_->disable_relay();
    if (auto started = front_->start(); !started) return failure(1, started.error().message);
    options.public_url = http_public_url_.empty() ? front_->listening_url() : http_public_url_;

    registry::RelayLink link;
    if (role_ == Role::all_in_one) {
      options.relay_url = front_->relay_id();
      relay::RelayServer* front = front_.get();
      link.online_agents = [front] {
        std::vector<registry::RelayLink::Presence> out;
        for (const auto& presence : front->online_agents()) {
          out.push_back({presence.agent.str(), presence.connected_at_ms, presence.last_seen_ms});
        }
        return out;
      };
      link.push_revocation = [front](const Revocation& revocation) { return front->revoke(revocation); };
    } else {
      std::vector<std::string> relay_urls;
      if (auto it = loaded_.extra.find("relay-url"); it != loaded_.extra.end()) relay_urls = it->second;
      std::string relay_token;
      if (const std::string file = first(loaded_, "relay-admin-token-file"); !file.empty()) {
        auto token = read_secret(file, "--relay-admin-token-file");
        if (!token) return failure(2, token.error().message);
        relay_token = std::move(token).value();
      }
      if (!relay_urls.empty()) {
        std::string url = relay_urls.front();
        while (!url.empty() && url.back() == '/') url.pop_back();
        if (url.starts_with("https://")) options.relay_url = "wss://" + url.substr(8) + "/relay/ws";
        if (url.starts_with("http://")) options.relay_url = "ws://" + url.substr(7) + "/relay/ws";
      }
      auto remote = std::make_shared<RemoteRelays>(relay_urls, relay_token);
      link.online_agents = [remote] { return remote->online(); };
      link.push_revocation = [remote](const Revocation& revocation) { return remote->push(revocation); };
    }
    relay_url_ = options.relay_url;

    service_ = std::make_shared<registry::RegistryService>(storage, options, link);
    if (loaded_.extra.contains("bootstrap")) {
      bootstrap_requested_ = true;
      auto token = service_->bootstrap();
      if (!token) return failure(1, "bootstrap: " + token.error().message);
      if (*token) {
        bootstrap_path_ = config.data_dir / "bootstrap-token";
        if (auto written = write_token_file(bootstrap_path_, **token); !written) {
          return failure(1, written.error().message);
        }
        bootstrap_token_ = std::move(**token);
      }
    }

    std::shared_ptr<registry::StaticFiles> web;
    if (role_ == Role::all_in_one) {
      const std::string flag = first(loaded_, "web-root");
      web = std::make_shared<registry::StaticFiles>(flag.empty() ? default_web_root(argv0_.c_str())
                                                                 : std::filesystem::path(flag));
    }
    front_->set_http_handler([service = service_, web](http::Request request, http::Responder respond) {
      if (web && !request.path().starts_with("/api/")) {
        respond(web->serve(request));
        return;
      }
      service->handle(std::move(request), std::move(respond));
    });
    if (role_ == Role::all_in_one) {
      front_->set_registration_gate(
          [service = service_](const AgentId& agent) { return service->may_authenticate(agent.str()); });
    }
    return std::nullopt;
  }

  [[nodiscard]] const std::string& program() const noexcept { return program_; }
  [[nodiscard]] const relay::RelayConfig& config() const noexcept { return loaded_.config; }
  [[nodiscard]] relay::RelayServer& front() noexcept { return *front_; }
  [[nodiscard]] const relay::RelayServer& front() const noexcept { return *front_; }
  [[nodiscard]] const std::shared_ptr<registry::RegistryService>& service() const noexcept { return service_; }
  [[nodiscard]] bool bootstrap_requested() const noexcept { return bootstrap_requested_; }
  [[nodiscard]] const std::optional<std::string>& bootstrap_token() const noexcept { return bootstrap_token_; }
  [[nodiscard]] const std::filesystem::path& bootstrap_path() const noexcept { return bootstrap_path_; }
  [[nodiscard]] const std::string& relay_url() const noexcept { return relay_url_; }

  // Serves on `threads` threads (config.threads, or one per core) until drained.
  void run() {
    const auto threads = loaded_.config.threads > 0 ? static_cast<unsigned>(loaded_.config.threads)
                                                    : std::max(1u, std::thread::hardware_concurrency());
    front_->run(threads);
    shutdown();
  }

  // Answers the long polls (so a drain is not held up by them), then drains the front. Thread-safe.
  void begin_stop() {
    if (service_) service_->shutdown();
    if (front_) front_->drain();
  }

 private:
  void shutdown() {
    if (service_) service_->shutdown();
  }

  Role role_;
  std::string program_;
  std::string argv0_;
  std::string http_public_url_;
  relay::LoadedConfig loaded_;
  // The front holds the handler that holds the service, whose RelayLink points at the front; the
  // service is shut down before the front goes (destroyed in reverse order of declaration).
  std::unique_ptr<relay::RelayServer> front_;
  std::shared_ptr<registry::RegistryService> service_;
  std::string relay_url_;
  bool bootstrap_requested_ = false;
  std::optional<std::string> bootstrap_token_;
  std::filesystem::path bootstrap_path_;
};

}  // namespace

int run_mesh_server(int argc, char** argv, Role role) {
  Instance instance(role);
  if (auto failed = instance.parse(std::vector<std::string>(argv, argv + argc))) {
    std::cerr << instance.program() << ": " << failed->message << "\n";
    return failed->exit_code;
  }
  if (instance.exit_now()) {
    std::cout << instance.exit_text();
    return 0;
  }

  // Blocked before any thread starts, so every thread inherits the mask and sigwait below sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  if (auto failed = instance.open()) {
    std::cerr << instance.program() << ": " << failed->message << "\n";
    return failed->exit_code;
  }
  if (instance.bootstrap_token()) {
    std::cerr << "bootstrap: created user admin; its API token (shown once, also in " << instance.bootstrap_path().string()
              << ", mode 0600):\n" << *instance.bootstrap_token() << "\n";
  } else if (instance.bootstrap_requested()) {
    std::cerr << "bootstrap: users exist already; nothing done\n";
  }

  // The first stdout line, so tests and scripts can use port 0 (spec README).
  std::cout << "listening " << instance.front().listening_url() << std::endl;

  std::thread signal_thread([&instance, signals] {
    int received = 0;
    sigwait(&signals, &received);
    relay::log_event(relay::LogLevel::info, "server.signal", {{"signal", std::to_string(received)}});
    instance.begin_stop();
  });
  signal_thread.detach();

  instance.run();
  return 0;
}

// ---- EmbeddedServer ----

struct EmbeddedServer::State {
  explicit State(Role role) : instance(role) {}
  Instance instance;
  std::optional<std::string> bootstrap_token;
  std::thread runner;
  std::once_flag stopped;
};

Result<std::unique_ptr<EmbeddedServer>> EmbeddedServer::start(std::vector<std::string> args, Role role) {
  auto state = std::make_unique<State>(role);
  Instance& instance = state->instance;
  args.insert(args.begin(), instance.program());
  if (auto failed = instance.parse(std::move(args))) {
    return fail(failed->exit_code == 2 ? Errc::bad_request : Errc::internal, instance.program() + ": " + failed->message);
  }
  if (instance.exit_now()) {
    return fail(Errc::bad_request, instance.program() + ": --help and --version are for the command line");
  }
  if (auto failed = instance.open()) {
    return fail(failed->exit_code == 2 ? Errc::bad_request : Errc::internal, instance.program() + ": " + failed->message);
  }
  state->bootstrap_token = instance.bootstrap_token();
  if (!state->bootstrap_token && instance.bootstrap_requested()) {
    // Users existed already: the token an earlier --bootstrap left in the data directory, if any.
    if (auto earlier = read_secret((instance.config().data_dir / "bootstrap-token").string(), "bootstrap-token")) {
      state->bootstrap_token = std::move(earlier).value();
    }
  }
  state->runner = std::thread([&instance] { instance.run(); });
  return std::unique_ptr<EmbeddedServer>(new EmbeddedServer(std::move(state)));
}

EmbeddedServer::EmbeddedServer(std::unique_ptr<State> state) : state_(std::move(state)) {}

EmbeddedServer::~EmbeddedServer() { stop(); }

std::string EmbeddedServer::listening_url() const { return state_->instance.front().listening_url(); }

std::optional<std::string> EmbeddedServer::bootstrap_token() const { return state_->bootstrap_token; }

std::string EmbeddedServer::relay_url() const { return state_->instance.relay_url(); }

void EmbeddedServer::stop() {
  std::call_once(state_->stopped, [this] {
    state_->instance.begin_stop();
    if (state_->runner.joinable()) state_->runner.join();
  });
}

}  // namespace agent_mesh::server
