"""Sync runs: one row per refresh of a project's repository data (SyncRun table / SyncRunPublic)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlalchemy import CheckConstraint, Column, Index, String, text
from sqlmodel import Field, SQLModel

from backend.models.common import RESPONSE_CONFIG, utcnow
from backend.models.project import JSONType


class SyncStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class StageStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


ACTIVE_STATUSES = (SyncStatus.QUEUED, SyncStatus.RUNNING)
_ACTIVE_SQL = "status IN ('queued', 'running')"


class SyncRun(SQLModel, table=True):
    __tablename__ = "sync_runs"
    __table_args__ = (
        Index("ix_sync_runs_project_id_created_at", "project_id", "created_at"),
        # At most one queued/running run per project, whichever instance or request inserts it.
        Index(
            "uq_sync_runs_project_id_active",
            "project_id",
            unique=True,
            sqlite_where=text(_ACTIVE_SQL),
            postgresql_where=text(_ACTIVE_SQL),
        ),
        Index("ix_sync_runs_status", "status"),
        CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed')", name="status"),
        CheckConstraint("progress BETWEEN 0 AND 100", name="progress"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="pinned_projects.id", ondelete="CASCADE")
    user_id: str = Field(foreign_key="users.id", ondelete="CASCADE", max_length=64)
    status: SyncStatus = Field(default=SyncStatus.QUEUED, sa_type=String(16))
    current_stage: str | None = Field(default=None, max_length=100)
    progress: int = 0
    stages: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType, nullable=True))
    results: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # The lease (never shown by the routes): the instance running the run, and until when it is
    # presumed alive. NULL owner or expiry (runs from before revision 0007): expired.
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = None
    lease_takeovers: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class StagePublic(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    name: str
    status: StageStatus
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


class SyncErrorPublic(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    stage: str | None = Field(description="The stage that failed (null when the run never reached one)")
    message: str


class SyncRunPublic(BaseModel):
    """The status of a sync run, as the status route and the project export show it."""

    model_config = ConfigDict(from_attributes=True, **RESPONSE_CONFIG)

    run_id: int = PydanticField(validation_alias=AliasChoices("run_id", "id"))
    project_id: int
    status: SyncStatus
    current_stage: str | None
    progress: int = PydanticField(ge=0, le=100)
    stages: list[StagePublic]
    error: SyncErrorPublic | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
