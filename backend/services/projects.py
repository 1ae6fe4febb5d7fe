"""Every query and rule about pinned projects: the 50-pin limit, re-pinning, ordering (exports: services/export.py)."""

from __future__ import annotations

from sqlalchemy import ColumnElement, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from backend.db import flush_unique, lock_user_row, save
from backend.errors import NotFound, PinLimitReached, ProjectAlreadyPinned, ValidationFailed
from backend.models.change import ChangeOp, ChangeType
from backend.models.common import utcnow
from backend.models.project import MAX_ACTIVE_PINS, Project, ProjectCreate, ProjectUpdate
from backend.services import changes


def _already_pinned() -> ProjectAlreadyPinned:
    return ProjectAlreadyPinned(field="github_repo_name")


def _pinned_of(owner_id: str) -> tuple[ColumnElement[bool], ...]:
    """The owner's pinned projects. An unpinned one is gone for every route (contract §9): reads, updates,
    sync runs, exports and task links all start from here; only a re-pin (and the account export) sees it."""
    return col(Project.user_id) == owner_id, col(Project.is_active).is_(True)


def _dashboard_order(owner_id: str) -> SelectOfScalar[Project]:
    return (
        select(Project)
        .where(*_pinned_of(owner_id))
        .order_by(col(Project.position), col(Project.pinned_at), col(Project.id))
    )


async def list_projects(session: AsyncSession, owner_id: str) -> list[Project]:
    """The owner's pins in dashboard order."""
    return list((await session.exec(_dashboard_order(owner_id))).all())


async def page_projects(session: AsyncSession, owner_id: str, limit: int, offset: int) -> tuple[list[Project], int]:
    """One page of the owner's pins in dashboard order, and how many there are in all."""
    total = (await session.exec(select(func.count()).select_from(Project).where(*_pinned_of(owner_id)))).one()
    page = (await session.exec(_dashboard_order(owner_id).limit(limit).offset(offset))).all()
    return list(page), int(total)


async def get_project(session: AsyncSession, owner_id: str, project_id: int, *, for_update: bool = False) -> Project:
    """The owner's pinned project, or NotFound (unpinned, someone else's or missing alike)."""
    query = select(Project).where(Project.id == project_id, *_pinned_of(owner_id))
    if for_update:
        query = query.with_for_update()
    project = (await session.exec(query)).first()
    if project is None:
        raise NotFound("Project not found")
    return project


async def lock_project(session: AsyncSession, owner_id: str, project_id: int) -> Project:
    """The owner's pinned project locked for a write, the owner's row locked first (the one lock order of every
    write: services/changes.py); or NotFound."""
    await lock_user_row(session, owner_id)
    return await get_project(session, owner_id, project_id, for_update=True)


async def _recorded(session: AsyncSession, owner_id: str, project: Project, op: ChangeOp = ChangeOp.UPSERT) -> Project:
    assert project.id is not None
    await changes.record(session, owner_id, ChangeType.PROJECT, [project.id], op)
    return project


async def ensure_project(session: AsyncSession, owner_id: str, project_id: int) -> None:
    """A task may only be linked to one of its owner's pinned projects."""
    query = select(Project.id).where(Project.id == project_id, *_pinned_of(owner_id))
    if (await session.exec(query)).first() is None:
        raise ValidationFailed("project_id: no such project", field="project_id")


async def pin_project(session: AsyncSession, owner_id: str, payload: ProjectCreate) -> Project:
    """Pin, or bring back an unpinned repository. At most 50 active pins, also under concurrency."""
    # Count-then-insert is only safe when this user's pins are serialised (STACK.md, "Races").
    await lock_user_row(session, owner_id)
    existing = (
        await session.exec(
            select(Project).where(
                Project.user_id == owner_id,
                func.lower(col(Project.github_repo_name)) == payload.github_repo_name.lower(),
            )
        )
    ).first()
    if existing is not None and existing.is_active:
        raise _already_pinned()
    active = (
        await session.exec(select(func.count(), func.max(col(Project.position))).where(*_pinned_of(owner_id)))
    ).one()
    count, last_position = int(active[0]), active[1]
    if count >= MAX_ACTIVE_PINS:
        raise PinLimitReached(f"At most {MAX_ACTIVE_PINS} projects can be pinned")
    position = payload.position if payload.position is not None else (last_position + 1 if count else 0)
    now = utcnow()
    fields = payload.model_dump(exclude_unset=True) | {
        "github_repo_name": payload.github_repo_name,
        "github_repo_url": payload.github_repo_url,
        "position": position,
    }
    if existing is not None:  # re-pin: the row (and its tasks and history) comes back
        for name, value in fields.items():
            setattr(existing, name, value)
        existing.is_active, existing.pinned_at, existing.last_updated = True, now, now
        project = existing
    else:
        project = Project.model_validate(fields, update={"user_id": owner_id, "pinned_at": now, "last_updated": now})
    await flush_unique(session, project, _already_pinned)
    return await _recorded(session, owner_id, project)


async def update_project(session: AsyncSession, owner_id: str, project_id: int, payload: ProjectUpdate) -> Project:
    project = await lock_project(session, owner_id, project_id)
    project = await save(session, project, payload.model_dump(exclude_unset=True) | {"last_updated": utcnow()})
    return await _recorded(session, owner_id, project)


async def unpin_project(session: AsyncSession, owner_id: str, project_id: int) -> None:
    """Unpin keeps the row, so its tasks and sync history survive and a re-pin brings it back. For the change
    feed an unpin is a delete."""
    project = await lock_project(session, owner_id, project_id)
    project = await save(session, project, {"is_active": False, "last_updated": utcnow()})
    await _recorded(session, owner_id, project, ChangeOp.DELETE)


async def reorder_projects(session: AsyncSession, owner_id: str, project_ids: list[int]) -> list[Project]:
    """Set the dashboard order: `project_ids` must list every active pin exactly once."""
    await lock_user_row(session, owner_id)
    projects = await list_projects(session, owner_id)
    if sorted(project_ids) != sorted(p.id for p in projects if p.id is not None):
        raise ValidationFailed("project_ids must list each pinned project exactly once", field="project_ids")
    by_id = {p.id: p for p in projects}
    now = utcnow()
    moved: list[int] = []
    for position, project_id in enumerate(project_ids):
        project = by_id[project_id]
        if project.position != position:
            project.position, project.last_updated = position, now
            session.add(project)
            moved.append(project_id)
    await session.flush()
    await changes.record(session, owner_id, ChangeType.PROJECT, moved)
    return [by_id[project_id] for project_id in project_ids]
