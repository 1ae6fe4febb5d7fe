"""The whole account: exported as one document, or erased with everything it owns."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db import end_read
from backend.errors import InvalidCredentials, ReauthenticationRequired, ValidationFailed
from backend.logging_setup import security_event
from backend.models.common import utcnow
from backend.models.project import Project, ProjectPublic
from backend.models.task import Task, TaskPublic
from backend.models.user import User
from backend.security.passwords import verify_password
from backend.services import projects as project_service

EXPORT_FORMAT = "taskdeck.account-export/1"
# A user without a password (Better-Auth) proves presence with a token this recent instead.
FRESH_TOKEN_SECONDS = 300


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def export_account(session: AsyncSession, user: User) -> dict[str, Any]:
    """Profile (never the password hash), tasks, projects (unpinned too) and their sync history."""
    tasks = (await session.exec(select(Task).where(Task.user_id == user.id).order_by(col(Task.id)))).all()
    projects = (await session.exec(select(Project).where(Project.user_id == user.id).order_by(col(Project.id)))).all()
    sync_runs: list[dict[str, Any]] = []
    for project in projects:
        assert project.id is not None
        history = await project_service._sync_history(session, user.id, project.id)
        sync_runs.extend({"project_id": project.id, **run} for run in history)
    return {
        "format": EXPORT_FORMAT,
        "exported_at": _iso(utcnow()),
        "profile": {
            "user_id": user.id,
            "email": user.email,
            "full_name": user.full_name,
            "auth_provider": user.auth_provider,
            "is_active": user.is_active,
            "created_at": _iso(user.created_at),
            "updated_at": _iso(user.updated_at),
        },
        "tasks": [TaskPublic.model_validate(task).model_dump(mode="json") for task in tasks],
        "projects": [ProjectPublic.model_validate(project).model_dump(mode="json") for project in projects],
        "sync_runs": sync_runs,
    }


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


async def erase_account(session: AsyncSession, user_id: str) -> None:
    """One DELETE: foreign keys cascade to sessions (and so refresh tokens), tasks, projects, idempotency keys."""
    await session.exec(delete(User).where(col(User.id) == user_id))
    await session.commit()
    security_event("account_erased", level=logging.WARNING, user_id=user_id)
