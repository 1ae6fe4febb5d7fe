"""The circuit breaker's state machine (backend/breaker.py) on the real clock, against real Redis servers: the
machine's test Redis answers, a free port refuses, and a private redis-server stopped with SIGSTOP hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import suppress

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from backend.breaker import CircuitBreaker, RedisUnavailable
from tests.conftest import REDIS_URL
from tests.support import RedisServer, free_port

OPEN_SECONDS = 0.3


@pytest.fixture
async def live() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def dead() -> AsyncIterator[Redis]:
    """Nothing listens on its port: every call is refused at once."""
    client = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def hung(own_redis: RedisServer) -> RedisServer:
    own_redis.pause()
    return own_redis


def breaker(failures: int = 2) -> CircuitBreaker:
    return CircuitBreaker(failures=failures, open_seconds=OPEN_SECONDS, timeout=0.2, name="test redis")


async def wait_for_state(subject: CircuitBreaker, state: str) -> None:
    deadline = time.monotonic() + 10
    while subject.state != state:
        assert time.monotonic() < deadline, f"still {subject.state}"
        await asyncio.sleep(0.02)


async def test_opens_after_consecutive_failures_and_then_calls_nothing(live, dead, prefix):
    subject = breaker(failures=2)
    counter = f"{prefix}:counter"
    for expected in ("closed", "open"):
        with pytest.raises(RedisConnectionError):
            await subject.call(lambda: dead.ping())
        assert subject.state == expected

    started = time.perf_counter()
    with pytest.raises(RedisUnavailable):
        await subject.call(lambda: live.incr(counter))
    assert time.perf_counter() - started < 0.1
    assert await live.get(counter) is None  # not attempted: the live Redis never saw the call


async def test_a_success_or_an_error_answer_resets_the_count(live, dead, prefix):
    subject = breaker(failures=2)
    text = f"{prefix}:text"
    await live.set(text, "not a number")
    for answered in (lambda: live.ping(), lambda: live.incr(text)):  # an error answer is an answer too
        with pytest.raises(RedisConnectionError):
            await subject.call(lambda: dead.ping())
        with suppress(ResponseError):
            await subject.call(answered)
        assert subject.state == "closed"
    with pytest.raises(RedisConnectionError):
        await subject.call(lambda: dead.ping())
    assert subject.state == "closed"  # one failure in a row, not two


async def test_half_open_lets_one_probe_through_which_closes_or_reopens(live, dead):
    subject = breaker(failures=1)
    with pytest.raises(RedisConnectionError):
        await subject.call(lambda: dead.ping())
    assert subject.state == "open"

    await wait_for_state(subject, "half_open")  # after OPEN_SECONDS
    with pytest.raises(RedisConnectionError):
        await subject.call(lambda: dead.ping())  # the probe fails: open for another back-off
    assert subject.state == "open"
    with pytest.raises(RedisUnavailable):
        await subject.call(lambda: live.ping())

    await wait_for_state(subject, "half_open")
    probe = asyncio.create_task(subject.call(lambda: asyncio.sleep(0.1, "probed")))
    await asyncio.sleep(0)  # the probe task starts and takes its turn
    with pytest.raises(RedisUnavailable):  # only one probe at a time
        await subject.call(lambda: live.ping())
    assert await probe == "probed"
    assert subject.state == "closed"
    assert await subject.call(lambda: live.ping()) is True


async def test_a_cancelled_probe_gives_its_turn_to_the_next_call(live, dead):
    subject = breaker(failures=1)
    with pytest.raises(RedisConnectionError):
        await subject.call(lambda: dead.ping())
    await wait_for_state(subject, "half_open")
    probe = asyncio.create_task(subject.call(lambda: asyncio.sleep(10)))
    await asyncio.sleep(0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert await subject.call(lambda: live.ping()) is True
    assert subject.state == "closed"


async def test_a_hung_redis_costs_one_timeout_per_call_then_nothing(hung):
    subject = breaker(failures=2)
    client = Redis.from_url(hung.url, socket_connect_timeout=5, socket_timeout=5)  # only the breaker's deadline
    try:
        for _ in range(2):
            started = time.perf_counter()
            with pytest.raises(RedisTimeoutError):
                await subject.call(lambda: client.ping())
            assert time.perf_counter() - started < 1.0  # 0.2 s, generously
        assert subject.state == "open"
        started = time.perf_counter()
        with pytest.raises(RedisUnavailable):
            await subject.call(lambda: client.ping())
        assert time.perf_counter() - started < 0.1
    finally:
        await client.aclose()


async def test_every_attempted_call_is_reported_with_its_outcome_and_duration(live, dead, prefix):
    seen: list[tuple[str, float]] = []
    subject = breaker(failures=1)
    subject.observe = lambda outcome, seconds: seen.append((outcome, seconds))
    await subject.call(lambda: live.set(f"{prefix}:observed", "x"))
    with pytest.raises(ResponseError):
        await subject.call(lambda: live.incr(f"{prefix}:observed"))  # an error answer: not an integer
    with pytest.raises(RedisConnectionError):
        await subject.call(lambda: dead.ping())
    with pytest.raises(RedisUnavailable):  # open: refused, never attempted, so not reported
        await subject.call(lambda: live.ping())
    assert [outcome for outcome, _ in seen] == ["ok", "error", "failed"]
    assert all(0 <= seconds < 1.0 for _, seconds in seen), seen
