"""The whole account: erased with everything it owns (its export is in services/export.py)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlmodel import col, delete
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db import end_read
from backend.errors import InvalidCredentials, ReauthenticationRequired, ValidationFailed
from backend.logging_setup import security_event
from backend.models.common import utcnow
from backend.models.user import User
from backend.security.passwords import verify_password
from backend.services.auth import SessionsEnded, notify_after_commit

# A user without a password (Better-Auth) proves presence with a token this recent instead.
FRESH_TOKEN_SECONDS = 300


async def confirm_erasure(
    session: AsyncSession, user: User, *, password: str | None, token_issued_at: datetime | None
) -> None:
    """Local users confirm with their password; Better-Auth users with a token issued in the last 5 minutes."""
    if user.hashed_password is not None:
        if password is None:
            raise ValidationFailed("password: your current password is required", field="password")
        await end_read(session)  # no write lock held while bcrypt runs
        if not await verify_password(password, user.hashed_password):
            security_event("erasure_refused", user_id=user.id, reason="wrong_password")
            raise InvalidCredentials()
        return
    if token_issued_at is None or utcnow() - token_issued_at > timedelta(seconds=FRESH_TOKEN_SECONDS):
        security_event("erasure_refused", user_id=user.id, reason="stale_token")
        raise ReauthenticationRequired("Sign in again: erasing an account needs a token issued in the last 5 minutes")


async def erase_account(session: AsyncSession, user_id: str, ended: SessionsEnded | None = None) -> None:
    """One DELETE: foreign keys cascade to sessions (and so refresh tokens), tasks, projects, idempotency keys.
    `ended` is told that every session of the user ended."""
    await session.exec(delete(User).where(col(User.id) == user_id))
    notify_after_commit(session, ended, user_id, None)
    security_event("account_erased", level=logging.WARNING, user_id=user_id)
