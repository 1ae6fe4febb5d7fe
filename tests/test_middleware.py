"""Security headers by path and setting; non-HTTP scopes pass through the middleware untouched."""

from __future__ import annotations

import pytest

from backend.middleware import DOCS_CSP


class TestSecurityHeaders:
    async def test_no_hsts_by_default(self, client):
        r = await client.get("/health/live")
        assert "strict-transport-security" not in r.headers
        assert "cache-control" not in r.headers

    @pytest.mark.parametrize("settings_overrides", [{"HSTS_ENABLED": True}])
    async def test_hsts_when_configured(self, client):
        r = await client.get("/health/live")
        assert r.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"

    async def test_docs_get_the_relaxed_policy(self, client):
        r = await client.get("/docs")
        assert r.headers["content-security-policy"] == DOCS_CSP
        assert r.headers["x-frame-options"] == "DENY"


async def test_lifespan_scope_passes_through(app):
    """The ASGI lifespan protocol reaches the app through every middleware."""
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
