"""Registration, login, who a token or stream ticket belongs to, refresh-token rotation and logout."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import bindparam, update
from sqlalchemy import select as rows_of
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db import after_commit, commit, end_read, flush_unique
from backend.errors import EmailTaken, InvalidCredentials, InvalidToken, RefreshTokenReused
from backend.logging_setup import mask_email, security_event
from backend.models.common import utcnow
from backend.models.session import AuthSession, RefreshToken, TokenPair
from backend.models.user import User, UserCreate
from backend.security.better_auth import ExternalVerifier
from backend.security.passwords import hash_password, verify_dummy, verify_password
from backend.security.principal import Principal
from backend.security.tokens import create_access_token, decode_access_token, hash_refresh_token, new_refresh_token
from backend.services.users import ensure_active, get_user, get_user_by_email, upsert_external_user

if TYPE_CHECKING:
    from backend.events import EventLog
    from backend.live_sessions import LiveSessions

# Told, once it is committed, that a user's login session ended (None: every session of the user), so that
# no instance answers for it from memory and the streams it opened close (`backend.live_sessions.sessions_ended`,
# bound to the app by the router).
SessionsEnded = Callable[[str, str | None], Awaitable[None]]
SESSION_ENDED = "This session has ended; sign in again"


def notify_after_commit(
    session: AsyncSession, ended: SessionsEnded | None, user_id: str, session_id: str | None
) -> None:
    """Tell `ended` that the session ended once the unit of work is committed (never if it rolls back)."""
    if ended is not None:
        after_commit(session, partial(ended, user_id, session_id))


@dataclass(frozen=True)
class TokenSettings:
    secret: str
    access_minutes: int
    refresh_days: int
    bcrypt_rounds: int


@dataclass(frozen=True)
class ClientInfo:
    ip: str | None = None
    user_agent: str | None = None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def register_user(session: AsyncSession, payload: UserCreate, rounds: int) -> User:
    if await get_user_by_email(session, payload.email):
        raise EmailTaken(field="email")
    await end_read(session)
    hashed = await hash_password(payload.password, rounds)
    user = User.model_validate(payload, update={"hashed_password": hashed, "auth_provider": "local"})
    # Two registrations may race past the check above: the unique index decides.
    await flush_unique(session, user, lambda: EmailTaken(field="email"))
    security_event("register", level=logging.INFO, user_id=user.id)
    return user


async def authenticate(session: AsyncSession, email: str, password: str, rounds: int) -> User:
    """The user, or INVALID_CREDENTIALS after the same bcrypt work whatever was wrong."""
    user = await get_user_by_email(session, email)
    await end_read(session)
    if user is None or user.hashed_password is None:
        await verify_dummy(password, rounds)
        security_event("login_failed", email=mask_email(email), reason="unknown_email")
        raise InvalidCredentials()
    if not await verify_password(password, user.hashed_password):
        security_event("login_failed", email=mask_email(email), user_id=user.id, reason="wrong_password")
        raise InvalidCredentials()
    ensure_active(user, event="login_failed")
    return user


async def resolve_external_token(session: AsyncSession, verifier: ExternalVerifier, token: str) -> Principal:
    """A Better-Auth token: verified by `verifier`, its user created on first sight (just in time)."""
    identity = await verifier.verify(token)
    user = await upsert_external_user(session, identity.user_id, identity.email, identity.full_name)
    return Principal(user=user, session_id=None)


async def resolve_access_token(
    session: AsyncSession,
    token: str,
    *,
    secret: str,
    leeway: int,
    live: LiveSessions | None = None,
    epoch_read: tuple[str, str] | None = None,
) -> Principal:
    """The user and login session behind one of our access tokens, if that login is still alive.

    `epoch_read`: (a user id, that user's login-session epoch), read before anything here (backend/live_sessions.py).
    When it is the token's verified `sub`, a login that `live` remembers under that epoch is answered from memory;
    else the database answers, and an alive login is remembered under the epoch. Only after the token's signature
    and expiry were checked, keyed by its verified `sub` and `sid`.
    Whether the account is active is the caller's check (`ensure_active`), as for Better-Auth tokens.
    """
    claims = decode_access_token(token, secret=secret, leeway=leeway)
    user_id, session_id = claims["sub"], claims["sid"]
    epoch = epoch_read[1] if epoch_read is not None and epoch_read[0] == user_id else None
    if live is not None and epoch is not None:
        row = live.get(user_id, session_id, epoch)
        if row is not None:
            return Principal(user=_user(row), session_id=session_id)
    login = await _login(session, user_id, session_id)
    if login is None:
        raise InvalidToken()
    if not login.alive:
        raise InvalidToken(SESSION_ENDED)
    if live is not None and epoch is not None:
        live.put(user_id, session_id, epoch, login.columns, login.expires_at)
    return Principal(user=login.user, session_id=session_id)


# The caller's row, read as columns (Core): building an ORM entity per request cost more than the query.
_USERS = User.__table__.c  # type: ignore[attr-defined]
_SESSIONS = AuthSession.__table__.c  # type: ignore[attr-defined]
_USER_NAMES = [column.key for column in _USERS]
_LOGIN_QUERY = (
    rows_of(*_USERS, _SESSIONS.revoked_at, _SESSIONS.expires_at)
    .join_from(User.__table__, AuthSession.__table__, _SESSIONS.user_id == _USERS.id)  # type: ignore[attr-defined]
    .where(_SESSIONS.id == bindparam("session_id"), _USERS.id == bindparam("user_id"))
)


def _user(columns: tuple[Any, ...]) -> User:
    """A detached `User` of the row's values (no validation): a new one each time, so no request sees another's."""
    return User.model_construct(**dict(zip(_USER_NAMES, columns, strict=True)))


class _Login(NamedTuple):
    user: User
    alive: bool  # not revoked, not expired
    columns: tuple[Any, ...]  # the user's row, as `_user` takes it
    expires_at: datetime  # the session's


async def _login(session: AsyncSession, user_id: str, session_id: str) -> _Login | None:
    """The user of login session `session_id` and whether that login is still alive (None: no such login).

    One indexed query answers both "who" and "is this login still alive" (logout is immediate). The user is a
    detached `User` built from the row: the caller's identity, read-only (a service that changes the user
    loads it in its own unit of work)."""
    connection = await session.connection()  # Core rows: the ORM's execute path is not needed
    row = (await connection.execute(_LOGIN_QUERY, {"session_id": session_id, "user_id": user_id})).first()
    if row is None:
        return None
    *values, revoked_at, expires_at = row
    columns, expires_at = tuple(values), _aware(expires_at)
    return _Login(_user(columns), revoked_at is None and expires_at > utcnow(), columns, expires_at)


async def resolve_stream_ticket(session: AsyncSession, log: EventLog, ticket: str) -> Principal:
    """The user and login session behind a single-use event-stream ticket (redeemed here: it works once),
    if that session is still alive (INVALID_TOKEN) and the user still active (ACCOUNT_DISABLED), as for the
    bearer token that asked for the ticket."""
    owner = await log.redeem_ticket(ticket)
    if owner is None:
        raise InvalidToken("The stream ticket is invalid, used or expired")
    if owner.session_id is None:  # a Better-Auth token's ticket: no session of ours, only the user
        user = await get_user(session, owner.user_id)
        if user is None:
            raise InvalidToken("The stream ticket is invalid, used or expired")
    else:
        login = await _login(session, owner.user_id, owner.session_id)
        if login is None or not login.alive:
            raise InvalidToken(SESSION_ENDED)
        user = login.user
    ensure_active(user)
    return Principal(user=user, session_id=owner.session_id)


async def stream_allowed(session: AsyncSession, user_id: str, session_id: str | None) -> bool:
    """Whether a stream of `user_id` opened by login session `session_id` (None: a Better-Auth token) may go
    on: the session alive, the user there and active. Asked every few seconds by every open stream."""
    if session_id is None:
        user = await get_user(session, user_id)
        return user is not None and user.is_active
    login = await _login(session, user_id, session_id)
    return login is not None and login.alive and login.user.is_active


async def start_session(session: AsyncSession, user: User, cfg: TokenSettings, client: ClientInfo) -> TokenPair:
    auth_session = AuthSession(
        user_id=user.id,
        expires_at=utcnow() + timedelta(days=cfg.refresh_days),
        ip_address=client.ip,
        user_agent=(client.user_agent or "")[:255] or None,
    )
    refresh, refresh_hash = new_refresh_token()
    session.add(auth_session)
    session.add(RefreshToken(token_hash=refresh_hash, session_id=auth_session.id))
    await session.flush()
    security_event("login_succeeded", level=logging.INFO, user_id=user.id, session_id=auth_session.id)
    return _pair(user.id, auth_session.id, refresh, cfg)


def _pair(user_id: str, session_id: str, refresh: str, cfg: TokenSettings) -> TokenPair:
    access, expires_in = create_access_token(
        secret=cfg.secret, user_id=user_id, session_id=session_id, minutes=cfg.access_minutes
    )
    return TokenPair(access_token=access, refresh_token=refresh, expires_in=expires_in, user_id=user_id)


async def rotate_refresh_token(
    session: AsyncSession, token: str, cfg: TokenSettings, ended: SessionsEnded | None = None
) -> TokenPair:
    """Trade a refresh token for a new pair. A token used twice revokes its whole session (`ended` is told)."""
    token_hash = hash_refresh_token(token)
    row = (
        await session.exec(
            select(RefreshToken, AuthSession, User)
            .join(AuthSession, col(AuthSession.id) == RefreshToken.session_id)
            .join(User, col(User.id) == AuthSession.user_id)
            .where(RefreshToken.token_hash == token_hash)
        )
    ).first()
    if row is None:
        raise InvalidToken("The refresh token is invalid")
    stored, auth_session, user = row
    if auth_session.revoked_at is not None or _aware(auth_session.expires_at) <= utcnow():
        raise InvalidToken("The refresh token is no longer valid")
    now = utcnow()
    already_used = stored.used_at is not None  # read before the UPDATE, which syncs `stored` in the session
    # Claim the token atomically: of two concurrent refreshes only one updates the row.
    claimed = await session.exec(
        update(RefreshToken)
        .where(col(RefreshToken.token_hash) == token_hash, col(RefreshToken.used_at).is_(None))
        .values(used_at=now)
    )
    if already_used or claimed.rowcount != 1:
        await _revoke(session, auth_session.id, "refresh_reuse")
        notify_after_commit(session, ended, user.id, auth_session.id)
        # The one refusal that must leave a trace: the revocation is committed before the error
        # (which would otherwise roll the unit of work back).
        await commit(session)
        security_event("refresh_token_reused", user_id=user.id, session_id=auth_session.id)
        raise RefreshTokenReused()
    ensure_active(user)  # refused: the unit of work rolls back, the token stays unused
    refresh, refresh_hash = new_refresh_token()
    session.add(RefreshToken(token_hash=refresh_hash, session_id=auth_session.id))
    await session.exec(update(AuthSession).where(col(AuthSession.id) == auth_session.id).values(rotated_at=now))
    await session.flush()
    return _pair(user.id, auth_session.id, refresh, cfg)


async def _revoke(session: AsyncSession, session_id: str, reason: str) -> None:
    await session.exec(
        update(AuthSession)
        .where(col(AuthSession.id) == session_id, col(AuthSession.revoked_at).is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )


async def logout(
    session: AsyncSession, user_id: str, session_id: str | None, ended: SessionsEnded | None = None
) -> None:
    """End the login behind the presented token (`ended` is told). Better-Auth tokens have no session here."""
    if session_id is None:
        return
    await _revoke(session, session_id, "logout")
    notify_after_commit(session, ended, user_id, session_id)
    security_event("logout", level=logging.INFO, user_id=user_id, session_id=session_id)
