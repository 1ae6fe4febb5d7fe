"""Open-loop load at a fixed rate (wrk has no such mode and wrk2 is not packaged by Debian).

`python -m tests.perf.loadgen SPEC.json RATE SECONDS` sends RATE requests a second, each at its
scheduled moment whether or not earlier ones have answered, over keep-alive HTTP/1.1
connections (a new one whenever all are busy). Latency is measured from the scheduled moment,
so a stalled server is not hidden (no coordinated omission). Prints one JSON line of results.

The scenario spec is shared with the wrk Lua scripts (see wrkload.py):
  {"port": 8000, "kind": "static", "requests": [[method, path, headers, body | null], ...]}
  {"port": 8000, "kind": "fresh", "requests": [...]}  (as static; each `@uuid@` in a body: a new UUID)
  {"port": 8000, "kind": "pin", "slots": [{"user", "token", "repo", "xff"}, ...]}
  {"port": 8000, "kind": "refresh", "slots": [{"refresh", "xff"}, ...]}
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import sys
import time
import uuid
from typing import Any

WARMUP_SECONDS = 1.0
PROJECT_ID_RE = re.compile(rb'"id":(\d+)')
REFRESH_RE = re.compile(rb'"refresh_token":"([^"]+)"')
FRESH_ID = re.compile("@uuid@")


def raw_request(port: int, method: str, path: str, headers: dict[str, str], body: str | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    payload = (body or "").encode()
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)


class Scenario:
    """Gives the next request, and learns from its response (pin ids, rotated refresh tokens)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.port: int = spec["port"]
        self.kind: str = spec["kind"]
        self.requests: list[list[Any]] = spec.get("requests", [])
        self.static = [raw_request(self.port, *r) for r in self.requests] if self.kind == "static" else []
        self.index = 0
        self.slots: collections.deque[dict[str, Any]] = collections.deque(spec.get("slots", []))

    def next(self) -> tuple[bytes, dict[str, Any] | None]:
        if self.kind == "static":
            self.index = (self.index + 1) % len(self.static)
            return self.static[self.index], None
        if self.kind == "fresh":
            self.index = (self.index + 1) % len(self.requests)
            method, path, headers, body = self.requests[self.index]
            return raw_request(self.port, method, path, headers, FRESH_ID.sub(lambda _: str(uuid.uuid4()), body)), None
        slot = self.slots.popleft()  # in flight: no other request uses this slot until it answers
        if self.kind == "refresh":
            body = json.dumps({"refresh_token": slot["refresh"]})
            return raw_request(self.port, "POST", "/api/auth/refresh", {"X-Forwarded-For": slot["xff"]}, body), slot
        headers = {"Authorization": f"Bearer {slot['token']}", "X-Forwarded-For": slot["xff"]}
        base = f"/api/{slot['user']}/projects"
        if slot.get("project_id"):
            return raw_request(self.port, "DELETE", f"{base}/{slot['project_id']}", headers, None), slot
        return raw_request(self.port, "POST", base, headers, json.dumps({"github_repo_name": slot["repo"]})), slot

    def answered(self, slot: dict[str, Any] | None, status: int, body: bytes) -> None:
        if slot is None:
            return
        if self.kind == "refresh":
            match = REFRESH_RE.search(body)
            if status == 200 and match:
                slot["refresh"] = match.group(1).decode()
                self.slots.append(slot)
            return
        if slot.get("project_id"):
            slot["project_id"] = None
        elif status == 201 and (match := PROJECT_ID_RE.search(body)):
            slot["project_id"] = int(match.group(1))
        self.slots.append(slot)


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


async def run(spec: dict[str, Any], rate: float, seconds: float) -> dict[str, Any]:
    scenario = Scenario(spec)
    clock = time.perf_counter  # uvloop's loop.time() has millisecond resolution
    idle: list[Connection] = []
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counts = {"ok": 0, "non2xx": 0, "errors": 0, "skipped": 0}
    total = int(rate * (seconds + WARMUP_SECONDS))
    start = clock() + 0.05
    measured_from = start + WARMUP_SECONDS

    async def one(scheduled: float) -> None:
        try:
            request, slot = scenario.next()
        except IndexError:  # every stateful slot is in flight: the server is far behind
            counts["skipped"] += 1
            return
        conn = idle.pop() if idle else Connection(*await asyncio.open_connection("127.0.0.1", scenario.port))
        try:
            status, body = await conn.exchange(request)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            conn.writer.close()
            if scheduled >= measured_from:
                counts["errors"] += 1
            if slot is not None:
                scenario.slots.append(slot)
            return
        elapsed = clock() - scheduled
        scenario.answered(slot, status, body)
        idle.append(conn)
        statuses[status] = statuses.get(status, 0) + 1
        if scheduled >= measured_from:
            latencies.append(elapsed * 1000)
            counts["ok" if 200 <= status < 300 else "non2xx"] += 1

    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    began = time.perf_counter()
    await asyncio.gather(*tasks)
    drain = time.perf_counter() - began
    for conn in idle:
        conn.writer.close()
    answered = counts["ok"] + counts["non2xx"]
    return {
        **counts,
        "requests": answered,
        "rps": answered / (seconds + drain) if seconds else 0.0,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
        "max": max(latencies, default=float("nan")),
        "connections_opened": len(idle),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def main() -> None:
    spec_path, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    with open(spec_path) as fh:
        spec = json.load(fh)
    try:
        from uvloop import run as run_loop
    except ImportError:  # plain asyncio is fine at these rates
        run_loop = asyncio.run
    print(json.dumps(run_loop(run(spec, rate, seconds))))


if __name__ == "__main__":
    main()
