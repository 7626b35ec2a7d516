#!/usr/bin/env python3
"""One bounded wrk run for scripts/bench.sh, with what was spent around it.

  load.py --url URL --body FILE --key KEY --duration 15 --connections 64
          --mock-stats URL --proxy-pid PID [--mock-pid PID] [--redis-port PORT] [--out FILE]

Prints (and writes to --out) one JSON object: wrk's figures (requests per second, p50/p90/p99,
errors), the requests the mock served meanwhile, CPU seconds used by the proxy (the process and its
children, e.g. nginx workers), by the mock and by wrk, the machine's busy CPU over the run and what
of it no process of ours used ("foreign": someone else's build makes a run noisy), and on a Redis
target the INFO commandstats delta.

Also: load.py idle --seconds N  -> the machine's busy CPU share over N seconds (JSON);
      load.py monitor --url … --redis-port P … -> Redis commands sent by Switchyard vs run inside
      its Lua scripts, per request (MONITOR during a short run).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")


def machine_cpu():
    """(busy, total) jiffies over all CPUs since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry))
    return out


def proc_cpu(pid):
    """CPU seconds (user + system) of `pid`, its threads included, plus its direct children."""
    total = 0.0
    for p in [pid] + children(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += (int(rest[11]) + int(rest[12])) / TICK
        except OSError:
            pass
    return total


def proc_switches(pid):
    """Context switches (voluntary + involuntary) of every thread of `pid` and its direct children."""
    total = 0
    for p in [pid] + children(pid):
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            total += int(line.split()[1])
            except OSError:
                pass
    return total


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def commandstats(port):
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "INFO", "commandstats"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stats = {}
    for line in out.splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            fields = dict(kv.split("=", 1) for kv in rest.split(","))
            stats[name[len("cmdstat_"):]] = int(fields["calls"])
    return stats


def idle(seconds):
    b0, t0 = machine_cpu()
    time.sleep(seconds)
    b1, t1 = machine_cpu()
    return {"busy_share": round((b1 - b0) / max(1, t1 - t0), 3), "seconds": seconds}


def run(args):
    env = dict(os.environ, BENCH_BODY=args.body, BENCH_KEY=args.key)
    if args.mock_chunks is not None:
        env["BENCH_MOCK_CHUNKS"] = str(args.mock_chunks)
    mock0 = get_json(args.mock_stats)
    redis0 = commandstats(args.redis_port) if args.redis_port else None
    proxy0 = proc_cpu(args.proxy_pid) if args.proxy_pid else None
    switches0 = proc_switches(args.proxy_pid) if args.proxy_pid else None
    mockcpu0 = proc_cpu(args.mock_pid) if args.mock_pid else None
    also0 = sum(proc_cpu(p) for p in args.also_pid)
    busy0, total0 = machine_cpu()
    wall0 = time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "post.lua"),
        args.url,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.duration + 60)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy1, total1 = machine_cpu()
    also1 = sum(proc_cpu(p) for p in args.also_pid)
    wall = time.monotonic() - wall0
    proxy1 = proc_cpu(args.proxy_pid) if args.proxy_pid else None
    switches1 = proc_switches(args.proxy_pid) if args.proxy_pid else None
    mockcpu1 = proc_cpu(args.mock_pid) if args.mock_pid else None
    # Usage is written every 250 ms: let the last batch land before counting Redis commands.
    time.sleep(args.settle)
    mock1 = get_json(args.mock_stats)
    redis1 = commandstats(args.redis_port) if args.redis_port else None
    line = next((l for l in proc.stdout.splitlines() if l.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"wrk failed ({proc.returncode})")
    w = json.loads(line[len("BENCH_JSON "):])
    secs = w["duration_us"] / 1e6
    errors = sum(w[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    served = mock1["requests"] - mock0["requests"]
    wrk_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    ncpu = os.cpu_count() or 1
    busy_cpu_s = (busy1 - busy0) / TICK
    ours = wrk_cpu + (proxy1 - proxy0 if proxy0 is not None else 0) + (
        mockcpu1 - mockcpu0 if mockcpu0 is not None else 0
    ) + (also1 - also0)
    result = {
        "url": args.url,
        "body": os.path.basename(args.body),
        "mock_chunks": args.mock_chunks,
        "connections": args.connections,
        "duration_s": round(secs, 2),
        "requests": w["requests"],
        "rps": round(w["requests"] / secs, 1),
        "p50_ms": w["p50_us"] / 1000,
        "p90_ms": w["p90_us"] / 1000,
        "p99_ms": w["p99_us"] / 1000,
        "max_ms": w["max_us"] / 1000,
        "errors": errors,
        "error_detail": {k: w[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")},
        "mock_requests": served,
        "mock_streams_cancelled": mock1["streams_cancelled"] - mock0["streams_cancelled"],
        "proxy_cpu_s": round(proxy1 - proxy0, 2) if proxy0 is not None else None,
        "mock_cpu_s": round(mockcpu1 - mockcpu0, 2) if mockcpu0 is not None else None,
        "wrk_cpu_s": round(wrk_cpu, 2),
        "other_ours_cpu_s": round(also1 - also0, 2),
        "machine_busy_share": round((busy1 - busy0) / max(1, total1 - total0), 3),
        "foreign_cpu_s": round(max(0.0, busy_cpu_s - ours), 2),
        "cpu_capacity_s": round(wall * ncpu, 2),
    }
    if proxy0 is not None and served:
        result["proxy_cpu_us_per_request"] = round((proxy1 - proxy0) * 1e6 / served, 1)
        result["proxy_switches_per_request"] = round((switches1 - switches0) / served, 2)
    if redis0 is not None:
        delta = {k: redis1.get(k, 0) - redis0.get(k, 0) for k in set(redis0) | set(redis1)}
        delta["info"] = delta.get("info", 0) - 1  # our own INFO before the run
        delta = {k: v for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v > 0}
        result["redis_commands"] = delta
        result["redis_commands_per_request"] = round(sum(delta.values()) / served, 2) if served else None
    text = json.dumps(result)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


def monitor(args):
    """Which Redis commands Switchyard sends itself, and which run inside its Lua scripts: a
    short wrk run with `redis-cli MONITOR` listening for a few seconds in its middle.
    (INFO commandstats counts both alike.)"""
    env = dict(os.environ, BENCH_BODY=args.body, BENCH_KEY=args.key)
    cmd = ["wrk", "-t2", f"-c{args.connections}", f"-d{int(args.monitor_secs) + 4}s", "--timeout", "10s",
           "-s", str(HERE / "post.lua"), args.url]
    wrk = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        mock0 = get_json(args.mock_stats)["requests"]
        try:
            out = subprocess.run(
                ["redis-cli", "-h", "127.0.0.1", "-p", str(args.redis_port), "MONITOR"],
                capture_output=True, text=True, timeout=args.monitor_secs,
            ).stdout
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        mock1 = get_json(args.mock_stats)["requests"]
    finally:
        wrk.wait(timeout=args.monitor_secs + 30)
    issued, scripted = {}, {}
    for line in out.splitlines():
        if "] \"" not in line:
            continue
        who, _, rest = line.partition("] ")
        name = rest.split('"')[1].lower() if rest.count('"') >= 2 else "?"
        target = scripted if who.endswith("lua") else issued
        target[name] = target.get(name, 0) + 1
    served = max(1, mock1 - mock0)
    per = lambda d: {k: round(v / served, 2) for k, v in sorted(d.items(), key=lambda kv: -kv[1])}  # noqa: E731
    result = {
        "body": os.path.basename(args.body),
        "requests": mock1 - mock0,
        "issued_per_request": round(sum(issued.values()) / served, 2),
        "in_scripts_per_request": round(sum(scripted.values()) / served, 2),
        "issued": per(issued),
        "in_scripts": per(scripted),
    }
    text = json.dumps(result)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd")
    i = sub.add_parser("idle")
    i.add_argument("--seconds", type=float, default=5)
    sub.add_parser("monitor")
    p.add_argument("--url")
    p.add_argument("--body")
    p.add_argument("--key", default="none")
    p.add_argument("--duration", type=int, default=15)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mock-stats")
    p.add_argument("--proxy-pid", type=int)
    p.add_argument("--mock-pid", type=int)
    p.add_argument("--redis-port", type=int)
    p.add_argument("--also-pid", type=int, action="append", default=[], help="another process of ours (redis-server)")
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--mock-chunks", type=int, help="content deltas per stream (x-mock-chunks)")
    p.add_argument("--monitor-secs", type=float, default=2)
    p.add_argument("--out")
    args = p.parse_args()
    if args.cmd == "idle":
        print(json.dumps(idle(args.seconds)))
    elif args.cmd == "monitor":
        monitor(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
