"""`python -m backend migrate | serve`, as a user runs them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from backend.__main__ import main
from backend.config import Settings
from backend.logging_setup import served_log_config
from tests.conftest import BACKENDS, PG_ADMIN_URL

ROOT = Path(__file__).resolve().parents[1]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
    env.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "DATA_DIR": str(tmp_path / "data")}, **extra)
    return env


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestMigrate:
    def test_subprocess(self, tmp_path):
        done = subprocess.run(
            [sys.executable, "-m", "backend", "migrate"],
            cwd=ROOT,
            env=clean_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "migrations applied" in done.stdout
        assert {"users", "sessions", "refresh_tokens", "alembic_version"} <= tables(tmp_path / "cli.db")

    def test_first_migration_on_sqlite_prints_no_warning(self, tmp_path):
        """Nothing on stderr: no SAWarning (the batch rebuild in revision 0003 reflected the users table and its
        expression index, which SQLAlchemy cannot reflect on SQLite), no other warning."""
        done, _ = run_cli(tmp_path, "migrate")
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        assert done.stdout == "migrations applied\n"

    def test_in_process(self, tmp_path, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        for name, value in clean_env(tmp_path).items():
            monkeypatch.setenv(name, value)
        assert main(["migrate"]) == 0
        assert "users" in tables(tmp_path / "cli.db")

    def test_bad_configuration_is_a_clear_error(self, tmp_path, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        for name in Settings.model_fields:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("ENVIRONMENT", "production")
        assert main(["migrate"]) == 2
        err = capsys.readouterr().err
        assert err == "error: Invalid configuration: settings: JWT_SECRET is required when ENVIRONMENT=production\n"

    def test_bad_sync_stage_stops_serve_before_anything_runs(self, tmp_path, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        for name, value in clean_env(tmp_path).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("SYNC_STAGES", "nope.stages:fetch")
        assert main(["serve"]) == 2
        err = capsys.readouterr().err
        assert "SYNC_STAGES" in err
        assert "Traceback" not in err
        assert not (tmp_path / "cli.db").exists()  # refused before the migrations

    def test_unknown_command(self):
        with pytest.raises(SystemExit):
            main(["frobnicate"])


class Served:
    """A `python -m backend serve` process of the test's own, on a free port (stdout and stderr kept apart)."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", "--port", str(self.port)],
            cwd=ROOT,
            env=clean_env(tmp_path, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def first_answer(self, path: str) -> httpx.Response:
        """The answer to GET `path` once the server listens (within 30 s)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=1)
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("the server never answered")

    def stop(self) -> tuple[str, str]:
        """SIGTERM, then what it wrote: (stdout, stderr)."""
        self.process.send_signal(signal.SIGTERM)
        stdout, stderr = self.process.communicate(timeout=30)
        return stdout, stderr


class TestServe:
    def test_starts_migrates_and_stops_on_sigterm(self, tmp_path):
        served = Served(tmp_path)
        try:
            health = served.first_answer("/health")
            assert health.status_code == 200, health.text
            assert health.json()["data"]["database"] == "ok"
            assert "server" not in health.headers
            assert (tmp_path / "data" / "jwt_secret").exists()
        finally:
            output = "".join(served.stop())
        # uvicorn finishes the graceful shutdown, then re-raises SIGTERM: the conventional exit status 143.
        assert served.process.returncode in (0, -signal.SIGTERM), output
        assert "Application shutdown complete" in output
        assert "Traceback" not in output

    def test_first_start_logs_only_json_lines_and_no_warning(self, tmp_path):
        """LOG_FORMAT=json: uvicorn's own lines (start-up, shutdown) come out as the app's do, one JSON object a
        line with the app's fields, on standard output; standard error stays empty (no SAWarning either)."""
        served = Served(tmp_path, LOG_FORMAT="json")
        try:
            assert served.first_answer("/nope").status_code == 404
        finally:
            stdout, stderr = served.stop()
        assert stderr == ""
        entries = [json.loads(line) for line in stdout.splitlines()]  # every line: one JSON object
        for entry in entries:
            assert {"ts", "level", "logger", "msg"} <= set(entry), entry
            assert "color_message" not in entry
        messages = {(e["logger"], e["msg"]) for e in entries}
        assert ("uvicorn.error", "Application startup complete.") in messages
        assert ("uvicorn.error", "Application shutdown complete.") in messages
        assert any(e["logger"] == "taskdeck.access" and e["route"] == "<unmatched>" for e in entries)
        assert all("\x1b" not in line for line in stdout.splitlines())  # no terminal colours
        assert [e["msg"] for e in entries if e["logger"] == "py.warnings"] == []  # no warning (SAWarning) at all


class TestServeOptions:
    """What `serve` hands to uvicorn (uvicorn itself is exercised by TestServe)."""

    def run_serve(self, tmp_path, monkeypatch, argv, **env):
        import uvicorn

        calls = []
        monkeypatch.chdir(tmp_path)
        for name, value in clean_env(tmp_path, **env).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
        assert main(["serve", *argv]) == 0
        (call,) = calls
        return call

    def test_defaults(self, tmp_path, monkeypatch):
        app, options = self.run_serve(tmp_path, monkeypatch, [])
        assert app == "backend.main:served_app"
        assert options["factory"] is True
        assert (options["host"], options["port"], options["workers"]) == ("127.0.0.1", 8000, 1)
        # uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1; the app reads it itself.
        assert options["proxy_headers"] is False
        assert options["log_config"] == served_log_config("info", "json")  # its lines in the app's format
        assert "users" in tables(tmp_path / "cli.db")  # AUTO_MIGRATE defaults to true
        assert (tmp_path / "data" / "jwt_secret").exists()  # made once, before workers start

    def test_trusted_proxies_and_no_auto_migrate(self, tmp_path, monkeypatch):
        _, options = self.run_serve(
            tmp_path,
            monkeypatch,
            ["--host", "0.0.0.0", "--port", "9000", "--workers", "3"],
            TRUSTED_PROXIES="10.0.0.1, 10.0.0.2",
            AUTO_MIGRATE="false",
            ALLOW_LOCAL_STATE="true",
        )
        assert (options["host"], options["port"], options["workers"]) == ("0.0.0.0", 9000, 3)
        # Trusted proxies are honoured by the app (middleware.client_ip), never by uvicorn.
        assert options["proxy_headers"] is False
        assert not (tmp_path / "cli.db").exists()

    def test_port_comes_from_the_environment_unless_given(self, tmp_path, monkeypatch):
        _, options = self.run_serve(tmp_path, monkeypatch, [], PORT="9123")
        assert options["port"] == 9123
        _, options = self.run_serve(tmp_path, monkeypatch, ["--port", "9001"], PORT="9123")
        assert options["port"] == 9001

    @pytest.mark.parametrize("env", [{"ALLOW_LOCAL_STATE": "true"}, {"REDIS_URL": "redis://127.0.0.1:6379/0"}])
    def test_several_workers_with_redis_or_on_purpose(self, tmp_path, monkeypatch, env):
        _, options = self.run_serve(tmp_path, monkeypatch, ["--workers", "2"], AUTO_MIGRATE="false", **env)
        assert options["workers"] == 2


def one_line(stderr: str) -> str:
    """A start-up failure is exactly one line on stderr, and no traceback."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


class TestSeveralWorkersWithoutRedis:
    """Tickets, event streams and rate limits live in one process without Redis: N workers would split them."""

    def test_refused_in_process(self, tmp_path, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        for name, value in clean_env(tmp_path).items():
            monkeypatch.setenv(name, value)
        assert main(["serve", "--workers", "2"]) == 2
        line = one_line(capsys.readouterr().err)
        assert line.startswith("error: --workers 2 needs REDIS_URL")
        assert all(word in line for word in ("tickets", "streams", "rate limits", "ALLOW_LOCAL_STATE=true"))
        assert not (tmp_path / "cli.db").exists()  # refused before the migrations

    def test_refused_as_a_process(self, tmp_path):
        done = subprocess.run(
            [sys.executable, "-m", "backend", "serve", "--workers", "2", "--port", str(free_port())],
            cwd=ROOT,
            env=clean_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert "needs REDIS_URL" in one_line(done.stderr)


def run_cli(tmp_path: Path, command: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    argv = [sys.executable, "-m", "backend", command]
    if command == "serve":
        argv += ["--port", str(free_port())]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, env=clean_env(tmp_path, **env), capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - started


def pg_url(port: int, database: str) -> str:
    admin = urlsplit(PG_ADMIN_URL)
    return urlunsplit(admin._replace(netloc=f"{admin.netloc.rsplit(':', 1)[0]}:{port}", path=f"/{database}"))


needs_postgresql = pytest.mark.skipif("postgresql" not in BACKENDS, reason="TEST_BACKENDS leaves PostgreSQL out")


@pytest.mark.parametrize("command", ["migrate", "serve"])
class TestStartupFailures:
    """One line naming the setting or the dependency, no traceback; exit 2 = configuration, 3 = unreachable."""

    def test_garbage_database_url(self, tmp_path, command):
        done, _ = run_cli(tmp_path, command, DATABASE_URL="garbage")
        assert done.returncode == 2
        assert one_line(done.stderr).startswith("error: Invalid configuration: DATABASE_URL")

    def test_malformed_redis_url(self, tmp_path, command):
        done, _ = run_cli(tmp_path, command, REDIS_URL="notaurl")
        assert done.returncode == 2
        assert one_line(done.stderr).startswith("error: Invalid configuration: REDIS_URL")
        assert not (tmp_path / "cli.db").exists()  # refused before the migrations

    def test_password_is_never_echoed(self, tmp_path, command):
        done, _ = run_cli(tmp_path, command, DATABASE_URL="postgresql://taskdeck:s3cr/et@db:5432/taskdeck")
        assert done.returncode == 2
        line = one_line(done.stderr)
        assert "DATABASE_URL" in line
        assert "percent-encode" in line
        assert "s3cr" not in line

    def test_options_the_driver_refuses(self, tmp_path, command):
        url = pg_url(free_port(), "postgres") + "?sslmode=bogus"
        done, _ = run_cli(tmp_path, command, DATABASE_URL=url, DB_STARTUP_RETRY_SECONDS="60")
        assert done.returncode == 2
        assert (
            one_line(done.stderr)
            == 'error: Invalid configuration: DATABASE_URL: connection is bad: invalid sslmode value: "bogus"'
        )

    def test_unreachable_database_is_retried_then_exit_3(self, tmp_path, command):
        url = pg_url(free_port(), "postgres")  # a closed port on 127.0.0.1
        done, took = run_cli(tmp_path, command, DATABASE_URL=url, DB_STARTUP_RETRY_SECONDS="3")
        assert done.returncode == 3
        line = one_line(done.stderr)
        assert line.startswith("error: the database (DATABASE_URL) is unreachable:")
        assert "Connection refused" in line
        assert took >= 1.5  # retried with back-off (0.5 s, 1 s, then 2 s would pass the 3 s) before giving up

    @needs_postgresql
    def test_missing_database_exits_3_without_waiting(self, tmp_path, command):
        port = urlsplit(PG_ADMIN_URL).port or 5432
        url = pg_url(port, f"taskdeck_missing_{uuid.uuid4().hex[:8]}")
        done, took = run_cli(tmp_path, command, DATABASE_URL=url, DB_STARTUP_RETRY_SECONDS="120")
        assert done.returncode == 3
        line = one_line(done.stderr)
        assert line.startswith("error: the database (DATABASE_URL) cannot be used:")
        assert "does not exist" in line
        assert took < 60  # no waiting can create a database: not retried for 120 s


class LateForwarder:
    """A port that opens only after a while and then forwards to PostgreSQL: a database waking from zero."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self.listener: socket.socket | None = None

    def open(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()


@needs_postgresql
def test_migrate_waits_for_a_database_that_wakes_up(tmp_path):
    name = f"taskdeck_cli_{uuid.uuid4().hex[:8]}"
    admin = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    port = free_port()
    forwarder = LateForwarder(port, ("127.0.0.1", urlsplit(PG_ADMIN_URL).port or 5432))
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "backend", "migrate"],
            cwd=ROOT,
            env=clean_env(tmp_path, DATABASE_URL=pg_url(port, name), DB_STARTUP_RETRY_SECONDS="60"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(2)  # refused meanwhile
        assert process.poll() is None, process.communicate()
        forwarder.open()
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert "migrations applied" in out
    finally:
        forwarder.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_app_builds_on_the_embedded_defaults(tmp_path):
    """No DATABASE_URL at all (the README's `make run`): the SQLite default under DATA_DIR. A setting read raw
    instead of through `Settings.database_url` (empty here) once crashed create_app on a fresh clone."""
    env = clean_env(tmp_path)
    del env["DATABASE_URL"]
    done = subprocess.run(
        [sys.executable, "-m", "backend", "openapi", "--output", str(tmp_path / "openapi.json")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "openapi.json").read_text().startswith("{")


@pytest.mark.parametrize("auto_migrate", ["true", "false"])
def test_a_served_process_loads_no_library_it_does_not_use(tmp_path, auto_migrate):
    """Every module imported stays in the process's memory (specs/performance.md, "RSS"): `serve` migrates in a
    forked child, so the serving process never loads alembic, and httpx waits for a sync run or Better-Auth."""
    script = (
        "import sys, uvicorn\n"
        "from backend.__main__ import main\n"
        "from backend.main import create_app\n"
        "uvicorn.run = lambda app, **options: create_app()\n"
        "assert main(['serve']) == 0\n"
        "print('loaded:', [name for name in ('alembic', 'httpx') if name in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=clean_env(tmp_path, AUTO_MIGRATE=auto_migrate),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout.splitlines(), done.stdout[-2000:]
    assert ("users" in tables(tmp_path / "cli.db")) == (auto_migrate == "true")  # the child's work is done


async def test_the_served_app_freezes_its_start_up_objects(database_url, data_dir):
    """`serve`'s app (`served_app`) moves what start-up built out of the garbage collector's way, so a full
    collection no longer traverses it: on the benchmark, `changes_200`'s p99 at 100 req/s went from 175-187 ms
    (collection pauses) to 22 ms. An app made by `create_app` alone (every test's) freezes nothing."""
    import gc

    from backend.main import create_app
    from tests.conftest import make_settings

    gc.unfreeze()
    app = create_app(make_settings(database_url, data_dir))
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() == 0
    app = create_app(make_settings(database_url, data_dir), freeze_after_start=True)
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
