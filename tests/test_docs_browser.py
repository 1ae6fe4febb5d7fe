"""/docs and /redoc render in a real browser (headless Chromium) from a live server, with no internet.

Chromium is required, never skipped: the test command (tests/environment.py) installs Debian's `chromium`
when it is missing and it can, and otherwise stops before the suite with one line saying so.
Every host but 127.0.0.1 resolves to nothing, and Chromium's network log proves the pages asked
only our server for anything.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from backend.docs import DOCS_CSP
from tests import environment
from tests.live_server import live_server

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=10000",
    # Belt and braces: even a request that slipped through could not reach another host.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium() -> str:
    path = environment.chromium()
    if path is None:
        pytest.fail(
            "Chromium is required for the docs browser test and was not found: `make test` installs it "
            "(Debian's package: `apt-get install -y chromium`).",
            pytrace=False,
        )
    return path


@dataclass
class Rendered:
    dom: str
    console: str
    page_requests: list[str]  # URLs the page itself asked for (not Chromium's own housekeeping)


def render(base_url: str, path: str, workdir: Path) -> Rendered:
    profile = workdir / f"profile-{path.strip('/')}"
    netlog = workdir / f"netlog-{path.strip('/')}.json"
    command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--log-net-log={netlog}"]
    done = subprocess.run(
        [*command, "--dump-dom", base_url + path],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    origin = base_url.rstrip("/")
    requests = []
    for event in json.loads(netlog.read_text())["events"]:
        params = event.get("params")
        if isinstance(params, dict) and "url" in params and params.get("initiator") == origin:
            requests.append(params["url"])
    return Rendered(done.stdout, done.stderr, requests)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with live_server(tmp_path_factory.mktemp("docs")) as base_url:
        yield base_url


def assert_offline(page: Rendered, base_url: str) -> None:
    assert page.page_requests, "the page made no request at all: did it load?"
    for url in page.page_requests:
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == base_url, f"the page reached out to {url}"
    # The CSP blocks anything else; our own scripts, styles and worker must not be among the blocked.
    for line in page.console.splitlines():
        if "violates the following Content Security Policy" in line:
            assert re.search(r"directive: \"(img-src)", line), line


class TestSwaggerUI:
    def test_renders_the_operations(self, server, tmp_path):
        page = render(server, "/docs", tmp_path)
        assert 'class="swagger-ui"' in page.dom
        paths = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', page.dom))
        assert {"/api/{user_id}/tasks", "/api/{user_id}/projects", "/api/auth/login"} <= paths
        assert "Create a task" in page.dom
        assert "Pin a GitHub repository" in page.dom
        assert 'class="btn authorize' in page.dom  # the bearer / password schemes are declared
        assert_offline(page, server)
        assert f"{server}/openapi.json" in page.page_requests
        assert f"{server}/static/swagger-ui/swagger-ui-bundle.js" in page.page_requests


class TestReDoc:
    def test_renders_the_operations(self, server, tmp_path):
        page = render(server, "/redoc", tmp_path)
        assert 'data-section-id="tag/tasks/operation/create_task"' in page.dom
        assert 'data-section-id="tag/projects/operation/pin_project"' in page.dom
        assert "Create a task" in page.dom
        assert "Sign in with email and password" in page.dom
        assert_offline(page, server)
        assert f"{server}/static/redoc/redoc.standalone.js" in page.page_requests


class TestPagesReferenceOnlyLocalAssets:
    @pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
    def test_html(self, server, path):
        response = httpx.get(server + path)
        assert response.status_code == 200
        assert response.headers["content-security-policy"] == DOCS_CSP
        references = re.findall(r'(?:src|href)="([^"]+)"', response.text)
        assert all(ref.startswith("/static/") for ref in references), references
        assert "http://" not in response.text
        assert "https://" not in response.text

    def test_assets_are_served_without_rate_limits(self, server):
        response = httpx.get(server + "/static/swagger-ui/swagger-ui.css")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/css")
        assert "ratelimit-limit" not in response.headers
        assert httpx.get(server + "/static/%2e%2e/config.py").status_code == 404
