"""Sync runs across instances (contract §13): real `python -m backend serve` processes on one PostgreSQL database.

A run belongs to the instance holding its lease. Another instance starting (its start-up recovery)
or sweeping never touches a live instance's run; a killed instance's run is taken over once its
lease expired, by exactly one of the instances still alive, and resumed where it stopped. The
GitHub stand-in's `gated` repository holds a run inside its `commit` stage until the test opens
the gate. The service-level rules (both databases) are in tests/services/test_sync.py.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from backend.db import create_engine, session_factory, unit_of_work
from backend.models.common import utcnow
from backend.models.project import ProjectCreate
from backend.models.sync_run import SyncRun
from backend.services import sync
from backend.services.projects import pin_project
from tests.conftest import PASSWORD
from tests.factories import add_user
from tests.support import empty_database, free_port, stop, wait_until
from tests.support import postgresql_only as postgresql_only  # the module's database_url fixture
from tests.sync.sync_kit import GitHubStandIn
from tests.test_faults import serve_env

pytestmark = pytest.mark.committing  # several server processes on one database

ROOT = Path(__file__).resolve().parents[1]
GATED = "octo/gated"


@dataclass
class Instance:
    name: str
    process: subprocess.Popen[bytes]
    base: str
    log: Path

    def events(self, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                found.append(record)
        return found


@contextmanager
def instances(database_url: str, tmp_path: Path, *names: str, **env: str) -> Iterator[list[Instance]]:
    """Serve processes started side by side, up once /health answers (their start-up recovery has run by then)."""
    servers = []
    for name in names:
        port = free_port()
        log = tmp_path / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "backend", "serve", "--port", str(port)],
                cwd=ROOT,
                env=serve_env(database_url, tmp_path / name) | env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        servers.append(Instance(name, process, f"http://127.0.0.1:{port}", log))
    try:
        for server in servers:
            wait_until(lambda server=server: httpx.get(f"{server.base}/health", timeout=2).status_code == 200, 60)
        yield servers
    finally:
        stop(*(server.process for server in servers))


@pytest.fixture
def github() -> Iterator[GitHubStandIn]:
    """The gate holds a run until the test opens it, however slowly a loaded machine starts the servers."""
    with closing(GitHubStandIn(gate_timeout=180)) as standin:
        yield standin


@pytest.fixture
def cleanup(database_url: str) -> Iterator[None]:
    yield
    empty_database(database_url)


def env_for(github: GitHubStandIn, lease: float) -> dict[str, str]:
    # One signing key for every instance (a token from one is good on the others). GitHub's and the
    # stage's timeouts outlast the gate, so a held stage never fails on its own.
    return {
        "JWT_SECRET": secrets.token_urlsafe(48),
        "GITHUB_API_URL": github.url,
        "GITHUB_TIMEOUT_SECONDS": "200",
        "SYNC_STAGE_TIMEOUT_SECONDS": "200",
        "SYNC_LEASE_SECONDS": str(lease),
    }


@dataclass
class Owner:
    user_id: str
    headers: dict[str, str]
    project_id: int


def start_gated_run(base: str) -> tuple[Owner, int]:
    """Register, pin the gated repository and start its sync on `base`; returns once the run waits in `commit`."""
    body = {"email": "lease@example.com", "password": PASSWORD}
    assert httpx.post(f"{base}/api/auth/register", json=body, timeout=30).status_code == 201
    tokens = httpx.post(f"{base}/api/auth/login", json=body, timeout=30).json()["data"]
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    user_id = tokens["user_id"]
    pinned = httpx.post(f"{base}/api/{user_id}/projects", json={"github_repo_name": GATED}, headers=headers, timeout=30)
    assert pinned.status_code == 201, pinned.text
    owner = Owner(user_id, headers, pinned.json()["data"]["id"])
    started = httpx.post(f"{base}/api/{user_id}/projects/{owner.project_id}/sync", headers=headers, timeout=30)
    assert started.status_code == 202, started.text
    run_id: int = started.json()["data"]["run_id"]
    wait_until(lambda: run_on(base, owner, run_id)["current_stage"] == "commit", 30)
    return owner, run_id


def run_on(base: str, owner: Owner, run_id: int) -> dict[str, Any]:
    url = f"{base}/api/{owner.user_id}/projects/{owner.project_id}/sync/{run_id}"
    response = httpx.get(url, headers=owner.headers, timeout=10)
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()["data"]
    return run


def lease_row(database_url: str, run_id: int) -> tuple[str | None, int]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT lease_owner, lease_takeovers FROM sync_runs WHERE id = %s", (run_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


def finished(base: str, owner: Owner, run_id: int, within: float) -> dict[str, Any]:
    wait_until(lambda: run_on(base, owner, run_id)["status"] in ("succeeded", "failed"), within)
    return run_on(base, owner, run_id)


def test_a_starting_instance_leaves_a_live_instances_run_alone(database_url, tmp_path, github, cleanup):
    """A runs a slow sync; B starts (start-up recovery) and sweeps for several leases: A's run is untouched."""
    lease = 3.0
    env = env_for(github, lease)
    with instances(database_url, tmp_path, "a", **env) as [a]:
        owner, run_id = start_gated_run(a.base)
        with instances(database_url, tmp_path, "b", **env) as [b]:
            # B has recovered at start-up; let it sweep for longer than a lease while A keeps renewing.
            time.sleep(lease * 1.5)
            seen_by_b = run_on(b.base, owner, run_id)
            assert (seen_by_b["status"], seen_by_b["current_stage"], seen_by_b["error"]) == ("running", "commit", None)
            github.open_gate()
            run = finished(b.base, owner, run_id, 30)
        assert run["status"] == "succeeded", run
        assert run["progress"] == 100
        assert b.events("sync_runs_taken_over") == []
    # A ran it from start to end: each GitHub endpoint was asked once.
    assert github.paths().count(f"/repos/{GATED}") == 1
    assert github.paths().count(f"/repos/{GATED}/commits") == 1
    assert lease_row(database_url, run_id)[1] == 0


def test_a_killed_instances_run_is_taken_over_by_exactly_one_survivor(database_url, tmp_path, github, cleanup):
    """A is killed mid-run; once its lease expired, exactly one of B and C claims the run and finishes it."""
    lease = 3.0
    env = env_for(github, lease)
    with instances(database_url, tmp_path, "a", "b", "c", **env) as [a, b, c]:
        owner, run_id = start_gated_run(a.base)
        a_owner, _ = lease_row(database_url, run_id)
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(timeout=10)
        killed_at = time.monotonic()
        github.open_gate()  # the stage's next attempt (on the instance that takes the run over) goes through
        run = finished(b.base, owner, run_id, 60)
        took = time.monotonic() - killed_at
        claims = {server.name: server.events("sync_runs_taken_over") for server in (b, c)}
    claimed = [events for events in claims.values() if events]
    assert len(claimed) == 1, claims
    [events] = claimed
    assert len(events) == 1, events
    assert events[0]["run_ids"] == [run_id]
    new_owner, takeovers = lease_row(database_url, run_id)
    assert new_owner == events[0]["instance"] != a_owner
    assert takeovers == 1
    # Resumed where A stopped: the repository and release stages were not asked again; commit was.
    assert run["status"] == "succeeded", run
    assert [stage["status"] for stage in run["stages"]] == ["succeeded"] * 4
    assert github.paths().count(f"/repos/{GATED}") == 1
    assert github.paths().count(f"/repos/{GATED}/releases/latest") == 1
    assert github.paths().count(f"/repos/{GATED}/commits") == 2
    # Not before the lease could expire, and not long after (a sweep every lease/3; generous for a loaded machine).
    assert took > lease * 0.5, took
    assert took < 30, took


async def test_sweeps_at_once_claim_an_expired_run_once(database_url, cleanup):
    """SKIP LOCKED: while one sweep holds the run (uncommitted), another neither waits for it nor claims it."""
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    a, b, c = (sync.Lease(name, 30) for name in ("instance-a", "instance-b", "instance-c"))
    try:
        async with unit_of_work(sessions) as session:
            user = await add_user(session)
            project = await pin_project(session, user.id, ProjectCreate(github_repo_name="octo/hello"))
            assert project.id is not None
            run, _ = await sync.start_sync(session, user.id, project.id, ["fetch"], a)
            run.lease_expires_at = utcnow() - timedelta(minutes=1)  # instance A died
            session.add(run)
        async with sessions() as first, sessions() as second:
            claimed_by_b = await sync.take_over_expired(first, b, 2, "lost")
            # Without SKIP LOCKED this would wait for B's transaction: the timeout fails the test.
            claimed_by_c = await asyncio.wait_for(sync.take_over_expired(second, c, 2, "lost"), 10)
            assert (claimed_by_b.resumed, claimed_by_c.resumed) == ([run.id], [])
            await first.commit()
            await second.rollback()
        async with sessions() as third:
            assert (await sync.take_over_expired(third, c, 2, "lost")).resumed == []  # B's lease is live
            assert (await third.get(SyncRun, run.id)).lease_owner == b.owner
    finally:
        await engine.dispose()
