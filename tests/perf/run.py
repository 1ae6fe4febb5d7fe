"""The benchmark: `make bench` (or `python -m tests.perf.run`). See specs/performance.md.

Starts the API (`python -m backend serve`, production settings, 1 worker pinned to core 0) on
its own PostgreSQL database and Redis key prefix, seeds data with SQL, drives every scenario
with wrk (fixed concurrency, pinned to core 1) and with loadgen.py (fixed rate), runs the
reference app under the same conditions, and writes the table to tests/perf/results/.

Environment knobs:
  PERF_SECONDS=10        seconds per fixed-concurrency run     PERF_RATE_SECONDS=10  per fixed-rate run
  PERF_ONLY=list,get     run only these scenarios (plus setup)  PERF_SKIP=overload,...
  PERF_SCALE=1           also the 10k / 100k / 1M-task scale runs (seeding 1M rows takes a while)
  PERF_PROFILE=1         py-spy record the server during a list run (needs `pip install py-spy`);
                         PERF_PROFILE=batch_100 (a scenario's name): during a run of that one
  PERF_OUT=latest        results file name (tests/perf/results/<name>.md and .json)
  PERF_APP_<SETTING>=v   passed to the API as <SETTING>=v (e.g. PERF_APP_DB_POOL_SIZE=20)
  PERF_PORT=8100         the API's port (the reference app on +1, the scale runs on +2)
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.perf import seed
from tests.perf.wrkload import run_wrk

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).with_name("results")
SECONDS = float(os.environ.get("PERF_SECONDS", "10"))
RATE_SECONDS = float(os.environ.get("PERF_RATE_SECONDS", "10"))
RATE = 100.0
CONCURRENCY = (16, 64)
OVERLOAD = (64, 256, 1024)
LOGIN_CONCURRENCY = (4, 16)  # bcrypt-bound at ~4 logins/s/core: 64 connections only queue for 16 s
LOGIN_RATE = 2.0
STORM_CONNECTIONS = 16
SERVER_CORE, CLIENT_CORE = ("0", "1") if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else (None, None)
REDIS_URL = os.environ.get("PERF_REDIS_URL", "redis://127.0.0.1:6379/14")
ONLY = {s for s in os.environ.get("PERF_ONLY", "").split(",") if s}
SKIP = {s for s in os.environ.get("PERF_SKIP", "").split(",") if s}
PORT = int(os.environ.get("PERF_PORT", "8100"))


def wanted(name: str) -> bool:
    return (not ONLY or name in ONLY) and name not in SKIP


def xff(n: int) -> str:
    """A client address per request: like many clients behind a trusted proxy, each with small windows."""
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


# --- the server -----------------------------------------------------------------------------------


class Server:
    def __init__(
        self, name: str, cmd: list[str], env: dict[str, str], port: int, workdir: Path, probe: str = "/health/live"
    ) -> None:
        self.name, self.port = name, port
        with socket.socket() as probe_socket:  # another run's server there would answer our probes and our load
            if probe_socket.connect_ex(("127.0.0.1", port)) == 0:
                raise RuntimeError(f"port {port} is already in use (another benchmark?): set PERF_PORT")
        self.log = workdir / f"{name}.log"
        full_cmd = ["taskset", "-c", SERVER_CORE, *cmd] if SERVER_CORE else cmd
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(full_cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited at start-up: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline - 0.3:
                self.stop()
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}{probe}", timeout=1).close()
                return
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not start within 60 s")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process (every thread) so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def app_env(database_url: str, secret: str, prefix: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERF_")}
    env.update(
        ENVIRONMENT="production",
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL,
        REDIS_KEY_PREFIX=prefix,
        JWT_SECRET=secret,
        BCRYPT_ROUNDS="12",
        ACCESS_TOKEN_EXPIRE_MINUTES="30",
        RATE_LIMIT_ENABLED="true",
        # Raised for the load client, which speaks for many clients behind a trusted proxy.
        RATE_LIMIT_DEFAULT="1000000/minute",
        RATE_LIMIT_LOGIN="1000000/hour",
        RATE_LIMIT_LOGIN_IP="1000000/hour",
        TRUSTED_PROXIES="127.0.0.1",
        LOG_FORMAT="json",
        LOG_LEVEL="info",
        DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="0",
        # Ours and the references on pools of the same size (the lean reference used 20).
        DB_POOL_SIZE="20",
    )
    env.update({k.removeprefix("PERF_APP_"): v for k, v in os.environ.items() if k.startswith("PERF_APP_")})
    return env


# --- scenarios --------------------------------------------------------------------------------------


def static(name: str, port: int, requests: list[list[Any]]) -> dict[str, Any]:
    return {"name": name, "port": port, "kind": "static", "requests": requests}


def auth(token: str, n: int) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Forwarded-For": xff(n)}


def scenarios(data: seed.Dataset, port: int) -> dict[str, dict[str, Any]]:
    rnd = random.Random(7)
    list_token, write_token = data.token(data.list_user), data.token(data.write_user)
    search_token, pins_token = data.token(data.search_user), data.token(data.pins_user)
    writer_tokens = {writer: data.token(writer) for writer in data.writers}
    n = 256
    list_ids, write_ids = data.task_ids[data.list_user], data.task_ids[data.write_user]
    wpath = f"/api/{data.write_user}/tasks"
    lpath = f"/api/{data.list_user}/tasks"
    first, second = data.list_pair
    list_gets = {
        "label": f"{lpath}?label={data.list_label}",
        "labels2": f"{lpath}?label={first}&label={second}",
        "subtree": f"{lpath}/{data.subtree_root}?include=subtasks",
        "position": f"{lpath}?sort=position&root=true",
    }
    return {
        **{
            name: static(name, port, [["GET", path, auth(list_token, i), None] for i in range(n)])
            for name, path in list_gets.items()
        },
        "label_10k": static(
            "label_10k",
            port,
            [
                ["GET", f"/api/{data.search_user}/tasks?label={seed.SEARCH_LABEL}", auth(search_token, i), None]
                for i in range(n)
            ],
        ),
        "list": static(
            "list", port, [["GET", f"/api/{data.list_user}/tasks", auth(list_token, i), None] for i in range(n)]
        ),
        "get": static(
            "get",
            port,
            [
                ["GET", f"/api/{data.list_user}/tasks/{rnd.choice(list_ids)}", auth(list_token, i), None]
                for i in range(n)
            ],
        ),
        "create": static(
            "create",
            port,
            [
                ["POST", wpath, auth(write_token, i), json.dumps({"title": f"Created {i}", "priority": "high"})]
                for i in range(n)
            ],
        ),
        "update": static(
            "update",
            port,
            [
                [
                    "PATCH",
                    f"{wpath}/{rnd.choice(write_ids)}",
                    auth(write_token, i),
                    json.dumps({"title": f"Updated {i}"}),
                ]
                for i in range(n)
            ],
        ),
        "complete": static(
            "complete",
            port,
            [
                [
                    "PATCH",
                    f"{wpath}/{rnd.choice(write_ids)}/complete",
                    auth(write_token, i),
                    json.dumps({"completed": i % 2 == 0}),
                ]
                for i in range(n)
            ],
        ),
        # The same writes spread over WRITERS users: a user's writes are serialised on its row (the change feed's
        # order, specs/api/changes.md), so the rows above measure one user's queue, these the service's.
        **{
            f"{name}_{len(data.writers)}users": static(
                f"{name}_{len(data.writers)}users",
                port,
                [
                    [
                        "PATCH",
                        f"/api/{writer}/tasks/{rnd.choice(data.task_ids[writer])}{suffix}",
                        auth(writer_tokens[writer], i),
                        json.dumps(body(i)),
                    ]
                    for i in range(n)
                    for writer in [data.writers[i % len(data.writers)]]
                ],
            )
            for name, suffix, body in (
                ("update", "", lambda i: {"title": f"Updated {i}"}),
                ("complete", "/complete", lambda i: {"completed": i % 4 < 2}),
            )
        },
        "search": static(
            "search",
            port,
            [
                ["GET", f"/api/{data.search_user}/tasks/search?q={seed.SEARCH_WORD}", auth(search_token, i), None]
                for i in range(n)
            ],
        ),
        "projects_list": static(
            "projects_list",
            port,
            [["GET", f"/api/{data.pins_user}/projects", auth(pins_token, i), None] for i in range(n)],
        ),
        # Issue 19: the search user's feed (10 000 upserts) from a cursor 1 and 200 changes behind its head.
        **{
            name: static(
                name,
                port,
                [
                    [
                        "GET",
                        f"/api/{data.search_user}/changes?cursor=c{data.feed_seq - behind}&limit=200",
                        auth(search_token, i),
                        None,
                    ]
                    for i in range(n)
                ],
            )
            for name, behind in (("changes_1", 1), ("changes_200", 200))
        },
        "batch_100": batch_spec(data, port, rnd),
        "login": static(
            "login",
            port,
            [
                [
                    "POST",
                    "/api/auth/login",
                    {"X-Forwarded-For": xff(i)},
                    json.dumps(
                        {"email": data.email(data.login_users[i % len(data.login_users)]), "password": seed.PASSWORD}
                    ),
                ]
                for i in range(n)
            ],
        ),
    }


def batch_spec(data: seed.Dataset, port: int, rnd: random.Random) -> dict[str, Any]:
    """100 `task.update` commands on 100 of the write user's tasks per batch; every command id is new on every
    send (`@uuid@`, wrkload.py), so each batch applies all 100 and none is a replay."""
    token, ids = data.token(data.write_user), data.task_ids[data.write_user]
    requests = []
    for i in range(64):
        commands = [
            {"id": "@uuid@", "op": "task.update", "target": task_id, "data": {"title": f"Batched {i}.{k}"}}
            for k, task_id in enumerate(rnd.sample(ids, BATCH_COMMANDS))
        ]
        requests.append(["POST", f"/api/{data.write_user}/batch", auth(token, i), json.dumps({"commands": commands})])
    return {"name": "batch_100", "port": port, "kind": "fresh", "requests": requests}


def pin_spec(data: seed.Dataset, port: int) -> dict[str, Any]:
    data.reset_pinners()
    slots = [
        {"user": user, "token": data.token(user), "repo": f"perf-owner/cycle-{i}", "xff": xff(1000 + i)}
        for i, user in enumerate(data.pinners)
    ]
    return {"name": "pin_unpin", "port": port, "kind": "pin", "slots": slots}


def refresh_spec(data: seed.Dataset, port: int) -> dict[str, Any]:
    """Fresh sessions every time: a refresh run leaves the last rotated tokens with the load generator."""
    sessions = data.new_sessions([data.login_users[i % len(data.login_users)] for i in range(64)])
    slots = [{"refresh": refresh, "xff": xff(2000 + i)} for i, (_, refresh) in enumerate(sessions)]
    return {"name": "refresh", "port": port, "kind": "refresh", "slots": slots}


# --- load -----------------------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    load: str
    result: dict[str, Any]
    rss_mb: float
    # The machine's 1-minute load average when the run ended: other work on the box makes figures noisy.
    loadavg: float = field(default_factory=lambda: os.getloadavg()[0])


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        r = row.result
        print(
            f"  {row.scenario:<24} {row.load:<10} {r['rps']:8.1f} req/s  p50 {r['p50']:7.2f}  p95 {r['p95']:7.2f}  "
            f"p99 {r['p99']:7.2f} ms  err {r['errors']}  non2xx {r['non2xx']}  cpu {r['cpu_ms']:.2f} ms/req  "
            f"rss {row.rss_mb:.0f} MB  load {row.loadavg:.1f}",
            flush=True,
        )
        return row


def closed(server: Server, spec: dict[str, Any], connections: int, workdir: Path, timeout: int = 10) -> dict[str, Any]:
    before = server.cpu_seconds()
    result = run_wrk(spec, connections, SECONDS, workdir, core=CLIENT_CORE, timeout=timeout)
    return with_cpu(result, server.cpu_seconds() - before)


def with_cpu(result: dict[str, Any], cpu: float) -> dict[str, Any]:
    """Server CPU per answered request: unlike req/s, barely moved by other work on the machine."""
    return {**result, "cpu_ms": 1000 * cpu / max(1, result["requests"])}


def open_loop(
    server: Server, spec: dict[str, Any], rate: float, workdir: Path, seconds: float = RATE_SECONDS
) -> dict[str, Any]:
    path = workdir / f"{spec['name']}-rate.json"
    path.write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "tests.perf.loadgen", str(path), str(rate), str(seconds)]
    if CLIENT_CORE:
        cmd = ["taskset", "-c", CLIENT_CORE, *cmd]
    before = server.cpu_seconds()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return with_cpu(json.loads(out.strip().splitlines()[-1]), server.cpu_seconds() - before)


# Issue 18: the list user's tasks by label, by two labels, a subtree, top-level tasks in manual order; and
# one label on the 10 000-task user.
LABELS_AND_SUBTASKS = ("label", "labels2", "subtree", "position", "label_10k")
P99_TARGET_MS = 25.0  # every non-login route at the steady rate (issues 16 and 18)
# Issue 19: the feed from a cursor 1 and 200 changes behind; a batch of 100 commands (p99 < 250 ms), at rates a
# 100-command batch can be served at on one core (each is 100 writes).
FEED = ("changes_1", "changes_200")
BATCH_COMMANDS = 100
BATCH_CONCURRENCY = (1, 4)
BATCH_RATE = 2.0
BATCH_P99_TARGET_MS = 250.0


def run_scenarios(report: Report, server: Server, data: seed.Dataset, workdir: Path) -> None:
    specs = scenarios(data, server.port)
    first = len(report.rows)
    spread = tuple(f"{name}_{seed.WRITERS}users" for name in ("update", "complete"))
    writes = ("create", "update", "complete", *spread)
    names = ("list", "get", *writes, "search", *LABELS_AND_SUBTASKS, "projects_list", *FEED)
    for name in (*names, "pin_unpin", "refresh"):
        if not wanted(name):
            continue
        fresh = {"pin_unpin": lambda: pin_spec(data, server.port), "refresh": lambda: refresh_spec(data, server.port)}
        for connections in CONCURRENCY:
            spec = fresh[name]() if name in fresh else specs[name]
            report.add(Row(name, f"c{connections}", closed(server, spec, connections, workdir), server.rss_mb()))
        spec = fresh[name]() if name in fresh else specs[name]
        report.add(Row(name, f"{RATE:.0f} req/s", open_loop(server, spec, RATE, workdir), server.rss_mb()))
    if wanted("login"):
        for connections in LOGIN_CONCURRENCY:
            report.add(
                Row(
                    "login",
                    f"c{connections}",
                    closed(server, specs["login"], connections, workdir, 30),
                    server.rss_mb(),
                )
            )
        report.add(
            Row(
                "login",
                f"{LOGIN_RATE:.0f} req/s",
                open_loop(server, specs["login"], LOGIN_RATE, workdir),
                server.rss_mb(),
            )
        )
    if wanted("batch_100"):
        run_batch(report, server, data, specs["batch_100"], workdir)
    steady = [row for row in report.rows[first:] if row.load == f"{RATE:.0f} req/s" and row.scenario != "login"]
    if steady:
        figures = ", ".join(
            f"{row.scenario} {row.result['p99']:.2f} ms{'' if row.result['p99'] < P99_TARGET_MS else ' (**missed**)'}"
            for row in steady
        )
        report.sections.append(f"**p99 at {RATE:.0f} req/s (target < {P99_TARGET_MS:.0f} ms):** {figures}.")
    if any(wanted(name) for name in LABELS_AND_SUBTASKS):
        first_label, second_label = data.list_pair
        report.sections.append(
            f"**Labels and subtasks (the list user: {seed.LIST_TASKS} top-level tasks, "
            f"{len(seed.subtree_parents())} subtasks, {len(seed.LABELS)} labels, 0-3 per task):** "
            f"`label={data.list_label}` matches {data.label_counts[data.list_label]} tasks, "
            f"`label={first_label}&label={second_label}` {data.pair_counts[data.list_pair]}; `include=subtasks` "
            f"answers task {data.subtree_root} with 30 tasks under it on 3 levels; `sort=position&root=true` "
            f"a page of {seed.LIST_TASKS}. `label_10k`: `label={seed.SEARCH_LABEL}` on the search user's 10 000 "
            f"tasks (labelled the same way) matches {data.search_label_count}. "
            f"Plans (EXPLAIN ANALYZE, BUFFERS; after the runs):\n\n{label_plans(data)}"
        )
    if wanted("search"):
        report.sections.append(
            f"**Search plan** (`q={seed.SEARCH_WORD}` on the search user, as the server runs it; EXPLAIN ANALYZE, "
            f"BUFFERS, after the runs):\n\n```\n{search_plan(data)}\n```\n"
        )


def run_batch(report: Report, server: Server, data: seed.Dataset, spec: dict[str, Any], workdir: Path) -> None:
    """100-command batches at a few connections and at BATCH_RATE; then what the batches recorded, to show each
    command was applied (not replayed, not failed)."""
    rows = [
        report.add(Row("batch_100", f"c{connections}", closed(server, spec, connections, workdir, 30), server.rss_mb()))
        for connections in BATCH_CONCURRENCY
    ]
    rows.append(
        report.add(
            Row("batch_100", f"{BATCH_RATE:.0f} req/s", open_loop(server, spec, BATCH_RATE, workdir), server.rss_mb())
        )
    )
    import psycopg

    with psycopg.connect(data.url) as conn:
        recorded, failed = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE result::json->>'status' <> '200') FROM batch_commands"
            " WHERE user_id = %s",
            (data.write_user,),
        ).fetchone()  # type: ignore[misc]
    answered = sum(row.result["requests"] for row in rows)
    p99 = rows[-1].result["p99"]
    verdict = "" if p99 < BATCH_P99_TARGET_MS else " (**missed**)"
    report.sections.append(
        f"**Batches ({BATCH_COMMANDS} `task.update` commands each, fresh command ids):** p99 at {BATCH_RATE:.0f} "
        f"req/s {p99:.2f} ms{verdict} (target < {BATCH_P99_TARGET_MS:.0f} ms); {answered} batches answered, "
        f"{recorded} commands recorded, {failed} of them failed; statuses at {BATCH_RATE:.0f} req/s: "
        f"{rows[-1].result.get('statuses')}."
    )


def run_storm(report: Report, server: Server, data: seed.Dataset, workdir: Path) -> None:
    """List latency at 100 req/s, idle and then while logins saturate bcrypt."""
    specs = scenarios(data, server.port)
    idle = report.add(
        Row("list (idle)", f"{RATE:.0f} req/s", open_loop(server, specs["list"], RATE, workdir), server.rss_mb())
    )
    storm: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: storm.update(
            with_cpu(
                run_wrk(specs["login"], STORM_CONNECTIONS, RATE_SECONDS + 3, workdir, core=CLIENT_CORE, timeout=30),
                float("nan"),
            )
        ),
        daemon=True,
    )
    thread.start()
    time.sleep(1.0)  # the storm is under way before the measured list traffic starts
    during = report.add(
        Row("list (login storm)", f"{RATE:.0f} req/s", open_loop(server, specs["list"], RATE, workdir), server.rss_mb())
    )
    thread.join()
    report.add(Row("login storm itself", f"c{STORM_CONNECTIONS}", storm, server.rss_mb()))
    ratio = during.result["p99"] / idle.result["p99"]
    report.sections.append(
        f"**Login storm:** list p99 {idle.result['p99']:.2f} ms idle, {during.result['p99']:.2f} ms while "
        f"{STORM_CONNECTIONS} connections log in ({storm['rps']:.1f} logins/s): **{ratio:.2f}x** (target <= 2x)."
    )


def run_reference(report: Report, server: Server, data: seed.Dataset, env: dict[str, str], workdir: Path) -> None:
    """Ours and the two references (tests/perf/reference_app.py), one after the other at each concurrency,
    while the others are idle. The target is set against the lean one (Core, one SELECT, no ORM)."""
    reference = Server(
        "reference",
        [sys.executable, "-m", "tests.perf.reference_app", "--port", str(PORT + 1)],
        env,
        PORT + 1,
        workdir,
        "/docs",
    )
    try:
        ours = scenarios(data, server.port)["list"]
        lean = static("lean_list", PORT + 1, [["GET", f"/lean/users/{data.list_user}/tasks", {}, None]])
        orm = static("orm_list", PORT + 1, [["GET", f"/users/{data.list_user}/tasks", {}, None]])
        lines = [
            "| connections | ours req/s | lean reference req/s | **ours / lean** | ORM reference req/s | ours / ORM "
            "| p99 ms ours / lean | CPU ms/req ours / lean / ORM |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for connections in CONCURRENCY:
            a = report.add(
                Row("list (ours)", f"c{connections}", closed(server, ours, connections, workdir), server.rss_mb())
            )
            b = report.add(
                Row("list (lean reference)", f"c{connections}", closed(reference, lean, connections, workdir), 0.0)
            )
            c = report.add(
                Row(
                    "list (ORM reference)",
                    f"c{connections}",
                    closed(reference, orm, connections, workdir),
                    reference.rss_mb(),
                )
            )
            lines.append(
                f"| {connections} | {a.result['rps']:.0f} | {b.result['rps']:.0f} | "
                f"**{a.result['rps'] / b.result['rps']:.2f}x** | {c.result['rps']:.0f} | "
                f"{a.result['rps'] / c.result['rps']:.2f}x | {a.result['p99']:.2f} / {b.result['p99']:.2f} | "
                f"{a.result['cpu_ms']:.2f} / {b.result['cpu_ms']:.2f} / {c.result['cpu_ms']:.2f} |"
            )
        report.sections.append(
            "**References (list of 50, same run; target: ours >= 0.7x the lean reference):**\n\n" + "\n".join(lines)
        )
    finally:
        reference.stop()


def run_overload(report: Report, server: Server, data: seed.Dataset, workdir: Path) -> None:
    spec = scenarios(data, server.port)["list"]
    for connections in OVERLOAD:
        report.add(
            Row("list overload", f"c{connections}", closed(server, spec, connections, workdir, 30), server.rss_mb())
        )
    started = time.perf_counter()
    urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=10).close()
    took = 1000 * (time.perf_counter() - started)
    report.sections.append(f"**After the overload:** `/health` (database and Redis) answered in {took:.1f} ms.")


def run_profile(server: Server, data: seed.Dataset, workdir: Path, name: str = "list") -> None:
    """py-spy samples the server during a run of scenario `name` (64 connections; a batch at its highest
    concurrency); the top frames go to results/profile-<name>.md."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = workdir / "profile.txt"
    seconds = int(SECONDS)
    recorder = subprocess.Popen(
        [
            pyspy,
            "record",
            "--pid",
            str(server.proc.pid),
            "--duration",
            str(seconds),
            "--rate",
            "200",
            "--format",
            "raw",
            "-o",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    # A batch alone: batches of one user at once deadlock (specs/performance.md, issue 19) and would be sampled waiting.
    connections = BATCH_CONCURRENCY[0] if name == "batch_100" else 64
    closed(server, scenarios(data, server.port)[name], connections, workdir, 30)
    recorder.wait()
    out = RESULTS / f"profile-{name}.md"
    out.write_text(
        summarise_profile(raw.read_text(), int(os.environ.get("PERF_PROFILE_TOP", "40")), f"`{name}` at {connections}")
    )
    print(f"  profile written to {out}")


IDLE_FRAMES = ("Condition.wait ", "Queue.get ", "Event.wait ")  # idle worker threads, not work


def summarise_profile(collapsed: str, top: int = 40, run: str = "`list` at 64") -> str:
    """Inclusive share of samples per frame (function (file)), from py-spy's collapsed stacks."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f.split(":")[0] for f in stack.split(";")]
        if frames[-1].startswith(IDLE_FRAMES):
            continue
        total += count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count

    def table(counts: dict[str, int]) -> str:
        rows = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return "\n".join(f"| {100 * c / total:5.1f}% | `{f}` |" for f, c in rows)

    return (
        f"# py-spy: the server during {run} connections ({total} samples)\n\n"
        f"## Inclusive (frame anywhere on the stack)\n\n| share | frame |\n|---|---|\n{table(inclusive)}\n\n"
        f"## Self (innermost frame)\n\n| share | frame |\n|---|---|\n{table(own)}\n"
    )


# --- scale -----------------------------------------------------------------------------------------------

SCALE_LEVELS = ((0, 10), (10, 100), (100, 1_000))  # tasks per user (1 000 users): 10k, 100k, 1M in total


def scale_specs(data: seed.Dataset, port: int, users: list[str]) -> dict[str, dict[str, Any]]:
    tokens = {u: data.token(u) for u in users}
    queries = {
        "list": "",
        "filtered list": "?status=pending&priority=high",
        "search": f"/search?q={seed.SEARCH_WORD}",
        "count": "?completed=true&limit=1",
    }
    return {
        name: static(name, port, [["GET", f"/api/{u}/tasks{q}", auth(tokens[u], i), None] for i, u in enumerate(users)])
        for name, q in queries.items()
    }


def plans(url: str, statements: dict[str, Any]) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement, its parameters bound as literals."""
    import psycopg
    from sqlalchemy.dialects import postgresql

    found = {}
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    with psycopg.connect(url) as conn:
        for name, stmt in statements.items():
            sql = str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
            rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql).fetchall()
            found[name] = "\n".join(r[0] for r in rows)
    return found


def explain(url: str, user: str) -> dict[str, str]:
    """The statements the server runs on PostgreSQL (each row's labels folded in, as `list_tasks` does)."""
    from backend.models.task import TaskSort
    from backend.services.tasks import TaskFilters, count_query, list_query

    sort = TaskSort.CREATED_AT_DESC
    statements = {
        "list": list_query(user, TaskFilters(), sort, 50, 0),
        "filtered list": list_query(user, TaskFilters(status="pending", priority="high"), sort, 50, 0),  # type: ignore[arg-type]
        "search": list_query(user, TaskFilters(q=seed.SEARCH_WORD), sort, 50, 0),
        "label filter": list_query(user, TaskFilters(labels=(seed.LABELS[0],)), sort, 50, 0),
        "count": count_query(user, TaskFilters(completed=True)),
    }
    return plans(url, statements)


def label_plans(data: seed.Dataset) -> str:
    """The list user's label filters and manual-order page as the server runs them (issue 18)."""
    from backend.models.task import TaskSort
    from backend.services.tasks import TaskFilters, list_query

    user, newest = data.list_user, TaskSort.CREATED_AT_DESC
    statements = {
        f"label={data.list_label}": list_query(user, TaskFilters(labels=(data.list_label,)), newest, 50, 0),
        "label={}&label={}".format(*data.list_pair): list_query(
            user, TaskFilters(labels=data.list_pair), newest, 50, 0
        ),
        "sort=position&root=true": list_query(user, TaskFilters(root=True), TaskSort.POSITION, 50, 0),
        f"label={seed.SEARCH_LABEL} (10 000-task user)": list_query(
            data.search_user, TaskFilters(labels=(seed.SEARCH_LABEL,)), newest, 50, 0
        ),
    }
    return "\n".join(f"`{name}`:\n\n```\n{plan}\n```\n" for name, plan in plans(data.url, statements).items())


def search_plan(data: seed.Dataset) -> str:
    """The search row's statement: the trigram scan of `ix_tasks_user_id_search_trgm` (revision 0014), not a walk of
    the user's rows."""
    import psycopg
    from sqlalchemy.dialects import postgresql

    from backend.models.task import TaskSort
    from backend.services.tasks import TaskFilters, list_query

    query = TaskFilters(q=seed.SEARCH_WORD)
    statement = list_query(data.search_user, query, TaskSort.CREATED_AT_DESC, 50, 0)
    # Values bound as the server binds them (`plans` inlines literals, where a pattern's `%` comes out doubled).
    compiled = statement.compile(dialect=postgresql.psycopg.dialect())  # type: ignore[no-untyped-call]
    with psycopg.connect(data.url) as conn:
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + str(compiled), compiled.params).fetchall()
    return "\n".join(row[0] for row in rows)


def run_scale(report: Report, env_for: Any, workdir: Path, secret: str) -> None:
    name = f"taskdeck_perf_scale_{uuid.uuid4().hex[:8]}"
    url = seed.create_database(name)
    server = None
    lines = [
        "| tasks in total | seeding s | scenario | p50 ms | p95 ms | p99 ms | errors + non-2xx |",
        "|---|---|---|---|---|---|---|",
    ]
    plan_text = ["# EXPLAIN (ANALYZE, BUFFERS) of the task queries at each scale\n"]
    p95: dict[str, list[float]] = {}
    try:
        data = seed.Dataset(url=url, secret=secret)
        for first, last in SCALE_LEVELS:
            took = seed.seed_scale(url, secret, first, last)
            total = last * seed.SCALE_USERS
            if server is None:
                server = Server(
                    "scale",
                    [sys.executable, "-m", "backend", "serve", "--port", str(PORT + 2)],
                    env_for(url),
                    PORT + 2,
                    workdir,
                )
            users = [f"perf-scale-{i:04d}" for i in random.Random(total).sample(range(seed.SCALE_USERS), 50)]
            for scenario, spec in scale_specs(data, PORT + 2, users).items():
                result = open_loop(server, spec, RATE, workdir)
                report.add(Row(f"scale {total:,} {scenario}", f"{RATE:.0f} req/s", result, server.rss_mb()))
                p95.setdefault(scenario, []).append(result["p95"])
                lines.append(
                    f"| {total:,} | {took:.1f} | {scenario} | {result['p50']:.2f} | {result['p95']:.2f} | "
                    f"{result['p99']:.2f} | {result['errors'] + result['non2xx']} |"
                )
            plan_text.append(f"\n## {total:,} tasks ({last} per user)\n")
            for scenario, plan in explain(url, users[0]).items():
                plan_text.append(f"### {scenario}\n\n```\n{plan}\n```\n")
        growth = ", ".join(f"{s} {v[-1] / v[0]:.2f}x" for s, v in p95.items())
        report.sections.append(
            "**Scale (1 000 users, 100 req/s over 50 random users; target p95 growth <= 1.5x from 10k to 1M):** "
            f"{growth}.\n\n" + "\n".join(lines) + "\n\nQuery plans: `tests/perf/results/scale-plans.md`."
        )
        (RESULTS / "scale-plans.md").write_text("\n".join(plan_text))
    finally:
        if server is not None:
            server.stop()
        seed.drop_database(name)


# --- report -------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    pg = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "show server_version"], capture_output=True, text=True
    ).stdout.strip()
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[:1]
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem_kb / 1024 / 1024:.1f} GiB RAM; Python {platform.python_version()}; "
        f"PostgreSQL {pg}; {' '.join(wrk)}; server pinned to core {SERVER_CORE}, load generators to core {CLIENT_CORE}"
    )


def render(report: Report, conditions: str) -> str:
    lines = [
        f"# Benchmark results ({time.strftime('%Y-%m-%d %H:%M:%S')})",
        "",
        conditions,
        "",
        "| scenario | load | req/s | p50 ms | p95 ms | p99 ms | errors | non-2xx | server CPU ms/req | server RSS MB "
        "| load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report.rows:
        r = row.result
        lines.append(
            f"| {row.scenario} | {row.load} | {r['rps']:.1f} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | "
            f"{r['errors']} | {r['non2xx']} | {r['cpu_ms']:.2f} | {row.rss_mb:.0f} | {row.loadavg:.1f} |"
        )
    return "\n".join([*lines, "", *(s + "\n" for s in report.sections)])


@contextlib.contextmanager
def redis_prefix() -> Iterator[str]:
    import redis

    prefix = f"taskdeck-perf-{uuid.uuid4().hex[:8]}"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        client.close()


def main() -> None:
    # Ctrl-C or a plain `kill` still stops the servers and drops the database (the `finally` blocks).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    RESULTS.mkdir(exist_ok=True)
    out = os.environ.get("PERF_OUT", "latest")
    secret = secrets.token_urlsafe(48)
    db_name = f"taskdeck_perf_{uuid.uuid4().hex[:8]}"
    report = Report()
    with tempfile.TemporaryDirectory(prefix="taskdeck-perf-") as tmp, redis_prefix() as prefix:
        workdir = Path(tmp)
        print(f"PostgreSQL database {db_name}, Redis prefix {prefix}", flush=True)
        url = seed.create_database(db_name)
        server = None
        try:
            data, took = seed.seed_main(url, secret)
            print(f"seeded in {took:.1f} s", flush=True)
            env = app_env(url, secret, prefix, workdir)
            server = Server("api", [sys.executable, "-m", "backend", "serve", "--port", str(PORT)], env, PORT, workdir)
            report.sections.append(f"**Server RSS at start-up:** {server.rss_mb():.0f} MB.")
            run_scenarios(report, server, data, workdir)
            if wanted("storm"):
                run_storm(report, server, data, workdir)
            if wanted("reference"):
                run_reference(report, server, data, env, workdir)
            if wanted("overload"):
                run_overload(report, server, data, workdir)
            if profile := os.environ.get("PERF_PROFILE"):
                run_profile(server, data, workdir, "list" if profile == "1" else profile)
            rss = server.rss_mb()
            report.sections.append(f"**Server RSS after the runs:** {rss:.0f} MB (target < 150 MB).")
        finally:
            if server is not None:
                server.stop()
            seed.drop_database(db_name)
        if os.environ.get("PERF_SCALE") == "1":
            run_scale(report, lambda u: app_env(u, secret, prefix, workdir), workdir, secret)
    pool = {k: env.get(k, "default") for k in ("DB_POOL_SIZE", "DB_MAX_OVERFLOW", "DB_POOL_TIMEOUT")}
    conditions = (
        f"Machine: {machine()}.\n\nConditions: 1 uvicorn worker (`python -m backend serve`), ENVIRONMENT=production, "
        f"BCRYPT_ROUNDS=12, rate limiting on (Redis, limits raised; clients spread over 256 X-Forwarded-For addresses "
        f"behind a trusted proxy), JSON logs to a file, pool {pool}. Fixed concurrency: wrk, {SECONDS:.0f} s per run. "
        f"Fixed rate: tests/perf/loadgen.py (open loop, latency from the scheduled send time), {RATE_SECONDS:.0f} s "
        "after 1 s of warm-up. Latencies in ms."
    )
    text = render(report, conditions)
    (RESULTS / f"{out}.md").parent.mkdir(parents=True, exist_ok=True)  # PERF_OUT=issue18/bench: a subfolder
    (RESULTS / f"{out}.md").write_text(text)
    (RESULTS / f"{out}.json").write_text(
        json.dumps(
            [{"scenario": r.scenario, "load": r.load, "rss_mb": r.rss_mb, **r.result} for r in report.rows], indent=1
        )
    )
    print("\n" + text)


if __name__ == "__main__":
    main()
