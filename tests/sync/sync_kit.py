"""A stand-in for the GitHub REST API (a real HTTP server on 127.0.0.1) and helpers to drive sync runs.

The repository name picks the stand-in's behaviour (`octo/<mode>`), unless `modes` says otherwise:
  ok (any other name)  realistic answers on every endpoint
  missing              404 on the repository
  no-release           404 on releases/latest (a repository without releases)
  empty                409 on commits (an empty repository)
  fail-repository, fail-release, fail-commit   500 on that endpoint
  rate-limited         403 with x-ratelimit-remaining: 0 and a reset two minutes ahead
  throttled            429 with retry-after: 42
  not-json             200 with an HTML body on the repository
  unauthorized, forbidden   401 / 403 (no rate-limit headers) on the repository
  gated                commits wait until the test calls `open_gate()` (to watch a run while `running`)
  hang                 the repository waits until the gate opens (for client timeouts)
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import UserCtx
from tests.factories import pin_project

GATE_TIMEOUT = 20.0  # a forgotten gate never hangs the suite


@dataclass
class Recorded:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


def repository_json(full_name: str) -> dict[str, Any]:
    owner, name = full_name.split("/")
    return {
        "id": 1296269,
        "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
        "name": name,
        "full_name": full_name,
        "private": False,
        "owner": {"login": owner, "id": 1, "type": "User", "site_admin": False},
        "html_url": f"https://github.com/{full_name}",
        "description": "This your first repo!",
        "fork": False,
        "url": f"https://api.github.com/repos/{full_name}",
        "homepage": "https://github.com",
        "language": "Python",
        "forks_count": 9,
        "stargazers_count": 80,
        "watchers_count": 80,
        "subscribers_count": 42,
        "size": 108,
        "default_branch": "main",
        "open_issues_count": 3,
        "is_template": False,
        "topics": ["octocat", "api"],
        "has_issues": True,
        "archived": False,
        "disabled": False,
        "visibility": "public",
        "pushed_at": "2026-11-01T10:00:00Z",
        "created_at": "2011-01-26T19:01:12Z",
        "updated_at": "2026-11-02T10:00:00Z",
        "license": {
            "key": "mit",
            "name": "MIT License",
            "spdx_id": "MIT",
            "url": "https://api.github.com/licenses/mit",
        },
    }


def release_json(full_name: str) -> dict[str, Any]:
    return {
        "id": 1,
        "url": f"https://api.github.com/repos/{full_name}/releases/1",
        "html_url": f"https://github.com/{full_name}/releases/v1.0.0",
        "tag_name": "v1.0.0",
        "target_commitish": "main",
        "name": "v1.0.0",
        "draft": False,
        "prerelease": False,
        "created_at": "2026-10-20T09:00:00Z",
        "published_at": "2026-10-20T09:30:00Z",
        "author": {"login": "octocat", "id": 1},
        "assets": [],
        "body": "Description of the release",
    }


def commits_json(full_name: str) -> list[dict[str, Any]]:
    sha = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
    person = {"name": "Monalisa Octocat", "email": "support@github.com", "date": "2026-11-03T12:00:00Z"}
    return [
        {
            "sha": sha,
            "node_id": "MDY6Q29tbWl0NmRjYjA5YjViNTc4NzVmMzM0ZjYxYWViZWQ2OTVlMmU0MTkzZGI1ZQ==",
            "url": f"https://api.github.com/repos/{full_name}/commits/{sha}",
            "html_url": f"https://github.com/{full_name}/commit/{sha}",
            "commit": {
                "author": person,
                "committer": person,
                "message": "Fix all the bugs\n\nA longer body that the summary leaves out.",
                "tree": {"sha": sha, "url": "https://api.github.com/"},
                "comment_count": 0,
            },
            "author": {"login": "octocat", "id": 1},
            "committer": {"login": "octocat", "id": 1},
            "parents": [],
        }
    ]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout, cancelled run) closed its socket: nothing to report


@dataclass
class GitHubStandIn:
    """Serves `/repos/{o}/{r}`, `/repos/{o}/{r}/releases/latest` and `/repos/{o}/{r}/commits`; records requests."""

    modes: dict[str, str] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    gate_timeout: float = GATE_TIMEOUT
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                with standin._lock:
                    standin.requests.append(
                        Recorded(parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()})
                    )
                status, body, headers = standin.answer(parts.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def open_gate(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def paths(self) -> list[str]:
        with self._lock:
            return [request.path for request in self.requests]

    def answer(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        segments = path.strip("/").split("/")
        if len(segments) < 3 or segments[0] != "repos":
            return _json(404, {"message": "Not Found"})
        full_name = f"{segments[1]}/{segments[2]}"
        endpoint = {3: "repository", 5: "release", 4: "commit"}.get(len(segments), "")
        with self._lock:
            mode = self.modes.get(full_name, segments[2])
        if (mode, endpoint) in {("hang", "repository"), ("gated", "commit")}:
            self.gate.wait(self.gate_timeout)
        if mode == f"fail-{endpoint}":
            return _json(500, {"message": "Server Error"})
        if mode == "rate-limited":
            reset = str(int(time.time()) + 120)
            headers = {"x-ratelimit-limit": "60", "x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}
            return _json(403, {"message": "API rate limit exceeded for 127.0.0.1."}, headers)
        if mode == "throttled":
            return _json(429, {"message": "You have exceeded a secondary rate limit."}, {"retry-after": "42"})
        if endpoint == "repository":
            if mode == "missing":
                return _json(404, {"message": "Not Found"})
            if mode in ("unauthorized", "forbidden"):
                return _json(401 if mode == "unauthorized" else 403, {"message": "Bad credentials"})
            if mode == "not-json":
                return 200, b"<html>unicorn</html>", {"Content-Type": "text/html"}
            return _json(200, repository_json(full_name))
        if endpoint == "release" and segments[3:] == ["releases", "latest"]:
            return _json(404, {"message": "Not Found"}) if mode == "no-release" else _json(200, release_json(full_name))
        if endpoint == "commit" and segments[3] == "commits":
            if mode == "empty":
                return _json(409, {"message": "Git Repository is empty."})
            return _json(200, commits_json(full_name))
        return _json(404, {"message": "Not Found"})


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps(payload).encode(), {"Content-Type": "application/json; charset=utf-8", **(headers or {})}


@pytest.fixture
def github() -> Iterator[GitHubStandIn]:
    """A stand-in for the test, closed at its end (import it into a test module to use it)."""
    standin = GitHubStandIn()
    yield standin
    standin.close()


# --- driving the API -------------------------------------------------------------------------------

FINISHED = ("succeeded", "failed")


pin = pin_project  # the sync tests' name for it


async def start(client: httpx.AsyncClient, user: UserCtx, project_id: int, status: int = 202) -> dict[str, Any]:
    response = await client.post(f"/api/{user.id}/projects/{project_id}/sync", headers=user.headers)
    assert response.status_code == status, response.text
    run: dict[str, Any] = response.json()["data"]
    return run


async def get_run(client: httpx.AsyncClient, user: UserCtx, project_id: int, run_id: int) -> dict[str, Any]:
    response = await client.get(f"/api/{user.id}/projects/{project_id}/sync/{run_id}", headers=user.headers)
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()["data"]
    return run


async def poll(
    client: httpx.AsyncClient,
    user: UserCtx,
    project_id: int,
    run_id: int,
    until: Callable[[dict[str, Any]], bool] = lambda run: run["status"] in FINISHED,
    within: float = 15.0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll the status route until `until(run)`; the final run and every state seen on the way."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        run = await get_run(client, user, project_id, run_id)
        seen.append(run)
        if until(run):
            return run, seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run_id} never reached the expected state; last seen: {seen[-1] if seen else None}")


async def sync_once(client: httpx.AsyncClient, user: UserCtx, project_id: int) -> dict[str, Any]:
    """Start a run and wait for it to finish."""
    started = await start(client, user, project_id)
    run, _ = await poll(client, user, project_id, started["run_id"])
    return run


async def get_project(client: httpx.AsyncClient, user: UserCtx, project_id: int) -> dict[str, Any]:
    response = await client.get(f"/api/{user.id}/projects/{project_id}", headers=user.headers)
    assert response.status_code == 200, response.text
    project: dict[str, Any] = response.json()["data"]
    return project
