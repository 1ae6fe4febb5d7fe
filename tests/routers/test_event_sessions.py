"""A stream belongs to the session that opened it (contract §12): when the session ends — logout, refresh-token
reuse, the account erased or disabled — the stream closes within 5 s on every instance, and a ticket of an
ended session is refused (401). Two app instances share the database and a real Redis (a key prefix of the
test's own); the stream is opened on the second instance, the session is ended through the first."""

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col

from backend.config import ConfigError, Settings, load_settings
from backend.main import create_app
from backend.models.common import utcnow
from backend.models.session import AuthSession
from backend.models.user import User
from tests.conftest import PASSWORD, UserCtx, assert_error, make_settings, make_user
from tests.routers.test_events import Stream, open_stream, serve, ticket_for
from tests.support import limited

pytestmark = pytest.mark.committing  # live servers, two apps on one database

# The contract promises 5 s; a loaded 2-core machine gets 8 s of wall time to show it.
CLOSED_WITHIN = 8.0
STREAMS = {"EVENTS_STREAM_MAX_SECONDS": 60.0, "EVENTS_HEARTBEAT_SECONDS": 0.5}
# The "session ended" notice alone must end the stream: the periodic re-check is far away.
NOTICE_ONLY = {**STREAMS, "EVENTS_SESSION_CHECK_SECONDS": 60.0}
# The re-check alone (nothing publishes a notice): its default.
RECHECK = STREAMS


async def ends(stream: Stream, within: float = CLOSED_WITHIN) -> list[str]:
    """Read `stream` to its end (failing if it is still open after `within` s): the types of the events it
    still delivered. How long it took is printed (`pytest -s`)."""
    started = time.monotonic()
    delivered: list[str] = []
    try:
        async with asyncio.timeout(within):
            async for line in stream.lines:
                if line.startswith("event:"):
                    delivered.append(line.partition(":")[2].strip())
    except TimeoutError:
        message = f"the stream was still open {within} s after its session ended, having delivered {delivered}"
        raise AssertionError(message) from None
    print(f"stream closed {time.monotonic() - started:.2f} s after its session ended")
    return delivered


async def login(http: httpx.AsyncClient, user: UserCtx) -> UserCtx:
    """Another login (another session) of the same user."""
    response = await http.post("/api/auth/login", json={"email": user.email, "password": user.password})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return UserCtx(user.id, user.email, user.password, data["access_token"], data["refresh_token"])


async def write(http: httpx.AsyncClient, user: UserCtx, title: str) -> None:
    created = await http.post(f"/api/{user.id}/tasks", json={"title": title}, headers=user.headers)
    assert created.status_code == 201, created.text


@asynccontextmanager
async def two_instances(app, database_url, data_dir, settings_overrides) -> AsyncIterator[tuple]:
    """HTTP clients for `app` and a second instance of it (same database, Redis and signing key)."""
    same_key = {"JWT_SECRET": app.state.settings.JWT_SECRET}
    second = create_app(make_settings(database_url, data_dir, **same_key, **settings_overrides))
    async with second.router.lifespan_context(second), serve(app) as one, serve(second) as two:
        yield one, two


def redis(prefix: str, **overrides) -> dict:
    """Redis shared by both instances, and rate limiting on it (loose), so that the per-IP script reads the login-
    session epoch and bearer tokens are answered from memory on a warm instance (backend/live_sessions.py)."""
    return limited(prefix, **overrides)


class TestNoticeAcrossInstances:
    @pytest.fixture
    def settings_overrides(self, prefix):
        return redis(prefix, **NOTICE_ONLY)

    async def test_logout_ends_that_sessions_streams_only(self, app, database_url, data_dir, settings_overrides):
        async with two_instances(app, database_url, data_dir, settings_overrides) as (one, two):
            user = await make_user(one)
            other_login = await login(one, user)
            async with (
                open_stream(two, user) as by_bearer,
                open_stream(two, user, params={"ticket": await ticket_for(two, user)}, headers={}) as by_ticket,
                open_stream(two, other_login) as survivor,
            ):
                spare_ticket = await ticket_for(one, user)  # taken before logout, never used
                for _ in range(2):  # the second is answered from the second instance's memory
                    assert (await two.get("/api/auth/me", headers=user.headers)).status_code == 200
                logout = await one.post("/api/auth/logout", headers=user.headers)
                assert logout.status_code == 200, logout.text
                # The bearer token is refused on the other instance from the very next request.
                assert_error(await two.get("/api/auth/me", headers=user.headers), 401, "INVALID_TOKEN")
                await write(one, other_login, "after logout")  # the user's write, by their other session
                for stream in (by_bearer, by_ticket):
                    delivered = await ends(stream)
                    assert delivered == [], "an ended session's stream delivered the user's write"
                event = await survivor.event()  # the other session streams on
                assert (event["type"], event["data"]["title"]) == ("task.created", "after logout")
            refused = await two.get(f"/api/{user.id}/events", params={"ticket": spare_ticket})
            assert_error(refused, 401, "INVALID_TOKEN")

    async def test_a_ticket_taken_before_logout_is_refused_after_it(
        self, app, database_url, data_dir, settings_overrides
    ):
        async with two_instances(app, database_url, data_dir, settings_overrides) as (one, two):
            user = await make_user(one)
            other_login = await login(one, user)
            ticket, others = await ticket_for(one, user), await ticket_for(one, other_login)
            assert (await one.post("/api/auth/logout", headers=user.headers)).status_code == 200
            async with two.stream("GET", f"/api/{user.id}/events", params={"ticket": ticket}) as response:
                if response.status_code == 200:
                    pytest.fail("a ticket of an ended session opened a stream")
                await response.aread()
            assert_error(response, 401, "INVALID_TOKEN")
            assert "session has ended" in response.json()["error"]["message"]
            async with open_stream(two, other_login, params={"ticket": others}, headers={}):
                pass  # the other session's ticket still works

    async def test_refresh_token_reuse_ends_the_sessions_streams(self, app, database_url, data_dir, settings_overrides):
        async with two_instances(app, database_url, data_dir, settings_overrides) as (one, two):
            user = await make_user(one)
            rotated = await one.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
            assert rotated.status_code == 200, rotated.text
            current = UserCtx(user.id, user.email, user.password, rotated.json()["data"]["access_token"], "")
            async with open_stream(two, current) as stream:
                ticket = await ticket_for(one, current)
                reused = await one.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
                assert_error(reused, 401, "REFRESH_TOKEN_REUSED")
                delivered = await ends(stream)
                assert delivered == []
            refused = await two.get(f"/api/{user.id}/events", params={"ticket": ticket})
            assert_error(refused, 401, "INVALID_TOKEN")

    async def test_erasure_ends_every_stream_of_the_account(self, app, database_url, data_dir, settings_overrides):
        async with two_instances(app, database_url, data_dir, settings_overrides) as (one, two):
            user = await make_user(one)
            other_login = await login(one, user)
            async with open_stream(two, user) as first, open_stream(two, other_login) as second:
                ticket = await ticket_for(two, user)
                erased = await one.request(
                    "DELETE", f"/api/{user.id}", json={"password": PASSWORD}, headers=user.headers
                )
                assert erased.status_code == 200, erased.text
                for stream in (first, second):
                    delivered = await ends(stream)
                    assert delivered == []
            refused = await one.get(f"/api/{user.id}/events", params={"ticket": ticket})
            assert_error(refused, 401, "INVALID_TOKEN")


class TestInProcess:
    @pytest.mark.parametrize("settings_overrides", [NOTICE_ONLY])
    async def test_logout_ends_the_stream_without_redis(self, app):
        async with serve(app) as http:
            user = await make_user(http)
            other_login = await login(http, user)
            async with open_stream(http, user) as stream, open_stream(http, other_login) as survivor:
                ticket = await ticket_for(http, user)
                assert (await http.post("/api/auth/logout", headers=user.headers)).status_code == 200
                await write(http, other_login, "after logout")
                delivered = await ends(stream)
                assert delivered == []
                assert (await survivor.event())["data"]["title"] == "after logout"
            assert_error(await http.get(f"/api/{user.id}/events", params={"ticket": ticket}), 401, "INVALID_TOKEN")
            assert app.state.events._bells == {}


async def set_in_database(app, statement) -> None:
    async with app.state.sessionmaker() as session:
        await session.exec(statement)
        await session.commit()


class TestRecheck:
    """Nothing announced the end (a notice lost with Redis, an account disabled in the database by an
    operator): each stream re-checks its session every EVENTS_SESSION_CHECK_SECONDS (default 3)."""

    @pytest.fixture
    def settings_overrides(self, prefix):
        return redis(prefix, **RECHECK)

    async def test_a_session_revoked_without_notice_ends_its_stream(
        self, app, database_url, data_dir, settings_overrides
    ):
        async with two_instances(app, database_url, data_dir, settings_overrides) as (one, two):
            user = await make_user(one)
            other_login = await login(one, user)
            async with open_stream(two, user) as stream, open_stream(one, other_login) as survivor:
                await set_in_database(
                    app,
                    update(AuthSession)
                    .where(col(AuthSession.user_id) == user.id, col(AuthSession.id) != session_of(other_login))
                    .values(revoked_at=utcnow(), revoked_reason="test"),
                )
                await ends(stream)
                await write(one, other_login, "still streaming")
                assert (await survivor.event())["data"]["title"] == "still streaming"

    async def test_a_disabled_account_ends_its_streams(self, app, database_url, data_dir, settings_overrides):
        async with two_instances(app, database_url, data_dir, settings_overrides) as (one, two):
            user = await make_user(one)
            async with open_stream(two, user) as on_two, open_stream(one, user) as on_one:
                ticket = await ticket_for(one, user)
                await set_in_database(app, update(User).where(col(User.id) == user.id).values(is_active=False))
                for stream in (on_two, on_one):
                    await ends(stream)
            # As for a bearer token of a disabled account (deps.get_principal): 403 ACCOUNT_DISABLED.
            refused = await two.get(f"/api/{user.id}/events", params={"ticket": ticket})
            assert_error(refused, 403, "ACCOUNT_DISABLED")


def session_of(user: UserCtx) -> str:
    """The login session (`sid`) behind a user's access token."""
    payload = user.access_token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"])


def test_the_recheck_setting():
    assert Settings.model_fields["EVENTS_SESSION_CHECK_SECONDS"].default == 3.0
    for bad in (0, -1, 61):
        with pytest.raises(ConfigError, match="EVENTS_SESSION_CHECK_SECONDS"):
            load_settings(EVENTS_SESSION_CHECK_SECONDS=bad)
