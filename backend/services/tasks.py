"""Every query and rule about tasks. Each query filters by owner: another user's task is not found."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, over
from sqlalchemy import select as rows_of
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col, delete, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db import lock_user_row, save
from backend.errors import NotFound, ValidationFailed
from backend.models.common import utcnow
from backend.models.task import Task, TaskCreate, TaskPublic, TaskSort, TaskStatus, TaskUpdate
from backend.services import labels as label_service
from backend.services.projects import ensure_project


@dataclass(frozen=True)
class TaskFilters:
    status: TaskStatus | None = None
    priority: str | None = None
    completed: bool | None = None
    project_id: int | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None
    q: str | None = None
    labels: tuple[str, ...] = ()  # the task carries every one of them


def like_pattern(text: str) -> str:
    """`q` is data, never a pattern: `%`, `_` and `\\` match themselves."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# Lists read rows, not entities: the table's own columns (Core), so no ORM entity is built for a list.
_TASKS = Task.__table__.c  # type: ignore[attr-defined]
# `labels` is not a column: a page's labels come from one more query (services/labels.names_by_task).
_NAMES = [name for name in TaskPublic.model_fields if name != "labels"]
_PUBLIC_COLUMNS = [_TASKS[name] for name in _NAMES]


def _sort_keys(columns: Any) -> dict[str, Any]:
    """The sort keys over `columns`: the table's own, or a subquery's with the same names."""
    return {
        "created_at": columns.created_at,
        "updated_at": columns.updated_at,
        "due_date": columns.due_date,
        "priority": case({"low": 0, "medium": 1, "high": 2}, value=columns.priority),
        "title": func.lower(columns.title),
    }


def _order_by(sort: TaskSort, columns: Any = _TASKS) -> list[Any]:
    descending = sort.value.startswith("-")
    key = _sort_keys(columns)[sort.value.lstrip("-")]
    # Tasks without a due date come last either way; the id breaks ties in the same direction,
    # so pages never overlap or skip rows.
    ordered = key.desc() if descending else key.asc()
    if sort.value.lstrip("-") == "due_date":
        ordered = ordered.nulls_last()
    return [ordered, columns.id.desc() if descending else columns.id.asc()]


def _conditions(owner_id: str, filters: TaskFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [_TASKS.user_id == owner_id]
    if filters.status is not None:
        conditions.append(_TASKS.status == filters.status)
    if filters.priority is not None:
        conditions.append(_TASKS.priority == filters.priority)
    if filters.completed is not None:
        conditions.append(_TASKS.completed == filters.completed)
    if filters.project_id is not None:
        conditions.append(_TASKS.project_id == filters.project_id)
    if filters.due_before is not None:
        conditions.append(_TASKS.due_date < filters.due_before)
    if filters.due_after is not None:
        conditions.append(_TASKS.due_date > filters.due_after)
    if filters.q:
        pattern = like_pattern(filters.q)
        conditions.append(or_(_TASKS.title.ilike(pattern, escape="\\"), _TASKS.description.ilike(pattern, escape="\\")))
    conditions.extend(label_service.carrying(owner_id, filters.labels))
    return conditions


async def list_tasks(
    session: AsyncSession, owner_id: str, filters: TaskFilters, sort: TaskSort, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of the owner's matching tasks (each a dict of `TaskPublic`'s fields) and the total count of
    matches, in one round trip. On PostgreSQL each row carries its labels (a correlated `array_agg`); on SQLite
    the page's labels are one more query."""
    connection = await session.connection()  # Core rows: the ORM's execute path is not needed
    folded = connection.dialect.name == "postgresql"
    rows = (await connection.execute(list_query(owner_id, filters, sort, limit, offset, labels=folded))).all()
    if rows:
        if folded:
            items = [dict(zip(_NAMES_AND_LABELS, row, strict=False)) for row in rows]
            for item in items:
                item["labels"] = item["labels"] or []
        else:
            items = _page(rows)
            labels = await label_service.names_by_task(session, [item["id"] for item in items])
            for item in items:
                item["labels"] = labels.get(item["id"], [])
        return items, int(rows[0][-1])
    if offset == 0:
        return [], 0
    # Past the last page the window count has no row to ride on: count separately.
    total = (await connection.execute(count_query(owner_id, filters))).scalar_one()
    return [], int(total)


_NAMES_AND_LABELS = [*_NAMES, "labels"]


def _page(rows: Any) -> list[dict[str, Any]]:
    """Each row as a dict of `TaskPublic`'s column fields (its last column, the window count, left out)."""
    return [dict(zip(_NAMES, row, strict=False)) for row in rows]


def list_query(
    owner_id: str, filters: TaskFilters, sort: TaskSort, limit: int, offset: int, *, labels: bool = False
) -> Any:
    """A page of tasks (`TaskPublic`'s columns; with `labels`, then each task's label names), each row carrying
    the total number of matches (a window count) last."""
    total = over(func.count()).label("total")
    matches = rows_of(*_PUBLIC_COLUMNS, total).where(*_conditions(owner_id, filters))
    if not filters.q:
        if labels:
            matches = rows_of(*_PUBLIC_COLUMNS, label_service.names_of(_TASKS.id), total)
            matches = matches.where(*_conditions(owner_id, filters))
        return matches.order_by(*_order_by(sort)).limit(limit).offset(offset)
    # A search reads every match anyway (the window count), so the matches are a subquery planned for all of
    # them: PostgreSQL then takes the owner's trigram index (revision 0008) and sorts the few matches. In one
    # query with the LIMIT, the planner (15) costs the window as if it stopped after a page, and walks all the
    # owner's rows in date order, testing both ILIKEs on each (specs/performance.md, "Search"). The labels are
    # read for the page only, outside the subquery.
    found = matches.subquery("matches")
    columns = [*found.c]
    if labels:
        columns.insert(-1, label_service.names_of(found.c.id))
    return rows_of(*columns).order_by(*_order_by(sort, found.c)).limit(limit).offset(offset)


def count_query(owner_id: str, filters: TaskFilters) -> Any:
    return rows_of(func.count()).select_from(Task.__table__).where(*_conditions(owner_id, filters))  # type: ignore[attr-defined]


async def get_task(session: AsyncSession, owner_id: str, task_id: int, *, for_update: bool = False) -> Task:
    """The owner's task or NotFound. `for_update` locks the row for a read-modify-write."""
    query = select(Task).where(Task.id == task_id, Task.user_id == owner_id)
    if for_update:
        query = query.with_for_update()
    task = (await session.exec(query)).first()
    if task is None:
        raise NotFound("Task not found")
    return task


async def read_task(session: AsyncSession, owner_id: str, task_id: int) -> Task:
    """The owner's task with its labels, to answer it; or NotFound."""
    task = await get_task(session, owner_id, task_id)
    await label_service.attach(session, [task])
    return task


async def _labels(session: AsyncSession, owner_id: str, task: Task, names: list[str] | None) -> Task:
    """Replace the task's labels with `names`, or (None) load the ones it has."""
    if names is None:
        await label_service.attach(session, [task])
    else:
        await label_service.replace_task_labels(session, owner_id, task, names)
    return task


def _completion(current: Task | None, status: TaskStatus | None, completed: bool | None) -> dict[str, Any]:
    """status, completed and completed_at, agreeing with each other, from what one request sent."""
    if status is not None and completed is not None and (status == TaskStatus.COMPLETED) != completed:
        raise ValidationFailed(
            "completed and status disagree: send one of them, or values that agree", field="completed"
        )
    if status is None and completed is None:
        return {}
    if status is None:
        was_completed = current is not None and current.completed
        if completed:
            status = TaskStatus.COMPLETED
        elif was_completed or current is None:
            status = TaskStatus.PENDING  # reopening
        else:
            status = TaskStatus(current.status)
    done = status == TaskStatus.COMPLETED
    completed_at: datetime | None = utcnow() if done else None
    if done and current is not None and current.completed and current.completed_at is not None:
        completed_at = current.completed_at  # completing again keeps the original moment
    return {"status": status, "completed": done, "completed_at": completed_at}


async def create_task(session: AsyncSession, owner_id: str, payload: TaskCreate) -> Task:
    if payload.project_id is not None:
        await ensure_project(session, owner_id, payload.project_id)
    if payload.labels:
        # Before the INSERT: its foreign-key check share-locks the user row, and two creates upgrading that
        # share lock to the label writers' exclusive one would deadlock each other (PostgreSQL).
        await lock_user_row(session, owner_id)
    data = payload.model_dump(exclude={"status", "completed", "labels"})
    data.update(_completion(None, payload.status, payload.completed) or {"status": TaskStatus.PENDING})
    task = Task.model_validate(data, update={"user_id": owner_id})
    session.add(task)
    await session.flush()
    if payload.labels:
        await label_service.replace_task_labels(session, owner_id, task, payload.labels)
    return task


async def update_task(session: AsyncSession, owner_id: str, task_id: int, payload: TaskUpdate) -> Task:
    task = await get_task(session, owner_id, task_id, for_update=True)
    changes = payload.model_dump(exclude_unset=True)
    labels = changes.pop("labels", None)
    # A new link must name a pinned project; the current one is kept even while its project is unpinned.
    if changes.get("project_id") is not None and changes["project_id"] != task.project_id:
        await ensure_project(session, owner_id, changes["project_id"])
    changes.update(_completion(task, changes.pop("status", None), changes.pop("completed", None)))
    return await _labels(session, owner_id, await save(session, task, changes | {"updated_at": utcnow()}), labels)


async def set_completed(session: AsyncSession, owner_id: str, task_id: int, completed: bool) -> Task:
    task = await get_task(session, owner_id, task_id, for_update=True)
    task = await save(session, task, _completion(task, None, completed) | {"updated_at": utcnow()})
    return await _labels(session, owner_id, task, None)


async def delete_task(session: AsyncSession, owner_id: str, task_id: int) -> None:
    result = await session.exec(delete(Task).where(col(Task.id) == task_id, col(Task.user_id) == owner_id))
    if result.rowcount == 0:
        raise NotFound("Task not found")
