#!/usr/bin/env bash
# Starts (or stops) the Redis servers the test suite uses, all on loopback ports of their own:
#   a standalone redis-server on 127.0.0.1:6390, and a 3-master Redis Cluster on 7101-7103.
# Prints the environment the tests read: REDIS_URL and REDIS_CLUSTER_URL.
#
#   scripts/redis-test-servers.sh start   # then: eval "$(scripts/redis-test-servers.sh env)"
#   scripts/redis-test-servers.sh stop
set -euo pipefail

DIR=${REDIS_TEST_DIR:-/tmp/switchyard-redis-test}
STANDALONE=6390
CLUSTER=(7101 7102 7103)

start_one() { # port [extra args]
  local port=$1; shift
  mkdir -p "$DIR/$port"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$DIR/$port" --daemonize yes \
    --pidfile "$DIR/$port/redis.pid" --logfile "$DIR/$port/redis.log" \
    --save '' --appendonly no "$@"
  for _ in $(seq 1 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "redis on port $port did not start" >&2
  return 1
}

case "${1:-}" in
  start)
    command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }
    "$0" stop >/dev/null 2>&1 || true
    rm -rf "$DIR"; mkdir -p "$DIR"
    start_one "$STANDALONE"
    for p in "${CLUSTER[@]}"; do
      start_one "$p" --cluster-enabled yes --cluster-config-file "$DIR/$p/nodes.conf" --cluster-node-timeout 2000
    done
    redis-cli --cluster create $(printf "127.0.0.1:%s " "${CLUSTER[@]}") --cluster-replicas 0 --cluster-yes >"$DIR/cluster-create.log" 2>&1
    for _ in $(seq 1 100); do
      if redis-cli -p "${CLUSTER[0]}" cluster info | grep -q 'cluster_state:ok'; then
        "$0" env
        exit 0
      fi
      sleep 0.1
    done
    echo "the cluster did not become ready" >&2
    exit 1
    ;;
  stop)
    for p in "$STANDALONE" "${CLUSTER[@]}"; do
      redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
    done
    ;;
  env)
    echo "export REDIS_URL=redis://127.0.0.1:$STANDALONE/0"
    echo "export REDIS_CLUSTER_URL=redis-cluster://$(IFS=,; printf '127.0.0.1:%s,' "${CLUSTER[@]}" | sed 's/,$//')"
    ;;
  *)
    echo "usage: $0 start|stop|env" >&2
    exit 2
    ;;
esac
