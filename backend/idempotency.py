"""`Idempotency-Key` on creates: a retried request gets the first outcome replayed, never a second execution.

Enable it on a route with `@idempotent` between the route decorator and the endpoint. The key is
scoped to the caller; the request is fingerprinted by method, route template, path parameters and
canonical JSON body. One request claims the key (a unique row in the database, so it holds across
instances); a concurrent one polls that row for up to `IDEMPOTENCY_WAIT_SECONDS` and replays the
result, or answers 409 CONFLICT with `Retry-After` when it is still running. A failed request
releases its key, so a retry executes for real; only successful outcomes are replayed.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, TypeVar, cast

import anyio
from fastapi import Depends, Header, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db import commit, end_read, unit_of_work
from backend.deps import CurrentUser, SessionDep
from backend.errors import Conflict, IdempotencyKeyReused
from backend.models.idempotency import IdempotencyKey, KeyStatus
from backend.services import idempotency as key_service

log = logging.getLogger("taskdeck.idempotency")

KEY_PATTERN = r"^[\x20-\x7E]{1,255}$"
POLL_SECONDS = 0.05
PURGE_EVERY_SECONDS = 3600.0
REPLAYED_HEADER = "Idempotent-Replayed"
# Response headers worth replaying (the body and status always are).
KEPT_HEADERS = ("etag", "location")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
T = TypeVar("T")


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        description="Any unique string (1-255 printable ASCII characters), e.g. a UUID. Retrying with the same key "
        "and body within 24 h replays the first response (with `Idempotent-Replayed: true`) instead of "
        "creating again; the same key with another body is 422 `IDEMPOTENCY_KEY_REUSED`.",
        examples=["5f0c6a8e-8d0e-4b7c-9a55-0d3a1b2c4e6f"],
    ),
]


def fingerprint(method: str, route: str, path_params: dict[str, Any], body: bytes) -> str:
    """What makes two requests "the same": method, route template, path parameters, canonical JSON body."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")) if body else ""
    except ValueError:
        canonical = body.hex()
    parts = [method, route, json.dumps(path_params, sort_keys=True), canonical]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def request_hash(request: Request, body: bytes) -> str:
    route = str(getattr(request.scope.get("route"), "path", request.url.path))
    return fingerprint(request.method, route, dict(request.path_params), body)


@lru_cache(maxsize=64)
def _adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def render(request: Request, result: Any, sub_response: Response) -> Response:
    """The response FastAPI would send for `result`: the route's response model, status and headers."""
    if isinstance(result, Response):
        return result
    route = request.scope.get("route")
    model = getattr(route, "response_model", None)
    if model is not None:
        # From the objects, as FastAPI reads them (a task's `labels` is an attribute, not a field of the row).
        adapter = _adapter(model)
        content = adapter.dump_python(adapter.validate_python(result, from_attributes=True), mode="json")
    else:
        content = jsonable_encoder(result)
    status = sub_response.status_code or getattr(route, "status_code", None) or 200
    headers = {k: v for k, v in sub_response.headers.items() if k.lower() != "content-length"}
    return JSONResponse(content, status_code=status, headers=headers)


def _outcome(response: Response) -> dict[str, Any]:
    headers = {k: v for k, v in response.headers.items() if k.lower() in KEPT_HEADERS}
    return {
        "status": response.status_code,
        "body": bytes(response.body).decode("utf-8"),
        "headers": json.dumps(headers),
    }


def replay(row: IdempotencyKey) -> Response:
    headers = json.loads(row.response_headers or "{}")
    headers[REPLAYED_HEADER] = "true"
    return Response(
        content=row.response_body or "",
        status_code=row.response_status or 200,
        media_type="application/json",
        headers=headers,
    )


@dataclass
class Idempotency:
    request: Request
    session: AsyncSession  # the request's own: its read is ended before the key's transactions start
    user_id: str
    key: str | None

    @property
    def _sessions(self) -> async_sessionmaker[AsyncSession]:
        factory: async_sessionmaker[AsyncSession] = self.request.app.state.sessionmaker
        return factory

    async def run(self, call: Callable[[], Awaitable[Any]], sub_response: Response) -> Any:
        if self.key is None:
            return await call()
        digest = request_hash(self.request, await self.request.body())
        await end_read(self.session)
        await self._purge_now_and_then()
        replayed = await self._claim(self.key, digest)
        if replayed is not None:
            return replayed
        try:
            response = render(self.request, await call(), sub_response)
            # The work and the record of its outcome are one transaction: both are kept, or neither.
            await key_service.complete(self.session, self.user_id, self.key, **_outcome(response))
            await commit(self.session)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._release(self.key)
            raise
        return response

    async def _own(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        """One key operation in a transaction of its own, committed at once: other requests must see it."""
        async with unit_of_work(self._sessions) as session:
            return await operation(session, self.user_id, *args)

    async def _claim(self, key: str, digest: str) -> Response | None:
        deadline = time.monotonic() + self.request.app.state.settings.IDEMPOTENCY_WAIT_SECONDS
        row = await self._own(key_service.claim, key, digest)
        while row is not None:
            if row.request_hash != digest:
                raise IdempotencyKeyReused(field="Idempotency-Key")
            if row.status == KeyStatus.DONE:
                return replay(row)
            if await self._own(key_service.take_over, key, digest):
                return None
            if time.monotonic() >= deadline:
                raise Conflict(
                    "A request with this Idempotency-Key is still being processed; retry shortly",
                    headers={"Retry-After": "1"},
                )
            await asyncio.sleep(POLL_SECONDS)
            row = await self._own(key_service.find, key)
            if row is None:  # the first request failed and let go of the key: ours now, if we win it
                row = await self._own(key_service.claim, key, digest)
        return None

    async def _release(self, key: str) -> None:
        try:
            await self.session.rollback()  # the failed work's transaction (SQLite: its write lock) ends first
            await self._own(key_service.release, key)
        except Exception as exc:  # the original failure matters more; the key expires anyway
            log.warning(
                "could not release an idempotency key",
                extra={"event": "idempotency_release_failed", "error_type": type(exc).__name__},
            )

    async def _purge_now_and_then(self) -> None:
        """Expired keys of every user go at the first keyed request after start-up, then hourly."""
        state = self.request.app.state
        if time.monotonic() < getattr(state, "idempotency_purge_at", 0.0):
            return
        state.idempotency_purge_at = time.monotonic() + PURGE_EVERY_SECONDS
        async with unit_of_work(self._sessions) as session:
            purged = await key_service.purge_expired(session)
        if purged:
            log.info("expired idempotency keys purged", extra={"event": "idempotency_purged", "count": purged})


async def get_idempotency(
    request: Request, session: SessionDep, user: CurrentUser, idempotency_key: IdempotencyKeyHeader = None
) -> Idempotency:
    return Idempotency(request=request, session=session, user_id=user.id, key=idempotency_key)


IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]
_KEY_PARAM = "idempotency__"
_RESPONSE_PARAM = "idempotency_response__"


def idempotent(endpoint: F) -> F:
    """Make a create route honour `Idempotency-Key`. The endpoint itself stays unchanged.

    The wrapper adds two parameters FastAPI fills in (the key, and the response whose headers the
    endpoint may set) and keeps the endpoint's own annotations, which FastAPI resolves as usual.
    """
    signature = inspect.signature(endpoint)
    # FastAPI fills one Response parameter per endpoint: reuse the endpoint's own if it has one.
    own_response = next((p.name for p in signature.parameters.values() if p.annotation in (Response, "Response")), None)
    added = [inspect.Parameter(_KEY_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=IdempotencyDep)]
    if own_response is None:
        added.append(inspect.Parameter(_RESPONSE_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Response))

    @functools.wraps(endpoint)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        idempotency: Idempotency = kwargs.pop(_KEY_PARAM)
        sub_response: Response = kwargs[own_response] if own_response else kwargs.pop(_RESPONSE_PARAM)
        return await idempotency.run(lambda: endpoint(*args, **kwargs), sub_response)

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), *added]
    )
    return cast(F, wrapper)
