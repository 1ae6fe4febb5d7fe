"""Annotated dependencies: a route's signature reads like a sentence."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.config import Settings
from backend.errors import AccountDisabled, Forbidden, InvalidToken, NotAuthenticated, Unauthorized
from backend.logging_setup import security_event
from backend.middleware import client_ip
from backend.models.common import USER_ID_PATTERN, utcnow
from backend.models.session import AuthSession
from backend.models.user import User
from backend.security.tokens import decode_access_token, is_own_token


async def get_settings(request: Request) -> Settings:
    # async: FastAPI runs a plain `def` dependency in the thread pool, a thread hop per request.
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessionmaker() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]

bearer_scheme = HTTPBearer(auto_error=False, description="An access token from /api/auth/login or Better-Auth")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user, and the login session behind an own token (None for Better-Auth)."""

    user: User
    session_id: str | None


async def get_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        _unauthenticated(request, "missing_token")
        raise NotAuthenticated()
    token = credentials.credentials
    try:
        if is_own_token(token):
            principal = await _own_principal(session, settings, token)
        else:
            principal = await request.app.state.external_verifier(session, token)
    except Unauthorized as exc:
        _unauthenticated(request, exc.code)
        raise
    if not principal.user.is_active:
        security_event("forbidden", user_id=principal.user.id, reason="account_disabled", route=_route(request))
        raise AccountDisabled()
    request.state.user_id = principal.user.id
    return principal


async def _own_principal(session: AsyncSession, settings: Settings, token: str) -> Principal:
    claims = decode_access_token(token, secret=settings.jwt_secret, leeway=settings.JWT_LEEWAY_SECONDS)
    # One indexed query answers both "who" and "is this login still alive" (logout is immediate).
    row = (
        await session.exec(
            select(User, AuthSession.revoked_at, AuthSession.expires_at)
            .join(AuthSession, col(AuthSession.user_id) == User.id)
            .where(AuthSession.id == claims["sid"], User.id == claims["sub"])
        )
    ).first()
    if row is None:
        raise InvalidToken()
    user, revoked_at, expires_at = row
    expires = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
    if revoked_at is not None or expires <= utcnow():
        raise InvalidToken("This session has ended; sign in again")
    return Principal(user=user, session_id=claims["sid"])


async def no_external_verifier(session: AsyncSession, token: str) -> Principal:
    raise InvalidToken()


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", request.url.path))


def _unauthenticated(request: Request, reason: str) -> None:
    security_event(
        "unauthenticated", reason=reason, route=_route(request), method=request.method, client=client_ip(request.scope)
    )


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_current_user(principal: PrincipalDep) -> User:
    return principal.user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def current_user_id(user: CurrentUser) -> str:
    """Whose data: the token's own user (for the routes of earlier drafts without `{user_id}`)."""
    return user.id


async def require_owner(
    request: Request,
    user_id: Annotated[str, Path(pattern=USER_ID_PATTERN, description="Your own user id (the token's subject)")],
    user: CurrentUser,
) -> str:
    """The path's `user_id` must be the caller's: 403 before any data is read."""
    if user_id != user.id:
        security_event(
            "forbidden", user_id=user.id, path_user_id=user_id, route=_route(request), reason="owner_mismatch"
        )
        raise Forbidden("You may only access your own resources")
    return user.id


OwnerDep = Annotated[str, Depends(require_owner)]
