"""Every query and rule about tasks. Each query filters by owner: another user's task is not found."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from pydantic_core import to_json
from sqlalchemy import Integer, String, Text, bindparam, case, cast, func, literal_column, over, true
from sqlalchemy import select as rows_of
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col, delete, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db import lock_user_row, save
from backend.errors import NotFound, ValidationFailed
from backend.models.change import ChangeOp, ChangeType
from backend.models.common import utcnow
from backend.models.task import Task, TaskCreate, TaskMove, TaskPublic, TaskSort, TaskStatus, TaskUpdate
from backend.services import changes as change_log
from backend.services import labels as label_service
from backend.services import recurring, task_order, task_tree
from backend.services.projects import ensure_project
from backend.services.wall_times import as_json_text, as_stored, is_timestamp, utc


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
    parent_id: int | None = None  # the direct children of this task
    root: bool | None = None  # true: top-level tasks only; false: subtasks only


def like_pattern(text: str) -> str:
    """`q` is data, never a pattern: `%`, `_` and `\\` match themselves."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# Lists read rows, not entities: the table's own columns (Core), so no ORM entity is built for a list.
TASKS: Any = Task.__table__  # type: ignore[attr-defined]
_TASKS = TASKS.c
# `labels` is not a column: a page's labels come from one more query (services/labels.names_by_task).
_NAMES = [name for name in TaskPublic.model_fields if name != "labels"]
_PUBLIC_COLUMNS = [_TASKS[name] for name in _NAMES]
# What a page selects for them: the timestamps as stored, made UTC in `_with_labels` (services/wall_times.py).
_PAGE_COLUMNS = {folded: [as_stored(_TASKS[name], name, folded) for name in _NAMES] for folded in (False, True)}
_TIMES = [name for name in _NAMES if is_timestamp(_TASKS[name])]


def json_fields() -> list[Any]:
    """PostgreSQL: `TaskPublic`'s fields over the `tasks` table, in order, as columns whose row `to_json` writes as
    pydantic serialises a task (compact, keys in order, strings escaped alike; timestamps by `as_json_text`, labels
    a list): for answers PostgreSQL serialises (lists, search, the change feed). Select them in a subquery
    correlated to `tasks` and serialise its row with `as_json`."""
    fields = [(as_json_text(_TASKS[name]) if name in _TIMES else _TASKS[name]).label(name) for name in _NAMES]
    labels = func.coalesce(label_service.names_of(_TASKS.id), literal_column("'{}'::text[]")).label("labels")
    return [*fields, labels]


def as_json(item: Any) -> Any:
    """The row of subquery `item` (`json_fields`) as its JSON text."""
    return cast(func.to_json(item.table_valued()), Text).label("json")


# A listed task as PostgreSQL writes it: the row's `tasks` columns as `json_fields`, a LATERAL subquery with no FROM
# of its own (the planner pulls it up into the page's row, after the LIMIT).
_ITEM = rows_of(*json_fields()).correlate(TASKS).lateral("item")
_LISTED = (as_json(_ITEM),)


def public_columns() -> tuple[list[str], list[Any]]:
    """`TaskPublic`'s column fields (all but `labels`) and the table's columns for them, in that order."""
    return _NAMES, _PUBLIC_COLUMNS


def _sort_keys(columns: Any) -> dict[str, Any]:
    """The sort keys over `columns`: the table's own, or a subquery's with the same names."""
    return {
        "created_at": columns.created_at,
        "updated_at": columns.updated_at,
        "due_date": columns.due_date,
        "priority": case({"low": 0, "medium": 1, "high": 2}, value=columns.priority),
        "title": func.lower(columns.title),
        "position": columns.position,
    }


def _order_by(sort: TaskSort, columns: Any = _TASKS) -> list[Any]:
    return _ordered(sort, _sort_keys(columns)[sort.value.lstrip("-")], columns.id)


def _ordered(sort: TaskSort, key: Any, task_id: Any) -> list[Any]:
    """ORDER BY `key` in `sort`'s direction, then the task's id."""
    descending = sort.value.startswith("-")
    # Tasks without a due date come last either way; the id breaks ties in the same direction,
    # so pages never overlap or skip rows.
    ordered = key.desc() if descending else key.asc()
    if sort.value.lstrip("-") == "due_date":
        ordered = ordered.nulls_last()
    return [ordered, task_id.desc() if descending else task_id.asc()]


# A list's SQL depends only on which filters are present (its shape), the sort and whether labels are folded in;
# the values are bound when it runs. So each statement is built once (lru_cache) and SQLAlchemy's compiled cache
# hits on the same object: building one cost ~0.35 ms of CPU per request (specs/performance.md, "Issue 18").
Shape = tuple[bool, bool, bool, bool, bool, bool, bool, bool | None, int, int]
_FILTERS = ("status", "priority", "completed", "project_id", "due_before", "due_after", "parent_id")


# `q`'s place in a shape: no text, a text, a text with a line break (PostgreSQL's `search_text` separator).
NO_TEXT, TEXT, TEXT_WITH_BREAK = 0, 1, 2


def _shape(filters: TaskFilters, label_keys: list[str]) -> Shape:
    present = tuple(getattr(filters, name) is not None for name in _FILTERS)
    text = NO_TEXT if not filters.q else TEXT_WITH_BREAK if "\n" in filters.q else TEXT
    return (*present, filters.root, text, len(label_keys))  # type: ignore[return-value]


def _label_keys(filters: TaskFilters) -> list[str]:
    return label_service.keys_of(filters.labels)


def _values(owner_id: str, filters: TaskFilters, label_keys: list[str]) -> dict[str, Any]:
    """The bound values of a list or count statement of this shape."""
    values: dict[str, Any] = {"owner_id": owner_id}
    values.update({name: getattr(filters, name) for name in _FILTERS if getattr(filters, name) is not None})
    if filters.q:
        values["q"] = like_pattern(filters.q)
    values.update(label_service.key_values(label_keys))
    return values


# PostgreSQL's stored `lower(title) || E'\\n' || lower(coalesce(description, ''))` (revision 0014): not a model
# column, named where a search reads it (the statements' `tasks` is never aliased).
_SEARCH_TEXT: Any = literal_column("tasks.search_text", Text)


def _conditions(shape: Shape, postgresql: bool) -> list[ColumnElement[bool]]:
    status, priority, completed, project_id, due_before, due_after, parent_id, root, q, labels = shape
    conditions: list[ColumnElement[bool]] = [_TASKS.user_id == bindparam("owner_id")]
    if status:
        conditions.append(_TASKS.status == bindparam("status"))
    if priority:
        conditions.append(_TASKS.priority == bindparam("priority"))
    if completed:
        conditions.append(_TASKS.completed == bindparam("completed"))
    if project_id:
        conditions.append(_TASKS.project_id == bindparam("project_id"))
    if due_before:
        conditions.append(_TASKS.due_date < bindparam("due_before"))
    if due_after:
        conditions.append(_TASKS.due_date > bindparam("due_after"))
    if parent_id:
        conditions.append(_TASKS.parent_id == bindparam("parent_id"))
    if root is not None:
        conditions.append(_TASKS.parent_id.is_(None) if root else _TASKS.parent_id.is_not(None))
    if q:
        pattern: Any = bindparam("q", type_=String)
        exact = or_(_TASKS.title.ilike(pattern, escape="\\"), _TASKS.description.ilike(pattern, escape="\\"))
        if postgresql:
            # The same test as the ILIKEs (PostgreSQL lowers both sides of an ILIKE with the same collation), on
            # text lowered once when it was written, through the owner's trigram index. A text with a line break
            # could span title and description there: the index finds the candidates, the ILIKEs decide.
            conditions.append(_SEARCH_TEXT.like(func.lower(pattern), escape="\\"))
            if q == TEXT_WITH_BREAK:
                conditions.append(exact)
        else:
            conditions.append(exact)
    conditions.extend(label_service.carrying(labels))
    return conditions


async def list_tasks(
    session: AsyncSession, owner_id: str, filters: TaskFilters, sort: TaskSort, limit: int, offset: int
) -> tuple[str, int]:
    """One page of the owner's matching tasks, as the JSON array of their `TaskPublic`s, and the total count of
    matches, in one round trip. PostgreSQL writes each task's JSON, its labels with it (`json_fields`); on SQLite
    the rows become dicts, their labels one more query, serialised here."""
    connection = await session.connection()  # Core rows: the ORM's execute path is not needed
    folded = connection.dialect.name == "postgresql"
    keys = _label_keys(filters)
    values = {**_values(owner_id, filters, keys), "limit": limit, "offset": offset}
    shape = _shape(filters, keys)
    rows = (await connection.execute(_list_statement(shape, sort, folded), values)).all()
    if rows:
        if folded:
            return "[" + ",".join([row[0] for row in rows]) + "]", int(rows[0][-1])
        return to_json(await _with_labels(session, rows, folded)).decode(), int(rows[0][-1])
    if offset == 0:
        return "[]", 0
    # Past the last page the total has no row to ride on: count separately.
    total = (await connection.execute(_count_statement(shape, folded), values)).scalar_one()
    return "[]", int(total)


_NAMES_AND_LABELS = [*_NAMES, "labels"]


async def _with_labels(session: AsyncSession, rows: Any, folded: bool) -> list[dict[str, Any]]:
    """Each row (`TaskPublic`'s columns, then with `folded` its label names; anything after them left out) as
    a dict of `TaskPublic`'s fields: unfolded rows get their labels from one more query."""
    if folded:
        items = [dict(zip(_NAMES_AND_LABELS, row, strict=False)) for row in rows]
        for item in items:
            item["labels"] = item["labels"] or []
    else:
        items = [dict(zip(_NAMES, row, strict=False)) for row in rows]
        labels = await label_service.names_by_task(session, [item["id"] for item in items])
        for item in items:
            item["labels"] = labels.get(item["id"], [])
    for item in items:
        for name in _TIMES:
            if (value := item[name]) is not None:
                item[name] = utc(value)
    return items


def list_query(
    owner_id: str, filters: TaskFilters, sort: TaskSort, limit: int, offset: int, *, postgresql: bool = True
) -> Any:
    """The list statement with its values bound (to read its plan; a request binds them as it runs it)."""
    keys = _label_keys(filters)
    values = {**_values(owner_id, filters, keys), "limit": limit, "offset": offset}
    return _list_statement(_shape(filters, keys), sort, postgresql).params(values)


def count_query(owner_id: str, filters: TaskFilters, *, postgresql: bool = True) -> Any:
    keys = _label_keys(filters)
    return _count_statement(_shape(filters, keys), postgresql).params(_values(owner_id, filters, keys))


@lru_cache(maxsize=512)
def _list_statement(shape: Shape, sort: TaskSort, postgresql: bool) -> Any:
    """A page of tasks (`TaskPublic`'s columns; on PostgreSQL, then each task's label names), each row carrying
    the total number of matches last. Values bound at execution: `_values`, limit, offset."""
    page = (bindparam("limit", type_=Integer), bindparam("offset", type_=Integer))
    searching, labelled = shape[-2], shape[-1]
    conditions = _conditions(shape, postgresql)
    if not searching:
        # The total is the count statement as an uncorrelated scalar subquery (its own `tasks`): run once, from
        # the owner's index alone where it covers the filters (index-only). A window count made the page read
        # every matching row in full before keeping 50: 1 000 rows for a user with 1 000 tasks
        # (specs/performance.md, "Scale run"). With a label filter the page reads every match anyway (the
        # label's tasks, then a top-N sort), and a separate count would read them twice: a window there.
        total = (
            over(func.count()).label("total")
            if labelled
            else _count_statement(shape, postgresql).correlate(None).scalar_subquery().label("total")
        )
        if postgresql:
            listed = rows_of(*_LISTED, total).select_from(TASKS.join(_ITEM, true()))
        else:
            listed = rows_of(*_PAGE_COLUMNS[False], total)
        return listed.where(*conditions).order_by(*_order_by(sort)).limit(page[0]).offset(page[1])
    if postgresql:
        return _search_statement(conditions, sort, page)
    # SQLite: the matches with a window count, ordered and paged outside.
    found = rows_of(*_PAGE_COLUMNS[False], over(func.count()).label("total")).where(*conditions).subquery("matches")
    return rows_of(*found.c).order_by(*_order_by(sort, found.c)).limit(page[0]).offset(page[1])


def _search_statement(conditions: list[ColumnElement[bool]], sort: TaskSort, page: tuple[Any, Any]) -> Any:
    """PostgreSQL's search: every match is found once, as (id, sort key) only (a materialized CTE, planned for all
    of them: the owner's trigram index, revision 0014), counted and sorted there; only the page's tasks are then
    read in full, with their labels. A window count over the matches in full (and a sort of them) cost 2 ms of the
    benchmark search's 9 (1 600 matches): specs/performance.md, "Search". Under one LIMIT with the matches, the
    planner (15) costs the count as if it stopped after a page and walks all the owner's rows in date order."""
    key = _sort_keys(_TASKS)[sort.value.lstrip("-")].label("sort_key")
    matches = rows_of(_TASKS.id, key).where(*conditions).cte("matches").prefix_with("MATERIALIZED")
    chosen = (
        rows_of(matches.c.id, matches.c.sort_key)
        .order_by(*_ordered(sort, matches.c.sort_key, matches.c.id))
        .limit(page[0])
        .offset(page[1])
        .subquery("page")
    )
    total = rows_of(func.count()).select_from(matches).scalar_subquery().label("total")
    return (
        rows_of(*_LISTED, total)
        .select_from(chosen.join(TASKS, _TASKS.id == chosen.c.id).join(_ITEM, true()))
        .order_by(*_ordered(sort, chosen.c.sort_key, chosen.c.id))
    )


@lru_cache(maxsize=512)
def _count_statement(shape: Shape, postgresql: bool) -> Any:
    return rows_of(func.count()).select_from(TASKS).where(*_conditions(shape, postgresql))


async def get_task(session: AsyncSession, owner_id: str, task_id: int, *, for_update: bool = False) -> Task:
    """The owner's task or NotFound. `for_update` locks the row for a read-modify-write: FOR NO KEY UPDATE on
    PostgreSQL, the lock an UPDATE takes, which lets a new subtask's foreign-key check (KEY SHARE) through."""
    query = select(Task).where(Task.id == task_id, Task.user_id == owner_id)
    if for_update:
        query = query.with_for_update(key_share=True)
    task = (await session.exec(query)).first()
    if task is None:
        raise NotFound("Task not found")
    return task


# A task locked for a write with its label names (a write answers them), in one round trip; the lock on the
# task's row only. Built once, its values bound as it runs.
_LOCKED_WITH_LABELS: Any = (
    rows_of(Task, label_service.names_of(col(Task.id)))
    .where(col(Task.id) == bindparam("task_id"), col(Task.user_id) == bindparam("owner_id"))
    .with_for_update(key_share=True, of=Task)
)


async def lock_task(session: AsyncSession, owner_id: str, task_id: int) -> Task:
    """The owner's task locked for a write, with its labels loaded; the owner's row locked first (the one lock
    order of every write: services/changes.py); or NotFound. PostgreSQL reads the labels in the locking
    statement; SQLite (one writer at a time) in one more query."""
    await lock_user_row(session, owner_id)
    if session.get_bind().dialect.name != "postgresql":
        return (await label_service.attach(session, [await get_task(session, owner_id, task_id, for_update=True)]))[0]
    found = (await session.exec(_LOCKED_WITH_LABELS, params={"task_id": task_id, "owner_id": owner_id})).first()
    if found is None:
        raise NotFound("Task not found")
    task: Task = found[0]
    task.set_labels(found[1] or [])
    return task


async def _recorded(session: AsyncSession, owner_id: str, task: Task) -> Task:
    """The task's change, for the feed, in the writing transaction."""
    assert task.id is not None
    await change_log.record(session, owner_id, ChangeType.TASK, [task.id])
    return task


async def read_task(session: AsyncSession, owner_id: str, task_id: int) -> Task:
    """The owner's task with its labels, to answer it; or NotFound."""
    task = await get_task(session, owner_id, task_id)
    await label_service.attach(session, [task])
    return task


async def read_tree(session: AsyncSession, owner_id: str, task_id: int) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """The owner's task with its subtree nested in `subtasks` (siblings in manual order), each a dict of
    `TaskTree`'s fields: one recursive query, each row with its labels on PostgreSQL (as a list is read), one
    more for the labels on SQLite; or NotFound. Also answers every node's `(id, version)` in tree order (what
    the representation's ETag is made of)."""
    connection = await session.connection()
    folded = connection.dialect.name == "postgresql"
    values = {"owner_id": owner_id, "task_id": task_id}
    rows = (await connection.execute(_tree_statement(folded), values)).all()
    if not rows:
        raise NotFound("Task not found")
    items = await _with_labels(session, rows, folded)
    versions = [(item["id"], item["version"]) for item in items]
    return task_tree.nest(items[0], items[1:]), versions


@lru_cache(maxsize=2)
def _tree_statement(folded: bool) -> Any:
    """The task `task_id` of `owner_id` and its subtree (`TaskPublic`'s columns; `folded`: then each task's label
    names), in tree order: built once, its values bound as it runs. Building it per request (an alias of `tasks`,
    the recursive CTE, the join) was about a third of the subtree read's CPU (specs/performance.md, "Subtree and
    feed page")."""
    tree = task_tree.descendants_query(bindparam("owner_id"), bindparam("task_id"), include_self=True).subquery()
    columns = [*_PAGE_COLUMNS[True], label_service.names_of(_TASKS.id)] if folded else _PAGE_COLUMNS[False]
    return rows_of(*columns).join(tree, tree.c.id == _TASKS.id).order_by(tree.c.depth, _TASKS.position, _TASKS.id)


async def _labels(session: AsyncSession, owner_id: str, task: Task, names: list[str] | None) -> Task:
    """Replace the task's labels with `names`; None keeps the ones `lock_task` loaded with it (every caller
    locked the task first, and no write since changed its labels)."""
    if names is not None:
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


async def create_task(
    session: AsyncSession, owner_id: str, payload: TaskCreate, zone_header: str | None = None
) -> Task:
    """`zone_header`: the request's `X-Timezone`, the zone `due_string` is read in (None: UTC)."""
    now = utcnow()
    scheduled = recurring.schedule(
        None,
        payload.model_dump(include={"due_date", "due_timezone", "recurrence", "due_string"}, exclude_unset=True),
        zone_header,
        now,
    )
    # Before the INSERT: its foreign-key check share-locks the user row, and two creates upgrading that share
    # lock to the exclusive one (labels, positions) would deadlock each other (PostgreSQL). The lock also
    # serialises the owner's tree and order writes (services/task_tree.py, services/task_order.py).
    await lock_user_row(session, owner_id)
    project_id = payload.project_id
    if payload.parent_id is not None:
        parent = await task_tree.check_parent(session, owner_id, payload.parent_id)
        if "project_id" in payload.model_fields_set and project_id != parent.project_id:
            raise _project_follows_parent()
        project_id = parent.project_id
    elif project_id is not None:
        await ensure_project(session, owner_id, project_id)
    data = payload.model_dump(exclude={"status", "completed", "labels", "project_id", "due_string"})
    data.update(_completion(None, payload.status, payload.completed) or {"status": TaskStatus.PENDING})
    data.update(scheduled, project_id=project_id)
    data["position"] = await task_order.last_position(session, owner_id, project_id, payload.parent_id)
    task = Task.model_validate(data, update={"user_id": owner_id})
    session.add(task)
    await session.flush()
    if payload.labels:
        await label_service.replace_task_labels(session, owner_id, task, payload.labels)
    return await _recorded(session, owner_id, task)


def _project_follows_parent() -> ValidationFailed:
    return ValidationFailed("project_id: a subtask's project is its parent's", field="project_id")


async def _place(
    session: AsyncSession, owner_id: str, task: Task, changes: dict[str, Any], after: tuple[int | None] | None
) -> dict[str, Any]:
    """The `parent_id`, `project_id` and `position` changes of a task moving to another parent or project (in
    `changes`, as sent), checked against the tree rules, and placed after `after` (a 1-tuple: the sibling id,
    or None for first) or last. A subtask's descendants follow its project."""
    await lock_user_row(session, owner_id)  # held already (lock_task): the owner's row comes first
    assert task.id is not None
    parent_id = changes.get("parent_id", task.parent_id)
    project_id = changes.get("project_id", task.project_id)
    if parent_id is not None:
        parent = await task_tree.check_parent(session, owner_id, parent_id, task.id)
        if "project_id" in changes and project_id != parent.project_id:
            raise _project_follows_parent()
        project_id = parent.project_id
    elif "project_id" in changes and project_id is not None and project_id != task.project_id:
        # A new link must name a pinned project; the current one is kept even while its project is unpinned.
        await ensure_project(session, owner_id, project_id)
    placed: dict[str, Any] = {"parent_id": parent_id, "project_id": project_id}
    if after is None:
        if (parent_id, project_id) == (task.parent_id, task.project_id):
            return placed  # same group: the task keeps its place
        placed["position"] = await task_order.last_position(session, owner_id, project_id, parent_id)
    else:
        (after_id,) = after
        if after_id is not None:
            await _check_sibling(session, owner_id, task.id, after_id, project_id, parent_id)
        placed["position"] = await task_order.position_after(
            session, owner_id, task.id, project_id, parent_id, after_id
        )
    if project_id != task.project_id:
        await task_tree.follow_project(session, owner_id, task.id, project_id)
    return placed


async def _check_sibling(
    session: AsyncSession, owner_id: str, task_id: int, after_id: int, project_id: int | None, parent_id: int | None
) -> None:
    after = await session.get(Task, after_id)
    if after is None or after.user_id != owner_id or after_id == task_id:
        raise ValidationFailed("after_id: no such task", field="after_id")
    if (after.parent_id, after.project_id) != (parent_id, project_id):
        raise ValidationFailed("after_id: not a sibling at the new place (same parent and project)", field="after_id")


async def update_task(
    session: AsyncSession, owner_id: str, task_id: int, payload: TaskUpdate, zone_header: str | None = None
) -> Task:
    task = await lock_task(session, owner_id, task_id)
    now = utcnow()
    changes = recurring.schedule(task, payload.model_dump(exclude_unset=True), zone_header, now)
    labels = changes.pop("labels", None)
    # Every check of the request before anything is written (a batch command rolls back to its savepoint, but
    # nothing should be recorded for a request refused anyway).
    completion = _completion(task, changes.pop("status", None), changes.pop("completed", None))
    if {"parent_id", "project_id"} & changes.keys():
        changes.update(await _place(session, owner_id, task, changes, None))
    changes.update(completion)
    completing = bool(changes.get("completed")) and not task.completed
    task = await save(session, task, changes | {"updated_at": now})
    if completing:
        task = await _completed(session, owner_id, task, now)
    return await _recorded(session, owner_id, await _labels(session, owner_id, task, labels))


async def _completed(session: AsyncSession, owner_id: str, task: Task, now: datetime) -> Task:
    """After a task was completed: a recurring one moves on to its next occurrence (open again, its subtasks
    too) unless its rule is exhausted; any other completes its open descendants."""
    task_id = task.id
    assert task_id is not None
    if task.recurrence is not None:
        following = await recurring.advance(session, task, now)
        if following is not None:
            task = await save(session, task, following)
            await task_tree.reopen_descendants(session, owner_id, task_id, now)
            return task
    await task_tree.complete_descendants(session, owner_id, task_id, now)
    return task


async def move_task(session: AsyncSession, owner_id: str, task_id: int, move: TaskMove) -> Task:
    """Place the task right after `after_id` (null: first) among its siblings under the new parent and
    project (each as sent, else unchanged): one row written, but for a rare renumbering."""
    task = await lock_task(session, owner_id, task_id)
    changes = move.model_dump(exclude_unset=True, exclude={"after_id"})
    placed = await _place(session, owner_id, task, changes, (move.after_id,))
    task = await save(session, task, placed | {"updated_at": utcnow()})
    return await _recorded(session, owner_id, await _labels(session, owner_id, task, None))


async def set_completed(session: AsyncSession, owner_id: str, task_id: int, completed: bool) -> Task:
    task = await lock_task(session, owner_id, task_id)
    completing, now = completed and not task.completed, utcnow()
    task = await save(session, task, _completion(task, None, completed) | {"updated_at": now})
    if completing:
        task = await _completed(session, owner_id, task, now)
    return await _recorded(session, owner_id, await _labels(session, owner_id, task, None))


async def list_completions(
    session: AsyncSession, owner_id: str, task_id: int, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """The owner's task's completions (newest first) and their total; NotFound for another's task."""
    await get_task(session, owner_id, task_id)
    return await recurring.completions(session, task_id, limit, offset)


async def delete_task(session: AsyncSession, owner_id: str, task_id: int) -> None:
    """Deletes the task and (ON DELETE CASCADE) its subtree: each gets a tombstone in the feed, recorded from
    the ids read before the DELETE."""
    await lock_user_row(session, owner_id)
    subtree = task_tree.descendants_query(owner_id, task_id, include_self=True).subquery()
    ids = list((await (await session.connection()).execute(rows_of(subtree.c.id))).scalars())
    await change_log.record(session, owner_id, ChangeType.TASK, ids, ChangeOp.DELETE, gone=True)
    result = await session.exec(delete(Task).where(col(Task.id) == task_id, col(Task.user_id) == owner_id))
    if result.rowcount == 0:
        raise NotFound("Task not found")
