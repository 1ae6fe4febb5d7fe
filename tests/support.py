"""Helpers shared by test modules: clients with a chosen peer address, a private Redis server, log capture,
and the catalogue of documented operations (read from the app's own OpenAPI, so new routes join every
sweep over it by themselves)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from fastapi import FastAPI

from backend.logging_setup import JsonFormatter
from backend.main import create_app
from backend.migrations.runner import upgrade
from backend.models.common import metadata
from tests import environment
from tests.conftest import REDIS_URL, RUN_ID, UserCtx, make_settings


def client_for(app: FastAPI, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    """An HTTP client whose requests arrive from the socket peer `ip`."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def unique_prefix() -> str:
    return f"taskdeck-test-{RUN_ID}-{uuid.uuid4().hex[:8]}"


def limited(prefix: str, redis_url: str | None = REDIS_URL, **overrides: Any) -> dict[str, Any]:
    """Settings overrides turning rate limiting on, on the test Redis, with loose limits unless overridden."""
    values: dict[str, Any] = {
        "RATE_LIMIT_ENABLED": True,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "RATE_LIMIT_DEFAULT": "1000/minute",
        "RATE_LIMIT_LOGIN": "1000/hour",
        "RATE_LIMIT_LOGIN_IP": "1000/hour",
        "RATE_LIMIT_REGISTER": "1000/hour",
        "RATE_LIMIT_SYNC": "1000/hour",
    }
    values.update(overrides)
    return values


def redis_keys(prefix: str, url: str = REDIS_URL) -> list[str]:
    with redis.Redis.from_url(url) as conn:
        return [key.decode() for key in conn.scan_iter(match=f"{prefix}:*", count=500)]


def delete_keys(prefix: str, url: str = REDIS_URL) -> None:
    with redis.Redis.from_url(url) as conn:
        keys = list(conn.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            conn.delete(*keys)


free_port = environment.free_port


def stop(*processes: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM processes of the test's own at once (graceful shutdowns), SIGKILL any not ended in `timeout`."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    for process in running:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"not ready after {timeout} s")


class RedisServer:
    """A private redis-server on its own port, which a test may kill and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = environment.redis_command(self.port)
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers() -> bool:
            with redis.Redis.from_url(self.url, socket_timeout=0.5) as conn:
                return bool(conn.ping())

        wait_until(answers)

    def pause(self) -> None:
        """SIGSTOP: the server hangs (connections are still accepted by the kernel, nothing answers)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@contextmanager
def captured_logs() -> Iterator[list[str]]:
    """The JSON log lines the app writes while the block runs (attach after the app configured logging)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("taskdeck")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def events(lines: list[str], name: str) -> list[dict[str, Any]]:
    return [entry for entry in map(json.loads, lines) if entry.get("event") == name]


def spec_app() -> FastAPI:
    """An app whose OpenAPI document (and routes) are the real ones; it never touches its database."""
    return create_app(make_settings("sqlite://", Path(tempfile.gettempdir())))


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    document: dict[str, Any] = spec_app().openapi()
    return document


HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Operation:
    """One documented operation."""

    method: str
    path: str
    spec: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def secured(self) -> bool:
        """Takes a user's bearer token (not, e.g., the metrics token, which is open unless configured)."""
        return {"HTTPBearer": []} in self.spec.get("security", [])

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    @property
    def id_params(self) -> list[str]:
        return [name for name in self.path_params if name != "user_id"]

    @property
    def query_params(self) -> list[dict[str, Any]]:
        return [param for param in self.spec.get("parameters", []) if param["in"] == "query"]

    def url(self, user_id: str, ids: dict[str, Any]) -> str:
        values = {"user_id": user_id}
        for name in self.id_params:
            if name not in ids:
                raise AssertionError(f"{self}: no test resource for {{{name}}}: add it to owned_resources()")
            values[name] = ids[name]
        return self.path.format(**values)

    def example_query(self) -> dict[str, Any]:
        """The required query parameters, with documented examples or the simplest valid values."""
        return {param["name"]: example(param["schema"]) for param in self.query_params if param.get("required")}

    def body_schema(self) -> dict[str, Any] | None:
        content = self.spec.get("requestBody", {}).get("content", {})
        return resolve(content["application/json"]["schema"]) if "application/json" in content else None

    def example_body(self) -> dict[str, Any] | None:
        """A valid body from the documented examples (or the simplest valid value) of the required fields."""
        schema = self.body_schema()
        if schema is None:
            return None
        properties = schema.get("properties", {})
        return {name: example(properties[name]) for name in schema.get("required", [])}


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return resolve(openapi_document()["components"]["schemas"][name])
    return schema


def example(schema: dict[str, Any]) -> Any:
    schema = resolve(schema)
    if schema.get("examples"):
        return schema["examples"][0]
    if "anyOf" in schema:
        return example(schema["anyOf"][0])
    kind = schema.get("type")
    if kind == "string":
        return "x" * max(1, schema.get("minLength", 1))
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    raise AssertionError(f"no example for {schema}: document one")


def documented_operations() -> list[Operation]:
    return [
        Operation(method.upper(), path, spec)
        for path, item in openapi_document()["paths"].items()
        for method, spec in item.items()
        if method.upper() in HTTP_METHODS
    ]


async def owned_resources(client: httpx.AsyncClient, user: UserCtx, label: str) -> dict[str, Any]:
    """One of each kind of resource a path can name, owned by `user`: `{id parameter name: id}` (a label: its
    name)."""
    name = f"{label}-label".replace(" ", "-")
    task = await client.post(
        f"/api/{user.id}/tasks", json={"title": f"{label} task", "labels": [name]}, headers=user.headers
    )
    project = await client.post(
        f"/api/{user.id}/projects",
        json={"github_repo_name": f"{label}/repo", "display_name": f"{label} project"},
        headers=user.headers,
    )
    assert task.status_code == project.status_code == 201, (task.text, project.text)
    project_id = project.json()["data"]["id"]
    run = await client.post(f"/api/{user.id}/projects/{project_id}/sync", headers=user.headers)
    assert run.status_code == 202, run.text
    return {
        "task_id": task.json()["data"]["id"],
        "project_id": project_id,
        "run_id": run.json()["data"]["run_id"],
        "name": name,
    }


LOCK_WAITERS = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"


async def wait_for_lock_waiter(conninfo: str) -> None:
    """Returns once a session of this PostgreSQL database waits for a lock: the request under test is in flight."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as probe:
        for _ in range(500):
            if ((await (await probe.execute(LOCK_WAITERS)).fetchone()) or (0,))[0]:
                return
            await asyncio.sleep(0.02)
    raise AssertionError("nothing waited for a lock")


def empty_database(conninfo: str) -> None:
    """Delete every row (for tests that write through a server of their own, outside the `app` fixture)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(f'DELETE FROM "{table.name}"')  # table names from our own metadata


@pytest.fixture(name="database_url", scope="module")
def postgresql_only(pg_database: str) -> str:
    """Import into a module to run its tests on PostgreSQL only (row locks, concurrent transactions)."""
    upgrade(pg_database)
    return pg_database


def pg_bin() -> Path:
    found = environment.pg_bin_dir()
    if found is None:
        pytest.fail("initdb/pg_ctl not found: `make test` installs them (or set TEST_BACKENDS=sqlite)", pytrace=False)
    return found


class Cluster(environment.PgCluster):
    """A private PostgreSQL server (tests/environment.py's, under a temp dir) that a test may stop, hang and resume.

    As root, it runs as the `postgres` OS user (initdb refuses root)."""

    def __init__(self) -> None:
        pg_bin()
        super().__init__(Path(tempfile.mkdtemp(prefix="taskdeck-outage-")))

    def pids(self) -> list[int]:
        """The postmaster (first line of its pid file) and every process it started."""
        postmaster = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True, timeout=10)
        return [postmaster, *(int(pid) for pid in children.stdout.split())]

    def pause(self) -> None:
        """Hang the server (SIGSTOP): connections stay open and the kernel still accepts new ones, nothing answers."""
        for pid in self.pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.pids():
            os.kill(pid, signal.SIGCONT)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Hung while the block runs, resumed whatever happens in it."""
        self.pause()
        try:
            yield
        finally:
            self.resume()


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    """A started private cluster, stopped and deleted afterwards (resumed first, should a test have left it paused)."""
    server = Cluster()
    server.init()
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(OSError, ValueError):  # not running: no pid file
            server.resume()
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@contextmanager
def plans_database(pg_database: str, suffix: str) -> Iterator[str]:
    """A separate, migrated PostgreSQL database for a module's query plans (the shared one is emptied after every
    test), dropped at the end: its URL."""
    from backend.migrations.runner import upgrade

    name = pg_database.rsplit("/", 1)[1] + suffix
    admin_url = pg_database.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = pg_database.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """A plan (EXPLAIN's JSON) and every node under it."""
    return [plan, *(node for child in plan.get("Plans", []) for node in plan_nodes(child))]


@contextmanager
def statements_sent(app: Any) -> Iterator[list[str]]:
    """Every SQL statement the app's engine sends inside the block, whitespace collapsed, in order."""
    from sqlalchemy import event

    engine = app.state.engine.sync_engine
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)
