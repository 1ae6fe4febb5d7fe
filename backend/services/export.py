"""Exports: one project, or the whole account, as a JSON document with a stable shape.

An export needs projects, tasks and sync runs together, so it lives above those services:
export -> sync -> projects, and neither of those imports this module.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.models.common import iso_z, utcnow
from backend.models.project import Project, ProjectPublic
from backend.models.sync_run import SyncRun, SyncRunPublic
from backend.models.task import Task, TaskCompletion, TaskCompletionPublic, TaskPublic
from backend.models.user import User
from backend.services import labels as label_service
from backend.services import sync as sync_service
from backend.services.projects import get_project

PROJECT_EXPORT_FORMAT = "taskdeck.project-export/1"
ACCOUNT_EXPORT_FORMAT = "taskdeck.account-export/1"


async def run_history(session: AsyncSession, owner_id: str, project_id: int | None = None) -> list[SyncRun]:
    """The runs of every project of the owner (unpinned too), or of one, in one query.

    Project by project (by id, as the account export lists projects), each newest first."""
    query = (
        select(SyncRun)
        .join(Project, col(Project.id) == col(SyncRun.project_id))
        .where(SyncRun.user_id == owner_id, Project.user_id == owner_id)
    )
    if project_id is not None:
        query = query.where(SyncRun.project_id == project_id)
    query = query.order_by(col(SyncRun.project_id), *sync_service.NEWEST_FIRST)
    return list((await session.exec(query)).all())


def _run(run: SyncRun) -> dict[str, Any]:
    return SyncRunPublic.model_validate(run).model_dump(mode="json")


async def _tasks(session: AsyncSession, tasks: list[Task]) -> list[dict[str, Any]]:
    await label_service.attach(session, tasks)  # one query for every task's labels
    return [TaskPublic.model_validate(task).model_dump(mode="json") for task in tasks]


async def _completions(session: AsyncSession, tasks: list[Task]) -> list[dict[str, Any]]:
    """The completions of recurring `tasks`, task by task (by id), each oldest first: one query."""
    ids = [task.id for task in tasks]
    if not ids:
        return []
    query = (
        select(TaskCompletion)
        .where(col(TaskCompletion.task_id).in_(ids))
        .order_by(col(TaskCompletion.task_id), col(TaskCompletion.completed_at), col(TaskCompletion.id))
    )
    rows = (await session.exec(query)).all()
    return [TaskCompletionPublic.model_validate(row).model_dump(mode="json") for row in rows]


async def export_project(session: AsyncSession, owner_id: str, project_id: int) -> dict[str, Any]:
    """The project, its tasks and its sync history, in a stable shape for a JSON download."""
    project = await get_project(session, owner_id, project_id)
    tasks = (
        await session.exec(
            select(Task).where(Task.user_id == owner_id, Task.project_id == project_id).order_by(col(Task.id))
        )
    ).all()
    return {
        "format": PROJECT_EXPORT_FORMAT,
        "exported_at": iso_z(utcnow()),
        "project": ProjectPublic.model_validate(project).model_dump(mode="json"),
        "tasks": await _tasks(session, list(tasks)),
        "task_completions": await _completions(session, list(tasks)),
        "sync_runs": [_run(run) for run in await run_history(session, owner_id, project_id)],
    }


async def export_account(session: AsyncSession, user: User) -> dict[str, Any]:
    """Profile (never the password hash), tasks (with the completions of recurring ones), projects (unpinned
    too) and their sync history."""
    tasks = (await session.exec(select(Task).where(Task.user_id == user.id).order_by(col(Task.id)))).all()
    projects = (await session.exec(select(Project).where(Project.user_id == user.id).order_by(col(Project.id)))).all()
    runs = await run_history(session, user.id)
    return {
        "format": ACCOUNT_EXPORT_FORMAT,
        "exported_at": iso_z(utcnow()),
        "profile": {
            "user_id": user.id,
            "email": user.email,
            "full_name": user.full_name,
            "auth_provider": user.auth_provider,
            "is_active": user.is_active,
            "created_at": iso_z(user.created_at),
            "updated_at": iso_z(user.updated_at),
        },
        "tasks": await _tasks(session, list(tasks)),
        "task_completions": await _completions(session, list(tasks)),
        "projects": [ProjectPublic.model_validate(project).model_dump(mode="json") for project in projects],
        "sync_runs": [{"project_id": run.project_id, **_run(run)} for run in runs],
    }
