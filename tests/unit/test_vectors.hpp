// Loading the published test vectors copied into tests/vectors/ (see tests/vectors/SOURCES.md).
#pragma once

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

}  // namespace agent_mesh::test
