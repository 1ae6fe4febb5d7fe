"""A running app pointed at a database that stops and comes back: 503 envelopes, then recovery.

Uses a throwaway PostgreSQL cluster of its own (initdb/pg_ctl on a free port under a temp dir),
never the machine's shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from backend.main import create_app
from backend.migrations.runner import upgrade
from tests.conftest import PASSWORD, assert_error, make_settings
from tests.factories import make_user
from tests.support import Cluster, client_for, running_cluster, wait_for_lock_waiter


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as server:
        yield server


async def test_database_outage_and_recovery(cluster, data_dir):
    upgrade(cluster.url)
    app = create_app(make_settings(cluster.url, data_dir, DB_CONNECT_TIMEOUT=2, DB_POOL_TIMEOUT=2))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            email = "outage@example.com"
            assert (
                await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
            ).status_code == 201
            login = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
            headers = {"Authorization": f"Bearer {login.json()['data']['access_token']}"}

            cluster.stop()
            for response in (
                await client.post("/api/auth/register", json={"email": "b@example.com", "password": PASSWORD}),
                await client.post("/api/auth/login", json={"email": email, "password": PASSWORD}),
                await client.get("/api/auth/me", headers=headers),
            ):
                error = assert_error(response, 503, "SERVICE_UNAVAILABLE")
                assert response.headers["retry-after"] == "5"
                assert response.headers["x-request-id"]
                assert response.headers["x-content-type-options"] == "nosniff"
                assert "postgres" not in error["message"].lower()
                assert str(cluster.port) not in response.text
            health = await client.get("/health")
            assert health.status_code == 503
            assert health.json()["success"] is False
            assert "data" not in health.json()
            assert health.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
            assert health.json()["error"]["details"]["database"] == "down"
            assert (await client.get("/health/live")).status_code == 200

            cluster.start()
            health = await client.get("/health")
            assert health.status_code == 200, health.text
            assert health.json()["data"]["database"] == "ok"
            me = await client.get("/api/auth/me", headers=headers)
            assert me.status_code == 200, me.text


async def test_write_in_flight_when_the_database_stops(cluster, data_dir):
    """A pin waiting inside its transaction when the server stops: a 503, and nothing half-written after."""
    with contextlib.suppress(subprocess.CalledProcessError):  # running unless the test above failed midway
        cluster.start()
    upgrade(cluster.url)
    app = create_app(make_settings(cluster.url, data_dir, DB_CONNECT_TIMEOUT=2, DB_POOL_TIMEOUT=2))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            body = {"email": "in-flight@example.com", "password": PASSWORD}
            assert (await client.post("/api/auth/register", json=body)).status_code == 201
            tokens = (await client.post("/api/auth/login", json=body)).json()["data"]
            headers = {"Authorization": f"Bearer {tokens['access_token']}"}
            projects = f"/api/{tokens['user_id']}/projects"

            locker = await psycopg.AsyncConnection.connect(cluster.url)
            await locker.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (tokens["user_id"],))
            pin = asyncio.create_task(client.post(projects, json={"github_repo_name": "octo/a"}, headers=headers))
            await wait_for_lock_waiter(cluster.url)
            cluster.stop()
            assert_error(await pin, 503, "SERVICE_UNAVAILABLE")
            with contextlib.suppress(psycopg.Error):
                await locker.close()

            cluster.start()
            listing = await client.get(projects, headers=headers)
            assert listing.status_code == 200, listing.text
            assert listing.json()["meta"]["total"] == 0
            assert (
                await client.post(projects, json={"github_repo_name": "octo/a"}, headers=headers)
            ).status_code == 201


async def test_a_pooled_connection_that_died_while_idle_is_replaced_unnoticed(cluster, data_dir):
    """The pool pings a connection that sat idle for a second or more before handing it out (backend/db.py,
    `_ping_when_idle`): after a database restart between two requests, the next request gets a new connection
    and succeeds, instead of failing on the dead one."""
    upgrade(cluster.url)
    app = create_app(make_settings(cluster.url, data_dir, DB_CONNECT_TIMEOUT=5, DB_POOL_TIMEOUT=5))
    async with app.router.lifespan_context(app), client_for(app) as client:
        user = await make_user(client, "idle@example.com")
        assert (await client.get("/api/auth/me", headers=user.headers)).status_code == 200
        assert app.state.engine.sync_engine.pool.checkedin() >= 1  # the connection waits in the pool

        cluster.stop()
        cluster.start()
        await asyncio.sleep(1.2)  # idle for longer than PING_AFTER_IDLE_SECONDS
        for _ in range(3):
            me = await client.get("/api/auth/me", headers=user.headers)
            assert me.status_code == 200, me.text
