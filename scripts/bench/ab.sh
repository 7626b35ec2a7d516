#!/usr/bin/env bash
# Compares two builds of Switchyard on the embedded store, alternated, on one data dir (a key with
# limits, two accounts on the mock upstream: scripts/bench/lib.sh's setup, as in scripts/bench.sh):
#
#   scripts/bench/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
#
# - instructions per request (valgrind's cachegrind; the difference between 200 and 2,200
#   requests, so that start-up cancels out) for the small JSON body, the small streamed one and
#   the 76 KB Claude Code body (AB_BODIES="small cc" keeps to some of them);
# - instructions per request under load (cachegrind again, the small JSON body from wrk at 64
#   connections, the difference between a run of 8 s and one of 24 s): the allocator's work with
#   64 requests in flight, which one request at a time does not show (AB_LOADED=0 skips it);
# - 4 MB JSON answers at 32 connections for 8 s (wrk): requests, CPU per request, peak RSS.
#
# Build the old one first, e.g. `git worktree add /tmp/old <rev>` and
# `CARGO_TARGET_DIR=/tmp/old-target cargo build --release --bin switchyard` there. Needs valgrind,
# wrk, curl and python3, and target/release/mock-upstream (cargo build --release --bins).
# Everything listens on 127.0.0.1; every run is bounded.
set -euo pipefail

[[ $# -ge 2 ]] || { sed -n '2,15p' "$0"; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
declare -A BIN=([old]=$1 [new]=$2)
ROUNDS=${3:-2}
MOCK=$ROOT/target/release/mock-upstream
[[ -x $MOCK ]] || { echo "build $MOCK first: cargo build --release --bins" >&2; exit 1; }
for tool in valgrind wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/switchyard-ab.XXXXXX)
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

# mock NAME CHUNKS: a mock upstream whose JSON answer carries CHUNKS x 45 bytes of text.
declare -A MOCK_URL=()
mock() {
  local port
  port=$(free_port)
  "$MOCK" --listen "127.0.0.1:$port" --chunks "$2" >"$WORK/mock-$1.log" 2>&1 &
  PIDS+=("$!")
  MOCK_URL[$1]=http://127.0.0.1:$port
  wait_url "${MOCK_URL[$1]}/stats" "$!" || { echo "the mock did not start" >&2; exit 1; }
}
mock small 10
mock big 93000

# setup NAME: a data dir with the key and the accounts, made by the new binary.
setup() {
  local dir=$WORK/$1 port pid admin=ab-admin-token-0123456789
  mkdir -p "$dir/data"
  port=$(free_port)
  cat >"$dir/config.toml" <<EOF
listen = "127.0.0.1:$port"
data_dir = "$dir/data"
store = "embedded"
admin_token = "$admin"
master_key = "$(python3 -c 'import secrets; print(secrets.token_hex(32))')"

[log]
level = "warn"
EOF
  "${BIN[new]}" --config "$dir/config.toml" serve >"$dir/setup.log" 2>&1 &
  pid=$!
  wait_url "http://127.0.0.1:$port/health" "$pid" || { cat "$dir/setup.log" >&2; exit 1; }
  relay_setup "http://127.0.0.1:$port" "$admin" "${MOCK_URL[$1]}" >"$dir/key" ||
    { echo "could not set up $1" >&2; exit 1; }
  kill "$pid"
  wait "$pid" || true
}
setup small
setup big

# start WHICH DIR [valgrind args...]: the binary on a copy of DIR's data dir; sets PORT and PID.
start() {
  local which=$1 dir=$WORK/$2 run
  shift 2
  run=$(mktemp -d "$WORK/run.XXXX")
  cp -r "$dir/data" "$run/data"
  PORT=$(free_port)
  sed -e "s#^listen = .*#listen = \"127.0.0.1:$PORT\"#" -e "s#^data_dir = .*#data_dir = \"$run/data\"#" \
    "$dir/config.toml" >"$run/config.toml"
  "$@" "${BIN[$which]}" --config "$run/config.toml" serve >"$run/log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
  wait_url "http://127.0.0.1:$PORT/health" "$PID" || { cat "$run/log" >&2; exit 1; }
}

# count WHICH BODY N: instructions for N requests.
count() {
  start "$1" small valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$WORK/cg.out"
  python3 "$ROOT/scripts/bench/client.py" count --target "http://127.0.0.1:$PORT/v1/messages" \
    --body "$WORK/bodies/$2.json" --requests "$3" --header "x-api-key: $(cat "$WORK/small/key")" \
    --header "anthropic-version: 2023-06-01" >/dev/null
  kill "$PID"
  wait "$PID" || true
  awk '/^summary:/ {print $2}' "$WORK/cg.out"
}

# loaded WHICH SECS: "REQUESTS INSTRUCTIONS" for a 2 s warm-up and SECS at 64 connections.
loaded() {
  start "$1" small valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$WORK/cg.out"
  for secs in 2 "$2"; do
    BENCH_BODY=$WORK/bodies/small.json BENCH_KEY=$(cat "$WORK/small/key") \
      wrk -t2 -c64 -d"${secs}s" --timeout 10s -s "$ROOT/scripts/bench/post.lua" \
      "http://127.0.0.1:$PORT/v1/messages" | sed -n 's/^BENCH_JSON //p' >"$WORK/wrk-$secs.json"
  done
  kill "$PID"
  wait "$PID" || true
  python3 -c 'import json, sys; print(sum(json.load(open(f))["requests"] for f in sys.argv[1:]), end=" ")' \
    "$WORK/wrk-2.json" "$WORK/wrk-$2.json"
  awk '/^summary:/ {print $2}' "$WORK/cg.out"
}

# big WHICH: 4 MB JSON answers, 32 connections, 8 s.
big() {
  local u0 s0 u1 s1 out
  start "$1" big
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$PID/stat")
  out=$(BENCH_BODY=$WORK/bodies/small.json BENCH_KEY=$(cat "$WORK/big/key") \
    wrk -t2 -c32 -d8s -s "$ROOT/scripts/bench/post.lua" "http://127.0.0.1:$PORT/v1/messages" |
    sed -n 's/^BENCH_JSON //p')
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$PID/stat")
  python3 - "$out" "$((u1 + s1 - u0 - s0))" "$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")" <<'EOF'
import json, os, sys
r, ticks, hwm = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
errors = r["status_errors"] + r["read_errors"] + r["connect_errors"] + r["timeouts"]
ms = ticks * 1000 / os.sysconf("SC_CLK_TCK") / max(r["requests"], 1)
print(f"{r['requests']} requests, {errors} errors, {ms:.2f} ms CPU per request, peak RSS {hwm // 1024} MiB")
EOF
  kill "$PID"
  wait "$PID" || true
}

for round in $(seq "$ROUNDS"); do
  for which in old new; do
    for body in ${AB_BODIES:-small small-stream cc}; do
      few=$(count "$which" "$body" 200)
      many=$(count "$which" "$body" 2200)
      echo "round $round, $which, $body: $(((many - few) / 2000)) instructions per request"
    done
    if [[ ${AB_LOADED:-1} != 0 ]]; then
      read -r n0 i0 < <(loaded "$which" 8)
      read -r n1 i1 < <(loaded "$which" 24)
      echo "round $round, $which, small at 64 connections: $(((i1 - i0) / (n1 - n0))) instructions per request ($n0 and $n1 requests)"
    fi
    echo "round $round, $which, 4 MB JSON answers: $(big "$which")"
  done
done
