// registry-bench: the discovery benchmark of the registry issue (scripts/bench-registry drives it).
//
//   registry-bench load  --db FILE --cards N     fills a fresh registry database (user "bench", one
//                                                group, N signed-shape cards); prints the API token
//   registry-bench http  --port P --token T --kind capability|q --count M
//                                                times M discovery requests against a running server
//                                                on one keep-alive connection
//   registry-bench words --kind capability|q --count M
//                                                prints the M query terms `http` uses, one per line
//                                                (the script builds the same SQL from them)
// Every command prints one line `RESULT key=value ...`; notes go to stderr.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sodium.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/identity.hpp"
#include "agent_mesh/json.hpp"
#include "registry/credentials.hpp"
#include "registry/sqlite_storage.hpp"

namespace {

using namespace agent_mesh;

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

// A deterministic vocabulary: pronounceable words from syllables, the same in every run.
std::vector<std::string> vocabulary(std::size_t count, std::uint32_t seed) {
  static const char* const kSyllables[] = {"ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "qua", "pri", "dal",
                                           "mon", "fer", "gis", "hol", "jun", "bre", "cto", "wen"};
  std::mt19937 random(seed);
  std::vector<std::string> words;
  std::map<std::string, bool> seen;
  while (words.size() < count) {
    std::string word;
    const int syllables = 2 + static_cast<int>(random() % 3);
    for (int i = 0; i < syllables; ++i) word += kSyllables[random() % std::size(kSyllables)];
    if (seen.emplace(word, true).second) words.push_back(word);
  }
  return words;
}

constexpr std::size_t kWords = 2000;
constexpr std::size_t kCapabilities = 500;

struct Corpus {
  std::vector<std::string> words = vocabulary(kWords, 1);
  std::vector<std::string> capabilities = [] {
    std::vector<std::string> out;
    for (const auto& word : vocabulary(kCapabilities, 2)) out.push_back("cap-" + word);
    return out;
  }();
};

std::string phrase(const Corpus& corpus, std::mt19937& random, int words) {
  std::string out;
  for (int i = 0; i < words; ++i) {
    if (i != 0) out += ' ';
    // Zipf-like: small indices are common, so queries hit varied result counts.
    const auto index = static_cast<std::size_t>(std::pow(static_cast<double>(random() % 1000000) / 1e6, 2.0) * kWords);
    out += corpus.words[std::min(index, kWords - 1)];
  }
  return out;
}

std::string arg(const std::map<std::string, std::string>& args, const std::string& key, const std::string& fallback) {
  auto it = args.find(key);
  return it == args.end() ? fallback : it->second;
}

int load(const std::map<std::string, std::string>& args) {
  const std::string db = arg(args, "db", "");
  const int cards = std::stoi(arg(args, "cards", "100000"));
  registry::SqliteOptions options;
  options.fsync_commits = false;  // a bulk load into a fresh file
  auto opened = registry::SqliteStorage::open(db, options);
  if (!opened) {
    std::fprintf(stderr, "registry-bench: %s\n", opened.error().message.c_str());
    return 1;
  }
  auto& storage = **opened;
  const std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  auto user = storage.create_user({"bench", std::nullopt}, now);
  if (!user) {
    std::fprintf(stderr, "registry-bench: %s\n", user.error().message.c_str());
    return 1;
  }
  const std::string token = registry::generate_secret();
  if (!storage.create_token({user->id, "bench", registry::hash_secret(token), std::nullopt}, now)) return 1;
  const Corpus corpus;
  std::mt19937 random(3);
  const std::uint64_t started = now_ns();
  for (int i = 0; i < cards; ++i) {
    const KeyPair key = KeyPair::generate();
    registry::AgentCardRecord card;
    card.agent_id = key.agent_id().str();
    card.group_id = user->personal_group_id;
    card.owner_id = user->id;
    card.name = phrase(corpus, random, 2);
    card.description = phrase(corpus, random, 8 + static_cast<int>(random() % 5));
    boost::json::array capabilities;
    const int count = 1 + static_cast<int>(random() % 4);
    std::vector<std::string> names;
    while (static_cast<int>(names.size()) < count) {
      std::string name = corpus.capabilities[random() % kCapabilities];
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(std::move(name));
    }
    for (const auto& name : names) {
      capabilities.push_back(boost::json::object{{"name", name}, {"description", phrase(corpus, random, 4)}});
    }
    card.capabilities_json = json::serialize_jcs(capabilities);
    card.timestamp = now;
    card.signature = std::string(86, 'A');  // storage does not verify; the HTTP layer does
    card.card_json = "{}";
    if (auto put = storage.put_card(std::move(card), now); !put) {
      std::fprintf(stderr, "registry-bench: card %d: %s\n", i, put.error().message.c_str());
      return 1;
    }
  }
  const double seconds = static_cast<double>(now_ns() - started) / 1e9;
  std::printf("RESULT cards=%d load_s=%.1f token=%s group=%s\n", cards, seconds, token.c_str(),
              user->personal_group_id.c_str());
  return 0;
}

// The query terms of a run: capability names, or single words for full text.
std::vector<std::string> terms(const std::string& kind, int count) {
  const Corpus corpus;
  std::mt19937 random(kind == "q" ? 11 : 12);
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) {
    if (kind == "q") {
      out.push_back(phrase(corpus, random, 1));
    } else {
      out.push_back(corpus.capabilities[random() % kCapabilities]);
    }
  }
  return out;
}

int words(const std::map<std::string, std::string>& args) {
  for (const auto& term : terms(arg(args, "kind", "capability"), std::stoi(arg(args, "count", "2000")))) {
    std::printf("%s\n", term.c_str());
  }
  return 0;
}

double quantile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<std::size_t>(q * static_cast<double>(values.size())))];
}

// A keep-alive HTTP/1.1 client on one blocking socket: what a client library with a connection
// pool does, so the samples measure the server's answer rather than TCP set-up per request.
class KeepAliveClient {
 public:
  explicit KeepAliveClient(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) throw std::runtime_error("connect");
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~KeepAliveClient() { ::close(fd_); }
  KeepAliveClient(const KeepAliveClient&) = delete;
  KeepAliveClient& operator=(const KeepAliveClient&) = delete;

  // Sends one GET and returns {status, body}.
  std::pair<int, std::string> get(const std::string& target, const std::string& token) {
    const std::string request = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token +
                                "\r\n\r\n";
    if (::send(fd_, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
      throw std::runtime_error("send");
    }
    std::size_t header_end;
    while ((header_end = buffer_.find("\r\n\r\n")) == std::string::npos) fill();
    const std::string head = buffer_.substr(0, header_end);
    const int status = std::stoi(head.substr(9, 3));
    std::size_t length = 0;
    for (std::size_t at = 0; (at = head.find("\r\n", at)) != std::string::npos;) {
      at += 2;
      std::string line = head.substr(at, head.find("\r\n", at) - at);
      std::transform(line.begin(), line.end(), line.begin(), [](unsigned char c) { return std::tolower(c); });
      if (line.rfind("content-length:", 0) == 0) length = std::stoul(line.substr(15));
    }
    while (buffer_.size() < header_end + 4 + length) fill();
    std::string body = buffer_.substr(header_end + 4, length);
    buffer_.erase(0, header_end + 4 + length);
    return {status, std::move(body)};
  }

 private:
  void fill() {
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) throw std::runtime_error("connection closed");
    buffer_.append(chunk, static_cast<std::size_t>(n));
  }
  int fd_ = -1;
  std::string buffer_;
};

int http(const std::map<std::string, std::string>& args) {
  const int port = std::stoi(arg(args, "port", "0"));
  const std::string token = arg(args, "token", "");
  const std::string kind = arg(args, "kind", "capability");
  const int count = std::stoi(arg(args, "count", "2000"));
  const auto queries = terms(kind, count);
  std::vector<double> latencies_us;
  int errors = 0;
  auto client = std::make_unique<KeepAliveClient>(port);
  int served = 0;
  for (int pass = 0; pass < 2; ++pass) {  // pass 0 warms the page cache and the server
    for (const auto& term : queries) {
      const std::string target = std::string("/api/v1/agents?limit=50&") + (kind == "q" ? "q=" : "capability=") + term;
      // The server closes a keep-alive connection after 100 requests: open the next one before
      // that, outside the timed part.
      if (++served % 100 == 0) client = std::make_unique<KeepAliveClient>(port);
      const std::uint64_t started = now_ns();
      const auto [status, body] = client->get(target, token);
      const std::uint64_t elapsed = now_ns() - started;
      if (status != 200) {
        if (errors++ == 0) std::fprintf(stderr, "registry-bench: %d %s\n", status, body.c_str());
        continue;
      }
      if (pass == 1) latencies_us.push_back(static_cast<double>(elapsed) / 1000.0);
    }
  }
  std::printf("RESULT kind=%s count=%zu p50_us=%.1f p99_us=%.1f errors=%d\n", kind.c_str(), latencies_us.size(),
              quantile(latencies_us, 0.5), quantile(latencies_us, 0.99), errors);
  return errors == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (sodium_init() < 0 || argc < 2) {
    std::fprintf(stderr, "usage: registry-bench load|http|words [--key value ...]\n");
    return 2;
  }
  std::map<std::string, std::string> args;
  for (int i = 2; i + 1 < argc; i += 2) args[std::string(argv[i]).substr(2)] = argv[i + 1];
  const std::string command = argv[1];
  if (command == "load") return load(args);
  if (command == "http") return http(args);
  if (command == "words") return words(args);
  std::fprintf(stderr, "registry-bench: unknown command %s\n", command.c_str());
  return 2;
}
