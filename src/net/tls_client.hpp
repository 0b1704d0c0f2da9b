// TLS client set-up shared by the network layer's clients (http_client.cpp, the SDK's relay link):
// a verifying context and the per-connection SNI and name check. Header-only on purpose: only
// translation units that already include Asio's SSL support include it.
#pragma once

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>

#include "agent_mesh/result.hpp"

namespace agent_mesh::net {

// Peer verification against the system store plus `ca_file` (PEM, optional), TLS 1.2 at least.
inline Result<std::shared_ptr<boost::asio::ssl::context>> make_tls_client_context(const std::string& ca_file) {
  namespace ssl = boost::asio::ssl;
  auto context = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION);
  boost::system::error_code ec;
  context->set_default_verify_paths(ec);
  if (ec) return fail(Errc::internal, "cannot load the system CA certificates: " + ec.message());
  if (!ca_file.empty()) {
    context->load_verify_file(ca_file, ec);
    if (ec) return fail(Errc::bad_request, "cannot load CA file " + ca_file + ": " + ec.message());
  }
  context->set_verify_mode(ssl::verify_peer);
  return context;
}

// SNI (names only, RFC 6066 §3) and the certificate's name/IP check, done by OpenSSL during the
// handshake so a mismatch fails it. `host` is a name or an address (IPv6 without brackets).
inline Status prepare_tls_client(SSL* handle, const std::string& host, bool host_is_ip) {
  X509_VERIFY_PARAM* param = SSL_get0_param(handle);
  if (host_is_ip) {
    if (X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) != 1) {
      return fail(Errc::internal, "cannot set the expected certificate IP address");
    }
    return {};
  }
  if (SSL_set_tlsext_host_name(handle, host.c_str()) != 1) return fail(Errc::internal, "cannot set the TLS server name");
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size()) != 1) {
    return fail(Errc::internal, "cannot set the expected certificate host name");
  }
  return {};
}

}  // namespace agent_mesh::net
