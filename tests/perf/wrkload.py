"""Closed-loop load with wrk: a Lua script per scenario spec (the spec format of loadgen.py).

Static scenarios rotate through pre-formatted requests (auth header, body, client address); `fresh` ones
too, but each `@uuid@` in a body becomes a UUID never sent before (batch command ids: none is a replay).
Stateful ones (pin then unpin the pinned id; refresh with the token the last refresh returned)
run one connection per wrk thread, so a thread's Lua state is one connection's sequence.
Every script's `done` prints one `PERF_JSON {...}` line with the counts and percentiles.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('PERF_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p95":%d,"p99":%d,"max":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""

STATIC = r"""
local data = %(data)s
local reqs = {}
local i = 0
init = function(args)
  for n, r in ipairs(data) do
    reqs[n] = wrk.format(r[1], r[2], r[3], r[4])
  end
  i = math.random(#reqs)
end
request = function()
  i = i %% #reqs + 1
  return reqs[i]
end
"""

FRESH = r"""
local data = %(data)s
local salt = "%(salt)s"
local counter = 0
local sent = 0
local i = 0
setup = function(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
init = function(args)
  i = math.random(#data)
end
local function fresh()  -- salt, this thread's number (set by setup), a count: unique within the run
  sent = sent + 1
  return string.format("%%s-%%04x-4000-8000-%%012x", salt, tid, sent)
end
request = function()
  i = i %% #data + 1
  local r = data[i]
  return wrk.format(r[1], r[2], r[3], (string.gsub(r[4], "@uuid@", fresh)))
end
"""

SLOTTED = r"""
local slots = %(data)s
local slot = nil
local counter = 0
setup = function(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
init = function(args)
  slot = slots[tid]
end
"""

PIN = r"""
local pinned = nil
request = function()
  local headers = {["Authorization"] = "Bearer " .. slot.token, ["X-Forwarded-For"] = slot.xff,
                   ["Content-Type"] = "application/json"}
  local base = "/api/" .. slot.user .. "/projects"
  if pinned then
    return wrk.format("DELETE", base .. "/" .. pinned, headers)
  end
  return wrk.format("POST", base, headers, '{"github_repo_name":"' .. slot.repo .. '"}')
end
response = function(status, headers, body)
  if pinned then
    pinned = nil
  elseif status == 201 then
    pinned = string.match(body, '"id":(%d+)')
  end
end
"""

REFRESH = r"""
request = function()
  local headers = {["X-Forwarded-For"] = slot.xff, ["Content-Type"] = "application/json"}
  return wrk.format("POST", "/api/auth/refresh", headers, '{"refresh_token":"' .. slot.refresh .. '"}')
end
response = function(status, headers, body)
  if status == 200 then
    slot.refresh = string.match(body, '"refresh_token":"([^"]+)"')
  end
end
"""


def lua_value(value: Any) -> str:
    """Python data as a Lua literal (strings in long brackets: no escaping to get wrong)."""
    if value is None:
        return "nil"
    if isinstance(value, str):
        return f"[==[{value}]==]"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"[ {lua_value(k)} ] = {lua_value(v)}" for k, v in value.items()) + "}"
    return "{" + ", ".join(lua_value(v) for v in value) + "}"


def lua_script(spec: dict[str, Any]) -> str:
    if spec["kind"] in ("static", "fresh"):
        requests = []
        for method, path, headers, body in spec["requests"]:
            headers = {**headers, **({"Content-Type": "application/json"} if body is not None else {})}
            requests.append([method, path, headers, body])
        if spec["kind"] == "fresh":  # a salt per script: ids of one run never meet another run's
            return FRESH % {"data": lua_value(requests), "salt": secrets.token_hex(4)} + DONE
        return STATIC % {"data": lua_value(requests)} + DONE
    body = PIN if spec["kind"] == "pin" else REFRESH
    return SLOTTED % {"data": lua_value(spec["slots"])} + body + DONE


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    import os

    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not installed: run `sudo apt-get install -y wrk` (Debian/Ubuntu) and try again")
    return found


def run_wrk(
    spec: dict[str, Any], connections: int, seconds: float, workdir: Path, *, core: str | None, timeout: int = 10
) -> dict[str, Any]:
    """wrk at a fixed number of connections; one thread per connection for stateful scenarios."""
    script = workdir / f"{spec['name']}.lua"
    script.write_text(lua_script(spec))
    threads = connections if spec["kind"] not in ("static", "fresh") else min(2, connections)
    cmd = [
        wrk_binary(),
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        f"{timeout}s",
    ]
    cmd += ["-s", str(script), f"http://127.0.0.1:{spec['port']}"]
    if core is not None:
        cmd = ["taskset", "-c", core, *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or ".lua:" in done.stderr:  # wrk runs on without a script that fails to load
        raise RuntimeError(f"wrk failed: {done.stdout}{done.stderr}")
    out = done.stdout
    match = re.search(r"^PERF_JSON (\{.*\})$", out, re.MULTILINE)
    if not match:
        raise RuntimeError(f"wrk printed no results:\n{out}")
    raw = json.loads(match.group(1))
    seconds_run = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "rps": raw["requests"] / seconds_run,
        "p50": raw["p50"] / 1000,
        "p95": raw["p95"] / 1000,
        "p99": raw["p99"] / 1000,
        "max": raw["max"] / 1000,
        "non2xx": raw["status"],
        "errors": raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
    }
