// keygen, register, deregister, revoke, rotate (+ complete): the agent's key and card.
#include <boost/json.hpp>
#include <chrono>
#include <fstream>
#include <sstream>

#include "agent_mesh/agent_card.hpp"
#include "agent_mesh/encoding.hpp"
#include "agent_mesh/json.hpp"
#include "agent_mesh/key_lifecycle.hpp"
#include "ctl/capabilities_file.hpp"
#include "ctl/commands.hpp"

namespace agent_mesh::ctl {

namespace {

namespace json = boost::json;

std::string seed_text(const KeyPair& key) {
  std::string text = key.key_file_text();
  if (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

// Saves a key meshctl created to $MESH_HOME/keys/<id>.key and makes it the configured one.
std::filesystem::path save_as_configured_key(Context& context, const KeyPair& key) {
  const auto path = context.key_path(key.agent_id());
  if (auto saved = key.save(path); !saved) {
    fail_command("cannot save the key: " + saved.error().message,
                 "check that " + context.mesh_home().string() + " is writable (or set MESH_HOME)");
  }
  context.config().erase("secret_key");
  context.config().set("key_file", path.string());
  context.config().set("agent_id", key.agent_id().str());
  return path;
}

std::vector<CardCapability> read_capabilities_file(const std::string& path) {
  std::ifstream input(path, std::ios::binary);
  if (!input) fail_command("cannot read --capabilities-file " + path, "check the path");
  std::string text;
  text.resize(kMaxCapabilitiesFileBytes + 1);
  input.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(input.gcount()));
  auto capabilities = parse_capabilities_file(text);
  if (!capabilities) {
    fail_command("--capabilities-file " + path + ": " + capabilities.error().message,
                 R"(the file holds a JSON array: [{"name": "echo", "description": "...", "input_schema": {...}, "output_schema": {...}}])");
  }
  return std::move(capabilities).value();
}

// The personal group of the token's user (GET /users/me).
std::string personal_group(const Context& context) {
  const auto me = context.call_registry("GET", "/api/v1/users/me", std::nullopt, RegistryAuth::token);
  if (const auto* groups = me.as_object().if_contains("groups"); groups != nullptr && groups->is_array()) {
    for (const auto& group : groups->as_array()) {
      const auto* personal = group.as_object().if_contains("personal");
      if (personal != nullptr && personal->is_bool() && personal->as_bool()) {
        return std::string(group.as_object().at("id").as_string());
      }
    }
  }
  fail_command("the token's user has no personal group", "pass --group with one of `agent-meshctl group list`");
}

Uuid parse_group(const std::string& text) {
  auto group = Uuid::parse(text);
  if (!group) fail_command("--group: not a group ID (" + group.error().message + ")", "`agent-meshctl group list` shows the IDs");
  return *group;
}

// ---- keygen ----

void keygen(Context& context, bool save) {
  const KeyPair key = KeyPair::generate();
  std::filesystem::path saved;
  if (save) {
    if (auto previous = context.config().get("agent_id")) {
      context.err() << "note: the configured agent was " << *previous << "; its key file stays where it is ("
                    << context.config().get("key_file").value_or("inline secret_key") << ")\n";
    }
    saved = save_as_configured_key(context, key);
    context.save_config();
  }
  if (context.json()) {
    json::object object{{"agent_id", key.agent_id().str()}, {"secret_key", seed_text(key)}};
    if (save) object["key_file"] = saved.string();
    context.print_json(object);
  } else {
    context.out() << "Agent ID: " << key.agent_id().str() << "\nSecret Key: " << seed_text(key) << "\n";
  }
  if (save) context.err() << "Saved the key to " << saved.string() << " (configured in " << context.config().path().string() << ")\n";
}

// ---- register ----

}  // namespace

AgentId register_agent(Context& context, const RegisterOptions& options, bool print) {
  AgentCard card;
  card.name = options.name;
  if (!options.description.empty()) card.description = options.description;
  for (auto& name : split_list(options.capabilities)) card.capabilities.push_back(CardCapability{std::move(name), {}, {}, {}});
  if (!options.capabilities_file.empty()) {
    // A name given both ways is one capability: the file's entry (with its schemas) wins.
    for (auto& capability : read_capabilities_file(options.capabilities_file)) {
      std::erase_if(card.capabilities, [&](const CardCapability& plain) { return plain.name == capability.name; });
      card.capabilities.push_back(std::move(capability));
    }
  }
  if (card.capabilities.empty()) {
    fail_command("an agent card needs at least one capability", "pass --capabilities a,b or --capabilities-file caps.json", kExitUsage);
  }
  if (!options.setup_key.empty() && options.group.empty()) {
    fail_command("--setup-key needs --group: the card names its group and the setup key is for one group",
                 "pass the group ID the setup key was created for (`agent-meshctl setup-key list` shows it)", kExitUsage);
  }

  // The key: --secret-key (used, never saved), else the configured one, else a new one saved on success.
  std::optional<KeyPair> key;
  bool created = false;
  if (!options.secret_key.empty()) {
    auto given = KeyPair::from_key_file_text(options.secret_key);
    if (!given) fail_command("--secret-key: " + given.error().message, "pass the `Secret Key` printed by `agent-meshctl keygen`");
    key = std::move(given).value();
  } else {
    key = context.identity();
    if (!key) {
      key = KeyPair::generate();
      created = true;
    }
  }
  card.agent_id = key->agent_id();
  card.group_id = parse_group(!options.group.empty() ? options.group
                              : options.setup_key.empty() ? personal_group(context)
                                                          : options.group);
  if (auto valid = card.validate(); !valid) {
    fail_command(valid.error().message, "see `agent-meshctl register --help`", kExitUsage);
  }

  auto registry = context.registry(*key);
  const bool with_token = options.setup_key.empty();
  auto stored = with_token ? registry->register_card(card, context.require_token())
                           : registry->register_with_setup_key(card, options.setup_key);
  if (!stored) context.fail_registry(stored.error(), with_token);

  if (created) {
    const auto path = save_as_configured_key(context, *key);
    context.save_config();
    context.err() << "Created a new key: " << path.string() << "\n";
  }
  context.err() << "Agent ID: " << key->agent_id().str() << "\n";
  if (print && context.json()) {
    context.print_json(*stored);
  } else if (print) {
    context.out() << key->agent_id().str() << "\n";
  }
  return key->agent_id();
}

namespace {

// ---- deregister ----

void deregister(Context& context, const std::string& agent_flag) {
  std::string agent;
  if (!agent_flag.empty()) {
    agent = agent_flag;
  } else if (auto configured = context.agent_id()) {
    agent = configured->str();
  } else {
    fail_command("no agent to deregister: none is configured", "pass --agent-id ID, or configure an agent (`agent-meshctl register`)");
  }
  if (!AgentId::parse(agent)) fail_command("--agent-id: not an agent ID", "an agent ID is 43 base64url characters", kExitUsage);
  // The configured key may delete its own card; a token may delete any card of the user's groups.
  const auto own = context.identity();
  const bool as_agent = !context.setting("token") && own && own->agent_id().str() == agent;
  (void)context.call_registry("DELETE", "/api/v1/agents/" + agent, std::nullopt,
                              as_agent ? RegistryAuth::agent : RegistryAuth::token,
                              "no agent with this ID in your groups: `agent-meshctl discover` lists them");
  if (context.json()) {
    context.print_json(json::object{{"agent_id", agent}, {"deregistered", true}});
  } else {
    context.out() << "Deregistered " << agent << "\n";
  }
}

// ---- revoke ----

void revoke_with_key(Context& context, const KeyPair& key, const std::string& reason) {
  Revocation revocation;
  revocation.agent_id = key.agent_id();
  revocation.reason = reason;
  revocation.timestamp = now_ms();
  revocation.sign(key);
  (void)context.call_registry("POST", "/api/v1/revocations", json::value(revocation.to_json()), RegistryAuth::none);
}

void revoke(Context& context, const std::string& agent_flag, const std::string& reason) {
  std::string revoked;
  if (agent_flag.empty()) {
    const KeyPair key = context.require_identity();
    revoke_with_key(context, key, reason);
    revoked = key.agent_id().str();
  } else {
    if (!AgentId::parse(agent_flag)) fail_command("--agent-id: not an agent ID", "an agent ID is 43 base64url characters", kExitUsage);
    json::object body;
    if (!reason.empty()) body["reason"] = reason;
    (void)context.call_registry("POST", "/api/v1/agents/" + agent_flag + "/revoke", json::value(body), RegistryAuth::token,
                                "no agent with this ID in your groups: `agent-meshctl discover` lists them");
    revoked = agent_flag;
  }
  if (context.json()) {
    context.print_json(json::object{{"agent_id", revoked}, {"revoked", true}});
  } else {
    context.out() << "Revoked " << revoked << " (relays refuse it from now on; revocations never expire)\n";
  }
  if (agent_flag.empty()) {
    context.err() << "This key can no longer be used. Make a new one with `agent-meshctl keygen --save` and register "
                     "the agent again.\n";
  }
}

// ---- rotate ----

// The stored card's content under the new key (the registry moves it and its rules to the new ID).
AgentCard card_for_new_key(const json::object& stored, const AgentId& new_id) {
  AgentCard card;
  card.agent_id = new_id;
  card.group_id = parse_group(std::string(stored.at("group_id").as_string()));
  card.name = std::string(stored.at("name").as_string());
  if (const auto* description = stored.if_contains("description"); description != nullptr && description->is_string()) {
    card.description = std::string(description->as_string());
  }
  for (const auto& item : stored.at("capabilities").as_array()) {
    const auto& object = item.as_object();
    CardCapability capability;
    capability.name = std::string(object.at("name").as_string());
    if (const auto* value = object.if_contains("description"); value != nullptr && value->is_string()) {
      capability.description = std::string(value->as_string());
    }
    if (const auto* value = object.if_contains("input_schema"); value != nullptr && !value->is_null()) capability.input_schema = *value;
    if (const auto* value = object.if_contains("output_schema"); value != nullptr && !value->is_null()) capability.output_schema = *value;
    card.capabilities.push_back(std::move(capability));
  }
  if (const auto* metadata = stored.if_contains("metadata"); metadata != nullptr && metadata->is_object()) {
    card.metadata = metadata->as_object();
  }
  return card;
}

void rotate(Context& context, int grace_hours) {
  if (context.config().get("previous_secret_key") || context.config().get("previous_key_file")) {
    fail_command("a rotation is still in its grace period",
                 "finish it with `agent-meshctl rotate complete` before rotating again");
  }
  const KeyPair old_key = context.require_identity();
  const KeyPair new_key = KeyPair::generate();
  const std::string old_id = old_key.agent_id().str();
  auto stored = context.registry(old_key)->call("GET", "/api/v1/agents/" + old_id);
  if (!stored) context.fail_registry(stored.error(), false, "the configured agent is not registered: `agent-meshctl register` first");
  AgentCard card = card_for_new_key(stored->as_object(), new_key.agent_id());
  card.timestamp = now_ms();
  card.sign(new_key);
  auto rotation = Rotation::create(old_key, new_key, card.timestamp, static_cast<std::int64_t>(grace_hours) * 3'600'000);
  if (!rotation) fail_command("--grace-hours: " + rotation.error().message, "the grace period is 1 to 168 hours", kExitUsage);
  const json::object body{{"rotation", rotation->to_json()}, {"card", card.to_json()}};

  // The new key is on disk before the registry moves the card to it: a crash in between must not
  // leave a registered ID whose key is lost.
  const auto new_path = context.key_path(new_key.agent_id());
  if (auto saved = new_key.save(new_path); !saved) {
    fail_command("cannot save the new key: " + saved.error().message, "check that " + context.mesh_home().string() + " is writable");
  }
  auto moved = context.registry(old_key)->call("POST", "/api/v1/agents/" + old_id + "/rotate", json::value(body));
  if (!moved) {
    std::error_code ignored;
    std::filesystem::remove(new_path, ignored);
    context.fail_registry(moved.error(), false);
  }
  auto& config = context.config();
  if (auto inline_key = config.get("secret_key")) {
    config.set("previous_secret_key", *inline_key);
    config.erase("secret_key");
  } else if (auto file = context.setting("key_file")) {
    config.set("previous_key_file", *file);
  } else {
    config.set("previous_secret_key", seed_text(old_key));
  }
  config.set("key_file", new_path.string());
  config.set("agent_id", new_key.agent_id().str());
  context.save_config();

  if (context.json()) {
    context.print_json(json::object{{"old", old_id}, {"new", new_key.agent_id().str()},
                                    {"grace_until", rfc3339(rotation->grace_until)}, {"key_file", new_path.string()}});
  } else {
    context.out() << new_key.agent_id().str() << "\n";
  }
  context.err() << "Agent ID: " << new_key.agent_id().str() << " (was " << old_id << ")\n"
                << "The old ID keeps routing until " << rfc3339(rotation->grace_until)
                << "; restart agent-meshd with --key-file " << new_path.string()
                << ", then end the grace period with `agent-meshctl rotate complete`.\n";
  if (!context.flags.key_file.empty() || context.source_of("key_file") == "MESH_KEY_FILE") {
    context.err() << "warning: " << context.source_of("key_file") << " still names the old key\n";
  }
}

void rotate_complete(Context& context) {
  auto& config = context.config();
  std::optional<KeyPair> previous;
  if (auto inline_key = config.get("previous_secret_key")) {
    auto key = KeyPair::from_key_file_text(*inline_key);
    if (!key) fail_command("previous_secret_key in " + config.path().string() + " is not a key", "remove it from the file");
    previous = std::move(key).value();
  } else if (auto file = config.get("previous_key_file")) {
    auto key = KeyPair::load(*file);
    if (!key) fail_command(key.error().message, "restore the previous key file, or remove previous_key_file from " + config.path().string());
    previous = std::move(key).value();
  } else {
    fail_command("no rotation is in progress", "start one with `agent-meshctl rotate`");
  }
  revoke_with_key(context, *previous, "key rotation completed");
  config.erase("previous_secret_key");
  config.erase("previous_key_file");
  context.save_config();
  if (context.json()) {
    context.print_json(json::object{{"revoked", previous->agent_id().str()}});
  } else {
    context.out() << "Revoked the previous key " << previous->agent_id().str() << "\n";
  }
}

}  // namespace

void add_identity_commands(CLI::App& app, Context& context, Actions& actions) {
  auto save = std::make_shared<bool>(false);
  auto* keygen_command = add_command(app, "keygen", "Make a new agent key pair (prints its ID and secret key)",
                                     "agent-meshctl keygen --save");
  keygen_command->add_flag("--save", *save, "Save it as the configured key ($MESH_HOME/keys/<id>.key)");
  actions.add(keygen_command, [&context, save] { keygen(context, *save); });

  auto options = std::make_shared<RegisterOptions>();
  auto* register_command =
      add_command(app, "register", "Sign and register this agent's card (creates and saves a key when none is configured)",
                  "agent-meshctl register --name bob --capabilities echo,summarize --description 'Bob the echo agent'");
  register_command->add_option("--name", options->name, "The agent's name")->required();
  register_command->add_option("--capabilities", options->capabilities, "Capability names, comma-separated");
  register_command->add_option("--capabilities-file", options->capabilities_file,
                               "JSON file: [{\"name\", \"description\", \"input_schema\", \"output_schema\"}]");
  register_command->add_option("--description", options->description, "What the agent does");
  register_command->add_option("--secret-key", options->secret_key, "Use this key (never saved)");
  register_command->add_option("--setup-key", options->setup_key, "Register with a setup key instead of a token (needs --group)");
  register_command->add_option("--group", options->group, "Group ID (default: your personal group)");
  actions.add(register_command, [&context, options] { (void)register_agent(context, *options, true); });

  auto deregister_agent = std::make_shared<std::string>();
  auto* deregister_command = add_command(app, "deregister", "Delete an agent's card (default: the configured agent)",
                                         "agent-meshctl deregister --agent-id <agent-id>");
  deregister_command->add_option("--agent-id", *deregister_agent, "The agent to delete");
  actions.add(deregister_command, [&context, deregister_agent] { deregister(context, *deregister_agent); });

  auto revoke_agent = std::make_shared<std::string>();
  auto reason = std::make_shared<std::string>();
  auto* revoke_command = add_command(
      app, "revoke",
      "Revoke a key for good: the configured key (self-signed), or --agent-id as a group owner/admin (lost keys)",
      "agent-meshctl revoke --agent-id <agent-id> --reason 'laptop stolen'");
  revoke_command->add_option("--agent-id", *revoke_agent, "An agent of your groups to revoke (admin revocation)");
  revoke_command->add_option("--reason", *reason, "Why (kept with the revocation)");
  actions.add(revoke_command, [&context, revoke_agent, reason] { revoke(context, *revoke_agent, *reason); });

  auto grace_hours = std::make_shared<int>(24);
  auto* rotate_command = add_command(app, "rotate",
                                     "Replace the configured key: the card and its ACL rules move to a new ID; the old one "
                                     "keeps working until the grace period ends",
                                     "agent-meshctl rotate && agent-meshctl rotate complete");
  rotate_command->add_option("--grace-hours", *grace_hours, "How long the old ID keeps routing (default 24, at most 168)");
  actions.add(rotate_command, [&context, grace_hours] { rotate(context, *grace_hours); });
  auto* complete_command = add_command(*rotate_command, "complete", "End the grace period now: revoke the previous key",
                                       "agent-meshctl rotate complete");
  actions.add(complete_command, [&context] { rotate_complete(context); });
}

}  // namespace agent_mesh::ctl
