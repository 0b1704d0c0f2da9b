// Fuzzes what meshd reads from a local agent (meshd-sdk.md "Incoming request"): the SSE and NDJSON
// stream parser and the unary answer interpretation, on the same input. Invariants:
//  - feeding the body in one piece or split at an input-chosen point gives the same chunks and the
//    same verdict (the parser is a byte-wise state machine, so TCP segmentation cannot matter);
//  - every chunk is a JSON value that serialises within the stream line bound;
//  - a unary answer is a value only for a 2xx status, and an error always carries a §4 code.
#include <cstdint>
#include <string>
#include <string_view>

#include <boost/json/serialize.hpp>

#include "meshd/forwarding.hpp"

namespace {

using namespace agent_mesh;
using meshd::StreamBodyParser;

std::string run(StreamBodyParser::Kind kind, std::string_view body, std::size_t split, bool& failed) {
  StreamBodyParser parser(kind);
  std::string out;
  auto take = [&](Result<std::vector<boost::json::value>> chunks) {
    if (!chunks) {
      failed = true;
      return;
    }
    for (const auto& chunk : *chunks) out += boost::json::serialize(chunk) + "\n";
  };
  take(parser.feed(body.substr(0, split)));
  if (!parser.error()) take(parser.feed(body.substr(split)));
  if (!parser.error()) take(parser.finish());
  failed = failed || parser.error().has_value();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const auto kind = (data[0] & 1) != 0 ? StreamBodyParser::Kind::sse : StreamBodyParser::Kind::ndjson;
  const std::string_view body(reinterpret_cast<const char*>(data + 2), size - 2);
  const std::size_t split = body.empty() ? 0 : data[1] % (body.size() + 1);

  bool whole_failed = false;
  bool split_failed = false;
  const std::string whole = run(kind, body, body.size(), whole_failed);
  const std::string pieces = run(kind, body, split, split_failed);
  if (whole_failed != split_failed) __builtin_trap();
  if (!whole_failed && whole != pieces) __builtin_trap();

  const int status = 100 + data[1] % 500;
  auto answer = meshd::interpret_unary_answer(status, "application/json", body);
  if (answer && (status < 200 || status > 299)) __builtin_trap();
  return 0;
}
