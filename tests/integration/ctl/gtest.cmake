# agent-meshctl's GoogleTest integration tests (included from tests/CMakeLists.txt): the real
# agent-meshctl binary run as a child process (its own MESH_HOME, args, environment and stdin; exit
# status, stdout and stderr checked separately) against a real agent-mesh-server, agent-meshd and
# scripts/echo_server.py, plus tests/support/github-standin.mjs for the OAuth device flow.
# Modelled on the meshd integration tests (tests/CMakeLists.txt, `foreach(component sdk meshd)`).
if(TARGET agent-meshctl)
  file(GLOB agent_mesh_ctl_integration_sources CONFIGURE_DEPENDS
       ${PROJECT_SOURCE_DIR}/tests/integration/ctl/*_test.cpp)
  if(agent_mesh_ctl_integration_sources)
    set(target agent_mesh_ctl_integration_tests)
    add_executable(${target} ${agent_mesh_ctl_integration_sources})
    # agent_mesh_integration_support brings ChildProcess/binary_path (AGENT_MESH_BIN_DIR) and agent_mesh_core;
    # the registry fixture (integration/registry/registry_fixture.hpp) signs cards and agent requests.
    target_link_libraries(${target} PRIVATE agent_mesh_integration_support agent_mesh_registry agent_mesh_http_client
                          GTest::gtest GTest::gtest_main)
    target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/tests/integration)
    target_compile_definitions(${target} PRIVATE
                               AGENT_MESH_SCRIPTS_DIR="${PROJECT_SOURCE_DIR}/scripts"
                               AGENT_MESH_TEST_SUPPORT_DIR="${PROJECT_SOURCE_DIR}/tests/support"
                               AGENT_MESH_CTL_BINARY="$<TARGET_FILE:agent-meshctl>"
                               AGENT_MESH_SERVER_BINARY="$<TARGET_FILE:agent-mesh-server>")
    add_dependencies(${target} agent-meshctl agent-mesh-server)
    if(TARGET agent-meshd)
      add_dependencies(${target} agent-meshd)
      target_compile_definitions(${target} PRIVATE AGENT_MESH_MESHD_BINARY="$<TARGET_FILE:agent-meshd>")
    endif()
    gtest_discover_tests(${target} DISCOVERY_TIMEOUT 60)
    agent_mesh_label_discovered_tests(${target} "integration;ctl")
  endif()
endif()
