"""Subtasks: the rules of a task's place in its owner's tree, and the queries that walk it.

A task's `parent_id` names another task of the same owner. A root task is at level 1; no task may be deeper
than level `MAX_DEPTH` (5), and no task may be its own ancestor. A subtask's `project_id` is its parent's.
Every walk is one recursive query (WITH RECURSIVE, on SQLite and PostgreSQL alike), filtered by owner at each
step, and bounded: a walk never goes further than the deepest tree the rules allow, whatever the rows say.

Tree changes (a subtask created, a task re-parented) are checked under the owner's row lock
(`db.lock_user_row`), so two concurrent moves cannot together build a cycle or a tree too deep.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import literal
from sqlalchemy import select as rows_of
from sqlalchemy import update as update_rows
from sqlalchemy.sql.elements import BindParameter
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.errors import TaskCycle, TaskDepthExceeded, ValidationFailed
from backend.models.change import ChangeType
from backend.models.task import MAX_DEPTH, Task, TaskStatus
from backend.services import changes

TASKS: Any = Task.__table__  # type: ignore[attr-defined]
_TASKS = TASKS.c
# No walk goes deeper than this, even over rows written before the rules (or by hand): a cycle ends here.
_WALK_LIMIT = MAX_DEPTH + 1


def descendants_query(
    owner_id: str | BindParameter[Any], task_id: int | BindParameter[Any], *, include_self: bool = False
) -> Any:
    """`(id, parent_id, depth)` of the task's subtree (depth 0 is the task itself), one recursive query. The owner
    and the task are values, or bound parameters for a statement built once (services/tasks.read_tree)."""
    tree = (
        rows_of(_TASKS.id, _TASKS.parent_id, literal(0).label("depth"))
        .where(_TASKS.id == task_id, _TASKS.user_id == owner_id)
        .cte("subtree", recursive=True)
    )
    child = TASKS.alias("child")
    tree = tree.union_all(
        rows_of(child.c.id, child.c.parent_id, (tree.c.depth + 1).label("depth")).where(
            child.c.parent_id == tree.c.id, child.c.user_id == owner_id, tree.c.depth < _WALK_LIMIT
        )
    )
    query = rows_of(tree.c.id, tree.c.parent_id, tree.c.depth)
    return query if include_self else query.where(tree.c.depth > 0)


def _ancestors_query(owner_id: str, task_id: int) -> Any:
    """The ids from `task_id` up to its root (itself first), one recursive query."""
    chain = (
        rows_of(_TASKS.id, _TASKS.parent_id, literal(0).label("step"))
        .where(_TASKS.id == task_id, _TASKS.user_id == owner_id)
        .cte("ancestors", recursive=True)
    )
    up = TASKS.alias("up")
    chain = chain.union_all(
        rows_of(up.c.id, up.c.parent_id, (chain.c.step + 1).label("step")).where(
            up.c.id == chain.c.parent_id, up.c.user_id == owner_id, chain.c.step < _WALK_LIMIT
        )
    )
    return rows_of(chain.c.id).order_by(chain.c.step)


async def _scalars(session: AsyncSession, query: Any) -> list[Any]:
    connection = await session.connection()
    return list((await connection.execute(query)).scalars())


async def _write(session: AsyncSession, owner_id: str, statement: Any) -> None:
    """A Core UPDATE of the owner's tasks in the request's transaction, after the ORM's pending changes; the
    tasks it changed are recorded for the change feed."""
    await session.flush()
    ids = list((await (await session.connection()).execute(statement.returning(_TASKS.id))).scalars())
    await changes.record(session, owner_id, ChangeType.TASK, ids)


async def descendant_ids(session: AsyncSession, owner_id: str, task_id: int) -> list[int]:
    return await _scalars(session, rows_of(descendants_query(owner_id, task_id).subquery().c.id))


async def check_parent(session: AsyncSession, owner_id: str, parent_id: int, task_id: int | None = None) -> Task:
    """The new parent of `task_id` (None: a task being created), if the tree rules allow it: the parent is the
    owner's, the task is not the parent nor one of its ancestors (CYCLE), and the task's subtree still ends
    at level 5 or above under it (TASK_DEPTH_EXCEEDED). Call it under the owner's row lock."""
    parent = await session.get(Task, parent_id)
    if parent is None or parent.user_id != owner_id:
        raise ValidationFailed("parent_id: no such task", field="parent_id")
    ancestors = await _scalars(session, _ancestors_query(owner_id, parent_id))  # the parent first
    if task_id is not None and task_id in ancestors:
        raise TaskCycle()
    height = 1  # levels of the moved subtree, the task itself included
    if task_id is not None:
        depths = await _scalars(session, rows_of(descendants_query(owner_id, task_id).subquery().c.depth))
        height = 1 + max(depths, default=0)
    if len(ancestors) + height > MAX_DEPTH:
        raise TaskDepthExceeded()
    return parent


async def follow_project(session: AsyncSession, owner_id: str, task_id: int, project_id: int | None) -> None:
    """A subtask's project is its parent's: the task's descendants take `project_id` (one statement)."""
    ids = descendants_query(owner_id, task_id).subquery()
    await _write(
        session,
        owner_id,
        update_rows(TASKS)
        .where(_TASKS.id.in_(rows_of(ids.c.id)), _TASKS.project_id.is_distinct_from(project_id))
        .values(project_id=project_id, version=_TASKS.version + 1),
    )


async def complete_descendants(session: AsyncSession, owner_id: str, task_id: int, now: datetime) -> None:
    """Completing a task completes its open descendants, for good (one statement)."""
    await _set_descendants(session, owner_id, task_id, now, done=True)


async def reopen_descendants(session: AsyncSession, owner_id: str, task_id: int, now: datetime) -> None:
    """A recurring task that moves on to its next occurrence starts it with its subtasks open again."""
    await _set_descendants(session, owner_id, task_id, now, done=False)


async def _set_descendants(session: AsyncSession, owner_id: str, task_id: int, now: datetime, *, done: bool) -> None:
    """The task's descendants that are not yet `done` (completed) or open become so, each a new version."""
    ids = descendants_query(owner_id, task_id).subquery()
    await _write(
        session,
        owner_id,
        update_rows(TASKS)
        .where(_TASKS.id.in_(rows_of(ids.c.id)), _TASKS.completed.is_(not done))
        .values(
            status=(TaskStatus.COMPLETED if done else TaskStatus.PENDING).value,
            completed=done,
            completed_at=now if done else None,
            updated_at=now,
            version=_TASKS.version + 1,
        ),
    )


def nest(root: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`root` with `subtasks` filled from `rows` (its descendants, each with `parent_id`), siblings kept in
    the order `rows` gives them."""
    children: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        children.setdefault(row["parent_id"], []).append(row)
    for node in [root, *rows]:
        node["subtasks"] = children.get(node["id"], [])
    return root
