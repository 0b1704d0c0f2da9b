# The MCP adapter (`agent-meshctl mcp-server`, cli-mcp-web.md "MCP adapter") checked with the official
# MCP TypeScript SDK client and the MCP Inspector CLI (tests/mcp/package.json, installed by `npm ci`
# in scripts/setup). Included from tests/CMakeLists.txt inside `if(TARGET agent-meshctl)`.
# Labelled `mcp` only: the sanitizer stages of scripts/test run `-L integration` in build directories
# where agent-meshctl is not built. One ctest per test file, so a failure names its file; each file
# starts its own agent-mesh-server, meshds and echo agents on loopback port 0.
find_program(AGENT_MESH_NODE node)
if(AGENT_MESH_NODE AND TARGET agent-mesh-server AND TARGET agent-meshd)
  set(mcp_dir ${PROJECT_SOURCE_DIR}/tests/mcp)
  set(mcp_bin_dirs
      "$<TARGET_FILE_DIR:agent-meshctl>:$<TARGET_FILE_DIR:agent-mesh-server>:$<TARGET_FILE_DIR:agent-meshd>")
  foreach(mcp_test sdk_stdio sdk_http http_raw inspector_readme)
    add_test(NAME mcp_${mcp_test}
             COMMAND ${AGENT_MESH_NODE} --test --test-concurrency=1 ${mcp_dir}/${mcp_test}.test.mjs
             WORKING_DIRECTORY ${mcp_dir})
    set_tests_properties(mcp_${mcp_test} PROPERTIES
                         LABELS "mcp"
                         TIMEOUT 300
                         ENVIRONMENT "AGENT_MESH_BIN_DIR=${mcp_bin_dirs};AGENT_MESH_REPO=${PROJECT_SOURCE_DIR}")
  endforeach()
endif()
