"""Batches (specs/api/batch.md): commands applied in order, each on its own, each command id applied once.

Each command runs in a SAVEPOINT of the request's transaction and calls the service the single route calls (a run
of consecutive field edits is applied together, to the same effect: services/batch_edits.py); a command that
fails (an AppError, or its `data` failing its schema) is rolled back to its savepoint and answers the error the
single route would, and the next command goes on. Every command id of the batch is claimed first,
in one statement (a unique row per user and id, so it holds across instances and concurrent retries of one
batch); the claim and the command's recorded result are part of the request's transaction, so a command is
applied and recorded together, or neither. A claimed id answers its recorded result for 24 h.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from sqlalchemy import bindparam
from sqlalchemy import update as update_rows
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db import lock_user_row
from backend.errors import (
    AppError,
    IdempotencyKeyReused,
    NotFound,
    ValidationFailed,
    error_body,
    validation_failed,
)
from backend.models.batch import CREATES, BatchCommand, Command, InvalidData
from backend.models.common import utcnow
from backend.models.project import ProjectPublic
from backend.models.task import TaskPublic
from backend.services import changes
from backend.services import projects as project_service
from backend.services import tasks as task_service
from backend.services.batch_edits import Edit, apply_edits, is_field_edit, version_changed

log = logging.getLogger("taskdeck.batch")

TTL = timedelta(hours=24)
Kind = Literal["task", "project"]
_TABLE = BatchCommand.__table__  # type: ignore[attr-defined]


def fingerprint(raw_command: Mapping[str, Any]) -> str:
    """What makes a command "the same" when its id comes again: everything sent but the id, as canonical JSON."""
    body = {name: value for name, value in raw_command.items() if name != "id"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class Outcome:
    """A batch's answer (`results`, `temp_ids`). Its changes reach live streams through the change feed (the
    commit rings them: services/changes.record)."""

    results: list[dict[str, Any]] = field(default_factory=list)
    temp_ids: dict[str, int] = field(default_factory=dict)


@dataclass
class _Batch:
    session: AsyncSession
    owner_id: str
    zone_header: str | None
    outcome: Outcome = field(default_factory=Outcome)
    kinds: dict[str, Kind] = field(default_factory=dict)  # each temp id's kind of row

    def ref(self, value: int | str, kind: Kind) -> int | None:
        """A row id as sent, or the id of the row an earlier command created under that temp id (None: none)."""
        if isinstance(value, int):
            return value
        if self.kinds.get(value) != kind:
            return None
        return self.outcome.temp_ids[value]

    def target(self, command: Any, kind: Kind) -> int:
        target = self.ref(command.target, kind)
        if target is None:
            raise NotFound(f"{kind.capitalize()} not found")
        return target

    def data_refs(self, data: BaseModel, kinds: dict[str, Kind]) -> Any:
        """`data` with the temp ids among `kinds`' fields (sent ones only) replaced by the rows' ids."""
        resolved: dict[str, int] = {}
        for name, kind in kinds.items():
            value = getattr(data, name)
            if name in data.model_fields_set and isinstance(value, str):
                row_id = self.ref(value, kind)
                if row_id is None:
                    raise ValidationFailed(
                        f"{name}: no such {kind} (temp id {value!r} names no {kind} created earlier in this batch)",
                        field=name,
                    )
                resolved[name] = row_id
        return data.model_copy(update=resolved) if resolved else data

    async def unchanged(self, command: Any, kind: Kind, row_id: int) -> None:
        """With `if_version`: the row, locked as the write will lock it, must still have that version."""
        if command.if_version is None:
            return
        # The owner's row first, then the item's: the one lock order of every write (services/changes.py).
        if kind == "task":
            row: Any = await task_service.lock_task(self.session, self.owner_id, row_id)
        else:
            row = await project_service.lock_project(self.session, self.owner_id, row_id)
        if row.version != command.if_version:
            raise version_changed(kind, command.if_version, row.version)

    async def apply(self, command: Any) -> tuple[int, dict[str, Any] | None]:
        """Run one command: its status and item. Raises the AppError the single route would answer."""
        data: Any = getattr(command, "data", None)
        if isinstance(data, InvalidData):
            raise validation_failed(data.errors)
        op: str = command.op
        session, owner = self.session, self.owner_id
        if op in CREATES:
            temp_id = command.temp_id
            if temp_id is not None and temp_id in self.kinds:
                raise ValidationFailed("temp_id: already names a row created earlier in this batch", field="temp_id")
            if op == "task.create":
                payload = self.data_refs(data, {"parent_id": "task", "project_id": "project"})
                task = await task_service.create_task(session, owner, payload, self.zone_header)
                item = self.public(TaskPublic, task)
            else:
                project = await project_service.pin_project(session, owner, data)
                item = self.public(ProjectPublic, project)
            if temp_id is not None:
                self.kinds[temp_id] = "task" if op == "task.create" else "project"
                self.outcome.temp_ids[temp_id] = item["id"]
            return 201, item
        kind: Kind = "task" if op.startswith("task.") else "project"
        target = self.target(command, kind)
        await self.unchanged(command, kind, target)
        if op == "task.update":
            payload = self.data_refs(data, {"parent_id": "task", "project_id": "project"})
            task = await task_service.update_task(session, owner, target, payload, self.zone_header)
        elif op in ("task.complete", "task.reopen"):
            task = await task_service.set_completed(session, owner, target, op == "task.complete")
        elif op == "task.move":
            payload = self.data_refs(data, {"after_id": "task", "parent_id": "task", "project_id": "project"})
            task = await task_service.move_task(session, owner, target, payload)
        elif op == "task.delete":
            await task_service.delete_task(session, owner, target)
            return 200, None
        elif op == "project.update":
            project = await project_service.update_project(session, owner, target, data)
            return 200, self.public(ProjectPublic, project)
        else:  # project.unpin
            await project_service.unpin_project(session, owner, target)
            return 200, None
        return 200, self.public(TaskPublic, task)

    def public(self, shape: type[BaseModel], row: Any) -> dict[str, Any]:
        """The row as the single GET answers it (now: a later command may change it)."""
        return shape.model_validate(row).model_dump(mode="json")

    async def run(self, command: Any) -> dict[str, Any]:
        """One new command in its savepoint: its result, success or failure."""
        recorded = changes.mark(self.session)
        try:
            async with self.session.begin_nested():
                status, item = await self.apply(command)
        except (AppError, ValidationError) as exc:
            changes.forget(self.session, recorded)  # its changes went back with its savepoint
            return _failed(str(command.id), exc if isinstance(exc, AppError) else validation_failed(exc.errors()))
        return {"id": str(command.id), "status": status, "item": item, "error": None}

    def replayed(self, command: Any, result: dict[str, Any]) -> dict[str, Any]:
        """A command id applied before: its recorded result; a create's temp id names its row again."""
        temp_id = getattr(command, "temp_id", None)
        if temp_id is not None and result["item"] is not None and temp_id not in self.kinds:
            self.kinds[temp_id] = "task" if command.op == "task.create" else "project"
            self.outcome.temp_ids[temp_id] = result["item"]["id"]
        return result


async def apply_batch(
    session: AsyncSession, owner_id: str, commands: list[Command], hashes: list[str], zone_header: str | None
) -> Outcome:
    """Apply `commands` in order (`hashes`: each one's fingerprint); answer their results."""
    # The owner's row first, as every write takes it (services/changes.py): the claim's INSERT below share-locks
    # it through its foreign key, and two batches upgrading that share lock for their first command deadlocked.
    await lock_user_row(session, owner_id)
    # The commands' changes are written together at the end: one seq per item changed, three statements in all.
    changes.defer(session)
    batch = _Batch(session, owner_id, zone_header)
    ids = [str(command.id) for command in commands]
    first_hashes: dict[str, str] = {}
    for command_id, digest in zip(ids, hashes, strict=True):
        first_hashes.setdefault(command_id, digest)  # an id twice in one batch: the second is its replay
    recorded = await _claim(session, owner_id, first_hashes)
    done: dict[str, dict[str, Any]] = {}  # this batch's results, by command id
    run: list[tuple[str, str, Edit]] = []  # a run of new field edits, applied together (services/batch_edits.py)

    async def end_run() -> None:
        outcomes = await apply_edits(session, owner_id, zone_header, [edit for _, _, edit in run])
        for (command_id, digest, _), outcome in zip(run, outcomes, strict=True):
            if isinstance(outcome, AppError):
                result = _failed(command_id, outcome)
            else:
                result = {"id": command_id, "status": outcome[0], "item": outcome[1], "error": None}
            done[command_id] = result
            recorded[command_id] = (digest, result)
            batch.outcome.results.append(result)
        run.clear()

    for command, command_id, digest in zip(commands, ids, hashes, strict=True):
        first = recorded.get(command_id)
        if first is None and is_field_edit(command) and all(command_id != queued for queued, _, _ in run):
            run.append((command_id, digest, Edit(command, batch.ref(command.target, "task"))))
            continue
        if run:
            await end_run()
            first = recorded.get(command_id)  # an id twice in the run: the second is its replay
        if first is not None and first[0] != digest:
            reused = IdempotencyKeyReused("This command id was already used with a different command", field="id")
            result = _failed(command_id, reused)
        elif first is not None and first[1] is not None:
            result = batch.replayed(command, first[1])
        else:
            result = await batch.run(command)
            done[command_id] = result
            recorded[command_id] = (digest, result)
        batch.outcome.results.append(result)
    if run:
        await end_run()
    await _record(session, owner_id, done)
    await changes.flush(session)
    return batch.outcome


def _failed(command_id: str, error: AppError) -> dict[str, Any]:
    """A command's result when it failed: the error its single route would answer."""
    return {"id": command_id, "status": error.status_code, "item": None, "error": error_body(error)}


async def _claim(
    session: AsyncSession, owner_id: str, hashes: dict[str, str]
) -> dict[str, tuple[str, dict[str, Any] | None]]:
    """Claim the batch's command ids not yet recorded (one INSERT; in id order, so two retries of one batch never
    deadlock); answer those recorded before, by id: `(fingerprint, result)`. An id another request has claimed
    but not committed waits for it (PostgreSQL's unique index; SQLite serialises every writer)."""
    now = utcnow()
    ids = sorted(hashes)
    # An expired record is forgotten: the id is free again (services/batch.purge_expired removes the rest).
    await session.exec(
        delete(BatchCommand).where(
            col(BatchCommand.user_id) == owner_id,
            col(BatchCommand.command_id).in_(ids),
            col(BatchCommand.expires_at) <= now,
        )
    )
    connection = await session.connection()
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    rows = [
        {"user_id": owner_id, "command_id": command_id, "request_hash": hashes[command_id], "result": ""}
        | {"created_at": now, "expires_at": now + TTL}
        for command_id in ids
    ]
    statement = insert(_TABLE).values(rows).on_conflict_do_nothing().returning(_TABLE.c.command_id)
    claimed = set((await connection.execute(statement)).scalars())
    taken = [command_id for command_id in ids if command_id not in claimed]
    if not taken:
        return {}
    query = select(BatchCommand.command_id, BatchCommand.request_hash, BatchCommand.result).where(
        col(BatchCommand.user_id) == owner_id, col(BatchCommand.command_id).in_(taken)
    )
    found = (await session.exec(query)).all()
    return {command_id: (digest, json.loads(result) if result else None) for command_id, digest, result in found}


async def _record(session: AsyncSession, owner_id: str, results: dict[str, dict[str, Any]]) -> None:
    """Each applied command's result onto its claim (one statement, executed for every row)."""
    if not results:
        return
    statement = (
        update_rows(_TABLE)
        .where(_TABLE.c.user_id == bindparam("owner"), _TABLE.c.command_id == bindparam("command"))
        .values(result=bindparam("outcome"))
    )
    params = [
        {"owner": owner_id, "command": command_id, "outcome": json.dumps(result, separators=(",", ":"))}
        for command_id, result in results.items()
    ]
    await (await session.connection()).execute(statement, params)


async def purge_expired(session: AsyncSession) -> int:
    """Every user's records older than 24 h."""
    result = await session.exec(delete(BatchCommand).where(col(BatchCommand.expires_at) <= utcnow()))
    return int(result.rowcount)
