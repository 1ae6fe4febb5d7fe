"""The change feed (`GET /api/{user_id}/changes`): a user's changes after a cursor, in commit order.

A cursor is `c<seq>` or `c<seq>.<guard>`: the last `seq` the client has, and (while a full sync is under way)
the highest `seq` committed when it began. Changes are read `WHERE seq > <seq>`; deletes at or below the guard
are skipped (a full sync never delivered their items). The cursor is expired (410) when a tombstone above the
guard was purged (`users.changes_floor`). Why no change is ever skipped: specs/api/changes.md.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from pydantic_core import to_json
from sqlalchemy import Integer, and_, bindparam, exists, or_, true
from sqlalchemy import select as rows_of
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.errors import CursorExpired
from backend.models.change import ChangeOp, ChangeType
from backend.models.common import utcnow
from backend.models.project import ProjectPublic
from backend.services import changes
from backend.services import labels as label_service
from backend.services.tasks import as_json, json_fields, public_columns
from backend.services.wall_times import as_json_text, as_stored, is_timestamp, utc

CURSOR = re.compile(r"^c(\d{1,18})(?:\.(\d{1,18}))?$")
_CHANGES = changes.CHANGES.c
_USERS = changes.USERS.c
_PROJECTS = changes.TABLES[ChangeType.PROJECT].c
_PROJECT_NAMES = list(ProjectPublic.model_fields)


@dataclass(frozen=True)
class Cursor:
    seq: int
    guard: int  # >= seq; above seq only while a full sync is under way

    def encode(self) -> str:
        return f"c{self.seq}" if self.guard <= self.seq else f"c{self.seq}.{self.guard}"


def parse_cursor(text: str) -> Cursor | None:
    """The cursor `text` names, or None if it cannot be one of ours."""
    match = CURSOR.match(text)
    if match is None:
        return None
    seq = int(match.group(1))
    guard = int(match.group(2)) if match.group(2) is not None else seq
    return Cursor(seq, guard) if guard > seq or match.group(2) is None else None


def cursor_of(seq: int) -> str:
    """The cursor right after change `seq` (a live event's id)."""
    return Cursor(seq, seq).encode()


async def current_cursor(session: AsyncSession, owner_id: str) -> str:
    """The cursor right after the owner's last change this transaction can see (its own included): what a
    batch answers, so `GET /changes` goes on from there. Read from the owner's row, never remembered: a command
    rolled back to its savepoint took its seq back with it."""
    connection = await session.connection()
    seq = (await connection.execute(rows_of(_USERS.change_seq).where(_USERS.id == owner_id))).scalar_one()
    return cursor_of(int(seq))


@dataclass(frozen=True)
class FeedPage:
    """What `GET /changes` answers (`ChangePage`), its changes already serialised: a JSON array's text."""

    changes: str
    cursor: str
    has_more: bool


@dataclass(frozen=True)
class Page:
    """Changes after a cursor, oldest first: each with the cursor right after it (a live event's id)."""

    changes: list[tuple[Cursor, dict[str, Any]]]
    cursor: Cursor  # after the page: where the next read goes on from
    has_more: bool


async def read_changes(
    session: AsyncSession, owner_id: str, cursor: Cursor | None, limit: int, retention_days: int
) -> FeedPage:
    """One page of the owner's changes after `cursor` (None: the first page of a full sync, upserts only),
    oldest first, its changes already serialised. CursorExpired if changes after `cursor` were purged."""
    connection = await session.connection()
    before = utcnow() - timedelta(days=retention_days)
    values = {"owner_id": owner_id, "before": before}
    # The head and whether any tombstone is due for purging, in one statement; the purge (rare) takes the
    # owner's row lock and raises the floor, so the head is read again after it.
    top, floor, expired = (await connection.execute(_HEAD_AND_EXPIRED, values)).one()
    if expired:
        await changes.purge(session, owner_id, before)
        top, floor = (await connection.execute(_HEAD, values)).one()
    if connection.dialect.name == "postgresql":
        # PostgreSQL writes each task's JSON (`_json_page_statement`); only a project's is built here.
        rows, next_cursor, has_more = await _read(
            session, owner_id, cursor, limit, int(top), int(floor), _json_page_statement()
        )
        texts = [_change_text(row) for row in rows]
    else:
        rows, next_cursor, has_more = await _read(
            session, owner_id, cursor, limit, int(top), int(floor), _page_statement(False)
        )
        texts = [to_json(change).decode() for change in await _changes(session, rows, False)]
    return FeedPage("[" + ",".join(texts) + "]", next_cursor.encode(), has_more)


async def read_page(session: AsyncSession, owner_id: str, cursor: Cursor | None, limit: int) -> Page:
    """The page `read_changes` answers, without purging (the live stream's read: it takes no lock). Each
    change comes with the cursor the feed would answer if the page ended with it."""
    connection = await session.connection()
    top, floor = (await connection.execute(_HEAD, {"owner_id": owner_id})).one()
    folded = connection.dialect.name == "postgresql"
    statement = _page_statement(folded)
    rows, next_cursor, has_more = await _read(session, owner_id, cursor, limit, int(top), int(floor), statement)
    found, seqs = await _changes(session, rows, folded), [row[0] for row in rows]
    guard = int(top) if cursor is None else cursor.guard
    return Page(
        [(Cursor(seq, max(guard, seq)), change) for seq, change in zip(seqs, found, strict=True)],
        next_cursor,
        has_more,
    )


async def _read(
    session: AsyncSession, owner_id: str, cursor: Cursor | None, limit: int, top: int, floor: int, statement: Any
) -> tuple[Sequence[Any], Cursor, bool]:
    """The page after `cursor`, given the owner's head `top` and `floor`, read in a statement of their own before
    this one: every seq up to `top` was committed before the page's statement began, so the page sees them all
    (a later one is above `top`). The page's rows of `statement` (one of the page statements below), the cursor
    after the page and `has_more`."""
    if cursor is not None and (cursor.guard < floor or cursor.guard > top):
        raise CursorExpired()
    if cursor is not None and cursor.seq == top:  # nothing committed since (guard <= top == seq)
        return [], cursor, False
    after, guard = (0, top) if cursor is None else (cursor.seq, cursor.guard)
    # A full sync's first page skips every delete; a cursor's page those at or below its guard.
    deletes_after = _NO_DELETES if cursor is None else guard
    connection = await session.connection()
    values = {"owner_id": owner_id, "after": after, "deletes_after": deletes_after, "limit": limit + 1}
    rows = (await connection.execute(statement, values)).all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1][0] if rows else after
    # The whole log read: the cursor moves to what was committed when the read began (deletes skipped above
    # the last row are of items this client never had).
    next_cursor = Cursor(last, max(guard, last)) if has_more else Cursor(max(last, top), max(last, top))
    return rows, next_cursor, has_more


def page_query(owner_id: str, after: int, limit: int) -> Any:
    """The page statement `GET /changes` runs on PostgreSQL for an incremental read after seq `after`, its values
    bound (to read its plan; a request binds them as it runs it)."""
    values = {"owner_id": owner_id, "after": after, "deletes_after": after, "limit": limit + 1}
    return _json_page_statement().params(values)


async def stream_start(session: AsyncSession, owner_id: str, text: str | None) -> Cursor:
    """Where a live stream starts: after `text` if it is a cursor of this feed (CursorExpired if the feed
    would refuse it), else (no id, an earlier draft's `<ms>-<seq>` event id, anything else) at the owner's
    last change: live only."""
    connection = await session.connection()
    top, floor = (await connection.execute(_HEAD, {"owner_id": owner_id})).one()
    cursor = parse_cursor(text) if text is not None else None
    if cursor is None:
        return Cursor(top, top)
    if cursor.guard < floor or cursor.guard > top:
        raise CursorExpired()
    return cursor


async def _changes(session: AsyncSession, rows: Sequence[Any], folded: bool) -> list[dict[str, Any]]:
    """Each row of `_page_statement` as its change: an upsert carries its item as the single GET answers it
    (`folded`: the task's labels came with the row; else one more query for the page's tasks' labels). An upsert
    whose row has no item (a task not found, a project not pinned) is answered as a delete."""
    found: list[dict[str, Any]] = []
    unlabelled: list[dict[str, Any]] = []
    task_end = _TASK_AT + len(_TASK_NAMES) + (1 if folded else 0)
    for row in rows:
        _, kind, item_id, op, version, changed_at = row[:_TASK_AT]
        item: dict[str, Any] | None = None
        if op == _UPSERT:
            if kind == _TASK:
                if row[_TASK_AT] is not None:
                    item = dict(zip(_TASK_FIELDS, row[_TASK_AT:task_end], strict=False))
                    for name in _TASK_TIMES:
                        if item[name] is not None:
                            item[name] = utc(item[name])
                    if folded:
                        item["labels"] = item["labels"] or []
                    else:
                        unlabelled.append(item)
            else:
                item = _project(row, task_end)
        found.append(_change(kind, item_id, version, item, utc(changed_at)))
    if unlabelled:
        labels = await label_service.names_by_task(session, [item["id"] for item in unlabelled])
        for item in unlabelled:
            item["labels"] = labels.get(item["id"], [])
    return found


def _project(row: Sequence[Any], at: int) -> dict[str, Any] | None:
    """The pinned project of a page row, from its columns at `at` on (None: not that type, gone or unpinned)."""
    if row[at] is None:
        return None
    item = dict(zip(_PROJECT_NAMES, row[at:], strict=True))
    for name in _PROJECT_TIMES:
        if item[name] is not None:
            item[name] = utc(item[name])
    return item


def _change(kind: str, item_id: int, version: int, item: dict[str, Any] | None, changed_at: Any) -> dict[str, Any]:
    """A change as `ChangeItem` has it: an upsert with its item, or (no item) a delete with the change's version."""
    return {
        "type": kind,
        "id": item_id,
        "op": _DELETE if item is None else _UPSERT,
        "version": version if item is None else item["version"],
        "item": item,
        "changed_at": changed_at,
    }


def _change_text(row: Sequence[Any]) -> str:
    """A row of `_json_page_statement` as its change's JSON, the bytes `ChangeItem` would be serialised to (checked
    by tests/routers/test_changes.py): the task's item and every timestamp come written by PostgreSQL, a project's
    item is built and serialised here."""
    _, kind, item_id, op, version, changed_at, task_version, task_json = row[:_JSON_PROJECT_AT]
    if task_json is not None:
        return (
            f'{{"type":"{kind}","id":{item_id},"op":"{_UPSERT}","version":{task_version},"item":{task_json},'
            f'"changed_at":"{changed_at}"}}'
        )
    project = _project(row, _JSON_PROJECT_AT) if op == _UPSERT else None
    if project is not None:
        return to_json(_change(kind, item_id, version, project, changed_at)).decode()
    return (
        f'{{"type":"{kind}","id":{item_id},"op":"{_DELETE}","version":{version},"item":null,'
        f'"changed_at":"{changed_at}"}}'
    )


# The statements are built once, their values bound as they run (specs/performance.md, "Issue 19").
_HEAD = rows_of(_USERS.change_seq, _USERS.changes_floor).where(_USERS.id == bindparam("owner_id"))
_HEAD_AND_EXPIRED = rows_of(
    _USERS.change_seq,
    _USERS.changes_floor,
    exists().where(*changes.expired_tombstones(bindparam("owner_id"), bindparam("before"))).label("expired"),
).where(_USERS.id == bindparam("owner_id"))
_NO_DELETES = 2**62  # above every seq: a full sync's first page keeps no delete
_UPSERT, _TASK = ChangeOp.UPSERT.value, ChangeType.TASK.value
_DELETE = ChangeOp.DELETE.value  # as str, as `_UPSERT`: the enum's serialiser was per row
_TASK_NAMES, _TASK_COLUMNS = public_columns()
_TASK_FIELDS = [*_TASK_NAMES, "labels"]
_TASK_AT = 6  # a page row: the change's six columns, the task's (its labels folded), the project's
_JSON_PROJECT_AT = 8  # a JSON page row: the change's six columns, the task's version and JSON, the project's
_TASKS = changes.TABLES[ChangeType.TASK]
_CHANGE_COLUMNS = [_CHANGES.seq, _CHANGES.type, _CHANGES.item_id, _CHANGES.op, _CHANGES.version]
# The page's timestamps are read as stored and turned to UTC only where not NULL (services/wall_times.py): the
# type's own conversion ran on every value of every row (a task row's NULL project columns too), about a third of
# the page's CPU in the profile (specs/performance.md, "Issue 19"), and PostgreSQL's UTC wall times spare psycopg's
# and the type's zone conversions: 1.7 ms of CPU less per page of 200 ("Subtree and feed page").
_TASK_TIMES = [column.name for column in _TASK_COLUMNS if is_timestamp(column)]
_PROJECT_TIMES = [name for name in _PROJECT_NAMES if is_timestamp(_PROJECTS[name])]


_UPSERTED = _CHANGES.op == _UPSERT
_TASK_OF = and_(
    _UPSERTED, _CHANGES.type == _TASK, _TASKS.c.id == _CHANGES.item_id, _TASKS.c.user_id == _CHANGES.user_id
)


@lru_cache(maxsize=2)
def _page_statement(folded: bool) -> Any:
    """The owner's changes after `after` in seq order (deletes only above `deletes_after`), at most `limit`, each
    with the current row of its upsert's item: the task's columns (`folded`: its label names too, as a list
    folds them on PostgreSQL), then the pinned project's (NULLs when it is not that type, gone or unpinned)."""
    joined: Any = _TASKS
    task_of: Any = _TASK_OF
    if folded:
        # PostgreSQL: each change's task by its primary key, as a LATERAL subquery (its LIMIT keeps the planner
        # from pulling it up into a join). Joined plainly, a page of 200 on a user owning most of `tasks` (the
        # benchmark's) was a hash join over a sequential scan of all the owner's tasks: 7.8 ms of PostgreSQL per
        # page instead of 3.0 (specs/performance.md, "Subtree and feed page"). SQLite has no LATERAL; its
        # planner probes the key anyway.
        joined = rows_of(*_TASK_COLUMNS).where(task_of).limit(1).lateral("task")
        task_of = true()
    task_columns = [as_stored(joined.c[column.name], f"task_{column.name}", folded) for column in _TASK_COLUMNS]
    if folded:
        task_columns.append(label_service.names_of(joined.c.id).label("task_labels"))
    changed_at = as_stored(_CHANGES.changed_at, "changed_at", folded)
    return _paged([*_CHANGE_COLUMNS, changed_at, *task_columns], joined, task_of, folded)


@lru_cache(maxsize=1)
def _json_page_statement() -> Any:
    """PostgreSQL: `_page_statement`'s page with each task written as JSON by PostgreSQL, as `TaskPublic`
    serialises it (`services/tasks.json_fields`), and the change's `changed_at` as text: a row is the change's
    five columns, `changed_at`, the task's version and JSON (NULL: no task), then the pinned project's columns.
    Turning 200 rows into dicts and serialising them was about 2.3 ms of the server's CPU per page
    (specs/performance.md, "The feed page written by PostgreSQL")."""
    # The task by its primary key in a LATERAL subquery, as `_page_statement(True)`; `correlate`: the item's
    # subquery reads the outer page's change (else SQLAlchemy would add `changes` to its FROM).
    item = rows_of(*json_fields()).where(_TASK_OF).limit(1).correlate(changes.CHANGES).subquery("item")
    task = rows_of(item.c.version, as_json(item)).lateral("task")
    changed_at = as_json_text(_CHANGES.changed_at).label("changed_at")
    columns = [*_CHANGE_COLUMNS, changed_at, task.c.version.label("task_version"), task.c.json.label("task_json")]
    return _paged(columns, task, true(), True)


def _paged(columns: list[Any], task: Any, task_of: Any, folded: bool) -> Any:
    """The page of changes with `columns`, joined to `task` on `task_of` and to the pinned project's columns."""
    project_of = and_(
        _UPSERTED,
        _CHANGES.type == ChangeType.PROJECT.value,
        _PROJECTS.id == _CHANGES.item_id,
        _PROJECTS.user_id == _CHANGES.user_id,
        _PROJECTS.is_active.is_(True),
    )
    project_columns = [as_stored(_PROJECTS[name], f"project_{name}", folded) for name in _PROJECT_NAMES]
    of_owner = _CHANGES.user_id == bindparam("owner_id")
    return (
        rows_of(*columns, *project_columns)
        .select_from(changes.CHANGES.outerjoin(task, task_of).outerjoin(changes.TABLES[ChangeType.PROJECT], project_of))
        .where(of_owner, _CHANGES.seq > bindparam("after"), or_(_UPSERTED, _CHANGES.seq > bindparam("deletes_after")))
        .order_by(_CHANGES.seq)
        .limit(bindparam("limit", type_=Integer))
    )
