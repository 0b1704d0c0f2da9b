// Loading the published test vectors copied into tests/vectors/ (see tests/vectors/SOURCES.md).
#pragma once

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "agent_mesh/bytes.hpp"
#include "agent_mesh/encoding.hpp"

namespace agent_mesh::test {

inline std::string read_vector_file(const std::string& relative_path) {
  const std::string path = std::string(AGENT_MESH_VECTORS_DIR) + "/" + relative_path;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open test vector file " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Vector files are trusted test data: plain Boost.JSON parsing is enough here.
inline boost::json::value load_vectors(const std::string& relative_path) {
  return boost::json::parse(read_vector_file(relative_path));
}

inline Bytes hex(std::string_view text) {
  auto bytes = hex_decode(text);
  if (!bytes.ok()) throw std::runtime_error("bad hex in test vector: " + std::string(text));
  return std::move(bytes).value();
}

inline std::string str(const boost::json::value& v) { return std::string(v.as_string()); }

// A fixed-size key, nonce or signature from a vector's bytes; a wrong length is a broken vector.
template <std::size_t N>
std::array<std::uint8_t, N> fixed(const Bytes& bytes) {
  if (bytes.size() != N) throw std::runtime_error("test vector value has the wrong length");
  std::array<std::uint8_t, N> out{};
  std::copy(bytes.begin(), bytes.end(), out.begin());
  return out;
}

}  // namespace agent_mesh::test
