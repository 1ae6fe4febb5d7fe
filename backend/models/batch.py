"""Batches (`POST /api/{user_id}/batch`, specs/api/batch.md): the commands a client sends (the answer's shape:
envelope.BatchAnswer), and the record of an applied command's result (`batch_commands`) that answers a replay of
its id for 24 h.

A command's `data` has the schema of the single route's body (`TaskCreate`, ...), but an invalid `data` does not
fail the request: it is kept as `InvalidData` (`Deferred`), and that command alone answers the 422 the single route
would (services/batch.py); the others still apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from annotated_types import Interval
from pydantic import (
    ConfigDict,
    Discriminator,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from backend.models.common import JSON_INTEGER, MAX_ROW_ID, RowIdInt, utcnow
from backend.models.project import ProjectCreate, ProjectUpdate
from backend.models.task import TaskCreate, TaskMove, TaskUpdate


@dataclass(frozen=True)
class InvalidData:
    """A command's `data` that failed its schema: pydantic's errors, located within `data`."""

    errors: list[dict[str, Any]]


def _defer(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError as exc:
        return InvalidData([dict(error) for error in exc.errors()])


# `data` typed (and documented) as its schema; at run time an InvalidData when it failed it.
Deferred = WrapValidator(_defer)

MAX_COMMANDS = 100
TEMP_ID_PATTERN = r"^[\x21-\x7E]{1,64}$"

# A client's name for a row an earlier command of the same batch creates: a string, so never a row id.
TempId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=TEMP_ID_PATTERN),
    Field(description="A `temp_id` given to an earlier `task.create` / `project.pin` of this batch"),
]
RowRef = RowIdInt | TempId
Version = Annotated[int, Interval(ge=1, le=MAX_ROW_ID), JSON_INTEGER]


class TaskCreateData(TaskCreate):
    """`TaskCreate`; `parent_id` and `project_id` may name an earlier command's `temp_id`."""

    parent_id: RowRef | None = None  # type: ignore[assignment]
    project_id: RowRef | None = None  # type: ignore[assignment]


class TaskUpdateData(TaskUpdate):
    """`TaskUpdate`; `parent_id` and `project_id` may name an earlier command's `temp_id`."""

    parent_id: RowRef | None = None  # type: ignore[assignment]
    project_id: RowRef | None = None  # type: ignore[assignment]


class TaskMoveData(TaskMove):
    """`TaskMove`; `after_id`, `parent_id` and `project_id` may name an earlier command's `temp_id`."""

    after_id: RowRef | None  # type: ignore[assignment]
    parent_id: RowRef | None = None  # type: ignore[assignment]
    project_id: RowRef | None = None  # type: ignore[assignment]


class _Command(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    id: UUID = Field(
        description="The client's id of this command (a UUID): sent again within 24 h, the command is not applied "
        "again and its recorded result is answered",
        schema_extra={"examples": ["0b6f7c1e-2f5d-4a8e-9c61-3f1f0f8d9a10"]},
    )


class _Targeted(_Command):
    target: RowRef = Field(description="The task's or project's id, or an earlier command's `temp_id`")
    if_version: Version | None = Field(
        default=None,
        description="Apply only while the row's `version` is this one (else 412 PRECONDITION_FAILED in the result)",
    )


class TaskCreateCommand(_Command):
    op: Literal["task.create"]
    temp_id: TempId | None = None
    data: Annotated[TaskCreateData, Deferred]


class TaskUpdateCommand(_Targeted):
    op: Literal["task.update"]
    data: Annotated[TaskUpdateData, Deferred]


class TaskCompleteCommand(_Targeted):
    op: Literal["task.complete"]


class TaskReopenCommand(_Targeted):
    op: Literal["task.reopen"]


class TaskDeleteCommand(_Targeted):
    op: Literal["task.delete"]


class TaskMoveCommand(_Targeted):
    op: Literal["task.move"]
    data: Annotated[TaskMoveData, Deferred]


class ProjectPinCommand(_Command):
    op: Literal["project.pin"]
    temp_id: TempId | None = None
    data: Annotated[ProjectCreate, Deferred]


class ProjectUpdateCommand(_Targeted):
    op: Literal["project.update"]
    data: Annotated[ProjectUpdate, Deferred]


class ProjectUnpinCommand(_Targeted):
    op: Literal["project.unpin"]


Command = Annotated[
    TaskCreateCommand
    | TaskUpdateCommand
    | TaskCompleteCommand
    | TaskReopenCommand
    | TaskDeleteCommand
    | TaskMoveCommand
    | ProjectPinCommand
    | ProjectUpdateCommand
    | ProjectUnpinCommand,
    Discriminator("op"),
]
CREATES = ("task.create", "project.pin")


class BatchRequest(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    # At most MAX_COMMANDS: documented here, checked by the route (422 BATCH_TOO_LARGE, not VALIDATION_ERROR).
    commands: list[Command] = Field(
        min_length=1, schema_extra={"json_schema_extra": {"maxItems": MAX_COMMANDS}}, description="Applied in order"
    )


class BatchCommand(SQLModel, table=True):
    """The result of one command applied by a batch, answered again when its id comes again (24 h)."""

    __tablename__ = "batch_commands"
    __table_args__ = (
        UniqueConstraint("user_id", "command_id"),  # the claim: a command id is applied once, on every instance
        Index("ix_batch_commands_expires_at", "expires_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(foreign_key="users.id", ondelete="CASCADE", max_length=64)
    command_id: str = Field(max_length=36)
    request_hash: str = Field(max_length=64)  # the command as sent, but its id: the same id with another body
    result: str = Field(default="", sa_type=Text)  # the CommandResult as JSON
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
