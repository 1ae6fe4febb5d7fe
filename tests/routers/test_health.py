"""`/health` (database check) and `/health/live` (no dependencies)."""

from __future__ import annotations

from backend.config import VERSION


class TestHealth:
    async def test_ok(self, client):
        r = await client.get("/health")
        assert r.status_code == 200
        assert r.json() == {
            "success": True,
            "data": {"status": "ok", "database": "ok", "redis": "disabled", "version": VERSION},
            "message": None,
        }


class TestLive:
    async def test_ok(self, client):
        r = await client.get("/health/live")
        assert r.status_code == 200
        assert r.json()["data"] == {"status": "ok"}
