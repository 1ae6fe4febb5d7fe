"""Batches: `POST /api/{user_id}/batch` applies up to 100 task and project commands in order (specs/api/batch.md)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import openapi_examples as examples
from backend.db import after_commit, unit_of_work
from backend.deps import CallerId, SessionDep, require_owner
from backend.envelope import BatchEnvelope, ok
from backend.errors import BatchTooLarge, responses
from backend.models.batch import MAX_COMMANDS, BatchRequest
from backend.ratelimit import count_more
from backend.routers.common import WITH_BODY
from backend.routers.tasks import TimezoneHeader
from backend.services import batch as batch_service
from backend.services import feed as feed_service

router = APIRouter(prefix="/api/{user_id}/batch", tags=["batch"], dependencies=[Depends(require_owner)])

PURGE_EVERY_SECONDS = 3600.0


async def feed_cursor(session: AsyncSession, owner_id: str) -> str | None:
    """The feed cursor after this batch: where `GET /changes` goes on from to see what came after it."""
    return await feed_service.current_cursor(session, owner_id)


async def not_too_large(request: Request) -> None:
    """More than 100 commands is 422 BATCH_TOO_LARGE, whatever else is wrong with them: checked on the raw body,
    before the commands are validated (a malformed body is left to that validation)."""
    try:
        commands = (await request.json()).get("commands")
    except (ValueError, AttributeError):
        return
    if isinstance(commands, list) and len(commands) > MAX_COMMANDS:
        raise BatchTooLarge(f"A batch has at most {MAX_COMMANDS} commands; this one has {len(commands)}")


@router.post(
    "",
    dependencies=[Depends(not_too_large)],
    response_model=BatchEnvelope,
    summary="Apply a batch of commands",
    operation_id="batch",
    responses={200: examples.BATCH, **responses(*(s for s in WITH_BODY if s != 404))},
)
async def apply_batch(
    request: Request,
    owner_id: CallerId,
    payload: Annotated[BatchRequest, Body(openapi_examples=examples.BATCH_REQUEST)],
    session: SessionDep,
    x_timezone: TimezoneHeader = None,
) -> dict[str, Any]:
    """Up to 100 commands (`task.create`, `task.update`, `task.complete`, `task.reopen`, `task.delete`,
    `task.move`, `project.pin`, `project.update`, `project.unpin`), applied in order, each on its own: a failing
    command answers its own `status` and `error` (as its single route would) and the others still apply. A later
    command may name an earlier one's `temp_id` (as `target`, `parent_id`, `project_id`, `after_id`); `if_version`
    is a precondition (412 in that result). A command `id` already applied within 24 h answers its recorded
    result and changes nothing, so a batch may be sent again after a timeout. N commands count N requests
    against the rate limit."""
    commands = payload.commands
    await count_more(request, len(commands) - 1)  # the middleware counted this request once
    raw = (await request.json())["commands"]
    hashes = [batch_service.fingerprint(command) for command in raw]
    outcome = await batch_service.apply_batch(session, owner_id, commands, hashes, x_timezone)
    _purge_now_and_then(request, session)
    answer = {"results": outcome.results, "temp_ids": outcome.temp_ids, "cursor": await feed_cursor(session, owner_id)}
    return ok(answer, "Batch applied")


def _purge_now_and_then(request: Request, session: AsyncSession) -> None:
    """Every user's expired records go after the first batch's commit after start-up, then hourly (in a
    transaction of their own: on SQLite the request's holds the write lock until its commit)."""
    state = request.app.state
    if time.monotonic() < getattr(state, "batch_purge_at", 0.0):
        return
    state.batch_purge_at = time.monotonic() + PURGE_EVERY_SECONDS

    async def purge() -> None:
        try:
            async with unit_of_work(state.sessionmaker) as own:
                await batch_service.purge_expired(own)
        except Exception as exc:  # the batch is committed; its expired neighbours can wait an hour
            batch_service.log.warning(
                "could not purge expired batch records",
                extra={"event": "batch_purge_failed", "error_type": type(exc).__name__},
            )

    after_commit(session, purge)
