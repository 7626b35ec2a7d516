#!/usr/bin/env python3
"""Latency and streaming probes for scripts/bench.sh, over plain HTTP/1.1 keep-alive sockets.

  client.py seq    --direct URL --target URL --body FILE [--pairs N]
      Requests alternating between the mock (direct) and the target, each on its own kept-alive
      connection; the figure is the per-pair difference (target - direct) of the time from sending
      the request to reading the whole response, and of the time to the first body byte.

  client.py seq-many --direct URL --target NAME URL KEY [--target ...] --body FILE --out PATTERN
      As seq, for several targets in one run, interleaved: each round takes one pair from every
      target, in an order that rotates, so that the host getting faster or slower during the run
      falls on every target alike. KEY goes in x-api-key ("none": no key). Writes one file per
      target, PATTERN with {name} replaced, each holding what seq prints.

  client.py chunks --direct URL --target URL --body FILE [--rounds N] [--chunks 10] [--delay-ms 50]
      Streamed requests whose content deltas the mock spaces --delay-ms apart (asked per request
      with x-mock-* headers): when each delta reaches the client, through the target and direct.

  client.py hold   --target URL --body FILE --pid PID [--streams 1000] [--hold-secs 10]
      Opens that many concurrent streams (which the mock keeps open with a delta a second), holds
      them while sampling VmRSS / VmHWM of PID, then drops them all.

  client.py count  --target URL --body FILE --requests N
      N requests one after another on one kept-alive connection, nothing measured: the load that
      scripts/bench.sh counts instructions under (valgrind's cachegrind, which slows the target
      about fifty times, so the load must be small and fixed).

Every result is one JSON object on stdout. Times are in microseconds unless named otherwise.
"""

import argparse
import asyncio
import json
import socket
import sys
import time
import urllib.parse
import urllib.request


def percentile(values, q):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summary(values):
    return {
        "n": len(values),
        "p50": percentile(values, 0.5),
        "p90": percentile(values, 0.9),
        "p99": percentile(values, 0.99),
        "min": min(values) if values else None,
        "max": max(values) if values else None,
    }


def now_us():
    return time.perf_counter_ns() / 1000.0


def parse_headers(args_headers):
    out = []
    for h in args_headers or []:
        k, _, v = h.partition(":")
        out.append((k.strip(), v.strip()))
    return out


def build_request(url, body, headers):
    u = urllib.parse.urlsplit(url)
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {u.hostname}:{u.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Conn:
    """One kept-alive HTTP/1.1 connection; responses with content-length or chunked bodies."""

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.addr = (u.hostname, u.port)
        self.sock = None
        self.buf = b""

    def connect(self):
        self.sock = socket.create_connection(self.addr, timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, raw, on_body=None):
        """Sends `raw`, reads the response. Returns (status, t_send, t_first_body, t_end); calls
        on_body(t, data) for every piece of decoded body as it arrives."""
        for attempt in (0, 1):
            if self.sock is None:
                self.connect()
            try:
                return self._request(raw, on_body)
            except (ConnectionError, EOFError):
                # The server closed the kept-alive connection: once more on a new one.
                self.sock = None
                if attempt:
                    raise
        raise RuntimeError("unreachable")

    def _recv(self):
        data = self.sock.recv(262144)
        if not data:
            raise EOFError("connection closed")
        return data, now_us()

    def _request(self, raw, on_body):
        t_send = now_us()
        self.sock.sendall(raw)
        buf, t = self.buf, t_send
        while b"\r\n\r\n" not in buf:
            data, t = self._recv()
            buf += data
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        t_first = None

        def emit(data, at):
            nonlocal t_first
            if data:
                if t_first is None:
                    t_first = at
                if on_body:
                    on_body(at, data)

        if "content-length" in headers:
            n = int(headers["content-length"])
            emit(buf[:n], t)
            got, rest = min(len(buf), n), buf[n:]
            while got < n:
                data, t = self._recv()
                take = data[: n - got]
                emit(take, t)
                got += len(take)
                rest = data[len(take):]
            self.buf = rest
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                # One chunk: size line, data, CRLF; handed on when whole.
                while b"\r\n" not in buf:
                    data, t = self._recv()
                    buf += data
                size_line, _, buf = buf.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(buf) < size + 2:
                    data, t = self._recv()
                    buf += data
                emit(buf[:size], t)
                buf = buf[size + 2:]
                if size == 0:
                    break
            self.buf = buf
        else:
            raise RuntimeError(f"unsupported response framing: {headers}")
        if headers.get("connection", "").lower() == "close":
            self.sock.close()
            self.sock = None
        return status, t_send, t_first, t


def seq_pairs(direct_url, targets, body, headers, pairs, warmup):
    """Pairs of requests, direct and through each target; `targets` is [(name, url, headers)].
    Returns {name: summary}."""
    direct = Conn(direct_url)
    raw_direct = build_request(direct_url, body, headers)
    runs = [
        {
            "name": name,
            "conn": Conn(url),
            "raw": build_request(url, body, headers + extra),
            "total": [],
            "ttfb": [],
            "direct": [],
            "through": [],
            "errors": 0,
        }
        for name, url, extra in targets
    ]
    for i in range(warmup + pairs):
        for j in range(len(runs)):
            run = runs[(i + j) % len(runs)]
            order = [("d", direct, raw_direct), ("t", run["conn"], run["raw"])]
            if i % 2:
                order.reverse()
            took = {}
            for name, conn, raw in order:
                status, t0, t_first, t_end = conn.request(raw)
                if status != 200:
                    run["errors"] += 1
                took[name] = (t_end - t0, (t_first or t_end) - t0)
            if i < warmup:
                continue
            d, t = took["d"], took["t"]
            run["total"].append(t[0] - d[0])
            run["ttfb"].append(t[1] - d[1])
            run["direct"].append(d[0])
            run["through"].append(t[0])
    return {
        run["name"]: {
            "pairs": pairs,
            "errors": run["errors"],
            "added_total_us": summary(run["total"]),
            "added_ttfb_us": summary(run["ttfb"]),
            "direct_total_us": summary(run["direct"]),
            "target_total_us": summary(run["through"]),
        }
        for run in runs
    }


def cmd_seq(args):
    body = open(args.body, "rb").read()
    headers = parse_headers(args.header)
    result = seq_pairs(args.direct, [("target", args.target, [])], body, headers, args.pairs, args.warmup)
    print(json.dumps(result["target"]))


def cmd_seq_many(args):
    body = open(args.body, "rb").read()
    headers = parse_headers(args.header)
    targets = [
        (name, url, [] if key == "none" else [("x-api-key", key)]) for name, url, key in args.target
    ]
    results = seq_pairs(args.direct, targets, body, headers, args.pairs, args.warmup)
    for name, result in results.items():
        with open(args.out.replace("{name}", name), "w") as f:
            f.write(json.dumps(result) + "\n")


def cmd_count(args):
    body = open(args.body, "rb").read()
    raw = build_request(args.target, body, parse_headers(args.header))
    conn = Conn(args.target)
    errors = 0
    for _ in range(args.requests):
        status, _, _, _ = conn.request(raw)
        errors += not 200 <= status < 300
    print(json.dumps({"requests": args.requests, "errors": errors}))
    return 1 if errors else 0


def delta_arrivals(conn, raw):
    """Sends one streamed request; returns (ttfb_us, [arrival of each content delta, us from send],
    number of distinct reads that carried deltas)."""
    events = bytearray()
    seen = 0
    arrivals = []
    reads_with_deltas = 0

    def on_body(t, data):
        nonlocal seen, reads_with_deltas
        events.extend(data)
        complete = bytes(events).split(b"\n\n")[:-1]
        count = sum(1 for e in complete if b"content_block_delta" in e)
        if count > seen:
            arrivals.extend([t] * (count - seen))
            seen = count
            reads_with_deltas += 1

    status, t0, t_first, _ = conn.request(raw, on_body)
    if status != 200:
        raise RuntimeError(f"status {status}")
    return (t_first - t0), [a - t0 for a in arrivals], reads_with_deltas


def cmd_chunks(args):
    body = open(args.body, "rb").read()
    headers = parse_headers(args.header) + [
        ("x-mock-chunks", str(args.chunks)),
        ("x-mock-chunk-delay-ms", str(args.delay_ms)),
    ]
    direct, target = Conn(args.direct), Conn(args.target)
    raw_direct = build_request(args.direct, body, headers)
    raw_target = build_request(args.target, body, headers)
    ttfb_diff, gaps, per_delta_added, reads, spans = [], [], [], [], []
    for i in range(args.rounds):
        order = [("d", direct, raw_direct), ("t", target, raw_target)]
        if i % 2:
            order.reverse()
        res = {}
        for name, conn, raw in order:
            res[name] = delta_arrivals(conn, raw)
        (d_ttfb, d_arr, _), (t_ttfb, t_arr, t_reads) = res["d"], res["t"]
        ttfb_diff.append(t_ttfb - d_ttfb)
        gaps += [b - a for a, b in zip(t_arr, t_arr[1:])]
        per_delta_added += [t - d for d, t in zip(d_arr, t_arr)]
        reads.append(t_reads)
        spans.append(t_arr[-1] - t_arr[0] if t_arr else 0)
    print(
        json.dumps(
            {
                "rounds": args.rounds,
                "chunks": args.chunks,
                "delay_ms": args.delay_ms,
                "added_ttfb_us": summary(ttfb_diff),
                "gap_us": summary(gaps),
                "per_delta_added_us": summary(per_delta_added),
                "reads_with_deltas": summary(reads),
                "first_to_last_delta_us": summary(spans),
            }
        )
    )


def read_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def mock_stats(url):
    if not url:
        return None
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


async def hold(args):
    body = open(args.body, "rb").read()
    headers = parse_headers(args.header) + [
        ("x-mock-chunks", "100000"),
        ("x-mock-chunk-delay-ms", "1000"),
    ]
    raw = build_request(args.target, body, headers)
    u = urllib.parse.urlsplit(args.target)
    opening = asyncio.Semaphore(args.open_concurrency)
    streams, errors = [], []

    async def drain(reader):
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, asyncio.CancelledError):
            pass

    async def open_one():
        async with opening:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(u.hostname, u.port), 10
                )
                writer.write(raw)
                await writer.drain()
                got = b""
                while b"message_start" not in got:
                    data = await asyncio.wait_for(reader.read(65536), 10)
                    if not data:
                        raise ConnectionError("closed: " + got[:120].decode("latin-1"))
                    got += data
                if not got.startswith(b"HTTP/1.1 200"):
                    raise ConnectionError(got[:120].decode("latin-1"))
                streams.append((writer, asyncio.ensure_future(drain(reader))))
            except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                errors.append(repr(e)[:200])

    before = mock_stats(args.mock_stats)
    rss_before = read_status(args.pid)
    t0 = time.monotonic()
    await asyncio.gather(*(open_one() for _ in range(args.streams)))
    opened_in = time.monotonic() - t0
    during = mock_stats(args.mock_stats)
    samples = []
    end = time.monotonic() + args.hold_secs
    while time.monotonic() < end:
        samples.append(read_status(args.pid).get("VmRSS", 0))
        await asyncio.sleep(0.25)
    hwm = read_status(args.pid)
    for writer, task in streams:
        task.cancel()
        writer.transport.abort()
    await asyncio.sleep(2)
    after = mock_stats(args.mock_stats)
    # The relay settles every dropped stream at once (leases given back, usage recorded): the
    # process's peak may come then, not while the streams are held.
    hwm_after = read_status(args.pid)
    print(
        json.dumps(
            {
                "streams": args.streams,
                "established": len(streams),
                "errors": len(errors),
                "error_examples": errors[:3],
                "opened_in_s": round(opened_in, 2),
                "hold_secs": args.hold_secs,
                "rss_kb_before": rss_before.get("VmRSS"),
                "rss_kb_max_during": max(samples) if samples else None,
                "hwm_kb": hwm.get("VmHWM"),
                "hwm_kb_after_close": hwm_after.get("VmHWM"),
                "mock_open_streams_during": during and during.get("open_streams"),
                "mock_cancelled": after
                and before
                and after["streams_cancelled"] - before["streams_cancelled"],
            }
        )
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("seq", "chunks", "hold", "count"):
        s = sub.add_parser(name)
        s.add_argument("--target", required=True)
        s.add_argument("--body", required=True)
        s.add_argument("--header", action="append", help="K: V (repeatable)")
        if name in ("seq", "chunks"):
            s.add_argument("--direct", required=True)
    s = sub.add_parser("seq-many")
    s.add_argument("--direct", required=True)
    s.add_argument("--target", required=True, nargs=3, action="append", metavar=("NAME", "URL", "KEY"))
    s.add_argument("--body", required=True)
    s.add_argument("--header", action="append", help="K: V (repeatable), sent to every target")
    s.add_argument("--out", required=True, help="file per target, {name} replaced")
    for name in ("seq", "seq-many"):
        s = sub.choices[name]
        s.add_argument("--pairs", type=int, default=2000)
        s.add_argument("--warmup", type=int, default=100)
    s = sub.choices["chunks"]
    s.add_argument("--rounds", type=int, default=6)
    s.add_argument("--chunks", type=int, default=10)
    s.add_argument("--delay-ms", type=int, default=50)
    s = sub.choices["hold"]
    s.add_argument("--pid", required=True, type=int)
    s.add_argument("--streams", type=int, default=1000)
    s.add_argument("--hold-secs", type=float, default=10)
    s.add_argument("--open-concurrency", type=int, default=100)
    s.add_argument("--mock-stats", help="the mock's /stats URL")
    sub.choices["count"].add_argument("--requests", required=True, type=int)
    args = p.parse_args()
    if args.cmd == "seq":
        cmd_seq(args)
    elif args.cmd == "seq-many":
        cmd_seq_many(args)
    elif args.cmd == "chunks":
        cmd_chunks(args)
    elif args.cmd == "count":
        return cmd_count(args)
    else:
        asyncio.run(hold(args))


if __name__ == "__main__":
    sys.exit(main())
