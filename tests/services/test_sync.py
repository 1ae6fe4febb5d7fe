"""The sync-run service, called directly (no HTTP, no runner), on SQLite and PostgreSQL, rolled back."""

from __future__ import annotations

import pytest

from backend.errors import NotFound
from backend.models.project import ProjectCreate
from backend.models.sync_run import StageStatus, SyncStatus
from backend.services import sync
from backend.services.projects import pin_project, unpin_project

STAGES = ["fetch", "analyse"]


@pytest.fixture
async def project_id(db_session, owner) -> int:
    project = await pin_project(db_session, owner, ProjectCreate(github_repo_name="octo/hello"))
    assert project.id is not None
    return project.id


async def start(session, owner: str, project_id: int):
    return await sync.start_sync(session, owner, project_id, STAGES)


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
        assert await sync.begin_run(db_session, first.id) is not None
        running, created = await start(db_session, owner, project_id)
        assert (running.id, running.status, created) == (first.id, SyncStatus.RUNNING, False)

    async def test_a_finished_run_makes_room_for_the_next(self, db_session, owner, project_id):
        first, _ = await start(db_session, owner, project_id)
        await sync.begin_run(db_session, first.id)
        assert await sync.fail_run(db_session, first.id, "fetch", "GitHub said no")
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
        begun = await sync.begin_run(db_session, run_id)
        assert begun is not None
        assert begun[0].status == SyncStatus.RUNNING
        assert begun[1].id == project_id
        assert await sync.begin_run(db_session, run_id) is None  # no longer queued
        assert await sync.record_progress(db_session, run_id, current_stage="fetch", progress=50)
        assert await sync.complete_run(db_session, run_id, project_id, {"stars": 3})
        done = await sync.get_run(db_session, owner, project_id, run_id)
        await db_session.refresh(done)
        assert (done.status, done.progress, done.current_stage) == (SyncStatus.SUCCEEDED, 100, None)
        assert done.finished_at is not None
        # A finished run is never written again.
        assert not await sync.record_progress(db_session, run_id, progress=10)
        assert not await sync.stop_run(db_session, run_id, "shutting down")

    async def test_stop_fails_the_running_stage_and_skips_the_rest(self, db_session, owner, project_id):
        run, _ = await start(db_session, owner, project_id)
        run_id = run.id
        await sync.begin_run(db_session, run_id)
        stages = [{**run.stages[0], "status": StageStatus.RUNNING.value}, run.stages[1]]
        await sync.record_progress(db_session, run_id, current_stage="fetch", stages=stages)
        assert await sync.stop_run(db_session, run_id, "shutting down")
        stopped = await sync.get_run(db_session, owner, project_id, run_id)
        await db_session.refresh(stopped)
        assert stopped.status == SyncStatus.FAILED
        assert stopped.error == {"stage": "fetch", "message": "shutting down"}
        assert [s["status"] for s in stopped.stages] == [StageStatus.FAILED, StageStatus.SKIPPED]

    async def test_recovery_fails_queued_and_running_runs(self, db_session, owner, project_id):
        run, _ = await start(db_session, owner, project_id)
        run_id = run.id
        assert await sync.recover_interrupted(db_session, "restarted") == [run_id]
        recovered = await sync.get_run(db_session, owner, project_id, run_id)
        await db_session.refresh(recovered)
        assert (recovered.status, recovered.error["message"]) == (SyncStatus.FAILED, "restarted")
        assert await sync.recover_interrupted(db_session, "restarted") == []
