#!/usr/bin/env bash
# Checks `agent-meshctl completion bash|zsh|fish` (cli-mcp-web.md "meshctl").
#
#   tests/integration/ctl/completion_test.sh BIN      (BIN: the agent-meshctl binary)
#
# bash: the script is sourced into a fresh non-interactive `bash --noprofile --norc`, once with plain
# builtins and once more after /usr/share/bash-completion/bash_completion where that is installed;
# `complete -p agent-meshctl` must name a function (-F), and calling it as bash would must complete
# `agent-meshctl ac` to `acl` and `agent-meshctl acl ` to `add list remove`; sourcing prints nothing.
# zsh and fish: exit 0 with output, syntax-checked with `zsh -n` / `fish -n` where installed
# (skipped otherwise). An unknown shell (`tcsh`) and a missing one are usage errors: exit 2, a
# message on stderr, nothing on stdout. Exit 0 when every check passed, 1 otherwise.
set -uo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 BIN" >&2
  exit 2
fi
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
# The completion may call the binary by name (dynamic completion): it is the one under test.
export PATH="$(dirname "$BIN"):$PATH"
BASH_COMPLETION_SCRIPT=/usr/share/bash-completion/bash_completion
COMMAND_TIMEOUT_S=10

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok:   $*"; }

# run NAME ARGS...: runs BIN ARGS with stdout/stderr in $work/NAME.{out,err}; sets $rc.
run() {
  local name=$1
  shift
  timeout "$COMMAND_TIMEOUT_S" "$BIN" "$@" >"$work/$name.out" 2>"$work/$name.err" </dev/null
  rc=$?
}
show() { echo "--- stdout:"; head -c 2000 "$work/$1.out"; echo "--- stderr:"; head -c 2000 "$work/$1.err"; }

# --- bash ---------------------------------------------------------------------------------------
run bash completion bash
if [ "$rc" -ne 0 ] || [ ! -s "$work/bash.out" ]; then
  fail "'agent-meshctl completion bash' exited $rc (want 0 with a script on stdout)"; show bash >&2
fi

# The check run inside a fresh bash; $1: a file to source first (or empty), $2: the script.
cat >"$work/check-bash.sh" <<'EOF'
[ -n "$1" ] && source "$1"
source "$2" 2>"$3" >>"$3"
spec=$(complete -p agent-meshctl 2>/dev/null) || { echo "complete -p agent-meshctl: not defined"; exit 1; }
func=$(sed -n 's/.*-F \([^ ]*\).*/\1/p' <<<"$spec")
[ -n "$func" ] || { echo "complete -p agent-meshctl is '$spec': no -F function"; exit 1; }
# complete WORDS...: calls the function as bash does, the last word being completed; prints COMPREPLY sorted.
complete_words() {
  COMP_WORDS=("$@")
  COMP_CWORD=$(($# - 1))
  COMP_LINE="$*"
  COMP_POINT=${#COMP_LINE}
  COMP_TYPE=9
  COMP_KEY=9
  COMPREPLY=()
  "$func" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}" </dev/null
  printf '%s\n' "${COMPREPLY[@]}" | sed 's/ *$//' | sort -u | paste -sd' '
}
status=0
got=$(complete_words agent-meshctl ac)
[ "$got" = "acl" ] || { echo "'agent-meshctl ac<TAB>' gave '$got', want 'acl'"; status=1; }
got=$(complete_words agent-meshctl acl "")
[ "$got" = "add list remove" ] || { echo "'agent-meshctl acl <TAB>' gave '$got', want 'add list remove'"; status=1; }
exit $status
EOF

check_bash() {  # $1: label, $2: file to source first or ""
  local out
  out=$(timeout "$COMMAND_TIMEOUT_S" env -u BASH_ENV -u ENV bash --noprofile --norc "$work/check-bash.sh" "$2" \
        "$work/bash.out" "$work/source-output" 2>&1)
  local status=$?
  if [ $status -ne 0 ]; then
    fail "bash completion ($1): $out"
  elif [ -s "$work/source-output" ]; then
    fail "bash completion ($1): sourcing the script printed: $(head -c 500 "$work/source-output")"
  else
    pass "bash completion ($1): ac -> acl; acl -> add list remove"
  fi
}
if [ -s "$work/bash.out" ]; then
  check_bash "plain bash builtins" ""
  if [ -f "$BASH_COMPLETION_SCRIPT" ]; then
    check_bash "with bash-completion" "$BASH_COMPLETION_SCRIPT"
  else
    echo "skip: $BASH_COMPLETION_SCRIPT not installed (bash-completion)"
  fi
fi

# --- zsh and fish -------------------------------------------------------------------------------
for shell in zsh fish; do
  run "$shell" completion "$shell"
  if [ "$rc" -ne 0 ] || [ ! -s "$work/$shell.out" ]; then
    fail "'agent-meshctl completion $shell' exited $rc (want 0 with a script on stdout)"; show "$shell" >&2
    continue
  fi
  pass "'agent-meshctl completion $shell' exits 0 with a script"
  if command -v "$shell" >/dev/null; then
    if err=$(timeout "$COMMAND_TIMEOUT_S" "$shell" -n "$work/$shell.out" 2>&1); then
      pass "$shell -n accepts the $shell script"
    else
      fail "$shell -n rejects the $shell script: $err"
    fi
  else
    echo "skip: $shell not installed, its script's syntax is not checked"
  fi
done

# --- usage errors -------------------------------------------------------------------------------
check_usage() {  # $1: name, then the arguments
  local name=$1
  shift
  run "$name" "$@"
  if [ "$rc" -ne 2 ]; then
    fail "'agent-meshctl $*' exited $rc, want 2 (usage)"; show "$name" >&2
  elif [ -s "$work/$name.out" ] || [ ! -s "$work/$name.err" ]; then
    fail "'agent-meshctl $*': want nothing on stdout and a message on stderr"; show "$name" >&2
  else
    pass "'agent-meshctl $*' exits 2: $(head -n 1 "$work/$name.err")"
  fi
}
check_usage tcsh completion tcsh
check_usage noshell completion

if [ "$failures" -ne 0 ]; then
  echo "completion_test: $failures check(s) failed" >&2
  exit 1
fi
echo "completion_test: OK"
