"""The auth and user services, called directly (no HTTP), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import select

from backend.db import commit
from backend.errors import AccountDisabled, Conflict, Forbidden, InvalidCredentials, InvalidToken, Unauthorized
from backend.events import MemoryLog, TicketOwner
from backend.models.session import AuthSession, RefreshToken
from backend.models.user import UserCreate
from backend.security.tokens import hash_refresh_token
from backend.services import auth
from backend.services.users import ensure_active, get_user, get_user_by_email
from tests.conftest import PASSWORD, assert_error

CFG = auth.TokenSettings(secret="k" * 48, access_minutes=15, refresh_days=14, bcrypt_rounds=4)


@pytest.fixture
async def session(app):
    async with app.state.sessionmaker() as db_session:
        yield db_session


async def register(session, email: str = "ada@example.com"):
    return await auth.register_user(session, UserCreate(email=email, password=PASSWORD), rounds=4)


class TestRegisterUser:
    async def test_stores_a_bcrypt_hash(self, session):
        user = await register(session)
        assert user.hashed_password.startswith("$2b$04$")
        assert PASSWORD not in user.hashed_password
        assert await get_user(session, user.id) is user
        assert (await get_user_by_email(session, "  ADA@example.COM ")).id == user.id

    async def test_duplicate(self, session):
        await register(session)
        with pytest.raises(Conflict) as caught:
            await register(session, "Ada@Example.com")
        assert caught.value.code == "EMAIL_TAKEN"

    @pytest.mark.committing  # concurrent requests: one connection cannot serve them
    async def test_concurrent_duplicates_make_one_account(self, client):
        """Both requests pass the "is it taken?" read while bcrypt runs; the unique index decides."""
        body = {"email": "race@example.com", "password": PASSWORD}
        first, second = await asyncio.gather(
            client.post("/api/auth/register", json=body), client.post("/api/auth/register", json=body)
        )
        assert sorted([first.status_code, second.status_code]) == [201, 409]
        assert_error(first if first.status_code == 409 else second, 409, "EMAIL_TAKEN")


class TestAuthenticate:
    async def test_success_and_failures(self, session):
        user = await register(session)
        assert (await auth.authenticate(session, "ADA@example.com", PASSWORD, 4)).id == user.id
        for email, password in (("ada@example.com", "nope-nope-nope"), ("eve@example.com", PASSWORD)):
            with pytest.raises(InvalidCredentials):
                await auth.authenticate(session, email, password, 4)

    async def test_external_user_without_password_cannot_log_in(self, session):
        from backend.models.user import User

        session.add(User(id="ba-user-1", email="ext@example.com", auth_provider="better-auth"))
        await session.commit()
        with pytest.raises(InvalidCredentials):
            await auth.authenticate(session, "ext@example.com", PASSWORD, 4)

    async def test_disabled(self, session):
        user = await register(session)
        user.is_active = False
        session.add(user)
        await session.commit()
        with pytest.raises(Forbidden):
            await auth.authenticate(session, user.email, PASSWORD, 4)


class TestResolve:
    async def test_access_token_until_logout(self, session):
        user = await register(session)
        pair = await auth.start_session(session, user, CFG, auth.ClientInfo())
        principal = await auth.resolve_access_token(session, pair.access_token, secret=CFG.secret, leeway=0)
        assert principal.user.id == user.id
        assert principal.session_id is not None
        with pytest.raises(InvalidToken):
            await auth.resolve_access_token(session, pair.access_token, secret="w" * 48, leeway=0)
        await auth.logout(session, user.id, principal.session_id)
        with pytest.raises(InvalidToken) as caught:
            await auth.resolve_access_token(session, pair.access_token, secret=CFG.secret, leeway=0)
        assert caught.value.message == "This session has ended; sign in again"

    async def test_stream_ticket_works_once_and_only_for_an_active_account(self, session):
        user = await register(session)
        log = MemoryLog(window=60)
        ticket = await log.issue_ticket(TicketOwner(user.id, None))  # a Better-Auth token's: no session
        principal = await auth.resolve_stream_ticket(session, log, ticket)
        assert (principal.user.id, principal.session_id) == (user.id, None)
        with pytest.raises(InvalidToken):
            await auth.resolve_stream_ticket(session, log, ticket)
        for ticket in (
            await log.issue_ticket(TicketOwner("no-such-user", None)),
            await log.issue_ticket(TicketOwner(user.id, None)) + "x",
            "forged",
        ):
            with pytest.raises(InvalidToken):
                await auth.resolve_stream_ticket(session, log, ticket)
        user.is_active = False
        session.add(user)
        await session.commit()
        with pytest.raises(AccountDisabled):
            await auth.resolve_stream_ticket(session, log, await log.issue_ticket(TicketOwner(user.id, None)))
        with pytest.raises(AccountDisabled):
            ensure_active(user)

    async def test_stream_ticket_and_stream_belong_to_a_session(self, session):
        user = await register(session)
        pair = await auth.start_session(session, user, CFG, auth.ClientInfo())
        sid = (await auth.resolve_access_token(session, pair.access_token, secret=CFG.secret, leeway=0)).session_id
        assert sid is not None
        log = MemoryLog(window=60)
        principal = await auth.resolve_stream_ticket(session, log, await log.issue_ticket(TicketOwner(user.id, sid)))
        assert (principal.user.id, principal.session_id) == (user.id, sid)
        assert await auth.stream_allowed(session, user.id, sid)
        assert await auth.stream_allowed(session, user.id, None)
        assert not await auth.stream_allowed(session, "no-such-user", sid)  # another user's session
        early = await log.issue_ticket(TicketOwner(user.id, sid))
        ended: list[tuple[str, str | None]] = []

        async def tell(user_id: str, session_id: str | None) -> None:
            ended.append((user_id, session_id))

        await auth.logout(session, user.id, sid, tell)
        assert ended == []  # told only once the logout is committed
        await commit(session)
        assert ended == [(user.id, sid)]
        with pytest.raises(InvalidToken) as caught:
            await auth.resolve_stream_ticket(session, log, early)
        assert caught.value.message == "This session has ended; sign in again"
        assert not await auth.stream_allowed(session, user.id, sid)
        user.is_active = False
        session.add(user)
        await session.commit()
        assert not await auth.stream_allowed(session, user.id, None)


class TestSessions:
    async def test_start_session_stores_only_hashes(self, session):
        user = await register(session)
        pair = await auth.start_session(session, user, CFG, auth.ClientInfo(ip="10.0.0.1", user_agent="x" * 400))
        stored = (await session.exec(select(RefreshToken))).one()
        assert stored.token_hash == hash_refresh_token(pair.refresh_token) != pair.refresh_token
        login = (await session.exec(select(AuthSession))).one()
        assert (login.ip_address, len(login.user_agent or "")) == ("10.0.0.1", 255)

    async def test_rotation_marks_the_old_token_used(self, session):
        user = await register(session)
        pair = await auth.start_session(session, user, CFG, auth.ClientInfo())
        new = await auth.rotate_refresh_token(session, pair.refresh_token, CFG)
        tokens = {t.token_hash: t for t in (await session.exec(select(RefreshToken))).all()}
        assert tokens[hash_refresh_token(pair.refresh_token)].used_at is not None
        assert tokens[hash_refresh_token(new.refresh_token)].used_at is None

    @pytest.mark.committing  # concurrent requests: one connection cannot serve them
    async def test_concurrent_refresh_counts_as_reuse(self, client, user):
        """Two refreshes racing with one token: one wins, the other is reuse and revokes the session."""
        body = {"refresh_token": user.refresh_token}
        first, second = await asyncio.gather(
            client.post("/api/auth/refresh", json=body), client.post("/api/auth/refresh", json=body)
        )
        assert sorted([first.status_code, second.status_code]) == [200, 401]
        loser = first if first.status_code == 401 else second
        assert_error(loser, 401, "REFRESH_TOKEN_REUSED")

    async def test_logout_without_a_session_is_a_no_op(self, session):
        user = await register(session)
        await auth.start_session(session, user, CFG, auth.ClientInfo())
        await auth.logout(session, user.id, None)  # a Better-Auth token: nothing of ours to revoke
        assert (await session.exec(select(AuthSession))).one().revoked_at is None

    async def test_expired_session_cannot_refresh(self, session):
        from datetime import timedelta

        from backend.models.common import utcnow

        user = await register(session)
        pair = await auth.start_session(session, user, CFG, auth.ClientInfo())
        login = (await session.exec(select(AuthSession))).one()
        login.expires_at = utcnow() - timedelta(seconds=1)
        session.add(login)
        await session.commit()
        with pytest.raises(Unauthorized) as caught:
            await auth.rotate_refresh_token(session, pair.refresh_token, CFG)
        assert caught.value.code == "INVALID_TOKEN"
