"""`/api/auth`: register, login, OAuth2 token, refresh, logout, me."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Form, Request
from fastapi.security import OAuth2PasswordRequestForm

from backend import openapi_examples as examples
from backend.config import Settings
from backend.deps import PrincipalDep, SessionDep, SettingsDep
from backend.envelope import MeEnvelope, MessageEnvelope, TokenPairEnvelope, UserEnvelope, ok
from backend.errors import responses
from backend.live_sessions import sessions_ended
from backend.middleware import client_ip
from backend.models.common import NO_NUL
from backend.models.session import RefreshRequest, TokenPair
from backend.models.user import LoginRequest, UserCreate, user_me, user_public
from backend.ratelimit import limit_login, rate_limit
from backend.services import auth as auth_service

router = APIRouter(prefix="/api/auth", tags=["auth"])


class PasswordForm(OAuth2PasswordRequestForm):
    """The OAuth2 password form, with `username` and `password` documented as required non-empty
    (an empty form field counts as missing: 422)."""

    def __init__(
        self,
        username: Annotated[str, Form(min_length=1, max_length=320, pattern=NO_NUL)],
        password: Annotated[str, Form(min_length=1, max_length=1024, json_schema_extra={"format": "password"})],
        grant_type: Annotated[str, Form(pattern="^password$")] = "password",
        scope: Annotated[str, Form()] = "",
        client_id: Annotated[str | None, Form()] = None,
        client_secret: Annotated[str | None, Form(json_schema_extra={"format": "password"})] = None,
    ) -> None:
        super().__init__(
            grant_type=grant_type,
            username=username,
            password=password,
            scope=scope,
            client_id=client_id,
            client_secret=client_secret,
        )


def token_settings(settings: Settings) -> auth_service.TokenSettings:
    return auth_service.TokenSettings(
        secret=settings.jwt_secret,
        access_minutes=settings.ACCESS_TOKEN_EXPIRE_MINUTES,
        refresh_days=settings.REFRESH_TOKEN_EXPIRE_DAYS,
        bcrypt_rounds=settings.BCRYPT_ROUNDS,
    )


def _client(request: Request) -> auth_service.ClientInfo:
    return auth_service.ClientInfo(ip=client_ip(request.scope), user_agent=request.headers.get("user-agent"))


@router.post(
    "/register",
    status_code=201,
    response_model=UserEnvelope,
    summary="Create an account",
    operation_id="register",
    responses={201: examples.REGISTERED, **responses(400, 409, 413, 422, 429, 503)},
    dependencies=[rate_limit("register")],
)
async def register(
    payload: Annotated[UserCreate, Body(openapi_examples=examples.REGISTER)], session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """Register with email and password (8-72 bytes, not a common password). Emails are case-insensitive."""
    user = await auth_service.register_user(session, payload, settings.BCRYPT_ROUNDS)
    return ok(user_public(user), "Registered")


@router.post(
    "/login",
    response_model=TokenPairEnvelope,
    summary="Sign in with email and password",
    operation_id="login",
    responses={200: examples.LOGGED_IN, **responses(400, 401, 403, 413, 422, 429, 503)},
)
async def login(
    payload: Annotated[LoginRequest, Body(openapi_examples=examples.LOGIN)],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    """Returns a 15-minute access token and a refresh token (rotated on every use)."""
    await limit_login(request, payload.email)
    user = await auth_service.authenticate(session, payload.email, payload.password, settings.BCRYPT_ROUNDS)
    pair = await auth_service.start_session(session, user, token_settings(settings), _client(request))
    return ok(pair, "Logged in")


@router.post(
    "/token",
    response_model=TokenPair,
    summary="OAuth2 password flow (for Swagger's Authorize button)",
    operation_id="oauth2_token",
    responses=responses(401, 403, 413, 422, 429, 503),
)
async def oauth2_token(
    form: Annotated[PasswordForm, Depends()], request: Request, session: SessionDep, settings: SettingsDep
) -> TokenPair:
    """Form fields `username` (the email) and `password`; answers the raw OAuth2 token body."""
    await limit_login(request, form.username)
    user = await auth_service.authenticate(session, form.username, form.password, settings.BCRYPT_ROUNDS)
    return await auth_service.start_session(session, user, token_settings(settings), _client(request))


@router.post(
    "/refresh",
    response_model=TokenPairEnvelope,
    summary="Trade a refresh token for a new token pair",
    operation_id="refresh",
    responses=responses(400, 401, 403, 413, 422, 429, 503),
)
async def refresh(
    payload: RefreshRequest, request: Request, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """The old refresh token stops working. Presenting it again revokes the whole session (and closes the
    event streams it opened)."""
    ended = partial(sessions_ended, request.app.state)
    pair = await auth_service.rotate_refresh_token(session, payload.refresh_token, token_settings(settings), ended)
    return ok(pair, "Token refreshed")


@router.post(
    "/logout",
    response_model=MessageEnvelope,
    summary="End this session",
    operation_id="logout",
    responses=responses(401, 403, 429, 503),
)
async def logout(principal: PrincipalDep, request: Request, session: SessionDep) -> dict[str, Any]:
    """The session's refresh token and the presented access token stop working at once; the event streams
    and stream tickets of the session too (streams close within 5 s, on every instance)."""
    ended = partial(sessions_ended, request.app.state)
    await auth_service.logout(session, principal.user.id, principal.session_id, ended)
    return ok(None, "Logged out")


@router.get(
    "/me",
    response_model=MeEnvelope,
    summary="The signed-in user",
    operation_id="me",
    responses=responses(401, 403, 429, 503),
)
async def me(principal: PrincipalDep) -> dict[str, Any]:
    """Profile of the token's subject."""
    return ok(user_me(principal.user))
