#!/usr/bin/env bash
# The shipped systemd unit passes `systemd-analyze verify` (docs/self-hosting.md). verify also
# checks that ExecStart's binary exists, so the unit is checked with the binary just built.
set -euo pipefail
unit=$1
binary=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/local/bin/agent-mesh-server|$binary|" "$unit" > "$tmp/agent-mesh-server.service"
if ! output=$(systemd-analyze verify "$tmp/agent-mesh-server.service" 2>&1) || [[ -n $output ]]; then
  echo "systemd-analyze verify failed:" >&2
  echo "$output" >&2
  exit 1
fi
echo "systemd unit verified"
