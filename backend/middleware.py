"""Our two pure-ASGI layers, either side of the rate limiter and CORS (backend/main.py), and what they share.

`OuterMiddleware` (outermost of ours): metrics, request id + access log + backstop error rendering,
security headers. `InnerMiddleware` (next to FastAPI's own): body size limit, `Deprecation`/`Link`, error
rendering, 405s. Each wraps `send` once; a body chunk passes through with one comparison."""

from __future__ import annotations

import ipaddress
import logging
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
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
from backend.metrics import Metrics, is_event_stream
from backend.routing import RouteTable, route_path

if TYPE_CHECKING:
    from backend.db import ConnectionGate

access_log = logging.getLogger("taskdeck.access")

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# The docs pages and their assets get DOCS_CSP (backend/docs.py): exactly their own scripts.
DOCS_PATHS = ("/docs", "/redoc", "/static/")
NO_STORE_PREFIX = "/api/auth"  # tokens and sessions: never cached
HSTS = "max-age=63072000; includeSubDomains"
# Where every route takes a database session (tests/test_db.py checks the routes against this): a request there
# without a body waits for a connection at the gate in InnerMiddleware, before FastAPI builds anything for it.
GATED_PREFIX = "/api/"

RawHeaders = list[tuple[bytes, bytes]]


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


class OuterMiddleware(HttpMiddleware):
    """Outermost of ours, outside CORS, so a CORS preflight gets all of it too. Its effects on a response's
    start, in this order (what the three layers it replaced did, innermost first):

    1. metrics: the response counted by route template, method and status; timed unless an event stream
       (its lifetime is no latency);
    2. request context: `X-Request-ID` (the caller's if well formed, else a new one; also in `scope["state"]`
       and the log context), one access log line per request, and a backstop: an exception escaping the
       layers inside (the rate limiter, CORS) before the response started is answered as the 500 (or 503)
       envelope, counted by the metrics as the 500 it is;
    3. security headers, on that backstop 500 too; the docs paths get their own CSP, `/api/auth` no-store.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, hsts: bool = False) -> None:
        super().__init__(app)
        self.metrics = metrics
        self.api_headers = security_headers(API_CSP, no_store=False, hsts=hsts)
        self.docs_headers = security_headers(DOCS_CSP, no_store=False, hsts=hsts)
        self.auth_headers = security_headers(API_CSP, no_store=True, hsts=hsts)

    def headers_for(self, path: str) -> RawHeaders:
        if path.startswith(DOCS_PATHS):
            return self.docs_headers
        return self.auth_headers if path.startswith(NO_STORE_PREFIX) else self.api_headers

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        added = [(b"x-request-id", request_id.encode("latin-1")), *self.headers_for(scope["path"])]
        started = time.perf_counter()
        status = 500  # what the metrics and the log say of a request that ends without a response
        streaming = False
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, streaming, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                streaming = is_event_stream(message)
                set_headers(message, added)
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_wrapper)
            finally:  # the answer of the layers inside, before any backstop answer below
                elapsed = None if streaming else time.perf_counter() - started
                self.metrics.observe_request(scope, status, elapsed)
        except Exception as exc:  # the backstop: errors of the app itself are rendered by InnerMiddleware
            if response_started:
                raise
            await render_unexpected(exc)(scope, receive, send_wrapper)
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


def security_headers(csp: str, *, no_store: bool, hsts: bool) -> RawHeaders:
    """The security headers (contract §7) of one kind of path, as raw headers in the order they are set."""
    headers = {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Content-Security-Policy": csp,
    }
    if no_store:
        headers |= {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if hsts:
        headers["Strict-Transport-Security"] = HSTS
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


def set_headers(message: Message, added: Sequence[tuple[bytes, bytes]]) -> None:
    """Set each of `added` (lower-case raw names, each once) on a response start `message`, in one pass over
    its headers: what `MutableHeaders(scope=message)[name] = value` for each in turn does. A header already
    there takes the new value where it stands (its repeats dropped); the others are appended in order."""
    values = dict(added)
    seen: set[bytes] = set()
    headers: RawHeaders = []
    for name, value in message.get("headers", ()):
        if name in values:
            if name in seen:
                continue
            seen.add(name)
            value = values[name]
        headers.append((name, value))
    if len(seen) < len(values):
        headers.extend(item for item in added if item[0] not in seen)
    message["headers"] = headers


class InnerMiddleware(HttpMiddleware):
    """Ours next to FastAPI's own, inside the rate limiter, so that what it answers (413, 405, 500) still
    gets rate-limit headers, CORS and all of OuterMiddleware. In order of effect (what the four layers it
    replaced did, outermost first):

    1. body size limit: 413 for a `Content-Length` over `max_bytes` (or not a number), before anything else;
       a streamed body is counted as it is read, and going over is an HTTPException(413) that FastAPI's
       body reader passes on to the error handlers;
    2. deprecated routes say so on every answer (RFC 9745, RFC 8288): `Deprecation: @<unix seconds>` and,
       once the caller is known, `Link: <successor>; rel="successor-version"` with the caller's id and the
       request's path parameters filled in. `successors`: (method, route path template) -> successor path
       template;
    3. error rendering: an exception before the response started becomes the 500 (or 503) envelope;
    4. 405 with `Allow` where routing alone would hand a path to a less specific template than its own
       (backend/routing.py): `PUT /api/{user_id}/tasks/search` is no task update with task id `search`;
    5. the connection gate (`gate`, db.ConnectionGate): a request without a body under `/api/` that is not for an
       event stream (`streams`: the stream routes' path patterns) waits here for its turn at the database, before
       FastAPI builds its Request and solves its dependencies: waiting, it holds ~6 KB (the frames of the layers
       above) instead of ~20 KB; its session takes the slot over. No turn within the pool timeout: the 503
       envelope the session dependency answered, the route named in the access log and metrics. A request with a
       body waits in its session dependency as before (FastAPI reads the body first: a slow upload holds no
       slot), and so does an event stream (its response outlives its session).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        successors: Mapping[tuple[str, str], str],
        since: datetime,
        gate: ConnectionGate | None = None,
        streams: Sequence[re.Pattern[str]] = (),
    ) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes
        self.successors = successors
        self.deprecation = f"@{int(since.timestamp())}"
        self.gate = gate if gate is not None and gate.slots is not None else None
        self.streams = tuple(streams)

    def gated(self, scope: Scope, length: str | None) -> bool:
        """Whether the request (its `Content-Length`: `length`) waits for its turn at the database here (above, 5)."""
        if self.gate is None or (length is not None and length != "0"):
            return False
        path: str = scope["path"]
        if not path.startswith(GATED_PREFIX) or any(stream.match(path) for stream in self.streams):
            return False
        return _header(scope, b"transfer-encoding") is None

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        max_bytes = self.max_bytes
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > max_bytes):
            await render_error(PayloadTooLarge.over(max_bytes))(scope, receive, send)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    # An HTTPException passes through FastAPI's body reader to the error handlers.
                    raise HTTPException(413, PayloadTooLarge.over(max_bytes).message)
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                self.mark_deprecated(scope, message)
            await send(message)

        admitted = False
        try:
            allowed = RouteTable.of(scope["app"]).refused(scope["method"], route_path(scope))
            if allowed is None:
                if self.gated(scope, length):
                    assert self.gate is not None
                    try:
                        admitted = await self.gate.admit(scope)
                    except Exception:  # no turn in time: the access log and metrics name the route all the same
                        if (route := route_of(scope)) is not None:
                            scope["route"] = route
                        raise
                await self.app(scope, limited_receive, send_wrapper)
            else:
                refused = MethodNotAllowed(headers={"Allow": ", ".join(sorted(allowed))})
                await render_error(refused)(scope, limited_receive, send_wrapper)
        except Exception as exc:  # the one place nothing escapes: render, never re-raise
            if response_started:
                raise
            await render_unexpected(exc)(scope, limited_receive, send_wrapper)
        finally:
            if admitted:
                assert self.gate is not None
                self.gate.dismiss(scope)

    def mark_deprecated(self, scope: Scope, message: Message) -> None:
        route = getattr(scope.get("route"), "path", None)
        successor = self.successors.get((scope["method"], route)) if route else None
        if successor is None:
            return
        headers = MutableHeaders(scope=message)
        headers["Deprecation"] = self.deprecation
        target = _fill(successor, scope)
        if target is not None:
            headers.append("Link", f'<{target}>; rel="successor-version"')


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
    return _resolved(peer, tuple(forwarded_for), trusted)


# Parsing the peer and the X-Forwarded-For hops (`ipaddress`) was 3 % of a list request's CPU: the same few
# addresses come again and again (specs/performance.md, "Requests within the pool"). Bounded: distinct forged
# headers only evict older entries.
@lru_cache(maxsize=4096)
def _resolved(peer: str, forwarded_for: tuple[str, ...], trusted: tuple[Network, ...]) -> str:
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
