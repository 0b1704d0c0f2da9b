# Compiler settings for our own code. Third-party headers are included as SYSTEM so that
# -Werror applies to what we write only.
set(AGENT_MESH_WARNINGS -Wall -Wextra -Werror -Wshadow -Wnon-virtual-dtor -Wcast-align
    -Woverloaded-virtual -Wimplicit-fallthrough)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # g++ 12 reports false positives in std::variant/optional code at -O2 (GCC bug 105562, 107138).
  list(APPEND AGENT_MESH_WARNINGS -Wno-maybe-uninitialized -Wno-array-bounds -Wno-stringop-overflow)
endif()

add_library(agent_mesh_options INTERFACE)
target_compile_options(agent_mesh_options INTERFACE ${AGENT_MESH_WARNINGS})
target_compile_definitions(agent_mesh_options INTERFACE
    BOOST_JSON_NO_LIB BOOST_ASIO_NO_DEPRECATED BOOST_ASIO_SEPARATE_COMPILATION
    BOOST_BEAST_SEPARATE_COMPILATION)

if(AGENT_MESH_SANITIZE)
  add_compile_options(-fsanitize=${AGENT_MESH_SANITIZE} -fno-omit-frame-pointer
                      -fno-sanitize-recover=all)
  if(AGENT_MESH_SANITIZE MATCHES "thread" AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # Asio's fenced blocks use std::atomic_thread_fence, which g++ warns TSan cannot model.
    add_compile_options(-Wno-tsan)
  endif()
  add_link_options(-fsanitize=${AGENT_MESH_SANITIZE})
endif()

# agent_mesh_add_library(NAME SOURCES...) — a component library with our warnings.
function(agent_mesh_add_library name)
  add_library(${name} STATIC ${ARGN})
  target_link_libraries(${name} PUBLIC agent_mesh_options)
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR}/include
                                     PRIVATE ${PROJECT_SOURCE_DIR}/src)
endfunction()

# agent_mesh_add_app(NAME SOURCES...) — a thin main, installed to bin/.
function(agent_mesh_add_app name)
  add_executable(${name} ${ARGN})
  target_link_libraries(${name} PRIVATE agent_mesh_options)
  install(TARGETS ${name} RUNTIME DESTINATION bin)
endfunction()
