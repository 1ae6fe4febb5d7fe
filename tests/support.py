"""Helpers for the edge tests: clients with a chosen peer address, a private Redis server, log capture."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import redis
from fastapi import FastAPI

from backend.logging_setup import JsonFormatter
from tests.conftest import REDIS_URL, RUN_ID


def client_for(app: FastAPI, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    """An HTTP client whose requests arrive from the socket peer `ip`."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def unique_prefix() -> str:
    return f"taskdeck-test-{RUN_ID}-{uuid.uuid4().hex[:8]}"


def limited(prefix: str, redis_url: str | None = REDIS_URL, **overrides: Any) -> dict[str, Any]:
    """Settings overrides turning rate limiting on, on the test Redis, with loose limits unless overridden."""
    values: dict[str, Any] = {
        "RATE_LIMIT_ENABLED": True,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "RATE_LIMIT_DEFAULT": "1000/minute",
        "RATE_LIMIT_LOGIN": "1000/hour",
        "RATE_LIMIT_LOGIN_IP": "1000/hour",
        "RATE_LIMIT_REGISTER": "1000/hour",
        "RATE_LIMIT_SYNC": "1000/hour",
    }
    values.update(overrides)
    return values


def redis_keys(prefix: str, url: str = REDIS_URL) -> list[str]:
    with redis.Redis.from_url(url) as conn:
        return [key.decode() for key in conn.scan_iter(match=f"{prefix}:*", count=500)]


def delete_keys(prefix: str, url: str = REDIS_URL) -> None:
    with redis.Redis.from_url(url) as conn:
        keys = list(conn.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            conn.delete(*keys)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"not ready after {timeout} s")


class RedisServer:
    """A private redis-server on its own port, which a test may kill and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        command += ["--daemonize", "no", "--bind", "127.0.0.1"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers() -> bool:
            with redis.Redis.from_url(self.url, socket_timeout=0.5) as conn:
                return bool(conn.ping())

        wait_until(answers)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@contextmanager
def captured_logs() -> Iterator[list[str]]:
    """The JSON log lines the app writes while the block runs (attach after the app configured logging)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("taskdeck")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def events(lines: list[str], name: str) -> list[dict[str, Any]]:
    return [entry for entry in map(json.loads, lines) if entry.get("event") == name]
