"""A run of field edits in a batch, written set-based (specs/api/batch.md, "Runs of field edits").

A field edit is a `task.update` that changes only a task's own fields (`FIELDS`: no completion, labels, parent or
project, so nothing beyond the task's row can change and nothing can fail once the command is checked). Run one
by one, each cost a savepoint, the locking read, the ORM flush of its UPDATE and the savepoint's release: about
4 ms of CPU per command, 400 ms for a batch of 100 (specs/performance.md, "Batches set-based"). A run of
consecutive field edits is applied as the single route would apply each, in order, but with its rows read and
locked in one statement, every check made in memory against the row as the run's earlier commands left it, and
the rows written in one executemany UPDATE: 2 statements for the run instead of about 4 per command.

A command that fails (its target missing, a stale `if_version`, a schedule the rules refuse) answers the error its
single route would, in the same precedence (not found, then the version, then the fields), and writes nothing,
as its rolled-back savepoint would. Each successful command records its change in the batch's deferred feed
records, in command order, as `update_task` would.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace
from typing import Any, TypeGuard

from sqlalchemy import bindparam
from sqlalchemy import select as rows_of
from sqlalchemy import update as update_rows
from sqlalchemy.orm.util import identity_key
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.errors import AppError, NotFound, PreconditionFailed
from backend.models.batch import Command, TaskUpdateCommand
from backend.models.change import ChangeType
from backend.models.common import utcnow
from backend.models.task import Task, TaskPublic, TaskUpdate
from backend.services import changes as change_log
from backend.services import labels as label_service
from backend.services import recurring
from backend.services.tasks import TASKS, public_columns

# The fields a field edit may send: each changes the task's row only.
FIELDS = frozenset({"title", "description", "priority", "due_date", "due_timezone", "recurrence", "due_string"})
_NAMES, _COLUMNS = public_columns()
# Read besides the public columns: what `recurring.schedule` may change.
_EXTRA = ("recurrence_start",)


def is_field_edit(command: Command) -> TypeGuard[TaskUpdateCommand]:
    """A `task.update` whose (valid) data sends only `FIELDS`."""
    data = getattr(command, "data", None)
    return command.op == "task.update" and isinstance(data, TaskUpdate) and data.model_fields_set <= FIELDS


@dataclass
class Edit:
    """One field edit of the run: its command, and its target's row id (None: a temp id naming no task)."""

    command: Any
    target: int | None


def version_changed(kind: str, sent: int, current: int) -> PreconditionFailed:
    """A command's `if_version` that its row no longer has (every batch command's 412)."""
    return PreconditionFailed(
        f"The {kind} changed since you read it: if_version {sent}, its version is now {current}; read it again",
        field="if_version",
    )


Result = tuple[int, dict[str, Any]] | AppError


async def apply_edits(session: AsyncSession, owner_id: str, zone_header: str | None, edits: list[Edit]) -> list[Result]:
    """Apply the run `edits` in order (the owner's row already locked by the batch): each one's `(status, item)`
    or the AppError its single route would answer."""
    connection = await session.connection()
    postgresql = connection.dialect.name == "postgresql"
    targets = sorted({edit.target for edit in edits if edit.target is not None})
    rows: dict[int, dict[str, Any]] = {}
    if targets:
        found = (await connection.execute(_locking_read(postgresql), {"owner_id": owner_id, "ids": targets})).all()
        width = len(_NAMES) + len(_EXTRA)
        for row in found:
            values = dict(zip((*_NAMES, *_EXTRA), row[:width], strict=True))
            values["labels"] = (row[width] or []) if postgresql else []
            rows[values["id"]] = values
        if not postgresql:
            names = await label_service.names_by_task(session, list(rows))
            for task_id, values in rows.items():
                values["labels"] = names.get(task_id, [])
    results: list[Result] = []
    written: dict[int, set[str]] = {}  # each task written: the columns its commands changed
    for edit in edits:
        try:
            results.append((200, _apply(rows, edit, zone_header, written)))
        except AppError as exc:
            results.append(exc)
            continue
        assert edit.target is not None
        await change_log.record(session, owner_id, ChangeType.TASK, [edit.target])  # deferred: in memory
    await _write(session, owner_id, rows, written)
    return results


def _apply(rows: dict[int, dict[str, Any]], edit: Edit, zone_header: str | None, written: dict[int, set[str]]) -> Any:
    """One command on its row (in memory): the item it answers. Checks in `update_task`'s order."""
    command = edit.command
    row = rows.get(edit.target) if edit.target is not None else None
    if row is None:
        raise NotFound("Task not found")
    if command.if_version is not None and row["version"] != command.if_version:
        raise version_changed("task", command.if_version, row["version"])
    now = utcnow()
    # `schedule` reads the task's schedule fields as attributes: the row as the run's earlier commands left it.
    current: Any = SimpleNamespace(**row)
    changed = recurring.schedule(current, command.data.model_dump(exclude_unset=True), zone_header, now)
    changed |= {"updated_at": now, "version": row["version"] + 1}
    row.update(changed)
    written.setdefault(row["id"], set()).update(changed)
    return TaskPublic.model_validate(row).model_dump(mode="json")


Rows = dict[int, dict[str, Any]]  # task id -> its values


async def _write(session: AsyncSession, owner_id: str, rows: Rows, written: dict[int, set[str]]) -> None:
    """Each written row's final values, one executemany UPDATE per set of changed columns (one, as a rule); the
    session's loaded copies of them expired (an earlier command of the batch may have loaded one: a later one
    reads it again)."""
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for task_id, columns in written.items():
        row = rows[task_id]
        groups.setdefault(frozenset(columns), []).append(
            {"w_id": task_id, "w_owner": owner_id} | {f"w_{name}": row[name] for name in columns}
        )
    connection = await session.connection()
    for changed, params in groups.items():
        await connection.execute(_update(tuple(sorted(changed))), params)
    loaded = session.sync_session.identity_map
    for task_id in written:
        task = loaded.get(identity_key(Task, task_id))
        if task is not None:
            session.expire(task)


@lru_cache(maxsize=2)
def _locking_read(postgresql: bool) -> Any:
    """The run's tasks of the owner (`ids`), locked as `lock_task` locks one (FOR NO KEY UPDATE, in id order), with
    their label names on PostgreSQL (SQLite: one more query)."""
    columns = [*_COLUMNS, *(TASKS.c[name] for name in _EXTRA)]
    if postgresql:
        columns.append(label_service.names_of(TASKS.c.id))
    query = (
        rows_of(*columns)
        .where(TASKS.c.user_id == bindparam("owner_id"), TASKS.c.id.in_(bindparam("ids", expanding=True)))
        .order_by(TASKS.c.id)
    )
    return query.with_for_update(key_share=True, of=TASKS) if postgresql else query


@lru_cache(maxsize=64)
def _update(columns: tuple[str, ...]) -> Any:
    """UPDATE of `columns` of one task (`w_id`, `w_owner`), each value bound as `w_<column>`."""
    values = {name: bindparam(f"w_{name}", type_=TASKS.c[name].type) for name in columns}
    return (
        update_rows(TASKS)
        .where(TASKS.c.id == bindparam("w_id"), TASKS.c.user_id == bindparam("w_owner"))
        .values(values)
    )
