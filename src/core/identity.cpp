// Agent identity (protocol §1, §2) on libsodium: agent IDs, domain-separated Ed25519 signatures,
// the derived X25519 keys and the secret key file.
//
// Error policy (libsodium's): hostile input (IDs, signatures, key files) fails with a specific
// Error; misuse (an operation on a key that cannot exist) aborts. Secrets never appear in error
// messages and every buffer that held one is wiped with sodium_memzero before it is released.
#include "agent_mesh/identity.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "agent_mesh/encoding.hpp"
#include "agent_mesh/limits.hpp"
#include "sodium_init.hpp"

namespace agent_mesh {
namespace {

constexpr std::size_t kAgentIdChars = 43;  // base64url of 32 bytes, protocol §1
constexpr std::size_t kSeedBytes = crypto_sign_SEEDBYTES;
constexpr std::size_t kSeedChars = base64url_encoded_size(kSeedBytes);
static_assert(kAgentIdChars == base64url_encoded_size(crypto_sign_PUBLICKEYBYTES));
static_assert(kSeedChars == 43);
static_assert(std::tuple_size_v<PublicKey> == crypto_sign_PUBLICKEYBYTES);
static_assert(std::tuple_size_v<Signature> == crypto_sign_BYTES);
static_assert(std::tuple_size_v<X25519Key> == crypto_scalarmult_BYTES);
static_assert(crypto_scalarmult_SCALARBYTES == crypto_scalarmult_BYTES);

[[noreturn]] void identity_misuse(const char* what) noexcept { detail::misuse("identity", what); }
using detail::data_or_empty;
using detail::wipe;

// Runs `wipe` on scope exit, so early returns never leave a secret behind.
template <class Container>
class WipeOnExit {
 public:
  explicit WipeOnExit(Container& secret) noexcept : secret_(secret) {}
  WipeOnExit(const WipeOnExit&) = delete;
  WipeOnExit& operator=(const WipeOnExit&) = delete;
  ~WipeOnExit() { wipe(secret_); }

 private:
  Container& secret_;
};

// protocol §1: an agent ID's key must be canonical, on the curve, in the prime-order subgroup and
// not of small order — exactly what crypto_core_ed25519_is_valid_point checks.
bool is_valid_agent_key(const PublicKey& key) noexcept {
  detail::ensure_sodium();
  // The subgroup check costs a scalar multiplication (~40 µs here), and every envelope carries two
  // agent IDs that are almost always the same few keys. A small per-thread cache of keys already
  // found valid (exact 32-byte match; only positive verdicts) makes repeats free without any lock.
  constexpr std::size_t kSlots = 256;
  thread_local std::array<PublicKey, kSlots> known_valid{};
  thread_local std::array<bool, kSlots> occupied{};
  const std::size_t slot = (static_cast<std::size_t>(key[0]) ^ (static_cast<std::size_t>(key[31]) << 1) ^ key[17]) % kSlots;
  if (occupied[slot] && sodium_memcmp(known_valid[slot].data(), key.data(), key.size()) == 0) return true;
  if (crypto_core_ed25519_is_valid_point(key.data()) != 1) return false;
  known_valid[slot] = key;
  occupied[slot] = true;
  return true;
}

Error invalid_point_error() {
  return fail(Errc::bad_request,
              "agent ID is not a valid Ed25519 public key (small order, non-canonical or not on the "
              "curve)");
}

// ---- POSIX helpers for key files ----

// strerror_r comes in a GNU flavour (returns char*) and an XSI one (returns int); these two
// overloads accept either. strerror() itself is not thread-safe.
[[maybe_unused]] std::string strerror_result(const char* message, const char* /*buffer*/) {
  return message;
}
[[maybe_unused]] std::string strerror_result(int status, const char* buffer) {
  return status == 0 ? std::string(buffer) : std::string("unknown error");
}
std::string describe_errno(int error_number) {
  char buffer[256] = {};
  return strerror_result(strerror_r(error_number, buffer, sizeof buffer), buffer);
}

// The path quoted for a shell when it needs it, so the suggested fix can be pasted as is.
std::string shell_quoted(const std::string& path) {
  const bool plain = !path.empty() && path.find_first_not_of(
                                          "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                          "0123456789/._-+,:@%") == std::string::npos;
  if (plain) return path;
  std::string quoted = "'";
  for (const char c : path) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  quoted += '\'';
  return quoted;
}

std::string octal_mode(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

// A file descriptor closed on scope exit (errors from close() on a read-only descriptor carry no
// information we could act on).
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) noexcept : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  // Closes now and reports the result: after writing, close() can report a deferred write error.
  [[nodiscard]] int close_now() noexcept {
    const int status = ::close(fd_);
    fd_ = -1;
    return status;
  }

 private:
  int fd_;
};

Status write_all(int fd, std::string_view bytes, const std::string& path_for_errors) {
  while (!bytes.empty()) {
    const ssize_t written = ::write(fd, bytes.data(), bytes.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      return fail(Errc::internal, "cannot write " + path_for_errors + ": " + describe_errno(errno));
    }
    bytes.remove_prefix(static_cast<std::size_t>(written));
  }
  return {};
}

// Creates every missing directory on the way to `directory` with mode 0700 (protocol §2: the key
// is private to its owner; directories we create for it should be too). Existing directories are
// left as they are.
Status create_private_directories(const std::filesystem::path& directory) {
  std::filesystem::path prefix;
  for (const auto& component : directory) {
    prefix /= component;
    if (::mkdir(prefix.c_str(), 0700) == 0 || errno == EEXIST) continue;
    // Some systems report EACCES/EROFS before EEXIST for a directory that already exists.
    const int error_number = errno;
    struct stat existing {};
    if (::stat(prefix.c_str(), &existing) == 0 && S_ISDIR(existing.st_mode)) continue;
    errno = error_number;
    return fail(Errc::internal,
                "cannot create directory " + prefix.string() + ": " + describe_errno(errno));
  }
  return {};
}

// A fresh name next to the target, hidden and random so concurrent savers never collide.
std::filesystem::path temporary_path_for(const std::filesystem::path& target) {
  std::array<std::uint8_t, 8> random{};
  randombytes_buf(random.data(), random.size());
  std::filesystem::path temporary = target;
  temporary.replace_filename("." + target.filename().string() + ".tmp-" + hex_encode(random));
  return temporary;
}

Status fsync_directory(const std::filesystem::path& directory) {
  const FileDescriptor fd(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid() || ::fsync(fd.get()) != 0) {
    return fail(Errc::internal,
                "cannot sync directory " + directory.string() + ": " + describe_errno(errno));
  }
  return {};
}

}  // namespace

// ---- Domain separation (protocol §1) ----

std::string_view signature_prefix(Purpose purpose) noexcept {
  switch (purpose) {
    case Purpose::auth: return "agent-mesh/v1/auth\n";
    case Purpose::envelope: return "agent-mesh/v1/envelope\n";
    case Purpose::revoke: return "agent-mesh/v1/revoke\n";
    case Purpose::rotate: return "agent-mesh/v1/rotate\n";
    case Purpose::card: return "agent-mesh/v1/card\n";
    case Purpose::http: return "agent-mesh/v1/http\n";
  }
  identity_misuse("signature_prefix: unknown Purpose value");
}

Bytes signing_input(Purpose purpose, ByteView message) {
  const std::string_view prefix = signature_prefix(purpose);
  Bytes input;
  input.reserve(prefix.size() + message.size());
  input.insert(input.end(), prefix.begin(), prefix.end());
  input.insert(input.end(), message.begin(), message.end());
  return input;
}

// ---- AgentId ----

Result<AgentId> AgentId::parse(std::string_view text) {
  // The length check comes first so nothing of an arbitrarily long hostile string is ever
  // processed or echoed; the decoder's messages quote at most one character.
  if (text.size() != kAgentIdChars) {
    return fail(Errc::bad_request,
                "agent ID must be 43 characters, got " + std::to_string(text.size()));
  }
  AgentId id;
  if (auto decoded = base64url_decode_exact(text, id.key_); !decoded.ok()) {
    return fail(Errc::bad_request, "agent ID is not canonical base64url: " + decoded.error().message);
  }
  if (!is_valid_agent_key(id.key_)) return invalid_point_error();
  // The decoder is canonical, so `text` is the one encoding of the key (protocol §1).
  id.text_ = std::string(text);
  return id;
}

Result<AgentId> AgentId::from_public_key(ByteView public_key) {
  AgentId id;
  if (public_key.size() != id.key_.size()) {
    return fail(Errc::bad_request, "agent ID public key must be 32 bytes, got " +
                                       std::to_string(public_key.size()));
  }
  std::memcpy(id.key_.data(), public_key.data(), id.key_.size());
  if (!is_valid_agent_key(id.key_)) return invalid_point_error();
  id.text_ = base64url_encode(id.key_);
  return id;
}

X25519Key AgentId::x25519_public() const {
  detail::ensure_sodium();
  X25519Key out{};
  // Fails only for small-order or non-canonical keys, which parse() never accepts: reaching it
  // means the ID is empty (default-constructed), a programming error.
  if (crypto_sign_ed25519_pk_to_curve25519(out.data(), key_.data()) != 0) {
    identity_misuse("x25519_public() on an empty or invalid agent ID");
  }
  return out;
}

// ---- Verification (protocol §1: libsodium's verdicts, length checked first) ----

bool ed25519_verify(ByteView public_key, ByteView signed_bytes, ByteView signature) noexcept {
  // crypto_sign_verify_detached reads exactly 64 signature bytes and 32 key bytes whatever it is
  // given, so other lengths must be refused here, before libsodium sees them.
  if (signature.size() != crypto_sign_BYTES) return false;
  if (public_key.size() != crypto_sign_PUBLICKEYBYTES) return false;
  detail::ensure_sodium();
  return crypto_sign_verify_detached(signature.data(), data_or_empty(signed_bytes),
                                     signed_bytes.size(), public_key.data()) == 0;
}

Status verify_signature(const AgentId& signer, Purpose purpose, ByteView message,
                        ByteView signature) {
  if (signature.size() != crypto_sign_BYTES) {
    return fail(Errc::bad_request,
                "signature must be 64 bytes, got " + std::to_string(signature.size()));
  }
  if (signer.empty()) return fail(Errc::bad_request, "signature has no signer (empty agent ID)");
  if (!ed25519_verify(signer.public_key(), signing_input(purpose, message), signature)) {
    return fail(Errc::bad_request, "signature does not verify");
  }
  return {};
}

// ---- X25519 (protocol §1) ----

Result<X25519Key> x25519(const X25519Key& secret, const X25519Key& public_key) {
  detail::ensure_sodium();
  X25519Key shared{};
  // libsodium returns -1 for small-order points and all-zero output; the explicit zero check
  // keeps protocol §1's rule ("a DH whose output is all zeros aborts") independent of that.
  const bool failed = crypto_scalarmult(shared.data(), secret.data(), public_key.data()) != 0;
  if (failed || sodium_is_zero(shared.data(), shared.size()) == 1) {
    sodium_memzero(shared.data(), shared.size());
    return fail(Errc::bad_request,
                "X25519 shared secret is all zeros (low-order public key); handshake aborted");
  }
  return shared;
}

// ---- Keyed hashing ----

std::size_t keyed_hash(ByteView bytes) noexcept {
  // One random SipHash key per process, created on first use (thread-safe: a function-local
  // static). It only has to be unpredictable to remote clients choosing agent IDs.
  static const std::array<std::uint8_t, crypto_shorthash_KEYBYTES> key = [] {
    detail::ensure_sodium();
    std::array<std::uint8_t, crypto_shorthash_KEYBYTES> fresh{};
    randombytes_buf(fresh.data(), fresh.size());
    return fresh;
  }();
  std::array<std::uint8_t, crypto_shorthash_BYTES> digest{};
  if (crypto_shorthash(digest.data(), data_or_empty(bytes), bytes.size(), key.data()) != 0) {
    identity_misuse("crypto_shorthash failed");
  }
  std::uint64_t value = 0;
  static_assert(sizeof value == crypto_shorthash_BYTES);
  std::memcpy(&value, digest.data(), sizeof value);
  return static_cast<std::size_t>(value);
}

// ---- KeyPair ----

KeyPair::KeyPair(const KeyPair& other) : secret_(other.secret_), id_(other.id_) {}

KeyPair& KeyPair::operator=(const KeyPair& other) {
  if (this != &other) {
    sodium_memzero(secret_.data(), secret_.size());
    secret_ = other.secret_;
    id_ = other.id_;
  }
  return *this;
}

KeyPair::~KeyPair() { sodium_memzero(secret_.data(), secret_.size()); }

namespace {
// Every key pair libsodium derives from a seed has a prime-order public key (the clamped scalar
// times the base point), so from_public_key cannot refuse it: if it does, the library is broken.
AgentId agent_id_of_derived_key(const PublicKey& public_key) {
  auto id = AgentId::from_public_key(public_key);
  if (!id.ok()) identity_misuse("libsodium derived a public key that is not a valid agent ID");
  return std::move(id).value();
}
}  // namespace

KeyPair KeyPair::generate() {
  detail::ensure_sodium();
  KeyPair pair;
  PublicKey public_key{};
  if (crypto_sign_keypair(public_key.data(), pair.secret_.data()) != 0) {
    identity_misuse("crypto_sign_keypair failed");
  }
  pair.id_ = agent_id_of_derived_key(public_key);
  return pair;
}

Result<KeyPair> KeyPair::from_seed(ByteView seed) {
  if (seed.size() != kSeedBytes) {
    return fail(Errc::bad_request, "Ed25519 seed must be 32 bytes, got " + std::to_string(seed.size()));
  }
  detail::ensure_sodium();
  KeyPair pair;
  PublicKey public_key{};
  if (crypto_sign_seed_keypair(public_key.data(), pair.secret_.data(), seed.data()) != 0) {
    identity_misuse("crypto_sign_seed_keypair failed");
  }
  pair.id_ = agent_id_of_derived_key(public_key);
  return pair;
}

Result<KeyPair> KeyPair::from_key_file_text(std::string_view text) {
  // protocol §2: exactly 43 base64url characters of the seed, optionally followed by one "\n".
  // Each departure gets its own message; none of them quotes the file, which holds a secret.
  std::string_view body = text;
  if (!body.empty() && body.back() == '\n') body.remove_suffix(1);
  if (body.find('\r') != std::string_view::npos) {
    return fail(Errc::bad_request,
                "key file contains a carriage return (CRLF line ending?); it must be 43 base64url "
                "characters, optionally followed by one \"\\n\"");
  }
  if (body.find('\n') != std::string_view::npos) {
    return fail(Errc::bad_request,
                "key file has more than one line; it must be 43 base64url characters, optionally "
                "followed by exactly one \"\\n\"");
  }
  if (body.find_first_of(" \t\v\f") != std::string_view::npos) {
    return fail(Errc::bad_request,
                "key file contains spaces or tabs; it must be exactly 43 base64url characters");
  }
  if (body.find('=') != std::string_view::npos) {
    return fail(Errc::bad_request, "key file must not use base64 padding ('=')");
  }
  if (body.size() != kSeedChars) {
    return fail(Errc::bad_request,
                "key file must hold 43 base64url characters (optionally followed by one \"\\n\"), "
                "got " + std::to_string(body.size()) + " characters");
  }
  for (const char c : body) {
    const bool in_alphabet = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                             (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!in_alphabet) {
      return fail(Errc::bad_request,
                  "key file contains a character outside the base64url alphabet (A-Z a-z 0-9 - _; "
                  "standard base64's '+' and '/' are not accepted)");
    }
  }
  std::array<std::uint8_t, kSeedBytes> seed{};
  const WipeOnExit wipe_seed(seed);
  // Length and alphabet are checked, so the only failure left is non-zero unused trailing bits:
  // a lenient decoder would return the same seed for a second spelling (protocol §1).
  if (!base64url_decode_exact(body, seed).ok()) {
    return fail(Errc::bad_request,
                "key file is not canonical base64url (non-zero unused trailing bits)");
  }
  return from_seed(seed);
}

Result<KeyPair> KeyPair::load(const std::filesystem::path& path) {
  // Symbolic links are followed, as ssh does for identity files; the checks below apply to the
  // file finally opened (fstat on the descriptor, so nothing can be swapped in between).
  // O_NONBLOCK keeps open() from hanging on a FIFO; it has no effect on regular files.
  const std::string shown = path.string();
  const FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd.valid()) {
    const int error_number = errno;
    if (error_number == ENOENT) {
      return fail(Errc::not_found, "key file " + shown + " does not exist");
    }
    return fail(Errc::internal, "cannot open key file " + shown + ": " + describe_errno(error_number));
  }
  struct stat status {};
  if (::fstat(fd.get(), &status) != 0) {
    return fail(Errc::internal, "cannot stat key file " + shown + ": " + describe_errno(errno));
  }
  if (!S_ISREG(status.st_mode)) {
    return fail(Errc::bad_request, "key file " + shown + " is not a regular file");
  }
  // protocol §2: a key file readable by group or others is refused, saying how to fix it.
  if ((status.st_mode & 077) != 0) {
    const char* exposure = (status.st_mode & 044) != 0 ? "readable" : "accessible";
    return fail(Errc::bad_request, "key file " + shown + " is " + exposure +
                                       " by group or others (mode " + octal_mode(status.st_mode) +
                                       "); run: chmod 600 " + shell_quoted(shown));
  }
  if (status.st_size < 0 || static_cast<std::uintmax_t>(status.st_size) > limits::max_key_file_bytes) {
    return fail(Errc::bad_request, "key file " + shown + " is too large (" +
                                       std::to_string(status.st_size) +
                                       " bytes); a key file is 43 base64url characters and a newline");
  }

  // Read at most one byte more than the bound, so a file that grew after fstat is still caught.
  std::array<char, limits::max_key_file_bytes + 1> buffer{};
  const WipeOnExit wipe_buffer(buffer);
  std::size_t length = 0;
  while (length < buffer.size()) {
    const ssize_t got = ::read(fd.get(), buffer.data() + length, buffer.size() - length);
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return fail(Errc::internal, "cannot read key file " + shown + ": " + describe_errno(errno));
    }
    if (got == 0) break;
    length += static_cast<std::size_t>(got);
  }
  if (length > limits::max_key_file_bytes) {
    return fail(Errc::bad_request, "key file " + shown + " is too large");
  }
  auto pair = from_key_file_text(std::string_view(buffer.data(), length));
  if (!pair.ok()) {
    Error error = std::move(pair).error();
    error.message = "key file " + shown + ": " + error.message;
    return error;
  }
  return pair;
}

Status KeyPair::save(const std::filesystem::path& path) const {
  std::string text = key_file_text();
  const WipeOnExit wipe_text(text);
  return write_private_file(path, text);
}

Status write_private_file(const std::filesystem::path& path, std::string_view text) {
  detail::ensure_sodium();
  if (path.filename().empty()) {
    return fail(Errc::internal, "cannot save " + path.string() + ": not a file name");
  }
  const std::filesystem::path directory =
      path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  AGENT_MESH_TRY(create_private_directories(directory));

  const std::filesystem::path temporary = temporary_path_for(path);
  const std::string temporary_shown = temporary.string();
  // O_EXCL|O_NOFOLLOW: the temporary is always a new file of ours, never something planted there.
  FileDescriptor fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    return fail(Errc::internal, "cannot create " + temporary_shown + ": " + describe_errno(errno));
  }
  // From here on, any failure removes the temporary file.
  const auto abandon = [&](Error error) -> Status {
    if (fd.valid()) (void)fd.close_now();
    ::unlink(temporary.c_str());
    return error;
  };

  // The umask can only narrow 0600, but an odd one (e.g. 0277) would leave a file we could not
  // rewrite later: set the mode explicitly.
  if (::fchmod(fd.get(), 0600) != 0) {
    return abandon(fail(Errc::internal, "cannot set mode 0600 on " + temporary_shown + ": " +
                                            describe_errno(errno)));
  }
  if (auto written = write_all(fd.get(), text, temporary_shown); !written.ok()) {
    return abandon(std::move(written).error());
  }
  if (::fsync(fd.get()) != 0) {
    return abandon(fail(Errc::internal, "cannot sync " + temporary_shown + ": " + describe_errno(errno)));
  }
  if (fd.close_now() != 0) {
    return abandon(fail(Errc::internal, "cannot close " + temporary_shown + ": " + describe_errno(errno)));
  }
  // rename() replaces the target atomically: readers see the old file or the new one.
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    return abandon(fail(Errc::internal, "cannot rename " + temporary_shown + " to " + path.string() +
                                            ": " + describe_errno(errno)));
  }
  // Make the rename itself durable.
  return fsync_directory(directory);
}

std::string KeyPair::key_file_text() const {
  std::string encoded = base64url_encode(ByteView(secret_.data(), kSeedBytes));
  const WipeOnExit wipe_encoded(encoded);
  // Reserve first so appending the newline never reallocates (and so never frees an unwiped copy).
  std::string text;
  text.reserve(kSeedChars + 1);
  text.append(encoded);
  text.push_back('\n');
  return text;
}

Signature KeyPair::sign(Purpose purpose, ByteView message) const {
  detail::ensure_sodium();
  const Bytes input = signing_input(purpose, message);
  Signature signature{};
  if (crypto_sign_detached(signature.data(), nullptr, data_or_empty(input), input.size(),
                           secret_.data()) != 0) {
    identity_misuse("crypto_sign_detached failed");
  }
  return signature;
}

X25519Key KeyPair::x25519_secret() const {
  detail::ensure_sodium();
  X25519Key out{};
  if (crypto_sign_ed25519_sk_to_curve25519(out.data(), secret_.data()) != 0) {
    identity_misuse("crypto_sign_ed25519_sk_to_curve25519 failed");
  }
  return out;
}

}  // namespace agent_mesh
