"""The sync pipeline: stage loading (SYNC_STAGES), the GitHub client and stages, the runner's failure handling."""

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from backend.config import VERSION, ConfigError, Settings, load_settings
from backend.main import create_app
from backend.sync import github
from backend.sync.pipeline import SHUT_DOWN, UNEXPECTED, SyncRunner, load_stages, merged_metadata, progress_after
from backend.sync.stages import ProjectSnapshot, StageError, SyncContext
from tests.support import captured_logs, events
from tests.sync.sync_kit import GitHubStandIn, get_project, pin, poll, start, sync_once

pytestmark = pytest.mark.committing  # sync runs execute in background tasks, beside the test's requests

CUSTOM = "tests.sync.custom_stages"
DEFAULTS = "backend.sync.github:repository,backend.sync.github:release,backend.sync.github:commit"


@pytest.fixture
def github_api() -> Iterator[GitHubStandIn]:
    standin = GitHubStandIn()
    yield standin
    standin.close()


@pytest.fixture
def extra_settings() -> dict[str, Any]:
    return {}


@pytest.fixture
def settings_overrides(github_api: GitHubStandIn, extra_settings: dict[str, Any]) -> dict[str, Any]:
    return {"GITHUB_API_URL": github_api.url, **extra_settings}


class TestLoadStages:
    def test_defaults(self):
        stages = load_stages(load_settings(ENVIRONMENT="test").SYNC_STAGES)
        assert [stage.name for stage in stages] == ["repository", "release", "commit", "summary"]
        assert stages[0].run is github.repository

    def test_both_path_forms_and_a_custom_name(self):
        stages = load_stages([f"{CUSTOM}:licence_audit", f"{CUSTOM}.renamed"])
        assert [stage.name for stage in stages] == ["licence_audit", "audit"]

    @pytest.mark.parametrize(
        ("paths", "reason"),
        [
            ([], "lists no stage"),
            (["nowhere"], "must look like 'package.module:function'"),
            (["tests.sync.no_such_module:stage"], "cannot be imported"),
            ([f"{CUSTOM}:missing"], "has no 'missing'"),
            ([f"{CUSTOM}:not_async"], "is not an async function"),
            ([f"{CUSTOM}:explode", f"{CUSTOM}.explode"], "names the stage 'explode' twice"),
        ],
    )
    def test_bad_entries_are_config_errors(self, paths, reason):
        with pytest.raises(ConfigError, match=reason):
            load_stages(paths)

    def test_the_app_refuses_a_bad_path_at_start_up(self, tmp_path):
        settings = load_settings(
            ENVIRONMENT="test",
            DATA_DIR=tmp_path,
            SYNC_STAGES="backend.sync.github:repository, nope.stages:fetch",
        )
        assert settings.SYNC_STAGES == ["backend.sync.github:repository", "nope.stages:fetch"]  # only split
        with pytest.raises(ConfigError, match=r"^SYNC_STAGES entry 'nope\.stages:fetch': .* cannot be imported$"):
            create_app(settings)

    def test_settings_split_commas(self):
        settings = load_settings(ENVIRONMENT="test", SYNC_STAGES=f" {DEFAULTS} ,{CUSTOM}:licence_audit ")
        assert settings.SYNC_STAGES[-1] == f"{CUSTOM}:licence_audit"
        assert len(settings.SYNC_STAGES) == 4

    def test_the_app_refuses_a_stage_that_is_not_async(self, monkeypatch, tmp_path):
        monkeypatch.setenv("SYNC_STAGES", f"{CUSTOM}:not_async")
        settings = load_settings(ENVIRONMENT="test", DATA_DIR=tmp_path)
        with pytest.raises(ConfigError, match="is not an async function"):
            create_app(settings)


def test_progress_and_merge_rules():
    assert [progress_after(done, 4) for done in range(5)] == [0, 25, 50, 75, 99]
    assert progress_after(1, 3) == 33
    assert merged_metadata({"a": {"x": 1, "y": 1}, "b": {"y": 2}}) == {"x": 1, "y": 2}


def client_for(settings: Settings) -> httpx.AsyncClient:
    """The client create_app hands the runner."""
    return github.make_client(
        api_url=settings.GITHUB_API_URL,
        token=settings.GITHUB_TOKEN,
        timeout=settings.GITHUB_TIMEOUT_SECONDS,
        app_version=VERSION,
    )


@asynccontextmanager
async def stage_context(url: str, name: str = "octo/hello", **settings: Any) -> AsyncIterator[SyncContext]:
    values = load_settings(ENVIRONMENT="test", GITHUB_API_URL=url, **settings)
    async with client_for(values) as http:
        yield SyncContext(ProjectSnapshot(1, "someone", name, None), http, values)


class TestGitHubStages:
    async def test_repository_release_and_commit(self, github_api):
        async with stage_context(github_api.url) as ctx:
            ctx.results["repository"] = await github.repository(ctx)
            ctx.results["release"] = await github.release(ctx)
            ctx.results["commit"] = await github.commit(ctx)
            summary = await github.summary(ctx)
        assert ctx.results["repository"]["full_name"] == "octo/hello"
        assert ctx.results["repository"]["html_url"] == "https://github.com/octo/hello"
        assert ctx.results["release"]["latest_release"]["published_at"] == "2026-10-20T09:30:00Z"
        assert ctx.results["commit"]["latest_commit"]["author"] == "Monalisa Octocat"
        assert summary == {"latest_version": "v1.0.0", "last_activity_at": "2026-11-03T12:00:00Z"}
        assert github_api.paths() == [
            "/repos/octo/hello",
            "/repos/octo/hello/releases/latest",
            "/repos/octo/hello/commits",
        ]

    @pytest.mark.parametrize(
        ("repo", "message"),
        [
            ("unauthorized", "GitHub rejected the token (401); check GITHUB_TOKEN"),
            ("forbidden", "GitHub refused access to repository octo/forbidden (403)"),
            ("throttled", "GitHub rate limit reached; retry after 42 s"),
        ],
    )
    async def test_refusals_have_clear_messages(self, github_api, repo, message):
        async with stage_context(github_api.url, f"octo/{repo}") as ctx:
            with pytest.raises(StageError) as caught:
                await github.repository(ctx)
        assert str(caught.value) == message
        assert caught.value.__cause__ is None

    async def test_timeout(self, github_api):
        async with stage_context(github_api.url, "octo/hang", GITHUB_TIMEOUT_SECONDS=0.2) as ctx:
            with pytest.raises(StageError, match=r"^GitHub did not answer within 0\.2 s$"):
                await github.repository(ctx)
        github_api.open_gate()

    async def test_unreachable(self):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        async with stage_context(f"http://127.0.0.1:{port}") as ctx:
            with pytest.raises(StageError, match=r"^GitHub could not be reached$"):
                await github.repository(ctx)

    async def test_commit_needs_the_repository_stage(self, github_api):
        async with stage_context(github_api.url) as ctx:
            with pytest.raises(StageError, match="repository stage must run before"):
                await github.commit(ctx)
        assert github_api.requests == []


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "7"}, 7),
        ({"x-ratelimit-remaining": "0"}, github.DEFAULT_RATE_LIMIT_WAIT),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1"}, 1),
        ({"x-ratelimit-remaining": "12"}, None),
        ({}, None),
    ],
)
def test_rate_limit_wait(headers, wait):
    assert github._rate_limit_wait(httpx.Response(403, headers=headers)) == wait


class TestCustomStages:
    @pytest.mark.parametrize(
        "extra_settings",
        [{"SYNC_STAGES": f"{DEFAULTS},{CUSTOM}:licence_audit,{CUSTOM}:renamed,backend.sync.github:summary"}],
    )
    async def test_plugged_stages_run_in_order_and_feed_the_project(self, client, user, github_api):
        project = await pin(client, user)
        run = await sync_once(client, user, project["id"])
        assert run["status"] == "succeeded"
        assert [stage["name"] for stage in run["stages"]] == [
            "repository",
            "release",
            "commit",
            "licence_audit",
            "audit",
            "summary",
        ]
        metadata = (await get_project(client, user, project["id"]))["repo_metadata"]
        assert metadata["licence_ok"] is True
        assert metadata["seen"] == ["repository", "release", "commit"]
        assert metadata["audited_by"] == "custom"
        assert metadata["latest_version"] == "v1.0.0"
        assert github_api.paths().count("/repos/octo/hello") == 2

    @pytest.mark.parametrize("extra_settings", [{"SYNC_STAGES": f"{DEFAULTS},{CUSTOM}:explode"}])
    async def test_unexpected_exception_is_a_generic_message(self, client, user, github_api):
        project = await pin(client, user)
        with captured_logs() as lines:
            run = await sync_once(client, user, project["id"])
        assert run["error"] == {"stage": "explode", "message": UNEXPECTED}
        assert run["stages"][-1]["error"] == UNEXPECTED
        logged = events(lines, "sync_stage_error")
        assert len(logged) == 1
        assert logged[0]["error_type"] == "builtins.RuntimeError"
        assert logged[0]["stage"] == "explode"
        assert not [line for line in lines if "hunter2" in line]
        assert (await get_project(client, user, project["id"]))["repo_metadata"] is None

    @pytest.mark.parametrize("extra_settings", [{"SYNC_STAGES": f"{CUSTOM}:not_an_object"}])
    async def test_result_must_be_a_json_object(self, client, user, github_api):
        project = await pin(client, user)
        run = await sync_once(client, user, project["id"])
        assert run["error"] == {
            "stage": "not_an_object",
            "message": "the stage returned something other than a JSON object",
        }

    @pytest.mark.parametrize(
        "extra_settings", [{"SYNC_STAGES": f"{CUSTOM}:stall,{CUSTOM}:renamed", "SYNC_STAGE_TIMEOUT_SECONDS": 0.3}]
    )
    async def test_a_stuck_stage_is_stopped(self, client, user, github_api):
        project = await pin(client, user)
        run = await sync_once(client, user, project["id"])
        assert run["error"] == {"stage": "stall", "message": "the stage did not finish within 0.3 s"}
        assert [stage["status"] for stage in run["stages"]] == ["failed", "skipped"]


async def test_shutdown_fails_runs_in_flight(app, client, user, github_api):
    project = await pin(client, user, "octo/gated")
    started = await start(client, user, project["id"])
    await poll(client, user, project["id"], started["run_id"], lambda run: run["current_stage"] == "commit")
    await app.state.sync_runner.close()  # what the lifespan does at shutdown
    github_api.open_gate()
    run, _ = await poll(client, user, project["id"], started["run_id"])
    assert run["error"] == {"stage": "commit", "message": SHUT_DOWN}
    assert [stage["status"] for stage in run["stages"]] == ["succeeded", "succeeded", "failed", "skipped"]
    assert (await get_project(client, user, project["id"]))["repo_metadata"] is None


async def test_recovery_survives_an_unusable_database(tmp_path):
    from backend.db import create_engine, session_factory

    settings = load_settings(ENVIRONMENT="test", DATABASE_URL=f"sqlite:///{tmp_path}/empty.db")
    engine = create_engine(settings.database_url)
    runner = SyncRunner(session_factory(engine), settings, lambda: client_for(settings))
    try:
        with captured_logs() as lines:
            await runner.recover()  # no tables here: logged, not raised
    finally:
        await engine.dispose()
    assert events(lines, "sync_recovery_failed")[0]["error_type"].endswith("OperationalError")
