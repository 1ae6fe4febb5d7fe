"""Sync runs through the API (contract §5), against a GitHub stand-in on 127.0.0.1, on SQLite and PostgreSQL."""

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from backend.models.common import utcnow
from backend.models.sync_run import SyncRun
from backend.sync.pipeline import MAX_TAKEOVERS
from tests.conftest import assert_error, make_user
from tests.sync.sync_kit import GitHubStandIn, get_project, get_run, pin, poll, start, sync_once
from tests.sync.sync_kit import github as github  # the fixture

pytestmark = pytest.mark.committing  # sync runs execute in background tasks beside the requests; a restarted app

STAGES = ["repository", "release", "commit", "summary"]
TOKEN = "ghp_" + "S3cretT0ken" * 3


@pytest.fixture
def extra_settings() -> dict[str, Any]:
    return {}


@pytest.fixture
def settings_overrides(github: GitHubStandIn, extra_settings: dict[str, Any]) -> dict[str, Any]:
    return {"GITHUB_API_URL": github.url, **extra_settings}


OPERATIONS = [
    ("POST", "/api/{uid}/projects/{pid}/sync"),
    ("GET", "/api/{uid}/projects/{pid}/sync"),
    ("GET", "/api/{uid}/projects/{pid}/sync/{rid}"),
]


@pytest.fixture
async def others_run(client, other_user):
    """Another user's project with a finished run."""
    project = await pin(client, other_user)
    run = await sync_once(client, other_user, project["id"])
    return project, run


class TestAccess:
    @pytest.mark.parametrize(("method", "path"), OPERATIONS)
    async def test_without_token_is_401(self, client, method, path):
        response = await client.request(method, path.format(uid="someone", pid=1, rid=1))
        assert_error(response, 401, "NOT_AUTHENTICATED")

    @pytest.mark.parametrize(("method", "path"), OPERATIONS)
    async def test_other_users_path_is_403(self, client, user, other_user, others_run, method, path):
        project, run = others_run
        url = path.format(uid=other_user.id, pid=project["id"], rid=run["run_id"])
        assert_error(await client.request(method, url, headers=user.headers), 403, "FORBIDDEN")
        assert (await get_run(client, other_user, project["id"], run["run_id"]))["status"] == "succeeded"

    @pytest.mark.parametrize(("method", "path"), OPERATIONS)
    async def test_other_users_project_and_run_are_404(self, client, user, others_run, method, path):
        project, run = others_run
        url = path.format(uid=user.id, pid=project["id"], rid=run["run_id"])
        assert_error(await client.request(method, url, headers=user.headers), 404, "NOT_FOUND")

    async def test_run_of_another_project_is_404(self, client, user, github):
        first, second = await pin(client, user, "octo/one"), await pin(client, user, "octo/two")
        run = await sync_once(client, user, first["id"])
        url = f"/api/{user.id}/projects/{second['id']}/sync/{run['run_id']}"
        assert_error(await client.get(url, headers=user.headers), 404, "NOT_FOUND")

    @pytest.mark.parametrize(("method", "path"), OPERATIONS)
    async def test_missing_is_404_and_bad_id_is_422(self, client, user, method, path):
        missing = path.format(uid=user.id, pid=424242, rid=1)
        assert_error(await client.request(method, missing, headers=user.headers), 404, "NOT_FOUND")
        bad = path.format(uid=user.id, pid="x1", rid="y")
        assert_error(await client.request(method, bad, headers=user.headers), 422, "VALIDATION_ERROR")

    @pytest.mark.parametrize("repin_path", ["/api/{uid}/projects", "/api/projects/pin"])
    async def test_unpinned_project_sync_routes_are_404_until_pinned_again(self, client, user, github, repin_path):
        """Contract §9: gone means gone for the sync routes too; a re-pin brings the same id and its history back."""
        project = await pin(client, user)
        run = await sync_once(client, user, project["id"])
        assert (await client.delete(f"/api/{user.id}/projects/{project['id']}", headers=user.headers)).is_success
        for method, path in OPERATIONS:
            url = path.format(uid=user.id, pid=project["id"], rid=run["run_id"])
            assert_error(await client.request(method, url, headers=user.headers), 404, "NOT_FOUND")
        again = await client.post(
            repin_path.format(uid=user.id), json={"github_repo_name": project["github_repo_name"]}, headers=user.headers
        )
        assert again.status_code == 201, again.text
        assert again.json()["data"]["id"] == project["id"]
        assert again.json()["data"]["repo_metadata"]["stars"] == 80  # the last sync's data came back too
        history = (await client.get(f"/api/{user.id}/projects/{project['id']}/sync", headers=user.headers)).json()
        assert [r["run_id"] for r in history["data"]] == [run["run_id"]]
        assert (await get_run(client, user, project["id"], run["run_id"]))["status"] == "succeeded"
        export = await client.get(f"/api/{user.id}/projects/{project['id']}/export", headers=user.headers)
        assert [r["run_id"] for r in export.json()["sync_runs"]] == [run["run_id"]]

    async def test_a_run_in_flight_when_unpinned_finishes_and_comes_back_with_the_project(
        self, app, client, user, github
    ):
        project = await pin(client, user, "octo/gated")
        started = await start(client, user, project["id"])
        await poll(client, user, project["id"], started["run_id"], lambda r: r["current_stage"] == "commit")
        assert (await client.delete(f"/api/{user.id}/projects/{project['id']}", headers=user.headers)).is_success
        url = f"/api/{user.id}/projects/{project['id']}/sync/{started['run_id']}"
        assert_error(await client.get(url, headers=user.headers), 404, "NOT_FOUND")
        github.open_gate()
        # Not cancelled: the run finishes while the project is unpinned (seen in the database, not through the API).
        status = None
        deadline = asyncio.get_running_loop().time() + 15
        while status != "succeeded" and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            async with app.state.engine.connect() as conn:
                query = select(SyncRun.status).where(SyncRun.id == started["run_id"])
                status = (await conn.execute(query)).scalar_one()
        assert status == "succeeded"
        assert_error(await client.get(url, headers=user.headers), 404, "NOT_FOUND")
        again = await pin(client, user, "octo/gated")
        assert again["id"] == project["id"]
        assert again["repo_metadata"]["latest_commit"]["sha"].startswith("6dcb09b")
        assert (await get_run(client, user, project["id"], started["run_id"]))["status"] == "succeeded"


class TestStartSync:
    async def test_progress_moves_through_running_to_succeeded(self, client, user, github):
        project = await pin(client, user, "octo/gated")
        started = await start(client, user, project["id"])
        assert started["status"] == "queued"
        assert started["progress"] == 0
        assert [stage["status"] for stage in started["stages"]] == ["pending"] * 4
        # The stand-in holds the commit request until the gate opens: the run is caught mid-way.
        running, _ = await poll(
            client, user, project["id"], started["run_id"], lambda r: r["current_stage"] == "commit"
        )
        assert running["status"] == "running"
        assert 0 < running["progress"] < 100
        assert [stage["status"] for stage in running["stages"]] == ["succeeded", "succeeded", "running", "pending"]
        assert running["started_at"] is not None
        assert running["finished_at"] is None
        github.open_gate()

        done, seen = await poll(client, user, project["id"], started["run_id"])
        assert done["status"] == "succeeded"
        assert done["progress"] == 100
        assert done["error"] is None
        assert done["current_stage"] is None
        assert [stage["name"] for stage in done["stages"]] == STAGES
        assert all(stage["status"] == "succeeded" and stage["finished_at"] for stage in done["stages"])
        assert done["finished_at"] >= done["started_at"]
        progress = [run["progress"] for run in seen]
        assert progress == sorted(progress)

        synced = await get_project(client, user, project["id"])
        metadata = synced["repo_metadata"]
        assert metadata["stars"] == 80
        assert metadata["forks"] == 9
        assert metadata["open_issues"] == 3
        assert metadata["language"] == "Python"
        assert metadata["default_branch"] == "main"
        assert metadata["pushed_at"] == "2026-11-01T10:00:00Z"
        assert metadata["topics"] == ["octocat", "api"]
        assert metadata["archived"] is False
        assert metadata["license"] == "MIT"
        assert metadata["latest_release"]["tag"] == "v1.0.0"
        assert metadata["latest_commit"]["sha"].startswith("6dcb09b")
        assert metadata["latest_commit"]["message"] == "Fix all the bugs"
        assert metadata["last_activity_at"] == "2026-11-03T12:00:00Z"
        assert synced["last_synced_at"] is not None
        assert synced["last_updated"] >= synced["last_synced_at"]
        assert github.requests[2].query == {"sha": ["main"], "per_page": ["1"]}

    async def test_repository_without_release_succeeds(self, client, user, github):
        project = await pin(client, user, "octo/no-release")
        run = await sync_once(client, user, project["id"])
        assert run["status"] == "succeeded"
        metadata = (await get_project(client, user, project["id"]))["repo_metadata"]
        assert metadata["latest_release"] is None
        assert metadata["latest_version"] is None
        assert metadata["stars"] == 80

    async def test_empty_repository_has_no_commit(self, client, user, github):
        project = await pin(client, user, "octo/empty")
        assert (await sync_once(client, user, project["id"]))["status"] == "succeeded"
        assert (await get_project(client, user, project["id"]))["repo_metadata"]["latest_commit"] is None

    async def test_one_active_run_per_project(self, client, user, github):
        project = await pin(client, user, "octo/gated")
        first = await start(client, user, project["id"])
        again = await start(client, user, project["id"], status=200)
        assert again["run_id"] == first["run_id"]
        assert again["status"] in ("queued", "running")
        other = await pin(client, user, "octo/elsewhere")  # another project is not held up
        assert (await sync_once(client, user, other["id"]))["status"] == "succeeded"
        github.open_gate()
        assert (await poll(client, user, project["id"], first["run_id"]))[0]["status"] == "succeeded"
        later = await start(client, user, project["id"])
        assert later["run_id"] != first["run_id"]
        await poll(client, user, project["id"], later["run_id"])

    async def test_concurrent_starts_queue_a_single_run(self, client, user, github):
        import asyncio

        project = await pin(client, user, "octo/gated")
        url = f"/api/{user.id}/projects/{project['id']}/sync"
        answers = await asyncio.gather(*(client.post(url, headers=user.headers) for _ in range(6)))
        assert sorted(a.status_code for a in answers) == [200] * 5 + [202]
        assert len({a.json()["data"]["run_id"] for a in answers}) == 1
        github.open_gate()
        await poll(client, user, project["id"], answers[0].json()["data"]["run_id"])


FAILURES = [
    ("fail-repository", "repository", "GitHub answered 500 for repository octo/fail-repository; try again later"),
    ("fail-release", "release", "GitHub answered 500 for the latest release; try again later"),
    ("fail-commit", "commit", "GitHub answered 500 for the commits of branch main; try again later"),
    ("missing", "repository", "repository octo/missing not found on GitHub"),
    ("rate-limited", "repository", "GitHub rate limit reached; retry after 1"),
    ("throttled", "repository", "GitHub rate limit reached; retry after 42 s"),
    ("not-json", "repository", "GitHub answered with invalid JSON for repository octo/not-json"),
]


class TestFailures:
    @pytest.mark.parametrize(("repo", "stage", "message"), FAILURES)
    async def test_failure_names_its_stage(self, client, user, github, repo, stage, message):
        project = await pin(client, user, f"octo/{repo}")
        run = await sync_once(client, user, project["id"])
        assert run["status"] == "failed"
        assert run["error"]["stage"] == stage
        assert run["error"]["message"].startswith(message)
        assert run["current_stage"] == stage
        assert run["progress"] < 100
        assert run["finished_at"] is not None
        statuses = {s["name"]: s["status"] for s in run["stages"]}
        failed_at = STAGES.index(stage)
        assert [statuses[name] for name in STAGES] == (
            ["succeeded"] * failed_at + ["failed"] + ["skipped"] * (len(STAGES) - failed_at - 1)
        )
        assert run["stages"][failed_at]["error"] == run["error"]["message"]
        project_after = await get_project(client, user, project["id"])
        assert project_after["repo_metadata"] is None
        assert project_after["last_synced_at"] is None

    async def test_rate_limit_reset_gives_the_wait(self, client, user, github):
        project = await pin(client, user, "octo/rate-limited")
        message = (await sync_once(client, user, project["id"]))["error"]["message"]
        wait = int(message.removeprefix("GitHub rate limit reached; retry after ").removesuffix(" s"))
        assert 100 <= wait <= 120

    @pytest.mark.parametrize("extra_settings", [{"SYNC_STAGES": "backend.sync.github:summary"}])
    async def test_summary_failure_is_named(self, client, user, github):
        project = await pin(client, user)
        run = await sync_once(client, user, project["id"])
        assert run["error"] == {
            "stage": "summary",
            "message": "nothing to summarise: the repository stage must run before this one",
        }
        assert github.requests == []

    @pytest.mark.parametrize("stage", ["repository", "release", "commit"])
    async def test_failure_keeps_previous_metadata(self, client, user, github, stage):
        project = await pin(client, user, "octo/steady")
        assert (await sync_once(client, user, project["id"]))["status"] == "succeeded"
        before = await get_project(client, user, project["id"])
        github.modes["octo/steady"] = f"fail-{stage}"
        run = await sync_once(client, user, project["id"])
        assert run["status"] == "failed"
        assert run["error"]["stage"] == stage
        after = await get_project(client, user, project["id"])
        assert after["repo_metadata"] == before["repo_metadata"]
        assert after["last_synced_at"] == before["last_synced_at"]
        assert after["last_updated"] == before["last_updated"]


class TestListAndExport:
    async def test_history_newest_first_paginated_and_exported(self, client, user, github):
        project = await pin(client, user, "octo/history")
        first = await sync_once(client, user, project["id"])
        github.modes["octo/history"] = "fail-release"
        second = await sync_once(client, user, project["id"])
        github.modes.clear()
        third = await sync_once(client, user, project["id"])
        url = f"/api/{user.id}/projects/{project['id']}/sync"

        body = (await client.get(url, headers=user.headers)).json()
        assert [run["run_id"] for run in body["data"]] == [third["run_id"], second["run_id"], first["run_id"]]
        assert body["meta"] == {"total": 3, "limit": 50, "offset": 0}
        assert body["data"][1]["error"]["stage"] == "release"

        paged = (await client.get(url, params={"limit": 1, "offset": 1}, headers=user.headers)).json()
        assert [run["run_id"] for run in paged["data"]] == [second["run_id"]]
        assert paged["meta"] == {"total": 3, "limit": 1, "offset": 1}
        assert_error(await client.get(url, params={"limit": 0}, headers=user.headers), 422, "VALIDATION_ERROR")

        export = (await client.get(f"/api/{user.id}/projects/{project['id']}/export", headers=user.headers)).json()
        assert [run["run_id"] for run in export["sync_runs"]] == [third["run_id"], second["run_id"], first["run_id"]]
        assert export["sync_runs"][1]["error"]["stage"] == "release"
        assert export["sync_runs"][0]["stages"][0]["name"] == "repository"

    async def test_account_export_lists_every_projects_runs_in_one_query(self, app, client, user, other_user, github):
        first, second = await pin(client, user, "octo/one"), await pin(client, user, "octo/two")
        runs = [await sync_once(client, user, project["id"]) for project in (second, first, second)]
        others = await pin(client, other_user, "octo/three")
        await sync_once(client, other_user, others["id"])
        unpin = await client.delete(f"/api/{user.id}/projects/{second['id']}", headers=user.headers)
        assert unpin.status_code == 200, unpin.text  # an unpinned project's history is exported too

        statements: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        engine = app.state.engine.sync_engine
        event.listen(engine, "before_cursor_execute", record)
        try:
            export = (await client.get(f"/api/{user.id}/export", headers=user.headers)).json()
        finally:
            event.remove(engine, "before_cursor_execute", record)
        assert len([sql for sql in statements if "FROM sync_runs" in sql]) == 1
        assert [(run["project_id"], run["run_id"]) for run in export["sync_runs"]] == [
            (first["id"], runs[1]["run_id"]),
            (second["id"], runs[2]["run_id"]),
            (second["id"], runs[0]["run_id"]),
        ]
        assert list(export["sync_runs"][0])[:2] == ["project_id", "run_id"]

    async def test_list_of_project_without_runs_is_empty(self, client, user):
        project = await pin(client, user)
        body = (await client.get(f"/api/{user.id}/projects/{project['id']}/sync", headers=user.headers)).json()
        assert body["data"] == []
        assert body["meta"]["total"] == 0


@pytest.mark.parametrize(
    "extra_settings",
    [{"RATE_LIMIT_ENABLED": True, "RATE_LIMIT_SYNC": "2/hour", "RATE_LIMIT_DEFAULT": "1000/minute"}],
)
async def test_sync_is_rate_limited_per_user(client, user, github):
    project = await pin(client, user)
    runs = [await sync_once(client, user, project["id"]) for _ in range(2)]
    response = await client.post(f"/api/{user.id}/projects/{project['id']}/sync", headers=user.headers)
    assert_error(response, 429, "RATE_LIMITED")
    assert int(response.headers["Retry-After"]) > 0
    # Counted per user: someone else still may.
    someone = await make_user(client)
    theirs = await pin(client, someone)
    assert (await sync_once(client, someone, theirs["id"]))["status"] == "succeeded"
    listing = (await client.get(f"/api/{user.id}/projects/{project['id']}/sync", headers=user.headers)).json()
    assert listing["meta"]["total"] == len(runs)


class TestGitHubToken:
    @pytest.mark.parametrize("extra_settings", [{"GITHUB_TOKEN": TOKEN}])
    async def test_token_is_sent_as_bearer_and_never_shown(self, client, user, github):
        from tests.support import captured_logs

        project = await pin(client, user, "octo/fail-commit")
        with captured_logs() as lines:
            run = await sync_once(client, user, project["id"])
        assert run["status"] == "failed"
        assert {request.headers.get("authorization") for request in github.requests} == {f"Bearer {TOKEN}"}
        assert TOKEN not in str(run)
        assert lines
        assert not [line for line in lines if TOKEN in line]

    async def test_no_token_no_authorization_header(self, client, user, github):
        project = await pin(client, user)
        await sync_once(client, user, project["id"])
        assert len(github.requests) == 3
        for request in github.requests:
            assert "authorization" not in request.headers
            assert request.headers["user-agent"].startswith("taskdeck-api/")
            assert request.headers["accept"] == "application/vnd.github+json"
            assert request.headers["x-github-api-version"] == "2022-11-28"


def interrupted_row(project_id: int, user_id: str, **fields: Any) -> SyncRun:
    """A run a dead instance left in `release`, after its `repository` stage (stars: 7; the stand-in has 80)."""
    stages = [
        {"name": name, "status": "pending", "started_at": None, "finished_at": None, "error": None} for name in STAGES
    ]
    stages[0] |= {"status": "succeeded", "started_at": "2026-11-21T10:00:00Z", "finished_at": "2026-11-21T10:00:01Z"}
    stages[1] |= {"status": "running", "started_at": "2026-11-21T10:00:01Z"}
    repository = {"full_name": "octo/hello", "default_branch": "main", "pushed_at": "2026-11-01T10:00:00Z", "stars": 7}
    values = {
        "project_id": project_id,
        "user_id": user_id,
        "status": "running",
        "current_stage": "release",
        "progress": 25,
        "stages": stages,
        "results": {"repository": repository},
        "started_at": utcnow(),
        "lease_owner": "a-dead-instance",
        "lease_expires_at": utcnow() - timedelta(seconds=5),
    }
    return SyncRun(**(values | fields))


async def restart(app, database_url, data_dir, settings_overrides, row: SyncRun):
    """Add `row`, then start another app (its start-up recovery runs) and keep it up."""
    from backend.main import create_app
    from tests.conftest import make_settings

    async with app.state.sessionmaker() as session:
        session.add(row)
        await session.commit()
    restarted = create_app(make_settings(database_url, data_dir, **settings_overrides))
    return restarted, row.id


async def test_an_expired_run_is_resumed_at_start_up(
    app, client, user, github, database_url, data_dir, settings_overrides
):
    """The run of a dead instance is taken over when another starts, and goes on after its last finished stage."""
    project = await pin(client, user, "octo/hello")
    row = interrupted_row(project["id"], user.id)
    restarted, run_id = await restart(app, database_url, data_dir, settings_overrides, row)
    async with restarted.router.lifespan_context(restarted):
        run, _ = await poll(client, user, project["id"], run_id)
    assert run["status"] == "succeeded", run
    assert [stage["status"] for stage in run["stages"]] == ["succeeded"] * 4
    assert run["stages"][0]["finished_at"] == "2026-11-21T10:00:01Z"  # the repository stage was not run again
    assert f"/repos/{project['github_repo_name']}" not in github.paths()
    metadata = (await get_project(client, user, project["id"]))["repo_metadata"]
    assert (metadata["stars"], metadata["latest_version"]) == (7, "v1.0.0")
    async with app.state.sessionmaker() as session:
        taken = await session.get(SyncRun, run_id)
    assert (taken.lease_owner, taken.lease_takeovers) == (restarted.state.sync_runner.instance_id, 1)


async def test_a_run_lost_too_often_fails_at_start_up(
    app, client, user, github, database_url, data_dir, settings_overrides
):
    project = await pin(client, user)
    row = interrupted_row(project["id"], user.id, lease_takeovers=MAX_TAKEOVERS)
    restarted, run_id = await restart(app, database_url, data_dir, settings_overrides, row)
    async with restarted.router.lifespan_context(restarted):
        pass
    run = await get_run(client, user, project["id"], run_id)
    assert run["status"] == "failed"
    assert run["error"] == {"stage": "release", "message": "interrupted: the server running it stopped"}
    assert run["finished_at"] is not None
    assert [stage["status"] for stage in run["stages"]] == ["succeeded", "failed", "skipped", "skipped"]
    assert github.paths() == []
    # The project is free again.
    fresh = await start(client, user, project["id"])
    assert fresh["run_id"] != run_id
    await poll(client, user, project["id"], fresh["run_id"])


async def test_a_live_lease_is_left_alone_at_start_up(
    app, client, user, github, database_url, data_dir, settings_overrides
):
    from backend.models.common import utcnow

    project = await pin(client, user)
    row = interrupted_row(
        project["id"], user.id, lease_owner="a-live-instance", lease_expires_at=utcnow() + timedelta(minutes=5)
    )
    restarted, run_id = await restart(app, database_url, data_dir, settings_overrides, row)
    async with restarted.router.lifespan_context(restarted):
        pass
    run = await get_run(client, user, project["id"], run_id)
    assert (run["status"], run["current_stage"], run["error"]) == ("running", "release", None)
    assert github.paths() == []


class TestLiveSignals:
    """A run is visible beyond its own routes: live events, the outcome metric, a new project ETag."""

    async def test_success_publishes_counts_and_moves_the_etag(self, app, client, user, github):
        project = await pin(client, user)
        before = await client.get(f"/api/{user.id}/projects/{project['id']}", headers=user.headers)
        run = await sync_once(client, user, project["id"])
        assert run["status"] == "succeeded"

        events = await app.state.events.log.after(user.id, "0-0")
        sync_events = [(e.type, json.loads(e.data)) for e in events if e.type.startswith("sync.")]
        assert [kind for kind, _ in sync_events] == ["sync.progress"] * len(STAGES) + ["sync.finished"]
        assert [data["current_stage"] for _, data in sync_events[:-1]] == STAGES
        assert sync_events[-1][1] == {
            "run_id": run["run_id"],
            "project_id": project["id"],
            "status": "succeeded",
            "error": None,
        }

        metrics = (await client.get("/metrics")).text
        assert 'taskdeck_sync_runs_total{outcome="succeeded"} 1.0' in metrics

        after = await client.get(f"/api/{user.id}/projects/{project['id']}", headers=user.headers)
        assert after.headers["etag"] != before.headers["etag"]

    async def test_failure_is_published_and_counted(self, app, client, user, github):
        project = await pin(client, user, "octo/missing")
        run = await sync_once(client, user, project["id"])
        assert run["status"] == "failed"
        events = await app.state.events.log.after(user.id, "0-0")
        finished = [json.loads(e.data) for e in events if e.type == "sync.finished"]
        assert finished == [
            {"run_id": run["run_id"], "project_id": project["id"], "status": "failed", "error": run["error"]}
        ]
        assert 'taskdeck_sync_runs_total{outcome="failed"} 1.0' in (await client.get("/metrics")).text
