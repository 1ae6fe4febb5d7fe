"""`python -m backend migrate | serve`, as a user runs them."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from backend.__main__ import main
from backend.config import Settings

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
        assert "JWT_SECRET is required when ENVIRONMENT=production" in err
        assert "Traceback" not in err

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


class TestServe:
    def test_starts_migrates_and_stops_on_sigterm(self, tmp_path):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", "--port", str(port)],
            cwd=ROOT,
            env=clean_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            health = None
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            assert health is not None, "the server never answered"
            assert health.status_code == 200, health.text
            assert health.json()["data"]["database"] == "ok"
            assert "server" not in health.headers
            assert (tmp_path / "data" / "jwt_secret").exists()
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=30)
        # uvicorn finishes the graceful shutdown, then re-raises SIGTERM: the conventional exit status 143.
        assert process.returncode in (0, -signal.SIGTERM), output
        assert "Application shutdown complete" in output
        assert "Traceback" not in output


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
        assert app == "backend.main:create_app"
        assert options["factory"] is True
        assert (options["host"], options["port"], options["workers"]) == ("127.0.0.1", 8000, 1)
        # uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1; the app reads it itself.
        assert options["proxy_headers"] is False
        assert "users" in tables(tmp_path / "cli.db")  # AUTO_MIGRATE defaults to true
        assert (tmp_path / "data" / "jwt_secret").exists()  # made once, before workers start

    def test_trusted_proxies_and_no_auto_migrate(self, tmp_path, monkeypatch):
        _, options = self.run_serve(
            tmp_path,
            monkeypatch,
            ["--host", "0.0.0.0", "--port", "9000", "--workers", "3"],
            TRUSTED_PROXIES="10.0.0.1, 10.0.0.2",
            AUTO_MIGRATE="false",
        )
        assert (options["host"], options["port"], options["workers"]) == ("0.0.0.0", 9000, 3)
        # Trusted proxies are honoured by the app (middleware.client_ip), never by uvicorn.
        assert options["proxy_headers"] is False
        assert not (tmp_path / "cli.db").exists()
