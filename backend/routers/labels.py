"""Label routes: `/api/{user_id}/labels`. A task's labels are set on the task (routers/tasks.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path

from backend import openapi_examples as examples
from backend.deps import CallerId, SessionDep, require_owner
from backend.envelope import LabelEnvelope, LabelListEnvelope, MessageEnvelope, ok, page
from backend.errors import responses
from backend.models.common import NO_NUL
from backend.models.label import LabelRename
from backend.routers.common import OWNED, WITH_BODY, LimitQuery, OffsetQuery
from backend.services import labels as label_service

# Every route here is the path user's, who must be the caller: 403 before anything is read.
router = APIRouter(prefix="/api/{user_id}/labels", tags=["labels"], dependencies=[Depends(require_owner)])

# `{name:path}`: a label may contain `/` (sent as `%2F`). Compared case-insensitively, trimmed.
LabelPath = Annotated[
    str, Path(min_length=1, max_length=255, pattern=NO_NUL, description="A label's name, in any case")
]


@router.get(
    "",
    response_model=LabelListEnvelope,
    summary="List labels",
    operation_id="list_labels",
    responses={200: examples.LABELS, **responses(*OWNED)},
)
async def list_labels(
    owner_id: CallerId, session: SessionDep, limit: LimitQuery = 50, offset: OffsetQuery = 0
) -> dict[str, Any]:
    """Your labels with the number of tasks carrying each, by name (case-insensitively)."""
    items, total = await label_service.list_labels(session, owner_id, limit, offset)
    return page(items, total, limit, offset)


@router.patch(
    "/{name:path}",
    response_model=LabelEnvelope,
    summary="Rename a label",
    operation_id="rename_label",
    responses=responses(*WITH_BODY, 409),
)
async def rename_label(
    owner_id: CallerId,
    name: LabelPath,
    payload: Annotated[LabelRename, Body(openapi_examples=examples.LABEL_RENAME)],
    session: SessionDep,
) -> dict[str, Any]:
    """Renames the label on every task carrying it. Another spelling of the same name changes its case;
    the name of another of your labels is 409 `CONFLICT` (labels are not merged)."""
    label = await label_service.rename_label(session, owner_id, name, payload.name)
    return ok(label, "Label renamed")


@router.delete(
    "/{name:path}",
    response_model=MessageEnvelope,
    summary="Delete a label",
    operation_id="delete_label",
    responses=responses(*OWNED),
)
async def delete_label(owner_id: CallerId, name: LabelPath, session: SessionDep) -> dict[str, Any]:
    """Removes the label from every task carrying it, then deletes it."""
    await label_service.delete_label(session, owner_id, name)
    return ok(None, "Label deleted")
