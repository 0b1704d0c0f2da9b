// What agent-meshd's Local API answers to POST /request (meshd-sdk.md "Local API"), parsed without
// I/O: the error object, and the NDJSON lines of a stream. Fuzzed by fuzz/fuzz_ctl_inputs.cpp.
#pragma once

#include <boost/json/value.hpp>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "agent_mesh/result.hpp"

namespace agent_mesh::ctl {

// A stream line is one envelope's worth of JSON at most; a longer one is not from meshd.
inline constexpr std::size_t kMaxStreamLineBytes = 2 * 1024 * 1024;

// {"error": {"code", "message"}} as an Error (an unknown code → internal); a body without that
// shape → internal naming the HTTP status.
[[nodiscard]] Error local_api_error(int status, std::string_view body);

// Splits the NDJSON body of a streamed request into its events, whatever the byte boundaries.
class StreamLineReader {
 public:
  struct Event {
    enum class Kind : std::uint8_t { chunk, end, error };
    Kind kind = Kind::chunk;
    boost::json::value body;  // Kind::chunk
    Error error;              // Kind::error
  };

  // The events the bytes complete, in order. Errors (Errc::internal): a line that is not a JSON
  // object of one of the three shapes, a line longer than kMaxStreamLineBytes, anything after the
  // end or error line. After an error the reader stays failed.
  [[nodiscard]] Result<std::vector<Event>> feed(std::string_view bytes);
  // True once {"end": n} or {"error": ...} has been read.
  [[nodiscard]] bool finished() const noexcept { return finished_; }

 private:
  std::string pending_;
  bool finished_ = false;
  bool failed_ = false;
};

}  // namespace agent_mesh::ctl
