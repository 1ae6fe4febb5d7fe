"""Annotated dependencies: a route's signature reads like a sentence."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.config import Settings
from backend.db import commit
from backend.errors import Forbidden, NotAuthenticated, Unauthorized
from backend.live_sessions import EPOCH_STATE
from backend.logging_setup import security_event
from backend.middleware import client_ip
from backend.models.common import USER_ID_PATTERN
from backend.models.user import User
from backend.security.principal import Principal
from backend.security.tokens import is_own_token
from backend.services.auth import resolve_access_token, resolve_external_token
from backend.services.users import ensure_active


async def get_settings(request: Request) -> Settings:
    # async: FastAPI runs a plain `def` dependency in the thread pool, a thread hop per request.
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: what the services flushed is committed once, after the route
    returns and before the response is sent (so a failed commit is an error response, never a
    success that did not happen); if the route raises, everything is rolled back. The request waits its turn
    for a connection at the gate (db.ConnectionGate: first come, first served), or has waited for it already,
    before its dependencies were solved (middleware.InnerMiddleware): the session takes that slot over."""
    async with request.app.state.db_gate(request.scope), request.app.state.sessionmaker() as session:
        yield session
        await commit(session)


SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": the session ends when the route function does, before the response is sent
# (and before a streamed body starts, so no connection is held by an event stream).
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

bearer_scheme = HTTPBearer(auto_error=False, description="An access token from /api/auth/login or Better-Auth")


BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


async def get_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: BearerCredentials,
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        _unauthenticated(request, "missing_token")
        raise NotAuthenticated()
    token = credentials.credentials
    try:
        if is_own_token(token):
            principal = await resolve_access_token(
                session,
                token,
                secret=settings.jwt_secret,
                leeway=settings.JWT_LEEWAY_SECONDS,
                live=request.app.state.live_sessions,
                epoch_read=_epoch(request),
            )
        else:
            principal = await resolve_external_token(session, request.app.state.external_verifier, token)
    except Unauthorized as exc:
        _unauthenticated(request, exc.code)
        raise
    ensure_active(principal.user, event="forbidden", route=_route(request))
    request.state.user_id = principal.user.id
    return principal


def _epoch(request: Request) -> tuple[str, str] | None:
    """(the user id the bearer token claims, that user's login-session epoch), as the rate-limit middleware read
    them before anything else (backend/live_sessions.py); None when it read none."""
    read = request.scope.get("state", {}).get(EPOCH_STATE)
    return read if isinstance(read, tuple) else None


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


# Documented with its pattern but not validated on its own: ownership comes before validation (a malformed
# `user_id` is not the caller's, 403), and an id equal to the caller's is valid by construction.
UserIdPath = Annotated[
    str, Path(description="Your own user id (the token's subject)", json_schema_extra={"pattern": USER_ID_PATTERN})
]


async def require_owner(request: Request, user_id: UserIdPath, user: CurrentUser) -> str:
    """The path's `user_id` must be the caller's: 403 before any data is read or any parameter validated."""
    return ensure_owner(request, user, user_id)


def ensure_owner(request: Request, user: User, path_user_id: str) -> str:
    """FORBIDDEN unless the path's `user_id` is the caller's: the one place this rule is written."""
    if path_user_id != user.id:
        security_event(
            "forbidden", user_id=user.id, path_user_id=path_user_id, route=_route(request), reason="owner_mismatch"
        )
        raise Forbidden("You may only access your own resources")
    return user.id


OwnerDep = Annotated[str, Depends(require_owner)]
# The caller's own id. On a `/api/{user_id}/...` router whose dependencies include `require_owner`,
# it is the path's user too (routers/tasks.py, projects.py: their routes are also served without it).
CallerId = Annotated[str, Depends(current_user_id)]
