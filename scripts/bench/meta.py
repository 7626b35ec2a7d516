#!/usr/bin/env python3
"""Prints, as JSON, what scripts/bench.sh ran on: versions, machine, load (from B_* variables)."""
import json
import os
import subprocess

e = os.environ


def sh(cmd):
    try:
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20)
        out = (r.stdout.strip() or r.stderr.strip()).splitlines()
        return out[0].strip() if out else "unknown"
    except Exception as err:  # noqa: BLE001
        return f"unknown ({err})"


def locked(name):
    return sh(f"grep -A1 '^name = \"{name}\"$' '{e['B_ROOT']}/Cargo.lock' | tail -1 | cut -d'\"' -f2")


meta = {
    "started_at": e["B_STARTED_AT"],
    "run_seconds": int(e["B_RUN_SECONDS"]),
    "duration_s": int(e["B_DURATION"]),
    "connections": int(e["B_CONNECTIONS"]),
    "redis_available": e["B_REDIS_AVAILABLE"] == "1",
    "redis_error": e.get("B_REDIS_ERROR", ""),
    "quiet_busy_share": float(e["B_QUIET_BUSY"]),
    "load_before": e["B_LOAD_BEFORE"],
    "load_after_load_runs": e["B_LOAD_AFTER_LOAD"],
    "load_after": e["B_LOAD_AFTER"],
    "mock_flags": e["B_MOCK_FLAGS"],
    "versions": {
        "switchyard": e.get("BENCH_VERSION")
        or sh(f"git -C '{e['B_ROOT']}' describe --always --dirty --abbrev=12 2>/dev/null || echo unknown"),
        "rustc": sh("rustc --version"),
        "hyper": locked("hyper"),
        "hyper-util": locked("hyper-util"),
        "reqwest": locked("reqwest"),
        "tokio": locked("tokio"),
        "nginx": sh("nginx -v 2>&1"),
        "wrk": sh("wrk -v 2>&1"),
        "redis": sh("redis-server --version"),
        "python": sh("python3 --version"),
        "perf": sh("perf --version"),
        "valgrind": sh("valgrind --version 2>/dev/null || echo none"),
        "kernel": sh("uname -sr"),
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "cpu": sh("lscpu | grep -m1 'Model name' | cut -d: -f2"),
        "cpus": sh("nproc"),
        "memory": sh("free -m | awk '/Mem:/ {print $2 \" MiB\"}'"),
    },
    "bodies": json.load(open(os.path.join(e["B_BODIES"], "bodies.json"))),
}
print(json.dumps(meta, indent=1))
