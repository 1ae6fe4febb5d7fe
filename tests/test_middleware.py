"""The middleware stack (four layers of ours), security headers by path and setting, metrics of event
streams, the outer backstop; non-HTTP scopes pass through the middleware untouched."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.datastructures import Headers, MutableHeaders

from backend.middleware import (
    API_CSP,
    DOCS_CSP,
    CORSMiddleware,
    InnerMiddleware,
    OuterMiddleware,
    security_headers,
    set_headers,
)
from backend.ratelimit import RateLimitMiddleware


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


def test_the_stack_is_four_layers_of_ours(app):
    """Each layer wraps every request (a call and a `send` wrapper): one re-added goes red here. Outermost first."""
    assert [m.cls for m in app.user_middleware] == [
        OuterMiddleware,
        CORSMiddleware,
        RateLimitMiddleware,
        InnerMiddleware,
    ]
    layer, built = app.build_middleware_stack(), []
    while not isinstance(layer, APIRouter):
        built.append(type(layer).__name__)
        layer = layer.app
    assert built == [
        "ServerErrorMiddleware",  # FastAPI's (Starlette's) own, then ours, then FastAPI's again
        "ExceptionTelemetryMiddleware",
        "AppBodyLimitMiddleware",
        "OuterMiddleware",
        "CORSMiddleware",
        "RateLimitMiddleware",
        "InnerMiddleware",
        "ExceptionMiddleware",
        "AsyncExitStackMiddleware",
    ]


@pytest.mark.parametrize(
    "existing",
    [
        [],
        [(b"content-type", b"application/json")],
        [(b"x-frame-options", b"SAMEORIGIN"), (b"content-type", b"text/html"), (b"x-frame-options", b"ALLOW")],
        [(b"pragma", b"a"), (b"link", b"<x>"), (b"x-request-id", b"inner"), (b"pragma", b"b"), (b"link", b"<y>")],
    ],
)
def test_set_headers_is_mutable_headers_set_one_after_another(existing):
    added = [(b"x-request-id", b"r-1"), *security_headers(API_CSP, no_store=True, hsts=True)]
    expected: dict = {"headers": list(existing)}
    for name, value in added:
        MutableHeaders(scope=expected)[name.decode()] = value.decode()
    message: dict = {"type": "http.response.start", "status": 200, "headers": tuple(existing)}
    set_headers(message, added)
    assert message["headers"] == expected["headers"]


async def test_event_streams_are_counted_but_not_timed(app, client):
    async def stream() -> StreamingResponse:
        return StreamingResponse(iter([b"data: 1\n\n"]), media_type="text/event-stream")

    app.add_api_route("/test/stream", stream, methods=["GET"])
    for path in ("/test/stream", "/health/live"):
        assert (await client.get(path)).status_code == 200
    registry = app.state.metrics.registry
    for route, timed in (("/test/stream", 0), ("/health/live", 1)):
        labels = {"route": route, "method": "GET"}
        assert registry.get_sample_value("taskdeck_http_requests_total", labels | {"status": "200"}) == 1
        assert (registry.get_sample_value("taskdeck_http_request_duration_seconds_count", labels) or 0) == timed


async def test_a_failing_layer_inside_is_answered_with_id_security_headers_metrics_and_log(app, caplog):
    """What OuterMiddleware wraps (CORS, the rate limiter) failing before the response started: the 500
    envelope, with a request id and the security headers, counted and logged as a 500."""

    async def failing_layer(scope, receive, send):
        raise RuntimeError("a layer broke")

    outer = OuterMiddleware(failing_layer, metrics=app.state.metrics, hsts=True)
    scope = {"type": "http", "method": "GET", "path": "/api/auth/me", "headers": [], "app": app, "client": None}
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    with caplog.at_level(logging.INFO, logger="taskdeck"):
        await outer(scope, receive, send)
    start, body = sent
    headers = Headers(raw=start["headers"])
    assert start["status"] == 500
    assert json.loads(body["body"])["error"]["code"] == "INTERNAL_ERROR"
    assert headers["x-request-id"] == scope["state"]["request_id"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    assert headers["strict-transport-security"].startswith("max-age=")
    labels = {"route": "<unmatched>", "method": "GET", "status": "500"}
    assert app.state.metrics.registry.get_sample_value("taskdeck_http_requests_total", labels) == 1
    (access,) = [r for r in caplog.records if getattr(r, "event", None) == "http_request"]
    assert access.status == 500
