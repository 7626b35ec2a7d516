#!/usr/bin/env bash
# Benchmarks Switchyard against a direct connection to a mock upstream and against nginx as a
# plain reverse proxy, in one run, and writes docs/benchmarks.md.
#
#   scripts/bench.sh            # about 10 minutes on a 2-core machine (after the release build)
#
# Everything listens on 127.0.0.1 and every load run is bounded in time. It installs what it
# needs (Debian's nginx, wrk, redis-server, linux-perf; as root), builds the release binaries,
# and starts its own processes in a temp dir: the mock upstream (src/bin/mock-upstream.rs),
# the bare forwarder (src/bin/bench-forwarder.rs: the same stack with nothing on top), nginx in
# the foreground with its own config and prefix, a redis-server of its own on a free
# port, and Switchyard on the embedded store and on that Redis. It stops them all on exit.
#
# Environment:
#   BENCH_DURATION=15     seconds per wrk run
#   BENCH_MAX_WAIT=300    how long to wait for the machine to be idle before measuring
#   BENCH_PROFILE=1       sample Switchyard with perf under load (0: skip)
#   BENCH_KEEP=1          keep the temp dir (logs, raw results) after the run
#   BENCH_OUT=docs/benchmarks.md
#   BENCH_SERVE=N         only start everything and keep it up N seconds (for profiling by hand)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
HERE=$ROOT/scripts/bench
DURATION=${BENCH_DURATION:-15}
MAX_WAIT=${BENCH_MAX_WAIT:-300}
PROFILE=${BENCH_PROFILE:-1}
OUT=${BENCH_OUT:-$ROOT/docs/benchmarks.md}
CONNECTIONS=64

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Our configuration only: nothing from the caller's environment reaches Switchyard.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^SWITCHYARD_' || true)
unset TOKIO_WORKER_THREADS

WORK=$(mktemp -d /tmp/switchyard-bench.XXXXXX)
RES=$WORK/results
mkdir -p "$RES"
declare -A PID=()
STARTED_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
T0=$SECONDS

cleanup() {
  local status=$?
  for name in "${!PID[@]}"; do
    kill "${PID[$name]}" 2>/dev/null || true
  done
  for name in "${!PID[@]}"; do
    wait "${PID[$name]}" 2>/dev/null || true
  done
  if [[ $status -ne 0 || -n ${BENCH_KEEP:-} ]]; then
    log "kept $WORK (logs and raw results)"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# --- tools --------------------------------------------------------------------------------------
install_tools() {
  local need=()
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
  command -v wrk >/dev/null || need+=(wrk)
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v redis-cli >/dev/null || need+=(redis-tools)
  command -v perf >/dev/null || need+=(linux-perf)
  command -v valgrind >/dev/null || need+=(valgrind)
  command -v python3 >/dev/null || need+=(python3)
  command -v curl >/dev/null || need+=(curl)
  ((${#need[@]})) || return 0
  log "installing ${need[*]} (Debian packages)"
  [[ $(id -u) -eq 0 ]] || die "run as root to install ${need[*]}"
  # Packages must not start their system services (nginx on port 80): we run our own.
  local guard=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    guard=1
  fi
  apt-get update >"$WORK/apt.log" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" \
    >>"$WORK/apt.log" 2>&1 || { [[ -n $guard ]] && rm -f /usr/sbin/policy-rc.d; tail -20 "$WORK/apt.log"; die "apt-get install failed"; }
  [[ -n $guard ]] && rm -f /usr/sbin/policy-rc.d
  return 0
}

install_tools
log "building release binaries"
cargo build --release --bin switchyard --bin mock-upstream --bin bench-forwarder >"$WORK/build.log" 2>&1 ||
  { tail -30 "$WORK/build.log"; die "cargo build failed"; }
SY=$ROOT/target/release/switchyard
MOCK=$ROOT/target/release/mock-upstream
BARE=$ROOT/target/release/bench-forwarder

python3 "$HERE/bodies.py" "$WORK/bodies" >/dev/null
BODIES=$WORK/bodies

# --- processes ----------------------------------------------------------------------------------
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

# wait_ready NAME URL: until URL answers 2xx, or the process died, or 30 s passed.
wait_ready() { wait_url "$2" "${PID[$1]}"; }

stop() {
  local name=$1
  [[ -n ${PID[$name]:-} ]] || return 0
  kill "${PID[$name]}" 2>/dev/null || true
  wait "${PID[$name]}" 2>/dev/null || true
  unset "PID[$name]"
}

MOCK_PORT=$(free_port)
MOCK_URL=http://127.0.0.1:$MOCK_PORT
MOCK_FLAGS=(--chunks 10 --input-tokens 1000 --output-tokens 100)
"$MOCK" --listen "127.0.0.1:$MOCK_PORT" "${MOCK_FLAGS[@]}" >"$WORK/mock.log" 2>&1 &
PID[mock]=$!
wait_ready mock "$MOCK_URL/stats" || die "the mock did not start: $(cat "$WORK/mock.log")"

REDIS_PORT=$(free_port)
mkdir -p "$WORK/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$WORK/redis" --daemonize no >"$WORK/redis/redis.log" 2>&1 &
PID[redis]=$!
for _ in $(seq 100); do
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null || die "redis-server did not start"

NGINX_PORT=$(free_port)
NG=$WORK/nginx
mkdir -p "$NG/tmp"
cat >"$NG/nginx.conf" <<EOF
# A plain reverse proxy: keep-alive to the upstream, no buffering of responses, no access log.
worker_processes 2;
daemon off;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $NG/tmp/body;
  proxy_temp_path $NG/tmp/proxy;
  fastcgi_temp_path $NG/tmp/fastcgi;
  uwsgi_temp_path $NG/tmp/uwsgi;
  scgi_temp_path $NG/tmp/scgi;
  # Request bodies (76 KB for Claude Code) stay in memory, as they do in Switchyard.
  client_max_body_size 32m;
  client_body_buffer_size 1m;
  keepalive_requests 1000000;
  upstream mock {
    server 127.0.0.1:$MOCK_PORT;
    keepalive 256;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
EOF
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
"$NGINX" -p "$NG" -c "$NG/nginx.conf" -e "$NG/error.log" &
PID[nginx]=$!
wait_ready nginx "http://127.0.0.1:$NGINX_PORT/stats" || die "nginx did not start: $(cat "$NG/error.log")"

# The bare forwarder: Switchyard's stack (tokio, hyper, hyper-util's client) doing nothing but forward.
BARE_PORT=$(free_port)
start_bare() {
  "$BARE" --listen "127.0.0.1:$BARE_PORT" --upstream "$MOCK_URL" >>"$WORK/bare.log" 2>&1 &
  PID[bare]=$!
  wait_ready bare "http://127.0.0.1:$BARE_PORT/stats" || die "the bare forwarder did not start: $(cat "$WORK/bare.log")"
}
start_bare

ADMIN_TOKEN=bench-admin-token-$(python3 -c 'import secrets; print(secrets.token_hex(12))')
MASTER_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
declare -A SY_PORT=() SY_KEY=() SY_ERR=()

# start_switchyard NAME STORE LEVEL: a Switchyard with its own config file and data dir.
start_switchyard() {
  local name=$1 store=$2 level=$3 dir=$WORK/$1
  mkdir -p "$dir/data"
  [[ -n ${SY_PORT[$name]:-} ]] || SY_PORT[$name]=$(free_port)
  cat >"$dir/config.toml" <<EOF
listen = "127.0.0.1:${SY_PORT[$name]}"
data_dir = "$dir/data"
store = "$store"
admin_token = "$ADMIN_TOKEN"
master_key = "$MASTER_KEY"

[log]
level = "$level"

[server]
shutdown_grace_secs = 2
EOF
  "$SY" --config "$dir/config.toml" serve >>"$dir/switchyard.log" 2>&1 &
  PID[$name]=$!
  if ! wait_ready "$name" "http://127.0.0.1:${SY_PORT[$name]}/health"; then
    SY_ERR[$name]=$(grep -v '^\s*$' "$dir/switchyard.log" | tail -3 | tr '\n' ' ' | cut -c1-300)
    stop "$name"
    return 1
  fi
}

# setup_switchyard NAME: one key and two accounts, both on the mock (scripts/bench/lib.sh).
setup_switchyard() {
  SY_KEY[$1]=$(relay_setup "http://127.0.0.1:${SY_PORT[$1]}" "$ADMIN_TOKEN" "$MOCK_URL") ||
    die "could not set up $1"
}

TARGETS=(direct nginx bare)
declare -A URL=([direct]=$MOCK_URL [nginx]=http://127.0.0.1:$NGINX_PORT [bare]=http://127.0.0.1:$BARE_PORT)
declare -A KEY=([direct]=none [nginx]=none [bare]=none)
declare -A LABEL=(
  [direct]="direct to the mock"
  [nginx]="nginx (reverse proxy)"
  [bare]="bare forwarder (tokio + hyper + hyper-util)"
  [sy_embedded]="Switchyard, embedded store"
  [sy_redis]="Switchyard, Redis store"
  [sy_embedded_info]="Switchyard, embedded, log level info"
)

for name in sy_embedded sy_embedded_info; do
  level=warn
  [[ $name == sy_embedded_info ]] && level=info
  start_switchyard "$name" embedded "$level" || die "Switchyard did not start: ${SY_ERR[$name]}"
  setup_switchyard "$name"
done
REDIS_AVAILABLE=0
if start_switchyard sy_redis "redis://127.0.0.1:$REDIS_PORT/0" warn; then
  setup_switchyard sy_redis
  REDIS_AVAILABLE=1
else
  log "Redis target: not available in this build (${SY_ERR[sy_redis]})"
fi
for name in sy_embedded sy_redis; do
  [[ -n ${PID[$name]:-} ]] && TARGETS+=("$name")
done
for name in "${TARGETS[@]}" sy_embedded_info; do
  [[ -n ${URL[$name]:-} ]] || URL[$name]=http://127.0.0.1:${SY_PORT[$name]}
  [[ -n ${KEY[$name]:-} ]] || KEY[$name]=${SY_KEY[$name]}
done

# The relay must answer before anything is measured.
for name in "${TARGETS[@]}" sy_embedded_info; do
  code=$(curl -s -o "$WORK/check-$name.json" -w '%{http_code}' --max-time 5 "${URL[$name]}/v1/messages" \
    -H "x-api-key: ${KEY[$name]}" -H 'anthropic-version: 2023-06-01' --data-binary "@$BODIES/small.json")
  [[ $code == 200 ]] || die "$name answered $code: $(cat "$WORK/check-$name.json")"
done

proxy_pid() { [[ $1 == direct ]] && echo "" || echo "${PID[$1]}"; }

# BENCH_SERVE=N: only start everything, print where it is, and keep it up for N seconds (for
# profiling by hand), then stop.
if [[ -n ${BENCH_SERVE:-} ]]; then
  {
    echo "BENCH_BODIES=$BODIES"
    echo "MOCK_URL=$MOCK_URL MOCK_PID=${PID[mock]} REDIS_PORT=$REDIS_PORT"
    for name in "${TARGETS[@]}" sy_embedded_info; do
      echo "$name: URL=${URL[$name]} PID=$(proxy_pid "$name") KEY=${KEY[$name]}"
    done
  } | tee "$WORK/serve.txt"
  log "serving for ${BENCH_SERVE} s (stop with: kill $$)"
  sleep "$BENCH_SERVE" &
  wait $! || true
  exit 0
fi

# --- a quiet machine --------------------------------------------------------------------------
wait_for_quiet() {
  local waited=0 busy
  while :; do
    busy=$(python3 "$HERE/load.py" idle --seconds 5 | python3 -c 'import json, sys; print(json.load(sys.stdin)["busy_share"])')
    if python3 -c "import sys; sys.exit(0 if $busy < 0.15 else 1)" || ((waited >= MAX_WAIT)); then
      echo "$busy"
      return
    fi
    log "machine busy (${busy} of its CPU used by others): waiting"
    sleep 10
    waited=$((waited + 15))
  done
}
log "checking that the machine is quiet"
QUIET_BUSY=$(wait_for_quiet)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine busy share before measuring: $QUIET_BUSY (load average $LOAD_BEFORE)"

# Warm the connection pools.
for name in "${TARGETS[@]}" sy_embedded_info; do
  BENCH_BODY=$BODIES/small.json BENCH_KEY=${KEY[$name]} \
    wrk -t2 -c$CONNECTIONS -d2s -s "$HERE/post.lua" "${URL[$name]}/v1/messages" >/dev/null
done

# --- sequential added latency ---------------------------------------------------------------
# Every target in one run per request kind, interleaved pair by pair: measured one after another,
# the targets' figures moved with the host between their runs by more than they differ.
SEQ_TARGETS=()
for name in "${TARGETS[@]}" sy_embedded_info; do
  [[ $name == direct ]] && continue
  SEQ_TARGETS+=(--target "$name" "${URL[$name]}/v1/messages" "${KEY[$name]}")
done
for mode in small small-stream cc-stream; do
  log "sequential latency, every target interleaved: $mode"
  python3 "$HERE/client.py" seq-many --direct "$MOCK_URL/v1/messages" "${SEQ_TARGETS[@]}" \
    --body "$BODIES/$mode.json" --pairs "$([[ $mode == small ]] && echo 2000 || echo 1000)" \
    --header "anthropic-version: 2023-06-01" --out "$RES/seq-$mode-{name}.json"
done

# --- streaming: time to first byte, chunk spacing ----------------------------------------------
for name in "${TARGETS[@]}"; do
  [[ $name == direct ]] && continue
  log "stream timing: $name"
  python3 "$HERE/client.py" chunks --direct "$MOCK_URL/v1/messages" --target "${URL[$name]}/v1/messages" \
    --body "$BODIES/small-stream.json" --rounds 10 --chunks 10 --delay-ms 50 \
    --header "x-api-key: ${KEY[$name]}" --header "anthropic-version: 2023-06-01" \
    >"$RES/chunks-$name.json"
done

# --- load at concurrency 64 -------------------------------------------------------------------
run_load() {
  local scenario=$1 name=$2 attempt
  # A run that someone else's work disturbed (more than 10% of the machine's CPU used by
  # processes not ours) is done again, up to twice, once the machine is quiet.
  for attempt in 1 2 3; do
    run_load_once "$scenario" "$name"
    python3 - "$RES/load-$scenario-$name.json" "$attempt" <<'EOF' && return 0
import json, sys
path, attempt = sys.argv[1], int(sys.argv[2])
r = json.load(open(path))
r["attempt"] = attempt
json.dump(r, open(path, "w"))
sys.exit(0 if r["foreign_cpu_s"] <= 0.1 * r["cpu_capacity_s"] or attempt == 3 else 1)
EOF
    log "that run was disturbed by other processes: waiting for a quiet machine, then again"
    wait_for_quiet >/dev/null
  done
}

run_load_once() {
  local scenario=$1 name=$2 extra=() body=$1
  [[ $name == sy_redis ]] && extra+=(--redis-port "$REDIS_PORT")
  # small-stream-50: the small streamed request with 50 content deltas instead of 10, which
  # shows the cost of each relayed SSE event.
  if [[ $scenario == small-stream-50 ]]; then
    body=small-stream
    extra+=(--mock-chunks 50)
  fi
  local pp
  pp=$(proxy_pid "$name")
  [[ -n $pp ]] && extra+=(--proxy-pid "$pp")
  log "load: $scenario via $name (${DURATION}s)"
  python3 "$HERE/load.py" --url "${URL[$name]}/v1/messages" --body "$BODIES/$body.json" \
    --key "${KEY[$name]}" --duration "$DURATION" --connections $CONNECTIONS \
    --mock-stats "$MOCK_URL/stats" --mock-pid "${PID[mock]}" --also-pid "${PID[redis]}" \
    "${extra[@]}" --out "$RES/load-$scenario-$name.json" >/dev/null
  sleep 1
}
for scenario in small small-stream cc cc-stream small-stream-50; do
  for name in "${TARGETS[@]}"; do
    [[ $scenario == small-stream-50 && $name == direct ]] && continue
    run_load "$scenario" "$name"
  done
  if [[ $scenario == small || $scenario == small-stream ]]; then
    run_load "$scenario" sy_embedded_info
  fi
done

# Redis: which commands Switchyard sends, and which its Lua scripts run (INFO commandstats, above,
# counts both alike).
if ((REDIS_AVAILABLE)); then
  for scenario in small small-stream; do
    log "Redis MONITOR: $scenario via sy_redis"
    python3 "$HERE/load.py" --url "${URL[sy_redis]}/v1/messages" --body "$BODIES/$scenario.json" \
      --key "${KEY[sy_redis]}" --connections $CONNECTIONS --mock-stats "$MOCK_URL/stats" \
      --redis-port "$REDIS_PORT" --monitor-secs 2 --out "$RES/monitor-$scenario.json" monitor >/dev/null
  done
fi

# Peak RSS after the concurrency-64 runs (small and 76 KB bodies, JSON and streamed).
for name in sy_embedded sy_redis sy_embedded_info; do
  [[ -n ${PID[$name]:-} ]] || continue
  grep -E '^(VmHWM|VmRSS)' "/proc/${PID[$name]}/status" |
    python3 -c 'import json, sys; print(json.dumps({l.split(":")[0]: int(l.split()[1]) for l in sys.stdin}))' \
      >"$RES/rss-c64-$name.json"
done
LOAD_AFTER_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# --- profile ------------------------------------------------------------------------------------
if [[ $PROFILE == 1 ]] && perf record -q -e cpu-clock -o "$WORK/perf.probe" -- true >/dev/null 2>&1; then
  for scenario in small cc-stream; do
    log "profile: sy_embedded under $scenario load (perf, cpu-clock)"
    BENCH_BODY=$BODIES/$scenario.json BENCH_KEY=${KEY[sy_embedded]} \
      wrk -t2 -c$CONNECTIONS -d12s -s "$HERE/post.lua" "${URL[sy_embedded]}/v1/messages" >/dev/null &
    wrk_pid=$!
    sleep 1
    perf record -q -e cpu-clock -F 1999 -p "${PID[sy_embedded]}" -o "$WORK/perf-$scenario.data" \
      -- sleep 10 >/dev/null 2>&1 || true
    wait "$wrk_pid" || true
    perf report -i "$WORK/perf-$scenario.data" --stdio --no-children --sort dso 2>/dev/null |
      grep -v '^#' | grep -v '^$' | head -12 >"$RES/profile-dso-$scenario.txt" || true
    perf report -i "$WORK/perf-$scenario.data" --stdio --no-children --sort symbol 2>/dev/null |
      grep -v '^#' | grep -v '^$' | head -40 >"$RES/profile-sym-$scenario.txt" || true
  done
fi

# --- 1,000 open streams -------------------------------------------------------------------------
# A fresh process each, so that VmHWM is this test's peak alone.
hold() {
  local name=$1 body=$2
  stop "$name"
  if [[ $name == bare ]]; then
    start_bare
  else
    local store=embedded
    [[ $name == sy_redis ]] && store="redis://127.0.0.1:$REDIS_PORT/0"
    start_switchyard "$name" "$store" warn || die "Switchyard ($name) did not restart: ${SY_ERR[$name]}"
  fi
  log "1,000 open streams: $name, $body"
  python3 "$HERE/client.py" hold --target "${URL[$name]}/v1/messages" --body "$BODIES/$body.json" \
    --pid "${PID[$name]}" --streams 1000 --hold-secs 10 --mock-stats "$MOCK_URL/stats" \
    --header "x-api-key: ${KEY[$name]}" --header "anthropic-version: 2023-06-01" \
    >"$RES/hold-$body-$name.json"
}
stop sy_embedded_info
hold sy_embedded small-stream
hold sy_embedded cc-stream
if ((REDIS_AVAILABLE)); then
  hold sy_redis small-stream
fi
# The same on the bare forwarder: what the stack alone holds per stream.
hold bare small-stream

# --- instructions per relayed request ----------------------------------------------------------
# CPU time per request moves with the host by up to ±10% between runs; the instructions a target
# executes for a request do not, so they tell a change in the code from the host's drift. Each
# target runs under valgrind's cachegrind twice, for COUNT_FEW and for COUNT_MANY requests one
# after another on one connection; the difference of the two totals over the difference of the
# counts is one request's user-space instructions, start-up and warm-up cancelled out. The kernel's
# share (the sockets) is not counted: it is about the same for every target. Each Switchyard run
# starts from an empty store (a new data dir; Redis flushed) set up as for the load runs: the
# state the load runs left (a long request log) changes the count by several percent.
COUNT_FEW=200
COUNT_MANY=2200
# count_instructions NAME BODY REQUESTS: the target's total instructions for that many requests.
count_instructions() {
  local name=$1 body=$2 n=$3 port out cmd ready key=()
  port=$(free_port)
  out=$WORK/cg-$name-$body-$n.out
  if [[ $name == bare ]]; then
    cmd=("$BARE" --listen "127.0.0.1:$port" --upstream "$MOCK_URL")
    ready=/stats
  else
    rm -rf "$WORK/cg-data"
    mkdir -p "$WORK/cg-data"
    [[ $name == sy_redis ]] && { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" flushall >/dev/null || die "FLUSHALL failed"; }
    sed -e "s#^listen = .*#listen = \"127.0.0.1:$port\"#" -e "s#^data_dir = .*#data_dir = \"$WORK/cg-data\"#" \
      "$WORK/$name/config.toml" >"$WORK/$name/config-cg.toml"
    cmd=("$SY" --config "$WORK/$name/config-cg.toml" serve)
    ready=/health
  fi
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$out" "${cmd[@]}" \
    >>"$WORK/cg-$name.log" 2>&1 &
  PID[cg]=$!
  wait_ready cg "http://127.0.0.1:$port$ready" ||
    { stop cg; die "$name did not start under valgrind: $(tail -5 "$WORK/cg-$name.log")"; }
  if [[ $name != bare ]]; then
    # The same setup in every run: its instructions cancel out in the difference.
    SY_PORT[cg]=$port
    setup_switchyard cg
    key=(--header "x-api-key: ${SY_KEY[cg]}")
  fi
  python3 "$HERE/client.py" count --target "http://127.0.0.1:$port/v1/messages" --body "$BODIES/$body.json" \
    --requests "$n" "${key[@]}" --header "anthropic-version: 2023-06-01" >/dev/null ||
    { stop cg; die "$name answered errors under valgrind"; }
  stop cg
  awk '/^summary:/ {print $2}' "$out"
}
if command -v valgrind >/dev/null; then
  for name in bare sy_embedded sy_redis; do
    [[ $name == sy_redis ]] && ((!REDIS_AVAILABLE)) && continue
    # The target's data dir is locked by its process: this is its last test.
    stop "$name"
    for body in small small-stream cc; do
      log "instructions per request: $name, $body"
      few=$(count_instructions "$name" "$body" "$COUNT_FEW")
      many=$(count_instructions "$name" "$body" "$COUNT_MANY")
      [[ $few =~ ^[0-9]+$ && $many =~ ^[0-9]+$ ]] || die "no instruction count for $name, $body"
      echo "{\"target\": \"$name\", \"body\": \"$body\", \"few\": [$COUNT_FEW, $few], \"many\": [$COUNT_MANY, $many]}" \
        >>"$RES/instructions.jsonl"
    done
  done
fi

# --- the report ---------------------------------------------------------------------------------
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
export B_STARTED_AT=$STARTED_AT B_RUN_SECONDS=$((SECONDS - T0)) B_DURATION=$DURATION \
  B_CONNECTIONS=$CONNECTIONS B_REDIS_AVAILABLE=$REDIS_AVAILABLE B_REDIS_ERROR="${SY_ERR[sy_redis]:-}" \
  B_QUIET_BUSY="$QUIET_BUSY" B_LOAD_BEFORE="$LOAD_BEFORE" B_LOAD_AFTER_LOAD="$LOAD_AFTER_LOAD" \
  B_LOAD_AFTER="$LOAD_AFTER" B_MOCK_FLAGS="${MOCK_FLAGS[*]}" B_ROOT=$ROOT B_BODIES=$BODIES
python3 "$HERE/meta.py" >"$RES/meta.json"
python3 "$HERE/report.py" "$RES" "$OUT"
log "wrote $OUT in $((SECONDS - T0)) s"
