"""A real `python -m backend serve` on a free port with a temporary SQLite database, for tests
that need a server a browser or a script can reach (docs in Chromium, the client walk-throughs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from backend.config import Settings
from tests.support import free_port, stop

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def live_server(tmp_path: Path, **env: str) -> Iterator[str]:
    """Yields the base URL; stops the server (SIGTERM) afterwards and fails if it never came up."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
    environment.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'live.db'}",
        DATA_DIR=str(tmp_path / "data"),
        BCRYPT_ROUNDS="4",
        LOG_LEVEL="warning",
        **env,
    )
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", "--port", str(port)],
            cwd=tmp_path,  # no developer's `.env` is read
            env={**environment, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the server exited ({process.returncode}):\n{log_path.read_text()}")
            try:
                if httpx.get(f"{base_url}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the server never answered:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield base_url
    finally:
        stop(process)
