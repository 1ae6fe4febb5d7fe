"""The sync-run service, called directly (no HTTP, no runner), on SQLite and PostgreSQL, rolled back.

Leases: instance A queues and runs; B and C are other instances. A lease is made to have expired
by moving its expiry into the past (the test's transaction is one instant on PostgreSQL's clock).
Several real instances racing for a run on PostgreSQL: tests/test_leases.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlmodel import col

from backend.errors import NotFound
from backend.models.common import utcnow
from backend.models.project import ProjectCreate
from backend.models.sync_run import StageStatus, SyncRun, SyncStatus
from backend.services import sync
from backend.services.projects import pin_project, unpin_project

STAGES = ["fetch", "analyse"]
A, B, C = (sync.Lease(f"instance-{name}", 30) for name in "abc")
LOST = "interrupted: the server running it stopped"


@pytest.fixture
async def project_id(db_session, owner) -> int:
    project = await pin_project(db_session, owner, ProjectCreate(github_repo_name="octo/hello"))
    assert project.id is not None
    return project.id


async def start(session, owner: str, project_id: int):
    return await sync.start_sync(session, owner, project_id, STAGES, A)


async def row(session, run_id: int) -> SyncRun:
    run = await session.get(SyncRun, run_id, populate_existing=True)
    assert run is not None
    return run


async def set_lease(session, run_id: int, **values) -> None:
    await session.exec(update(SyncRun).where(col(SyncRun.id) == run_id).values(**values))


async def expire(session, run_id: int) -> None:
    """The owner stopped renewing a minute ago (it died)."""
    await set_lease(session, run_id, lease_expires_at=utcnow() - timedelta(minutes=1))


class TestStart:
    async def test_queues_a_run_with_pending_stages(self, db_session, owner, project_id):
        run, created = await start(db_session, owner, project_id)
        assert created
        assert (run.status, run.progress, run.user_id, run.project_id) == (SyncStatus.QUEUED, 0, owner, project_id)
        assert [(s["name"], s["status"]) for s in run.stages] == [(name, StageStatus.PENDING) for name in STAGES]
        assert (await sync.get_run(db_session, owner, project_id, run.id)).id == run.id

    async def test_one_active_run_per_project(self, db_session, owner, project_id):
        first, _ = await start(db_session, owner, project_id)
        again, created = await start(db_session, owner, project_id)
        assert (again.id, created) == (first.id, False)
        assert await sync.begin_run(db_session, first.id, A) is not None
        running, created = await start(db_session, owner, project_id)
        assert (running.id, running.status, created) == (first.id, SyncStatus.RUNNING, False)

    async def test_a_finished_run_makes_room_for_the_next(self, db_session, owner, project_id):
        first, _ = await start(db_session, owner, project_id)
        await sync.begin_run(db_session, first.id, A)
        assert await sync.fail_run(db_session, first.id, A.owner, "fetch", "GitHub said no")
        second, created = await start(db_session, owner, project_id)
        assert created
        assert second.id != first.id

    async def test_someone_elses_or_unpinned_project_is_not_found(self, db_session, owner, stranger, project_id):
        with pytest.raises(NotFound):
            await start(db_session, stranger, project_id)
        await unpin_project(db_session, owner, project_id)
        with pytest.raises(NotFound):
            await start(db_session, owner, project_id)

    async def test_someone_elses_run_is_not_found(self, db_session, owner, stranger, project_id):
        run, _ = await start(db_session, owner, project_id)
        with pytest.raises(NotFound):
            await sync.get_run(db_session, stranger, project_id, run.id)


class TestLifecycle:
    async def test_begin_progress_complete(self, db_session, owner, project_id):
        run, _ = await start(db_session, owner, project_id)
        run_id = run.id
        begun = await sync.begin_run(db_session, run_id, A)
        assert begun is not None
        assert begun[0].status == SyncStatus.RUNNING
        assert begun[1].id == project_id
        again = await sync.begin_run(db_session, run_id, A)  # running and A's: resumed as it is
        assert again is not None
        assert (again[0].id, again[0].status) == (run_id, SyncStatus.RUNNING)
        assert await sync.begin_run(db_session, run_id, B) is None  # not B's
        assert await sync.record_progress(db_session, run_id, A.owner, current_stage="fetch", progress=50)
        assert await sync.complete_run(db_session, run_id, A.owner, project_id, {"stars": 3})
        done = await sync.get_run(db_session, owner, project_id, run_id)
        await db_session.refresh(done)
        assert (done.status, done.progress, done.current_stage) == (SyncStatus.SUCCEEDED, 100, None)
        assert done.finished_at is not None
        # A finished run is never written again.
        assert not await sync.record_progress(db_session, run_id, A.owner, progress=10)
        assert not await sync.stop_run(db_session, run_id, A.owner, "shutting down")

    async def test_stop_fails_the_running_stage_and_skips_the_rest(self, db_session, owner, project_id):
        run, _ = await start(db_session, owner, project_id)
        run_id = run.id
        await sync.begin_run(db_session, run_id, A)
        stages = [{**run.stages[0], "status": StageStatus.RUNNING.value}, run.stages[1]]
        await sync.record_progress(db_session, run_id, A.owner, current_stage="fetch", stages=stages)
        assert await sync.stop_run(db_session, run_id, A.owner, "shutting down")
        stopped = await sync.get_run(db_session, owner, project_id, run_id)
        await db_session.refresh(stopped)
        assert stopped.status == SyncStatus.FAILED
        assert stopped.error == {"stage": "fetch", "message": "shutting down"}
        assert [s["status"] for s in stopped.stages] == [StageStatus.FAILED, StageStatus.SKIPPED]


class TestLeases:
    async def test_a_queued_run_is_leased_to_the_instance_that_queued_it(self, db_session, owner, project_id):
        run, _ = await start(db_session, owner, project_id)
        assert (run.lease_owner, run.lease_takeovers) == (A.owner, 0)
        assert run.lease_expires_at is not None
        assert run.lease_expires_at > utcnow() + timedelta(seconds=20)
        assert await sync.begin_run(db_session, run.id, B) is None  # not B's to run
        assert (await row(db_session, run.id)).status == SyncStatus.QUEUED

    async def test_a_live_lease_is_never_taken(self, db_session, owner, project_id):
        run, _ = await start(db_session, owner, project_id)
        await sync.begin_run(db_session, run.id, A)
        taken = await sync.take_over_expired(db_session, B, 2, LOST)
        assert (taken.resumed, taken.failed) == ([], [])
        kept = await row(db_session, run.id)
        assert (kept.status, kept.lease_owner, kept.error) == (SyncStatus.RUNNING, A.owner, None)
        assert await sync.record_progress(db_session, run.id, A.owner, progress=50)

    async def test_the_heartbeat_renews_only_its_own_active_runs(self, db_session, owner, project_id):
        run, _ = await start(db_session, owner, project_id)
        await sync.begin_run(db_session, run.id, A)
        await expire(db_session, run.id)
        assert await sync.renew_leases(db_session, B, [run.id]) == []  # not B's lease
        assert await sync.renew_leases(db_session, A, [run.id]) == [run.id]
        assert (await sync.take_over_expired(db_session, B, 2, LOST)).resumed == []  # renewed in time
        assert await sync.renew_leases(db_session, A, []) == []
        assert await sync.complete_run(db_session, run.id, A.owner, project_id, {})
        assert await sync.renew_leases(db_session, A, [run.id]) == []  # finished: nothing to hold

    async def test_an_expired_run_is_claimed_once_and_its_old_owner_is_fenced_off(self, db_session, owner, project_id):
        run, _ = await start(db_session, owner, project_id)
        await sync.begin_run(db_session, run.id, A)
        await sync.record_progress(db_session, run.id, A.owner, current_stage="fetch", results={"fetch": {"n": 1}})
        await expire(db_session, run.id)
        taken = await sync.take_over_expired(db_session, B, 2, LOST)
        assert (taken.resumed, taken.failed) == ([run.id], [])
        assert (await sync.take_over_expired(db_session, C, 2, LOST)).resumed == []  # B holds it now
        claimed = await row(db_session, run.id)
        assert (claimed.status, claimed.lease_owner, claimed.lease_takeovers) == (SyncStatus.RUNNING, B.owner, 1)
        # A (stalled past its lease, not dead after all) can no longer write the run or fail it.
        assert not await sync.record_progress(db_session, run.id, A.owner, progress=50)
        assert not await sync.complete_run(db_session, run.id, A.owner, project_id, {"stars": 1})
        assert not await sync.stop_run(db_session, run.id, A.owner, "shutting down")
        # B resumes it with what A saved.
        begun = await sync.begin_run(db_session, run.id, B)
        assert begun is not None
        assert (begun[0].current_stage, begun[0].results) == ("fetch", {"fetch": {"n": 1}})
        assert await sync.complete_run(db_session, run.id, B.owner, project_id, {"stars": 1})
        assert (await row(db_session, run.id)).status == SyncStatus.SUCCEEDED

    async def test_an_expired_queued_run_is_taken_over_and_begun_by_the_new_owner(self, db_session, owner, project_id):
        run, _ = await start(db_session, owner, project_id)
        await expire(db_session, run.id)
        assert (await sync.take_over_expired(db_session, B, 2, LOST)).resumed == [run.id]
        assert await sync.begin_run(db_session, run.id, A) is None
        begun = await sync.begin_run(db_session, run.id, B)
        assert begun is not None
        assert begun[0].status == SyncStatus.RUNNING

    async def test_a_run_from_before_leases_counts_as_expired(self, db_session, owner, project_id):
        run, _ = await start(db_session, owner, project_id)
        await set_lease(db_session, run.id, lease_owner=None, lease_expires_at=None)
        assert (await sync.take_over_expired(db_session, B, 2, LOST)).resumed == [run.id]

    async def test_a_run_lost_too_often_is_failed(self, db_session, owner, project_id):
        run, _ = await start(db_session, owner, project_id)
        await sync.begin_run(db_session, run.id, A)
        stages = [{**run.stages[0], "status": StageStatus.RUNNING.value}, run.stages[1]]
        await sync.record_progress(db_session, run.id, A.owner, current_stage="fetch", stages=stages)
        await set_lease(db_session, run.id, lease_takeovers=2)
        await expire(db_session, run.id)
        taken = await sync.take_over_expired(db_session, B, 2, LOST)
        assert (taken.resumed, taken.failed) == ([], [run.id])
        failed = await row(db_session, run.id)
        assert (failed.status, failed.error) == (SyncStatus.FAILED, {"stage": "fetch", "message": LOST})
        assert [s["status"] for s in failed.stages] == [StageStatus.FAILED, StageStatus.SKIPPED]
        assert failed.finished_at is not None
        # The project is free again.
        assert (await start(db_session, owner, project_id))[1]
