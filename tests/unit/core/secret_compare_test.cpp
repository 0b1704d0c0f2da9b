// secrets_equal: equal secrets match, anything else does not, and an unset secret matches nothing.
#include <gtest/gtest.h>

#include "agent_mesh/secret_compare.hpp"

namespace agent_mesh {
namespace {

TEST(SecretsEqual, MatchesOnlyTheSameSecret) {
  EXPECT_TRUE(secrets_equal("s3cret-token", "s3cret-token"));
  EXPECT_FALSE(secrets_equal("s3cret-token", "s3cret-tokeN"));
  EXPECT_FALSE(secrets_equal("s3cret-token", "s3cret-token "));
  EXPECT_FALSE(secrets_equal("s3cret-token", "s3cret"));
  EXPECT_FALSE(secrets_equal("s3cret-token", ""));
  EXPECT_TRUE(secrets_equal(std::string_view("a\0b", 3), std::string_view("a\0b", 3)));
  EXPECT_FALSE(secrets_equal(std::string_view("a\0b", 3), std::string_view("a\0c", 3)));
}

TEST(SecretsEqual, AnUnsetSecretMatchesNothing) {
  EXPECT_FALSE(secrets_equal("", ""));
  EXPECT_FALSE(secrets_equal("", "anything"));
}

}  // namespace
}  // namespace agent_mesh
