"""Engines and URLs: the forms hosted databases hand out, SQLite pragmas, unique violations."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from backend.db import async_url, create_engine, end_read, is_sqlite, is_unique_violation, lock_user_row, ping
from backend.db import session_factory as make_session_factory
from backend.models.user import User


class TestAsyncUrl:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            ("postgres://u:p@db.example:5432/app", "postgresql+psycopg://u:p@db.example:5432/app"),
            ("postgresql://u:p@db.example/app", "postgresql+psycopg://u:p@db.example/app"),
            ("postgresql+psycopg://u@h/app", "postgresql+psycopg://u@h/app"),
            ("postgresql+asyncpg://u@h/app", "postgresql+psycopg://u@h/app"),
            (
                "postgresql://app_user:placeholder@ep-x-123.eu-central-1.aws.neon.tech/neondb"
                "?sslmode=require&channel_binding=require",
                "postgresql+psycopg://app_user:placeholder@ep-x-123.eu-central-1.aws.neon.tech/neondb"
                "?sslmode=require&channel_binding=require",
            ),
            ("sqlite:///data/taskdeck.db", "sqlite+aiosqlite:///data/taskdeck.db"),
            ("sqlite:////abs/path.db", "sqlite+aiosqlite:////abs/path.db"),
            ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ],
    )
    def test_rewrites(self, given, expected):
        assert async_url(given) == expected

    @pytest.mark.parametrize("given", ["mysql://u@h/db", "taskdeck.db"])
    def test_unsupported(self, given):
        with pytest.raises(ValueError, match="Unsupported DATABASE_URL scheme"):
            async_url(given)

    def test_is_sqlite(self):
        assert is_sqlite("sqlite:///x.db")
        assert not is_sqlite("postgres://h/db")


async def test_hosted_style_url_connects(database_url):
    """`postgres://` with libpq options in the query reaches a real server through psycopg."""
    if database_url.startswith("postgresql"):
        url = database_url.replace("postgresql://", "postgres://") + "?sslmode=prefer&channel_binding=prefer"
        driver = "psycopg"
    else:
        url, driver = database_url, "aiosqlite"
    engine = create_engine(url)
    try:
        await ping(engine)
        assert engine.dialect.driver == driver
    finally:
        await engine.dispose()


class TestSqlite:
    async def pragmas(self, engine) -> tuple[str, int]:
        async with engine.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
            fks = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar_one()
        await engine.dispose()
        return mode, fks

    async def test_app_engine_has_wal_and_foreign_keys(self, tmp_path):
        engine = create_engine(f"sqlite:///{tmp_path}/nested/dir/app.db")
        assert await self.pragmas(engine) == ("wal", 1)
        assert (tmp_path / "nested" / "dir" / "app.db").exists()

    async def test_migration_engine_leaves_foreign_keys_off(self, tmp_path):
        engine = create_engine(f"sqlite:///{tmp_path}/app.db", for_migrations=True)
        assert await self.pragmas(engine) == ("wal", 0)

    async def test_transactions_take_the_write_lock_at_begin(self, tmp_path):
        engine = create_engine(f"sqlite:///{tmp_path}/app.db")
        statements: list[str] = []
        event.listen(engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        factory = make_session_factory(engine)
        async with factory() as session:
            await session.exec(text("SELECT 1"))
            assert session.in_transaction()
            await end_read(session)
            assert not session.in_transaction()
        await engine.dispose()
        assert "BEGIN IMMEDIATE" in statements


class TestSessionHelpers:
    async def test_unique_violation_is_recognised(self, app):
        async with app.state.sessionmaker() as session:
            session.add(User(email="twin@example.com"))
            await session.commit()
            session.add(User(email="twin@example.com"))
            with pytest.raises(IntegrityError) as caught:
                await session.commit()
            assert is_unique_violation(caught.value)
            await session.rollback()

    async def test_foreign_key_violation_is_not_a_unique_violation(self, app):
        from datetime import timedelta

        from backend.models.common import utcnow
        from backend.models.session import AuthSession

        async with app.state.sessionmaker() as session:
            session.add(AuthSession(user_id="nobody", expires_at=utcnow() + timedelta(days=1)))
            with pytest.raises(IntegrityError) as caught:
                await session.commit()
            assert not is_unique_violation(caught.value)
            await session.rollback()

    async def test_lock_user_row_and_end_read(self, app):
        async with app.state.sessionmaker() as session:
            user = User(email="locked@example.com")
            session.add(user)
            await session.commit()
            await session.exec(select(User).where(User.id == user.id))
            await lock_user_row(session, user.id)
            assert session.in_transaction()
            await end_read(session)
            # SQLite ends the read transaction; PostgreSQL keeps it (and its row lock) until commit.
            assert session.in_transaction() is (session.get_bind().dialect.name == "postgresql")
            await session.commit()


async def test_the_connection_gate_serves_requests_first_come_first_served():
    """A request arriving just as a connection is handed back queues behind those already waiting (SQLAlchemy's
    async pool lets it take the connection first, so a waiter can starve until the pool timeout)."""
    import asyncio

    from backend.db import ConnectionGate

    gate = ConnectionGate(1, timeout=5)
    order: list[str] = []
    late: list[asyncio.Task[None]] = []

    async def request(name: str) -> None:
        async with gate():
            order.append(name)
            await asyncio.sleep(0.01)
            if name == "a":  # arrives while "a" hands its connection back and b, c, d wait
                late.append(asyncio.create_task(request("e")))

    first = asyncio.create_task(request("a"))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(request(name)) for name in "bcd"]
    await asyncio.gather(first, *waiting)
    await asyncio.gather(*late)
    assert order == ["a", "b", "c", "d", "e"]


async def test_the_connection_gate_gives_up_after_the_pool_timeout():
    import time

    from sqlalchemy.exc import TimeoutError as PoolTimeoutError

    from backend.db import ConnectionGate

    gate = ConnectionGate(1, timeout=0.2)
    async with gate():
        started = time.monotonic()
        with pytest.raises(PoolTimeoutError):
            async with gate():
                pass
        assert 0.15 < time.monotonic() - started < 5
    async with gate():  # the slot came back; the refused request took none
        pass
    assert ConnectionGate(None, timeout=0.01).slots is None


@pytest.mark.committing
async def test_a_small_pool_under_sustained_load_answers_every_request(database_url, data_dir):
    """40 clients in a closed loop for 3 s on a pool of one connection: every request waits its turn at the gate
    and is answered, none is lost (a slot leaked by a failed or cancelled request would stall the rest). The
    starvation the gate prevents shows under real overload: `make bench`'s overload rows (specs/performance.md)."""

    from backend.main import create_app
    from tests.conftest import make_settings
    from tests.factories import make_user
    from tests.support import client_for

    settings = make_settings(database_url, data_dir, DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0, DB_POOL_TIMEOUT=10)
    app = create_app(settings)
    async with app.router.lifespan_context(app), client_for(app) as http:
        user = await make_user(http)
        statuses = await closed_loop(http, f"/api/{user.id}/tasks", user.headers, clients=40, seconds=3)
    assert statuses
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}


@pytest.mark.committing
async def test_requests_never_open_an_overflow_connection(database_url, data_dir):
    """Requests hold at most `DB_POOL_SIZE` connections at once: an overflow connection is closed when it comes back
    to a full pool, and with requests allowed into the overflow the benchmark's server opened about 40 PostgreSQL
    connections a second under 64 connections of load (specs/performance.md, "Requests within the pool"). 20
    clients in a closed loop on a pool of 2 (+3 overflow): 2 connections opened in all, every request answered."""

    from sqlalchemy import event

    from backend.main import create_app
    from tests.conftest import make_settings
    from tests.factories import make_user
    from tests.support import client_for

    settings = make_settings(database_url, data_dir, DB_POOL_SIZE=2, DB_MAX_OVERFLOW=3, DB_POOL_TIMEOUT=10)
    app = create_app(settings)
    async with app.router.lifespan_context(app), client_for(app) as http:
        user = await make_user(http)
        await app.state.engine.dispose()  # start counting from an empty pool
        opened: list[int] = []
        event.listen(app.state.engine.sync_engine, "connect", lambda *args: opened.append(1))
        statuses = await closed_loop(http, f"/api/{user.id}/tasks", user.headers, clients=20, seconds=2)
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert len(statuses) > 20
    if app.state.engine.dialect.name == "postgresql":  # SQLite has no gate: its pool is not the limit
        assert len(opened) <= 2, len(opened)


async def closed_loop(http: Any, path: str, headers: dict[str, str], *, clients: int, seconds: float) -> list[int]:
    """`clients` clients each GETting `path` again as soon as answered, for `seconds`: every answer's status."""
    import asyncio
    import time

    statuses: list[int] = []
    deadline = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < deadline:
            statuses.append((await http.get(path, headers=headers)).status_code)

    await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


# What a request waiting at the gate may hold (bytes allocated by the server's code: ours, FastAPI, Starlette,
# SQLAlchemy, pydantic). Waiting inside FastAPI's dependency solving it held ~20 KB (two Request objects, exit
# stacks, 17 coroutines of the dependencies); under 1 024 connections that was ~20 MB the worker's heap kept after
# the burst (specs/performance.md, "RSS after the overload (2026-12-08)"). Waiting in InnerMiddleware: ~6.4 KB,
# the frames of the middleware above it.
WAITING_REQUEST_BYTES = 10_000
FASTAPI_SOLVING = ("fastapi/routing.py", "fastapi/dependencies/utils.py")


@pytest.mark.committing
async def test_a_request_waits_for_a_connection_before_its_dependencies_are_solved(database_url, data_dir):
    """100 requests for the task list wait while the gate's only slot is held: none has a Request object or a
    dependency being solved yet, and each holds less than WAITING_REQUEST_BYTES. Once the slot comes back every
    one is answered 200. (SQLite has no gate in service; the test gives its app one, the same object.)"""
    import asyncio
    import gc
    import tracemalloc
    import types

    from starlette.requests import Request

    from backend.main import create_app
    from tests.conftest import make_settings
    from tests.factories import make_user
    from tests.support import client_for

    settings = make_settings(database_url, data_dir, DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0, DB_POOL_TIMEOUT=30)
    app = create_app(settings)
    gate = app.state.db_gate
    gate.slots = asyncio.Semaphore(1)
    waiting = 100
    server_code = ("*/backend/*", "*/fastapi/*", "*/starlette/*", "*/sqlalchemy/*", "*/pydantic*")
    async with app.router.lifespan_context(app), client_for(app) as http:
        user = await make_user(http)
        path = f"/api/{user.id}/tasks"
        assert (await http.get(path, headers=user.headers)).status_code == 200  # everything built on first use
        await gate.slots.acquire()  # the only connection is taken
        gc.collect()
        tracemalloc.start(1)
        try:
            before = tracemalloc.take_snapshot()
            requests = [asyncio.create_task(http.get(path, headers=user.headers)) for _ in range(waiting)]
            for _ in range(1000):  # until every one waits at the gate (10 s at most)
                if len(gate.slots._waiters or ()) >= waiting:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            gc.collect()
            during = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        live = gc.get_objects()
        requests_alive = sum(1 for obj in live if isinstance(obj, Request))
        solving = sum(  # FastAPI's routing and dependency solving, under the middleware
            1
            for obj in live
            if isinstance(obj, types.CoroutineType) and obj.cr_code.co_filename.endswith(FASTAPI_SOLVING)
        )
        filters = [tracemalloc.Filter(True, pattern) for pattern in server_code]
        held = sum(
            stat.size_diff
            for stat in during.filter_traces(filters).compare_to(before.filter_traces(filters), "filename")
        )
        gate.slots.release()
        statuses = [response.status_code for response in await asyncio.gather(*requests)]
    assert statuses == [200] * waiting
    per_request = held / waiting
    shown = (
        f"{requests_alive} Request objects, {solving} coroutines of FastAPI's routing and dependencies, "
        f"{per_request:.0f} bytes per waiting request"
    )
    assert requests_alive < waiting // 10, shown
    assert solving < waiting // 10, shown
    assert per_request < WAITING_REQUEST_BYTES, shown


def gated_app(database_url: str, data_dir: Any, slots: int, **overrides: Any) -> Any:
    """An app whose connection gate has `slots` slots on either backend (SQLite has no gate in service), set before
    its first request builds the middleware."""
    import asyncio

    from backend.main import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(database_url, data_dir, DB_POOL_SIZE=slots, DB_MAX_OVERFLOW=0, **overrides))
    app.state.db_gate.slots = asyncio.Semaphore(slots)
    return app


@pytest.mark.committing
async def test_a_request_refused_at_the_gate_gets_the_503_it_got_in_its_session_dependency(database_url, data_dir):
    """No turn within DB_POOL_TIMEOUT: a GET (which waits before its dependencies) and a POST (which waits in its
    session dependency, its body read first) get the same 503 envelope with Retry-After, the access log names the
    route, and the slot comes back for the next request."""
    import json

    from tests.factories import make_user
    from tests.support import captured_logs, client_for

    app = gated_app(database_url, data_dir, 1, DB_POOL_TIMEOUT=0.2)
    gate = app.state.db_gate
    async with app.router.lifespan_context(app), client_for(app) as http:
        user = await make_user(http)
        await gate.slots.acquire()
        with captured_logs() as lines:
            listed = await http.get(f"/api/{user.id}/tasks", headers=user.headers)
            created = await http.post(f"/api/{user.id}/tasks", headers=user.headers, json={"title": "t"})
        gate.slots.release()
        for response in (listed, created):
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
            assert response.headers["retry-after"]
        assert listed.json() == created.json()
        access = [json.loads(line) for line in lines if '"http_request"' in line]
        assert [(line["method"], line["route"], line["status"]) for line in access] == [
            ("GET", "/api/{user_id}/tasks", 503),
            ("POST", "/api/{user_id}/tasks", 503),
        ]
        assert (await http.get(f"/api/{user.id}/tasks", headers=user.headers)).status_code == 200
    assert not gate.slots.locked()


@pytest.mark.committing
async def test_requests_admitted_at_the_gate_give_their_slot_back_however_they_end(database_url, data_dir):
    """A request admitted before its dependencies whose session never opens (no route, a refused token, a bad
    parameter) or whose session opened and ended (200, 404, DELETE) leaves the gate as it found it; event streams
    and health checks do not wait at it while every slot is taken."""
    import asyncio

    from tests.factories import make_user
    from tests.support import client_for

    app = gated_app(database_url, data_dir, 2, DB_POOL_TIMEOUT=5)
    gate = app.state.db_gate
    async with app.router.lifespan_context(app), client_for(app) as http:
        user = await make_user(http)
        task = (await http.post(f"/api/{user.id}/tasks", headers=user.headers, json={"title": "t"})).json()["data"]
        deleted = await http.delete(f"/api/{user.id}/tasks/{task['id']}", headers=user.headers)
        assert deleted.status_code in {200, 204}
        answers = {
            f"/api/{user.id}/tasks": 200,
            f"/api/{user.id}/tasks?limit=-1": 422,
            f"/api/{user.id}/tasks/{task['id']}": 404,
            "/api/no/such/route/here": 404,
        }
        for path, status in answers.items():
            assert (await http.get(path, headers=user.headers)).status_code == status, path
        assert (await http.get(f"/api/{user.id}/tasks", headers={"Authorization": "Bearer x"})).status_code == 401
        assert gate.slots._value == 2
        await gate.slots.acquire()
        await gate.slots.acquire()
        try:
            async with asyncio.timeout(3):
                assert (await http.get("/health/live")).status_code == 200
                assert (await http.get("/health")).status_code in {200, 503}
                assert (await http.get("/openapi.json")).status_code == 200
        finally:
            gate.slots.release()
            gate.slots.release()
    assert gate.slots._value == 2


def test_every_route_the_middleware_gates_takes_a_session(database_url, data_dir):
    """InnerMiddleware admits a request without a body under /api/ (not for an event stream) at the gate before its
    dependencies, for its session to take the slot over: a route there without a session would hold a slot for
    nothing. The event stream is not gated there (its response outlives its session), nor is a request with a
    body (FastAPI reads it before the session: a slow upload would hold a slot)."""
    import re
    from datetime import UTC, datetime

    from fastapi.routing import iter_route_contexts

    from backend.db import ConnectionGate
    from backend.deps import get_session
    from backend.main import create_app, event_streams
    from backend.middleware import GATED_PREFIX, InnerMiddleware
    from tests.conftest import make_settings

    def takes_session(dependant: Any) -> bool:
        return dependant.call is get_session or any(takes_session(d) for d in dependant.dependencies)

    app = create_app(make_settings(database_url, data_dir))
    streams = event_streams(app)
    assert [stream.pattern for stream in streams] == [re.compile("^/api/(?P<user_id>[^/]+)/events$").pattern]
    gate = ConnectionGate(1, timeout=1)
    middleware = InnerMiddleware(app, max_bytes=1, successors={}, since=datetime.now(UTC), gate=gate, streams=streams)
    routes = [context for context in iter_route_contexts(app.routes) if str(context.path).startswith(GATED_PREFIX)]
    assert len(routes) > 30
    for context in routes:
        assert takes_session(context.original_route.dependant), context.path

    def gated(method: str, path: str, headers: list[tuple[bytes, bytes]], length: str | None = None) -> bool:
        return middleware.gated({"method": method, "path": path, "headers": headers}, length)

    assert gated("GET", "/api/u1/tasks", [])
    assert gated("DELETE", "/api/u1/tasks/t1", [(b"content-length", b"0")], "0")
    assert not gated("GET", "/api/u1/events", [])
    assert not gated("DELETE", "/api/u1", [(b"content-length", b"2")], "2")
    assert not gated("DELETE", "/api/u1", [(b"transfer-encoding", b"chunked")])
    assert not gated("GET", "/health", [])
    assert not gated("GET", "/metrics", [])
    assert not gated("GET", "/docs", [])
    gate.slots = None  # SQLite in service: no gate, nothing waits in the middleware
    assert InnerMiddleware(app, max_bytes=1, successors={}, since=datetime.now(UTC), gate=gate).gate is None
