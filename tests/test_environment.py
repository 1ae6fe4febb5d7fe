"""The test command's set-up (tests/environment.py), run as `make test` runs it: a real process each time.

What is missing stops it with one line and exit code 2 before anything runs; throwaway PostgreSQL and Redis
servers answer at the URLs the command is given, and are gone afterwards however it ended (its exit code,
SIGTERM, or a SIGKILL that only the next run can clean up after).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests import environment
from tests.conftest import BACKENDS, REDIS_URL

ROOT = Path(__file__).resolve().parent.parent
SETUP = [sys.executable, "-m", "tests.environment"]
SUDO = "" if os.geteuid() == 0 else "sudo "
# The backends of this run: PostgreSQL's tools are only there when it includes PostgreSQL.
BACKENDS_ENV = ",".join(BACKENDS)
# The command under test: uses both servers (PostgreSQL when the backends include it), prints their URLs
# ("-" for none) and its pid.
PROBE = """
import os, psycopg, redis
pg_url = os.environ.get("TEST_POSTGRES_URL", "-")
if pg_url != "-":
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
assert redis.Redis.from_url(os.environ["TEST_REDIS_URL"]).ping()
print(pg_url, os.environ["TEST_REDIS_URL"], os.getpid(), flush=True)
"""


def environ(**values: str) -> dict[str, str]:
    """This process's environment without the suite's server URLs, plus `values`."""
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_POSTGRES_URL", "TEST_REDIS_URL")}
    return {**env, **values}


def setup(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SETUP, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def path_without(tmp_path: Path, *left_out: str) -> str:
    """A PATH with every tool the check looks for except `left_out` (symlinks into one folder)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    tools = ["redis-server", "chromium", "chromium-browser", "node", "npm", "initdb", "pg_ctl", "pgbouncer"]
    for name in [*tools, "pgrep", "runuser", "locale", "apt-get"]:
        found = shutil.which(name)
        if found and name not in left_out:
            (folder / name).symlink_to(found)
    return str(folder)


def answers(url: str) -> bool:
    if url == "-":
        return False
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2):
            return True
    except OSError:
        return False


def services_folder(owner: int) -> Path:
    """The folder of the throwaway servers of the run whose pid is `owner` (other runs may have theirs)."""
    for folder in Path(tempfile.gettempdir()).glob(environment.SERVICES_PREFIX + "*"):
        if (folder / "owner").exists() and (folder / "owner").read_text() == str(owner):
            return folder
    raise AssertionError(f"no services folder of {owner}")


NO_BROWSER_NOR_POOLER = ("chromium", "chromium-browser", "pgbouncer")


class TestMissing:
    @pytest.mark.parametrize(
        ("backends", "left_out", "named", "packages"),
        [
            ("sqlite,postgresql", NO_BROWSER_NOR_POOLER, "chromium, pgbouncer", "chromium pgbouncer"),
            ("sqlite", NO_BROWSER_NOR_POOLER, "chromium", "chromium"),  # no pooler test without PostgreSQL
            ("sqlite", ("node",), "Node.js 18.17+ and npm", "nodejs npm"),
        ],
    )
    def test_one_line_naming_it_and_the_command_that_installs_it(self, tmp_path, backends, left_out, named, packages):
        env = environ(PATH=path_without(tmp_path, *left_out), TEST_BACKENDS=backends, TEST_INSTALL="no")
        done = setup("check", env=env)
        assert done.returncode == 2
        assert done.stdout == ""
        them = "it" if "," not in named else "them"
        assert done.stderr == f"missing: {named} — install {them} with: {SUDO}apt-get install -y {packages}\n"

    def test_a_failed_install_says_why_in_the_same_line(self, tmp_path):
        """As root with apt-get, the check installs what is missing; an apt-get that fails is named with its reason."""
        path = path_without(tmp_path, "chromium", "chromium-browser", "apt-get")
        apt = Path(path) / "apt-get"
        apt.write_text("#!/bin/sh\necho 'E: Could not resolve deb.debian.org' >&2\nexit 100\n")
        apt.chmod(0o755)
        done = setup("check", env=environ(PATH=path, TEST_BACKENDS="sqlite"))
        assert done.returncode == 2
        line = done.stderr.splitlines()[-1]
        if SUDO:  # not root: nothing is installed, only said
            assert done.stderr == "missing: chromium — install it with: sudo apt-get install -y chromium\n"
        else:
            assert done.stderr.splitlines()[0].startswith("installing chromium with apt-get")
            reason = "(apt-get update failed: E: Could not resolve deb.debian.org)"
            assert line == f"missing: chromium {reason} — install it with: apt-get install -y chromium"

    def test_a_given_url_must_answer(self):
        url = f"redis://127.0.0.1:{environment.free_port()}/0"
        done = setup("run", "--", "true", env=environ(TEST_REDIS_URL=url, TEST_BACKENDS="sqlite"))
        assert done.returncode == 2
        advice = "start that server, or unset TEST_REDIS_URL for a throwaway one"
        assert done.stderr == f"TEST_REDIS_URL: nothing answers at {url} — {advice}\n"


class TestThrowawayServers:
    def test_the_command_gets_both_and_they_are_gone_after_it(self):
        env = environ(TEST_BACKENDS=BACKENDS_ENV)
        done = setup("run", "--", sys.executable, "-c", PROBE + "raise SystemExit(3)", env=env)
        assert done.returncode == 3, done.stderr  # the command's own exit code
        pg_url, redis_url, _ = done.stdout.split()
        assert (pg_url != "-") == ("postgresql" in BACKENDS)
        assert urlsplit(redis_url).port != 6379
        assert f"throwaway test servers: TEST_POSTGRES_URL={pg_url}" in done.stderr or pg_url == "-"
        assert not answers(pg_url)
        assert not answers(redis_url)

    def test_a_given_url_is_used_as_it_is(self):
        env = environ(TEST_REDIS_URL=REDIS_URL, TEST_BACKENDS="sqlite")
        done = setup("run", "--", sys.executable, "-c", PROBE, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[:2] == ["-", REDIS_URL]
        assert "throwaway" not in done.stderr

    def test_sigterm_reaches_the_command_and_the_servers_stop(self):
        command = [*SETUP, "run", "--", sys.executable, "-c", PROBE + "import time; time.sleep(120)"]
        env = environ(TEST_BACKENDS="sqlite")  # PostgreSQL's throwaway server is stopped by the same code path
        with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as wrapper:
            assert wrapper.stdout is not None
            _, redis_url, _ = wrapper.stdout.readline().split()
            wrapper.send_signal(signal.SIGTERM)
            assert wrapper.wait(timeout=60) == 128 + signal.SIGTERM
        assert not answers(redis_url)

    def test_the_servers_of_a_killed_run_are_removed_by_the_next(self):
        command = [*SETUP, "run", "--", sys.executable, "-c", PROBE + "import time; time.sleep(120)"]
        env = environ(TEST_BACKENDS=BACKENDS_ENV)
        with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as wrapper:
            assert wrapper.stdout is not None
            pg_url, redis_url, pid = wrapper.stdout.readline().split()
            folder = services_folder(wrapper.pid)
            wrapper.kill()  # no clean-up: the servers stay
            wrapper.wait()
        try:
            # The servers outlive the run (unless a run starting elsewhere meanwhile has removed them already).
            done = setup("run", "--", "true", env=environ(TEST_BACKENDS="sqlite"))
            assert done.returncode == 0, done.stderr
            assert not answers(pg_url)
            assert not answers(redis_url)
            assert not folder.exists()
        finally:
            os.kill(int(pid), signal.SIGKILL)  # the killed run's command, orphaned
