"""The one way to Redis: a connection pool with short timeouts, and one circuit breaker every Redis call goes through.

Rate limits, event logs, stream tickets and stream counts, the event doorbell and `/health` all use `RedisLink`.
A hung Redis (a stopped process, a black-holed network) accepts connections and never answers, so every
call waits for its timeout: `call` bounds each one by `REDIS_TIMEOUT_SECONDS` (connect, send and read
together), and after `REDIS_BREAKER_FAILURES` consecutive failures the breaker opens: for
`REDIS_BREAKER_OPEN_SECONDS` no call is attempted at all (`RedisUnavailable` at once). Then the next call
is a probe (half-open): its success closes the breaker, its failure opens it for another back-off.

`RedisUnavailable` is a redis-py `ConnectionError`, so each use's outage handling (`except RedisError`)
applies unchanged: limits fail open, events are dropped, streams end, tickets answer 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from backend.config import Settings

log = logging.getLogger("taskdeck.redis")

T = TypeVar("T")
BreakerState = Literal["closed", "open", "half_open"]
# Redis did not answer (or not in time): these count against it. Any other RedisError is an answer.
FAILURES = (RedisConnectionError, RedisTimeoutError, OSError)


class RedisUnavailable(RedisConnectionError):
    """Not attempted: the breaker is open."""


class CircuitBreaker:
    """closed -> (`failures` consecutive failures) -> open -> (`open_seconds`) -> half_open -> one probe:
    success -> closed, failure -> open again. Each call through it is bounded by `timeout` seconds."""

    def __init__(self, *, failures: int, open_seconds: float, timeout: float, name: str = "redis") -> None:
        # Told of every attempted call: its outcome (`ok`, `error` for an error answer, `failed` for no answer
        # in time) and how long it took; `main` hands it the metrics. Refused calls (open) are not attempted.
        self.observe: Callable[[str, float], None] | None = None
        self.threshold = failures
        self.open_seconds = open_seconds
        self.timeout = timeout
        self.name = name
        self._failures = 0
        self._opened_at: float | None = None  # None: closed
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._probing or self._back_off_over() else "open"

    def _back_off_over(self) -> bool:
        return self._opened_at is not None and time.monotonic() - self._opened_at >= self.open_seconds

    def _admit(self) -> bool:
        """Whether a call may go to Redis now; True for the one probe after the back-off (it must report back)."""
        if self._opened_at is None:
            return True
        if self._probing or not self._back_off_over():
            return False
        self._probing = True
        return True

    def _succeeded(self) -> None:
        self._failures = 0
        if self._opened_at is not None:
            log.warning(f"{self.name} answers again; circuit breaker closed", extra={"event": "redis_breaker_closed"})
        self._opened_at = None
        self._probing = False

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        reopen = self._probing
        self._probing = False
        if reopen or (self._opened_at is None and self._failures >= self.threshold):
            self._opened_at = time.monotonic()
            log.warning(
                f"{self.name} unavailable; circuit breaker open, no call for {self.open_seconds:g} s",
                extra={"event": "redis_breaker_open", "error_type": type(exc).__name__, "failures": self._failures},
            )

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """`operation()` within `timeout`; RedisUnavailable at once while open, a redis-py TimeoutError when late."""
        if not self._admit():
            raise RedisUnavailable(f"{self.name} circuit breaker is open")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                result = await operation()
        except TimeoutError as exc:  # our deadline (redis-py's own timeouts raise its TimeoutError, below)
            self._observe("failed", started)
            self._failed(exc)
            raise RedisTimeoutError(f"{self.name} did not answer within {self.timeout:g} s") from None
        except FAILURES as exc:
            self._observe("failed", started)
            self._failed(exc)
            raise
        except RedisError:  # an error answer (a script error, a wrong type): Redis is there
            self._observe("error", started)
            self._succeeded()
            raise
        except BaseException:  # cancelled: says nothing about Redis; a probe's turn goes to the next call
            self._probing = False
            raise
        self._observe("ok", started)
        self._succeeded()
        return result

    def _observe(self, outcome: str, started: float) -> None:
        if self.observe is not None:
            self.observe(outcome, time.perf_counter() - started)


class RedisLink:
    """`REDIS_URL`'s client (None without it) and the breaker every use of it shares."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.REDIS_URL
        self.timeout = settings.REDIS_TIMEOUT_SECONDS
        self.breaker = CircuitBreaker(
            failures=settings.REDIS_BREAKER_FAILURES,
            open_seconds=settings.REDIS_BREAKER_OPEN_SECONDS,
            timeout=self.timeout,
        )
        self.pool: ConnectionPool | None = None
        self.client: Redis | None = None
        if self.url:
            # Short timeouts and one immediate retry: redis-py's default is several retries with back-off
            # (seconds per call while Redis is down); one retry replaces a pooled connection that died with a
            # Redis restart. `call`'s deadline bounds the whole call anyway.
            self.pool = ConnectionPool.from_url(
                self.url,
                socket_connect_timeout=self.timeout,
                socket_timeout=self.timeout,
                retry=Retry(NoBackoff(), 1),
            )
            self.client = Redis(connection_pool=self.pool)

    @property
    def state(self) -> BreakerState | Literal["disabled"]:
        return self.breaker.state if self.client is not None else "disabled"

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        return await self.breaker.call(operation)

    async def ping(self) -> bool:
        """Whether Redis answers now (through the breaker: while open, False without asking)."""
        if self.client is None:
            return False
        client = self.client
        try:
            await self.call(lambda: client.ping())
        except FAILURES:
            return False
        return True

    def subscriber(self) -> Redis:
        """A client of its own for a pub/sub connection (a blocking read must not hold a pooled connection)."""
        assert self.url is not None, "only with REDIS_URL"
        return Redis.from_url(
            self.url,
            socket_connect_timeout=self.timeout,
            socket_timeout=self.timeout,  # pub/sub's blocking read waits without it; commands do not
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        if self.pool is not None:
            await self.pool.aclose()
