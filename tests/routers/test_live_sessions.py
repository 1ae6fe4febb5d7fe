"""Live login sessions answered from memory (backend/live_sessions.py) with every guarantee of the database check.

Two app instances share the database and a real Redis (a key prefix of the test's own), with rate limiting on
(the per-IP script reads the epoch). Instance B has the login in memory (its second request asked the database
nothing); the session is ended through instance A; B refuses the very next request. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import jwt
import pytest
import redis
from fastapi import FastAPI
from sqlalchemy import event, update
from sqlmodel import col

from backend.main import create_app
from backend.models.common import utcnow
from backend.models.session import AuthSession
from backend.models.user import User
from backend.security.tokens import create_access_token
from tests.conftest import PASSWORD, REDIS_URL, UserCtx, assert_error, make_settings, make_user
from tests.support import RedisServer, captured_logs, client_for, events, limited

pytestmark = pytest.mark.committing  # two apps on one database

ME = "/api/auth/me"


@pytest.fixture
def settings_overrides(prefix: str) -> dict[str, Any]:
    return limited(prefix)


@contextmanager
def statements(app: FastAPI) -> Iterator[list[str]]:
    """The SQL statements `app` runs while the block does (transaction control left out)."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.startswith(("BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "COMMIT")):
            seen.append(statement)

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def session_checks(seen: list[str]) -> list[str]:
    return [sql for sql in seen if "sessions" in sql]


@asynccontextmanager
async def second_instance(app: FastAPI, database_url: str, data_dir: Any, **overrides: Any) -> AsyncIterator[FastAPI]:
    """Another instance of `app`: same database, Redis key prefix and signing key, its own memory."""
    settings = app.state.settings
    values = {"JWT_SECRET": settings.JWT_SECRET, **limited(settings.REDIS_KEY_PREFIX, settings.REDIS_URL), **overrides}
    other = create_app(make_settings(database_url, data_dir, **values))
    async with other.router.lifespan_context(other):
        yield other


@asynccontextmanager
async def two_instances(app: FastAPI, database_url: str, data_dir: Any) -> AsyncIterator[tuple[Any, Any, FastAPI]]:
    """Clients of `app` (A) and of a second instance (B), and B itself."""
    async with second_instance(app, database_url, data_dir) as b_app, client_for(app) as a, client_for(b_app) as b:
        yield a, b, b_app


async def warm(http: httpx.AsyncClient, app: FastAPI, user: UserCtx) -> None:
    """Two requests of `user` on `app`: the second is answered from memory (no session check in the database)."""
    assert (await http.get(ME, headers=user.headers)).status_code == 200
    with statements(app) as seen:
        response = await http.get(ME, headers=user.headers)
    assert response.status_code == 200, response.text
    assert session_checks(seen) == [], "a warm instance asked the database about the session"


async def login(http: httpx.AsyncClient, user: UserCtx) -> UserCtx:
    """Another login (another session) of the same user."""
    response = await http.post("/api/auth/login", json={"email": user.email, "password": user.password})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return UserCtx(user.id, user.email, user.password, data["access_token"], data["refresh_token"])


class TestMemory:
    async def test_a_warm_instance_asks_the_database_nothing_about_the_session(self, app, client):
        user = await make_user(client)
        with statements(app) as first:
            assert (await client.get(ME, headers=user.headers)).status_code == 200
        assert len(session_checks(first)) == 1, first  # the login query, once
        with statements(app) as second:
            me = await client.get(ME, headers=user.headers)
        assert me.status_code == 200
        assert second == []  # /me reads nothing else: no statement at all
        assert me.json()["data"]["user_id"] == user.id
        # A list on a warm instance: its own statements only.
        with statements(app) as listed:
            assert (await client.get(f"/api/{user.id}/tasks", headers=user.headers)).status_code == 200
        assert session_checks(listed) == [], listed

    async def test_each_login_is_remembered_on_its_own(self, app, client):
        user = await make_user(client)
        other = await login(client, user)
        await warm(client, app, user)
        with statements(app) as seen:
            assert (await client.get(ME, headers=other.headers)).status_code == 200
        assert len(session_checks(seen)) == 1  # another `sid`: asked once

    async def test_a_bad_signature_or_expiry_is_never_answered_from_memory(self, app, client):
        user = await make_user(client)
        await warm(client, app, user)
        claims = jwt.decode(user.access_token, options={"verify_signature": False})
        forged = jwt.encode(claims, "not-the-key-" * 4, algorithm="HS256")
        assert_error(await client.get(ME, headers={"Authorization": f"Bearer {forged}"}), 401, "INVALID_TOKEN")
        expired, _ = create_access_token(
            secret=app.state.settings.jwt_secret, user_id=user.id, session_id=claims["sid"], minutes=-5
        )
        assert_error(await client.get(ME, headers={"Authorization": f"Bearer {expired}"}), 401, "TOKEN_EXPIRED")

    async def test_a_token_claiming_another_user_reads_only_that_users_epoch(self, app, client, prefix):
        """The unverified `sub` only picks which epoch to read: a forged one is refused as before, and the epoch
        read for the claimed user is never used for the verified one."""
        user, victim = await make_user(client), await make_user(client)
        await warm(client, app, victim)
        claims = jwt.decode(victim.access_token, options={"verify_signature": False})
        forged = jwt.encode({**claims, "sub": user.id}, "not-the-key-" * 4, algorithm="HS256")
        assert_error(await client.get(ME, headers={"Authorization": f"Bearer {forged}"}), 401, "INVALID_TOKEN")
        with redis.Redis.from_url(REDIS_URL) as conn:
            assert conn.exists(f"{prefix}:sessions:epoch:{user.id}")


class TestNoEpochNoMemory:
    """Whenever no epoch is read with the rate-limit hit, the database answers every request, as before."""

    @pytest.fixture(
        params=[
            {"RATE_LIMIT_ENABLED": False},
            {"REDIS_URL": None},  # limits in process
            {"SESSION_CACHE_SECONDS": 0},
        ],
        ids=["limits-off", "no-redis", "cache-off"],
    )
    def settings_overrides(self, request: pytest.FixtureRequest, prefix: str) -> dict[str, Any]:
        return limited(prefix, **request.param)

    async def test_every_request_asks_the_database(self, app, client):
        user = await make_user(client)
        for _ in range(3):
            with statements(app) as seen:
                assert (await client.get(ME, headers=user.headers)).status_code == 200
            assert len(session_checks(seen)) == 1
        assert len(app.state.live_sessions) == 0


async def two_logins_warm_on_b(a: httpx.AsyncClient, b: httpx.AsyncClient, b_app: FastAPI) -> tuple[UserCtx, UserCtx]:
    """A user signed up through A with two logins, both answered from B's memory."""
    user = await make_user(a)
    other = await login(a, user)
    for each in (user, other):
        await warm(b, b_app, each)
    return user, other


class TestEndedOnAnotherInstance:
    async def test_logout_on_a_is_refused_on_b_at_once(self, app, database_url, data_dir):
        async with two_instances(app, database_url, data_dir) as (a, b, b_app):
            user, other = await two_logins_warm_on_b(a, b, b_app)
            assert (await a.post("/api/auth/logout", headers=user.headers)).status_code == 200
            refused = await b.get(ME, headers=user.headers)
            assert_error(refused, 401, "INVALID_TOKEN")
            assert "session has ended" in refused.json()["error"]["message"]
            assert (await b.get(ME, headers=other.headers)).status_code == 200  # the user's other login lives on

    async def test_refresh_token_reuse_on_a_is_refused_on_b_at_once(self, app, database_url, data_dir):
        async with two_instances(app, database_url, data_dir) as (a, b, b_app):
            user = await make_user(a)
            rotated = await a.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
            assert rotated.status_code == 200, rotated.text
            current = UserCtx(user.id, user.email, user.password, rotated.json()["data"]["access_token"], "")
            await warm(b, b_app, current)
            reused = await a.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
            assert_error(reused, 401, "REFRESH_TOKEN_REUSED")
            assert_error(await b.get(ME, headers=current.headers), 401, "INVALID_TOKEN")

    async def test_erasure_on_a_is_refused_on_b_at_once(self, app, database_url, data_dir):
        async with two_instances(app, database_url, data_dir) as (a, b, b_app):
            user, other = await two_logins_warm_on_b(a, b, b_app)
            erased = await a.request("DELETE", f"/api/{user.id}", json={"password": PASSWORD}, headers=user.headers)
            assert erased.status_code == 200, erased.text
            for login_ in (user, other):
                assert_error(await b.get(ME, headers=login_.headers), 401, "INVALID_TOKEN")

    async def test_logout_on_b_itself_is_refused_on_b(self, app, client):
        user = await make_user(client)
        await warm(client, app, user)
        assert (await client.post("/api/auth/logout", headers=user.headers)).status_code == 200
        assert_error(await client.get(ME, headers=user.headers), 401, "INVALID_TOKEN")

    async def test_an_epoch_replaced_while_the_database_answered_leaves_nothing_trusted(self, app, client, prefix):
        """The request read the epoch, then the database; another instance's change replaced the epoch in between.
        The answer is stored under the epoch read first, so the next request asks the database again."""
        user = await make_user(client)
        live = app.state.live_sessions
        put = live.put

        def replaced_meanwhile(*args: Any) -> None:
            with redis.Redis.from_url(REDIS_URL) as conn:  # as another instance's `bump`, after the query
                conn.set(f"{prefix}:sessions:epoch:{user.id}", "replaced")
            put(*args)

        live.put = replaced_meanwhile
        assert (await client.get(ME, headers=user.headers)).status_code == 200
        live.put = put
        with statements(app) as seen:
            assert (await client.get(ME, headers=user.headers)).status_code == 200
        assert len(session_checks(seen)) == 1, "an answer stored under a replaced epoch was trusted"
        await warm(client, app, user)


class TestChangedInTheDatabase:
    """No API disables an account or revokes a session by hand: an operator's UPDATE is seen within
    SESSION_CACHE_SECONDS (here 2 s), as the event streams see it within EVENTS_SESSION_CHECK_SECONDS."""

    @pytest.fixture
    def settings_overrides(self, prefix: str) -> dict[str, Any]:
        return limited(prefix, SESSION_CACHE_SECONDS=2.0)

    async def test_an_account_disabled_by_hand_is_refused_within_the_cache_time(self, app, client):
        user = await make_user(client)
        await warm(client, app, user)
        async with app.state.sessionmaker() as session:
            await session.exec(update(User).where(col(User.id) == user.id).values(is_active=False))
            await session.commit()
        await asyncio.sleep(2.1)
        assert_error(await client.get(ME, headers=user.headers), 403, "ACCOUNT_DISABLED")

    async def test_a_session_revoked_by_hand_is_refused_within_the_cache_time(self, app, client):
        user = await make_user(client)
        await warm(client, app, user)
        async with app.state.sessionmaker() as session:
            await session.exec(
                update(AuthSession).where(col(AuthSession.user_id) == user.id).values(revoked_at=utcnow())
            )
            await session.commit()
        await asyncio.sleep(2.1)
        assert_error(await client.get(ME, headers=user.headers), 401, "INVALID_TOKEN")


class TestRedisTrouble:
    @pytest.fixture
    def settings_overrides(self, prefix: str, own_redis: RedisServer) -> dict[str, Any]:
        return limited(prefix, own_redis.url, REDIS_BREAKER_OPEN_SECONDS=0.2)

    async def test_redis_down_means_the_database_answers(self, app, database_url, data_dir, own_redis):
        async with two_instances(app, database_url, data_dir) as (a, b, b_app):
            user = await make_user(a)
            await warm(b, b_app, user)
            own_redis.kill()
            with captured_logs() as lines:
                assert (await a.post("/api/auth/logout", headers=user.headers)).status_code == 200
            (failed,) = events(lines, "session_epoch_bump_failed")
            assert failed["user_id"] == user.id
            # B cannot read the epoch either: it asks the database, which knows.
            with statements(b_app) as seen:
                assert_error(await b.get(ME, headers=user.headers), 401, "INVALID_TOKEN")
            assert len(session_checks(seen)) == 1

    async def test_redis_restarted_empty_forgets_nothing_wrongly(self, app, client, own_redis):
        """The epochs are gone with Redis' memory: a new random one is made, which no remembered answer carries
        (a counter would start again from where the remembered answers were)."""
        user = await make_user(client)
        await warm(client, app, user)
        own_redis.kill()
        own_redis.start()
        for _ in range(100):  # the pooled connections died with it; the breaker may be open for a moment
            if await app.state.redis.ping():
                break
            await asyncio.sleep(0.1)
        with statements(app) as seen:
            assert (await client.get(ME, headers=user.headers)).status_code == 200
        assert len(session_checks(seen)) == 1  # asked the database again
        with redis.Redis.from_url(own_redis.url) as conn:
            assert conn.exists(f"{app.state.settings.REDIS_KEY_PREFIX}:sessions:epoch:{user.id}")  # a new epoch
        await warm(client, app, user)  # and remembered under it
