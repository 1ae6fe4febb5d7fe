"""The change feed: `GET /api/{user_id}/changes` (specs/api/changes.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from backend.deps import CallerId, SessionDep, SettingsDep, require_owner
from backend.envelope import ChangePageEnvelope, ok
from backend.errors import ValidationFailed, responses
from backend.routers.common import OWNED, SPLICE, SplicedJSON
from backend.services import feed

router = APIRouter(prefix="/api/{user_id}/changes", tags=["changes"], dependencies=[Depends(require_owner)])

CursorQuery = Annotated[
    str | None,
    Query(
        max_length=40,
        pattern=feed.CURSOR.pattern,
        description="From the last page's `cursor`, or a live event's `id`; leave out for a full sync",
        examples=["c42"],
    ),
]
ChangeLimitQuery = Annotated[int, Query(ge=1, le=500, description="Changes per page, 1-500")]


@router.get(
    "",
    response_model=ChangePageEnvelope,
    summary="Changes since a cursor",
    operation_id="list_changes",
    responses=responses(*OWNED, 410),
)
async def list_changes(
    owner_id: CallerId,
    session: SessionDep,
    settings: SettingsDep,
    cursor: CursorQuery = None,
    limit: ChangeLimitQuery = 200,
) -> Response:
    """Your tasks' and pinned projects' changes after `cursor`, in commit order: `upsert` with the item as its
    GET answers it, or `delete` with `item: null` (a deleted task, an unpinned project). Without `cursor`, the
    first page of a full sync (every current task and project). Ask again with the answer's `cursor` while
    `has_more`; later, to get what changed since. A cursor older than `CHANGES_RETENTION_DAYS` is
    `410 CURSOR_EXPIRED`: start a full sync."""
    parsed = None
    if cursor is not None:
        parsed = feed.parse_cursor(cursor)
        if parsed is None:
            raise ValidationFailed("cursor: not a cursor of this feed", field="cursor")
    page = await feed.read_changes(session, owner_id, parsed, limit, settings.CHANGES_RETENTION_DAYS)
    # Serialised once from the rows, most of it by PostgreSQL (FastAPI's validate-then-dump pass over up to 500
    # items was a quarter of the page's CPU); tests/routers/test_changes.py checks the bytes are the model's.
    return SplicedJSON(ok({"changes": SPLICE, "cursor": page.cursor, "has_more": page.has_more}), page.changes)
