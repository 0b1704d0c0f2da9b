#include "json_fields.hpp"

#include <boost/json/value.hpp>

#include "agent_mesh/json.hpp"

namespace agent_mesh::detail {

std::string clip(std::string_view text, std::size_t max) {
  if (text.size() <= max) return std::string(text);
  // Cut on a UTF-8 boundary so the message stays valid UTF-8.
  std::size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return std::string(text.substr(0, cut)) + "…";
}

Error FieldReader::problem(std::string_view name, std::string_view what) const {
  std::string message(context_);
  message += ": ";
  message += name;
  message += ' ';
  message += what;
  return fail(Errc::bad_request, std::move(message));
}

Status FieldReader::reject_unknown(std::initializer_list<std::string_view> known) const {
  for (const auto& member : object_) {
    bool is_known = false;
    for (const auto name : known) {
      if (member.key() == name) {
        is_known = true;
        break;
      }
    }
    if (!is_known) {
      return fail(Errc::bad_request, std::string(context_) + ": unknown member \"" + clip(member.key()) + "\"");
    }
  }
  return {};
}

Result<const boost::json::value*> FieldReader::find_required(std::string_view name) const {
  const boost::json::value* value = object_.if_contains(name);
  if (value == nullptr) {
    return fail(Errc::bad_request, std::string(context_) + ": missing member \"" + std::string(name) + "\"");
  }
  // Optional members are omitted, never null (§1); required ones are never null either.
  if (value->is_null()) return problem(name, "must not be null");
  return value;
}

Status FieldReader::required_string(std::string_view name, std::string_view& out) const {
  auto value = find_required(name);
  if (!value) return std::move(value).error();
  if (!(*value)->is_string()) return problem(name, "must be a string");
  out = (*value)->as_string();
  return {};
}

Status FieldReader::required_integer(std::string_view name, std::int64_t& out) const {
  auto value = find_required(name);
  if (!value) return std::move(value).error();
  if (!json::is_integer(**value)) {
    return problem(name, "must be an integer written without fraction or exponent");
  }
  out = (*value)->is_int64() ? (*value)->as_int64() : static_cast<std::int64_t>((*value)->as_uint64());
  return {};
}

Status FieldReader::required_any(std::string_view name, boost::json::value& out) const {
  const boost::json::value* value = object_.if_contains(name);
  if (value == nullptr) {
    return fail(Errc::bad_request, std::string(context_) + ": missing member \"" + std::string(name) + "\"");
  }
  // A free-form value (`body`) may be null: null is a JSON value like any other there.
  out = *value;
  return {};
}

Status FieldReader::optional_integer(std::string_view name, std::int64_t& out, bool& present) const {
  present = object_.contains(name);
  if (!present) return {};
  return required_integer(name, out);
}

Status FieldReader::optional_bool(std::string_view name, bool& out, bool& present) const {
  present = object_.contains(name);
  if (!present) return {};
  auto value = find_required(name);
  if (!value) return std::move(value).error();
  if (!(*value)->is_bool()) return problem(name, "must be true or false");
  out = (*value)->as_bool();
  return {};
}

Status FieldReader::optional_string(std::string_view name, std::string_view& out, bool& present) const {
  present = object_.contains(name);
  if (!present) return {};
  return required_string(name, out);
}

Status FieldReader::required_bool(std::string_view name, bool& out) const {
  auto value = find_required(name);
  if (!value) return std::move(value).error();
  if (!(*value)->is_bool()) return problem(name, "must be true or false");
  out = (*value)->as_bool();
  return {};
}

Status FieldReader::required_array(std::string_view name, const boost::json::array*& out) const {
  auto value = find_required(name);
  if (!value) return std::move(value).error();
  if (!(*value)->is_array()) return problem(name, "must be an array");
  out = &(*value)->as_array();
  return {};
}

Status FieldReader::optional_array(std::string_view name, const boost::json::array*& out) const {
  out = nullptr;
  if (!object_.contains(name)) return {};
  return required_array(name, out);
}

Status FieldReader::optional_object(std::string_view name, const boost::json::object*& out) const {
  out = nullptr;
  if (!object_.contains(name)) return {};
  auto value = find_required(name);
  if (!value) return std::move(value).error();
  if (!(*value)->is_object()) return problem(name, "must be an object");
  out = &(*value)->as_object();
  return {};
}

Status FieldReader::optional_non_null(std::string_view name, const boost::json::value*& out) const {
  out = nullptr;
  if (!object_.contains(name)) return {};
  auto value = find_required(name);
  if (!value) return std::move(value).error();
  out = *value;
  return {};
}

}  // namespace agent_mesh::detail
