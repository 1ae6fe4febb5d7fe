"""`/health` (database check, cached about a second per process) and `/health/live` (no dependencies)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from backend.config import VERSION, Settings
from backend.main import create_app
from tests.conftest import assert_error, make_settings


@contextmanager
def statements(app: FastAPI) -> Iterator[list[str]]:
    """The statements the app's engine sends to the database meanwhile (counted by SQLAlchemy, no stand-in)."""
    engine = app.state.engine.sync_engine
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if not statement.startswith("BEGIN"):  # SQLite's BEGIN IMMEDIATE (backend.db) opens each check's connection
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


class TestHealth:
    async def test_ok(self, client):
        r = await client.get("/health")
        assert r.status_code == 200
        assert r.json() == {
            "success": True,
            "data": {
                "status": "ok",
                "database": "ok",
                "redis": "disabled",
                "redis_breaker": "disabled",
                "version": VERSION,
            },
            "message": None,
        }

    async def test_database_down_is_the_error_envelope_with_the_states_in_details(self, tmp_path):
        """A database that cannot be opened (a SQLite "file" that is a folder): 503, `error` and no `data`."""
        (tmp_path / "taskdeck.db").mkdir()
        app = create_app(make_settings(f"sqlite:///{tmp_path / 'taskdeck.db'}", tmp_path))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            r = await client.get("/health")
        await app.state.engine.dispose()
        error = assert_error(r, 503, "SERVICE_UNAVAILABLE")
        assert r.headers["retry-after"] == "5"
        assert r.json() == {"success": False, "error": error}
        assert error["field"] == "database"
        assert error["details"] == {
            "status": "unavailable",
            "database": "down",
            "redis": "disabled",
            "redis_breaker": "disabled",
            "version": VERSION,
        }

    def test_the_outage_is_documented_as_it_is_sent(self, app):
        schema = app.openapi()
        response = schema["paths"]["/health"]["get"]["responses"]["503"]
        ref = response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        envelope = schema["components"]["schemas"][ref]
        assert set(envelope["properties"]) == {"success", "error"}
        example = response["content"]["application/json"]["example"]
        assert set(example) == {"success", "error"}
        assert example["error"]["details"]["database"] == "down"


@pytest.mark.committing  # concurrent requests on one app
class TestCheckCache:
    """A flood of /health calls must not become a flood of database (and Redis) round trips."""

    def test_about_a_second_by_default(self):
        assert Settings.model_fields["HEALTH_CACHE_SECONDS"].default == 1.0

    # A window far longer than the burst takes on a loaded machine; the default is 1 s.
    @pytest.mark.parametrize("settings_overrides", [{"HEALTH_CACHE_SECONDS": 10}])
    async def test_a_concurrent_burst_is_one_database_check(self, app, client):
        with statements(app) as seen:
            responses = await asyncio.gather(*(client.get("/health") for _ in range(40)))
        assert {r.status_code for r in responses} == {200}
        assert {r.json()["data"]["database"] for r in responses} == {"ok"}
        assert seen == ["SELECT 1"]

    @pytest.mark.parametrize("settings_overrides", [{"HEALTH_CACHE_SECONDS": 2}])
    async def test_a_new_check_after_the_window(self, app, client):
        with statements(app) as seen:
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/health")).status_code == 200
            assert seen == ["SELECT 1"]
            await asyncio.sleep(2.2)
            assert (await client.get("/health")).status_code == 200
        assert seen == ["SELECT 1", "SELECT 1"]


class TestLive:
    async def test_ok(self, client):
        r = await client.get("/health/live")
        assert r.status_code == 200
        assert r.json()["data"] == {"status": "ok"}

    @pytest.mark.committing
    async def test_touches_no_dependency(self, app, client):
        with statements(app) as seen:
            responses = await asyncio.gather(*(client.get("/health/live") for _ in range(10)))
        assert {r.status_code for r in responses} == {200}
        assert seen == []
