"""Shared fixtures: every API test runs on SQLite and on the machine's real PostgreSQL.

One PostgreSQL database and one Redis key prefix per test run, created here and removed at
the end. Tests leave the schema in place and empty every table afterwards, so concurrency
tests can commit for real. Set TEST_BACKENDS=sqlite to run without PostgreSQL on purpose;
otherwise an unreachable PostgreSQL or Redis is an error, never a silent skip.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import text

from backend.config import Settings, load_settings
from backend.deps import OwnerDep
from backend.main import create_app
from backend.migrations.runner import upgrade
from backend.models.common import metadata

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
BACKENDS = [b.strip() for b in os.environ.get("TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()]
RUN_ID = uuid.uuid4().hex[:10]
# PostgreSQL-only modules (the outage test runs a server of its own): part of the PostgreSQL opt-out.
collect_ignore = [] if "postgresql" in BACKENDS else ["test_outage.py", "test_faults.py", "test_races.py"]
PASSWORD = "Sturdy-Lantern-42"


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
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module (or parametrize) to change the app's settings."""
    return {}


async def empty_tables(app: FastAPI) -> None:
    async with app.state.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(text(f'DELETE FROM "{table.name}"'))


@pytest.fixture
async def app(database_url: str, data_dir: Path, settings_overrides: dict[str, Any]) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(database_url, data_dir, **settings_overrides))
    async with application.router.lifespan_context(application):
        try:
            yield application
        finally:
            await empty_tables(application)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@dataclass
class UserCtx:
    """A registered, logged-in user: what most tests start from."""

    id: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def make_user(client: httpx.AsyncClient, email: str | None = None, password: str = PASSWORD) -> UserCtx:
    email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
    registered = await client.post("/api/auth/register", json={"email": email, "password": password})
    assert registered.status_code == 201, registered.text
    login = await client.post("/api/auth/login", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    tokens = login.json()["data"]
    return UserCtx(tokens["user_id"], email, password, tokens["access_token"], tokens["refresh_token"])


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
