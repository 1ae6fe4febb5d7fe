"""The earlier drafts' routes: `/api/tasks...` and `/api/projects/...`, owned by the token's user.

Deprecated in the OpenAPI document and kept for old clients. Each handler calls the same service
and shared dependencies as its `/api/{user_id}/...` counterpart in routers/tasks.py or
routers/projects.py; only the owner comes from the token instead of the path.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from backend import openapi_examples as examples
from backend.deps import SessionDep, current_user_id
from backend.envelope import Envelope, ListEnvelope, ok
from backend.errors import responses
from backend.idempotency import idempotent
from backend.models.project import ProjectCreate, ProjectPublic, ProjectUpdate
from backend.models.task import TaskCreate, TaskPublic, TaskSort, TaskUpdate
from backend.resource import NOT_MODIFIED, ReadDep, WriteDep
from backend.routers.common import (
    OWNED,
    WITH_BODY,
    LimitQuery,
    OffsetQuery,
    RowIdPath,
    TaskFiltersDep,
    TaskSearchQuery,
    TaskSortQuery,
    project_unchanged,
    searching,
    task_page,
    task_unchanged,
    whole_list,
)
from backend.services import projects as project_service
from backend.services import tasks as task_service

CallerId = Annotated[str, Depends(current_user_id)]

# Two routers, so main.py can keep each where the earlier drafts' routes always were.
tasks_router = APIRouter(prefix="/api/tasks", tags=["tasks (earlier drafts)"], deprecated=True)
projects_router = APIRouter(prefix="/api/projects", tags=["projects (earlier drafts)"], deprecated=True)
TaskUnchanged = task_unchanged(current_user_id)
ProjectUnchanged = project_unchanged(current_user_id)


@tasks_router.get(
    "",
    response_model=ListEnvelope[TaskPublic],
    summary="List tasks",
    operation_id="legacy_list_tasks",
    responses={200: examples.TASKS, **responses(*OWNED)},
)
async def list_tasks(
    owner_id: CallerId,
    session: SessionDep,
    filters: TaskFiltersDep,
    sort: TaskSortQuery = TaskSort.CREATED_AT_DESC,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> dict[str, Any]:
    """Filter, search (`q`), sort and paginate; `meta.total` counts every match."""
    return await task_page(session, owner_id, filters, sort, limit, offset)


@tasks_router.post(
    "",
    status_code=201,
    response_model=Envelope[TaskPublic],
    summary="Create a task",
    operation_id="legacy_create_task",
    responses={201: examples.TASK, **responses(*WITH_BODY)},
)
@idempotent
async def create_task(
    owner_id: CallerId,
    payload: Annotated[TaskCreate, Body(openapi_examples=examples.TASK_CREATE)],
    session: SessionDep,
    live: WriteDep,
) -> dict[str, Any]:
    """Title is required (trimmed, 1-255 chars); `completed` and `status` are kept in agreement."""
    task = await task_service.create_task(session, owner_id, payload)
    return ok(await live.changed(task, "task.created"), "Task created")


@tasks_router.get(
    "/search",
    response_model=ListEnvelope[TaskPublic],
    summary="Search tasks",
    operation_id="legacy_search_tasks",
    responses=responses(*OWNED),
)
async def search_tasks(
    owner_id: CallerId,
    session: SessionDep,
    q: TaskSearchQuery,
    filters: TaskFiltersDep,
    sort: TaskSortQuery = TaskSort.CREATED_AT_DESC,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> dict[str, Any]:
    """Same as the list with `q` required. `%`, `_` and `\\` match literally."""
    return await task_page(session, owner_id, searching(filters, q), sort, limit, offset)


@tasks_router.get(
    "/{task_id}",
    response_model=Envelope[TaskPublic],
    summary="Get a task",
    operation_id="legacy_get_task",
    responses={**responses(*OWNED), **NOT_MODIFIED},
)
async def get_task(owner_id: CallerId, task_id: RowIdPath, session: SessionDep, live: ReadDep) -> Any:
    """One of your tasks, with its `ETag`; someone else's id is 404."""
    return live.read(await task_service.get_task(session, owner_id, task_id))


@tasks_router.put(
    "/{task_id}",
    response_model=Envelope[TaskPublic],
    summary="Update a task (partial body accepted)",
    operation_id="legacy_replace_task",
    responses=responses(*WITH_BODY, 412),
    dependencies=TaskUnchanged,
)
@tasks_router.patch(
    "/{task_id}",
    response_model=Envelope[TaskPublic],
    summary="Update some fields of a task",
    operation_id="legacy_update_task",
    responses=responses(*WITH_BODY, 412),
    dependencies=TaskUnchanged,
)
async def update_task(
    owner_id: CallerId,
    task_id: RowIdPath,
    payload: Annotated[TaskUpdate, Body(openapi_examples=examples.TASK_UPDATE)],
    session: SessionDep,
    live: WriteDep,
) -> dict[str, Any]:
    """Only the fields sent change. `completed` and `status` are kept in agreement."""
    task = await task_service.update_task(session, owner_id, task_id, payload)
    return ok(await live.changed(task, "task.updated"), "Task updated")


@tasks_router.delete(
    "/{task_id}",
    response_model=Envelope[None],
    summary="Delete a task",
    operation_id="legacy_delete_task",
    responses=responses(*OWNED, 412),
    dependencies=TaskUnchanged,
)
async def delete_task(owner_id: CallerId, task_id: RowIdPath, session: SessionDep, live: WriteDep) -> dict[str, Any]:
    """Deletes for good."""
    await task_service.delete_task(session, owner_id, task_id)
    await live.removed("task.deleted", task_id)
    return ok(None, "Task deleted")


@projects_router.get(
    "/pinned",
    response_model=ListEnvelope[ProjectPublic],
    summary="List pinned projects",
    operation_id="legacy_list_projects",
    responses={200: examples.PROJECTS, **responses(*OWNED)},
)
async def list_projects(owner_id: CallerId, session: SessionDep) -> dict[str, Any]:
    """Active pins in dashboard order (`position`, then `pinned_at`)."""
    return whole_list(await project_service.list_projects(session, owner_id))


@projects_router.post(
    "/pin",
    status_code=201,
    response_model=Envelope[ProjectPublic],
    summary="Pin a GitHub repository",
    operation_id="legacy_pin_project",
    responses={201: examples.PROJECT, **responses(400, 401, 403, 409, 413, 422, 429, 503)},
)
@idempotent
async def pin_project(
    owner_id: CallerId,
    payload: Annotated[ProjectCreate, Body(openapi_examples=examples.PROJECT_PIN)],
    session: SessionDep,
    live: WriteDep,
) -> dict[str, Any]:
    """`owner/repo` with GitHub's naming rules; 409 when already pinned or at the 50-pin limit."""
    project = await project_service.pin_project(session, owner_id, payload)
    return ok(await live.changed(project, "project.pinned"), "Project pinned")


@projects_router.put(
    "/pinned/{project_id}",
    response_model=Envelope[ProjectPublic],
    summary="Update a pinned project",
    operation_id="legacy_update_project",
    responses=responses(*WITH_BODY, 412),
    dependencies=ProjectUnchanged,
)
async def update_project(
    owner_id: CallerId, project_id: RowIdPath, payload: ProjectUpdate, session: SessionDep, live: WriteDep
) -> dict[str, Any]:
    """Change `display_name`, `description` or `position`; bumps `last_updated`."""
    project = await project_service.update_project(session, owner_id, project_id, payload)
    return ok(await live.changed(project, "project.updated"), "Project updated")


@projects_router.delete(
    "/unpin/{project_id}",
    response_model=Envelope[None],
    summary="Unpin a project",
    operation_id="legacy_unpin_project",
    responses=responses(*OWNED, 412),
    dependencies=ProjectUnchanged,
)
async def unpin_project(
    owner_id: CallerId, project_id: RowIdPath, session: SessionDep, live: WriteDep
) -> dict[str, Any]:
    """The project leaves the dashboard; its tasks and history stay, and pinning it again brings it back."""
    await project_service.unpin_project(session, owner_id, project_id)
    await live.removed("project.unpinned", project_id)
    return ok(None, "Project unpinned")
