// request: one mesh request (MeshCaller: through agent-meshd when its socket answers, else directly
// through the relay), its answer printed as JSON; Ctrl-C cancels it at the peer.

#include <boost/json.hpp>
#include <chrono>
#include <optional>
#include <thread>

#include "agent_mesh/json.hpp"
#include "ctl/commands.hpp"
#include "ctl/mesh_caller.hpp"

namespace agent_mesh::ctl {

namespace {

namespace json = boost::json;

struct RequestOptions {
  std::string target;
  std::string capability;
  std::string payload;
  bool stream = false;
  double timeout_s = 30;
};

void print_body(Context& context, const json::value& body) { context.out() << json::serialize(body) << "\n" << std::flush; }

void request(Context& context, const RequestOptions& options) {
  auto target = AgentId::parse(options.target);
  if (!target) {
    fail_command("--target: `" + options.target + "` is not an agent ID", "`agent-meshctl discover` lists agent IDs", kExitUsage);
  }
  auto payload = agent_mesh::json::parse_ijson(options.payload);
  if (!payload) {
    fail_command("--payload is not valid JSON: " + payload.error().message,
                 "quote it for the shell, e.g. --payload '{\"message\": \"hello\"}'");
  }
  if (!(options.timeout_s > 0) || options.timeout_s > 3600) {
    fail_command("--timeout must be between 0 and 3600 seconds", "e.g. --timeout 30", kExitUsage);
  }
  const auto me = context.agent_id();
  if (me && *me == *target) {
    fail_command("--target is this agent itself", "a request goes to another agent (`agent-meshctl discover`)", kExitUsage);
  }
  const std::string me_text = me ? me->str() : std::string("<your-agent-id>");

  // Before any thread starts, so Ctrl-C reaches this thread (and cancels) instead of killing.
  Interrupts interrupts;
  MeshCaller caller(context);
  if (!caller.meshd_socket_answers()) {
    if (const auto socket = context.meshd_socket(); socket && std::filesystem::exists(*socket)) {
      context.err() << "note: agent-meshd does not answer on " << socket->string() << "; sending directly\n";
    }
  }
  MeshCall call;
  call.target = *target;
  call.capability = options.capability;
  call.payload = std::move(payload).value();
  call.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(options.timeout_s * 1000));
  call.stream = options.stream;
  call.on_chunk = [&context](const json::value& chunk) { print_body(context, chunk); };
  call.cancel = CancelToken();

  std::optional<Result<json::value>> result;
  {
    std::optional<Spinner> spinner;
    if (!options.stream) spinner.emplace(context, "Waiting for " + options.target.substr(0, 8) + "… to answer " + options.capability);
    std::thread worker([&] {
      result = caller.call(call);
      interrupts.wake();
    });
    while (true) {
      const auto waited = interrupts.wait(std::chrono::hours(1));
      if (waited == Interrupts::Wait::interrupted) call.cancel->cancel();
      if (waited == Interrupts::Wait::woken) break;
    }
    worker.join();
  }
  if (interrupts.interrupted()) fail_command("request cancelled", "", kExitInterrupted);
  if (!*result) {
    fail_command(result->error().describe(),
                 mesh_error_hint(result->error().code, me_text, options.target, options.capability, call.timeout));
  }
  if (!options.stream) print_body(context, **result);
}

}  // namespace

void add_request_command(CLI::App& app, Context& context, Actions& actions) {
  auto options = std::make_shared<RequestOptions>();
  auto* command = add_command(app, "request",
                              "Call an agent's capability and print its answer (through agent-meshd when it runs, else directly)",
                              "agent-meshctl request --target <agent-id> --capability echo --payload '{\"message\": \"hello\"}'");
  command->add_option("--target", options->target, "The agent to call")->required();
  command->add_option("--capability", options->capability, "The capability to call")->required();
  command->add_option("--payload", options->payload, "The request body (JSON)")->required();
  command->add_flag("--stream", options->stream, "A streamed answer: print each chunk as it arrives (one JSON per line)");
  command->add_option("--timeout", options->timeout_s, "Seconds to wait for the answer (default 30)");
  actions.add(command, [&context, options] { request(context, *options); });
}

}  // namespace agent_mesh::ctl
