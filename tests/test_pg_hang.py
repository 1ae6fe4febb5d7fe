"""PostgreSQL hung (SIGSTOP), not stopped: every wait is bounded, then everything recovers after SIGCONT.

A stopped server's kernel still accepts connections and acknowledges what is sent, so neither TCP nor the
server's own `statement_timeout` ends a wait: the client must (contract §13: `/health` within 3 s, a request's
`503` within DB_POOL_TIMEOUT + DB_STATEMENT_TIMEOUT). Runs on a throwaway cluster of its own, never the
machine's shared server; PostgreSQL only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from backend.db import create_engine, ping
from backend.main import create_app
from backend.migrations.runner import upgrade
from tests.conftest import assert_error, make_settings
from tests.factories import make_user, post_task
from tests.support import Cluster, client_for, running_cluster

POOL_TIMEOUT = 2.0
STATEMENT_TIMEOUT = 1.0
CONNECT_TIMEOUT = 2.0  # libpq counts whole seconds, 2 at least
REQUEST_BOUND = POOL_TIMEOUT + STATEMENT_TIMEOUT + 1.5  # the contract's bound, plus slack for a loaded machine
HEALTH_BOUND = 3.5  # the contract's 3 s, plus slack
GIVE_UP = 25.0  # unfixed code hangs: fail then rather than wait forever


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as server:
        upgrade(server.url)
        yield server


async def timed(request: Any) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    response = await asyncio.wait_for(request, GIVE_UP)
    return time.monotonic() - started, response


async def test_hung_database_answers_503_in_time_and_recovers(cluster, data_dir):
    settings = make_settings(
        cluster.url,
        data_dir,
        DB_POOL_TIMEOUT=POOL_TIMEOUT,
        DB_STATEMENT_TIMEOUT=STATEMENT_TIMEOUT,
        DB_CONNECT_TIMEOUT=CONNECT_TIMEOUT,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), client_for(app) as client:
        user = await make_user(client)
        headers, tasks = user.headers, f"/api/{user.id}/tasks"
        await post_task(client, user, title="before")

        with cluster.paused():
            # Several at once: each holds (or waits for) a pooled connection to the hung server.
            answers = await asyncio.gather(
                timed(client.get(tasks, headers=headers)),
                timed(client.post(tasks, json={"title": "during"}, headers=headers)),
                timed(client.get(tasks, headers=headers)),
            )
            for elapsed, response in answers:
                assert elapsed < REQUEST_BOUND, f"{response.request.method} took {elapsed:.1f} s"
                assert_error(response, 503, "SERVICE_UNAVAILABLE")
                assert response.headers["retry-after"] == "5"
            await assert_health_down(client)

        # Recovery on its own: the hung connections were discarded, new ones work.
        listing = await until_ok(client.get, tasks, headers=headers)
        assert [task["title"] for task in listing.json()["data"]] == ["before"]
        await post_task(client, user, title="after")
        await until_ok(client.get, "/health")

        # Hung again, /health first: its ping meets a pooled connection to the stopped server.
        with cluster.paused():
            await assert_health_down(client)
        await until_ok(client.get, "/health")
        assert (await client.get(tasks, headers=headers)).status_code == 200


async def assert_health_down(client: httpx.AsyncClient) -> None:
    for _ in range(2):  # the second check comes while the first one's ping may still hang
        elapsed, health = await timed(client.get("/health"))
        assert elapsed < HEALTH_BOUND, f"/health took {elapsed:.1f} s"
        error = assert_error(health, 503, "SERVICE_UNAVAILABLE")
        assert "data" not in health.json()
        assert error["details"]["database"] == "down"


async def until_ok(call: Any, *args: Any, **kwargs: Any) -> httpx.Response:
    """Retried until it answers 200, for at most 15 s (after SIGCONT)."""
    deadline = time.monotonic() + 15
    while (response := (await timed(call(*args, **kwargs)))[1]).status_code != 200:
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.2)
    return response


async def test_statement_timeout_cuts_a_slow_query_and_keeps_the_connection(cluster):
    """The server ends a slow statement (sent with the transaction's BEGIN, so a transaction-mode pooler
    accepts it); the connection stays usable."""
    engine = create_engine(cluster.url, statement_timeout=STATEMENT_TIMEOUT)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SHOW statement_timeout"))).scalar_one() == "500ms"
            started = time.monotonic()
            with pytest.raises(OperationalError) as caught:
                await conn.execute(text("SELECT pg_sleep(5)"))
            assert time.monotonic() - started < STATEMENT_TIMEOUT + 1.0
            assert getattr(caught.value.orig, "sqlstate", None) == "57014"  # query_canceled: the server's timeout
            assert not conn.invalidated
            await conn.rollback()
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
        async with engine.connect() as conn:  # the same server connection: nothing outlived the transaction
            outside = await conn.execution_options(isolation_level="AUTOCOMMIT")
            assert (await outside.execute(text("SHOW statement_timeout"))).scalar_one() == "0"
    finally:
        await engine.dispose()


async def test_first_connection_waits_for_a_waking_database_then_an_outage_fails_fast(cluster):
    """Scale to zero: the first connection is retried with back-off while the server comes up (within
    DB_CONNECT_TIMEOUT), not failed at once; once a connection has failed so, the next try once."""
    waking = create_engine(cluster.url, connect_timeout=20, statement_timeout=STATEMENT_TIMEOUT)
    cluster.stop()
    try:
        starting = asyncio.create_task(asyncio.to_thread(cluster.start))
        await ping(waking)  # refused at first, then the server answers
        await starting
    finally:
        await waking.dispose()

    down = create_engine(cluster.url, connect_timeout=2, statement_timeout=STATEMENT_TIMEOUT)
    cluster.stop()
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError):
            await ping(down)
        assert time.monotonic() - started > 1  # retried for the connect timeout
        started = time.monotonic()
        with pytest.raises(OperationalError):
            await ping(down)
        assert time.monotonic() - started < 1  # known down: one attempt
    finally:
        await down.dispose()
        cluster.start()
