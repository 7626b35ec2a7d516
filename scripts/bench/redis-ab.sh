#!/usr/bin/env bash
# Compares two builds of Switchyard on Redis: both run at once, each on a Redis server of its own
# (the same key with limits and two accounts on one mock upstream: scripts/bench/lib.sh's setup),
# and are loaded in turn, one at a time, at 64 connections with the small JSON body:
#
#   scripts/bench/redis-ab.sh OLD_BINARY NEW_BINARY
#
# Each run prints the build, requests per second, Redis commands per request (INFO commandstats)
# and the relay's CPU per request (scripts/bench/load.py). REDIS_AB_ORDER (default "old new new
# old" three times: the machine's drift cancels out) and REDIS_AB_SECONDS (default 12) change the
# runs. Build both first (`cargo build --release --bins`, and the old one in a worktree, as for
# scripts/bench/ab.sh); needs redis-server, wrk, curl and python3. Everything listens on
# 127.0.0.1; every run is bounded.
set -euo pipefail

[[ $# -eq 2 ]] || { sed -n '2,13p' "$0"; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
declare -A BIN=([old]=$1 [new]=$2)
ORDER=${REDIS_AB_ORDER:-old new new old old new new old old new new old}
SECONDS_PER_RUN=${REDIS_AB_SECONDS:-12}
MOCK=$ROOT/target/release/mock-upstream
[[ -x $MOCK ]] || { echo "build $MOCK first: cargo build --release --bins" >&2; exit 1; }
for tool in redis-server wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/switchyard-redis-ab.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=lib.sh
source "$ROOT/scripts/bench/lib.sh"
python3 "$ROOT/scripts/bench/bodies.py" "$WORK/bodies" >/dev/null

MOCK_PORT=$(free_port)
MOCK_URL=http://127.0.0.1:$MOCK_PORT
"$MOCK" --listen "127.0.0.1:$MOCK_PORT" --chunks 10 --input-tokens 1000 --output-tokens 100 \
  >"$WORK/mock.log" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
wait_url "$MOCK_URL/stats" "$MOCK_PID" || { echo "the mock did not start" >&2; exit 1; }

TOKEN=bench-admin-token-$(python3 -c 'import secrets; print(secrets.token_hex(12))')
declare -A PORT REDIS PID KEY
for which in old new; do
  REDIS[$which]=$(free_port)
  redis-server --port "${REDIS[$which]}" --bind 127.0.0.1 --save "" --appendonly no \
    >"$WORK/redis-$which.log" 2>&1 &
  PIDS+=($!)
  PORT[$which]=$(free_port)
  mkdir -p "$WORK/$which/data"
  cat >"$WORK/$which/config.toml" <<EOF
listen = "127.0.0.1:${PORT[$which]}"
data_dir = "$WORK/$which/data"
store = "redis://127.0.0.1:${REDIS[$which]}/0"
admin_token = "$TOKEN"
master_key = "$(python3 -c 'import secrets; print(secrets.token_hex(32))')"

[log]
level = "warn"
EOF
  sleep 0.5
  "${BIN[$which]}" --config "$WORK/$which/config.toml" serve >"$WORK/$which/switchyard.log" 2>&1 &
  PID[$which]=$!
  PIDS+=("${PID[$which]}")
  wait_url "http://127.0.0.1:${PORT[$which]}/health" "${PID[$which]}" ||
    { echo "$which did not start: $(tail -3 "$WORK/$which/switchyard.log")" >&2; exit 1; }
  KEY[$which]=$(relay_setup "http://127.0.0.1:${PORT[$which]}" "$TOKEN" "$MOCK_URL")
done

n=0
for which in $ORDER; do
  n=$((n + 1))
  python3 "$ROOT/scripts/bench/load.py" --url "http://127.0.0.1:${PORT[$which]}/v1/messages" \
    --body "$WORK/bodies/small.json" --key "${KEY[$which]}" --duration "$SECONDS_PER_RUN" \
    --connections 64 --mock-stats "$MOCK_URL/stats" --proxy-pid "${PID[$which]}" \
    --mock-pid "$MOCK_PID" --redis-port "${REDIS[$which]}" --out "$WORK/run-$n.json" >/dev/null
  python3 - "$WORK/run-$n.json" "$which" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}: {r['rps']} requests/s, {r['redis_commands_per_request']} Redis commands "
      f"per request, {r.get('proxy_cpu_us_per_request')} µs of relay CPU per request")
EOF
done
