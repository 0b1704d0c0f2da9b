#include "agent_mesh/error.hpp"

#include <gtest/gtest.h>

#include "agent_mesh/result.hpp"
#include "test_vectors.hpp"

namespace agent_mesh {
namespace {

TEST(Errc, EveryCodeRoundTripsThroughItsWireString) {
  for (int i = 0; i < kErrcCount; ++i) {
    const auto code = static_cast<Errc>(i);
    const auto text = to_string(code);
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(errc_from_string(text), code) << text;
    EXPECT_GE(http_status(code), 400) << text;
  }
  EXPECT_FALSE(errc_from_string("no_such_code").has_value());
}

TEST(Errc, ProtocolSection4CodesAreAllPresent) {
  for (const char* name : {"acl_denied", "unknown_capability", "timeout", "unreachable", "rate_limited", "revoked",
                           "agent_error", "bad_request", "too_large", "cancelled", "no_session", "expired",
                           "internal", "unauthorized", "forbidden", "not_found", "conflict"}) {
    EXPECT_TRUE(errc_from_string(name).has_value()) << name;
  }
}

TEST(Errc, RelayCloseCodesMatchThePublishedTable) {
  const auto vectors = test::load_vectors("agent-mesh/relay-frames.json");
  for (const auto& row : vectors.at("close_codes").as_array()) {
    const auto* code = row.as_object().if_contains("error_code");
    if (code == nullptr) continue;
    SCOPED_TRACE(test::str(*code));
    const auto errc = errc_from_string(code->as_string());
    ASSERT_TRUE(errc.has_value());
    EXPECT_EQ(close_code_for(*errc), row.at("close").as_int64());
  }
  for (const auto& code : vectors.at("undeliverable_codes").as_array()) {
    const auto errc = errc_from_string(code.as_string());
    ASSERT_TRUE(errc.has_value()) << code;
    EXPECT_TRUE(is_undeliverable_code(*errc));
  }
  EXPECT_FALSE(is_undeliverable_code(Errc::acl_denied));
}

TEST(Error, HttpJsonShape) {
  const Error error{Errc::not_found, "no agent \"x\""};
  EXPECT_EQ(error.to_http_json(), R"({"error":{"code":"not_found","message":"no agent \"x\""}})");
  EXPECT_EQ(error.describe(), "not_found: no agent \"x\"");
  EXPECT_EQ(http_status(Errc::not_found), 404);
  EXPECT_EQ(http_status(Errc::rate_limited), 429);
  EXPECT_EQ(http_status(Errc::too_large), 413);
}

Result<int> half(int x) {
  if (x % 2 != 0) return fail(Errc::bad_request, "odd");
  return x / 2;
}

Status chain(int x) {
  AGENT_MESH_TRY(half(x));
  return {};
}

TEST(Result, ValueErrorAndPropagation) {
  EXPECT_EQ(*half(4), 2);
  EXPECT_FALSE(half(3).ok());
  EXPECT_EQ(half(3).error().code, Errc::bad_request);
  EXPECT_TRUE(chain(2).ok());
  EXPECT_EQ(chain(1).error().message, "odd");
  EXPECT_DEATH({ (void)half(3).value(); }, "Result misuse");
}

}  // namespace
}  // namespace agent_mesh
