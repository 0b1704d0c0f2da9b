// Strict reading of the members of a JSON object that the protocol defines (§1): unknown members,
// nulls, wrong types and integers written with a fraction or exponent are rejected, each with a
// message naming the object and the member. Shared by every parser of protocol objects.
#pragma once

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "agent_mesh/result.hpp"

namespace agent_mesh::detail {

// Hostile text in error messages is clipped, so a 1 MiB member name can't become a 1 MiB log line.
std::string clip(std::string_view text, std::size_t max = 64);

class FieldReader {
 public:
  FieldReader(const boost::json::object& object, std::string_view context) : object_(object), context_(context) {}

  // Every member name must be in `known`.
  [[nodiscard]] Status reject_unknown(std::initializer_list<std::string_view> known) const;

  // The member must be present and of the type; the output is set only on success.
  [[nodiscard]] Status required_string(std::string_view name, std::string_view& out) const;
  [[nodiscard]] Status required_integer(std::string_view name, std::int64_t& out) const;
  [[nodiscard]] Status required_any(std::string_view name, boost::json::value& out) const;
  // Absent → `present` false; present → must be of the type (never null).
  [[nodiscard]] Status optional_integer(std::string_view name, std::int64_t& out, bool& present) const;
  [[nodiscard]] Status optional_bool(std::string_view name, bool& out, bool& present) const;
  [[nodiscard]] Status optional_string(std::string_view name, std::string_view& out, bool& present) const;
  // Containers: `out` points into the object read (valid while it lives); nullptr when absent.
  [[nodiscard]] Status required_bool(std::string_view name, bool& out) const;
  [[nodiscard]] Status required_array(std::string_view name, const boost::json::array*& out) const;
  [[nodiscard]] Status optional_array(std::string_view name, const boost::json::array*& out) const;
  [[nodiscard]] Status optional_object(std::string_view name, const boost::json::object*& out) const;
  // A free-form optional member (schemas): any JSON value but null, since optional members are
  // omitted, never null (§1). nullptr when absent.
  [[nodiscard]] Status optional_non_null(std::string_view name, const boost::json::value*& out) const;

 private:
  [[nodiscard]] Error problem(std::string_view name, std::string_view what) const;
  [[nodiscard]] Result<const boost::json::value*> find_required(std::string_view name) const;

  const boost::json::object& object_;
  std::string_view context_;
};

}  // namespace agent_mesh::detail
