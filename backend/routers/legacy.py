"""The earlier drafts' routes: `/api/tasks...` and `/api/projects/...`, owned by the token's user.

Deprecated in the OpenAPI document and kept for old clients; every answer says so with `Deprecation` and
`Link: <successor>; rel="successor-version"` (middleware.InnerMiddleware, from SUCCESSORS below).
They are the very operations of routers/tasks.py and routers/projects.py (same endpoint functions,
dependencies and documentation), served at the earlier paths without `{user_id}`: whose data it is comes
from the token alone. Tasks and projects are answered in the earlier shapes (TaskPublicV1: no `labels` nor
`version`; ProjectPublicV1: no `version`; see `mirror`'s `shapes`); the bodies are the current ones, so
`labels` sent there is kept, just not answered.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from backend.envelope import (
    ProjectEnvelope,
    ProjectListEnvelope,
    ProjectV1Envelope,
    ProjectV1ListEnvelope,
    TaskEnvelope,
    TaskListEnvelope,
    TaskTreeEnvelope,
    TaskV1Envelope,
    TaskV1ListEnvelope,
)
from backend.routers import projects, tasks
from backend.routers.common import mirror

# When the routes below were deprecated: the first release, which already had `/api/{user_id}/...`.
DEPRECATED_SINCE = datetime(2026, 11, 21, tzinfo=UTC)

# Two routers, so main.py can keep each where the earlier drafts' routes always were.
tasks_router = APIRouter(prefix="/api/tasks", tags=["tasks (earlier drafts)"], deprecated=True)
projects_router = APIRouter(prefix="/api/projects", tags=["projects (earlier drafts)"], deprecated=True)

# (method, earlier path template) -> the `/api/{user_id}/...` template serving the same operation.
SUCCESSORS: dict[tuple[str, str], str] = {}
SUCCESSORS |= mirror(
    tasks.router,
    tasks_router,
    {
        "GET ": "",
        "POST ": "",
        "GET /search": "/search",
        "GET /{task_id}": "/{task_id}",
        "PUT /{task_id}": "/{task_id}",
        "PATCH /{task_id}": "/{task_id}",
        "DELETE /{task_id}": "/{task_id}",
    },
    # The earlier drafts' shape: a task without the fields added since (`labels`).
    # `get_task` answers either shape (`include=subtasks`); the earlier drafts' route answers the old one.
    shapes={
        TaskEnvelope: TaskV1Envelope,
        TaskEnvelope | TaskTreeEnvelope: TaskV1Envelope,  # type: ignore[dict-item]
        TaskListEnvelope: TaskV1ListEnvelope,
    },
)
SUCCESSORS |= mirror(
    projects.router,
    projects_router,
    {
        "GET ": "/pinned",
        "POST ": "/pin",
        "PUT /{project_id}": "/pinned/{project_id}",
        "DELETE /{project_id}": "/unpin/{project_id}",
    },
    # The earlier drafts' shape: a project without the fields added since (`version`).
    shapes={ProjectEnvelope: ProjectV1Envelope, ProjectListEnvelope: ProjectV1ListEnvelope},
)
