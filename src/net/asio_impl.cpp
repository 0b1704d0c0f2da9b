// Boost.Asio's implementation (with its OpenSSL layer), compiled once for the whole project.
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
