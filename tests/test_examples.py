"""specs/examples/walkthrough.sh and example_api_usage.py run green against a live server.

GitHub is a small HTTP server on 127.0.0.1 (GITHUB_API_URL), so the sync step never reaches the
internet.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.live_server import ROOT, live_server

EXAMPLES = ROOT / "specs" / "examples"
STEPS = [
    "register",
    "login",
    "create a task",
    "list tasks",
    "update the task",
    "complete the task",
    "delete the task",
    "pin a project",
    "list projects",
    "unpin the project",
    "refresh the tokens",
    "logout",
    "token after logout is refused",
]


class FakeGitHub(BaseHTTPRequestHandler):
    """Just enough of GitHub's REST API for a sync run: a repository, its latest release and commits."""

    def do_GET(self) -> None:
        match = re.match(r"^/repos/([^/]+)/([^/?]+)(/[^?]*)?", self.path)
        if not match:
            self.answer(404, {"message": "Not Found"})
            return
        owner, repo, rest = match.group(1), match.group(2), match.group(3) or ""
        if rest == "":
            self.answer(200, repository(owner, repo))
        elif rest.startswith("/releases"):
            release = {"tag_name": "v1.0.0", "name": "v1.0.0", "published_at": "2026-11-01T00:00:00Z"}
            self.answer(200, release if rest.endswith("latest") else [release])
        elif rest.startswith("/commits"):
            commit = {"sha": "a" * 40, "commit": {"message": "Release", "author": {"date": "2026-11-01T00:00:00Z"}}}
            self.answer(200, [commit] if rest == "/commits" else commit)
        else:
            self.answer(404, {"message": "Not Found"})

    def answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def repository(owner: str, repo: str) -> dict[str, object]:
    return {
        "id": 1,
        "name": repo,
        "full_name": f"{owner}/{repo}",
        "html_url": f"https://github.com/{owner}/{repo}",
        "description": "A repository",
        "stargazers_count": 1,
        "forks_count": 2,
        "open_issues_count": 3,
        "watchers_count": 1,
        "language": "Python",
        "default_branch": "main",
        "pushed_at": "2026-11-20T00:00:00Z",
        "updated_at": "2026-11-20T00:00:00Z",
        "archived": False,
        "topics": [],
        "license": {"spdx_id": "MIT"},
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    github = ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
    thread = threading.Thread(target=github.serve_forever, daemon=True)
    thread.start()
    try:
        github_url = f"http://127.0.0.1:{github.server_address[1]}"
        with live_server(tmp_path_factory.mktemp("examples"), GITHUB_API_URL=github_url) as base_url:
            yield base_url
    finally:
        github.shutdown()
        github.server_close()


def assert_walked(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    for step in STEPS:
        assert re.search(rf"^ok +{re.escape(step)} ", done.stdout, re.MULTILINE), f"step {step!r}:\n{done.stdout}"
    assert re.search(r"^ +sync run \d+ succeeded$", done.stdout, re.MULTILINE), done.stdout
    assert "INVALID_TOKEN" in done.stdout  # the logged-out token is refused
    assert done.stdout.rstrip().endswith("walk-through complete")


def test_curl_walkthrough(server):
    done = subprocess.run(
        ["bash", str(EXAMPLES / "walkthrough.sh")],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "BASE_URL": server},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_walked(done)


def test_python_walkthrough(server):
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "example_api_usage.py")],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "BASE_URL": server},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_walked(done)


def test_a_failing_step_stops_the_script_with_its_status(server):
    """Against something that is not the API, the first step fails loudly (exit 1), never silently."""
    scripts = [["bash", str(EXAMPLES / "walkthrough.sh")], [sys.executable, str(EXAMPLES / "example_api_usage.py")]]
    for command in scripts:
        done = subprocess.run(
            command,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "BASE_URL": server + "/nowhere"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert "FAIL  liveness" in done.stdout + done.stderr
        assert "404" in done.stdout + done.stderr


def test_scripts_are_executable_and_strict():
    script = EXAMPLES / "walkthrough.sh"
    assert script.stat().st_mode & 0o111
    assert "set -euo pipefail" in script.read_text()
    assert "jq" not in re.sub(r"#.*", "", script.read_text())


def test_batch_example(server):
    """specs/examples/batch_example.py: temp ids, one failing command, the same batch again applies nothing twice."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "batch_example.py")],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "BASE_URL": server},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for step in ("send the batch", "send the same batch again", "send the fix"):
        assert re.search(rf"^ok +{re.escape(step)} ", done.stdout, re.MULTILINE), f"step {step!r}:\n{done.stdout}"
    assert "nothing was created twice" in done.stdout
    assert done.stdout.rstrip().endswith("batch example complete")


def test_offline_sync_example(server):
    """specs/examples/offline_sync.py (specs/offline-clients.md): full and incremental sync, a batch sent again after
    a timeout, a 412 resolved, a dead cursor's 410 followed by a full sync."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "offline_sync.py"), server],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for step in (
        "full sync, page 3",
        "incremental sync, page 2",
        "send the same batch again",
        "and once more",
        "update (stale)",
        "update (fresh version)",
        "sync from a dead cursor: cursor expired",
    ):
        assert re.search(rf"^ok +{re.escape(step)} ", done.stdout, re.MULTILINE), f"step {step!r}:\n{done.stdout}"
    for line in ("deleted: a tombstone, item null", "nothing applied twice", "412, nothing changed", "both edits kept"):
        assert f"      {line}\n" in done.stdout, done.stdout
    assert done.stdout.rstrip().endswith("offline sync example complete")


def test_offline_sync_example_fails_loudly(server):
    """Against something that is not the API, the script stops at its first step with exit 1."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "offline_sync.py"), server + "/nowhere"],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  liveness" in done.stdout
    assert "404" in done.stdout
