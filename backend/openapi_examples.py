"""Request and response examples shown in /docs and /redoc (documentation only: nothing here is validated)."""

from __future__ import annotations

from typing import Any

from fastapi.openapi.models import Example

USER_ID = "6f1c2a9e8b7d4c3fa1e2d3c4b5a69788"
NOW = "2026-11-21T10:00:00Z"
EMAIL = "ada@example.com"
PASSWORD = "Sturdy-Lantern-42"  # noqa: S105 - a documentation example, never a real password

REGISTER: dict[str, Example] = {
    "minimal": {"summary": "Email and password", "value": {"email": EMAIL, "password": PASSWORD}},
    "with_name": {
        "summary": "With a display name",
        "value": {"email": EMAIL, "password": PASSWORD, "full_name": "Ada Lovelace"},
    },
}
LOGIN: dict[str, Example] = {
    "login": {"summary": "Sign in", "value": {"email": EMAIL, "password": PASSWORD}},
}
TASK_CREATE: dict[str, Example] = {
    "minimal": {"summary": "Just a title", "value": {"title": "Write the release notes"}},
    "full": {
        "summary": "Every field a client may set",
        "value": {
            "title": "Review the sync pull request",
            "description": "Check the stage error messages",
            "status": "in_progress",
            "priority": "high",
            "due_date": "2026-12-01T17:00:00Z",
            "project_id": 1,
            "labels": ["review", "sync"],
        },
    },
}
TASK_UPDATE: dict[str, Example] = {
    "retitle": {"summary": "Change the title", "value": {"title": "Write and publish the release notes"}},
    "start": {"summary": "Start working on it", "value": {"status": "in_progress"}},
    "move": {"summary": "Move to another project, no due date", "value": {"project_id": 2, "due_date": None}},
    "relabel": {"summary": "Replace its labels (`[]` clears them)", "value": {"labels": ["writing", "urgent"]}},
}
LABEL_RENAME: dict[str, Example] = {
    "rename": {"summary": "Rename the label on every task", "value": {"name": "Writing"}},
}
PROJECT_PIN: dict[str, Example] = {
    "by_name": {"summary": "Just the repository", "value": {"github_repo_name": "fastapi/fastapi"}},
    "with_details": {
        "summary": "With a display name and a position",
        "value": {
            "github_repo_name": "encode/starlette",
            "github_repo_url": "https://github.com/encode/starlette",
            "display_name": "Starlette",
            "description": "The ASGI toolkit under FastAPI",
            "position": 0,
        },
    },
}

_TASK = {
    "id": 42,
    "user_id": USER_ID,
    "title": "Write the release notes",
    "description": None,
    "status": "pending",
    "priority": "medium",
    "completed": False,
    "due_date": None,
    "project_id": None,
    "created_at": NOW,
    "updated_at": NOW,
    "completed_at": None,
    "labels": ["writing"],
}
_PROJECT = {
    "id": 1,
    "user_id": USER_ID,
    "github_repo_name": "fastapi/fastapi",
    "github_repo_url": "https://github.com/fastapi/fastapi",
    "display_name": None,
    "description": None,
    "position": 0,
    "is_active": True,
    "pinned_at": NOW,
    "last_updated": NOW,
    "repo_metadata": None,
    "last_synced_at": None,
}


def example(data: Any, message: str | None = None, meta: dict[str, int] | None = None) -> dict[str, Any]:
    """`responses=` entry giving a success example; the schema still comes from the response_model."""
    body: dict[str, Any] = {"success": True, "data": data, "message": message}
    if meta is not None:
        body["meta"] = meta
    return {"content": {"application/json": {"example": body}}}


REGISTERED = example({"user_id": USER_ID, "email": EMAIL, "full_name": None, "created_at": NOW}, "Registered")
LOGGED_IN = example(
    {
        "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
        "refresh_token": "kD1r0vXw...",
        "token_type": "bearer",
        "expires_in": 900,
        "user_id": USER_ID,
    },
    "Logged in",
)
TASK = example(_TASK, "Task created")
TASKS = example([_TASK], meta={"total": 1, "limit": 50, "offset": 0})
LABELS = example([{"name": "writing", "task_count": 1}], meta={"total": 1, "limit": 50, "offset": 0})
PROJECT = example(_PROJECT, "Project pinned")
PROJECTS = example([_PROJECT], meta={"total": 1, "limit": 1, "offset": 0})

_COMMAND_IDS = [
    "0b6f7c1e-2f5d-4a8e-9c61-3f1f0f8d9a10",
    "5d2c4a1b-7e3f-4b6a-8c9d-0e1f2a3b4c5d",
    "9a8b7c6d-5e4f-4a3b-9c1d-0e9f8a7b6c5d",
]
BATCH_REQUEST: dict[str, Example] = {
    "temp_ids": {
        "summary": "A task, a subtask naming it by temp id, and a stale update",
        "value": {
            "commands": [
                {"id": _COMMAND_IDS[0], "op": "task.create", "temp_id": "t1", "data": {"title": "Plan the release"}},
                {
                    "id": _COMMAND_IDS[1],
                    "op": "task.create",
                    "data": {"title": "Write the release notes", "parent_id": "t1"},
                },
                {
                    "id": _COMMAND_IDS[2],
                    "op": "task.update",
                    "target": 7,
                    "if_version": 3,
                    "data": {"priority": "high"},
                },
            ]
        },
    },
}
_BATCH_TASK = {**_TASK, "parent_id": None, "position": "a0", "due_timezone": None, "recurrence": None, "labels": []}
BATCH = example(
    {
        "results": [
            {"id": _COMMAND_IDS[0], "status": 201, "item": {**_BATCH_TASK, "title": "Plan the release"}, "error": None},
            {"id": _COMMAND_IDS[1], "status": 201, "item": {**_BATCH_TASK, "id": 43, "parent_id": 42}, "error": None},
            {
                "id": _COMMAND_IDS[2],
                "status": 412,
                "item": None,
                "error": {
                    "code": "PRECONDITION_FAILED",
                    "message": "The task changed since you read it: if_version 3, its version is now 4; read it again",
                    "field": "if_version",
                    "details": None,
                },
            },
        ],
        "temp_ids": {"t1": 42},
        "cursor": None,
    },
    "Batch applied",
)
