# Sourced by the benchmark scripts: starts a fresh agent-mesh-relay on 127.0.0.1 with its rate limits
# raised (so they are not what is measured), sets RELAY_URL, and stops it on exit.
# Needs BUILD_DIR (absolute) and a die() function.
BENCH_TMP=$(mktemp -d)
RELAY_PID=""
bench_relay_cleanup() { [[ -n $RELAY_PID ]] && kill "$RELAY_PID" 2> /dev/null; wait 2> /dev/null; rm -rf "$BENCH_TMP"; }
trap bench_relay_cleanup EXIT
"$BUILD_DIR/apps/agent-mesh-relay" --listen 127.0.0.1:0 --data-dir "$BENCH_TMP/data" \
  --rate-limit 1000000000 --rate-burst 1000000000 --ip-connect-rate 1000000000 --ip-auth-failures 1000000000 \
  > "$BENCH_TMP/stdout" 2> "$BENCH_TMP/stderr" &
RELAY_PID=$!
bench_relay_line=""
for _ in $(seq 100); do
  bench_relay_line=$(head -n 1 "$BENCH_TMP/stdout" 2> /dev/null || true)
  [[ $bench_relay_line == listening* ]] && break
  kill -0 "$RELAY_PID" 2> /dev/null || break
  sleep 0.1
done
[[ $bench_relay_line == "listening http://127.0.0.1:"* ]] || { cat "$BENCH_TMP/stderr" >&2; die "the relay did not start"; }
RELAY_URL="ws://127.0.0.1:${bench_relay_line##*:}/relay/ws"
