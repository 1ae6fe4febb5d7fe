"""The change feed (`GET /api/{user_id}/changes`): a user's changes after a cursor, in commit order.

A cursor is `c<seq>` or `c<seq>.<guard>`: the last `seq` the client has, and (while a full sync is under way)
the highest `seq` committed when it began. Changes are read `WHERE seq > <seq>`; deletes at or below the guard
are skipped (a full sync never delivered their items). The cursor is expired (410) when a tombstone above the
guard was purged (`users.changes_floor`). Why no change is ever skipped: specs/api/changes.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import or_
from sqlalchemy import select as rows_of
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.errors import CursorExpired
from backend.models.change import ChangeOp, ChangeType
from backend.models.common import utcnow
from backend.models.project import ProjectPublic
from backend.services import changes
from backend.services import labels as label_service
from backend.services.tasks import public_columns

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
class Page:
    """Changes after a cursor, oldest first: each with the cursor right after it (a live event's id)."""

    changes: list[tuple[Cursor, dict[str, Any]]]
    cursor: Cursor  # after the page: where the next read goes on from
    has_more: bool


async def read_changes(
    session: AsyncSession, owner_id: str, cursor: Cursor | None, limit: int, retention_days: int
) -> dict[str, Any]:
    """One page of the owner's changes after `cursor` (None: the first page of a full sync, upserts only),
    oldest first, as `ChangePage`'s fields. CursorExpired if changes after `cursor` were purged."""
    await changes.purge(session, owner_id, utcnow() - timedelta(days=retention_days))
    page = await read_page(session, owner_id, cursor, limit)
    return {
        "changes": [change for _, change in page.changes],
        "cursor": page.cursor.encode(),
        "has_more": page.has_more,
    }


async def read_page(session: AsyncSession, owner_id: str, cursor: Cursor | None, limit: int) -> Page:
    """The page `read_changes` answers, without purging (the live stream's read: it takes no lock). Each
    change comes with the cursor the feed would answer if the page ended with it."""
    connection = await session.connection()
    # Read before the page, in a statement of its own: every seq up to `top` was committed before the page's
    # statement began, so the page sees them all (a later one is above `top`).
    top, floor = (
        await connection.execute(rows_of(_USERS.change_seq, _USERS.changes_floor).where(_USERS.id == owner_id))
    ).one()
    if cursor is not None and (cursor.guard < floor or cursor.guard > top):
        raise CursorExpired()
    if cursor is not None and cursor.seq == top:  # nothing committed since (guard <= top == seq)
        return Page([], cursor, False)
    after, guard = (0, top) if cursor is None else (cursor.seq, cursor.guard)
    keep = _CHANGES.op == ChangeOp.UPSERT.value
    if cursor is not None:
        keep = or_(keep, _CHANGES.seq > guard)
    query = (
        rows_of(_CHANGES.seq, _CHANGES.type, _CHANGES.item_id, _CHANGES.op, _CHANGES.version, _CHANGES.changed_at)
        .where(_CHANGES.user_id == owner_id, _CHANGES.seq > after, keep)
        .order_by(_CHANGES.seq)
        .limit(limit + 1)
    )
    rows = list((await connection.execute(query)).all())
    has_more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1].seq if rows else after
    # The whole log read: the cursor moves to what was committed when the read began (deletes skipped above
    # the last row are of items this client never had).
    next_cursor = Cursor(last, max(guard, last)) if has_more else Cursor(max(last, top), max(last, top))
    items = await _items(session, owner_id, rows)
    return Page(
        [
            (Cursor(row.seq, max(guard, row.seq)), _change(row, items.get((ChangeType(row.type), row.item_id))))
            for row in rows
        ],
        next_cursor,
        has_more,
    )


async def stream_start(session: AsyncSession, owner_id: str, text: str | None) -> Cursor:
    """Where a live stream starts: after `text` if it is a cursor of this feed (CursorExpired if the feed
    would refuse it), else (no id, an earlier draft's `<ms>-<seq>` event id, anything else) at the owner's
    last change: live only."""
    connection = await session.connection()
    top, floor = (
        await connection.execute(rows_of(_USERS.change_seq, _USERS.changes_floor).where(_USERS.id == owner_id))
    ).one()
    cursor = parse_cursor(text) if text is not None else None
    if cursor is None:
        return Cursor(top, top)
    if cursor.guard < floor or cursor.guard > top:
        raise CursorExpired()
    return cursor


def _change(row: Any, item: dict[str, Any] | None) -> dict[str, Any]:
    upsert = row.op == ChangeOp.UPSERT.value and item is not None
    return {
        "type": row.type,
        "id": row.item_id,
        "op": ChangeOp.UPSERT if upsert else ChangeOp.DELETE,
        "version": item["version"] if upsert and item is not None else row.version,
        "item": item if upsert else None,
        "changed_at": row.changed_at,
    }


async def _items(session: AsyncSession, owner_id: str, rows: list[Any]) -> dict[tuple[ChangeType, int], dict[str, Any]]:
    """The current rows of the page's upserts, as their single GET answers them: one query per type (and one
    for the tasks' labels)."""
    wanted: dict[ChangeType, list[int]] = {ChangeType.TASK: [], ChangeType.PROJECT: []}
    for row in rows:
        if row.op == ChangeOp.UPSERT.value:
            wanted[ChangeType(row.type)].append(row.item_id)
    connection = await session.connection()
    items: dict[tuple[ChangeType, int], dict[str, Any]] = {}
    if task_ids := wanted[ChangeType.TASK]:
        names, columns = public_columns()
        tasks = changes.TABLES[ChangeType.TASK].c
        query = rows_of(*columns).where(tasks.id.in_(task_ids), tasks.user_id == owner_id)
        found = (await connection.execute(query)).all()
        labels = await label_service.names_by_task(session, task_ids)
        for found_row in found:
            task = dict(zip(names, found_row, strict=True))
            task["labels"] = labels.get(task["id"], [])
            items[(ChangeType.TASK, task["id"])] = task
    if project_ids := wanted[ChangeType.PROJECT]:
        columns = [_PROJECTS[name] for name in _PROJECT_NAMES]
        query = rows_of(*columns).where(
            _PROJECTS.id.in_(project_ids), _PROJECTS.user_id == owner_id, _PROJECTS.is_active.is_(True)
        )
        for found_row in (await connection.execute(query)).all():
            project = dict(zip(_PROJECT_NAMES, found_row, strict=True))
            items[(ChangeType.PROJECT, project["id"])] = project
    return items
