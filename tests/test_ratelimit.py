"""Rate limits against the machine's real Redis (db 15, a key prefix per test, deleted afterwards)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import select

from backend.deps import OwnerDep
from backend.main import create_app
from backend.middleware import resolve_client_ip
from backend.models.session import AuthSession
from backend.ratelimit import by_user, ip_key, masked, rate_limit
from tests.conftest import PASSWORD, REDIS_URL, assert_error, make_settings, make_user
from tests.support import (
    RedisServer,
    captured_logs,
    client_for,
    events,
    free_port,
    limited,
    redis_keys,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def limits() -> dict[str, Any]:
    """Override (parametrize indirectly or redefine) to set a test's limits."""
    return {}


@pytest.fixture
def settings_overrides(prefix: str, limits: dict[str, Any]) -> dict[str, Any]:
    return limited(prefix, **limits)


def add_ok_route(app: FastAPI) -> None:
    async def ok() -> dict[str, Any]:
        return {"success": True, "data": None}

    app.add_api_route("/test/ok", ok, methods=["GET"])


def login_body(email: str, password: str = "wrong-password-1") -> dict[str, str]:
    return {"email": email, "password": password}


class TestDefaultPolicy:
    @pytest.mark.parametrize("limits", [{"RATE_LIMIT_DEFAULT": "3/minute"}])
    async def test_counts_every_route_per_ip_with_headers(self, app: FastAPI, prefix: str) -> None:
        async with client_for(app, "198.51.100.7") as http:
            remaining = []
            for path in ("/nope", "/api/auth/me", "/nope/again"):  # 404, 401, 404: all count
                response = await http.get(path)
                assert response.headers["RateLimit-Limit"] == "3"
                remaining.append(response.headers["RateLimit-Remaining"])
            assert remaining == ["2", "1", "0"]
            refused = await http.get("/nope")
            assert_error(refused, 429, "RATE_LIMITED")
            assert 1 <= int(refused.headers["Retry-After"]) <= 60
            assert refused.headers["RateLimit-Remaining"] == "0"
            assert refused.headers["RateLimit-Reset"] == refused.headers["Retry-After"]
            for exempt in ("/health", "/health/live", "/openapi.json"):
                response = await http.get(exempt)
                assert response.status_code == 200, exempt
                assert "RateLimit-Limit" not in response.headers
        async with client_for(app, "198.51.100.8") as other:
            assert (await other.get("/nope")).status_code == 404
        # One window per address, none per path: 2 keys for 2 addresses after 5 limited requests.
        assert len(redis_keys(prefix)) == 2

    @pytest.mark.parametrize("limits", [{"RATE_LIMIT_DEFAULT": "2/minute"}])
    async def test_retry_after_is_correct_to_the_second(self, app: FastAPI) -> None:
        async with client_for(app, "198.51.100.9") as http:
            before_first = time.time()
            first = await http.get("/nope")
            after_first = time.time()
            assert first.headers["RateLimit-Reset"] == "60"
            await asyncio.sleep(2.2)
            await http.get("/nope")
            before_refusal = time.time()
            refused = await http.get("/nope")
            after_refusal = time.time()
        assert_error(refused, 429, "RATE_LIMITED")
        # The first hit leaves the window 60 s after it was made: not a fresh 60 s from the refusal.
        earliest = math.ceil(before_first + 60 - after_refusal)
        latest = math.ceil(after_first + 60 - before_refusal)
        assert earliest <= int(refused.headers["Retry-After"]) <= latest
        assert int(refused.headers["Retry-After"]) <= 58

    @pytest.mark.parametrize("limits", [{"RATE_LIMIT_DEFAULT": "2/minute"}])
    async def test_refusal_is_logged_with_masked_identity(self, app: FastAPI) -> None:
        async with client_for(app, "198.51.100.10") as http:
            with captured_logs() as lines:
                for _ in range(3):
                    await http.get("/api/auth/me")
        (event,) = events(lines, "rate_limited")
        assert event["policy"] == "default"
        assert event["route"] == "/api/auth/me"  # refused before routing, yet named by its route
        assert event["identity"] == "198.51.100.0/24"
        assert "198.51.100.10" not in json.dumps(event)

    @pytest.mark.parametrize("limits", [{"RATE_LIMIT_DEFAULT": "1/minute"}])
    async def test_refusals_are_logged_with_the_route_they_were_aimed_at(self, app: FastAPI) -> None:
        """The default policy answers before routing, yet its 429s carry the route template in the access
        log and the security event (the route table is matched, nothing dispatched); a path no route takes
        stays `<unmatched>`, its security event naming the path."""
        async with client_for(app, "198.51.100.11") as http:
            assert (await http.get("/health/live")).status_code == 200  # exempt: not counted
            assert (await http.get("/nope")).status_code == 404  # the one allowed request
            with captured_logs() as lines:
                sent = [
                    ("GET", "/api/u-1234/tasks/42"),
                    ("PUT", "/api/u-1234/projects/7"),
                    ("POST", "/api/u-1234/tasks/42"),  # no such method: the path's route all the same (405)
                    ("GET", "/api/auth/me"),
                    ("GET", "/no/such/route"),
                ]
                for method, path in sent:
                    assert (await http.request(method, path)).status_code == 429
        access = [(e["method"], e["route"], e["status"]) for e in events(lines, "http_request")]
        assert access == [
            ("GET", "/api/{user_id}/tasks/{task_id}", 429),
            ("PUT", "/api/{user_id}/projects/{project_id}", 429),
            ("POST", "/api/{user_id}/tasks/{task_id}", 429),
            ("GET", "/api/auth/me", 429),
            ("GET", "<unmatched>", 429),
        ]
        refusals = events(lines, "rate_limited")
        assert [e.get("route") for e in refusals] == [route for _, route, _ in access[:4]] + [None]
        assert refusals[-1]["path"] == "/no/such/route"
        assert "u-1234" not in json.dumps(refusals)


class TestIdentity:
    @pytest.mark.parametrize("limits", [{"RATE_LIMIT_DEFAULT": "2/minute"}])
    async def test_spoofed_forwarded_for_from_untrusted_peer_is_ignored(self, app: FastAPI) -> None:
        async with client_for(app, "198.51.100.20") as http:
            statuses = [
                (await http.get("/nope", headers={"X-Forwarded-For": f"203.0.113.{n}"})).status_code for n in range(4)
            ]
        assert statuses == [404, 404, 429, 429]

    @pytest.mark.parametrize("limits", [{"RATE_LIMIT_DEFAULT": "2/minute", "TRUSTED_PROXIES": "10.0.0.0/8"}])
    async def test_forwarded_for_from_trusted_proxy_is_honoured(self, app: FastAPI) -> None:
        async with client_for(app, "10.1.2.3") as proxy_a, client_for(app, "10.200.0.1") as proxy_b:
            # The right-most untrusted hop is the client; a spoofed left part and trusted hops are skipped.
            chain = {"X-Forwarded-For": "1.1.1.1, 203.0.113.5, 10.9.9.9"}
            assert (await proxy_a.get("/nope", headers=chain)).status_code == 404
            assert (await proxy_b.get("/nope", headers={"X-Forwarded-For": "9.9.9.9,203.0.113.5"})).status_code == 404
            assert_error(await proxy_a.get("/nope", headers={"X-Forwarded-For": "203.0.113.5"}), 429, "RATE_LIMITED")
            # Another client behind the same proxy has its own window.
            assert (await proxy_a.get("/nope", headers={"X-Forwarded-For": "203.0.113.6"})).status_code == 404

    @pytest.mark.parametrize("limits", [{"TRUSTED_PROXIES": "10.0.0.0/8"}])
    async def test_session_records_the_same_client_address(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        found = await make_user(client)
        async with client_for(app, "10.0.0.9") as proxy:
            response = await proxy.post(
                "/api/auth/login",
                json=login_body(found.email, PASSWORD),
                headers={"X-Forwarded-For": "203.0.113.77"},
            )
        assert response.status_code == 200, response.text
        async with app.state.sessionmaker() as session:
            ips = (await session.exec(select(AuthSession.ip_address).where(AuthSession.user_id == found.id))).all()
        assert "203.0.113.77" in ips

    @pytest.mark.parametrize(
        ("peer", "forwarded", "expected"),
        [
            ("198.51.100.1", ["203.0.113.1"], "198.51.100.1"),  # untrusted peer: header ignored
            ("10.0.0.1", [], "10.0.0.1"),  # trusted peer, no header: the proxy itself
            ("10.0.0.1", ["203.0.113.1, 10.0.0.2"], "203.0.113.1"),
            ("10.0.0.1", ["6.6.6.6", "203.0.113.1"], "203.0.113.1"),  # repeated headers read as one list
            ("10.0.0.1", ["not-an-ip, 10.0.0.2"], "10.0.0.2"),  # garbage: stop at the last trusted hop
            ("10.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3"),  # all trusted: the left-most
            ("::ffff:10.0.0.1", ["2001:db8::1"], "2001:db8::1"),  # IPv4-mapped peer is the IPv4 proxy
            ("unknown", ["203.0.113.1"], "unknown"),
        ],
    )
    def test_resolve_client_ip(self, peer: str, forwarded: list[str], expected: str) -> None:
        settings = make_settings("sqlite://", Path("."), TRUSTED_PROXIES="10.0.0.0/8")
        assert resolve_client_ip(peer, forwarded, settings.trusted_networks) == expected

    def test_ipv6_clients_share_their_64_and_logs_mask_addresses(self) -> None:
        assert ip_key("2001:db8:1:2:aaaa::1") == ip_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
        assert masked("2001:db8:1:2::/64") == "2001:db8:1::/48"
        assert masked("ada@example.com") == "a***@example.com"
        assert masked("user_123") == "user_123"

    def test_bad_trusted_proxy_is_a_config_error(self) -> None:
        from backend.config import ConfigError

        with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
            make_settings("sqlite://", Path("."), TRUSTED_PROXIES="10.0.0.0/8,proxy.local")


class TestLoginAndRegister:
    @pytest.mark.parametrize("limits", [{"RATE_LIMIT_LOGIN": "3/hour"}])
    async def test_per_email_limit_holds_across_ips(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        target = await make_user(client)  # that login is the first attempt of the hour
        for n, email in enumerate([target.email.upper(), f"  {target.email}"]):
            async with client_for(app, f"203.0.113.{n + 1}") as http:
                assert_error(await http.post("/api/auth/login", json=login_body(email)), 401, "INVALID_CREDENTIALS")
        async with client_for(app, "203.0.113.50") as http:
            with captured_logs() as lines:
                right = await http.post("/api/auth/login", json=login_body(target.email, PASSWORD))
                form = await http.post("/api/auth/token", data={"username": target.email, "password": PASSWORD})
            assert_error(right, 429, "RATE_LIMITED")
            assert right.headers["RateLimit-Limit"] == "3"
            assert form.status_code == 429  # the OAuth2 form route shares the per-email window
            # Another account from the same address is not locked out.
            other = await http.post("/api/auth/login", json=login_body("someone-else@example.com"))
            assert_error(other, 401, "INVALID_CREDENTIALS")
        lockouts = events(lines, "login_lockout")
        assert len(lockouts) == 2
        assert lockouts[0]["email"] == target.email[0] + "***@example.com"
        assert {e["policy"] for e in events(lines, "rate_limited")} == {"login"}

    @pytest.mark.parametrize("limits", [{"RATE_LIMIT_LOGIN_IP": "2/hour"}])
    async def test_per_ip_login_limit(self, app: FastAPI) -> None:
        async with client_for(app, "203.0.113.60") as http:
            statuses = [
                (await http.post("/api/auth/login", json=login_body(f"u{n}@example.com"))).status_code for n in range(3)
            ]
        assert statuses == [401, 401, 429]
        async with client_for(app, "203.0.113.61") as http:
            assert (await http.post("/api/auth/login", json=login_body("u0@example.com"))).status_code == 401

    @pytest.mark.parametrize("limits", [{"RATE_LIMIT_LOGIN": "5/hour", "RATE_LIMIT_LOGIN_IP": "7/hour"}])
    async def test_success_carries_the_tightest_window(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        found = await make_user(client)
        response = await client.post("/api/auth/login", json=login_body(found.email, PASSWORD))
        assert response.status_code == 200
        assert response.headers["RateLimit-Limit"] == "5"
        assert response.headers["RateLimit-Remaining"] == "3"

    @pytest.mark.parametrize("limits", [{"RATE_LIMIT_REGISTER": "2/hour"}])
    async def test_register_limit_per_ip(self, app: FastAPI) -> None:
        async with client_for(app, "203.0.113.70") as http:
            statuses = [
                (await http.post("/api/auth/register", json=login_body(f"r{n}@example.com", PASSWORD))).status_code
                for n in range(3)
            ]
        assert statuses == [201, 201, 429]
        async with client_for(app, "203.0.113.71") as http:
            again = await http.post("/api/auth/register", json=login_body("r9@example.com", PASSWORD))
            assert again.status_code == 201


class TestPerUserPolicy:
    @pytest.mark.parametrize("limits", [{"RATE_LIMIT_SYNC": "2/hour"}])
    async def test_sync_policy_counts_per_user_and_route_template(
        self, app: FastAPI, client: httpx.AsyncClient, prefix: str
    ) -> None:
        async def start_sync(owner: OwnerDep, project_id: int) -> dict[str, Any]:
            return {"success": True, "data": {"owner": owner, "project_id": project_id}}

        template = "/api/{user_id}/test-sync/{project_id}"
        limit = rate_limit("sync", key=by_user, per_route=True)
        app.add_api_route(template, start_sync, methods=["POST"], dependencies=[limit])
        alice, bob = await make_user(client), await make_user(client)

        assert_error(await client.post(f"/api/{alice.id}/test-sync/1"), 401, "NOT_AUTHENTICATED")
        assert (await client.post(f"/api/{alice.id}/test-sync/1", headers=alice.headers)).status_code == 200
        assert (await client.post(f"/api/{alice.id}/test-sync/2", headers=alice.headers)).status_code == 200
        async with client_for(app, "203.0.113.80") as elsewhere:
            refused = await elsewhere.post(f"/api/{alice.id}/test-sync/3", headers=alice.headers)
        assert_error(refused, 429, "RATE_LIMITED")
        assert (await client.post(f"/api/{bob.id}/test-sync/1", headers=bob.headers)).status_code == 200

        sync_keys = [key for key in redis_keys(prefix) if "/sync/" in key]
        assert len(sync_keys) == 2  # one per user, whatever the project id
        assert all(template in key for key in sync_keys)


class TestSwitches:
    @pytest.mark.parametrize("limits", [{"RATE_LIMIT_ENABLED": False, "RATE_LIMIT_DEFAULT": "1/minute"}])
    async def test_disabled_limits_nothing(self, client: httpx.AsyncClient, prefix: str) -> None:
        responses = [await client.get("/nope") for _ in range(3)]
        assert [r.status_code for r in responses] == [404, 404, 404]
        assert all("RateLimit-Limit" not in r.headers for r in responses)
        assert (await client.get("/health")).json()["data"]["redis"] == "disabled"
        assert redis_keys(prefix) == []

    @pytest.mark.parametrize("limits", [{"REDIS_URL": None, "RATE_LIMIT_DEFAULT": "2/minute"}])
    async def test_in_process_store_without_redis(self, client: httpx.AsyncClient, prefix: str) -> None:
        statuses = [(await client.get("/nope")).status_code for _ in range(3)]
        assert statuses == [404, 404, 429]
        assert (await client.get("/health")).json()["data"]["redis"] == "disabled"
        assert redis_keys(prefix) == []


async def test_redis_outage_fails_open_and_limits_resume(
    database_url: str, data_dir: Path, own_redis: RedisServer, prefix: str
) -> None:
    # A short breaker back-off, so the test sees limits come back; the warning must still come once.
    overrides = limited(prefix, own_redis.url, RATE_LIMIT_DEFAULT="3/minute", REDIS_BREAKER_OPEN_SECONDS=0.5)
    app = create_app(make_settings(database_url, data_dir, **overrides))
    add_ok_route(app)
    async with app.router.lifespan_context(app), client_for(app) as http:
        assert [(await http.get("/test/ok")).status_code for _ in range(4)] == [200, 200, 200, 429]
        assert (await http.get("/health")).json()["data"]["redis"] == "ok"

        own_redis.kill()
        with captured_logs() as lines:
            during = [await http.get("/test/ok") for _ in range(10)]
            health = await http.get("/health")
        assert [r.status_code for r in during] == [200] * 10
        assert all("RateLimit-Limit" not in r.headers for r in during)
        assert health.status_code == 200
        assert (health.json()["data"]["status"], health.json()["data"]["redis"]) == ("ok", "down")
        (warning,) = events(lines, "ratelimit_store_down")
        assert warning["level"] == "warning"
        assert warning["error_type"] == "ConnectionError"

        assert app.state.redis.state == "open"  # the requests stopped trying Redis

        # Same port, empty memory and script cache: the Lua scripts are loaded again by themselves.
        own_redis.start()
        wait_until(lambda: app.state.redis.state == "half_open")  # the back-off is over: the next call probes
        with captured_logs() as lines:
            after = [(await http.get("/test/ok")).status_code for _ in range(4)]
        assert after == [200, 200, 200, 429]
        assert len(events(lines, "ratelimit_store_up")) == 1
        assert (await http.get("/health")).json()["data"]["redis"] == "ok"


async def test_outage_skips_redis_between_retries(database_url: str, data_dir: Path, prefix: str) -> None:
    """Redis unreachable from the start: the API starts, serves quickly without limits, and warns once."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(make_settings(database_url, data_dir, **limited(prefix, dead, RATE_LIMIT_DEFAULT="3/minute")))
    add_ok_route(app)
    with captured_logs() as lines:
        async with app.router.lifespan_context(app), client_for(app) as http:
            assert len(events(lines, "ratelimit_store_down")) == 1  # reported at start-up
            started = time.perf_counter()
            statuses = [(await http.get("/test/ok")).status_code for _ in range(20)]
            elapsed = time.perf_counter() - started
    assert statuses == [200] * 20
    assert app.state.redis.state == "open"  # Redis is skipped, not retried by every request
    assert elapsed < 5.0  # generous for a loaded machine: a refused connection is quick anyway
    assert len(events(lines, "ratelimit_store_down")) == 1


def test_limit_is_shared_by_two_processes(tmp_path: Path, prefix: str) -> None:
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
        "DATA_DIR": str(tmp_path),
        "JWT_SECRET": "x" * 48,
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_DEFAULT": "5/minute",
        "AUTO_MIGRATE": "false",
        "LOG_LEVEL": "warning",
    }
    subprocess.run([sys.executable, "-m", "backend", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
    ports = [free_port(), free_port()]
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        for port in ports:
            wait_until(lambda port=port: httpx.get(f"http://127.0.0.1:{port}/health/live").status_code == 200)
        statuses = []
        for n in range(12):
            port = ports[n % 2]
            # uvicorn must not take the client address from this header: 127.0.0.1 is no trusted proxy here.
            spoof = {"X-Forwarded-For": f"203.0.113.{n}"}
            statuses.append(httpx.get(f"http://127.0.0.1:{port}/nope", headers=spoof).status_code)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)
    assert statuses.count(404) == 5
    assert statuses.count(429) == 7
    assert statuses[:5] == [404] * 5


async def test_a_limited_request_costs_one_redis_call(
    database_url: str, data_dir: Path, own_redis: RedisServer, prefix: str
) -> None:
    """The hit and the window's stats (for the RateLimit-* headers) are one script call: one round trip, counted
    by the Redis server itself (INFO commandstats). Two calls per request before (issue #16)."""
    import redis as redis_sync

    overrides = limited(prefix, own_redis.url, RATE_LIMIT_DEFAULT="3/minute")
    app = create_app(make_settings(database_url, data_dir, **overrides))
    add_ok_route(app)
    with redis_sync.Redis.from_url(own_redis.url) as server:
        async with app.router.lifespan_context(app), client_for(app) as http:
            await http.get("/test/ok")  # loads the script (SCRIPT LOAD / EVAL on first use)
            server.config_resetstat()
            answers = [await http.get("/test/ok") for _ in range(3)]
            stats = server.info("commandstats")
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.headers["RateLimit-Remaining"] for a in answers] == ["1", "0", "0"]
    calls = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
    assert calls.pop("evalsha") == 3, calls  # the commands a script runs are counted too: only these
    assert set(calls) <= {"config|resetstat", "config", "lindex", "lpush", "ltrim", "expire"}, calls
