"""Faults while requests are in flight, on PostgreSQL: a cancelled request, and a server told to stop.

The other faults are tested where their subject lives: the database stopping under a running app (503,
then recovery without a restart, and a write caught in flight) in tests/test_outage.py; Redis stopping
and coming back (the API keeps serving) in tests/test_ratelimit.py::test_redis_outage_fails_open_and_limits_resume.
A request is made reliably in flight by holding a row lock it needs from a separate connection.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from backend.config import Settings
from tests.conftest import PASSWORD
from tests.support import empty_database, free_port, wait_for_lock_waiter, wait_until
from tests.support import postgresql_only as postgresql_only  # the module's database_url fixture

pytestmark = pytest.mark.committing  # a server process and cancelled requests on the same database

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 5
IN_TRANSACTION = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND state LIKE 'idle in transaction%%' AND pid <> pg_backend_pid()"
)


async def rows(conninfo: str, query: str, *params: Any) -> int:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        row = await (await conn.execute(query, params)).fetchone()
        return int(row[0]) if row else 0


class TestCancelledRequest:
    async def test_a_create_cancelled_mid_transaction_writes_nothing(self, client, user, database_url):
        """The task's INSERT waits on its project's row lock (foreign-key check), then the caller goes away."""
        url = f"/api/{user.id}/tasks"
        for round_number in range(ROUNDS):
            pinned = await client.post(
                f"/api/{user.id}/projects", json={"github_repo_name": f"octo/r{round_number}"}, headers=user.headers
            )
            project_id = pinned.json()["data"]["id"]
            title = f"in flight {round_number}"
            async with await psycopg.AsyncConnection.connect(database_url) as locker:
                await locker.execute("SELECT id FROM pinned_projects WHERE id = %s FOR UPDATE", (project_id,))
                request = asyncio.create_task(
                    client.post(url, json={"title": title, "project_id": project_id}, headers=user.headers)
                )
                await wait_for_lock_waiter(database_url)
                request.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await request
                await locker.rollback()
            # Nothing of the cancelled transaction survives, and no connection is left inside it.
            await asyncio.to_thread(wait_until, lambda: asyncio.run(rows(database_url, IN_TRANSACTION)) == 0, 10)
            assert await rows(database_url, "SELECT count(*) FROM tasks WHERE title = %s", title) == 0
            # The pool is healthy: the same request now goes through.
            again = await client.post(url, json={"title": title, "project_id": project_id}, headers=user.headers)
            assert again.status_code == 201, again.text
            assert await rows(database_url, "SELECT count(*) FROM tasks WHERE title = %s", title) == 1


def serve_env(database_url: str, data_dir: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in Settings.model_fields}
    return env | {
        "DATABASE_URL": database_url,
        "DATA_DIR": str(data_dir),
        "JWT_SECRET": secrets.token_urlsafe(48),
        "BCRYPT_ROUNDS": "4",
        "RATE_LIMIT_ENABLED": "false",
        "ENVIRONMENT": "test",
    }


class TestGracefulShutdown:
    def test_sigterm_lets_the_request_in_flight_finish(self, database_url, tmp_path):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", "--port", str(port)],
            cwd=ROOT,
            env=serve_env(database_url, tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_until(lambda: httpx.get(f"{base}/health", timeout=1).status_code == 200, 30)
            body = {"email": "sigterm@example.com", "password": PASSWORD}
            assert httpx.post(f"{base}/api/auth/register", json=body).status_code == 201
            tokens = httpx.post(f"{base}/api/auth/login", json=body).json()["data"]
            headers = {"Authorization": f"Bearer {tokens['access_token']}"}
            result: dict[str, httpx.Response] = {}

            def pin() -> None:
                pinned = f"{base}/api/{tokens['user_id']}/projects"
                result["response"] = httpx.post(
                    pinned, json={"github_repo_name": "octo/last"}, headers=headers, timeout=30
                )

            with psycopg.connect(database_url) as locker:  # the pin waits for this user's row lock
                locker.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (tokens["user_id"],))
                in_flight = threading.Thread(target=pin)
                in_flight.start()
                asyncio.run(wait_for_lock_waiter(database_url))
                process.send_signal(signal.SIGTERM)
                wait_until(lambda: not listening(base), 10)  # no new connections while it drains
                time.sleep(2)  # the drain waits for the request however long it takes (up to its 20 s)
                locker.rollback()
            in_flight.join(timeout=30)
            output, _ = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            empty_database(database_url)
        assert result["response"].status_code == 201, result["response"].text
        assert result["response"].json()["data"]["github_repo_name"] == "octo/last"
        # uvicorn finishes the graceful shutdown, then re-raises SIGTERM: the conventional exit status 143.
        assert process.returncode in (0, -signal.SIGTERM), output
        assert "Application shutdown complete" in output
        assert "Traceback" not in output


def listening(base: str) -> bool:
    try:
        httpx.get(f"{base}/health/live", timeout=0.5)
    except httpx.TransportError:
        return False
    return True
