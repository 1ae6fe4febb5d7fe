"""Queries and rules about users."""

from __future__ import annotations

import logging
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db import flush_unique
from backend.errors import AccountDisabled, Conflict
from backend.logging_setup import security_event
from backend.models.common import utcnow
from backend.models.emails import canonical_email
from backend.models.user import User

BETTER_AUTH_PROVIDER = "better-auth"
EMAIL_IN_USE = "This email address belongs to another account here; change it in the web app or contact support"


def ensure_active(user: User, *, event: str | None = None, **fields: Any) -> None:
    """ACCOUNT_DISABLED unless the account is active: the one place this rule is written.

    `event` names the security event to log for a refusal (with `fields`); None logs nothing.
    """
    if user.is_active:
        return
    if event is not None:
        security_event(event, user_id=user.id, reason="account_disabled", **fields)
    raise AccountDisabled()


async def get_user(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    """The user whose address has the canonical form of `email` (however it is typed)."""
    result = await session.exec(select(User).where(User.email == canonical_email(email)))
    return result.first()


async def upsert_external_user(session: AsyncSession, user_id: str, email: str, full_name: str | None) -> User:
    """The Better-Auth user behind a verified token: created on first sight, then kept in step with its claims.

    `full_name=None` means the token carried no name: the stored one is kept. The email is stored, and
    matched against other accounts, in its canonical form (as registration stores it).
    """
    email = canonical_email(email)
    user = await session.get(User, user_id)
    if user is None:
        user = await _create_external_user(session, user_id, email, full_name)
    return await _sync_external_user(session, user, email, full_name)


async def _create_external_user(session: AsyncSession, user_id: str, email: str, full_name: str | None) -> User:
    owner = await get_user_by_email(session, email)
    if owner is not None:
        if owner.id != user_id:
            raise Conflict(EMAIL_IN_USE, field="email")
        return owner  # a concurrent first request created it a moment ago
    user = User.model_validate(
        {"id": user_id, "email": email, "full_name": full_name, "auth_provider": BETTER_AUTH_PROVIDER}
    )
    try:
        await flush_unique(session, user, lambda: Conflict(EMAIL_IN_USE, field="email"))
    except Conflict:
        # Either a concurrent first request created this user (fine: use it) or the email was taken meanwhile.
        existing = await session.get(User, user_id)
        if existing is None:
            raise
        return existing
    security_event("external_user_created", level=logging.INFO, user_id=user_id, provider=BETTER_AUTH_PROVIDER)
    return user


async def _sync_external_user(session: AsyncSession, user: User, email: str, full_name: str | None) -> User:
    if user.auth_provider != BETTER_AUTH_PROVIDER:
        raise Conflict("This user id belongs to an account that does not sign in with Better-Auth")
    changes: dict[str, Any] = {}
    if user.email != email:
        changes["email"] = email
    if full_name is not None and user.full_name != full_name:
        changes["full_name"] = full_name
    if not changes:
        return user  # the usual case: no write on the hot path
    if "email" in changes:
        owner = await get_user_by_email(session, email)
        if owner is not None and owner.id != user.id:
            raise Conflict(EMAIL_IN_USE, field="email")
    user.sqlmodel_update({**changes, "updated_at": utcnow()})
    await flush_unique(session, user, lambda: Conflict(EMAIL_IN_USE, field="email"))
    return user
