// mesh-demo: the whole agent-mesh flow in one process, each step printed.
//
//   mesh-demo            runs the flow on an ephemeral port and exits 0 (scripts/demo)
//   mesh-demo --serve    the same on 127.0.0.1:8080, then stays up with Bob's echo agent online and
//                        prints the URL and the bootstrap token (for meshctl, MCP, the browser)
//
// Parts, all real and in process: agent-mesh-server's registry and relay (EmbeddedServer), Bob as a
// meshd (the daemon's own code) in front of an echo agent on a local HTTP port, Alice through the
// SDK (MeshClient, RegistryClient). Nothing is mocked; only the processes are merged.
#include <CLI/CLI.hpp>
#include <signal.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "agent_mesh/key_lifecycle.hpp"
#include "agent_mesh/mesh_client.hpp"
#include "agent_mesh/registry_client.hpp"
#include "agent_mesh/version.hpp"
#include "echo_agent.hpp"
#include "meshd/daemon.hpp"
#include "server/mesh_server.hpp"

namespace {

using namespace agent_mesh;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

int step_number = 0;
void step(const std::string& text) { std::cout << "[" << ++step_number << "] " << text << std::endl; }

[[noreturn]] void fail_demo(const std::string& what) {
  std::cerr << "mesh-demo: " << what << std::endl;
  std::exit(1);
}

template <class T>
T must(Result<T> result, const std::string& what) {
  if (!result) fail_demo(what + ": " + result.error().describe());
  return std::move(result).value();
}

std::string short_id(const AgentId& id) { return id.str().substr(0, 10) + "…"; }

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

AgentCard card_for(const AgentId& id, const std::string& group, const std::string& name, const std::string& capability,
                   const std::string& description) {
  AgentCard card;
  card.agent_id = id;
  card.group_id = Uuid::parse(group).value();
  card.name = name;
  card.description = description;
  CardCapability c;
  c.name = capability;
  c.description = description;
  card.capabilities.push_back(std::move(c));
  return card;
}

std::string personal_group(const RegistryClient& registry, const std::string& token) {
  auto me = must(registry.call("GET", "/api/v1/users/me", std::nullopt, token), "GET /users/me");
  for (const auto& group : me.at("groups").as_array()) {
    if (group.at("personal").as_bool()) return std::string(group.at("id").as_string());
  }
  fail_demo("the bootstrap user has no personal group");
}

int stop_all(MeshClient& alice, meshd::Daemon& bob, server::EmbeddedServer& server, const std::filesystem::path& work_dir) {
  alice.close();
  bob.stop();
  server.stop();
  std::error_code ignored;
  std::filesystem::remove_all(work_dir, ignored);
  return 0;
}

int run(bool serve, const std::string& listen, const std::string& web_root) {
  const auto started = Clock::now();
  const auto work_dir = std::filesystem::temp_directory_path() / ("mesh-demo-" + std::to_string(::getpid()));
  std::filesystem::create_directories(work_dir);
  std::filesystem::permissions(work_dir, std::filesystem::perms::owner_all);

  // 1. The server: registry + relay in this process.
  std::vector<std::string> server_args{"--listen", listen, "--data-dir", (work_dir / "server").string(),
                                       "--bootstrap", "--log-level", "error"};
  if (!web_root.empty()) server_args.insert(server_args.end(), {"--web-root", web_root});
  auto server = must(server::EmbeddedServer::start(std::move(server_args)), "starting the server");
  const std::string base_url = server->listening_url();
  const std::string relay_url = server->relay_url();
  const std::string token = server->bootstrap_token().value_or("");
  if (token.empty()) fail_demo("the server did not create a bootstrap token");
  step("server (registry + relay) listening on " + base_url + ", relay " + relay_url);

  // 2. Identities.
  const KeyPair alice_key = KeyPair::generate();
  const KeyPair bob_key = KeyPair::generate();
  const auto bob_key_file = work_dir / "bob.key";
  if (auto saved = alice_key.save(work_dir / "alice.key"); !saved) fail_demo("saving Alice's key: " + saved.error().describe());
  if (auto saved = bob_key.save(bob_key_file); !saved) fail_demo("saving Bob's key: " + saved.error().describe());
  step("identities: alice " + alice_key.agent_id().str() + ", bob " + bob_key.agent_id().str());

  // 3. Register both as signed cards in the bootstrap user's personal group.
  RegistryClient alice_registry(base_url, alice_key);
  RegistryClient bob_registry(base_url, bob_key);
  const std::string group = personal_group(alice_registry, token);
  must(alice_registry.register_card(card_for(alice_key.agent_id(), group, "alice", "chat", "Alice, a demo caller"), token),
       "registering Alice");
  must(bob_registry.register_card(card_for(bob_key.agent_id(), group, "bob", "echo", "Bob echoes what you send"), token),
       "registering Bob");
  step("registered alice (capability chat) and bob (capability echo) as signed Agent Cards");

  // 4. Bob: meshd in process, in front of the echo agent.
  auto echo = must(demo::EchoAgent::start("bob"), "starting Bob's echo agent");
  meshd::MeshdConfig bob_config;
  bob_config.relay_urls = {relay_url};
  bob_config.local_agent_url = echo->url();
  bob_config.key_file = bob_key_file;
  bob_config.cp_url = base_url;
  bob_config.socket = work_dir / "bob.sock";
  bob_config.log_level = LogLevel::error;
  bob_config.mesh_home = work_dir;
  auto bob = must(meshd::Daemon::start(bob_config), "starting Bob's meshd");
  step("bob: meshd (in process) forwarding to the echo agent at " + echo->url() + ", Local API " +
       bob_config.socket.string());

  // 5. Alice: the SDK, no daemon.
  ClientOptions alice_options;
  alice_options.relay_urls = {relay_url};
  alice_options.default_timeout = 10s;
  MeshClient alice(alice_key, alice_options);
  if (auto connected = alice.wait_connected(10s); !connected) fail_demo("Alice could not connect: " + connected.error().describe());
  step("alice: SDK MeshClient connected to the relay");

  // 6. Discovery by capability.
  DiscoverQuery query;
  query.capability = "echo";
  auto found = must(alice_registry.discover(query), "discovery");
  const auto& items = found.at("items").as_array();
  if (items.empty()) fail_demo("discovery found no echo agent");
  const auto& bob_card = items.front().as_object();
  const AgentId bob_id = must(AgentId::parse(bob_card.at("agent_id").as_string()), "Bob's agent ID");
  step("discovery: capability \"echo\" → " + std::string(bob_card.at("name").as_string()) + " " + short_id(bob_id) +
       (bob_card.at("online").as_bool() ? " (online)" : " (offline)"));

  const boost::json::value hello = boost::json::parse(R"({"message": "hello from alice"})");

  // 7. Before any rule: denied (default deny).
  auto denied = alice.request(bob_id, "echo", hello).get();
  if (denied || denied.error().code != Errc::acl_denied) fail_demo("expected acl_denied before the grant");
  step("ACL: no rule yet, so Bob's meshd refuses: " + denied.error().describe());

  // 8. Grant: one rule, synced to Bob's meshd by the registry's long poll.
  const boost::json::object rule{{"group_id", group},
                                 {"source", alice_key.agent_id().str()},
                                 {"target", bob_id.str()},
                                 {"allowed_capabilities", boost::json::array{"echo"}}};
  auto created = must(alice_registry.call("POST", "/api/v1/acl", boost::json::value(rule), token), "granting access");
  step("ACL: rule " + std::string(created.at("id").as_string()) + " lets alice call echo on bob");

  // 9. The encrypted request (retried while the rule travels to Bob's meshd, at most 2 s).
  Result<Response> reply = fail(Errc::acl_denied, "not yet");
  const auto grant_deadline = Clock::now() + 5s;
  while (Clock::now() < grant_deadline) {
    reply = alice.request(bob_id, "echo", hello).get();
    if (reply || reply.error().code != Errc::acl_denied) break;
    std::this_thread::sleep_for(100ms);  // the registry pushes within 2 s; ask again shortly
  }
  if (!reply) fail_demo("the request failed: " + reply.error().describe());
  step(std::string("request (") + (reply->encrypted ? "end-to-end encrypted, Noise IK" : "plaintext") +
       "): " + boost::json::serialize(reply->body));

  // 10. A streamed request: the echo agent answers with server-sent events, meshd turns them into chunks.
  auto stream = alice.stream(bob_id, "echo", boost::json::object{{"stream", 3}});
  int chunks = 0;
  for (;;) {
    auto chunk = stream.next();
    if (!chunk) fail_demo("the stream failed: " + chunk.error().describe());
    if (!chunk->has_value()) break;
    step("stream chunk " + std::to_string(chunks++) + ": " + boost::json::serialize(**chunk));
  }
  step("stream ended after " + std::to_string(chunks) + " chunks");

  // 11. A cancelled request: the echo agent would take 5 s; Alice cancels after 300 ms and meshd
  // closes its connection to the echo agent.
  CancelToken cancel;
  auto slow = alice.request(bob_id, "echo", boost::json::object{{"sleep_ms", 5000}},
                            RequestOptions{.timeout = 10s, .cancel = cancel});
  std::this_thread::sleep_for(300ms);  // the demo's "user" changes their mind
  cancel.cancel();
  auto cancelled = slow.get();
  if (cancelled || cancelled.error().code != Errc::cancelled) fail_demo("expected the slow request to be cancelled");
  step("cancelled request: " + cancelled.error().describe() + " (Bob's handler was told to stop)");

  if (!serve) {
    // 12. Revocation: Alice revokes her own key; the relay closes her connection (4003) and every
    // daemon refuses her from then on.
    Revocation revocation;
    revocation.agent_id = alice_key.agent_id();
    revocation.reason = "demo: key retired";
    revocation.timestamp = wall_ms();
    revocation.sign(alice_key);
    must(alice_registry.call("POST", "/api/v1/revocations", boost::json::value(revocation.to_json())),
         "revoking Alice's key");
    Result<Response> after = fail(Errc::internal, "not tried");
    const auto revoke_deadline = Clock::now() + 5s;
    while (Clock::now() < revoke_deadline) {
      after = alice.request(bob_id, "echo", hello, RequestOptions{.timeout = 2s, .cancel = std::nullopt}).get();
      if (!after && after.error().code == Errc::revoked) break;
      std::this_thread::sleep_for(100ms);
    }
    if (after || after.error().code != Errc::revoked) {
      fail_demo("expected Alice's request to be refused as revoked, got " +
                (after ? std::string("a reply") : after.error().describe()));
    }
    step("revocation: alice's key revoked; her next request: " + after.error().describe());
    const auto seconds = std::chrono::duration<double>(Clock::now() - started).count();
    std::cout << "done in " << std::fixed << std::setprecision(1) << seconds << " s" << std::endl;
    return stop_all(alice, *bob, *server, work_dir);
  }

  // The server's default web root (the UI installed with the binaries), as agent-mesh-server finds it.
  std::error_code no_exe;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", no_exe);
  const auto ui_root = web_root.empty() ? exe.parent_path().parent_path() / "share" / "agent-mesh" / "web"
                                        : std::filesystem::path(web_root);
  if (!std::filesystem::is_regular_file(ui_root / "index.html", no_exe)) {
    std::cout << "\nnote: no web UI in " << ui_root.string()
              << " (build it with `npm run build` in web/ and pass --web-root web/app/dist, or install with "
                 "scripts/setup)" << std::endl;
  }
  std::cout << "\nmesh-demo is serving. Open " << base_url << "/ in a browser and log in with the bootstrap token,"
            << " or point meshctl at it:\n"
            << "  registry: " << base_url << "\n  relay:    " << relay_url << "\n  echo agent (bob): " << bob_id.str()
            << "\n  bootstrap token: " << token << "\nCtrl-C stops it." << std::endl;
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  int received = 0;
  sigwait(&signals, &received);
  std::cout << "stopping" << std::endl;
  return stop_all(alice, *bob, *server, work_dir);
}

}  // namespace

int main(int argc, char** argv) {
  // Signals are taken by sigwait in --serve mode; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  CLI::App app{"mesh-demo: the agent-mesh flow in one process (server, two agents, encrypted requests)"};
  bool serve = false;
  std::string listen;
  std::string web_root;
  app.add_flag("--serve", serve, "stay up afterwards on 127.0.0.1:8080 with the echo agent online");
  app.add_option("--listen", listen, "address:port for the server (default 127.0.0.1:0, or 127.0.0.1:8080 with --serve)");
  app.add_option("--web-root", web_root,
                 "directory of the built web UI served at / (default: share/agent-mesh/web next to the binaries)");
  app.set_version_flag("--version", std::string(kVersion));
  app.footer("\nExamples:\n  mesh-demo\n  mesh-demo --serve\n  mesh-demo --serve --listen 127.0.0.1:9090\n"
             "  mesh-demo --serve --web-root web/app/dist\n");
  CLI11_PARSE(app, argc, argv);
  if (listen.empty()) listen = serve ? "127.0.0.1:8080" : "127.0.0.1:0";
  return run(serve, listen, web_root);
}
