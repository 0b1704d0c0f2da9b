# Every third-party dependency comes from Debian packages installed by scripts/setup.
find_package(PkgConfig REQUIRED)
pkg_check_modules(SODIUM REQUIRED IMPORTED_TARGET libsodium)

# Boost 1.81 headers (Debian's libboost1.81-dev), never the 1.74 default. Boost.JSON, Asio and
# Beast are compiled from their headers once each inside our own targets (src/core/boost_json.cpp,
# src/net/), so sanitizer and fuzzer builds instrument them too.
find_package(Boost 1.81.0 EXACT CONFIG REQUIRED COMPONENTS headers)

if(NOT AGENT_MESH_FUZZ AND AGENT_MESH_TESTS)
  find_package(GTest CONFIG REQUIRED)
endif()
if(NOT AGENT_MESH_FUZZ AND AGENT_MESH_BENCH)
  find_package(benchmark CONFIG REQUIRED)
endif()
