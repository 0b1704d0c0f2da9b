// Boost.URL's implementation, compiled once for the whole project (no libboost_url link), like
// Boost.JSON in src/core/boost_json.cpp, so sanitizer builds instrument it too.
#include <boost/url/src.hpp>
