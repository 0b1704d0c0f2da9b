#include "agent_mesh/encoding.hpp"

#include <gtest/gtest.h>

#include <set>

#include "test_vectors.hpp"

namespace agent_mesh {
namespace {

using test::hex;
using test::load_vectors;
using test::str;

TEST(Base64Url, PublishedValidVectorsRoundTrip) {
  const auto vectors = load_vectors("agent-mesh/base64url.json");
  const auto& valid = vectors.at("valid").as_array();
  ASSERT_EQ(valid.size(), 14u);
  for (const auto& v : valid) {
    SCOPED_TRACE(str(v.at("text")));
    const Bytes bytes = hex(v.at("bytes_hex").as_string());
    EXPECT_EQ(base64url_encode(bytes), str(v.at("text")));
    auto decoded = base64url_decode(v.at("text").as_string());
    ASSERT_TRUE(decoded.ok()) << decoded.error().describe();
    EXPECT_EQ(*decoded, bytes);
  }
}

TEST(Base64Url, PublishedInvalidVectorsAreRejected) {
  const auto vectors = load_vectors("agent-mesh/base64url.json");
  const auto& invalid = vectors.at("invalid").as_array();
  ASSERT_EQ(invalid.size(), 25u);
  for (const auto& v : invalid) {
    SCOPED_TRACE(str(v.at("reason")) + ": " + str(v.at("text")));
    auto decoded = base64url_decode(v.at("text").as_string());
    ASSERT_FALSE(decoded.ok());
    EXPECT_EQ(decoded.error().code, Errc::bad_request);
  }
}

TEST(Base64Url, EachRejectionNamesItsProblem) {
  EXPECT_NE(base64url_decode("AA==").error().message.find("padded"), std::string::npos);
  EXPECT_NE(base64url_decode("AAA ").error().message.find("0x20"), std::string::npos);
  EXPECT_NE(base64url_decode("AB+/").error().message.find("'+'"), std::string::npos);
  EXPECT_NE(base64url_decode("AAAAA").error().message.find("mod 4"), std::string::npos);
  EXPECT_NE(base64url_decode("AB").error().message.find("trailing bits"), std::string::npos);
  EXPECT_NE(base64url_decode("AA\xc3\xa9").error().message.find("0xc3"), std::string::npos);
}

TEST(Base64Url, EveryLengthRoundTripsAndHasOneTextForm) {
  Bytes bytes;
  for (int n = 0; n < 70; ++n) {
    const std::string text = base64url_encode(bytes);
    EXPECT_EQ(text.size(), base64url_encoded_size(bytes.size()));
    auto decoded = base64url_decode(text);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, bytes);
    bytes.push_back(static_cast<std::uint8_t>(n * 37 + 11));
  }
  // Every 2-character text: exactly 4 of the 64 last characters decode for each first one.
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::set<Bytes> seen;
  int accepted = 0;
  for (char a : alphabet) {
    for (char b : alphabet) {
      auto decoded = base64url_decode(std::string{a, b});
      if (decoded.ok()) {
        ++accepted;
        EXPECT_TRUE(seen.insert(*decoded).second) << "two texts decode to the same byte";
      }
    }
  }
  EXPECT_EQ(accepted, 256);
}

TEST(Base64Url, DecodeExactChecksLength) {
  std::array<std::uint8_t, 16> out{};
  EXPECT_TRUE(base64url_decode_exact("ABEiM0RVZneImaq7zN3u_w", out).ok());
  auto wrong = base64url_decode_exact("AAAAAAAAAAAAAAAAAAAA", out);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.error().message.find("16 bytes"), std::string::npos);
  EXPECT_FALSE(base64url_decode_exact("ABEiM0RVZneImaq7zN3u_x", out).ok());
}

TEST(Hex, RoundTripAndRejections) {
  const Bytes bytes{0x00, 0x7f, 0x80, 0xff};
  EXPECT_EQ(hex_encode(bytes), "007f80ff");
  EXPECT_EQ(*hex_decode("007F80ff"), bytes);
  EXPECT_NE(hex_decode("abc").error().message.find("odd"), std::string::npos);
  EXPECT_NE(hex_decode("zz").error().message.find("'z'"), std::string::npos);
}

TEST(Uuid, PublishedVectors) {
  const auto vectors = load_vectors("agent-mesh/envelope.json");
  for (const auto& v : vectors.at("uuids").at("valid").as_array()) {
    SCOPED_TRACE(str(v));
    auto uuid = Uuid::parse(v.as_string());
    ASSERT_TRUE(uuid.ok()) << uuid.error().describe();
    EXPECT_EQ(uuid->to_string(), str(v));
  }
  for (const auto& v : vectors.at("uuids").at("invalid").as_array()) {
    SCOPED_TRACE(str(v));
    auto uuid = Uuid::parse(v.as_string());
    ASSERT_FALSE(uuid.ok());
    EXPECT_EQ(uuid.error().code, Errc::bad_request);
  }
}

TEST(Uuid, EachRejectionNamesItsProblem) {
  EXPECT_NE(Uuid::parse("").error().message.find("36 characters"), std::string::npos);
  EXPECT_NE(Uuid::parse("3F0C1A52-9D7E-4B8A-8C1E-2A5B6C7D8E9F").error().message.find("lower-case"), std::string::npos);
  EXPECT_NE(Uuid::parse("3f0c1a52-9d7e-1b8a-8c1e-2a5b6c7d8e9f").error().message.find("version 4"), std::string::npos);
  EXPECT_NE(Uuid::parse("3f0c1a52-9d7e-4b8a-cc1e-2a5b6c7d8e9f").error().message.find("variant"), std::string::npos);
  EXPECT_NE(Uuid::parse("3f0c1a52x9d7e-4b8a-8c1e-2a5b6c7d8e9f").error().message.find("'-'"), std::string::npos);
}

TEST(Uuid, GeneratedAreValidAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string text = Uuid::generate().to_string();
    EXPECT_TRUE(Uuid::is_valid(text)) << text;
    EXPECT_TRUE(seen.insert(text).second);
  }
}

}  // namespace
}  // namespace agent_mesh
