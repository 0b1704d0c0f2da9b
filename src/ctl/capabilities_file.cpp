#include "ctl/capabilities_file.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <string>

#include "agent_mesh/json.hpp"

namespace agent_mesh::ctl {

Result<std::vector<CardCapability>> parse_capabilities_file(std::string_view text) {
  auto parsed = json::parse_ijson(text, {.max_bytes = kMaxCapabilitiesFileBytes, .max_depth = 64});
  if (!parsed) return std::move(parsed).error();
  if (!parsed->is_array()) return fail(Errc::bad_request, "not a JSON array");
  std::vector<CardCapability> capabilities;
  std::size_t index = 0;
  for (const auto& item : parsed->as_array()) {
    const std::string where = "[" + std::to_string(index++) + "]";
    if (!item.is_object()) return fail(Errc::bad_request, where + " is not an object");
    CardCapability capability;
    for (const auto& member : item.as_object()) {
      const std::string_view key = member.key();
      const auto& value = member.value();
      const bool schema = value.is_object() || value.is_bool();  // JSON Schema 2020-12 §4.3
      if (key == "name" && value.is_string()) {
        capability.name = std::string(value.as_string());
      } else if (key == "description" && value.is_string()) {
        capability.description = std::string(value.as_string());
      } else if (key == "input_schema" && schema) {
        capability.input_schema = value;
      } else if (key == "output_schema" && schema) {
        capability.output_schema = value;
      } else if (key == "name" || key == "description" || key == "input_schema" || key == "output_schema") {
        return fail(Errc::bad_request, where + "." + std::string(key) + " has the wrong type" +
                                           (schema ? "" : " (a string, or a schema object / boolean)"));
      } else {
        return fail(Errc::bad_request, where + ": unexpected member `" + std::string(key.substr(0, 64)) + "`");
      }
    }
    if (capability.name.empty()) return fail(Errc::bad_request, where + ": name is required");
    capabilities.push_back(std::move(capability));
  }
  return capabilities;
}

}  // namespace agent_mesh::ctl
