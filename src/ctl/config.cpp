#include "ctl/config.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <toml++/toml.h>

#include "agent_mesh/identity.hpp"

namespace agent_mesh::ctl {

namespace {

std::string octal_mode(mode_t mode) {
  std::ostringstream text;
  text << std::oct << (mode & 0777);
  return text.str();
}

}  // namespace

const std::vector<std::string_view>& config_keys() {
  static const std::vector<std::string_view> keys = {
      "cp_url",       "relay_url",    "token",           "secret_key",       "key_file",
      "agent_id",     "meshd_socket", "previous_secret_key", "previous_key_file"};
  return keys;
}

std::string environment_name(std::string_view key) {
  static const std::vector<std::string_view> with_environment = {"cp_url",   "relay_url", "token",
                                                                 "key_file", "agent_id",  "meshd_socket"};
  if (std::find(with_environment.begin(), with_environment.end(), key) == with_environment.end()) return {};
  std::string name = "MESH_";
  for (const char c : key) name.push_back(static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c));
  return name;
}

std::filesystem::path default_mesh_home() {
  if (const char* home = std::getenv("MESH_HOME"); home != nullptr && *home != '\0') return home;
  if (const char* user_home = std::getenv("HOME"); user_home != nullptr && *user_home != '\0') {
    return std::filesystem::path(user_home) / ".mesh";
  }
  return ".mesh";
}

Result<ConfigFile> ConfigFile::load(std::filesystem::path path) {
  ConfigFile file;
  file.path_ = std::move(path);
  const std::string shown = file.path_.string();
  struct stat info {};
  if (::stat(file.path_.c_str(), &info) != 0) {
    if (errno == ENOENT) return file;
    return fail(Errc::bad_request, "cannot read " + shown + ": " + std::strerror(errno));
  }
  if (!S_ISREG(info.st_mode)) return fail(Errc::bad_request, shown + " is not a regular file");
  // It may hold an API token and a secret key: like ssh with its keys, refuse a file others can read.
  if ((info.st_mode & 077) != 0) {
    return fail(Errc::bad_request, shown + " has mode " + octal_mode(info.st_mode) +
                                       ", readable by other users; fix it with: chmod 600 " + shown);
  }
  if (static_cast<std::uintmax_t>(info.st_size) > static_cast<std::uintmax_t>(kMaxConfigFileBytes)) {
    return fail(Errc::bad_request, shown + " is larger than 64 KiB: not a meshctl config file");
  }
  std::ifstream input(file.path_, std::ios::binary);
  std::stringstream text;
  text << input.rdbuf();
  if (!input.good() && !input.eof()) return fail(Errc::bad_request, "cannot read " + shown);
  return parse(text.str(), file.path_);
}

Result<ConfigFile> ConfigFile::parse(std::string_view text, std::filesystem::path path) {
  ConfigFile file;
  file.path_ = std::move(path);
  const std::string shown = file.path_.string();
  if (text.size() > kMaxConfigFileBytes) return fail(Errc::bad_request, shown + " is larger than 64 KiB: not a meshctl config file");
  toml::table table;
  try {
    table = toml::parse(text, shown);
  } catch (const toml::parse_error& error) {
    std::ostringstream where;
    where << error.source().begin;
    return fail(Errc::bad_request, shown + ": not valid TOML (" + std::string(error.description()) + " at " +
                                       where.str() + ")");
  }
  for (const auto& [name, node] : table) {
    const std::string key(name.str());
    const auto& keys = config_keys();
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
      std::string known;
      for (const auto k : keys) known += (known.empty() ? "" : ", ") + std::string(k);
      return fail(Errc::bad_request, shown + ": unknown key `" + key.substr(0, 64) + "` (known keys: " + known + ")");
    }
    const auto* value = node.as_string();
    if (value == nullptr) return fail(Errc::bad_request, shown + ": `" + key + "` must be a string");
    file.values_[key] = value->get();
  }
  return file;
}

std::optional<std::string> ConfigFile::get(std::string_view key) const {
  if (auto found = values_.find(key); found != values_.end() && !found->second.empty()) return found->second;
  return std::nullopt;
}

void ConfigFile::set(std::string_view key, std::string value) { values_[std::string(key)] = std::move(value); }

void ConfigFile::erase(std::string_view key) {
  if (auto found = values_.find(key); found != values_.end()) values_.erase(found);
}

std::string ConfigFile::to_toml() const {
  toml::table table;
  for (const auto& [key, value] : values_) table.insert(key, value);
  std::ostringstream text;
  text << "# agent-meshctl configuration (written by agent-meshctl; see `agent-meshctl --help`)\n"
       << toml::toml_formatter(table) << "\n";
  return text.str();
}

Status ConfigFile::save() const { return write_private_file(path_, to_toml()); }

}  // namespace agent_mesh::ctl
