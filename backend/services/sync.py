"""Every query about sync runs: queue, read, list, record progress, finish, recover after a crash.

The runner's writes are conditional on the run still being `running`: a run that start-up
recovery (or shutdown) has already failed is never brought back, and never writes the project.
The exports' history query is in backend/services/export.py (in the same NEWEST_FIRST order).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import CursorResult, func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from backend.db import flush_unique
from backend.errors import Conflict, NotFound
from backend.models.common import iso_z, utcnow
from backend.models.project import Project
from backend.models.sync_run import ACTIVE_STATUSES, StageStatus, SyncRun, SyncStatus
from backend.services.projects import get_project

# Newest first; the id breaks ties between runs created in the same instant.
NEWEST_FIRST = (col(SyncRun.created_at).desc(), col(SyncRun.id).desc())


def stage_record(name: str) -> dict[str, Any]:
    return {"name": name, "status": StageStatus.PENDING.value, "started_at": None, "finished_at": None, "error": None}


async def _active_run(session: AsyncSession, project_id: int) -> SyncRun | None:
    query = select(SyncRun).where(SyncRun.project_id == project_id, col(SyncRun.status).in_(ACTIVE_STATUSES))
    return (await session.exec(query)).first()


async def start_sync(
    session: AsyncSession, owner_id: str, project_id: int, stage_names: list[str]
) -> tuple[SyncRun, bool]:
    """Queue a run for a pinned project: (run, True); or (the project's queued/running run, False)."""
    await get_project(session, owner_id, project_id, active=True)
    existing = await _active_run(session, project_id)
    if existing is not None:
        return existing, False
    run = SyncRun.model_validate(
        {"project_id": project_id, "stages": [stage_record(name) for name in stage_names]},
        update={"user_id": owner_id, "status": SyncStatus.QUEUED},
    )
    try:
        await flush_unique(session, run, lambda: Conflict("A sync run for this project just finished; try again"))
    except Conflict:
        # Another request queued one between our read and our insert (the partial unique index said no).
        existing = await _active_run(session, project_id)
        if existing is None:
            raise
        return existing, False
    return run, True


async def get_run(session: AsyncSession, owner_id: str, project_id: int, run_id: int) -> SyncRun:
    query = select(SyncRun).where(SyncRun.id == run_id, SyncRun.project_id == project_id, SyncRun.user_id == owner_id)
    run = (await session.exec(query)).first()
    if run is None:
        raise NotFound("Sync run not found")
    return run


async def list_runs(
    session: AsyncSession, owner_id: str, project_id: int, limit: int, offset: int
) -> tuple[list[SyncRun], int]:
    """The project's runs, newest first (pinned or unpinned project; someone else's is NotFound)."""
    await get_project(session, owner_id, project_id)
    count = select(func.count()).select_from(SyncRun).where(*_of_project(owner_id, project_id))
    total = (await session.exec(count)).one()
    runs = (await session.exec(_history(owner_id, project_id).limit(limit).offset(offset))).all()
    return list(runs), int(total)


def _of_project(owner_id: str, project_id: int) -> tuple[Any, ...]:
    return (SyncRun.project_id == project_id, SyncRun.user_id == owner_id)


def _history(owner_id: str, project_id: int) -> SelectOfScalar[SyncRun]:
    return select(SyncRun).where(*_of_project(owner_id, project_id)).order_by(*NEWEST_FIRST)


async def begin_run(session: AsyncSession, run_id: int) -> tuple[SyncRun, Project] | None:
    """queued -> running. None when the run is gone or no longer queued (nothing to do)."""
    run = await session.get(SyncRun, run_id)
    if run is None or run.status != SyncStatus.QUEUED:
        return None
    project = await session.get(Project, run.project_id)
    if project is None:
        return None
    run.status, run.started_at = SyncStatus.RUNNING, utcnow()
    session.add(run)
    await session.flush()
    return run, project


async def _update_running(session: AsyncSession, run_id: int, values: dict[str, Any]) -> bool:
    statement = update(SyncRun).where(col(SyncRun.id) == run_id, col(SyncRun.status) == SyncStatus.RUNNING)
    result: CursorResult[Any] = await session.exec(statement.values(**values))
    return result.rowcount == 1


async def record_progress(session: AsyncSession, run_id: int, **values: Any) -> bool:
    """Persist the current stage, progress, stage records and results. False: the run is no longer ours."""
    return await _update_running(session, run_id, values)


async def fail_run(session: AsyncSession, run_id: int, stage: str | None, message: str, **values: Any) -> bool:
    values |= {"status": SyncStatus.FAILED, "error": {"stage": stage, "message": message}, "finished_at": utcnow()}
    return await record_progress(session, run_id, **values)


async def complete_run(
    session: AsyncSession, run_id: int, project_id: int, repo_metadata: dict[str, Any], **values: Any
) -> bool:
    """The run succeeds and the project gets its new metadata, in one transaction, or neither happens."""
    now = utcnow()
    values |= {"status": SyncStatus.SUCCEEDED, "progress": 100, "current_stage": None, "finished_at": now}
    if not await _update_running(session, run_id, values):
        return False  # nothing was written
    await session.exec(
        update(Project)
        .where(col(Project.id) == project_id)
        # The row version moves too, so ETags held by clients stop matching.
        .values(repo_metadata=repo_metadata, last_synced_at=now, last_updated=now, version=col(Project.version) + 1)
    )
    return True


def interrupted_stages(stages: list[dict[str, Any]], reason: str) -> list[dict[str, Any]]:
    """The stage records of a run stopped from outside: the running stage failed, the rest skipped."""
    now = iso_z(utcnow())
    records = []
    for record in stages:
        if record.get("status") == StageStatus.RUNNING:
            record = {**record, "status": StageStatus.FAILED.value, "finished_at": now, "error": reason}
        elif record.get("status") == StageStatus.PENDING:
            record = {**record, "status": StageStatus.SKIPPED.value}
        records.append(record)
    return records


async def stop_run(session: AsyncSession, run_id: int, reason: str) -> bool:
    """Fail a queued or running run from outside its stages (shutdown)."""
    run = await session.get(SyncRun, run_id)
    if run is None or run.status not in ACTIVE_STATUSES:
        return False
    _mark_interrupted(run, reason)
    await session.flush()
    return True


def _mark_interrupted(run: SyncRun, reason: str) -> None:
    run.status, run.finished_at = SyncStatus.FAILED, utcnow()
    run.error = {"stage": run.current_stage, "message": reason}
    run.stages = interrupted_stages(run.stages, reason)


async def recover_interrupted(session: AsyncSession, reason: str) -> list[int]:
    """Fail every run a stopped process left queued or running; their ids."""
    runs = (await session.exec(select(SyncRun).where(col(SyncRun.status).in_(ACTIVE_STATUSES)))).all()
    for run in runs:
        _mark_interrupted(run, reason)
        session.add(run)
    await session.flush()
    return [run.id for run in runs if run.id is not None]
