"""Manual order: a task's `position` among its siblings (the owner's tasks with the same parent and project).

Positions are fractional-indexing keys (the `fractional-indexing` package: base-62 strings that compare byte
by byte; the column sorts in the "C" collation on PostgreSQL). Between any two keys there is another, so
placing a task writes one row, whatever the number of siblings. Repeated insertions at one spot lengthen the
keys by about one character each; a key longer than `REBALANCE_AT` makes the move renumber its sibling group
with short, evenly spread keys (the one path that writes more than one row).

Every position write (a task created, moved, re-parented or given another project) holds the owner's row lock
(`db.lock_user_row`) until commit, and reads its neighbours under it: two concurrent moves are serialised and
never compute the same key. No route writes a tie; should rows tie anyway (written by hand, or a project row
deleted under its tasks, which sets their `project_id` to null and merges two groups), a list breaks ties by
id, and a move next to two equal keys renumbers the group first.
"""

from __future__ import annotations

from typing import Any

from fractional_indexing import generate_key_between, generate_n_keys_between
from sqlalchemy import and_, or_
from sqlalchemy import select as rows_of
from sqlalchemy import update as update_rows
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.models.change import ChangeType
from backend.models.task import Task
from backend.services import changes

TASKS: Any = Task.__table__  # type: ignore[attr-defined]
_TASKS = TASKS.c
REBALANCE_AT = 64  # characters; a key this long is still valid, the group is renumbered so keys stay short


def _siblings(owner_id: str, project_id: int | None, parent_id: int | None) -> list[Any]:
    """Conditions for one sibling group: same owner, parent and project (null compares as a value)."""
    return [
        _TASKS.user_id == owner_id,
        _TASKS.project_id.is_(None) if project_id is None else _TASKS.project_id == project_id,
        _TASKS.parent_id.is_(None) if parent_id is None else _TASKS.parent_id == parent_id,
    ]


async def _rows(session: AsyncSession, query: Any) -> list[Any]:
    connection = await session.connection()
    return list((await connection.execute(query)).all())


async def last_position(session: AsyncSession, owner_id: str, project_id: int | None, parent_id: int | None) -> str:
    """The key that places a new task last in its group. Call it under the owner's row lock."""
    query = (
        rows_of(_TASKS.position)
        .where(*_siblings(owner_id, project_id, parent_id))
        .order_by(_TASKS.position.desc())
        .limit(1)
    )
    rows = await _rows(session, query)
    return str(generate_key_between(rows[0][0] if rows and rows[0][0] else None, None))


async def position_after(
    session: AsyncSession,
    owner_id: str,
    task_id: int,
    project_id: int | None,
    parent_id: int | None,
    after_id: int | None,
) -> str:
    """The key that places task `task_id` right after sibling `after_id` (None: first) in the group, the task
    itself left out of it. Under the owner's row lock; the caller checked that `after_id` is in the group."""
    group = [*_siblings(owner_id, project_id, parent_id), _TASKS.id != task_id]
    for attempt in range(2):
        low: str | None = None
        following = rows_of(_TASKS.position).where(*group)
        if after_id is not None:
            (low,) = (await _rows(session, rows_of(_TASKS.position).where(_TASKS.id == after_id)))[0]
            # The next sibling in list order (position, then id): the first one sorting after `after_id`.
            following = following.where(or_(_TASKS.position > low, and_(_TASKS.position == low, _TASKS.id > after_id)))
        rows = await _rows(session, following.order_by(_TASKS.position, _TASKS.id).limit(1))
        high = rows[0][0] if rows else None
        # Equal keys (groups merged by an unpin) or keys grown long: renumber the group once, then place.
        if attempt == 0 and ((low is not None and high is not None and low >= high) or "" in (low, high)):
            await renumber(session, owner_id, project_id, parent_id, skip=task_id)
            continue
        key = str(generate_key_between(low, high))
        if attempt == 0 and len(key) >= REBALANCE_AT:
            await renumber(session, owner_id, project_id, parent_id, skip=task_id)
            continue
        return key
    raise AssertionError("a renumbered group always has room")  # pragma: no cover


async def renumber(
    session: AsyncSession, owner_id: str, project_id: int | None, parent_id: int | None, *, skip: int
) -> None:
    """Give the group's tasks (but `skip`) short, evenly spread keys in their current order (each a change)."""
    rows = await _rows(
        session,
        rows_of(_TASKS.id)
        .where(*_siblings(owner_id, project_id, parent_id), _TASKS.id != skip)
        .order_by(_TASKS.position, _TASKS.id),
    )
    keys = generate_n_keys_between(None, None, len(rows))
    connection = await session.connection()
    for (task_id,), key in zip(rows, keys, strict=True):
        await connection.execute(
            update_rows(TASKS).where(_TASKS.id == task_id).values(position=key, version=_TASKS.version + 1)
        )
    await changes.record(session, owner_id, ChangeType.TASK, [task_id for (task_id,) in rows])
