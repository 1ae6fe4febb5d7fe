"""The API's own tokens: short-lived HS256 access JWTs and opaque, rotating refresh tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from backend.errors import InvalidToken, TokenExpired

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


def is_own_token(token: str) -> bool:
    """Ours if it claims our issuer; the signature is checked afterwards by `decode_access_token`."""
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return False
    return unverified.get("iss") == ISSUER


def decode_access_token(token: str, *, secret: str, leeway: int) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            leeway=leeway,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError:
        raise TokenExpired() from None
    except jwt.PyJWTError:
        raise InvalidToken() from None
    if claims.get("type") != "access" or not isinstance(claims.get("sid"), str):
        raise InvalidToken()
    return claims


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
