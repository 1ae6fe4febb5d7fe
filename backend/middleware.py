"""Pure ASGI middleware: request id + access log + last-resort errors, security headers, body limit."""

from __future__ import annotations

import ipaddress
import logging
import re
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi.routing import iter_route_contexts
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware as StarletteCORSMiddleware
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.docs import DOCS_CSP as DOCS_CSP  # re-exported: the header the docs paths get
from backend.errors import CorsNotAllowed, MethodNotAllowed, PayloadTooLarge, render_error, render_unexpected
from backend.logging_setup import request_id_var
from backend.routing import RouteTable, route_path

access_log = logging.getLogger("taskdeck.access")

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# The docs pages and their assets get DOCS_CSP (backend/docs.py): exactly their own scripts.
DOCS_PATHS = ("/docs", "/redoc", "/static/")


class HttpMiddleware:
    """Base of the middleware here: lifespan and websocket scopes pass straight through, `handle` serves HTTP."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class RequestContextMiddleware(HttpMiddleware):
    """Gives every request an id, writes the access log line, renders escaped errors (inside the security headers)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            # A backstop: errors from the app itself are rendered by ErrorRenderingMiddleware, innermost.
            await call_rendering_errors(self.app, scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            access_log.info(
                "request",
                extra={
                    "event": "http_request",
                    "method": scope["method"],
                    "route": getattr(route, "path", None) or "<unmatched>",
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "user_id": state.get("user_id"),
                    "client": client_ip(scope),
                },
            )
            request_id_var.reset(token)


async def call_rendering_errors(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run `app`; an exception before the response started becomes the 500 (or 503) envelope."""
    response_started = False

    async def send_wrapper(message: Message) -> None:
        nonlocal response_started
        response_started = response_started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, receive, send_wrapper)
    except Exception as exc:  # the one place nothing escapes: render, never re-raise
        if response_started:
            raise
        await render_unexpected(exc)(scope, receive, send)


class ErrorRenderingMiddleware(HttpMiddleware):
    """Innermost: a 500 rendered here still passes through CORS, security headers and rate-limit headers."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await call_rendering_errors(self.app, scope, receive, send)


class MethodNotAllowedMiddleware(HttpMiddleware):
    """405 with `Allow` where routing alone would hand a path to a less specific template than its own
    (backend/routing.py): `PUT /api/{user_id}/tasks/search` is no task update with task id `search`."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        allowed = RouteTable.of(scope["app"]).refused(scope["method"], route_path(scope))
        if allowed is None:
            await self.app(scope, receive, send)
            return
        refused = MethodNotAllowed(headers={"Allow": ", ".join(sorted(allowed))})
        await render_error(refused)(scope, receive, send)


class DeprecationMiddleware(HttpMiddleware):
    """Deprecated routes say so on every answer (RFC 9745, RFC 8288): `Deprecation: @<unix seconds>` and, once
    the caller is known, `Link: <successor>; rel="successor-version"` with the caller's id and the request's
    path parameters filled in. `successors`: (method, route path template) -> successor path template."""

    def __init__(self, app: ASGIApp, *, successors: Mapping[tuple[str, str], str], since: datetime) -> None:
        super().__init__(app)
        self.successors = successors
        self.deprecation = f"@{int(since.timestamp())}"

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", None)
                successor = self.successors.get((scope["method"], route)) if route else None
                if successor is not None:
                    headers = MutableHeaders(scope=message)
                    headers["Deprecation"] = self.deprecation
                    target = _fill(successor, scope)
                    if target is not None:
                        headers.append("Link", f'<{target}>; rel="successor-version"')
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _fill(template: str, scope: Scope) -> str | None:
    """`template` with `{user_id}` the caller's id and every other parameter the request's; None without a caller."""
    user_id = scope.get("state", {}).get("user_id")
    if user_id is None:
        return None
    values = {**scope.get("path_params", {}), "user_id": user_id}
    return re.sub(r"\{(\w+)\}", lambda m: quote(str(values[m[1]]), safe=""), template)


CORS_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CORS_HEADERS = [
    "Authorization",
    "Content-Type",
    "X-Request-ID",
    "Idempotency-Key",
    "If-Match",
    "If-None-Match",
    "Last-Event-ID",
]
CORS_EXPOSE = [
    "X-Request-ID",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "ETag",
    "Content-Disposition",
    "Idempotent-Replayed",
    "Deprecation",
    "Link",
]


class CORSMiddleware(StarletteCORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in the error envelope like every other error."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        refused = render_error(CorsNotAllowed())
        for name, value in response.headers.items():
            if name.startswith("access-control-") or name == "vary":
                refused.headers[name] = value
        return refused


class SecurityHeadersMiddleware(HttpMiddleware):
    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        super().__init__(app)
        self.hsts = hsts

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        docs = path.startswith(DOCS_PATHS)
        no_store = path.startswith("/api/auth")

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = "no-referrer"
                headers["Cross-Origin-Opener-Policy"] = "same-origin"
                headers["Content-Security-Policy"] = DOCS_CSP if docs else API_CSP
                if no_store:
                    headers["Cache-Control"] = "no-store"
                    headers["Pragma"] = "no-cache"
                if self.hsts:
                    headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
            await send(message)

        await self.app(scope, receive, send_wrapper)


class BodySizeLimitMiddleware(HttpMiddleware):
    """413 for bodies over the limit, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await render_error(PayloadTooLarge.over(self.max_bytes))(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes through FastAPI's body reader to the error handlers.
                    raise HTTPException(413, PayloadTooLarge.over(self.max_bytes).message)
            return message

        await self.app(scope, limited_receive, send)


def route_of(scope: Scope) -> Any | None:
    """The route the router would dispatch `scope` to, found without dispatching: the first route taking its
    path and method, else the first taking its path alone (which answers 405), else None. For an answer given
    before routing (a 429), so that its access line, metrics and security event name the route template."""
    partial = None
    for context in iter_route_contexts(getattr(scope.get("app"), "routes", ())):
        match, _ = context.matches(scope)
        if match is Match.FULL:
            return context.original_route
        if match is Match.PARTIAL and partial is None:
            partial = context.original_route
    return partial


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip(scope: Mapping[str, Any]) -> str:
    """The client's address: the socket peer, or, when the peer is a trusted proxy, the right-most
    X-Forwarded-For hop that is not itself trusted. Worked out once per request."""
    state = scope.get("state")
    if isinstance(state, dict) and "client_ip" in state:
        return str(state["client_ip"])
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    settings = getattr(getattr(scope.get("app"), "state", None), "settings", None)
    trusted: tuple[Network, ...] = settings.trusted_networks if settings is not None else ()
    forwarded = [value.decode("latin-1") for key, value in scope.get("headers", []) if key == b"x-forwarded-for"]
    ip = resolve_client_ip(peer, forwarded, trusted) if trusted else peer
    if isinstance(state, dict):
        state["client_ip"] = ip
    return ip


def resolve_client_ip(peer: str, forwarded_for: list[str], trusted: tuple[Network, ...]) -> str:
    current = _parse_ip(peer)
    if current is None or not _is_trusted(current, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        address = _parse_ip(hop)
        if address is None:  # garbage from further out: the last trusted hop is all we know
            break
        current = address
        if not _is_trusted(address, trusted):
            break
    return str(current)


def _parse_ip(value: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _is_trusted(address: IPAddress, trusted: tuple[Network, ...]) -> bool:
    return any(address in network for network in trusted)
