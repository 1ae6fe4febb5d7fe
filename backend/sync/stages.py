"""What a sync stage sees and raises: the interface between the runner and every stage.

A stage is `async def stage(ctx: SyncContext) -> dict`: it reads the project snapshot and the
results of the stages before it, and returns its own piece (a JSON object). It signals a failure
meant for the client by raising StageError. This module imports nothing of the app at run time,
so stage modules (the GitHub ones, a deployment's own) depend on it and not on the runner.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from backend.config import Settings


class StageError(Exception):
    """A stage failed for a reason the client may read (no traceback, no secret)."""


@dataclass(frozen=True, slots=True)
class ProjectSnapshot:
    """The project as it was when the run started."""

    id: int
    user_id: str
    github_repo_name: str
    repo_metadata: dict[str, Any] | None

    @property
    def owner(self) -> str:
        return self.github_repo_name.split("/", 1)[0]

    @property
    def repo(self) -> str:
        return self.github_repo_name.split("/", 1)[1]


@dataclass(slots=True)
class SyncContext:
    project: ProjectSnapshot
    http: httpx.AsyncClient
    settings: Settings
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


StageFunction = Callable[[SyncContext], Awaitable[dict[str, Any]]]
