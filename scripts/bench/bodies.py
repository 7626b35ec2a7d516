#!/usr/bin/env python3
"""Writes the request bodies the benchmark sends, into the directory given as argument.

small.json / small-stream.json   a short Messages request (about 150 bytes), JSON and streamed
cc.json / cc-stream.json         the Claude Code prompt captured in
                                 tests/fixtures/clients/claude-code-prompt.requests.jsonl (24 tools),
                                 its elided texts ("<text elided: N chars>") filled back in with N
                                 characters of prose, serialised compactly as Node does: about 76 KB,
                                 the size of the Content-Length the capture recorded.
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CAPTURE = ROOT / "tests/fixtures/clients/claude-code-prompt.requests.jsonl"
ELIDED = re.compile(r"^<text elided: (\d+) chars>$")
PROSE = (
    "Use the tools available to you to assist the user. When you are unsure, read the file "
    "first; never guess a path.\n- Keep answers short and \"to the point\".\n"
)


def filler(n: int) -> str:
    return (PROSE * (n // len(PROSE) + 1))[:n]


def expand(value):
    if isinstance(value, str):
        m = ELIDED.match(value)
        return filler(int(m.group(1))) if m else value
    if isinstance(value, list):
        return [expand(v) for v in value]
    if isinstance(value, dict):
        return {k: expand(v) for k, v in value.items()}
    return value


def compact(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    small = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
    }
    (out / "small.json").write_bytes(compact(small))
    (out / "small-stream.json").write_bytes(compact({**small, "stream": True}))
    post = next(
        json.loads(line)
        for line in CAPTURE.read_text().splitlines()
        if line.strip() and json.loads(line)["method"] == "POST"
    )
    body = expand(post["body"])
    (out / "cc-stream.json").write_bytes(compact({**body, "stream": True}))
    (out / "cc.json").write_bytes(compact({**body, "stream": False}))
    info = {
        "small_bytes": len(compact(small)),
        "cc_bytes": len(compact(body)),
        "cc_tools": len(body.get("tools", [])),
        "cc_captured_content_length": int(post["headers"].get("Content-Length", 0)),
        "cc_model": body.get("model"),
    }
    (out / "bodies.json").write_text(json.dumps(info))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
