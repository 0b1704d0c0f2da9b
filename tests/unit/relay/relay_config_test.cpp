// Relay configuration (relay.md "Configuration"; spec README "Conventions"): defaults, TOML file,
// flags overriding it, and every rejection naming its key.
#include "relay/relay_config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <string>
#include <vector>

#include "agent_mesh/version.hpp"

namespace agent_mesh::relay {
namespace {

using ::testing::HasSubstr;

class RelayConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "relay-config-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes relay.toml in the test directory and returns its path.
  std::string write_toml(const std::string& text) {
    const auto path = dir_ / "relay.toml";
    std::ofstream(path) << text;
    return path.string();
  }

  // Runs load_relay_config on argv = {"agent-mesh-relay", args...}; --data-dir is added unless
  // given, so no test depends on HOME.
  static Result<LoadedConfig> load(std::vector<std::string> args, bool add_data_dir = true) {
    args.insert(args.begin(), "agent-mesh-relay");
    if (add_data_dir) {
      args.emplace_back("--data-dir");
      args.emplace_back("/tmp/agent-mesh-relay-test-data");
    }
    std::vector<const char*> argv;
    for (const auto& arg : args) argv.push_back(arg.c_str());
    return load_relay_config(static_cast<int>(argv.size()), argv.data());
  }

  static RelayConfig load_ok(std::vector<std::string> args) {
    auto loaded = load(std::move(args));
    EXPECT_TRUE(loaded.ok()) << (loaded.ok() ? "" : loaded.error().describe());
    if (!loaded.ok()) return {};
    EXPECT_FALSE(loaded->exit_now);
    return loaded->config;
  }

  static std::string load_error(std::vector<std::string> args) {
    auto loaded = load(std::move(args));
    EXPECT_FALSE(loaded.ok());
    if (loaded.ok()) return "";
    EXPECT_EQ(loaded.error().code, Errc::bad_request) << loaded.error().describe();
    return loaded.error().message;
  }

  std::filesystem::path dir_;
};

TEST_F(RelayConfigTest, DefaultsAreTheDocumentedOnes) {
  const RelayConfig config = load_ok({});
  EXPECT_EQ(config.listen.host, "127.0.0.1");
  EXPECT_EQ(config.listen.port, 9800);
  EXPECT_FALSE(config.listen.ipv6);
  EXPECT_EQ(config.public_url, "");
  EXPECT_EQ(config.relay_id(9800), "ws://127.0.0.1:9800/relay/ws");
  EXPECT_EQ(config.max_envelope_bytes, 1024 * 1024);
  EXPECT_EQ(config.heartbeat_ms, 30000);
  EXPECT_EQ(config.auth_timeout_ms, 5000);
  EXPECT_EQ(config.resume_ttl_s, 300);
  EXPECT_EQ(config.write_queue_bytes, 4 * 1024 * 1024);
  EXPECT_EQ(config.rate_limit, 500);
  EXPECT_EQ(config.rate_burst, 1000);
  EXPECT_EQ(config.ip_connect_rate, 20);
  EXPECT_EQ(config.ip_auth_failures, 10);
  EXPECT_EQ(config.buffer_max_messages, 1000);
  EXPECT_EQ(config.buffer_max_bytes, 16 * 1024 * 1024);
  EXPECT_EQ(config.buffer_ttl_s, 600);
  EXPECT_EQ(config.store_max_bytes, 1024LL * 1024 * 1024);
  EXPECT_EQ(config.drain_timeout_s, 10);
  EXPECT_EQ(config.threads, 0);
  EXPECT_TRUE(config.trusted_proxies.empty());
  EXPECT_EQ(config.log_level, "info");
  EXPECT_EQ(config.log_format, LogFormat::text);
  EXPECT_EQ(config.registry_url, "");
  EXPECT_EQ(config.cluster_nats_url, "");
  EXPECT_FALSE(config.tls_enabled());
  EXPECT_TRUE(config.config_file.empty());
  EXPECT_TRUE(validate(RelayConfig{.data_dir = "x"}).ok()) << "a default-constructed config is valid";
}

TEST_F(RelayConfigTest, DataDirDefaultsUnderMeshHome) {
  const char* saved = std::getenv("MESH_HOME");
  const std::string saved_value = saved != nullptr ? saved : "";
  ASSERT_EQ(setenv("MESH_HOME", "/srv/mesh-home", 1), 0);
  auto loaded = load({}, /*add_data_dir=*/false);
  if (saved != nullptr) {
    setenv("MESH_HOME", saved_value.c_str(), 1);
  } else {
    unsetenv("MESH_HOME");
  }
  ASSERT_TRUE(loaded.ok()) << loaded.error().describe();
  EXPECT_EQ(loaded->config.data_dir, std::filesystem::path("/srv/mesh-home/relay"));
}

TEST_F(RelayConfigTest, TomlFileIsReadAndFlagsOverrideIt) {
  const std::string path = write_toml(R"(
listen = "[::1]:0"
public_url = "wss://relay.example.com/relay/ws"
heartbeat_ms = 1000
rate_limit = 100          # an integer is fine for a number
rate_burst = 2.5
trusted_proxies = ["10.0.0.0/8", "::1"]
log_format = "json"
log_level = "debug"
data_dir = "/var/lib/relay"
registry_url = "http://127.0.0.1:9801"
registry_token_file = "/etc/relay/registry-token"
[cluster]
nats_url = "nats://127.0.0.1:4222"
)");
  const RelayConfig config = load_ok({"--config", path, "--heartbeat-ms", "250", "--log-level", "warn"});
  EXPECT_EQ(config.config_file, std::filesystem::path(path));
  EXPECT_EQ(config.listen.host, "::1");
  EXPECT_EQ(config.listen.port, 0);
  EXPECT_TRUE(config.listen.ipv6);
  EXPECT_EQ(config.public_url, "wss://relay.example.com/relay/ws");
  EXPECT_EQ(config.relay_id(4444), "wss://relay.example.com/relay/ws");
  EXPECT_EQ(config.heartbeat_ms, 250);  // the flag wins
  EXPECT_EQ(config.log_level, "warn");
  EXPECT_EQ(config.rate_limit, 100);
  EXPECT_EQ(config.rate_burst, 2.5);
  ASSERT_EQ(config.trusted_proxies.size(), 2U);
  EXPECT_TRUE(config.is_trusted_proxy("10.1.2.3"));
  EXPECT_TRUE(config.is_trusted_proxy("::1"));
  EXPECT_FALSE(config.is_trusted_proxy("192.168.0.1"));
  EXPECT_EQ(config.log_format, LogFormat::json);
  EXPECT_EQ(config.data_dir, std::filesystem::path("/tmp/agent-mesh-relay-test-data"));  // flag over file
  EXPECT_EQ(config.registry_url, "http://127.0.0.1:9801");
  EXPECT_EQ(config.cluster_nats_url, "nats://127.0.0.1:4222");
}

TEST_F(RelayConfigTest, EveryKeyIsAFlag) {
  const RelayConfig config = load_ok({"--listen", "127.0.0.1:0", "--public-url", "ws://127.0.0.1:1/relay/ws",
                                      "--tls-cert", "c.pem", "--tls-key", "k.pem", "--admin-token-file", "admin",
                                      "--threads", "2", "--max-envelope-bytes", "4096", "--heartbeat-ms", "100",
                                      "--auth-timeout-ms", "200", "--resume-ttl-s", "7", "--write-queue-bytes",
                                      "8192", "--rate-limit", "1e6", "--rate-burst", "2000000", "--ip-connect-rate",
                                      "1000", "--ip-auth-failures", "60", "--buffer-max-messages", "5",
                                      "--buffer-max-bytes", "100", "--buffer-ttl-s", "2", "--store-max-bytes", "300",
                                      "--drain-timeout-s", "0", "--trusted-proxies", "127.0.0.1,10.0.0.0/8",
                                      "--log-level", "trace", "--log-format", "json", "--registry-url",
                                      "https://registry.example.com", "--registry-token-file", "token",
                                      "--cluster-nats-url", "tls://nats.example.com:4222"});
  EXPECT_EQ(config.listen.port, 0);
  EXPECT_EQ(config.tls_cert, std::filesystem::path("c.pem"));
  EXPECT_EQ(config.tls_key, std::filesystem::path("k.pem"));
  EXPECT_TRUE(config.tls_enabled());
  EXPECT_EQ(config.admin_token_file, std::filesystem::path("admin"));
  EXPECT_EQ(config.threads, 2);
  EXPECT_EQ(config.max_envelope_bytes, 4096);
  EXPECT_EQ(config.heartbeat_ms, 100);
  EXPECT_EQ(config.auth_timeout_ms, 200);
  EXPECT_EQ(config.resume_ttl_s, 7);
  EXPECT_EQ(config.write_queue_bytes, 8192);
  EXPECT_EQ(config.rate_limit, 1e6);
  EXPECT_EQ(config.rate_burst, 2e6);
  EXPECT_EQ(config.ip_connect_rate, 1000);
  EXPECT_EQ(config.ip_auth_failures, 60);
  EXPECT_EQ(config.buffer_max_messages, 5);
  EXPECT_EQ(config.buffer_max_bytes, 100);
  EXPECT_EQ(config.buffer_ttl_s, 2);
  EXPECT_EQ(config.store_max_bytes, 300);
  EXPECT_EQ(config.drain_timeout_s, 0);
  EXPECT_EQ(config.trusted_proxies.size(), 2U);
  EXPECT_EQ(config.log_level, "trace");
  EXPECT_EQ(config.log_format, LogFormat::json);
  EXPECT_EQ(config.registry_url, "https://registry.example.com");
  EXPECT_EQ(config.registry_token_file, std::filesystem::path("token"));
  EXPECT_EQ(config.cluster_nats_url, "tls://nats.example.com:4222");
}

TEST_F(RelayConfigTest, RelayIdDefaultsToTheBoundAddress) {
  RelayConfig config = load_ok({"--listen", "[::1]:0"});
  EXPECT_EQ(config.relay_id(41234), "ws://[::1]:41234/relay/ws");
  config = load_ok({"--listen", "127.0.0.1:0", "--tls-cert", "c", "--tls-key", "k"});
  EXPECT_EQ(config.relay_id(443), "wss://127.0.0.1:443/relay/ws");
}

TEST_F(RelayConfigTest, UnknownTomlKeysAreNamed) {
  std::string path = write_toml("listen = \"127.0.0.1:0\"\nfoo = 1\n");
  EXPECT_EQ(load_error({"--config", path}), "unknown config key \"foo\" in " + path);
  path = write_toml("[cluster]\nnats_url = \"nats://h:1\"\nnats_urls = \"x\"\n");
  EXPECT_EQ(load_error({"--config", path}), "unknown config key \"cluster.nats_urls\" in " + path);
  path = write_toml("[listen_options]\nbacklog = 5\n");
  EXPECT_THAT(load_error({"--config", path}), HasSubstr("unknown config key \"listen_options\""));
  path = write_toml("cluster = \"nats://h:1\"\n");
  EXPECT_THAT(load_error({"--config", path}), HasSubstr("\"cluster\" in " + path + " must be a table, not a string"));
  path = write_toml("cluster.nats_url = \"nats://h:1\"\n");  // dotted keys are the same table
  EXPECT_EQ(load_ok({"--config", path}).cluster_nats_url, "nats://h:1");
}

TEST_F(RelayConfigTest, TomlTypeErrorsNameKeyAndType) {
  std::string path = write_toml("heartbeat_ms = \"fast\"\n");
  EXPECT_EQ(load_error({"--config", path}),
            "config key \"heartbeat_ms\" in " + path + " must be an integer, not a string");
  path = write_toml("max_envelope_bytes = 1.5\n");
  EXPECT_THAT(load_error({"--config", path}), HasSubstr("\"max_envelope_bytes\" in " + path + " must be an integer, not a float"));
  path = write_toml("rate_limit = true\n");
  EXPECT_THAT(load_error({"--config", path}), HasSubstr("\"rate_limit\" in " + path + " must be a number, not a boolean"));
  path = write_toml("trusted_proxies = \"10.0.0.1\"\n");
  EXPECT_THAT(load_error({"--config", path}), HasSubstr("\"trusted_proxies\" in " + path + " must be an array of strings"));
  path = write_toml("trusted_proxies = [\"10.0.0.1\", 7]\n");
  EXPECT_THAT(load_error({"--config", path}), HasSubstr("must be an array of strings"));
  path = write_toml("listen = 9800\n");
  EXPECT_THAT(load_error({"--config", path}), HasSubstr("\"listen\" in " + path + " must be a string, not an integer"));
}

TEST_F(RelayConfigTest, BrokenOrMissingFilesAreReported) {
  const std::string path = write_toml("listen = \n");
  EXPECT_THAT(load_error({"--config", path}), HasSubstr(path + ":1:"));
  auto missing = load({"--config", (dir_ / "absent.toml").string()});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, Errc::not_found);
  EXPECT_THAT(missing.error().message, HasSubstr("absent.toml"));
}

TEST_F(RelayConfigTest, FlagErrorsNameTheFlag) {
  EXPECT_EQ(load_error({"--heartbeat-ms", "abc"}), "--heartbeat-ms must be an integer, got \"abc\"");
  EXPECT_EQ(load_error({"--rate-limit", "fast"}), "--rate-limit must be a number, got \"fast\"");
  EXPECT_THAT(load_error({"--no-such-flag", "1"}), HasSubstr("--no-such-flag"));
  EXPECT_THAT(load_error({"stray"}), HasSubstr("stray"));
}

TEST_F(RelayConfigTest, WildcardListenNeedsPublicUrl) {
  EXPECT_THAT(load_error({"--listen", "0.0.0.0:9800"}), HasSubstr("public_url (--public-url) is required"));
  EXPECT_THAT(load_error({"--listen", "[::]:0"}), HasSubstr("public_url (--public-url) is required"));
  const RelayConfig config = load_ok({"--listen", "0.0.0.0:9800", "--public-url", "wss://relay.example.com/relay/ws"});
  EXPECT_TRUE(config.listen.is_wildcard());
  EXPECT_EQ(config.relay_id(9800), "wss://relay.example.com/relay/ws");
}

TEST_F(RelayConfigTest, PublicUrlMustBeWebSocket) {
  EXPECT_THAT(load_error({"--public-url", "https://relay.example.com/relay/ws"}), HasSubstr("ws:// or wss://"));
  EXPECT_THAT(load_error({"--public-url", "wss://"}), HasSubstr("ws:// or wss://"));
  EXPECT_THAT(load_error({"--public-url", "relay.example.com"}), HasSubstr("ws:// or wss://"));
  EXPECT_EQ(load_ok({"--public-url", "WSS://Relay.Example.com"}).public_url, "WSS://Relay.Example.com");
}

TEST_F(RelayConfigTest, WriteQueueMustHoldAMaximalEnvelope) {
  EXPECT_THAT(load_error({"--write-queue-bytes", "1000", "--max-envelope-bytes", "1001"}),
              HasSubstr("write_queue_bytes (--write-queue-bytes) must be at least max_envelope_bytes (1001)"));
  EXPECT_THAT(load_error({"--max-envelope-bytes", "8388608"}), HasSubstr("write_queue_bytes"));
  EXPECT_EQ(load_ok({"--write-queue-bytes", "1001", "--max-envelope-bytes", "1001"}).write_queue_bytes, 1001);
}

TEST_F(RelayConfigTest, LimitsMustBePositive) {
  EXPECT_THAT(load_error({"--rate-limit", "0"}), HasSubstr("rate_limit (--rate-limit)"));
  EXPECT_THAT(load_error({"--rate-limit", "-5"}), HasSubstr("rate_limit"));
  EXPECT_THAT(load_error({"--rate-limit", "inf"}), HasSubstr("rate_limit"));
  EXPECT_THAT(load_error({"--rate-burst", "0.5"}), HasSubstr("rate_burst"));
  EXPECT_THAT(load_error({"--ip-connect-rate", "0"}), HasSubstr("ip_connect_rate"));
  EXPECT_THAT(load_error({"--ip-auth-failures", "-1"}), HasSubstr("ip_auth_failures"));
  EXPECT_THAT(load_error({"--heartbeat-ms", "0"}), HasSubstr("heartbeat_ms (--heartbeat-ms) must be positive"));
  EXPECT_THAT(load_error({"--buffer-max-messages", "-1"}), HasSubstr("buffer_max_messages"));
  EXPECT_THAT(load_error({"--store-max-bytes", "0"}), HasSubstr("store_max_bytes"));
  EXPECT_THAT(load_error({"--buffer-ttl-s", "9007199254741"}), HasSubstr("buffer_ttl_s"));
  EXPECT_THAT(load_error({"--threads", "-1"}), HasSubstr("threads"));
  EXPECT_EQ(load_ok({"--resume-ttl-s", "0", "--drain-timeout-s", "0"}).resume_ttl_s, 0);
}

TEST_F(RelayConfigTest, EnumsAndPairsAreChecked) {
  EXPECT_THAT(load_error({"--log-format", "xml"}), HasSubstr("log_format must be \"text\" or \"json\""));
  EXPECT_THAT(load_error({"--log-level", "verbose"}), HasSubstr("log_level (--log-level) must be one of"));
  EXPECT_THAT(load_error({"--tls-cert", "c.pem"}), HasSubstr("tls_cert (--tls-cert) and tls_key (--tls-key)"));
  EXPECT_THAT(load_error({"--registry-url", "http://r"}), HasSubstr("registry_token_file (--registry-token-file) is required"));
  EXPECT_THAT(load_error({"--registry-token-file", "t"}), HasSubstr("without registry_url"));
  EXPECT_THAT(load_error({"--registry-url", "ftp://r", "--registry-token-file", "t"}), HasSubstr("http:// or https://"));
  EXPECT_THAT(load_error({"--cluster-nats-url", "http://n"}), HasSubstr("cluster.nats_url (--cluster-nats-url)"));
  EXPECT_THAT(load_error({"--trusted-proxies", "10.0.0.1/8"}), HasSubstr("trusted_proxies: host bits"));
  EXPECT_THAT(load_error({"--trusted-proxies", "proxy.local"}), HasSubstr("trusted_proxies"));
}

TEST_F(RelayConfigTest, ListenAddressForms) {
  EXPECT_THAT(load_error({"--listen", "::1:80"}), HasSubstr("listen: an IPv6 address goes in brackets"));
  EXPECT_THAT(load_error({"--listen", "127.0.0.1:65536"}), HasSubstr("listen: port"));
  EXPECT_THAT(load_error({"--listen", "127.0.0.1:"}), HasSubstr("listen: port"));
  EXPECT_THAT(load_error({"--listen", "127.0.0.1:-1"}), HasSubstr("listen: port"));
  EXPECT_THAT(load_error({"--listen", "127.0.0.1"}), HasSubstr("listen: expected HOST:PORT"));
  EXPECT_THAT(load_error({"--listen", "example.com:80"}), HasSubstr("listen: host must be an IP address"));
  EXPECT_THAT(load_error({"--listen", "[127.0.0.1]:80"}), HasSubstr("listen: host must be an IP address"));
  EXPECT_THAT(load_error({"--listen", "[::1:80"}), HasSubstr("listen: expected [IPV6]:PORT"));

  auto address = ListenAddress::parse("localhost:8080");
  ASSERT_TRUE(address.ok());
  EXPECT_EQ(address->host, "127.0.0.1");
  EXPECT_EQ(address->authority(8080), "127.0.0.1:8080");
  address = ListenAddress::parse("[0:0:0:0:0:0:0:1]:65535");
  ASSERT_TRUE(address.ok());
  EXPECT_EQ(address->host, "::1");  // canonical form
  EXPECT_EQ(address->port, 65535);
  EXPECT_EQ(address->authority(1), "[::1]:1");
  EXPECT_TRUE(ListenAddress::parse("[::]:0")->is_wildcard());
  EXPECT_TRUE(ListenAddress::parse("0.0.0.0:0")->is_wildcard());
  EXPECT_FALSE(ListenAddress::parse("127.0.0.1:0")->is_wildcard());
}

TEST_F(RelayConfigTest, HelpShowsAnExampleAndEveryFlag) {
  auto loaded = load({"--help"});
  ASSERT_TRUE(loaded.ok()) << loaded.error().describe();
  EXPECT_TRUE(loaded->exit_now);
  EXPECT_THAT(loaded->exit_text, HasSubstr("Example"));
  EXPECT_THAT(loaded->exit_text, HasSubstr("agent-mesh-relay --listen"));
  for (const char* flag : {"--config", "--listen", "--public-url", "--max-envelope-bytes", "--trusted-proxies",
                           "--cluster-nats-url", "--ip-auth-failures", "--version"}) {
    EXPECT_THAT(loaded->exit_text, HasSubstr(flag));
  }
  EXPECT_THAT(load({"-h"})->exit_text, HasSubstr("Example"));
}

TEST_F(RelayConfigTest, VersionPrintsTheVersion) {
  auto loaded = load({"--version"});
  ASSERT_TRUE(loaded.ok()) << loaded.error().describe();
  EXPECT_TRUE(loaded->exit_now);
  EXPECT_EQ(loaded->exit_text, "agent-mesh-relay " + std::string(kVersion) + "\n");
}

TEST(IpNetwork, ParsesAddressesAndNetworks) {
  auto network = IpNetwork::parse("10.0.0.0/8");
  ASSERT_TRUE(network.ok());
  EXPECT_TRUE(network->contains("10.255.0.1"));
  EXPECT_TRUE(network->contains("::ffff:10.1.1.1"));  // dual-stack socket form
  EXPECT_FALSE(network->contains("11.0.0.1"));
  EXPECT_FALSE(network->contains("::1"));
  EXPECT_FALSE(network->contains("garbage"));
  EXPECT_FALSE(network->contains(""));

  network = IpNetwork::parse("192.0.2.7");
  ASSERT_TRUE(network.ok());
  EXPECT_EQ(network->prefix_bits, 32);
  EXPECT_TRUE(network->contains("192.0.2.7"));
  EXPECT_FALSE(network->contains("192.0.2.8"));

  network = IpNetwork::parse("fd00::/8");
  ASSERT_TRUE(network.ok());
  EXPECT_TRUE(network->contains("fd12:3456::1"));
  EXPECT_TRUE(network->contains("[fd12::1]"));
  EXPECT_TRUE(network->contains("fd12::1%eth0"));
  EXPECT_FALSE(network->contains("fe80::1"));
  EXPECT_FALSE(network->contains("10.0.0.1"));

  network = IpNetwork::parse("::ffff:10.0.0.0/104");  // IPv4-mapped form of 10.0.0.0/8
  ASSERT_TRUE(network.ok());
  EXPECT_FALSE(network->ipv6);
  EXPECT_EQ(network->prefix_bits, 8);
  EXPECT_TRUE(network->contains("10.2.3.4"));

  network = IpNetwork::parse("0.0.0.0/0");
  ASSERT_TRUE(network.ok());
  EXPECT_TRUE(network->contains("203.0.113.9"));
}

TEST(IpNetwork, RejectsMalformedEntries) {
  for (const char* bad : {"", "10.0.0.1/33", "10.0.0.1/8", "10.0.0.0/", "10.0.0.0/x", "::1/129", "fd00::1/8",
                          "host.example", "10.0.0", "10.0.0.0/8/8", "1.2.3.4 "}) {
    auto network = IpNetwork::parse(bad);
    EXPECT_FALSE(network.ok()) << bad;
    if (!network.ok()) {
      EXPECT_EQ(network.error().code, Errc::bad_request);
    }
  }
}

}  // namespace
}  // namespace agent_mesh::relay
