"""Tasks: TaskBase -> Task (table) / TaskCreate / TaskUpdate / TaskComplete / TaskPublic (TaskPublicV1: the
earlier drafts' shape, without the fields added since)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, StringConstraints, field_validator
from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, Integer, String
from sqlmodel import Field, SQLModel

from backend.models.common import (
    NO_NUL,
    NON_BLANK,
    NOT_NULL,
    RESPONSE_CONFIG,
    JsonBool,
    RowIdInt,
    UTCDatetime,
    refuse_null,
    utcnow,
)
from backend.models.label import LabelNames
from backend.recurrence import TimezoneError, validate_zone


class TaskStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class TaskPriority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255, pattern=NON_BLANK)]
Description = Annotated[str, StringConstraints(max_length=10_000, pattern=NO_NUL)]

MAX_DEPTH = 5  # a root task is level 1; its deepest descendant may be at level 5
MAX_POSITION_LENGTH = 255
# Ordering keys compare byte by byte (fractional indexing, services/task_order.py): on PostgreSQL the column
# sorts in the "C" collation, whatever the database's default (a locale collation ignores case at first).
PositionType = String(MAX_POSITION_LENGTH).with_variant(String(MAX_POSITION_LENGTH, collation="C"), "postgresql")


def _known_zone(name: str) -> str:
    try:
        return validate_zone(name)
    except TimezoneError as exc:
        raise ValueError(str(exc)) from None


# An IANA zone name (the longest today is 32 characters), one that zoneinfo knows.
TimezoneName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=NO_NUL), AfterValidator(_known_zone)
]
RecurrenceRule = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500, pattern=NO_NUL)]
DueString = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NON_BLANK)]


class TaskBase(SQLModel):
    title: str = Field(max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    status: TaskStatus = Field(default=TaskStatus.PENDING, sa_type=String(16))
    priority: TaskPriority = Field(default=TaskPriority.MEDIUM, sa_type=String(8))
    due_date: datetime | None = None
    project_id: int | None = None


class Task(TaskBase, table=True):
    __tablename__ = "tasks"
    __table_args__ = (
        # Backward scans of this index serve the default `-created_at` order with the owner filter.
        Index("ix_tasks_user_id_created_at", "user_id", "created_at", "id"),
        Index("ix_tasks_user_id_status", "user_id", "status"),
        # Open (or done) tasks newest first, and how many (revision 0015): the page in index order, the count
        # from the index alone.
        Index("ix_tasks_user_id_completed_created_at", "user_id", "completed", "created_at", "id"),
        Index("ix_tasks_user_id_due_date", "user_id", "due_date"),
        Index("ix_tasks_user_id_project_id", "user_id", "project_id"),
        # A task's children (parent_id=N, the subtree's recursive step), and a sibling group in manual order.
        Index("ix_tasks_parent_id", "parent_id"),
        Index("ix_tasks_user_id_project_id_parent_id_position", "user_id", "project_id", "parent_id", "position"),
        # Substring search (`q`) of one owner's tasks on PostgreSQL: a stored, lowered `search_text` column and
        # its trigram GIN index keyed by user_id (btree_gin), both the database's own, not the model's (revision
        # 0014, backend/migrations/runner.UNMODELLED; services/tasks._conditions).
        CheckConstraint("status IN ('pending', 'in_progress', 'completed')", name="status"),
        CheckConstraint("priority IN ('low', 'medium', 'high')", name="priority"),
        CheckConstraint("completed = (status = 'completed')", name="completed_matches_status"),
        # SQLite: never reuse a deleted task's id (the change feed keeps one row per task id, and an ETag names
        # the id): AUTOINCREMENT, as PostgreSQL's sequence already does.
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(foreign_key="users.id", ondelete="CASCADE", max_length=64)
    project_id: int | None = Field(default=None, foreign_key="pinned_projects.id", ondelete="SET NULL")
    completed: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    completed_at: datetime | None = None
    version: int = Field(default=1, sa_column_kwargs={"server_default": "1"})  # bumped by every update
    # Subtasks: deleting a task deletes its subtree (the database cascades, on SQLite too: foreign keys are on).
    parent_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=True)
    )
    position: str = Field(default="", sa_column=Column(PositionType, nullable=False, server_default=""))
    due_timezone: str | None = Field(default=None, max_length=64)
    recurrence: str | None = Field(default=None, max_length=500)
    # Where the recurrence starts (the due date when the rule was set): COUNT counts from it. Not answered.
    recurrence_start: datetime | None = None

    # The task's label names in order: rows of `task_labels`, not a column. Loaded (or set) by the labels
    # service (services/labels.attach) wherever a task is answered; kept outside the model's fields, so
    # neither a dump of the row nor an UPDATE ever sees it.
    @property
    def labels(self) -> list[str]:
        return list(self.__dict__.get(_LABELS, ()))

    def set_labels(self, names: list[str]) -> None:
        self.__dict__[_LABELS] = list(names)


_LABELS = "_labels"


class TaskCreate(SQLModel):
    """What a client may send to create a task. Unknown fields (id, user_id, timestamps) are refused."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    title: Title = Field(schema_extra={"examples": ["Write the release notes"]})
    description: Description | None = None
    status: TaskStatus | None = None
    priority: TaskPriority = TaskPriority.MEDIUM
    completed: JsonBool | None = None
    due_date: UTCDatetime | None = Field(default=None, schema_extra={"examples": ["2026-12-01T17:00:00Z"]})
    project_id: RowIdInt | None = None
    labels: LabelNames | None = None
    parent_id: RowIdInt | None = None
    due_timezone: TimezoneName | None = Field(default=None, schema_extra={"examples": ["Europe/Berlin"]})
    recurrence: RecurrenceRule | None = Field(default=None, schema_extra={"examples": ["FREQ=WEEKLY;BYDAY=MO,WE"]})
    due_string: DueString | None = Field(default=None, schema_extra={"examples": ["every monday at 9am"]})


class TaskUpdate(SQLModel):
    """Every field optional; only the fields sent are changed."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    # May be left out, but not null: the schema offers no null (NOT_NULL), the validator refuses it.
    title: Title | None = Field(default=None, schema_extra=NOT_NULL)
    description: Description | None = None
    status: TaskStatus | None = Field(default=None, schema_extra=NOT_NULL)
    priority: TaskPriority | None = Field(default=None, schema_extra=NOT_NULL)
    completed: JsonBool | None = Field(default=None, schema_extra=NOT_NULL)
    due_date: UTCDatetime | None = None
    project_id: RowIdInt | None = None
    labels: LabelNames | None = Field(default=None, schema_extra=NOT_NULL)  # replaces the whole list; [] clears
    parent_id: RowIdInt | None = None  # null makes it a top-level task
    due_timezone: TimezoneName | None = None
    recurrence: RecurrenceRule | None = None
    due_string: DueString | None = Field(default=None, schema_extra=NOT_NULL)

    _not_null = field_validator("title", "status", "priority", "completed", "labels", "due_string", mode="before")(
        refuse_null
    )


class TaskComplete(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    completed: JsonBool = True


class TaskPublicV1(TaskBase):
    """A task as the earlier drafts' routes answer it (routers/legacy.py): the fields they always had."""

    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    id: int
    user_id: str
    completed: bool
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class TaskPublic(TaskPublicV1):
    """A task as every current route answers it."""

    parent_id: int | None = Field(schema_extra={"examples": [None]})
    position: str = Field(schema_extra={"examples": ["a0"]})
    due_timezone: str | None = Field(schema_extra={"examples": ["Europe/Berlin"]})
    recurrence: str | None = Field(schema_extra={"examples": ["FREQ=WEEKLY;BYDAY=MO,WE"]})
    version: int = Field(schema_extra={"examples": [3]})  # +1 on every change; the ETag is made from it
    # Last: a list row is built from the columns, then its labels (services/tasks.list_tasks).
    labels: list[str] = Field(schema_extra={"examples": [["work", "urgent"]]})


class TaskTree(TaskPublic):
    """A task with its subtree (`GET .../tasks/{id}?include=subtasks`): each subtask nests its own."""

    subtasks: list[TaskTree]


class TaskMove(SQLModel):
    """Where `POST .../tasks/{id}/move` puts a task: right after `after_id` (null: first) among its siblings
    under `parent_id` / in `project_id` (each left out: unchanged)."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    after_id: RowIdInt | None
    parent_id: RowIdInt | None = None
    project_id: RowIdInt | None = None


class TaskCompletion(SQLModel, table=True):
    """One completion of a recurring task: the due date it completed, and when."""

    __tablename__ = "task_completions"
    __table_args__ = (Index("ix_task_completions_task_id_completed_at", "task_id", "completed_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(sa_column=Column(Integer, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False))
    completed_at: datetime = Field(default_factory=utcnow)
    due_date: datetime | None = None


class TaskCompletionPublic(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    id: int
    task_id: int
    completed_at: datetime
    due_date: datetime | None


class TaskSort(StrEnum):
    CREATED_AT = "created_at"
    CREATED_AT_DESC = "-created_at"
    UPDATED_AT = "updated_at"
    UPDATED_AT_DESC = "-updated_at"
    DUE_DATE = "due_date"
    DUE_DATE_DESC = "-due_date"
    PRIORITY = "priority"
    PRIORITY_DESC = "-priority"
    TITLE = "title"
    TITLE_DESC = "-title"
    POSITION = "position"
    POSITION_DESC = "-position"
