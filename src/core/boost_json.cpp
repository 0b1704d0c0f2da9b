// Boost.JSON's implementation, compiled once for the whole project (no libboost_json link).
#include <boost/json/src.hpp>
