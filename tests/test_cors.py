"""CORS for the web app: explicit origins with credentials, on every response including errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from backend.config import ConfigError
from tests.conftest import assert_error, make_settings
from tests.support import client_for

ALLOWED = "https://app.example.com"
FOREIGN = "https://evil.example.net"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # In-process limits (no Redis needed) so a 429 can be produced.
    return {
        "CORS_ORIGINS": f"http://localhost:3000,{ALLOWED}",
        "RATE_LIMIT_ENABLED": True,
        "REDIS_URL": None,
        "RATE_LIMIT_DEFAULT": "1000/minute",
        "RATE_LIMIT_LOGIN_IP": "1/hour",
    }


def preflight(origin: str, method: str = "POST", headers: str = "authorization,content-type") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


class TestPreflight:
    async def test_allowed_origin(self, client: httpx.AsyncClient) -> None:
        response = await client.options("/api/auth/login", headers=preflight(ALLOWED, "PATCH", "If-Match,X-Request-ID"))
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
        assert methods == {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
        assert "*" not in response.headers["Access-Control-Allow-Headers"]
        assert "X-Request-ID" in response.headers  # answered by the CORS layer, still inside the request context
        assert response.headers["X-Frame-Options"] == "DENY"

    async def test_foreign_origin_is_refused_in_the_envelope(self, client: httpx.AsyncClient) -> None:
        response = await client.options("/api/auth/login", headers=preflight(FOREIGN))
        assert_error(response, 400, "CORS_NOT_ALLOWED")
        assert "Access-Control-Allow-Origin" not in response.headers

    async def test_header_the_api_does_not_use_is_refused(self, client: httpx.AsyncClient) -> None:
        response = await client.options("/api/auth/login", headers=preflight(ALLOWED, "POST", "X-Debug-Me"))
        assert_error(response, 400, "CORS_NOT_ALLOWED")

    async def test_method_the_api_does_not_use_is_refused(self, client: httpx.AsyncClient) -> None:
        response = await client.options("/api/auth/login", headers=preflight(ALLOWED, "TRACE", "content-type"))
        assert_error(response, 400, "CORS_NOT_ALLOWED")


class TestSimpleRequests:
    async def test_allowed_origin_gets_credentials_and_exposed_headers(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health", headers={"Origin": ALLOWED})
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        assert "Origin" in response.headers["Vary"]
        exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"x-request-id", "retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= exposed
        assert {"etag", "content-disposition"} <= exposed
        assert {"deprecation", "link"} <= exposed  # a browser app can see it calls a deprecated route

    async def test_foreign_origin_gets_no_cors_headers(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health", headers={"Origin": FOREIGN})
        assert response.status_code == 200  # the browser, not the server, withholds the body
        # Without Access-Control-Allow-Origin the browser shares nothing (Starlette's other CORS headers are inert).
        assert "Access-Control-Allow-Origin" not in response.headers
        assert FOREIGN not in str(response.headers)

    async def test_error_responses_carry_cors_headers(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        async def boom() -> None:
            raise RuntimeError("kaboom")

        app.add_api_route("/test/boom", boom, methods=["GET"])
        origin = {"Origin": ALLOWED}
        async with client_for(app, "192.0.2.44") as http:
            attempt = {"email": "a@example.com", "password": "not-the-password"}
            await http.post("/api/auth/login", json=attempt, headers=origin)
            limited = await http.post("/api/auth/login", json=attempt, headers=origin)
        responses = {
            401: await client.get("/api/auth/me", headers=origin),
            404: await client.get("/no/such/route", headers=origin),
            429: limited,
            500: await client.get("/test/boom", headers=origin),
        }
        for status, response in responses.items():
            assert response.status_code == status, response.text
            assert response.headers["Access-Control-Allow-Origin"] == ALLOWED, status
            assert response.headers["Access-Control-Allow-Credentials"] == "true", status
        assert "kaboom" not in responses[500].text


def test_wildcard_origin_is_refused_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CORS_ORIGINS"):
        make_settings("sqlite://", tmp_path, CORS_ORIGINS="https://app.example.com,*")
