# web/ (label `web`; not `integration`: the sanitizer stages run `-L integration` without these):
#   web_client_unit    the TypeScript client's vectors and unit tests (web/client/test, vitest)
#   web_app_unit       the web UI's controller logic (web/app/test, vitest): sessions, incoming
#                      chats, grants and discovery against a scripted registry and the FakeRelay
#   web_client_dist    the library built to plain ES modules (client/dist) loads and works in Node
#   web_typecheck      tsc over client, app and e2e
#   web_ui_build       rebuilds web/app/dist from the sources (a fixture: the e2e test never sees a
#                      stale build)
#   web_e2e_chromium   web/e2e/chat.e2e.mjs (node:test): `mesh-demo --serve` on port 0 serving the UI,
#                      Debian's chromium driven headless by playwright-core, and the device-flow
#                      login against agent-mesh-server with the GitHub stand-in (tests/support).
#                      Without /usr/bin/chromium it is reported as skipped (exit 77) with the reason;
#                      scripts/setup installs chromium. Screenshots: <build>/test-artifacts/web/.
# web_client_interop (the client against the C++ binaries) is in tests/interop/CMakeLists.txt.
find_program(AGENT_MESH_NODE node)
find_program(AGENT_MESH_NPM npm)
if(AGENT_MESH_NODE AND AGENT_MESH_NPM AND TARGET mesh-demo AND TARGET agent-mesh-server)
  set(web_dir ${PROJECT_SOURCE_DIR}/web)
  # The TypeScript client's vectors and units (web/client/test), and the whole web/ tree type-checked.
  add_test(NAME web_client_unit
           COMMAND ${AGENT_MESH_NODE} ${web_dir}/node_modules/vitest/vitest.mjs run --config client/vitest.config.ts client/test
           WORKING_DIRECTORY ${web_dir})
  set_tests_properties(web_client_unit PROPERTIES LABELS "web" TIMEOUT 300)
  add_test(NAME web_app_unit
           COMMAND ${AGENT_MESH_NODE} ${web_dir}/node_modules/vitest/vitest.mjs run --config app/vitest.config.ts
           WORKING_DIRECTORY ${web_dir})
  set_tests_properties(web_app_unit PROPERTIES LABELS "web" TIMEOUT 120)
  add_test(NAME web_client_dist COMMAND sh -c "${AGENT_MESH_NPM} run build:client --silent && ${AGENT_MESH_NODE} client/dist_smoke.mjs"
           WORKING_DIRECTORY ${web_dir})
  set_tests_properties(web_client_dist PROPERTIES LABELS "web" TIMEOUT 300)
  add_test(NAME web_typecheck COMMAND ${AGENT_MESH_NODE} ${web_dir}/node_modules/typescript/bin/tsc -p tsconfig.json --noEmit
           WORKING_DIRECTORY ${web_dir})
  set_tests_properties(web_typecheck PROPERTIES LABELS "web" TIMEOUT 300)

  add_test(NAME web_ui_build COMMAND ${AGENT_MESH_NPM} run build --silent WORKING_DIRECTORY ${web_dir})
  set_tests_properties(web_ui_build PROPERTIES LABELS "web" TIMEOUT 180 FIXTURES_SETUP web_ui_dist)

  add_test(NAME web_e2e_chromium COMMAND ${AGENT_MESH_NODE} ${web_dir}/e2e/chat.e2e.mjs WORKING_DIRECTORY ${web_dir})
  set_tests_properties(web_e2e_chromium PROPERTIES
                       LABELS "web"
                       TIMEOUT 180
                       SKIP_RETURN_CODE 77
                       FIXTURES_REQUIRED web_ui_dist
                       ENVIRONMENT "AGENT_MESH_BIN_DIR=$<TARGET_FILE_DIR:mesh-demo>:$<TARGET_FILE_DIR:agent-mesh-server>;AGENT_MESH_WEB_ROOT=${web_dir}/app/dist;AGENT_MESH_TEST_ARTIFACTS=${CMAKE_BINARY_DIR}/test-artifacts/web")
endif()
