// Fuzzes what agent-meshctl parses (cli-mcp-web.md "meshctl"): config.toml, a --capabilities-file,
// meshd's Local API answers (the NDJSON stream lines and the error object) and the MCP adapter's
// JSON-RPC messages. The first input byte picks the parser. Invariants:
//  - nothing crashes or reads out of bounds, whatever the input;
//  - a config that parses writes a TOML text that parses back to the same values;
//  - the stream reader gives the same events whether the body comes in one piece or split at an
//    input-chosen point, and every error line carries a code;
//  - every JSON-RPC request gets exactly one response with the request's id (or null), and a
//    notification none.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <boost/json/serialize.hpp>

#include "ctl/capabilities_file.hpp"
#include "ctl/config.hpp"
#include "ctl/local_api_answers.hpp"
#include "ctl/mcp_protocol.hpp"

namespace {

using namespace agent_mesh;
using ctl::StreamLineReader;

std::string events_text(StreamLineReader& reader, std::string_view body, std::size_t split, bool& failed) {
  std::string out;
  for (const std::string_view part : {body.substr(0, split), body.substr(split)}) {
    auto events = reader.feed(part);
    if (!events) {
      failed = true;
      return out;
    }
    for (const auto& event : *events) {
      out += std::to_string(static_cast<int>(event.kind)) + ":";
      if (event.kind == StreamLineReader::Event::Kind::chunk) out += boost::json::serialize(event.body);
      if (event.kind == StreamLineReader::Event::Kind::error) out += std::string(to_string(event.error.code));
      out += "\n";
    }
  }
  return out;
}

// Tools that answer at once: the session's own parsing is what is fuzzed.
class EchoBackend final : public ctl::mcp::Backend {
 public:
  boost::json::array tools() override { return boost::json::array{}; }
  Result<boost::json::object> call_tool(const ctl::mcp::ToolCall& call) override {
    if (call.name.empty()) return fail(Errc::bad_request, "no name");
    call.progress("x");
    return boost::json::object{{"content", boost::json::array{}}, {"structuredContent", call.arguments}};
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data) + 2, size - 2);
  switch (data[0] % 4) {
    case 3: {
      EchoBackend backend;
      ctl::mcp::Session session(backend);
      auto handled = session.handle(input, [](const boost::json::object&) {});
      if (handled.response) {
        const auto& response = *handled.response;
        if (!response.contains("id") || (response.contains("result") == response.contains("error"))) std::abort();
      }
      break;
    }
    case 0: {
      auto file = ctl::ConfigFile::parse(input, "fuzz.toml");
      if (!file) break;
      auto again = ctl::ConfigFile::parse(file->to_toml(), "fuzz.toml");
      if (!again) std::abort();
      for (const auto key : ctl::config_keys()) {
        if (file->get(key) != again->get(key)) std::abort();
      }
      break;
    }
    case 1: {
      auto capabilities = ctl::parse_capabilities_file(input);
      if (capabilities) {
        for (const auto& capability : *capabilities) {
          if (capability.name.empty()) std::abort();
        }
      }
      (void)ctl::local_api_error(502, input);
      break;
    }
    default: {
      const std::size_t split = input.empty() ? 0 : data[1] % (input.size() + 1);
      bool failed_whole = false;
      bool failed_split = false;
      StreamLineReader whole;
      StreamLineReader parts;
      const std::string one = events_text(whole, input, input.size(), failed_whole);
      const std::string two = events_text(parts, input, split, failed_split);
      // The same lines are complete in both runs unless one failed part-way.
      if (!failed_whole && !failed_split && one != two) std::abort();
      break;
    }
  }
  return 0;
}
