// The MCP session without a transport: version negotiation, JSON-RPC errors, tools/list and
// tools/call through a Backend, progress and cancellation.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <condition_variable>
#include <thread>

#include "ctl/mcp_protocol.hpp"

namespace agent_mesh::ctl::mcp {
namespace {

namespace json = boost::json;

// A backend with one tool, `wait`, that reports progress once and blocks until cancelled.
class WaitingBackend final : public Backend {
 public:
  json::array tools() override { return json::array{json::object{{"name", "wait"}, {"inputSchema", json::object{{"type", "object"}}}}}; }
  Result<json::object> call_tool(const ToolCall& call) override {
    if (call.name != "wait") return fail(Errc::bad_request, "unknown tool " + call.name);
    call.progress("started");
    std::mutex mutex;
    std::condition_variable cancelled;
    bool done = false;
    call.cancel.on_cancel([&] {
      const std::lock_guard lock(mutex);
      done = true;
      cancelled.notify_all();
    });
    {
      const std::lock_guard lock(mutex);
      started = true;
    }
    std::unique_lock lock(mutex);
    cancelled.wait_for(lock, std::chrono::seconds(10), [&] { return done; });
    return json::object{{"content", json::array{}}, {"structuredContent", json::object{{"cancelled", done}}}};
  }
  std::atomic<bool> started{false};
};

json::object handle(Session& session, const std::string& text, std::vector<json::object>* sent = nullptr) {
  auto handled = session.handle(text, [sent](const json::object& message) {
    if (sent != nullptr) sent->push_back(message);
  });
  return handled.response ? *handled.response : json::object{};
}

int error_code(const json::object& response) { return static_cast<int>(response.at("error").at("code").as_int64()); }

TEST(McpSession, AnswersTheAskedRevisionOrTheNewest) {
  WaitingBackend backend;
  Session session(backend);
  for (const std::string version : {"2025-11-25", "2025-06-18", "2025-03-26"}) {
    const auto response = handle(session, R"({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":")" + version + R"("}})");
    EXPECT_EQ(response.at("result").at("protocolVersion").as_string(), version);
  }
  const auto old = handle(session, R"({"jsonrpc":"2.0","id":"a","method":"initialize","params":{"protocolVersion":"2024-11-05"}})");
  EXPECT_EQ(old.at("result").at("protocolVersion").as_string(), "2025-11-25");
  EXPECT_TRUE(old.at("result").at("capabilities").at("tools").at("listChanged").as_bool());
  EXPECT_EQ(old.at("id").as_string(), "a");
  EXPECT_EQ(session.protocol_version(), "2025-11-25");
}

TEST(McpSession, MalformedInputGetsTheJsonRpcCodes) {
  WaitingBackend backend;
  Session session(backend);
  EXPECT_EQ(error_code(handle(session, "{not json")), kParseError);
  EXPECT_TRUE(handle(session, "{not json").at("id").is_null());
  EXPECT_EQ(error_code(handle(session, R"([{"jsonrpc":"2.0","id":1,"method":"ping"}])")), kInvalidRequest);
  EXPECT_EQ(error_code(handle(session, R"({"id":1,"method":"ping"})")), kInvalidRequest);
  EXPECT_EQ(error_code(handle(session, R"({"jsonrpc":"2.0","id":1})")), kInvalidRequest);
  EXPECT_EQ(error_code(handle(session, R"({"jsonrpc":"2.0","id":{"x":1},"method":"ping"})")), kInvalidRequest);
  EXPECT_EQ(error_code(handle(session, R"({"jsonrpc":"2.0","id":1,"method":"nope"})")), kMethodNotFound);
  EXPECT_EQ(error_code(handle(session, R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1]})")), kInvalidParams);
  EXPECT_EQ(error_code(handle(session, R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}})")), kInvalidParams);
  EXPECT_EQ(error_code(handle(session, R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"other"}})")), kInvalidParams);
  // Notifications and client responses are never answered.
  EXPECT_TRUE(handle(session, R"({"jsonrpc":"2.0","method":"notifications/initialized"})").empty());
  EXPECT_TRUE(handle(session, R"({"jsonrpc":"2.0","method":"made/up"})").empty());
  EXPECT_TRUE(handle(session, R"({"jsonrpc":"2.0","id":7,"result":{}})").empty());
  EXPECT_TRUE(handle(session, R"({"jsonrpc":"2.0","id":1,"method":"ping"})").at("result").as_object().empty());
}

TEST(McpSession, ListsTheBackendsTools) {
  WaitingBackend backend;
  Session session(backend);
  const auto response = handle(session, R"({"jsonrpc":"2.0","id":2,"method":"tools/list"})");
  ASSERT_EQ(response.at("result").at("tools").as_array().size(), 1u);
  EXPECT_EQ(response.at("result").at("tools").as_array()[0].at("name").as_string(), "wait");
}

TEST(McpSession, ProgressGoesToTheRequestAndCancelledCallsGetNoResponse) {
  WaitingBackend backend;
  Session session(backend);
  std::vector<json::object> sent;
  std::optional<Session::Handled> handled;
  std::thread call([&] {
    handled = session.handle(
        std::string_view(R"({"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"wait","_meta":{"progressToken":"p"}}})"),
        [&sent](const json::object& message) { sent.push_back(message); });
  });
  while (!backend.started) std::this_thread::yield();
  (void)handle(session, R"({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"c1"}})");
  call.join();
  ASSERT_TRUE(handled);
  EXPECT_FALSE(handled->response) << "MCP: no response to a cancelled request";
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].at("method").as_string(), "notifications/progress");
  EXPECT_EQ(sent[0].at("params").at("progressToken").as_string(), "p");
  EXPECT_EQ(sent[0].at("params").at("progress").as_int64(), 1);
}

TEST(McpSession, CancelAllEndsEveryCall) {
  WaitingBackend backend;
  Session session(backend);
  std::optional<Session::Handled> handled;
  std::thread call([&] {
    handled = session.handle(std::string_view(R"({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"wait"}})"),
                             [](const json::object&) {});
  });
  while (!backend.started) std::this_thread::yield();
  session.cancel_all();
  call.join();
  ASSERT_TRUE(handled && handled->response);
  EXPECT_TRUE(handled->response->at("result").at("structuredContent").at("cancelled").as_bool());
}

}  // namespace
}  // namespace agent_mesh::ctl::mcp
