"""Idempotency keys: the first outcome of a create, replayed to a client that retries with the same key."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from backend.models.common import utcnow


class KeyStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    DONE = "done"


class IdempotencyKey(SQLModel, table=True):
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("user_id", "key"),  # the claim: one row per user and key, on every instance
        Index("ix_idempotency_keys_expires_at", "expires_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(foreign_key="users.id", ondelete="CASCADE", max_length=64)
    key: str = Field(max_length=255)
    request_hash: str = Field(max_length=64)
    status: KeyStatus = Field(default=KeyStatus.IN_PROGRESS, sa_type=String(16))
    response_status: int | None = None
    response_body: str | None = Field(default=None, sa_type=Text)
    response_headers: str | None = Field(default=None, sa_type=Text)  # a JSON object of replayed headers
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
