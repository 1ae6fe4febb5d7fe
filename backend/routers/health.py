"""Health checks: `/health` checks dependencies, `/health/live` never does."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from backend.config import VERSION
from backend.db import ping
from backend.envelope import Envelope, ErrorBody
from backend.errors import ServiceUnavailable, render_error

router = APIRouter(tags=["health"])


class HealthCache:
    """One dependency check per `seconds` per process, however many callers: `/health` is public and
    must not turn a flood of requests into a flood of database and Redis round trips. Callers
    arriving while a check runs wait for it (one lock) and share its result."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = asyncio.Lock()
        self._result: tuple[str, str] = ("down", "down")
        self._checked_at = -math.inf

    def _fresh(self) -> bool:
        return time.monotonic() - self._checked_at < self.seconds

    async def states(self, state: Any) -> tuple[str, str]:
        """(database, redis), checked at most once per window."""
        if self._fresh():
            return self._result
        async with self._lock:
            if not self._fresh():  # another caller may have checked while this one waited
                self._result = await _check(state)
                self._checked_at = time.monotonic()
            return self._result


async def _check(state: Any) -> tuple[str, str]:
    try:
        await ping(state.engine)
        database = "ok"
    except Exception:  # any failure to reach it is "down"; details go nowhere
        database = "down"
    redis = await state.limiter.health() if getattr(state, "limiter", None) else "disabled"
    return database, redis


def _breaker(state: Any) -> str:
    redis = getattr(state, "redis", None)
    return redis.state if redis is not None else "disabled"


class HealthStatus(BaseModel):
    status: str
    database: str
    redis: str
    redis_breaker: Literal["closed", "open", "half_open", "disabled"] = Field(
        description="The circuit breaker in front of Redis: `open` while Redis is skipped after failures "
        "(limits fail open, live events are dropped), `half_open` when the next call probes it; "
        "`disabled` without `REDIS_URL`"
    )
    version: str


class HealthOutage(BaseModel):
    """The 503 body: the component states, plus the error envelope's `error`."""

    success: Literal[False] = False
    data: HealthStatus
    message: None = None
    error: ErrorBody


@router.get(
    "/health",
    response_model=Envelope[HealthStatus],
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
                        "data": {
                            "status": "unavailable",
                            "database": "down",
                            "redis": "ok",
                            "redis_breaker": "closed",
                            "version": VERSION,
                        },
                        "message": None,
                        "error": {
                            "code": ServiceUnavailable.code,
                            "message": "database unreachable",
                            "field": "database",
                            "details": None,
                        },
                    }
                }
            },
        }
    },
)
async def health(request: Request) -> Any:
    """200 while the database answers; 503 with the failing component otherwise. Redis down is degraded, not fatal."""
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
    if not healthy:  # 503 with `Retry-After: 5`, the component states beside the error
        outage = ServiceUnavailable("database unreachable", field="database")
        return render_error(outage, extra={"data": data, "message": None})
    return JSONResponse({"success": True, "data": data, "message": None})


@router.get("/health/live", summary="Liveness", operation_id="health_live", response_model=Envelope[dict[str, str]])
async def live() -> dict[str, Any]:
    """Answers as long as the process serves requests; touches no dependency."""
    return {"success": True, "data": {"status": "ok"}, "message": None}
