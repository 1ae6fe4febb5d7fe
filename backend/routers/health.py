"""Health checks: `/health` checks dependencies, `/health/live` never does."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.config import VERSION
from backend.db import ping
from backend.envelope import Envelope
from backend.errors import ServiceUnavailable, render_error
from backend.models.common import RESPONSE_CONFIG

router = APIRouter(tags=["health"])
# How long /health waits for the database's answer (PostgreSQL): it answers within 3 s even when the server hangs.
DATABASE_CHECK_SECONDS = 2.0


class HealthCache:
    """One dependency check per `seconds` per process, however many callers: `/health` is public and
    must not turn a flood of requests into a flood of database and Redis round trips. Callers
    arriving while a check runs wait for it (one lock) and share its result."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = asyncio.Lock()
        self._result: tuple[str, str] = ("down", "down")
        self._checked_at = -math.inf
        self._ping: asyncio.Task[None] | None = None

    def _fresh(self) -> bool:
        return time.monotonic() - self._checked_at < self.seconds

    async def states(self, state: Any) -> tuple[str, str]:
        """(database, redis), checked at most once per window."""
        if self._fresh():
            return self._result
        async with self._lock:
            if not self._fresh():  # another caller may have checked while this one waited
                database = await self._database(state.engine)
                redis = await state.limiter.health() if getattr(state, "limiter", None) else "disabled"
                self._result = (database, redis)
                self._checked_at = time.monotonic()
            return self._result

    async def _database(self, engine: AsyncEngine) -> str:
        """ "ok" or "down". On PostgreSQL, no answer within DATABASE_CHECK_SECONDS is "down": the ping is left to
        end by itself within the connection's own bounds (DB_STATEMENT_TIMEOUT), never cancelled (a cancelled
        psycopg wait first asks a hung server to cancel, and waits for that too), and a later check waits for the
        same ping rather than starting another."""
        if self._ping is None or self._ping.done():
            self._ping = asyncio.ensure_future(ping(engine))
            self._ping.add_done_callback(_outcome_read)
        timeout = DATABASE_CHECK_SECONDS if engine.dialect.name == "postgresql" else None
        done, _ = await asyncio.wait({self._ping}, timeout=timeout)
        if not done or self._ping.cancelled() or self._ping.exception():
            return "down"  # any failure to reach it; details go nowhere
        return "ok"


def _outcome_read(task: asyncio.Task[None]) -> None:
    """A ping nobody waits for any more: its failure is expected, not an unretrieved exception."""
    if not task.cancelled():
        task.exception()


def _breaker(state: Any) -> str:
    redis = getattr(state, "redis", None)
    return redis.state if redis is not None else "disabled"


class HealthStatus(BaseModel):
    model_config = RESPONSE_CONFIG

    status: str
    database: str
    redis: str
    redis_breaker: Literal["closed", "open", "half_open", "disabled"] = Field(
        description="The circuit breaker in front of Redis: `open` while Redis is skipped after failures "
        "(limits fail open, live events are dropped), `half_open` when the next call probes it; "
        "`disabled` without `REDIS_URL`"
    )
    version: str


class LiveStatus(BaseModel):
    model_config = RESPONSE_CONFIG

    status: Literal["ok"] = "ok"


class HealthEnvelope(Envelope[HealthStatus]):
    pass


class LiveEnvelope(Envelope[LiveStatus]):
    pass


class HealthError(BaseModel):
    """The 503's `error`: the error envelope's fields, with the component states in `details`."""

    model_config = RESPONSE_CONFIG

    code: Literal["SERVICE_UNAVAILABLE"] = "SERVICE_UNAVAILABLE"
    message: str = Field(examples=["database unreachable"])
    field: str | None = Field(description="The failing component", examples=["database"])
    details: HealthStatus


class HealthOutage(BaseModel):
    """The 503 body: the error envelope (no `data`), the component states in `error.details`."""

    model_config = RESPONSE_CONFIG

    success: Literal[False] = False
    error: HealthError


@router.get(
    "/health",
    response_model=HealthEnvelope,
    summary="Readiness: database and Redis",
    operation_id="health",
    responses={
        503: {
            "model": HealthOutage,
            "description": "The database is unreachable (`Retry-After: 5`)",
            "content": {
                "application/json": {
                    "example": {
                        "success": False,
                        "error": {
                            "code": ServiceUnavailable.code,
                            "message": "database unreachable",
                            "field": "database",
                            "details": {
                                "status": "unavailable",
                                "database": "down",
                                "redis": "ok",
                                "redis_breaker": "closed",
                                "version": VERSION,
                            },
                        },
                    }
                }
            },
        }
    },
)
async def health(request: Request) -> Any:
    """200 while the database answers; otherwise 503 in the error envelope, `error.field` the failing component and
    `error.details` every component's state. Redis down is degraded, not fatal."""
    # Checked at most once per HEALTH_CACHE_SECONDS (1 s) per process: see HealthCache.
    database, redis = await request.app.state.health.states(request.app.state)
    healthy = database == "ok"
    data = {
        "status": "ok" if healthy else "unavailable",
        "database": database,
        "redis": redis,
        "redis_breaker": _breaker(request.app.state),  # read now, no I/O: never cached, never slow
        "version": VERSION,
    }
    if not healthy:  # 503 with `Retry-After: 5`, the component states in the error's details
        return render_error(ServiceUnavailable("database unreachable", field="database", details=data))
    return JSONResponse({"success": True, "data": data, "message": None})


@router.get("/health/live", summary="Liveness", operation_id="health_live", response_model=LiveEnvelope)
async def live() -> dict[str, Any]:
    """Answers as long as the process serves requests; touches no dependency."""
    return {"success": True, "data": {"status": "ok"}, "message": None}
