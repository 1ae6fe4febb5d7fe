"""Task routes: `/api/{user_id}/tasks`. The earlier drafts' `/api/tasks...`: routers/legacy.py."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from fastapi.responses import Response

from backend import openapi_examples as examples
from backend.deps import CallerId, SessionDep, require_owner
from backend.envelope import (
    MessageEnvelope,
    TaskCompletionListEnvelope,
    TaskEnvelope,
    TaskListEnvelope,
    TaskTreeEnvelope,
    ok,
    page,
)
from backend.errors import responses
from backend.idempotency import idempotent
from backend.models.task import TaskComplete, TaskCreate, TaskMove, TaskSort, TaskUpdate
from backend.resource import NOT_MODIFIED, ReadDep, WriteDep, none_match_hits
from backend.routers.common import (
    OWNED,
    WITH_BODY,
    JSONPage,
    LimitQuery,
    OffsetQuery,
    RowIdPath,
    TaskFiltersDep,
    TaskSearchQuery,
    TaskSortQuery,
    TaskUnchanged,
    searching,
    task_page,
)
from backend.services import tasks as task_service

# Every route here is the path user's, who must be the caller: 403 before anything is read.
router = APIRouter(prefix="/api/{user_id}/tasks", tags=["tasks"], dependencies=[Depends(require_owner)])

TimezoneHeader = Annotated[
    str | None,
    Header(
        alias="X-Timezone",
        description="The IANA time zone `due_string` is read in (default UTC); ignored without `due_string`",
        examples=["Europe/Berlin"],
    ),
]


@router.get(
    "",
    response_model=TaskListEnvelope,
    summary="List tasks",
    operation_id="list_tasks",
    responses={200: examples.TASKS, **responses(*OWNED)},
)
async def list_tasks(
    owner_id: CallerId,
    session: SessionDep,
    filters: TaskFiltersDep,
    sort: TaskSortQuery = TaskSort.CREATED_AT_DESC,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> Response:
    """Filter (`label` repeatable: tasks carrying every one), search (`q`), sort and paginate; `meta.total`
    counts every match."""
    return await task_page(session, owner_id, filters, sort, limit, offset)


@router.post(
    "",
    status_code=201,
    response_model=TaskEnvelope,
    summary="Create a task",
    operation_id="create_task",
    responses={201: examples.TASK, **responses(*WITH_BODY)},
)
@idempotent
async def create_task(
    owner_id: CallerId,
    payload: Annotated[TaskCreate, Body(openapi_examples=examples.TASK_CREATE)],
    session: SessionDep,
    live: WriteDep,
    x_timezone: TimezoneHeader = None,
) -> dict[str, Any]:
    """Title is required (trimmed, 1-255 chars); `completed` and `status` are kept in agreement. `labels`: up
    to 20 names (trimmed, 1-60 chars), order kept, duplicates in any case removed; a label you already use is
    answered as you first wrote it. `parent_id` makes it a subtask (5 levels at most; it takes its parent's
    project); it goes last among its siblings. `recurrence` (an RRULE) needs a `due_date`; `due_string`
    ("every monday at 9am") sets `due_date`, `due_timezone` (`X-Timezone`, else UTC) and `recurrence`."""
    task = await task_service.create_task(session, owner_id, payload, x_timezone)
    return ok(live.tagged(task), "Task created")


@router.get(
    "/search",
    response_model=TaskListEnvelope,
    summary="Search tasks",
    operation_id="search_tasks",
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
) -> Response:
    """Same as the list with `q` required. `%`, `_` and `\\` match literally."""
    return await task_page(session, owner_id, searching(filters, q), sort, limit, offset)


@router.get(
    "/{task_id}",
    response_model=TaskEnvelope | TaskTreeEnvelope,
    summary="Get a task",
    operation_id="get_task",
    responses={**responses(*OWNED), **NOT_MODIFIED},
)
async def get_task(
    request: Request,
    owner_id: CallerId,
    task_id: RowIdPath,
    session: SessionDep,
    live: ReadDep,
    include: Annotated[
        Literal["subtasks"] | None, Query(description="`subtasks`: nest the task's whole subtree in `subtasks`")
    ] = None,
) -> Any:
    """One of your tasks, with its `ETag`; someone else's id is 404. With `include=subtasks`, each task of its
    subtree nests its own subtasks (siblings in manual order); that answer's ETag covers every task in it."""
    if include is None:
        return live.read(await task_service.read_task(session, owner_id, task_id))
    tree, versions = await task_service.read_tree(session, owner_id, task_id)
    digest = hashlib.sha256(repr(versions).encode()).hexdigest()[:16]
    etag = f'"tasks.{task_id}.tree-{digest}"'
    header = request.headers.get("if-none-match")
    if header is not None and none_match_hits(header, etag):
        return Response(status_code=304, headers={"ETag": etag})
    # Serialised once from the rows, as a list page is (tests/routers/test_subtasks.py checks the bytes).
    answer = JSONPage(ok(tree))
    answer.headers["ETag"] = etag
    return answer


@router.put(
    "/{task_id}",
    response_model=TaskEnvelope,
    summary="Update a task (partial body accepted)",
    operation_id="replace_task",
    responses=responses(*WITH_BODY, 412),
)
@router.patch(
    "/{task_id}",
    response_model=TaskEnvelope,
    summary="Update some fields of a task",
    operation_id="update_task",
    responses=responses(*WITH_BODY, 412),
)
@TaskUnchanged
async def update_task(
    owner_id: CallerId,
    task_id: RowIdPath,
    payload: Annotated[TaskUpdate, Body(openapi_examples=examples.TASK_UPDATE)],
    session: SessionDep,
    live: WriteDep,
    x_timezone: TimezoneHeader = None,
) -> dict[str, Any]:
    """Only the fields sent change. `completed` and `status` are kept in agreement. `labels` replaces the
    whole list (`[]` clears it). A new `parent_id` or `project_id` puts the task last among its new siblings.
    Completing a recurring task moves its `due_date` to the next occurrence and keeps it open."""
    task = await task_service.update_task(session, owner_id, task_id, payload, x_timezone)
    return ok(live.tagged(task), "Task updated")


@router.post(
    "/{task_id}/move",
    response_model=TaskEnvelope,
    summary="Move a task in manual order",
    operation_id="move_task",
    responses=responses(*WITH_BODY, 412),
)
@TaskUnchanged
async def move_task(
    owner_id: CallerId,
    task_id: RowIdPath,
    payload: TaskMove,
    session: SessionDep,
    live: WriteDep,
) -> dict[str, Any]:
    """Places the task right after `after_id` (null: first) among its siblings; with `parent_id` and/or
    `project_id`, among the siblings at that new place (the tree rules apply: `CYCLE`, `TASK_DEPTH_EXCEEDED`; a
    subtask's project is its parent's). Writes one row whatever the number of siblings. `sort=position` lists
    tasks in this order."""
    task = await task_service.move_task(session, owner_id, task_id, payload)
    return ok(live.tagged(task), "Task moved")


@router.patch(
    "/{task_id}/complete",
    response_model=TaskEnvelope,
    summary="Complete or reopen a task",
    operation_id="complete_task",
    responses=responses(*WITH_BODY, 412),
)
@TaskUnchanged
async def complete_task(
    owner_id: CallerId,
    task_id: RowIdPath,
    session: SessionDep,
    live: WriteDep,
    payload: TaskComplete | None = None,
) -> dict[str, Any]:
    """`{"completed": true}` completes (status `completed`); `false` reopens (status `pending`). Completing
    completes the task's open subtasks; a recurring task instead moves on to its next occurrence (see
    `/completions`)."""
    completed = True if payload is None else payload.completed
    task = await task_service.set_completed(session, owner_id, task_id, completed)
    return ok(live.tagged(task), "Task completed" if completed else "Task reopened")


@router.get(
    "/{task_id}/completions",
    response_model=TaskCompletionListEnvelope,
    summary="List a recurring task's completions",
    operation_id="list_task_completions",
    responses=responses(*OWNED),
)
async def list_task_completions(
    owner_id: CallerId,
    task_id: RowIdPath,
    session: SessionDep,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> dict[str, Any]:
    """Each completion of the task (`completed_at`, and the `due_date` it completed), newest first."""
    items, total = await task_service.list_completions(session, owner_id, task_id, limit, offset)
    return page(items, total, limit, offset)


@router.delete(
    "/{task_id}",
    response_model=MessageEnvelope,
    summary="Delete a task",
    operation_id="delete_task",
    responses=responses(*OWNED, 412),
)
@TaskUnchanged
async def delete_task(owner_id: CallerId, task_id: RowIdPath, session: SessionDep) -> dict[str, Any]:
    """Deletes for good."""
    await task_service.delete_task(session, owner_id, task_id)
    return ok(None, "Task deleted")
