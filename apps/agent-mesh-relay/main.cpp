// agent-mesh-relay: the relay alone (relay.md). Thin: configuration, signals, run.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <thread>

#include "relay/relay_config.hpp"
#include "relay/relay_log.hpp"
#include "relay/relay_server.hpp"

int main(int argc, char** argv) {
  using namespace agent_mesh::relay;
  auto loaded = load_relay_config(argc, argv);
  if (!loaded) {
    std::cerr << "agent-mesh-relay: " << loaded.error().message << "\n";
    return 2;
  }
  if (loaded->exit_now) {
    std::cout << loaded->exit_text;
    return 0;
  }
  // SIGTERM/SIGINT start a drain (relay.md "Shutdown"); they are handled on one thread by
  // sigwait, so no code runs in a signal handler. Block them before any other thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  init_logging(loaded->config);
  RelayServer server(loaded->config);
  if (auto started = server.start(); !started) {
    std::cerr << "agent-mesh-relay: " << started.error().message << "\n";
    return 1;
  }
  // The first stdout line, so tests and scripts can use port 0 (spec README).
  std::cout << "listening " << server.listening_url() << std::endl;

  std::thread signal_thread([&server, signals] {
    int received = 0;
    sigwait(&signals, &received);
    log_event(LogLevel::info, "relay.signal", {{"signal", std::to_string(received)}});
    server.drain();
  });
  signal_thread.detach();

  const auto threads = loaded->config.threads > 0 ? static_cast<unsigned>(loaded->config.threads)
                                                  : std::max(1u, std::thread::hardware_concurrency());
  server.run(threads);
  return 0;
}
