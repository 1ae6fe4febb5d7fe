"""Security headers on every response, errors included; no-store on auth; HSTS only when enabled."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from backend.middleware import API_CSP, DOCS_CSP

JSON = "application/json"
BASELINE = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"RATE_LIMIT_ENABLED": True, "REDIS_URL": None, "RATE_LIMIT_REGISTER": "1/hour"}


def assert_secure(response: httpx.Response, csp: str = API_CSP) -> None:
    for name, value in BASELINE.items():
        assert response.headers.get(name) == value, (response.status_code, name)
    assert response.headers["Content-Security-Policy"] == csp
    assert response.headers["X-Request-ID"]
    assert "Strict-Transport-Security" not in response.headers


async def test_on_every_kind_of_response(app: FastAPI, client: httpx.AsyncClient) -> None:
    async def boom() -> None:
        raise RuntimeError("password=hunter2")

    app.add_api_route("/test/boom", boom, methods=["GET"])
    await client.post("/api/auth/register", json={"email": "h1@example.com", "password": "Sturdy-Lantern-42"})
    responses = {
        200: await client.get("/health/live"),
        404: await client.get("/nope"),
        413: await client.post("/api/auth/login", content=b"{" * 2_000_000, headers={"content-type": JSON}),
        422: await client.post("/api/auth/login", json={"email": "x@example.com"}),
        429: await client.post("/api/auth/register", json={"email": "h2@example.com", "password": "Sturdy-Lantern-42"}),
        500: await client.get("/test/boom"),
    }
    for status, response in responses.items():
        assert response.status_code == status, response.text
        assert_secure(response)
    assert responses[500].json()["error"]["code"] == "INTERNAL_ERROR"
    assert "hunter2" not in responses[500].text


async def test_docs_pages_get_their_own_policy(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert_secure(response, DOCS_CSP)
    assert "script-src 'self'" in DOCS_CSP
    assert "http" not in DOCS_CSP  # no third-party host may serve anything to the docs


async def test_auth_responses_are_not_stored(client: httpx.AsyncClient) -> None:
    failed = await client.post("/api/auth/login", json={"email": "nobody@example.com", "password": "whatever-1"})
    assert failed.status_code == 401
    assert failed.headers["Cache-Control"] == "no-store"
    health = await client.get("/health")
    assert "no-store" not in health.headers.get("Cache-Control", "")


@pytest.mark.parametrize("settings_overrides", [{"HSTS_ENABLED": True}])
async def test_hsts_when_enabled(client: httpx.AsyncClient) -> None:
    for response in (await client.get("/health/live"), await client.get("/nope")):
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
