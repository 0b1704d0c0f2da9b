#include "ctl/local_api_answers.hpp"

#include <boost/json/object.hpp>

#include "agent_mesh/json.hpp"

namespace agent_mesh::ctl {

Error local_api_error(int status, std::string_view body) {
  if (auto parsed = json::parse_ijson(body); parsed && parsed->is_object()) {
    if (const auto* error = parsed->as_object().if_contains("error"); error != nullptr && error->is_object()) {
      const auto* code = error->as_object().if_contains("code");
      const auto* message = error->as_object().if_contains("message");
      Error out;
      out.code = code != nullptr && code->is_string() ? errc_from_string(code->as_string()).value_or(Errc::internal)
                                                      : Errc::internal;
      out.message = message != nullptr && message->is_string() ? std::string(message->as_string()) : std::string();
      return out;
    }
  }
  return Error{Errc::internal, "meshd answered HTTP " + std::to_string(status) + " without an error object"};
}

Result<std::vector<StreamLineReader::Event>> StreamLineReader::feed(std::string_view bytes) {
  if (failed_) return fail(Errc::internal, "the stream from meshd already failed");
  std::vector<Event> events;
  const auto broken = [this](std::string message) -> Error {
    failed_ = true;
    return Error{Errc::internal, "meshd's stream: " + std::move(message)};
  };
  while (!bytes.empty()) {
    const auto newline = bytes.find('\n');
    const std::string_view piece = bytes.substr(0, newline);
    if (pending_.size() + piece.size() > kMaxStreamLineBytes) return broken("a line is longer than 2 MiB");
    pending_.append(piece);
    if (newline == std::string_view::npos) break;
    bytes.remove_prefix(newline + 1);
    std::string line = std::move(pending_);
    pending_.clear();
    if (line.empty()) continue;
    if (finished_) return broken("a line after the end of the stream");
    auto parsed = json::parse_ijson(line, {.max_bytes = kMaxStreamLineBytes, .max_depth = 128});
    if (!parsed || !parsed->is_object()) return broken("a line that is not a JSON object");
    const auto& object = parsed->as_object();
    Event event;
    if (const auto* body = object.if_contains("body"); body != nullptr && object.contains("seq")) {
      event.kind = Event::Kind::chunk;
      event.body = *body;
    } else if (const auto* end = object.if_contains("end"); end != nullptr && end->is_int64()) {
      event.kind = Event::Kind::end;
      finished_ = true;
    } else if (object.contains("error")) {
      event.kind = Event::Kind::error;
      event.error = local_api_error(200, line);
      finished_ = true;
    } else {
      return broken("a line that is neither {\"seq\", \"body\"}, {\"end\"} nor {\"error\"}");
    }
    events.push_back(std::move(event));
  }
  return events;
}

}  // namespace agent_mesh::ctl
