"""Pinned-project routes: `/api/{user_id}/projects`. The earlier drafts' `/api/projects/...`: routers/legacy.py."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response

from backend import openapi_examples as examples
from backend.deps import CallerId, SessionDep, require_owner
from backend.envelope import MessageEnvelope, ProjectEnvelope, ProjectListEnvelope, ok, page
from backend.errors import responses
from backend.idempotency import idempotent
from backend.models.project import ProjectCreate, ProjectOrder, ProjectUpdate
from backend.resource import NOT_MODIFIED, ReadDep, WriteDep
from backend.routers.common import (
    OWNED,
    WITH_BODY,
    LimitQuery,
    OffsetQuery,
    ProjectUnchanged,
    RowIdPath,
    json_attachment,
)
from backend.services import export as export_service
from backend.services import projects as project_service

# Every route here is the path user's, who must be the caller: 403 before anything is read.
router = APIRouter(prefix="/api/{user_id}/projects", tags=["projects"], dependencies=[Depends(require_owner)])


def _export_response(export: dict[str, Any]) -> Response:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", export["project"]["github_repo_name"])
    return json_attachment(export, f"taskdeck-project-{export['project']['id']}-{slug}.json")


@router.get(
    "",
    response_model=ProjectListEnvelope,
    summary="List pinned projects",
    operation_id="list_projects",
    responses={200: examples.PROJECTS, **responses(*OWNED)},
)
async def list_projects(
    owner_id: CallerId, session: SessionDep, limit: LimitQuery = 50, offset: OffsetQuery = 0
) -> dict[str, Any]:
    """Active pins in dashboard order (`position`, then `pinned_at`), paginated; `meta.total` counts them all."""
    projects, total = await project_service.page_projects(session, owner_id, limit, offset)
    return page(projects, total, limit, offset)


@router.post(
    "",
    status_code=201,
    response_model=ProjectEnvelope,
    summary="Pin a GitHub repository",
    operation_id="pin_project",
    responses={201: examples.PROJECT, **responses(400, 401, 403, 409, 413, 422, 429, 503)},
)
@idempotent
async def pin_project(
    owner_id: CallerId,
    payload: Annotated[ProjectCreate, Body(openapi_examples=examples.PROJECT_PIN)],
    session: SessionDep,
    live: WriteDep,
) -> dict[str, Any]:
    """`owner/repo` with GitHub's naming rules; 409 when already pinned or at the 50-pin limit.

    Pinning an unpinned repository again brings back its project: the same id, tasks and sync history."""
    project = await project_service.pin_project(session, owner_id, payload)
    return ok(live.tagged(project), "Project pinned")


@router.put(
    "/order",
    response_model=ProjectListEnvelope,
    summary="Reorder the dashboard",
    operation_id="reorder_projects",
    responses=responses(400, 401, 403, 413, 422, 429, 503),
)
async def reorder_projects(
    owner_id: CallerId,
    payload: ProjectOrder,
    session: SessionDep,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> dict[str, Any]:
    """`project_ids` lists every pinned project once, in the new order. Answers a page of the new order,
    as `GET` with the same `limit` and `offset` would."""
    projects = await project_service.reorder_projects(session, owner_id, payload.project_ids)
    return page(projects[offset : offset + limit], len(projects), limit, offset)


@router.get(
    "/{project_id}",
    response_model=ProjectEnvelope,
    summary="Get a project",
    operation_id="get_project",
    responses={**responses(*OWNED), **NOT_MODIFIED},
)
async def get_project(owner_id: CallerId, project_id: RowIdPath, session: SessionDep, live: ReadDep) -> Any:
    """One of your pinned projects, with its `ETag`; an unpinned project or someone else's is 404."""
    return live.read(await project_service.get_project(session, owner_id, project_id))


@router.get(
    "/{project_id}/export",
    summary="Download a project as JSON",
    operation_id="export_project",
    responses={
        200: {
            "description": "The project, its tasks and its sync history, as a JSON attachment",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **responses(*OWNED),
    },
    response_class=Response,
)
async def export_project(owner_id: CallerId, project_id: RowIdPath, session: SessionDep) -> Response:
    """A file download (`Content-Disposition: attachment`) with stable field order and ISO dates."""
    return _export_response(await export_service.export_project(session, owner_id, project_id))


@router.put(
    "/{project_id}",
    response_model=ProjectEnvelope,
    summary="Update a pinned project",
    operation_id="update_project",
    responses=responses(*WITH_BODY, 412),
)
@ProjectUnchanged
async def update_project(
    owner_id: CallerId, project_id: RowIdPath, payload: ProjectUpdate, session: SessionDep, live: WriteDep
) -> dict[str, Any]:
    """Change `display_name`, `description` or `position`; bumps `last_updated`."""
    project = await project_service.update_project(session, owner_id, project_id, payload)
    return ok(live.tagged(project), "Project updated")


@router.delete(
    "/{project_id}",
    response_model=MessageEnvelope,
    summary="Unpin a project",
    operation_id="unpin_project",
    responses=responses(*OWNED, 412),
)
@ProjectUnchanged
async def unpin_project(owner_id: CallerId, project_id: RowIdPath, session: SessionDep) -> dict[str, Any]:
    """The project is gone: 404 on every route of it and absent from lists. Its tasks keep their link and its
    sync history is kept, so pinning the same repository again brings back the same id with both."""
    await project_service.unpin_project(session, owner_id, project_id)
    return ok(None, "Project unpinned")
