"""Every query about sync runs: queue, read, list, record progress, finish, leases and takeover.

An active run belongs to the instance holding its lease (`lease_owner`, `lease_expires_at`): the
runner's writes are conditional on the run still being active **and** still this instance's, so a
run that was failed, or taken over by another instance after this one stalled past its lease, is
never brought back and never written by the old owner. Lease times are the database's clock on
PostgreSQL (`now()`: instances' clocks may differ) and this machine's on SQLite (one machine).
The exports' history query is in backend/services/export.py (in the same NEWEST_FIRST order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, func, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from backend.db import flush_unique, lock_user_row
from backend.errors import Conflict, NotFound
from backend.models.change import ChangeOp, ChangeType
from backend.models.common import iso_z, utcnow
from backend.models.project import Project
from backend.models.sync_run import ACTIVE_STATUSES, StageStatus, SyncRun, SyncStatus
from backend.services import changes
from backend.services.projects import get_project

# Newest first; the id breaks ties between runs created in the same instant.
NEWEST_FIRST = (col(SyncRun.created_at).desc(), col(SyncRun.id).desc())


# How many runs one sweep claims at most (the rest wait for the next sweep).
TAKEOVER_BATCH = 20


@dataclass(frozen=True, slots=True)
class Lease:
    """This instance's claim on the runs it executes: its id, and how long a claim lasts unrenewed."""

    owner: str
    seconds: float


@dataclass(slots=True)
class Takeover:
    """What one sweep claimed: runs to resume here, and runs failed because they were taken over too often."""

    resumed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def _now(session: AsyncSession) -> Any:
    """The lease clock: PostgreSQL's now() (one clock for every instance); on SQLite this machine's."""
    if session.get_bind().dialect.name == "postgresql":
        return func.now()
    return utcnow()


def _lease_values(session: AsyncSession, lease: Lease) -> dict[str, Any]:
    expires: datetime | ColumnElement[Any] = _now(session) + timedelta(seconds=lease.seconds)
    return {"lease_owner": lease.owner, "lease_expires_at": expires}


def _expired(session: AsyncSession) -> ColumnElement[bool]:
    expires = col(SyncRun.lease_expires_at)
    return or_(col(SyncRun.lease_owner).is_(None), expires.is_(None), expires < _now(session))


def _active() -> ColumnElement[bool]:
    return col(SyncRun.status).in_(ACTIVE_STATUSES)


def _held(run_id: int, owner: str) -> tuple[ColumnElement[bool], ...]:
    return col(SyncRun.id) == run_id, col(SyncRun.lease_owner) == owner


async def _update(session: AsyncSession, conditions: tuple[ColumnElement[bool], ...], values: dict[str, Any]) -> int:
    statement = update(SyncRun).where(*conditions).values(**values).execution_options(synchronize_session=False)
    result: CursorResult[Any] = await session.exec(statement)
    return result.rowcount


def stage_record(name: str) -> dict[str, Any]:
    return {"name": name, "status": StageStatus.PENDING.value, "started_at": None, "finished_at": None, "error": None}


async def _active_run(session: AsyncSession, project_id: int) -> SyncRun | None:
    query = select(SyncRun).where(SyncRun.project_id == project_id, col(SyncRun.status).in_(ACTIVE_STATUSES))
    return (await session.exec(query)).first()


async def start_sync(
    session: AsyncSession, owner_id: str, project_id: int, stage_names: list[str], lease: Lease
) -> tuple[SyncRun, bool]:
    """Queue a run for a pinned project, leased to this instance: (run, True); or (the project's active run, False).

    Unpinning does not stop a run already queued or running: it finishes on the (hidden) project,
    and a re-pin shows its result and history."""
    await get_project(session, owner_id, project_id)
    existing = await _active_run(session, project_id)
    if existing is not None:
        return existing, False
    run = SyncRun.model_validate(
        {"project_id": project_id, "stages": [stage_record(name) for name in stage_names]},
        update={"user_id": owner_id, "status": SyncStatus.QUEUED},
    )
    # A Python time even on PostgreSQL (a new row cannot take an SQL expression before its flush):
    # the first heartbeat, a third of a lease later, moves it onto the database's clock.
    run.lease_owner, run.lease_expires_at = lease.owner, utcnow() + timedelta(seconds=lease.seconds)
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
    """One run of a pinned project (an unpinned project's runs are NotFound until it is pinned again)."""
    await get_project(session, owner_id, project_id)
    query = select(SyncRun).where(SyncRun.id == run_id, SyncRun.project_id == project_id, SyncRun.user_id == owner_id)
    run = (await session.exec(query)).first()
    if run is None:
        raise NotFound("Sync run not found")
    return run


async def list_runs(
    session: AsyncSession, owner_id: str, project_id: int, limit: int, offset: int
) -> tuple[list[SyncRun], int]:
    """The pinned project's runs, newest first (an unpinned or someone else's project is NotFound)."""
    await get_project(session, owner_id, project_id)
    count = select(func.count()).select_from(SyncRun).where(*_of_project(owner_id, project_id))
    total = (await session.exec(count)).one()
    runs = (await session.exec(_history(owner_id, project_id).limit(limit).offset(offset))).all()
    return list(runs), int(total)


def _of_project(owner_id: str, project_id: int) -> tuple[Any, ...]:
    return (SyncRun.project_id == project_id, SyncRun.user_id == owner_id)


def _history(owner_id: str, project_id: int) -> SelectOfScalar[SyncRun]:
    return select(SyncRun).where(*_of_project(owner_id, project_id)).order_by(*NEWEST_FIRST)


async def begin_run(session: AsyncSession, run_id: int, lease: Lease) -> tuple[SyncRun, Project] | None:
    """queued -> running, or a running run this instance took over: the run to execute and its project.

    None when the run is finished, gone, or not this instance's (nothing to do)."""
    queued = (*_held(run_id, lease.owner), col(SyncRun.status) == SyncStatus.QUEUED)
    await _update(
        session, queued, {"status": SyncStatus.RUNNING, "started_at": utcnow(), **_lease_values(session, lease)}
    )
    query = select(SyncRun).where(*_held(run_id, lease.owner), col(SyncRun.status) == SyncStatus.RUNNING)
    run = (await session.exec(query.execution_options(populate_existing=True))).first()
    if run is None:
        return None
    project = await session.get(Project, run.project_id)
    if project is None:
        return None
    return run, project


async def _update_running(session: AsyncSession, run_id: int, owner: str, values: dict[str, Any]) -> bool:
    return await _update(session, (*_held(run_id, owner), col(SyncRun.status) == SyncStatus.RUNNING), values) == 1


async def record_progress(session: AsyncSession, run_id: int, owner: str, **values: Any) -> bool:
    """Persist the current stage, progress, stage records and results. False: the run is no longer ours."""
    return await _update_running(session, run_id, owner, values)


def _failed(stage: str | None, message: str) -> dict[str, Any]:
    return {"status": SyncStatus.FAILED, "error": {"stage": stage, "message": message}, "finished_at": utcnow()}


async def fail_run(
    session: AsyncSession, run_id: int, owner: str, stage: str | None, message: str, **values: Any
) -> bool:
    return await record_progress(session, run_id, owner, **values, **_failed(stage, message))


async def complete_run(
    session: AsyncSession, run_id: int, owner: str, project_id: int, repo_metadata: dict[str, Any], **values: Any
) -> bool:
    """The run succeeds and the project gets its new metadata, in one transaction, or neither happens."""
    now = utcnow()
    values |= {"status": SyncStatus.SUCCEEDED, "progress": 100, "current_stage": None, "finished_at": now}
    # The project's owner's row first (the lock order of every write: services/changes.py).
    found = (
        await session.exec(select(Project.user_id, Project.is_active).where(col(Project.id) == project_id))
    ).first()
    user_id, pinned = found if found is not None else (None, False)
    if user_id is not None:
        await lock_user_row(session, user_id)
    if not await _update_running(session, run_id, owner, values):
        return False  # nothing was written
    await session.exec(
        update(Project)
        .where(col(Project.id) == project_id)
        # The row version moves too, so ETags held by clients stop matching.
        .values(repo_metadata=repo_metadata, last_synced_at=now, last_updated=now, version=col(Project.version) + 1)
    )
    if user_id is not None:
        # An unpinned project is a tombstone in the feed: a sync finishing after the unpin keeps it one.
        op = ChangeOp.UPSERT if pinned else ChangeOp.DELETE
        await changes.record(session, user_id, ChangeType.PROJECT, [project_id], op)
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


async def stop_run(session: AsyncSession, run_id: int, owner: str, reason: str) -> bool:
    """Fail a queued or running run of this instance from outside its stages (shutdown)."""
    query = select(SyncRun).where(*_held(run_id, owner), _active()).execution_options(populate_existing=True)
    run = (await session.exec(query)).first()
    if run is None:
        return False
    return await _update(session, (*_held(run_id, owner), _active()), _interrupted(run, reason)) == 1


def _interrupted(run: SyncRun, reason: str) -> dict[str, Any]:
    return {**_failed(run.current_stage, reason), "stages": interrupted_stages(run.stages, reason)}


async def renew_leases(session: AsyncSession, lease: Lease, run_ids: list[int]) -> list[int]:
    """The heartbeat: extend this instance's lease on the runs it executes; the ids still held."""
    if not run_ids:
        return []
    held = (col(SyncRun.id).in_(run_ids), col(SyncRun.lease_owner) == lease.owner, _active())
    await _update(session, held, _lease_values(session, lease))
    return [run_id for run_id in (await session.exec(select(SyncRun.id).where(*held))).all() if run_id is not None]


async def take_over_expired(session: AsyncSession, lease: Lease, max_takeovers: int, reason: str) -> Takeover:
    """Claim the active runs whose lease expired (their instance died): each is resumed here, or failed
    with `reason` once it was taken over `max_takeovers` times (a run that keeps killing its instance).

    PostgreSQL: the candidates are locked with FOR UPDATE SKIP LOCKED, so instances sweeping at once
    never claim the same run (one gets it, the others skip it). Both databases: the claim is an UPDATE
    conditional on the lease still being expired, counted (SQLite has one writer at a time anyway)."""
    query = (
        select(SyncRun)
        .where(_active(), _expired(session))
        .order_by(col(SyncRun.id))
        .limit(TAKEOVER_BATCH)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    claimed = Takeover()
    for run in (await session.exec(query)).all():
        assert run.id is not None
        values = _lease_values(session, lease) | {"lease_takeovers": run.lease_takeovers + 1}
        give_up = run.lease_takeovers >= max_takeovers
        if give_up:
            values |= _interrupted(run, reason)
        if await _update(session, (col(SyncRun.id) == run.id, _active(), _expired(session)), values) == 1:
            (claimed.failed if give_up else claimed.resumed).append(run.id)
    return claimed
