"""Stages a deployment might plug in through SYNC_STAGES (used by tests/sync/test_pipeline.py)."""

import asyncio
from typing import Any

from backend.sync.github import get_json
from backend.sync.stages import SyncContext


async def licence_audit(ctx: SyncContext) -> dict[str, Any]:
    """Reads an earlier stage's result and calls GitHub through the run's client."""
    name = ctx.project.github_repo_name
    repo = await get_json(ctx, f"/repos/{name}", f"repository {name}")
    return {"licence_ok": ctx.results["repository"]["license"] == "MIT", "seen": [*ctx.results], "id": repo["id"]}


async def renamed(ctx: SyncContext) -> dict[str, Any]:
    return {"audited_by": "custom"}


renamed.stage_name = "audit"  # type: ignore[attr-defined]


async def explode(ctx: SyncContext) -> dict[str, Any]:
    raise RuntimeError("password=hunter2 at /srv/secret")


async def stall(ctx: SyncContext) -> dict[str, Any]:
    await asyncio.Event().wait()  # never set: only the stage time limit ends this
    return {}


async def not_an_object(ctx: SyncContext) -> Any:
    return ["not", "a", "mapping"]


def not_async(ctx: SyncContext) -> dict[str, Any]:
    return {}
