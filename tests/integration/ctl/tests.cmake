# agent-meshctl's tests that are scripts, not C++ (included from tests/CMakeLists.txt):
#   ctl_readme_walkthrough   README.md's walkthrough block run literally (readme_walkthrough.py)
#   ctl_terminal             login and up in a real terminal under tmux (terminal_test.py)
#   ctl_completion           the bash/zsh/fish completion scripts (completion_test.sh)
# Labelled `ctl` only: the sanitizer stages of scripts/test run `-L integration` in build
# directories where agent-meshctl is not built.
# The Python scripts take a BIN_DIR (directories joined by ':') and the repository root.
if(TARGET agent-meshctl)
  find_package(Python3 COMPONENTS Interpreter)
  find_program(AGENT_MESH_TMUX tmux)
  find_program(AGENT_MESH_NODE node)
  set(ctl_bin_dirs
      "$<TARGET_FILE_DIR:agent-meshctl>:$<TARGET_FILE_DIR:agent-mesh-server>:$<TARGET_FILE_DIR:agent-meshd>")
  set(ctl_dir ${PROJECT_SOURCE_DIR}/tests/integration/ctl)

  if(Python3_Interpreter_FOUND AND TARGET agent-mesh-server AND TARGET agent-meshd)
    add_test(NAME ctl_readme_walkthrough
             COMMAND ${Python3_EXECUTABLE} ${ctl_dir}/readme_walkthrough.py ${ctl_bin_dirs} ${PROJECT_SOURCE_DIR})
    set_tests_properties(ctl_readme_walkthrough PROPERTIES LABELS "ctl" TIMEOUT 120)
  endif()

  if(Python3_Interpreter_FOUND AND AGENT_MESH_TMUX AND AGENT_MESH_NODE AND TARGET agent-mesh-server)
    add_test(NAME ctl_terminal
             COMMAND ${Python3_EXECUTABLE} ${ctl_dir}/terminal_test.py ${ctl_bin_dirs} ${PROJECT_SOURCE_DIR})
    set_tests_properties(ctl_terminal PROPERTIES LABELS "ctl" TIMEOUT 120)
  endif()

  add_test(NAME ctl_completion
           COMMAND bash ${ctl_dir}/completion_test.sh $<TARGET_FILE:agent-meshctl>)
  set_tests_properties(ctl_completion PROPERTIES LABELS "ctl" TIMEOUT 60)
endif()
