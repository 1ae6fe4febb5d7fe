"""The change feed's rows: per user, each task's and project's latest change, numbered in commit order.

One row per (user, type, item): a later change of the item overwrites its row with a higher `seq`, so the feed
(`GET /api/{user_id}/changes`) reads a user's rows after a cursor in `seq` order. `seq` comes from
`users.change_seq`, bumped under the owner's row lock by the writing transaction (services/changes.py,
specs/api/changes.md: why that order is commit order).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Index, String, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from backend.models.common import RESPONSE_CONFIG, utcnow
from backend.models.project import ProjectPublic
from backend.models.task import TaskPublic


class ChangeType(StrEnum):
    TASK = "task"
    PROJECT = "project"


class ChangeOp(StrEnum):
    UPSERT = "upsert"
    DELETE = "delete"


_DELETES_SQL = "op = 'delete'"


class Change(SQLModel, table=True):
    __tablename__ = "changes"
    __table_args__ = (
        UniqueConstraint("user_id", "type", "item_id", name="uq_changes_user_id_type_item_id"),
        Index("ix_changes_user_id_seq", "user_id", "seq"),
        # The feed's purge probe on every read (services/changes.purge): a user's tombstones past the retention.
        # Without it the probe read every row of the user (4 ms on PostgreSQL for 10 000 upserts).
        Index(
            "ix_changes_user_id_changed_at_deletes",
            "user_id",
            "changed_at",
            sqlite_where=text(_DELETES_SQL),
            postgresql_where=text(_DELETES_SQL),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(foreign_key="users.id", ondelete="CASCADE", max_length=64)
    type: ChangeType = Field(sa_type=String(16))
    item_id: int
    seq: int = Field(sa_type=BigInteger)
    op: ChangeOp = Field(sa_type=String(8))
    version: int
    changed_at: datetime = Field(default_factory=utcnow)


class ChangePublic(SQLModel):
    """One change of the feed: an upsert carries the item as its single GET answers it; a delete (a deleted
    task, an unpinned project) carries `item: null`."""

    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    type: ChangeType
    id: int
    op: ChangeOp
    version: int
    item: TaskPublic | ProjectPublic | None
    changed_at: datetime


class ChangePage(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    changes: list[ChangePublic]
    cursor: str = Field(
        description="Pass as `cursor` to read the changes after this page", schema_extra={"examples": ["c42"]}
    )
    has_more: bool = Field(description="More changes are waiting: ask again at once with `cursor`")
