# Pieces shared by scripts/bench.sh and scripts/bench/ab.sh (sourced; it defines functions only).
# Both set Switchyard up the same way, so that their instruction counts describe the same path.

# free_port: a free TCP port on 127.0.0.1, never one of those the test suite's Redis servers use
# (scripts/redis-test-servers.sh).
free_port() {
  python3 - <<'EOF'
import socket
while True:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    if port not in (6390, 7101, 7102, 7103, 9100):
        print(port)
        break
EOF
}

# wait_url URL PID: until URL answers 2xx (true), or process PID died or 30 s passed (false).
wait_url() {
  local url=$1 pid=$2
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || return 1
    curl -sf -o /dev/null --max-time 1 "$url" && return 0
    sleep 0.1
  done
  return 1
}

# relay_setup BASE_URL ADMIN_TOKEN MOCK_URL: one key and two accounts on the mock, on the running
# Switchyard at BASE_URL; prints the key. Limits on, as a team would set them: every request is
# admitted against a concurrency cap, an hourly request window and a daily budget (none of them
# binding at the benchmark's load), and settled.
relay_setup() {
  local base=$1 token=$2 mock=$3 n
  relay_admin() {
    curl -sf --max-time 5 -H "Authorization: Bearer $token" -H 'content-type: application/json' \
      "$base$1" -d "$2"
  }
  relay_admin /admin/keys '{"name": "bench", "limits": {"max_concurrency": 4096,
    "daily_cost_nanousd": 1000000000000000, "window": {"seconds": 3600, "requests": 1000000000}}}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])' || return 1
  for n in a b; do
    relay_admin /admin/accounts "{\"name\": \"mock-$n\", \"provider\": \"anthropic\",
      \"api_key\": \"sk-mock-$n\", \"base_url\": \"$mock\", \"priority\": 10,
      \"max_concurrency\": 2000}" >/dev/null || return 1
  done
}
