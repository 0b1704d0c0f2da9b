// mesh-demo: the agent-mesh flow in one process, printing each step.
//
// Until the SDK and daemon land (issue 15), it shows what the core does:
// two identities, a signed request envelope from Alice to Bob, Bob's receive checks, and the
// rejections a tampered, replayed or misaddressed envelope gets.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "agent_mesh/envelope.hpp"
#include "agent_mesh/identity.hpp"
#include "agent_mesh/replay_cache.hpp"
#include "agent_mesh/version.hpp"

namespace {

using namespace agent_mesh;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void step(int n, const std::string& text) { std::cout << "[" << n << "] " << text << "\n"; }

void expect_rejected(int n, const std::string& what, const Result<Envelope>& verdict) {
  if (verdict.ok()) {
    std::cout << "[" << n << "] " << what << ": ACCEPTED (unexpected)\n";
    std::exit(1);
  }
  step(n, what + ": rejected, " + verdict.error().describe());
}

int run(const std::string& key_dir) {
  KeyPair alice = KeyPair::generate();
  KeyPair bob = KeyPair::generate();
  if (!key_dir.empty()) {
    const auto path = std::filesystem::path(key_dir) / "alice.key";
    if (auto saved = alice.save(path); !saved) {
      std::cerr << "mesh-demo: " << saved.error().describe() << "\n";
      return 1;
    }
    step(0, "saved Alice's secret key to " + path.string() + " (mode 0600)");
  }
  step(1, "Alice's agent ID: " + alice.agent_id().str());
  step(2, "Bob's agent ID:   " + bob.agent_id().str());

  Envelope request;
  request.id = Uuid::generate();
  request.from = alice.agent_id();
  request.to = bob.agent_id();
  request.msg_type = MsgType::request;
  request.timestamp = now_ms();
  request.payload = body_to_json(RequestBody{"echo", boost::json::value{{"message", "hello bob"}}, 30000});
  request.sign(alice);
  const std::string frame = request.serialize();
  step(3, "Alice signs a plaintext request (" + std::to_string(frame.size()) + " bytes):\n    " + frame);

  ReplayCache replay;
  const FreshnessPolicy freshness;
  auto received = receive_envelope(frame, bob.agent_id(), now_ms(), freshness, replay);
  if (!received) {
    std::cerr << "mesh-demo: Bob rejected a valid envelope: " << received.error().describe() << "\n";
    return 1;
  }
  auto body = parse_body(received->msg_type, received->payload);
  if (!body) {
    std::cerr << "mesh-demo: bad body: " << body.error().describe() << "\n";
    return 1;
  }
  const auto& req = std::get<RequestBody>(*body);
  step(4, "Bob verifies it: from " + received->from.str() + ", capability \"" + req.capability + "\"");

  expect_rejected(5, "the same frame again (replay)", receive_envelope(frame, bob.agent_id(), now_ms(), freshness, replay));
  std::string tampered = frame;
  tampered.replace(tampered.find("hello bob"), 9, "hello eve");
  expect_rejected(6, "a tampered copy", receive_envelope(tampered, bob.agent_id(), now_ms(), freshness, replay));
  KeyPair carol = KeyPair::generate();
  expect_rejected(7, "the frame delivered to Carol", receive_envelope(frame, carol.agent_id(), now_ms(), freshness, replay));
  step(8, "done: encrypted sessions over the relay come with the SDK (next issues)");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mesh-demo: runs the agent-mesh flow in one process and prints each step.\n\n"
               "Example:\n  mesh-demo\n  mesh-demo --key-dir /tmp/demo-keys"};
  app.set_version_flag("--version", std::string("mesh-demo ") + std::string(agent_mesh::kVersion));
  std::string key_dir;
  app.add_option("--key-dir", key_dir, "also save Alice's secret key file (mode 0600) in this directory");
  CLI11_PARSE(app, argc, argv);
  return run(key_dir);
}
