"""The API's own tokens: short-lived HS256 access JWTs and opaque, rotating refresh tokens."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import jwt

from backend.errors import InvalidToken, TokenExpired
from backend.models.common import USER_ID_PATTERN

ISSUER = "taskdeck"
ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti", "sid", "type", "iss"]


def create_access_token(*, secret: str, user_id: str, session_id: str, minutes: int) -> tuple[str, int]:
    now = datetime.now(UTC)
    claims = {
        "iss": ISSUER,
        "sub": user_id,
        "sid": session_id,
        "jti": uuid.uuid4().hex,
        "type": "access",
        "iat": now,
        "exp": now + timedelta(minutes=minutes),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM), minutes * 60


# A client sends the same access token with every request until it expires: the work that depends only on the
# token's text (parsing, the signature, the required claims) is done once per token and secret and remembered
# (bounded, least recently used first out); what depends on the clock (`exp`) is checked on every request.
# A token that fails is not remembered: it costs its full check every time.
TOKEN_CACHE_SIZE = 4096


@lru_cache(maxsize=TOKEN_CACHE_SIZE)
@lru_cache(maxsize=TOKEN_CACHE_SIZE)
def _unverified_claims(token: str) -> dict[str, Any] | None:
    """The claims a token carries, NOT verified (None: not a JWT). Decoded once per token for both readers below
    (the rate-limit middleware and the principal each asked before): callers only read them."""
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims


def is_own_token(token: str) -> bool:
    """Ours if it claims our issuer; the signature is checked afterwards by `decode_access_token`."""
    unverified = _unverified_claims(token)
    return unverified is not None and unverified.get("iss") == ISSUER


_USER_ID = re.compile(USER_ID_PATTERN)


def claimed_subject(token: str) -> str | None:
    """The `sub` one of our access tokens claims, NOT verified: it may only choose which user's data to read
    ahead (the login-session epoch, backend/live_sessions.py); the token is verified later, as always. None
    for anything else (another issuer, garbage, a `sub` that is no user id)."""
    unverified = _unverified_claims(token)
    if unverified is None:
        return None
    subject = unverified.get("sub")
    if unverified.get("iss") != ISSUER or not isinstance(subject, str) or not _USER_ID.fullmatch(subject):
        return None
    return subject


@lru_cache(maxsize=TOKEN_CACHE_SIZE)
def _verified_claims(token: str, secret: str) -> dict[str, Any]:
    """The claims of a token signed with `secret`, with every check but the expiry's (PyJWTError otherwise)."""
    claims: dict[str, Any] = jwt.decode(
        token,
        secret,
        algorithms=[ALGORITHM],
        issuer=ISSUER,
        options={"require": REQUIRED_CLAIMS, "verify_exp": False},
    )
    if claims.get("type") != "access" or not isinstance(claims.get("sid"), str):
        raise jwt.InvalidTokenError("not an access token")
    if not isinstance(claims["exp"], int | float):
        raise jwt.DecodeError("exp must be a number")
    return claims


def decode_access_token(token: str, *, secret: str, leeway: int) -> dict[str, Any]:
    try:
        claims = _verified_claims(token, secret)
    except jwt.PyJWTError:
        raise InvalidToken() from None
    if claims["exp"] <= time.time() - leeway:  # as PyJWT's own expiry check
        raise TokenExpired()
    return dict(claims)


def issued_at(token: str) -> datetime | None:
    """The `iat` of a token whose signature was already checked (ours or Better-Auth's); None if it has none."""
    try:
        issued = jwt.decode(token, options={"verify_signature": False}).get("iat")
    except jwt.PyJWTError:
        return None
    return datetime.fromtimestamp(issued, UTC) if isinstance(issued, int | float) else None


def new_refresh_token() -> tuple[str, str]:
    """A fresh opaque token and the hash that is all the database ever sees."""
    token = secrets.token_urlsafe(48)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
