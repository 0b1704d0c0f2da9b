// sdk_peer: the C++ SDK side of the TypeScript client's interop tests (web/client/interop/). One JSON
// object per line on stdout, one per event, so a test can wait for events instead of sleeping.
//
//   sdk_peer serve --relay URL --key-file FILE [--allow AGENT_ID]...
//     A MeshAgent serving, to the --allow'ed agents only (ACL: every capability):
//       echo   (unary)  → {"echo": <body>, "from": <caller>, "encrypted": <bool>}
//       fail   (unary)  → error agent_error "sdk_peer fails on purpose"
//       count  (stream) body {"n": N, "hold"?: true} → chunks {"i": 0} … {"i": N-1}, then the end;
//                       with "hold" it waits (after the N chunks) until the caller cancels
//       wait   (unary)  waits until the caller cancels or the deadline passes
//     Events: {"event":"ready","agent_id"}, {"event":"request","id","from","capability","stream"},
//             {"event":"cancelled","id","capability"} (the handler's cancel signal fired).
//
//   sdk_peer call --relay URL --key-file FILE
//     A MeshClient driven by JSON lines on stdin:
//       {"op":"request"|"stream","tag":T,"target":ID,"capability":C,"body":B,"timeout_ms"?:N}
//       {"op":"cancel","tag":T}
//     Events: {"event":"ready","agent_id"}, {"event":"response","tag","body","encrypted"},
//             {"event":"chunk","tag","body"}, {"event":"end","tag"}, {"event":"error","tag","code","message"}.
//
// Both modes run until stdin reaches EOF (the test closes it, or kills the process), then close the
// client and print {"event":"closed"}. Exit status 2 for usage errors, 1 if the relay is not reached.
#include <boost/json.hpp>
#include <chrono>
#include <condition_variable>
#include <future>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent_mesh/acl.hpp"
#include "agent_mesh/mesh_agent.hpp"
#include "agent_mesh/mesh_client.hpp"

namespace {

using namespace std::chrono_literals;
using agent_mesh::AgentId;
using agent_mesh::Errc;

std::mutex out_mutex;

void emit(boost::json::object event) {
  const std::string line = boost::json::serialize(event);
  std::lock_guard lock(out_mutex);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

[[noreturn]] void usage(const std::string& problem) {
  std::fprintf(stderr, "sdk_peer: %s\nusage: sdk_peer serve|call --relay URL --key-file FILE [--allow ID]...\n",
               problem.c_str());
  std::exit(2);
}

struct Args {
  std::string mode;
  std::string relay;
  std::string key_file;
  std::vector<std::string> allow;
};

Args parse_args(int argc, char** argv) {
  if (argc < 2) usage("missing mode");
  Args args;
  args.mode = argv[1];
  if (args.mode != "serve" && args.mode != "call") usage("unknown mode " + args.mode);
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) usage(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--relay") {
      args.relay = value;
    } else if (flag == "--key-file") {
      args.key_file = value;
    } else if (flag == "--allow") {
      args.allow.push_back(value);
    } else {
      usage("unknown flag " + flag);
    }
  }
  if (args.relay.empty() || args.key_file.empty()) usage("--relay and --key-file are required");
  return args;
}

agent_mesh::ClientOptions options(const Args& args) {
  agent_mesh::ClientOptions o;
  o.relay_urls = {args.relay};
  o.reconnect_initial = 20ms;
  o.reconnect_max = 500ms;
  o.default_timeout = 10s;
  o.on_log = [](agent_mesh::LogLevel level, std::string_view event, std::string_view detail) {
    if (level >= agent_mesh::LogLevel::info) {
      std::lock_guard lock(out_mutex);
      std::fprintf(stderr, "sdk_peer log: %.*s %.*s\n", static_cast<int>(event.size()), event.data(),
                   static_cast<int>(detail.size()), detail.data());
    }
  };
  return o;
}

boost::json::object error_event(const std::string& tag, const agent_mesh::Error& error) {
  return {{"event", "error"}, {"tag", tag}, {"code", agent_mesh::to_string(error.code)}, {"message", error.message}};
}

void wait_for_eof() {
  std::string line;
  while (std::getline(std::cin, line)) {
  }
}

// Waits until `call` is cancelled (by the caller, its deadline or shutdown); reports it once.
void hold_until_cancelled(const agent_mesh::IncomingCall& call) {
  auto stopped = std::make_shared<std::promise<void>>();
  auto done = stopped->get_future();
  call.cancelled.on_cancel([stopped] { stopped->set_value(); });
  if (done.wait_for(60s) == std::future_status::ready) {
    emit({{"event", "cancelled"}, {"id", call.id.to_string()}, {"capability", call.capability}});
  }
}

void announce(const agent_mesh::IncomingCall& call) {
  emit({{"event", "request"},
        {"id", call.id.to_string()},
        {"from", call.from.str()},
        {"capability", call.capability},
        {"stream", call.stream},
        {"encrypted", call.encrypted}});
}

int serve(const Args& args, agent_mesh::KeyPair key) {
  const AgentId self = key.agent_id();
  agent_mesh::MeshAgent agent(std::move(key), options(args));
  std::vector<agent_mesh::AclRule> rules;
  for (const std::string& source : args.allow) {
    auto id = AgentId::parse(source);
    if (!id) usage("--allow: " + id.error().describe());
    agent_mesh::AclRule rule;
    rule.source = agent_mesh::AclSource::agent(*id);
    rule.target = self;
    rule.allowed_capabilities = {"*"};
    rules.push_back(std::move(rule));
  }
  auto policy = agent_mesh::AclPolicy::from_rules(std::move(rules));
  if (!policy) usage(policy.error().describe());
  agent.set_acl(std::move(policy).value());

  agent.handle("echo", [](const agent_mesh::IncomingCall& call) -> agent_mesh::Result<boost::json::value> {
    announce(call);
    return boost::json::value{{"echo", call.body}, {"from", call.from.str()}, {"encrypted", call.encrypted}};
  });
  agent.handle("fail", [](const agent_mesh::IncomingCall& call) -> agent_mesh::Result<boost::json::value> {
    announce(call);
    return agent_mesh::fail(Errc::agent_error, "sdk_peer fails on purpose");
  });
  agent.handle("wait", [](const agent_mesh::IncomingCall& call) -> agent_mesh::Result<boost::json::value> {
    announce(call);
    hold_until_cancelled(call);
    return boost::json::value("late");
  });
  agent.handle_stream("count", [](const agent_mesh::IncomingCall& call,
                                  const agent_mesh::ChunkWriter& write) -> agent_mesh::Status {
    announce(call);
    std::int64_t n = 0;
    bool hold = false;
    if (const auto* body = call.body.if_object()) {
      if (const auto* value = body->if_contains("n"); value != nullptr && value->is_int64()) n = value->as_int64();
      if (const auto* value = body->if_contains("hold"); value != nullptr && value->is_bool()) hold = value->as_bool();
    }
    for (std::int64_t i = 0; i < n; ++i) {
      if (auto sent = write(boost::json::value{{"i", i}}); !sent) return sent;
    }
    if (hold) hold_until_cancelled(call);
    return {};
  });

  if (auto connected = agent.wait_connected(10s); !connected) {
    std::fprintf(stderr, "sdk_peer: %s\n", connected.error().describe().c_str());
    return 1;
  }
  emit({{"event", "ready"}, {"agent_id", self.str()}});
  wait_for_eof();
  agent.close(1s);
  emit({{"event", "closed"}});
  return 0;
}

int call(const Args& args, agent_mesh::KeyPair key) {
  const AgentId self = key.agent_id();
  agent_mesh::MeshClient client(std::move(key), options(args));
  if (auto connected = client.wait_connected(10s); !connected) {
    std::fprintf(stderr, "sdk_peer: %s\n", connected.error().describe().c_str());
    return 1;
  }
  emit({{"event", "ready"}, {"agent_id", self.str()}});

  std::map<std::string, agent_mesh::CancelToken> cancels;
  std::vector<std::thread> readers;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    boost::system::error_code ec;
    auto parsed = boost::json::parse(line, ec);
    if (ec || !parsed.is_object()) {
      emit({{"event", "bad_command"}, {"line", line}});
      continue;
    }
    const auto& command = parsed.as_object();
    auto text = [&](const char* name) -> std::string {
      const auto* value = command.if_contains(name);
      return value != nullptr && value->is_string() ? std::string(value->as_string()) : std::string();
    };
    const std::string op = text("op");
    const std::string tag = text("tag");
    if (op == "cancel") {
      if (auto it = cancels.find(tag); it != cancels.end()) it->second.cancel();
      continue;
    }
    auto target = AgentId::parse(text("target"));
    if (!target || (op != "request" && op != "stream")) {
      emit({{"event", "bad_command"}, {"line", line}});
      continue;
    }
    agent_mesh::RequestOptions request_options;
    if (const auto* timeout = command.if_contains("timeout_ms"); timeout != nullptr && timeout->is_int64()) {
      request_options.timeout = std::chrono::milliseconds(timeout->as_int64());
    }
    agent_mesh::CancelToken token;
    cancels[tag] = token;
    request_options.cancel = token;
    const boost::json::value body = command.contains("body") ? command.at("body") : boost::json::value(nullptr);
    if (op == "request") {
      client.request(*target, text("capability"), body, request_options).then([tag](agent_mesh::Result<agent_mesh::Response> reply) {
        if (reply) {
          emit({{"event", "response"}, {"tag", tag}, {"body", reply->body}, {"encrypted", reply->encrypted}});
        } else {
          emit(error_event(tag, reply.error()));
        }
      });
    } else {
      auto stream = std::make_shared<agent_mesh::StreamCall>(client.stream(*target, text("capability"), body, request_options));
      readers.emplace_back([stream, tag] {
        for (;;) {
          auto chunk = stream->next();
          if (!chunk) {
            emit(error_event(tag, chunk.error()));
            return;
          }
          if (!chunk->has_value()) {
            emit({{"event", "end"}, {"tag", tag}});
            return;
          }
          emit({{"event", "chunk"}, {"tag", tag}, {"body", **chunk}});
        }
      });
    }
  }
  client.close(0ms);
  for (auto& reader : readers) reader.join();
  emit({{"event", "closed"}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse_args(argc, argv);
  auto key = agent_mesh::KeyPair::load(args.key_file);
  if (!key) usage("--key-file: " + key.error().describe());
  return args.mode == "serve" ? serve(args, std::move(key).value()) : call(args, std::move(key).value());
}
