"""Limits of the live event stream over real HTTP (uvicorn on 127.0.0.1): open streams per user and per
client address (in process, and shared by two instances through Redis), and `Last-Event-ID`s that are
not ids of ours (beyond 64 bits, ahead of the log) start from now instead of breaking the stream."""

import asyncio
import time
from contextlib import AsyncExitStack

import httpx
import pytest
import redis

from backend.config import ConfigError, Settings, load_settings
from backend.main import create_app
from tests.conftest import REDIS_URL, UserCtx, assert_error, make_settings, make_user
from tests.routers.test_events import open_stream, serve
from tests.support import captured_logs, delete_keys, events, redis_keys, unique_prefix

pytestmark = pytest.mark.committing  # live servers, a second app on the same database

# Streams held open while the test works outlive a loaded machine; a closed one is noticed at the
# next heartbeat (0.2 s), which is when its place is given back.
HOLD = {"EVENTS_STREAM_MAX_SECONDS": 60.0, "EVENTS_HEARTBEAT_SECONDS": 0.2}


async def refused(http: httpx.AsyncClient, user: UserCtx, headers: dict[str, str] | None = None) -> dict:
    """The stream request is answered 429 TOO_MANY_STREAMS (never read an opened stream to its end)."""
    async with http.stream("GET", f"/api/{user.id}/events", headers=headers or user.headers) as response:
        assert response.status_code == 429, f"the stream opened ({response.status_code})"
        await response.aread()
    assert int(response.headers["Retry-After"]) >= 1
    return assert_error(response, 429, "TOO_MANY_STREAMS")


async def opens_again(http: httpx.AsyncClient, user: UserCtx) -> None:
    """A stream opens once a place is free again (the server gives it back when it notices the close)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        async with http.stream("GET", f"/api/{user.id}/events", headers=user.headers) as response:
            if response.status_code == 200:
                return
            await response.aread()
            assert_error(response, 429, "TOO_MANY_STREAMS")
        await asyncio.sleep(0.05)
    raise AssertionError("the closed stream's place was not given back")


async def hold(stack: AsyncExitStack, http: httpx.AsyncClient, user: UserCtx, count: int, **kwargs) -> None:
    for _ in range(count):
        await stack.enter_async_context(open_stream(http, user, **kwargs))


class TestInProcess:
    @pytest.mark.parametrize("settings_overrides", [HOLD])
    async def test_five_streams_per_user_then_429_until_one_closes(self, app):
        async with serve(app) as http:
            user, other = await make_user(http), await make_user(http)
            async with AsyncExitStack() as first, AsyncExitStack() as four:
                await hold(first, http, user, 1)
                await hold(four, http, user, 4)
                error = await refused(http, user)
                assert "5" in error["message"]
                async with open_stream(http, other):  # a per-user count: others are not affected
                    pass
                await first.aclose()
                await opens_again(http, user)
            await drained(app)

    @pytest.mark.parametrize(
        "settings_overrides", [{**HOLD, "EVENTS_MAX_STREAMS_PER_IP": 3, "TRUSTED_PROXIES": ["127.0.0.1"]}]
    )
    async def test_per_address_cap_across_users(self, app):
        async with serve(app) as http:
            a, b, c = await make_user(http), await make_user(http), await make_user(http)
            async with AsyncExitStack() as stack:
                await hold(stack, http, a, 2)
                await hold(stack, http, b, 1)
                error = await refused(http, c)
                assert "address" in error["message"]
                # Behind a trusted proxy, the client's address is the forwarded one: its own count.
                elsewhere = {**c.headers, "X-Forwarded-For": "203.0.113.7"}
                await hold(stack, http, c, 3, headers=elsewhere)
                await refused(http, c, elsewhere)

    def test_settings_are_validated(self):
        for name in ("EVENTS_MAX_STREAMS_PER_USER", "EVENTS_MAX_STREAMS_PER_IP"):
            with pytest.raises(ConfigError, match=name):
                load_settings(**{name: 0})
        fields = Settings.model_fields
        assert fields["EVENTS_MAX_STREAMS_PER_USER"].default == 5
        assert fields["EVENTS_MAX_STREAMS_PER_IP"].default == 20


async def drained(app) -> None:
    """Every place given back (the server notices the last closes at its next heartbeat)."""
    deadline = time.monotonic() + 15
    while app.state.events.slots._sets:
        assert time.monotonic() < deadline, "places not given back"
        await asyncio.sleep(0.05)


class TestAcrossInstances:
    @pytest.fixture
    def settings_overrides(self, prefix):
        return {"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": prefix, "EVENTS_MAX_STREAMS_PER_USER": 2, **HOLD}

    async def test_the_count_is_shared_and_crashed_streams_age_out(
        self, app, database_url, data_dir, settings_overrides, prefix
    ):
        same_key = {"JWT_SECRET": app.state.settings.JWT_SECRET}
        second = create_app(make_settings(database_url, data_dir, **same_key, **settings_overrides))
        async with second.router.lifespan_context(second), serve(app) as one, serve(second) as two:
            user = await make_user(one)
            async with AsyncExitStack() as on_one:
                async with AsyncExitStack() as on_two:
                    await hold(on_one, one, user, 1)
                    await hold(on_two, two, user, 1)
                    await refused(one, user)
                    await refused(two, user)
                await opens_again(one, user)  # the place held on the other instance was given back

            deadline = time.monotonic() + 15
            while any(":streams:" in key for key in redis_keys(prefix)):
                assert time.monotonic() < deadline, "places not given back"
                await asyncio.sleep(0.05)

            # An instance that died left places it no longer refreshes: once expired, they do not count.
            with redis.Redis.from_url(REDIS_URL) as conn:
                now_ms = int(conn.time()[0]) * 1000
                conn.zadd(f"{prefix}:streams:user:{user.id}", {"dead-1": now_ms - 1, "dead-2": now_ms - 1})
                async with open_stream(two, user):
                    conn.zadd(f"{prefix}:streams:user:{user.id}", {"alive-elsewhere": now_ms + 60_000})
                    await refused(one, user)


ODD_IDS = [
    "99999999999999999999999-0",  # beyond 64 bits (and 20 digits)
    "0-99999999999999999999",  # a sequence beyond 64 bits
    "18446744073709551615-18446744073709551615",  # the largest id there is: nothing can follow it
    "18446744073709551614-0",  # fits, but ahead of anything the log issued
    "not-an-id",
]


class TestOddLastEventIds:
    @pytest.fixture(params=["in-process", "redis"])
    def settings_overrides(self, request):
        if request.param == "in-process":
            yield HOLD
            return
        prefix = unique_prefix()
        yield {"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": prefix, **HOLD}
        delete_keys(prefix)

    async def test_a_last_event_id_that_is_not_ours_starts_from_now(self, app):
        async with serve(app) as http:
            user = await make_user(http)
            await http.post(f"/api/{user.id}/tasks", json={"title": "before"}, headers=user.headers)
            with captured_logs() as lines:
                for odd in ODD_IDS:
                    async with open_stream(http, user, headers={**user.headers, "Last-Event-ID": odd}) as stream:
                        created = await http.post(f"/api/{user.id}/tasks", json={"title": odd}, headers=user.headers)
                        event = await stream.event()
                        assert event["type"] == "task.created", odd
                        assert event["data"] == created.json()["data"], odd  # not "before": from now
            assert events(lines, "event_stream_failed") == []
