"""Idempotency keys in the database, so a key holds across instances. The claims run in transactions of their
own (backend/idempotency.py commits each at once); `complete` joins the transaction of the work it records."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col, delete, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db import flush_unique
from backend.errors import Conflict
from backend.models.common import utcnow
from backend.models.idempotency import IdempotencyKey, KeyStatus

TTL = timedelta(hours=24)
# A key still `in_progress` after this long belongs to a request that died with its process.
STALE_AFTER = timedelta(minutes=5)


def _this(user_id: str, key: str) -> ColumnElement[bool]:
    return and_(col(IdempotencyKey.user_id) == user_id, col(IdempotencyKey.key) == key)


async def find(session: AsyncSession, user_id: str, key: str) -> IdempotencyKey | None:
    # populate_existing: a poller's session must see the row's new state, not its identity-map copy.
    query = select(IdempotencyKey).where(_this(user_id, key)).execution_options(populate_existing=True)
    return (await session.exec(query)).first()


async def claim(session: AsyncSession, user_id: str, key: str, request_hash: str) -> IdempotencyKey | None:
    """Take the key for this request (None), or answer the row of the request that holds it."""
    for _ in range(3):
        now = utcnow()
        # An expired key is free again; removing it here keeps the unique constraint the only arbiter.
        await session.exec(delete(IdempotencyKey).where(_this(user_id, key), col(IdempotencyKey.expires_at) <= now))
        fields = {"user_id": user_id, "key": key, "request_hash": request_hash, "created_at": now}
        row = IdempotencyKey.model_validate(fields, update={"expires_at": now + TTL})
        try:
            await flush_unique(session, row, _contended)
            return None
        except Conflict:
            existing = await find(session, user_id, key)
            if existing is not None:
                return existing
        # Released between our insert and our read: try again.
    raise _contended()


def _contended() -> Conflict:
    return Conflict("This Idempotency-Key is contended; retry shortly", headers={"Retry-After": "1"})


async def take_over(session: AsyncSession, user_id: str, key: str, request_hash: str) -> bool:
    """Claim a stale `in_progress` key (its request's process died). Atomic: one taker wins."""
    now = utcnow()
    result = await session.exec(
        update(IdempotencyKey)
        .where(
            _this(user_id, key),
            col(IdempotencyKey.status) == KeyStatus.IN_PROGRESS,
            col(IdempotencyKey.request_hash) == request_hash,
            col(IdempotencyKey.created_at) < now - STALE_AFTER,
        )
        .values(created_at=now, expires_at=now + TTL)
    )
    return bool(result.rowcount == 1)


async def complete(session: AsyncSession, user_id: str, key: str, *, status: int, body: str, headers: str) -> None:
    await session.exec(
        update(IdempotencyKey)
        .where(_this(user_id, key))
        .values(status=KeyStatus.DONE, response_status=status, response_body=body, response_headers=headers)
    )


async def release(session: AsyncSession, user_id: str, key: str) -> None:
    """The request failed: forget the key, so a retry runs for real."""
    await session.exec(
        delete(IdempotencyKey).where(_this(user_id, key), col(IdempotencyKey.status) == KeyStatus.IN_PROGRESS)
    )


async def purge_expired(session: AsyncSession) -> int:
    result = await session.exec(delete(IdempotencyKey).where(col(IdempotencyKey.expires_at) <= utcnow()))
    return int(result.rowcount)
