"""Login sessions and their refresh tokens (stored only as SHA-256 hashes)."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict
from sqlmodel import Field, SQLModel

from backend.models.common import RESPONSE_CONFIG, new_id, utcnow


class AuthSession(SQLModel, table=True):
    """One login. Access tokens carry its id (`sid`); revoking it ends every token of the login."""

    __tablename__ = "sessions"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    user_id: str = Field(foreign_key="users.id", ondelete="CASCADE", index=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    rotated_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_reason: str | None = Field(default=None, max_length=32)
    user_agent: str | None = Field(default=None, max_length=255)
    ip_address: str | None = Field(default=None, max_length=64)


class RefreshToken(SQLModel, table=True):
    """Every refresh token a session was given. A used one presented again means theft: revoke."""

    __tablename__ = "refresh_tokens"

    token_hash: str = Field(primary_key=True, max_length=64)
    session_id: str = Field(foreign_key="sessions.id", ondelete="CASCADE", index=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    used_at: datetime | None = None


class RefreshRequest(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    refresh_token: str = Field(min_length=1, max_length=512)


class TokenPair(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int
    user_id: str
