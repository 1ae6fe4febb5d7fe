"""Write throughput with Redis hung: `python -m tests.perf.redis_hang` (figures in specs/operations.md).

Starts a private redis-server and a real `python -m backend serve` (SQLite, rate limits and events on
that Redis), then creates tasks one after another with httpx for `--seconds`: first with Redis
answering, then with it stopped by SIGSTOP. Prints requests per second and the slowest request of each
phase. Never touches the machine's shared Redis.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx

from tests.live_server import live_server
from tests.support import RedisServer


def creates(base_url: str, headers: dict[str, str], path: str, seconds: float) -> tuple[int, float, set[int]]:
    """Sequential creates for `seconds`: (count, slowest request in seconds, statuses)."""
    done, slowest, statuses = 0, 0.0, set()
    with httpx.Client(base_url=base_url, timeout=30) as http:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = http.post(path, json={"title": f"t{done}"}, headers=headers)
            slowest = max(slowest, time.monotonic() - started)
            statuses.add(response.status_code)
            done += 1
    return done, slowest, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per phase")
    args = parser.parse_args()
    redis = RedisServer()
    redis.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                "REDIS_URL": redis.url,
                "RATE_LIMIT_ENABLED": "true",
                "RATE_LIMIT_DEFAULT": "100000/minute",
                "JWT_SECRET": "x" * 48,
                "ENVIRONMENT": "test",
            }
            with live_server(Path(tmp), **env) as base_url:
                body = {"email": "bench@example.com", "password": "Sturdy-Lantern-42"}  # pragma: allowlist secret
                assert httpx.post(f"{base_url}/api/auth/register", json=body).status_code == 201
                tokens = httpx.post(f"{base_url}/api/auth/login", json=body).json()["data"]
                headers = {"Authorization": f"Bearer {tokens['access_token']}"}
                path = f"/api/{tokens['user_id']}/tasks"
                for phase in ("redis up", "redis SIGSTOPped"):
                    if phase == "redis SIGSTOPped":
                        redis.pause()
                    count, slowest, statuses = creates(base_url, headers, path, args.seconds)
                    rate = count / args.seconds
                    print(
                        f"{phase}: {count} creates in {args.seconds:.0f} s = {rate:.1f} req/s, "
                        f"slowest {slowest:.2f} s, statuses {sorted(statuses)}"
                    )
    finally:
        redis.resume()
        redis.kill()


if __name__ == "__main__":
    main()
