"""The response shapes every route returns, as they appear in OpenAPI.

Every field of a response model is always sent, so the models here (and the `*Public` models they
carry) use RESPONSE_CONFIG: OpenAPI lists each of their fields as required, a default included.
Routes name a concrete envelope (`TaskEnvelope`, `TaskListEnvelope`), never `Envelope[...]` itself:
the class name is the schema name a generated client shows (a parametrized generic would come out
as `Envelope_TaskPublic_`)."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, Field

from backend.models.change import ChangePage
from backend.models.common import RESPONSE_CONFIG
from backend.models.label import LabelPublic
from backend.models.project import ProjectPublic, ProjectPublicV1
from backend.models.session import TokenPair
from backend.models.sync_run import SyncRunPublic
from backend.models.task import TaskCompletionPublic, TaskPublic, TaskPublicV1, TaskTree
from backend.models.user import UserMe, UserPublic

T = TypeVar("T")


class ListMeta(BaseModel):
    model_config = RESPONSE_CONFIG

    total: int = Field(examples=[123])
    limit: int = Field(examples=[50])
    offset: int = Field(examples=[0])


class Envelope(BaseModel, Generic[T]):
    model_config = RESPONSE_CONFIG

    success: Literal[True] = True
    data: T
    message: str | None = None


class ListEnvelope(BaseModel, Generic[T]):
    model_config = RESPONSE_CONFIG

    success: Literal[True] = True
    data: list[T]
    message: str | None = None
    meta: ListMeta


class FieldError(BaseModel):
    model_config = RESPONSE_CONFIG

    field: str = Field(examples=["email"])
    message: str = Field(examples=["value is not a valid email address"])
    type: str = Field(examples=["value_error"])


class ErrorBody(BaseModel):
    """`code` is documented as the enum of every code the API answers (docs.with_error_codes)."""

    model_config = RESPONSE_CONFIG

    code: str = Field(examples=["VALIDATION_ERROR"])
    message: str = Field(examples=["Invalid email format"])
    field: str | None = None
    details: list[FieldError] | list[dict[str, Any]] | None = None


class ErrorEnvelope(BaseModel):
    model_config = RESPONSE_CONFIG

    success: Literal[False] = False
    error: ErrorBody


class MessageEnvelope(Envelope[None]):
    """`data` is null: the answer is the message (`Task deleted`)."""


class TaskEnvelope(Envelope[TaskPublic]):
    pass


class TaskListEnvelope(ListEnvelope[TaskPublic]):
    pass


class TaskTreeEnvelope(Envelope[TaskTree]):
    """A task with its subtasks nested (`include=subtasks`)."""


class TaskCompletionListEnvelope(ListEnvelope[TaskCompletionPublic]):
    pass


class TaskV1Envelope(Envelope[TaskPublicV1]):
    """A task as the earlier drafts' routes answer it (no `labels`)."""


class TaskV1ListEnvelope(ListEnvelope[TaskPublicV1]):
    """Tasks as the earlier drafts' routes list them (no `labels`)."""


class CommandResult(BaseModel):
    """One command's result in a batch: `item` when it applied, else `error` (the single route's error body)."""

    model_config = RESPONSE_CONFIG

    id: UUID
    status: int = Field(description="What the single route answers: 200, 201 (created), or the error's status")
    item: TaskPublic | ProjectPublic | None = Field(
        description="The task or project right after the command (null when it failed, and for a delete or unpin)"
    )
    error: ErrorBody | None


class BatchAnswer(BaseModel):
    model_config = RESPONSE_CONFIG

    results: list[CommandResult] = Field(description="One per command, in command order")
    temp_ids: dict[str, int] = Field(description="Each `temp_id` of a row created (or replayed): the row's id")
    cursor: str | None = Field(description="The change feed's cursor after this batch (null until the feed exists)")


class BatchEnvelope(Envelope[BatchAnswer]):
    """Each command's result, in command order, and the ids of the rows named by temp ids."""


class LabelEnvelope(Envelope[LabelPublic]):
    pass


class LabelListEnvelope(ListEnvelope[LabelPublic]):
    pass


class ProjectEnvelope(Envelope[ProjectPublic]):
    pass


class ProjectListEnvelope(ListEnvelope[ProjectPublic]):
    pass


class ProjectV1Envelope(Envelope[ProjectPublicV1]):
    """A project as the earlier drafts' routes answer it (no `version`)."""


class ProjectV1ListEnvelope(ListEnvelope[ProjectPublicV1]):
    """Projects as the earlier drafts' routes list them (no `version`)."""


class ChangePageEnvelope(Envelope[ChangePage]):
    pass


class SyncRunEnvelope(Envelope[SyncRunPublic]):
    pass


class SyncRunListEnvelope(ListEnvelope[SyncRunPublic]):
    pass


class UserEnvelope(Envelope[UserPublic]):
    pass


class MeEnvelope(Envelope[UserMe]):
    pass


class TokenPairEnvelope(Envelope[TokenPair]):
    pass


def ok(data: Any, message: str | None = None) -> dict[str, Any]:
    return {"success": True, "data": data, "message": message}


def page(items: Any, total: int, limit: int, offset: int) -> dict[str, Any]:
    return {"success": True, "data": items, "message": None, "meta": {"total": total, "limit": limit, "offset": offset}}
