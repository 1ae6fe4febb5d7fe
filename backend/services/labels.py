"""Every query and rule about labels. Each query filters by owner: another user's label is not found.

Label writes (a task's labels, a rename, a delete) hold the owner's row lock (`db.lock_user_row`) to the
request's commit: a new label created by one request and a rename onto that name by another are serialised,
so neither ends in a unique violation (500). Locks are taken in one order, the owner's row first, then task
rows (as every write: services/changes.py), so two of them never wait on each other (PostgreSQL; SQLite
serialises every writer anyway). A rename or delete records the tasks it touched for the change feed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, func, over, type_coerce
from sqlalchemy import delete as delete_rows
from sqlalchemy import insert as insert_rows
from sqlalchemy import select as rows_of
from sqlalchemy import update as update_rows
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import NullType
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db import lock_user_row
from backend.errors import LabelExists, NotFound
from backend.models.change import ChangeType
from backend.models.common import utcnow
from backend.models.label import Label, TaskLabel, label_key
from backend.models.task import Task
from backend.services import changes

LABELS: Any = Label.__table__  # type: ignore[attr-defined]
LINKS: Any = TaskLabel.__table__  # type: ignore[attr-defined]
TASKS: Any = Task.__table__  # type: ignore[attr-defined]
_LABELS, _LINKS, _TASKS = LABELS.c, LINKS.c, TASKS.c


def keys_of(names: Iterable[str]) -> list[str]:
    """The distinct labels `names` name (trimmed, any case), as keys, in order."""
    return list(dict.fromkeys(label_key(name.strip()) for name in names))


def key_values(keys: list[str]) -> dict[str, str]:
    """The bound values of `carrying(len(keys))`'s conditions."""
    return {f"label_{n}": key for n, key in enumerate(keys)}


def carrying(count: int) -> list[ColumnElement[bool]]:
    """Conditions on `tasks.id`: the task carries each of `count` labels, bound as `label_0`, `label_1`, ... (keys,
    `key_values`) with the owner as `owner_id`. An unknown name matches nothing. Each is an indexed lookup: labels
    by (user_id, key), links by (label_id, task_id)."""
    return [
        _TASKS.id.in_(
            rows_of(_LINKS.task_id)
            .join(LABELS, _LABELS.id == _LINKS.label_id)
            .where(_LABELS.user_id == bindparam("owner_id"), _LABELS.key == bindparam(f"label_{n}"))
        )
        for n in range(count)
    ]


def names_of(task_id: Any) -> Any:
    """PostgreSQL: a task's label names in their order, as a column correlated to `task_id` (NULL: none). Read as
    the driver answers it (a list of str): ARRAY's result processor, run on every row, was the largest single
    frame of the feed page's profile and 1.3 % of a list's (specs/performance.md, "Issue 19")."""
    names = (
        rows_of(func.array_agg(aggregate_order_by(_LABELS.name, _LINKS.position)))
        .select_from(LINKS.join(LABELS, _LABELS.id == _LINKS.label_id))
        .where(_LINKS.task_id == task_id)
        .correlate_except(LINKS, LABELS)  # its task's table comes from outside, even through a LATERAL level
        .scalar_subquery()
    )
    return type_coerce(names, NullType()).label("labels")


async def names_by_task(session: AsyncSession, task_ids: Any) -> dict[int, list[str]]:
    """Each task's label names in their order, for every task in `task_ids` (a list of ids or a select of
    them): one query, whatever the number of tasks."""
    if isinstance(task_ids, list) and not task_ids:
        return {}
    query = (
        rows_of(_LINKS.task_id, _LABELS.name)
        .join(LABELS, _LABELS.id == _LINKS.label_id)
        .where(_LINKS.task_id.in_(task_ids))
        .order_by(_LINKS.task_id, _LINKS.position)
    )
    connection = await session.connection()
    names: dict[int, list[str]] = {}
    for task_id, name in (await connection.execute(query)).all():
        names.setdefault(task_id, []).append(name)
    return names


async def attach(session: AsyncSession, tasks: list[Task]) -> list[Task]:
    """Load the labels of `tasks` (one query) onto them, for answering them."""
    names = await names_by_task(session, [task.id for task in tasks])
    for task in tasks:
        task.set_labels(names.get(task.id or 0, []))
    return tasks


async def replace_task_labels(session: AsyncSession, owner_id: str, task: Task, names: list[str]) -> None:
    """Give `task` (flushed, the owner's) exactly the labels `names` (validated: trimmed, deduplicated), in
    that order. A name the owner already uses in any case is that label, spelt as first written; others are
    created. The task answers the stored spellings."""
    await lock_user_row(session, owner_id)
    labels = await _ensure_labels(session, owner_id, names)
    connection = await session.connection()
    await connection.execute(delete_rows(LINKS).where(_LINKS.task_id == task.id))
    if labels:
        rows = [{"task_id": task.id, "label_id": label_id, "position": i} for i, (label_id, _) in enumerate(labels)]
        await connection.execute(insert_rows(LINKS), rows)
    task.set_labels([name for _, name in labels])


async def _ensure_labels(session: AsyncSession, owner_id: str, names: list[str]) -> list[tuple[int, str]]:
    """(id, stored name) of each label named, in order, creating those the owner does not have yet."""
    if not names:
        return []
    keys = [label_key(name) for name in names]
    connection = await session.connection()
    query = rows_of(_LABELS.key, _LABELS.id, _LABELS.name).where(_LABELS.user_id == owner_id, _LABELS.key.in_(keys))
    found = {key: (label_id, name) for key, label_id, name in (await connection.execute(query)).all()}
    missing = [(key, name) for key, name in zip(keys, names, strict=True) if key not in found]
    if missing:
        created = await connection.execute(
            insert_rows(LABELS).returning(_LABELS.key, _LABELS.id, _LABELS.name),
            [{"user_id": owner_id, "name": name, "key": key} for key, name in missing],
        )
        found |= {key: (label_id, name) for key, label_id, name in created.all()}
    return [found[key] for key in keys]


def _count() -> Any:
    return func.count(_LINKS.task_id)


async def list_labels(
    session: AsyncSession, owner_id: str, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of the owner's labels with their task counts, by name case-insensitively, and the total."""
    connection = await session.connection()
    query = (
        rows_of(_LABELS.name, _count().label("task_count"), over(func.count()).label("total"))
        .select_from(LABELS.outerjoin(LINKS, _LINKS.label_id == _LABELS.id))
        .where(_LABELS.user_id == owner_id)
        .group_by(_LABELS.id, _LABELS.key, _LABELS.name)
        .order_by(_LABELS.key, _LABELS.id)
        .limit(limit)
        .offset(offset)
    )
    rows = (await connection.execute(query)).all()
    if rows:
        return [{"name": name, "task_count": int(count)} for name, count, _ in rows], int(rows[0][-1])
    total = (await connection.execute(rows_of(func.count()).where(_LABELS.user_id == owner_id))).scalar_one()
    return [], int(total)


async def _find(session: AsyncSession, owner_id: str, name: str) -> tuple[int, str]:
    """(id, key) of the owner's label `name` (any case, trimmed), or NotFound."""
    connection = await session.connection()
    query = rows_of(_LABELS.id, _LABELS.key).where(_LABELS.user_id == owner_id, _LABELS.key == label_key(name.strip()))
    row = (await connection.execute(query)).first()
    if row is None:
        raise NotFound("Label not found")
    return int(row[0]), str(row[1])


async def _lock(session: AsyncSession, owner_id: str, name: str) -> tuple[int, str]:
    """Lock the owner's row, then find the label; (id, key) of the label as it is once the lock is held
    (another request may have renamed or deleted it meanwhile: then 404). Every writer of the owner's tasks
    holds the owner's row first, so the tasks carrying the label need no lock of their own."""
    await lock_user_row(session, owner_id)
    return await _find(session, owner_id, name)


async def _touch_tasks(session: AsyncSession, owner_id: str, label_id: int) -> None:
    """The tasks carrying the label changed: a new version (ETag) and `updated_at` for each, in one statement,
    and a change in the feed for each."""
    connection = await session.connection()
    touched = await connection.execute(
        update_rows(TASKS)
        .where(_TASKS.id.in_(rows_of(_LINKS.task_id).where(_LINKS.label_id == label_id)))
        .values(version=_TASKS.version + 1, updated_at=utcnow())
        .returning(_TASKS.id)
    )
    await changes.record(session, owner_id, ChangeType.TASK, list(touched.scalars()))


async def rename_label(session: AsyncSession, owner_id: str, name: str, new_name: str) -> dict[str, Any]:
    """Rename the label on every task (one UPDATE of the label). A new spelling of the same label is
    allowed; the name of another label of the owner is a conflict (409), never a merge."""
    label_id, key = await _lock(session, owner_id, name)
    new_key = label_key(new_name)
    connection = await session.connection()
    if new_key != key:
        taken = rows_of(_LABELS.id).where(_LABELS.user_id == owner_id, _LABELS.key == new_key)
        if (await connection.execute(taken)).first() is not None:
            raise LabelExists()
    await connection.execute(update_rows(LABELS).where(_LABELS.id == label_id).values(name=new_name, key=new_key))
    await _touch_tasks(session, owner_id, label_id)
    count = (await connection.execute(rows_of(_count()).where(_LINKS.label_id == label_id))).scalar_one()
    return {"name": new_name, "task_count": int(count)}


async def delete_label(session: AsyncSession, owner_id: str, name: str) -> None:
    """Remove the label from every task (one DELETE of its links), then the label itself."""
    label_id, _ = await _lock(session, owner_id, name)
    await _touch_tasks(session, owner_id, label_id)
    connection = await session.connection()
    await connection.execute(delete_rows(LINKS).where(_LINKS.label_id == label_id))
    await connection.execute(delete_rows(LABELS).where(_LABELS.id == label_id))
