"""Shared fixtures: every API test runs on SQLite and on the machine's real PostgreSQL.

One PostgreSQL database and one Redis key prefix per test run, created here and removed at
the end. The schema stays in place for the whole run.

Isolation. By default a test's app runs every session on one connection inside an outer
transaction that is rolled back at the end of the test: a service's `commit()` only releases a
savepoint, so nothing a test writes outlives it and there is nothing to clean up. A test that
needs real commits (concurrent requests on one app, two apps or processes on one database, sync
runs executing in the background, migrations) is marked `@pytest.mark.committing` (or its
module sets `pytestmark`): its app commits for real and every table is emptied afterwards.
A rolled-back test failing with a savepoint error ("no such savepoint", "IllegalStateChangeError",
"another operation is in progress") uses the database concurrently: mark it committing.
In a rolled-back test a started sync run is queued but never executed (see `rolled_back`).

Set TEST_BACKENDS=sqlite to run without PostgreSQL on purpose; otherwise an unreachable
PostgreSQL or Redis is an error, never a silent skip.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.config import Settings, load_settings
from backend.db import create_engine
from backend.deps import OwnerDep
from backend.main import create_app
from backend.migrations.runner import upgrade
from backend.models.common import metadata
from tests.factories import PASSWORD as PASSWORD
from tests.factories import UserCtx as UserCtx
from tests.factories import make_user

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
BACKENDS = [b.strip() for b in os.environ.get("TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()]
RUN_ID = uuid.uuid4().hex[:10]
# PostgreSQL-only modules (the outage test runs a server of its own): part of the PostgreSQL opt-out.
collect_ignore = (
    []
    if "postgresql" in BACKENDS
    else ["test_outage.py", "test_pg_hang.py", "test_faults.py", "test_races.py", "test_pooler.py"]
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "committing: the test's app commits for real (tables emptied afterwards) instead of running in a "
        "transaction rolled back at its end; for concurrency, several apps or processes, background sync runs",
    )


def _pg_conninfo(url: str, dbname: str | None = None) -> str:
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    if dbname:
        conninfo = conninfo.rsplit("/", 1)[0] + "/" + dbname
    return conninfo


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this run (dropped at the end)."""
    name = f"taskdeck_test_{RUN_ID}"
    try:
        admin = psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc.__class__.__name__}). Start it "
            "(see README) or set TEST_BACKENDS=sqlite to run without it on purpose.",
            pytrace=False,
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_conninfo(PG_ADMIN_URL, name)
    finally:
        with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    """A migrated database of each backend, shared by the run's tests."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_database")
    else:
        url = f"sqlite:///{data_dir / 'taskdeck.db'}"
    upgrade(url)
    return url


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "ENVIRONMENT": "test",
        "DATABASE_URL": database_url,
        "DATA_DIR": data_dir,
        "JWT_SECRET": secrets.token_urlsafe(48),
        "BCRYPT_ROUNDS": 4,
        "RATE_LIMIT_ENABLED": False,
        "REDIS_KEY_PREFIX": f"taskdeck-test-{RUN_ID}",
        "LOG_LEVEL": "info",
        "AUTO_MIGRATE": False,
        # Nothing in the suite reaches the internet: sync runs fail fast unless a test points
        # GITHUB_API_URL at its local GitHub stand-in.
        "GITHUB_API_URL": "http://127.0.0.1:9",
        # An event stream ends by itself, so sweeps over every operation can read it to the end.
        "EVENTS_STREAM_MAX_SECONDS": 0.3,
        # Tests read /health right after stopping or starting a dependency; tests/routers/test_health.py
        # tests the cache (HealthCache) with its own settings.
        "HEALTH_CACHE_SECONDS": 0,
        # Concurrency tests queue dozens of requests for the pool's connections; on a loaded 2-core machine
        # the last of them wait longer than the production 5 s. Outage tests set their own short timeout.
        "DB_POOL_TIMEOUT": 30,
        # Likewise a statement and a Redis call may wait for the CPU for seconds there; the hang tests
        # (test_pg_hang, test_redis_hang, test_breaker) set the production-short bounds they test.
        "DB_STATEMENT_TIMEOUT": 30,
        "REDIS_TIMEOUT_SECONDS": 2.0,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    from tests.support import delete_keys, unique_prefix  # support imports this module

    value = unique_prefix()
    yield value
    delete_keys(value)


@pytest.fixture
def own_redis() -> Iterator[Any]:
    """A private redis-server (tests.support.RedisServer) the test may kill, restart, stop and continue."""
    from tests.support import RedisServer  # support imports this module

    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.resume()  # a stopped server, too, is then killed
        server.kill()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module (or parametrize) to change the app's settings."""
    return {}


async def empty_tables(app: FastAPI) -> None:
    async with app.state.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(text(f'DELETE FROM "{table.name}"'))


def bound_sessions(conn: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Sessions joining `conn`'s transaction: their commit releases a savepoint, their rollback returns to it.

    SQLAlchemy's "Joining a Session into an External Transaction" recipe; the options are backend.db's.
    """
    return async_sessionmaker(
        bind=conn,
        class_=AsyncSession,
        expire_on_commit=False,
        autoflush=False,
        join_transaction_mode="create_savepoint",
    )


class ConnectionEngine:
    """Stands in for `app.state.engine` in a rolled-back test: `connect()`/`begin()` hand out the test's connection.

    A connection of the real pool would not see the test's rows (PostgreSQL) or would wait for its
    write lock (SQLite, `BEGIN IMMEDIATE`). `connect()` rolls back to a savepoint at its end, `begin()`
    releases it; anything else (the dialect, the pool) is the real engine's.
    """

    def __init__(self, engine: AsyncEngine, conn: AsyncConnection) -> None:
        self._engine = engine
        self._conn = conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        savepoint = await self._conn.begin_nested()
        try:
            yield self._conn
        finally:
            if savepoint.is_active:
                await savepoint.rollback()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        async with self._conn.begin_nested():
            yield self._conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


@asynccontextmanager
async def rolled_back(app: FastAPI) -> AsyncIterator[AsyncConnection]:
    """Run `app`'s database work in one transaction, rolled back at the end.

    Everything that opens sessions at request time reads `app.state.sessionmaker` (the request's
    session, idempotency's key sessions, event tickets); the sync runner captured the sessionmaker
    at create_app time, so it is rebound too. Its runs are not executed, and its lease keeper is
    stopped: a background task would use the connection concurrently with the test's next request
    (mark such tests committing).
    """
    state = app.state
    engine: AsyncEngine = state.engine
    runner = state.sync_runner
    originals = (state.sessionmaker, runner.sessions, runner.submit)
    await runner.stop_keeping_leases()  # its sweeps would share the test's connection
    conn = await engine.connect()
    await conn.begin()  # SQLite: BEGIN IMMEDIATE (backend.db), so the test holds the write lock throughout
    state.sessionmaker = runner.sessions = bound_sessions(conn)
    state.engine = ConnectionEngine(engine, conn)
    state.unexecuted_sync_runs = []
    runner.submit = state.unexecuted_sync_runs.append
    try:
        yield conn
    finally:
        state.sessionmaker, runner.sessions, runner.submit = originals
        state.engine = engine
        try:
            await conn.rollback()
        finally:
            await conn.close()


@pytest.fixture
async def app(
    request: pytest.FixtureRequest, database_url: str, data_dir: Path, settings_overrides: dict[str, Any]
) -> AsyncIterator[FastAPI]:
    """The app on this backend: in a transaction rolled back at the end, or committing (see the module docstring)."""
    application = create_app(make_settings(database_url, data_dir, **settings_overrides))
    async with application.router.lifespan_context(application):
        if request.node.get_closest_marker("committing"):
            try:
                yield application
            finally:
                await empty_tables(application)
        else:
            async with rolled_back(application):
                yield application


@pytest.fixture
async def db_session(database_url: str) -> AsyncIterator[AsyncSession]:
    """A session for calling services directly, in a transaction rolled back at the end of the test.

    The session's own commits release savepoints (as the app's sessions do in a rolled-back test).
    """
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            await conn.begin()
            try:
                async with bound_sessions(conn)() as session:
                    yield session
            finally:
                await conn.rollback()
    finally:
        await engine.dispose()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def user(client: httpx.AsyncClient) -> UserCtx:
    return await make_user(client)


@pytest.fixture
async def other_user(client: httpx.AsyncClient) -> UserCtx:
    return await make_user(client)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the contract's error envelope with this status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


def mount_test_routes(app: FastAPI) -> None:
    """Routes that exist only in tests: an owned probe (for OwnerDep) and one that fails unexpectedly."""
    router = APIRouter()

    @router.get("/api/{user_id}/probe")
    async def probe(owner: OwnerDep) -> dict[str, Any]:
        return {"success": True, "data": {"owner": owner}, "message": None}

    @router.get("/test/boom")
    async def boom() -> None:
        raise RuntimeError("boom: SELECT secret FROM vault WHERE password='hunter2'")

    app.include_router(router)
