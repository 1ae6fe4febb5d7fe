"""Task routes, built once and mounted twice: `/api/{user_id}/tasks` and the earlier drafts' `/api/tasks`."""

# No `from __future__ import annotations`: the routes close over `Owner`, which FastAPI must see evaluated.

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request

from backend import openapi_examples as examples
from backend.deps import RowIdPath, SessionDep, current_user_id, require_owner
from backend.envelope import Envelope, ListEnvelope, ok, page
from backend.errors import responses
from backend.idempotency import idempotent
from backend.models.common import MAX_ROW_ID, NO_NUL, IsoDatetime
from backend.models.task import TaskComplete, TaskCreate, TaskPriority, TaskPublic, TaskSort, TaskStatus, TaskUpdate
from backend.resource import NOT_MODIFIED, IfMatch, ReadDep, WriteDep, check_if_match
from backend.services import tasks as task_service
from backend.services.tasks import TaskFilters

OwnerResolver = Callable[..., Coroutine[Any, Any, str]]


def _utc(value: datetime | None) -> datetime | None:
    """Query datetimes without an offset are taken as UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


async def task_filters(
    status: Annotated[TaskStatus | None, Query(description="Only tasks in this status")] = None,
    priority: Annotated[TaskPriority | None, Query(description="Only tasks of this priority")] = None,
    completed: Annotated[bool | None, Query(description="Only completed (true) or open (false) tasks")] = None,
    project_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID, description="Only tasks of this project")] = None,
    due_before: Annotated[IsoDatetime | None, Query(description="Due before (ISO 8601; UTC if no offset)")] = None,
    due_after: Annotated[
        IsoDatetime | None, Query(description="Due strictly after (ISO 8601; UTC if no offset)")
    ] = None,
    q: Annotated[
        str | None, Query(max_length=200, pattern=NO_NUL, description="Text in title or description (literal)")
    ] = None,
) -> TaskFilters:
    # async: a plain `def` dependency costs a thread-pool hop on every list request.
    return TaskFilters(
        status=status,
        priority=priority.value if priority else None,
        completed=completed,
        project_id=project_id,
        due_before=_utc(due_before),
        due_after=_utc(due_after),
        q=q or None,
    )


SortQuery = Annotated[TaskSort, Query(description="Sort key; a leading `-` sorts descending")]
LimitQuery = Annotated[int, Query(ge=1, le=100, description="Page size, 1-100")]
OffsetQuery = Annotated[int, Query(ge=0, le=10_000_000, description="Rows to skip")]
FiltersDep = Annotated[TaskFilters, Depends(task_filters)]

OWNED = (401, 403, 404, 422, 429, 503)
WITH_BODY = (400, 413, *OWNED)


def build_router(prefix: str, owner: OwnerResolver, *, legacy: bool = False) -> APIRouter:
    """The task API. `owner` resolves whose tasks these are: the path's user, or the token's."""
    Owner = Annotated[str, Depends(owner)]
    router = APIRouter(prefix=prefix, tags=["tasks (earlier drafts)" if legacy else "tasks"], deprecated=legacy)
    op = "legacy_" if legacy else ""

    async def unchanged(request: Request, owner_id: Owner, session: SessionDep, if_match: IfMatch = None) -> None:
        await check_if_match(
            if_match,
            request.path_params["task_id"],
            lambda tid: task_service.get_task(session, owner_id, tid, for_update=True),
        )

    Unchanged = [Depends(unchanged)]

    @router.get(
        "",
        response_model=ListEnvelope[TaskPublic],
        summary="List tasks",
        operation_id=f"{op}list_tasks",
        responses={200: examples.TASKS, **responses(*OWNED)},
    )
    async def list_tasks(
        owner_id: Owner,
        session: SessionDep,
        filters: FiltersDep,
        sort: SortQuery = TaskSort.CREATED_AT_DESC,
        limit: LimitQuery = 50,
        offset: OffsetQuery = 0,
    ) -> dict[str, Any]:
        """Filter, search (`q`), sort and paginate; `meta.total` counts every match."""
        items, total = await task_service.list_tasks(session, owner_id, filters, sort, limit, offset)
        return page(items, total, limit, offset)

    @router.post(
        "",
        status_code=201,
        response_model=Envelope[TaskPublic],
        summary="Create a task",
        operation_id=f"{op}create_task",
        responses={201: examples.TASK, **responses(*WITH_BODY)},
    )
    @idempotent
    async def create_task(
        owner_id: Owner,
        payload: Annotated[TaskCreate, Body(openapi_examples=examples.TASK_CREATE)],
        session: SessionDep,
        live: WriteDep,
    ) -> dict[str, Any]:
        """Title is required (trimmed, 1-255 chars); `completed` and `status` are kept in agreement."""
        task = await task_service.create_task(session, owner_id, payload)
        return ok(await live.changed(task, "task.created"), "Task created")

    @router.get(
        "/search",
        response_model=ListEnvelope[TaskPublic],
        summary="Search tasks",
        operation_id=f"{op}search_tasks",
        responses=responses(*OWNED),
    )
    async def search_tasks(
        owner_id: Owner,
        session: SessionDep,
        q: Annotated[
            str, Query(min_length=1, max_length=200, pattern=NO_NUL, description="Text in title or description")
        ],
        filters: FiltersDep,
        sort: SortQuery = TaskSort.CREATED_AT_DESC,
        limit: LimitQuery = 50,
        offset: OffsetQuery = 0,
    ) -> dict[str, Any]:
        """Same as the list with `q` required. `%`, `_` and `\\` match literally."""
        filters = TaskFilters(**{**filters.__dict__, "q": q})
        items, total = await task_service.list_tasks(session, owner_id, filters, sort, limit, offset)
        return page(items, total, limit, offset)

    @router.get(
        "/{task_id}",
        response_model=Envelope[TaskPublic],
        summary="Get a task",
        operation_id=f"{op}get_task",
        responses={**responses(*OWNED), **NOT_MODIFIED},
    )
    async def get_task(owner_id: Owner, task_id: RowIdPath, session: SessionDep, live: ReadDep) -> Any:
        """One of your tasks, with its `ETag`; someone else's id is 404."""
        return live.read(await task_service.get_task(session, owner_id, task_id))

    @router.put(
        "/{task_id}",
        response_model=Envelope[TaskPublic],
        summary="Update a task (partial body accepted)",
        operation_id=f"{op}replace_task",
        responses=responses(*WITH_BODY, 412),
        dependencies=Unchanged,
    )
    @router.patch(
        "/{task_id}",
        response_model=Envelope[TaskPublic],
        summary="Update some fields of a task",
        operation_id=f"{op}update_task",
        responses=responses(*WITH_BODY, 412),
        dependencies=Unchanged,
    )
    async def update_task(
        owner_id: Owner,
        task_id: RowIdPath,
        payload: Annotated[TaskUpdate, Body(openapi_examples=examples.TASK_UPDATE)],
        session: SessionDep,
        live: WriteDep,
    ) -> dict[str, Any]:
        """Only the fields sent change. `completed` and `status` are kept in agreement."""
        task = await task_service.update_task(session, owner_id, task_id, payload)
        return ok(await live.changed(task, "task.updated"), "Task updated")

    if not legacy:

        @router.patch(
            "/{task_id}/complete",
            response_model=Envelope[TaskPublic],
            summary="Complete or reopen a task",
            operation_id="complete_task",
            responses=responses(*WITH_BODY, 412),
            dependencies=Unchanged,
        )
        async def complete_task(
            owner_id: Owner,
            task_id: RowIdPath,
            session: SessionDep,
            live: WriteDep,
            payload: TaskComplete | None = None,
        ) -> dict[str, Any]:
            """`{"completed": true}` completes (status `completed`); `false` reopens (status `pending`)."""
            completed = True if payload is None else payload.completed
            task = await task_service.set_completed(session, owner_id, task_id, completed)
            return ok(await live.changed(task, "task.updated"), "Task completed" if completed else "Task reopened")

    @router.delete(
        "/{task_id}",
        response_model=Envelope[None],
        summary="Delete a task",
        operation_id=f"{op}delete_task",
        responses=responses(*OWNED, 412),
        dependencies=Unchanged,
    )
    async def delete_task(owner_id: Owner, task_id: RowIdPath, session: SessionDep, live: WriteDep) -> dict[str, Any]:
        """Deletes for good."""
        await task_service.delete_task(session, owner_id, task_id)
        await live.removed("task.deleted", task_id)
        return ok(None, "Task deleted")

    return router


router = build_router("/api/{user_id}/tasks", require_owner)
legacy_router = build_router("/api/tasks", current_user_id, legacy=True)
