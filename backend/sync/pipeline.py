"""The sync pipeline: ordered named stages, progress persisted per stage, results kept until all succeed.

The stages are loaded from SYNC_STAGES when the runner is built (create_app, at start-up), so a bad
entry stops the start with a ConfigError. A stage (see backend/sync/stages.py) signals a failure
meant for the client by raising StageError; anything else becomes a generic message (its type
goes to the log). The project's `repo_metadata` is the merge of every stage's result, in stage
order, written with the run's success in one transaction: a failed run leaves it alone.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import os
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.config import ConfigError, Settings
from backend.db import unit_of_work
from backend.logging_setup import describe_exception
from backend.models.common import iso_z, utcnow
from backend.models.sync_run import StageStatus
from backend.services import sync as sync_service
from backend.services.sync import interrupted_stages
from backend.sync.stages import ProjectSnapshot, StageError, StageFunction, SyncContext

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("taskdeck.sync")

LOST = "interrupted: the server running it stopped"
SHUT_DOWN = "interrupted: the server shut down"
# A run whose instance died is resumed elsewhere this many times; the next loss fails it (a run that
# kills every instance taking it must not go round the cluster forever).
MAX_TAKEOVERS = 2
UNEXPECTED = "unexpected error in this stage; see the server log"
STAGE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    run: StageFunction


def _split(path: str) -> tuple[str, str]:
    module, sep, attribute = path.partition(":")
    if not sep:
        module, _, attribute = path.rpartition(".")
    return module, attribute


def load_stages(paths: Sequence[str]) -> list[Stage]:
    """Import the stage functions named by SYNC_STAGES; ConfigError says which entry is wrong and why."""
    if not paths:
        raise ConfigError("SYNC_STAGES lists no stage")
    stages: list[Stage] = []
    for path in paths:
        module_name, attribute = _split(path)
        if not module_name or not attribute:
            raise ConfigError(f"SYNC_STAGES entry {path!r} must look like 'package.module:function'")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise ConfigError(f"SYNC_STAGES entry {path!r}: module {module_name!r} cannot be imported") from None
        function = getattr(module, attribute, None)
        if function is None:
            raise ConfigError(f"SYNC_STAGES entry {path!r}: {module_name!r} has no {attribute!r}")
        if not inspect.iscoroutinefunction(function):
            raise ConfigError(f"SYNC_STAGES entry {path!r} is not an async function")
        name = str(getattr(function, "stage_name", attribute))
        if not STAGE_NAME_RE.match(name):
            raise ConfigError(f"SYNC_STAGES entry {path!r}: stage name {name!r} is not a plain identifier")
        if any(stage.name == name for stage in stages):
            raise ConfigError(f"SYNC_STAGES names the stage {name!r} twice")
        stages.append(Stage(name, function))
    return stages


def _log_error(message: str, event: str, exc: BaseException, **fields: Any) -> None:
    """Type and place of the exception only: its message could carry data or SQL."""
    log.error(message, extra={"event": event, **fields, **describe_exception(exc)})


def _now() -> str:
    return iso_z(utcnow())


def progress_after(done: int, total: int) -> int:
    """Share of stages finished; 100 is kept for the succeeded run."""
    return min(99, done * 100 // total)


def merged_metadata(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for piece in results.values():
        metadata.update(piece)
    return metadata


def _checked(output: object) -> dict[str, Any]:
    if not isinstance(output, dict):
        raise StageError("the stage returned something other than a JSON object")
    try:
        json.dumps(output)
    except (TypeError, ValueError):
        raise StageError("the stage returned a result that is not JSON") from None
    return output


def new_instance_id() -> str:
    """Unique per process (and so per worker), readable in logs: host, pid, random suffix."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


class SyncRunner:
    """Runs sync runs as asyncio tasks inside the API process; every step is persisted for any instance to read.

    Each run it executes is leased to this process (`instance_id`): a keeper task renews the leases
    every SYNC_LEASE_SECONDS / 3 and sweeps for runs whose lease expired (their instance died), which
    it takes over and resumes from the first stage not yet succeeded. Start-up does the same sweep once.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        client_factory: Callable[[], httpx.AsyncClient],
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.stages = load_stages(settings.SYNC_STAGES)  # a bad SYNC_STAGES fails here, at start-up
        self.client_factory = client_factory  # a new GitHub client for each run
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self.instance_id = new_instance_id()
        self.lease = sync_service.Lease(self.instance_id, settings.SYNC_LEASE_SECONDS)
        self._keeper: asyncio.Task[None] | None = None
        # Set by the app: live events (`sync.progress`, `sync.finished`) and the outcome metric.
        self.notify: Callable[[str, str, dict[str, Any]], Awaitable[None]] | None = None
        self.finished: Callable[[str], None] | None = None

    async def _announce(self, user_id: str, event_type: str, **data: Any) -> None:
        if self.notify is not None:
            await self.notify(user_id, event_type, data)
        if event_type == "sync.finished" and self.finished is not None:
            self.finished(str(data["status"]))

    @property
    def stage_names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    async def start(self) -> None:
        """At start-up: take over what dead instances left, then keep leases and sweep in the background."""
        await self.recover()
        self._keeper = asyncio.create_task(self._keep_leases(), name="sync-leases")

    async def recover(self) -> None:
        """Take over the runs whose lease expired: resumed here, or failed after MAX_TAKEOVERS losses."""
        try:
            async with unit_of_work(self.sessions) as session:
                claimed = await sync_service.take_over_expired(session, self.lease, MAX_TAKEOVERS, LOST)
        except Exception as exc:  # the database is down (or not migrated): start anyway, the next sweep retries
            _log_error("could not take over expired sync runs", "sync_recovery_failed", exc)
            return
        fields = {"instance": self.instance_id}
        if claimed.resumed:
            log.warning(
                "sync runs of a stopped instance taken over",
                extra={"event": "sync_runs_taken_over", "run_ids": claimed.resumed, **fields},
            )
        if claimed.failed:
            log.warning(
                "sync runs lost too often marked failed",
                extra={"event": "sync_runs_recovered", "run_ids": claimed.failed, **fields},
            )
        for run_id in claimed.resumed:
            self.submit(run_id)

    async def renew(self) -> None:
        """The heartbeat: extend the leases of the runs executing here."""
        running = list(self._tasks)
        try:
            async with unit_of_work(self.sessions) as session:
                held = await sync_service.renew_leases(session, self.lease, running)
        except Exception as exc:  # the run's writes stay fenced; if the lease expires meanwhile, it is taken over
            _log_error("could not renew sync run leases", "sync_lease_renewal_failed", exc)
            return
        lost = sorted(set(running) - set(held))
        if lost:  # finished meanwhile, or taken over after this process stalled past its lease
            log.info("sync runs no longer leased here", extra={"event": "sync_leases_lost", "run_ids": lost})

    async def _keep_leases(self) -> None:
        interval = self.settings.SYNC_LEASE_SECONDS / 3
        while True:
            await asyncio.sleep(interval)
            await self.renew()
            await self.recover()

    async def stop_keeping_leases(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
            self._keeper = None

    def submit(self, run_id: int) -> None:
        if run_id in self._tasks:
            return  # already executing here
        task = asyncio.create_task(self._guarded(run_id), name=f"sync-run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run_id, None))

    async def close(self) -> None:
        """At shutdown: stop the keeper, cancel the runs in flight; each records itself as interrupted."""
        await self.stop_keeping_leases()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _guarded(self, run_id: int) -> None:
        try:
            await self._execute(run_id)
        except asyncio.CancelledError:
            await asyncio.shield(self._stop(run_id, SHUT_DOWN))
            raise
        except Exception as exc:  # the runner itself failed (e.g. the database): the run must not stay active
            _log_error("sync run failed outside its stages", "sync_run_error", exc, run_id=run_id)
            await self._stop(run_id, "the sync run could not be completed; see the server log")

    async def _stop(self, run_id: int, reason: str) -> None:
        try:
            async with unit_of_work(self.sessions) as session:
                await sync_service.stop_run(session, run_id, self.instance_id, reason)
        except Exception as exc:  # the database is gone too: the lease expires and another instance takes it over
            _log_error("could not record a stopped sync run", "sync_run_error", exc, run_id=run_id)

    async def _save(self, run_id: int, **values: Any) -> bool:
        async with unit_of_work(self.sessions) as session:
            return await sync_service.record_progress(session, run_id, self.instance_id, **values)

    async def _execute(self, run_id: int) -> None:
        async with unit_of_work(self.sessions) as session:
            begun = await sync_service.begin_run(session, run_id, self.lease)
        if begun is None:
            return
        run, project = begun
        assert project.id is not None
        snapshot = ProjectSnapshot(project.id, project.user_id, project.github_repo_name, project.repo_metadata)
        records = [dict(record) for record in run.stages]
        total = len(records)
        if [record.get("name") for record in records] != self.stage_names:
            # Taken over from an instance with other SYNC_STAGES (a deployment changing them): not resumable.
            await self._fail(snapshot, run_id, run.current_stage, LOST, stages=interrupted_stages(records, LOST))
            return
        async with self.client_factory() as http:
            context = SyncContext(snapshot, http, self.settings)
            # A run taken over resumes after its last succeeded stage, with the results saved so far.
            context.results.update(run.results or {})
            for index, stage in enumerate(self.stages):
                if records[index].get("status") == StageStatus.SUCCEEDED and stage.name in context.results:
                    continue
                records[index] |= {"status": StageStatus.RUNNING, "started_at": _now(), "finished_at": None}
                progress = progress_after(index, total)
                if not await self._save(run_id, current_stage=stage.name, progress=progress, stages=records):
                    return
                await self._announce(
                    snapshot.user_id,
                    "sync.progress",
                    run_id=run_id,
                    project_id=snapshot.id,
                    current_stage=stage.name,
                    progress=progress,
                )
                message = await self._run_stage(run_id, stage, context)
                records[index] |= {"finished_at": _now()}
                if message is not None:
                    records[index] |= {"status": StageStatus.FAILED, "error": message}
                    records[index + 1 :] = [record | {"status": StageStatus.SKIPPED} for record in records[index + 1 :]]
                    await self._fail(snapshot, run_id, stage.name, message, stages=records, results=context.results)
                    return
                records[index] |= {"status": StageStatus.SUCCEEDED}
                progress = progress_after(index + 1, total)
                if not await self._save(run_id, progress=progress, stages=records, results=context.results):
                    return
        async with unit_of_work(self.sessions) as session:
            done = await sync_service.complete_run(
                session,
                run_id,
                self.instance_id,
                snapshot.id,
                merged_metadata(context.results),
                stages=records,
                results=context.results,
            )
        if done:
            await self._announce(
                snapshot.user_id, "sync.finished", run_id=run_id, project_id=snapshot.id, status="succeeded", error=None
            )

    async def _fail(
        self, snapshot: ProjectSnapshot, run_id: int, stage: str | None, message: str, **values: Any
    ) -> None:
        async with unit_of_work(self.sessions) as session:
            failed = await sync_service.fail_run(session, run_id, self.instance_id, stage, message, **values)
        if failed:
            await self._announce(
                snapshot.user_id,
                "sync.finished",
                run_id=run_id,
                project_id=snapshot.id,
                status="failed",
                error={"stage": stage, "message": message},
            )

    async def _run_stage(self, run_id: int, stage: Stage, context: SyncContext) -> str | None:
        """Run one stage; its result joins the context. The failure message, or None."""
        limit = self.settings.SYNC_STAGE_TIMEOUT_SECONDS
        try:
            async with asyncio.timeout(limit):
                context.results[stage.name] = _checked(await stage.run(context))
        except TimeoutError:
            message = f"the stage did not finish within {limit:g} s"
        except StageError as exc:
            message = str(exc) or "the stage failed"
        except Exception as exc:
            _log_error("unexpected error in a sync stage", "sync_stage_error", exc, run_id=run_id, stage=stage.name)
            return UNEXPECTED
        else:
            return None
        # Our own messages (never the token): safe to log.
        log.info(
            "sync stage failed",
            extra={"event": "sync_stage_failed", "run_id": run_id, "stage": stage.name, "reason": message},
        )
        return message
