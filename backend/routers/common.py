"""What the task and project routes share, current (`/api/{user_id}/...`) and earlier drafts' alike."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Annotated, Any, TypeVar, cast

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, StringConstraints
from pydantic_core import to_json
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.deps import CallerId, SessionDep
from backend.envelope import page
from backend.models.common import MAX_ROW_ID, NO_NUL, UTCQueryDatetime
from backend.models.label import MAX_LABELS_PER_TASK
from backend.models.task import TaskPriority, TaskSort, TaskStatus
from backend.resource import IfMatch, Versioned, check_if_match
from backend.services import projects as project_service
from backend.services import tasks as task_service
from backend.services.tasks import TaskFilters

# Error responses a route documents: any route on an owner's rows, and one that also reads a body.
OWNED = (401, 403, 404, 422, 429, 503)
WITH_BODY = (400, 413, *OWNED)

RowIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="A row id")]
LimitQuery = Annotated[int, Query(ge=1, le=100, description="Page size, 1-100")]
OffsetQuery = Annotated[int, Query(ge=0, le=10_000_000, description="Rows to skip")]
TaskSortQuery = Annotated[TaskSort, Query(description="Sort key; a leading `-` sorts descending")]
LabelQuery = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=NO_NUL)]
TaskSearchQuery = Annotated[
    str, Query(min_length=1, max_length=200, pattern=NO_NUL, description="Text in title or description")
]

# Whose rows a route serves: `require_owner` (the path's user) or `current_user_id` (the token's).
OwnerResolver = Callable[..., Awaitable[str]]
RowLock = Callable[[AsyncSession, str, int], Awaitable[Versioned]]
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])  # an endpoint


async def task_filters(
    status: Annotated[TaskStatus | None, Query(description="Only tasks in this status")] = None,
    priority: Annotated[TaskPriority | None, Query(description="Only tasks of this priority")] = None,
    completed: Annotated[bool | None, Query(description="Only completed (true) or open (false) tasks")] = None,
    project_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID, description="Only tasks of this project")] = None,
    due_before: Annotated[UTCQueryDatetime | None, Query(description="Due before (ISO 8601; UTC if no offset)")] = None,
    due_after: Annotated[
        UTCQueryDatetime | None, Query(description="Due strictly after (ISO 8601; UTC if no offset)")
    ] = None,
    q: Annotated[
        str | None, Query(max_length=200, pattern=NO_NUL, description="Text in title or description (literal)")
    ] = None,
    parent_id: Annotated[
        int | None, Query(ge=1, le=MAX_ROW_ID, description="Only the direct subtasks of this task")
    ] = None,
    root: Annotated[bool | None, Query(description="true: only top-level tasks; false: only subtasks")] = None,
    label: Annotated[
        list[LabelQuery],
        Query(
            max_length=MAX_LABELS_PER_TASK,
            description="Only tasks carrying this label (any case); repeat it for tasks carrying every one",
        ),
    ] = [],  # noqa: B006 - FastAPI copies a default, never shares it
) -> TaskFilters:
    # async: a plain `def` dependency costs a thread-pool hop on every list request.
    return TaskFilters(
        status=status,
        priority=priority.value if priority else None,
        completed=completed,
        project_id=project_id,
        due_before=due_before,
        due_after=due_after,
        q=q or None,
        labels=tuple(label),
        parent_id=parent_id,
        root=root,
    )


TaskFiltersDep = Annotated[TaskFilters, Depends(task_filters)]


def searching(filters: TaskFilters, q: str) -> TaskFilters:
    """The search routes' required `q` replaces the filters' optional one."""
    return replace(filters, q=q)


async def task_page(
    session: AsyncSession, owner_id: str, filters: TaskFilters, sort: TaskSort, limit: int, offset: int
) -> Response:
    """One page of the owner's matching tasks; `meta.total` counts every match.

    Serialised once, where the rows are read (on PostgreSQL by PostgreSQL: services/tasks.json_fields), into the
    `TaskListEnvelope` the route declares: FastAPI's second pass (validate the dict against the response model,
    then dump it) is skipped, and `tests/routers/test_lists.py` checks that the bytes are the ones that pass would
    give."""
    items, total = await task_service.list_tasks(session, owner_id, filters, sort, limit, offset)
    return SplicedJSON(page(SPLICE, total, limit, offset), items)


class JSONPage(Response):
    """A list answer serialised once from its dict (`data`), which it keeps: a route mirrored with another
    response shape (mirror's `shapes`) serialises it again through that shape."""

    media_type = "application/json"

    def __init__(self, data: dict[str, Any], status_code: int = 200) -> None:
        self.data = data
        super().__init__(data, status_code)

    def render(self, content: Any) -> bytes:
        return to_json(content)


class SplicedJSON(Response):
    """An answer whose dict holds `SPLICE` in place of one value already serialised (`raw`, JSON text: a task list's
    or the change feed's page, whose tasks PostgreSQL wrote): the dict is serialised, then `raw` put where `SPLICE`
    came out. The earlier drafts' lists read it back through their shape (`reshaped`)."""

    media_type = "application/json"

    def __init__(self, data: dict[str, Any], raw: str) -> None:
        head, spliced, tail = to_json(data).partition(_SPLICED)
        assert spliced, "no SPLICE in the answer"
        super().__init__(b"".join((head, raw.encode(), tail)))


SPLICE = "<spliced>"  # a value no answer's other fields (cursors, flags, messages of ours) can hold
_SPLICED = to_json(SPLICE)


def json_attachment(data: dict[str, Any], filename: str) -> Response:
    """An export as a JSON file download, saved under `filename`."""
    return Response(
        json.dumps(data, default=str, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def unchanged(param: str, lock: RowLock) -> Callable[[F], F]:
    """Decorate a write route: with `If-Match`, the row at path parameter `param` must still have that ETag.

    Checked as the endpoint starts, after FastAPI validated the path, query and body (a route dependency
    would run before that validation, and a stale `If-Match` would hide a 422 behind a 412). `lock` loads
    the owner's row under the lock the write takes next (see check_if_match): a missing row is 404, before 412.
    """

    async def precondition(
        request: Request, session: SessionDep, owner_id: CallerId, if_match: IfMatch = None
    ) -> Callable[[], Awaitable[None]]:
        load = partial(lock, session, owner_id)
        return partial(check_if_match, if_match, request.path_params[param], load)

    def decorate(endpoint: F) -> F:
        signature = inspect.signature(endpoint)
        check = inspect.Parameter(
            _PRECONDITION,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[Callable[[], Awaitable[None]], Depends(precondition)],
        )

        @functools.wraps(endpoint)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            await kwargs.pop(_PRECONDITION)()
            return await endpoint(*args, **kwargs)

        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*signature.parameters.values(), check]
        )
        return cast(F, wrapper)

    return decorate


_PRECONDITION = "_if_match_precondition"
TaskUnchanged = unchanged("task_id", task_service.lock_task)
ProjectUnchanged = unchanged("project_id", project_service.lock_project)


# How an earlier-draft route says it is deprecated (RFC 9745, RFC 8288), documented on its success answer.
DEPRECATION_HEADERS: dict[str, dict[str, Any]] = {
    "Deprecation": {
        "description": "When this route was deprecated (RFC 9745): `@` and Unix seconds",
        "required": True,
        "schema": {"type": "string", "examples": ["@1795219200"]},
    },
    "Link": {
        "description": "The current route for this request: "
        '`</api/{user_id}/...>; rel="successor-version"` with your user id and the resource id filled in',
        "required": True,
        "schema": {"type": "string", "examples": ['</api/u1/tasks/7>; rel="successor-version"']},
    },
}


def reshaped(endpoint: F, shape: type[BaseModel]) -> F:
    """`endpoint` answering in `shape`, a response model with fewer fields than the route's own. A dict
    answer needs nothing: FastAPI validates it into the route's response model, which drops the rest. A
    pre-serialised answer (JSONPage, SplicedJSON) is serialised again through `shape`."""

    @functools.wraps(endpoint)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = await endpoint(*args, **kwargs)
        if isinstance(result, JSONPage):
            return JSONPage(shape.model_validate(result.data).model_dump(mode="json"), result.status_code)
        if isinstance(result, SplicedJSON):
            return JSONPage(shape.model_validate_json(bytes(result.body)).model_dump(mode="json"), result.status_code)
        return result

    return cast(F, wrapper)


def mirror(
    source: APIRouter,
    target: APIRouter,
    paths: dict[str, str],
    shapes: dict[type[BaseModel], type[BaseModel]] | None = None,
) -> dict[tuple[str, str], str]:
    """Serve some of `source`'s operations again on `target`, at the paths `paths` maps them to
    (`"METHOD /path"` under source's prefix -> path under target's): the same endpoint functions and
    documentation, `legacy_` operation ids, and target's own tags and router dependencies instead of
    source's. Used for the earlier drafts' routes (routers/legacy.py); routes keep source's order.
    `shapes` maps a route's response model to the one the mirrored route answers instead (the earlier
    drafts' shape, without the fields added since): see `reshaped`.

    Answers each mirrored route's successor: `(method, target path template) -> source path template`.
    """
    successors: dict[tuple[str, str], str] = {}
    for route in source.routes:
        assert isinstance(route, APIRoute)
        for method in sorted(route.methods or ()):
            key = f"{method} {route.path.removeprefix(source.prefix)}"
            if key not in paths:
                continue
            success = route.status_code or 200
            shape = (shapes or {}).get(route.response_model)
            target.add_api_route(
                paths[key],
                route.endpoint if shape is None else reshaped(route.endpoint, shape),
                methods=[method],
                response_model=route.response_model if shape is None else shape,
                status_code=route.status_code,
                summary=route.summary,
                description=route.description,
                operation_id=f"legacy_{route.operation_id}",
                responses={
                    **route.responses,
                    success: {**route.responses.get(success, {}), "headers": DEPRECATION_HEADERS},
                },
                dependencies=[d for d in route.dependencies if d not in source.dependencies],
                openapi_extra=route.openapi_extra,
            )
            successors[(method, target.prefix + paths[key])] = route.path
    return successors
