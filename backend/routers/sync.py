"""Sync-run routes: `/api/{user_id}/projects/{project_id}/sync`."""

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from backend.db import after_commit
from backend.deps import OwnerDep, SessionDep
from backend.envelope import SyncRunEnvelope, SyncRunListEnvelope, ok, page
from backend.errors import responses
from backend.idempotency import idempotent
from backend.models.sync_run import SyncRunPublic
from backend.ratelimit import by_user, rate_limit
from backend.routers.common import OWNED, LimitQuery, OffsetQuery, RowIdPath
from backend.services import sync as sync_service
from backend.sync.pipeline import SyncRunner

BASE = "/api/{user_id}/projects/{project_id}/sync"


def get_runner(request: Request) -> SyncRunner:
    runner: SyncRunner = request.app.state.sync_runner
    return runner


Runner = Annotated[SyncRunner, Depends(get_runner)]

router = APIRouter(tags=["sync runs"])


@router.post(
    BASE,
    status_code=202,
    response_model=SyncRunEnvelope,
    summary="Start a sync run",
    operation_id="start_sync",
    dependencies=[rate_limit("sync", key=by_user)],
    responses={
        200: {"model": SyncRunEnvelope, "description": "A run of this project is already queued or running"},
        202: {"description": "A new run is queued and starts in the background"},
        **responses(*OWNED),
    },
)
@idempotent
async def start_sync(
    owner_id: OwnerDep, project_id: RowIdPath, session: SessionDep, runner: Runner, response: Response
) -> dict[str, Any]:
    """Queue a refresh of the project's repository data (`202`); poll `GET .../sync/{run_id}` for progress.

    At most one run per project is active: while one is queued or running, this answers `200`
    with that run instead of starting another. The project must be pinned."""
    run, created = await sync_service.start_sync(session, owner_id, project_id, runner.stage_names, runner.lease)
    body = SyncRunPublic.model_validate(run)
    if not created:
        response.status_code = 200
        return ok(body, "A sync run of this project is already in progress")
    after_commit(session, partial(runner.submit, body.run_id))  # the runner must find the run committed
    return ok(body, "Sync run queued")


@router.get(
    f"{BASE}/{{run_id}}",
    response_model=SyncRunEnvelope,
    summary="Get a sync run",
    operation_id="get_sync_run",
    responses=responses(*OWNED),
)
async def get_sync_run(
    owner_id: OwnerDep, project_id: RowIdPath, run_id: RowIdPath, session: SessionDep
) -> dict[str, Any]:
    """Status, current stage, progress (0-100), per-stage records and, for a failed run, the failing stage."""
    return ok(SyncRunPublic.model_validate(await sync_service.get_run(session, owner_id, project_id, run_id)))


@router.get(
    BASE,
    response_model=SyncRunListEnvelope,
    summary="List a project's sync runs",
    operation_id="list_sync_runs",
    responses=responses(*OWNED),
)
async def list_sync_runs(
    owner_id: OwnerDep, project_id: RowIdPath, session: SessionDep, limit: LimitQuery = 50, offset: OffsetQuery = 0
) -> dict[str, Any]:
    """The project's runs, newest first; `meta.total` counts them all."""
    runs, total = await sync_service.list_runs(session, owner_id, project_id, limit, offset)
    return page([SyncRunPublic.model_validate(run) for run in runs], total, limit, offset)
