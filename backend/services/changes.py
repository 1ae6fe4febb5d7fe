"""Recording changes for the change feed: every write of a task or project calls `record` in its transaction.

Ordering (specs/api/changes.md): `record` bumps the owner's `users.change_seq` with an UPDATE, which holds the
owner's row lock to commit (PostgreSQL; SQLite has one writer at a time). So the owner's writes are serialised,
and a change's `seq` is taken after every lower `seq` of that user was committed: reading a user's committed rows
in `seq` order, a reader can never later find a change committed with a `seq` below one it has seen.

Lock order: every write of a user's tasks and projects takes the owner's row first (`db.lock_user_row`, before
any task or project row), so two writers never wait on each other in opposite orders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import ARRAY, BigInteger, Integer, bindparam, cast, func, true
from sqlalchemy import select as rows_of
from sqlalchemy import update as update_rows
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db import after_commit, lock_user_row
from backend.models.change import Change, ChangeOp, ChangeType
from backend.models.common import utcnow
from backend.models.project import Project
from backend.models.task import Task
from backend.models.user import User

CHANGES: Any = Change.__table__  # type: ignore[attr-defined]
USERS: Any = User.__table__  # type: ignore[attr-defined]
TABLES: dict[ChangeType, Any] = {
    ChangeType.TASK: Task.__table__,  # type: ignore[attr-defined]
    ChangeType.PROJECT: Project.__table__,  # type: ignore[attr-defined]
}
_CHANGES = CHANGES.c
PURGE_BATCH = 500  # tombstones purged at most per feed read
# In a session's `info` (the app sets it on its sessionmaker): `ring(owner_id)` tells the owner's live streams
# that changes were committed; they read them from the feed (backend/events.py). Called after the commit, once
# per transaction and owner.
RING = "ring_changes"
_RUNG = "changes_rung"
Ring = Callable[[str], None]


# The statements are built once and their values bound as they run (building them was most of a write's cost
# of recording: specs/performance.md, "Issue 19").
_BUMP = (
    update_rows(USERS)
    .where(USERS.c.id == bindparam("owner_id"))
    .values(change_seq=USERS.c.change_seq + bindparam("count", type_=BigInteger))
    .returning(USERS.c.change_seq)
)


@lru_cache(maxsize=len(ChangeType))
def _versions_of(change_type: ChangeType) -> Any:
    table = TABLES[change_type]
    return rows_of(table.c.id, table.c.version).where(table.c.id.in_(bindparam("ids", expanding=True)))


@lru_cache(maxsize=2)
def _upsert(dialect: str) -> Any:
    """Each item's row of `changes` replaced by its newest change (run with one set of values per item)."""
    return _replacing((postgresql if dialect == "postgresql" else sqlite).insert(CHANGES))


def _replacing(statement: Any) -> Any:
    """`statement` (an INSERT into `changes`) replacing an item's row when it has one: its newest change wins."""
    return statement.on_conflict_do_update(
        index_elements=[_CHANGES.user_id, _CHANGES.type, _CHANGES.item_id],
        set_={name: statement.excluded[name] for name in ("seq", "op", "version", "changed_at")},
    )


async def record(
    session: AsyncSession,
    owner_id: str,
    change_type: ChangeType,
    ids: Sequence[int],
    op: ChangeOp = ChangeOp.UPSERT,
    *,
    gone: bool = False,
) -> None:
    """Record that the owner's items `ids` changed (`op`), in the writing transaction: each gets the next `seq`
    of the owner and its row of `changes` is replaced. Call it once the rows are written (their `version` is
    read here); `gone`: the rows are about to be deleted (the tombstone's version is the last one + 1).
    Three statements whatever the number of ids (one on PostgreSQL); none while the transaction `defer`s (`flush`
    writes them)."""
    ids = sorted(set(ids))
    if not ids:
        return
    await session.flush()
    connection = await session.connection()
    pending: list[_Pending] | None = session.info.get(_PENDING)
    if pending is not None:
        # The version of a row about to be deleted is read now; a live row's when the changes are written.
        versions = await _versions(connection, change_type, ids) if gone else None
        pending.append(_Pending(owner_id, change_type, ids, op, versions))
        return
    if connection.dialect.name == "postgresql":
        values = {"owner_id": owner_id, "ids": ids, "count": len(ids), "type": change_type.value, "op": op.value}
        await connection.execute(_record_at_once(change_type), {**values, "gone": int(gone), "changed_at": utcnow()})
        _ring_after_commit(session, owner_id)
        return
    versions = await _versions(connection, change_type, ids)
    entries = {(change_type, item_id): (op, versions.get(item_id, 0) + (1 if gone else 0)) for item_id in ids}
    await _write(session, owner_id, entries)


@lru_cache(maxsize=len(ChangeType))
def _record_at_once(change_type: ChangeType) -> Any:
    """PostgreSQL: `record`'s three statements (the items' versions, the owner's seq bumped, their rows of
    `changes` replaced) as one, a data-modifying CTE: one round trip per write instead of three. The bump locks
    the owner's row as before, and the items' rows are read in the writing transaction, as before:

        WITH bumped AS (UPDATE users SET change_seq = change_seq + :count WHERE id = :owner_id RETURNING change_seq)
        INSERT INTO changes (...) SELECT :owner_id, :type, items.item_id, bumped.change_seq - :count + items.ord,
               :op, coalesce(item.version, 0) + :gone, :changed_at
        FROM bumped JOIN unnest(:ids) WITH ORDINALITY AS items (item_id, ord) ON true
             LEFT JOIN <tasks | pinned_projects> AS item ON item.id = items.item_id
        ON CONFLICT (user_id, type, item_id) DO UPDATE SET seq, op, version, changed_at = the new ones
    """
    count = bindparam("count", type_=BigInteger)
    bumped = _BUMP.cte("bumped")
    items = (
        func.unnest(cast(bindparam("ids"), ARRAY(Integer)))
        .table_valued("item_id", with_ordinality="ord")
        .render_derived(name="items")
    )
    item = TABLES[change_type].alias("item")
    chosen = rows_of(
        bindparam("owner_id"),
        bindparam("type"),
        items.c.item_id,
        bumped.c.change_seq - count + items.c.ord,
        bindparam("op"),
        func.coalesce(item.c.version, 0) + bindparam("gone", type_=Integer),
        bindparam("changed_at", type_=CHANGES.c.changed_at.type),
    ).select_from(bumped.join(items, true()).outerjoin(item, item.c.id == items.c.item_id))
    columns = ["user_id", "type", "item_id", "seq", "op", "version", "changed_at"]
    return _replacing(postgresql.insert(CHANGES).from_select(columns, chosen))


@dataclass(frozen=True)
class _Pending:
    owner_id: str
    change_type: ChangeType
    ids: list[int]
    op: ChangeOp
    versions: dict[int, int] | None  # a tombstone's last version (+1 below); None: read when written


def defer(session: AsyncSession) -> None:
    """Until `flush`, this transaction's `record`s are kept in memory and written together: an item changed
    several times gets one seq (for its last change), and the owner's row is locked for its seq only then
    (a batch: three statements for all its commands instead of three per command)."""
    session.info.setdefault(_PENDING, [])


def mark(session: AsyncSession) -> int:
    """Where the deferred records stand (before a savepoint): `forget(session, mark)` if it rolls back."""
    return len(session.info.get(_PENDING, ()))


def forget(session: AsyncSession, position: int) -> None:
    """Drop the deferred records made after `position` (their savepoint was rolled back)."""
    del session.info.get(_PENDING, [])[position:]


async def flush(session: AsyncSession) -> None:
    """Write the deferred records (see `defer`) and stop deferring."""
    pending: list[_Pending] = session.info.pop(_PENDING, [])
    if not pending:
        return
    await session.flush()
    connection = await session.connection()
    by_owner: dict[str, dict[tuple[ChangeType, int], tuple[ChangeOp, int | None]]] = {}
    for entry in pending:
        entries = by_owner.setdefault(entry.owner_id, {})
        for item_id in entry.ids:
            key = (entry.change_type, item_id)
            entries.pop(key, None)  # a later change of the item: its seq comes after the others'
            entries[key] = (entry.op, None if entry.versions is None else entry.versions.get(item_id, 0) + 1)
    for owner_id, entries in by_owner.items():
        live: dict[ChangeType, list[int]] = {}
        for (change_type, item_id), (_, version) in entries.items():
            if version is None:
                live.setdefault(change_type, []).append(item_id)
        read = {change_type: await _versions(connection, change_type, ids) for change_type, ids in live.items()}
        await _write(
            session,
            owner_id,
            {
                key: (op, version if version is not None else read[key[0]].get(key[1], 0))
                for key, (op, version) in entries.items()
            },
        )


_PENDING = "changes_deferred"


async def _versions(connection: Any, change_type: ChangeType, ids: Sequence[int]) -> dict[int, int]:
    return dict((await connection.execute(_versions_of(change_type), {"ids": list(ids)})).all())


Entries = dict[tuple[ChangeType, int], tuple[ChangeOp, int]]  # (type, item id) -> (op, version)


async def _write(session: AsyncSession, owner_id: str, entries: Entries) -> None:
    """The owner's next seqs, one per entry in order (`(type, item id) -> (op, version)`), and their rows."""
    connection = await session.connection()
    count = len(entries)
    top = (await connection.execute(_BUMP, {"owner_id": owner_id, "count": count})).scalar_one()
    now = utcnow()
    rows = [
        {
            "user_id": owner_id,
            "type": change_type.value,
            "item_id": item_id,
            "seq": top - count + 1 + i,
            "op": op.value,
            "version": version,
            "changed_at": now,
        }
        for i, ((change_type, item_id), (op, version)) in enumerate(entries.items())
    ]
    await connection.execute(_upsert(connection.dialect.name), rows)
    _ring_after_commit(session, owner_id)


def _ring_after_commit(session: AsyncSession, owner_id: str) -> None:
    """Ring the owner's live streams once this transaction is committed (once, however many records). A ring
    after a rollback (a savepoint's) would only make streams read nothing new."""
    ring: Ring | None = session.info.get(RING)
    rung: set[str] = session.info.setdefault(_RUNG, set())
    if ring is None or owner_id in rung:
        return
    rung.add(owner_id)

    def ring_now() -> None:
        rung.discard(owner_id)
        ring(owner_id)

    after_commit(session, ring_now)


def expired_tombstones(owner_id: Any, before: Any) -> list[Any]:
    """Conditions on `changes`: the owner's tombstones recorded before `before` (values or bind parameters),
    the ones `purge` forgets."""
    return [_CHANGES.user_id == owner_id, _CHANGES.op == ChangeOp.DELETE.value, _CHANGES.changed_at < before]


async def purge(session: AsyncSession, owner_id: str, before: datetime) -> None:
    """Forget the owner's tombstones (deletes) recorded before `before`, at most PURGE_BATCH of them, and raise
    the owner's `changes_floor` to the highest purged `seq`: a cursor from before it is expired. Only a
    cheap indexed look when there is nothing to purge; else under the owner's row lock."""
    connection = await session.connection()
    expired = rows_of(_CHANGES.id, _CHANGES.seq).where(*expired_tombstones(owner_id, before))
    if (await connection.execute(expired.limit(1))).first() is None:
        return
    await lock_user_row(session, owner_id)
    rows = (await connection.execute(expired.order_by(_CHANGES.seq).limit(PURGE_BATCH))).all()
    if not rows:
        return
    await connection.execute(CHANGES.delete().where(_CHANGES.id.in_([row_id for row_id, _ in rows])))
    highest = max(seq for _, seq in rows)
    await connection.execute(
        update_rows(USERS)
        .where(USERS.c.id == owner_id)
        .where(USERS.c.changes_floor < highest)
        .values(changes_floor=highest)
    )
