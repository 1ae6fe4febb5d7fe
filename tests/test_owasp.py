"""OWASP API Security Top 10 (2023): one class per item that applies, each sweeping every documented operation.

The operations come from the app's own OpenAPI document (tests/support.py), so a route added later is
attacked by every sweep without touching this file. Items left out, and why: API6 (sensitive business
flows: sign-up and sign-in are rate limited, tests/test_ratelimit.py) and API10 (unsafe consumption of
other APIs: a malformed or unreachable JWKS is refused, never trusted, tests/security/test_better_auth.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from sqlalchemy import delete, text, update
from sqlmodel import col
from starlette.routing import compile_path

from backend.middleware import API_CSP, DOCS_CSP
from backend.models.user import User
from tests.conftest import ENDING_STREAMS, PASSWORD, UserCtx, make_user
from tests.security.better_auth_kit import JwksServer, Key, claims, hs256_token, make_key, sign
from tests.support import Operation, documented_operations, owned_resources

OPERATIONS = documented_operations()
SECURED = [op for op in OPERATIONS if op.secured]
PUBLIC = {
    "POST /api/auth/register",
    "POST /api/auth/login",
    "POST /api/auth/token",
    "POST /api/auth/refresh",
    "GET /health",
    "GET /health/live",
    "GET /metrics",  # operations: open unless METRICS_TOKEN is set (tests/test_metrics.py checks the token)
}
HIDDEN_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}  # the docs themselves
DEFAULT = object()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def send(
    client: httpx.AsyncClient,
    op: Operation,
    user_id: str,
    ids: dict[str, int],
    headers: dict[str, str] | None = None,
    body: Any = DEFAULT,
) -> httpx.Response:
    """`op` on `user_id`'s path naming `ids`, with its documented example body and required query."""
    return await client.request(
        op.method,
        op.url(user_id, ids),
        params=op.example_query(),
        json=op.example_body() if body is DEFAULT else body,
        headers=headers or {},
    )


def mismatch(op: Operation, response: httpx.Response, status: int, *codes: str) -> str | None:
    """None when the response is the error envelope with this status and one of these codes."""
    try:
        body = response.json()
        ok = response.status_code == status and body["success"] is False and body["error"]["code"] in codes
    except (ValueError, KeyError, TypeError):
        ok = False
    return None if ok else f"{op}: {response.status_code} {response.text[:160]}"


def failures(found: list[str | None]) -> list[str]:
    return [item for item in found if item]


async def snapshot(client: httpx.AsyncClient, user: UserCtx) -> Any:
    """Everything `user` owns, as the API shows it to them."""
    tasks = await client.get(f"/api/{user.id}/tasks", headers=user.headers)
    projects = await client.get(f"/api/{user.id}/projects", headers=user.headers)
    return tasks.json()["data"], projects.json()["data"]


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {alg: make_key(alg) for alg in ("RS256", "EdDSA")}


@pytest.fixture(scope="module")
def jwks(keys: dict[str, Key]) -> Iterator[JwksServer]:
    server = JwksServer()
    server.publish(*keys.values())
    yield server
    server.close()


@pytest.fixture
def settings_overrides(jwks: JwksServer) -> dict[str, Any]:
    """Better-Auth verification on (a real JWKS server), so its forgeries meet the real verifier; the sweeps read
    the event stream to its end."""
    return {"BETTER_AUTH_URL": jwks.url, **ENDING_STREAMS}


class TestAPI1ObjectLevelAuthorization:
    async def test_another_users_path_is_403_and_changes_nothing(self, client, user, other_user):
        victim = await owned_resources(client, other_user, "victim")
        before = await snapshot(client, other_user)
        owned = [op for op in SECURED if "user_id" in op.path_params]
        assert len(owned) >= 10, owned
        found = [
            mismatch(op, await send(client, op, path_user, victim, user.headers), 403, "FORBIDDEN")
            for op in owned
            for path_user in (other_user.id, "nobody-at-all")
        ]
        assert failures(found) == []
        assert await snapshot(client, other_user) == before

    async def test_another_users_ids_are_404_and_change_nothing(self, client, user, other_user):
        victim = await owned_resources(client, other_user, "victim")
        await owned_resources(client, user, "attacker")
        before = await snapshot(client, other_user)
        with_ids = [op for op in SECURED if op.id_params]
        assert len(with_ids) >= 10, with_ids
        found = []
        for op in with_ids:
            response = await send(client, op, user.id, victim, user.headers)
            found.append(mismatch(op, response, 404, "NOT_FOUND"))
            found.append(f"{op}: leaks the victim's data" if "victim" in response.text else None)
        assert failures(found) == []
        assert await snapshot(client, other_user) == before


def own_token(app: FastAPI, user: UserCtx, **changes: Any) -> str:
    """The user's own access token with claims changed (None removes one), signed with the real key."""
    payload = jwt.decode(user.access_token, options={"verify_signature": False}) | changes
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(payload, app.state.settings.jwt_secret, algorithm="HS256")


def own_claims(user: UserCtx) -> dict[str, Any]:
    return dict(jwt.decode(user.access_token, options={"verify_signature": False}))


async def set_user(app: FastAPI, user_id: str, *, deleted: bool = False) -> None:
    async with app.state.sessionmaker() as session:
        where = col(User.id) == user_id
        await session.exec(delete(User).where(where) if deleted else update(User).where(where).values(is_active=False))
        await session.commit()


Forgery = Callable[[FastAPI, httpx.AsyncClient, UserCtx, dict[str, Key]], Awaitable[str]]


async def _alg_none(app, client, user, keys):
    return jwt.encode(own_claims(user), None, algorithm="none")


async def _wrong_key(app, client, user, keys):
    return jwt.encode(own_claims(user), "not-the-key-" * 4, algorithm="HS256")


async def _hs256_keyed_with_the_rsa_public_key(app, client, user, keys):
    pem = (
        keys["RS256"]
        .private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return hs256_token(pem, claims(app.state.settings.better_auth_issuer, sub=user.id), keys["RS256"].kid)


async def _impostor_key_with_a_published_kid(app, client, user, keys):
    impostor = make_key("RS256", kid=keys["RS256"].kid)
    return sign(impostor, claims(app.state.settings.better_auth_issuer, sub=user.id))


async def _expired(app, client, user, keys):
    return own_token(app, user, exp=int(time.time()) - 3600)


async def _better_auth_expired(app, client, user, keys):
    return sign(keys["EdDSA"], claims(app.state.settings.better_auth_issuer, sub=user.id, lifetime=-3600))


async def _not_yet_valid(app, client, user, keys):
    return own_token(app, user, nbf=int(time.time()) + 3600)


async def _better_auth_not_yet_valid(app, client, user, keys):
    issuer = app.state.settings.better_auth_issuer
    return sign(keys["EdDSA"], claims(issuer, sub=user.id, nbf=int(time.time()) + 3600))


async def _missing_exp(app, client, user, keys):
    return own_token(app, user, exp=None)


async def _better_auth_missing_exp(app, client, user, keys):
    return sign(keys["EdDSA"], claims(app.state.settings.better_auth_issuer, sub=user.id, exp=...))


async def _unknown_sub(app, client, user, keys):
    return own_token(app, user, sub="no-such-user")


async def _revoked_session(app, client, user, keys):
    assert (await client.post("/api/auth/logout", headers=user.headers)).status_code == 200
    return user.access_token


async def _deleted_user(app, client, user, keys):
    await set_user(app, user.id, deleted=True)
    return user.access_token


async def _garbage(app, client, user, keys):
    return "not-a-jwt"


FORGERIES: dict[str, Forgery] = {
    "alg none": _alg_none,
    "wrong key": _wrong_key,
    "HS256 keyed with the published RSA key": _hs256_keyed_with_the_rsa_public_key,
    "impostor key, published kid": _impostor_key_with_a_published_kid,
    "expired": _expired,
    "Better-Auth expired": _better_auth_expired,
    "future nbf": _not_yet_valid,
    "Better-Auth future nbf": _better_auth_not_yet_valid,
    "missing exp": _missing_exp,
    "Better-Auth missing exp": _better_auth_missing_exp,
    "unknown sub": _unknown_sub,
    "revoked session": _revoked_session,
    "deleted user": _deleted_user,
    "garbage": _garbage,
}


class TestAPI2BrokenAuthentication:
    @pytest.mark.parametrize("forgery", FORGERIES)
    async def test_forged_token_is_401_on_every_protected_operation(self, app, client, user, keys, forgery):
        ids = await owned_resources(client, user, "own")
        token = await FORGERIES[forgery](app, client, user, keys)
        found = []
        for op in SECURED:
            response = await send(client, op, user.id, ids, bearer(token))
            found.append(mismatch(op, response, 401, "INVALID_TOKEN", "TOKEN_EXPIRED"))
            found.append(None if response.headers.get("www-authenticate") == "Bearer" else f"{op}: no challenge")
        assert failures(found) == []

    async def test_disabled_user_is_403_on_every_protected_operation(self, app, client, user):
        ids = await owned_resources(client, user, "own")
        await set_user(app, user.id)
        found = [
            mismatch(op, await send(client, op, user.id, ids, user.headers), 403, "ACCOUNT_DISABLED") for op in SECURED
        ]
        assert failures(found) == []

    async def test_the_genuine_token_works(self, client, user):
        """The control for the catalogue above: the same sweep with the real token is not refused."""
        ids = await owned_resources(client, user, "own")
        last = sorted(SECURED, key=lambda op: op.path == "/api/auth/logout")  # logout ends the session: last
        refused = [op for op in last if (await send(client, op, user.id, ids, user.headers)).status_code in (401, 403)]
        assert refused == []


MASS_ASSIGNMENT = {
    "id": 1,
    "user_id": "someone-else",
    "created_at": "2020-01-01T00:00:00Z",
    "updated_at": "2020-01-01T00:00:00Z",
    "completed_at": "2020-01-01T00:00:00Z",
    "pinned_at": "2020-01-01T00:00:00Z",
    "last_updated": "2020-01-01T00:00:00Z",
    "last_synced_at": "2020-01-01T00:00:00Z",
    "is_active": False,
    "repo_metadata": {"stargazers_count": 1_000_000},
    "hashed_password": "$2b$12$forged",
    "auth_provider": "better-auth",
}
SECRET_KEYS = {"hashed_password", "password", "token_hash", "jwt_secret", "secret"}


def json_keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from json_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_keys(item)


class TestAPI3BrokenObjectPropertyLevelAuthorization:
    async def test_server_owned_fields_in_any_body_are_422(self, client, user):
        ids = await owned_resources(client, user, "own")
        with_body = [op for op in OPERATIONS if op.body_schema() is not None]
        assert len(with_body) >= 10, with_body
        found = []
        for op in with_body:
            for field, value in MASS_ASSIGNMENT.items():
                response = await send(client, op, user.id, ids, user.headers, body={**op.example_body(), field: value})
                problem = mismatch(op, response, 422, "VALIDATION_ERROR")
                if problem is None and field not in {d["field"] for d in response.json()["error"]["details"]}:
                    problem = f"{op}: {field} not named in {response.text[:160]}"
                found.append(f"{field}: {problem}" if problem else None)
        assert failures(found) == []

    async def test_no_response_carries_a_secret(self, app, client):
        """Every documented operation, once, as a signed-in user (successes and errors alike)."""
        user = await make_user(client)
        ids = await owned_resources(client, user, "own")
        responses = [await client.post("/api/auth/login", json={"email": user.email, "password": "wrong-password"})]
        for op in OPERATIONS:
            if op.path not in ("/api/auth/logout", "/api/auth/refresh"):
                responses.append(await send(client, op, user.id, ids, user.headers))
        refreshed = await client.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
        responses += [
            refreshed,
            await client.post("/api/auth/logout", headers=bearer(refreshed.json()["data"]["access_token"])),
        ]
        secrets = ["$2b$", PASSWORD, app.state.settings.jwt_secret]
        secrets += [
            hashlib.sha256(token.encode()).hexdigest()
            for token in (user.refresh_token, refreshed.json()["data"]["refresh_token"])
        ]
        found = []
        for response in responses:
            where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
            if response.headers.get("content-type", "").startswith("application/json"):
                found += [f"{where}: {key}" for key in json_keys(response.json()) if key in SECRET_KEYS]
            found += [f"{where}: leaks a secret" for secret in secrets if secret in response.text]
        assert len(responses) == len(OPERATIONS) + 1
        assert found == []


def too_big(schema: dict[str, Any]) -> Any:
    """A value one step past the schema's bound, or None when it has none."""
    if "anyOf" in schema:
        return next((value for value in map(too_big, schema["anyOf"]) if value is not None), None)
    if "maxLength" in schema:
        return "x" * (schema["maxLength"] + 1)
    if "maximum" in schema:
        return int(schema["maximum"]) + 1
    if "maxItems" in schema:
        return [1] * (schema["maxItems"] + 1)
    return None


class TestAPI4UnrestrictedResourceConsumption:
    async def test_bodies_over_1_mib_are_413(self, client, user):
        ids = await owned_resources(client, user, "own")
        body = b'{"title": "' + b"x" * (1024 * 1024) + b'"}'
        with_body = [op for op in OPERATIONS if op.spec.get("requestBody")]
        found = []
        for op in with_body:
            headers = {**user.headers, "Content-Type": "application/json"}
            response = await client.request(op.method, op.url(user.id, ids), content=body, headers=headers)
            found.append(mismatch(op, response, 413, "PAYLOAD_TOO_LARGE"))
        assert failures(found) == []

    async def test_every_bounded_query_parameter_refuses_one_past_its_bound(self, client, user):
        ids = await owned_resources(client, user, "own")
        found, checked = [], set()
        for op in SECURED:
            for param in op.query_params:
                value = too_big(param["schema"])
                if value is None:
                    continue
                checked.add(f"{op} {param['name']}")
                url = op.url(user.id, ids)
                params = {**op.example_query(), param["name"]: value}
                # With a valid body where the operation takes one (`PUT .../projects/order` takes `limit` too).
                body = op.example_body()
                response = await client.request(op.method, url, params=params, json=body, headers=user.headers)
                found.append(mismatch(op, response, 422, "VALIDATION_ERROR"))
        assert "GET /api/{user_id}/tasks limit" in checked  # limit=101
        assert failures(found) == []

    async def test_every_bounded_body_field_refuses_one_past_its_bound(self, client, user):
        ids = await owned_resources(client, user, "own")
        found, checked = [], set()
        for op in OPERATIONS:
            schema = op.body_schema()
            for name, prop in (schema or {}).get("properties", {}).items():
                value = too_big(prop)
                if value is None:
                    continue
                checked.add(f"{op} {name}")
                body = {**op.example_body(), name: value}
                response = await send(client, op, user.id, ids, user.headers, body=body)
                # The contract names its own code for a batch of more than 100 commands.
                code = (
                    "BATCH_TOO_LARGE" if f"{op} {name}" == "POST /api/{user_id}/batch commands" else "VALIDATION_ERROR"
                )
                found.append(mismatch(op, response, 422, code))
        assert {
            "POST /api/{user_id}/tasks description",
            "PUT /api/{user_id}/projects/order project_ids",
            "POST /api/{user_id}/batch commands",
        } <= checked
        assert failures(found) == []

    @pytest.mark.parametrize(
        "settings_overrides", [{"RATE_LIMIT_ENABLED": True, "REDIS_URL": None, "RATE_LIMIT_DEFAULT": "10/minute"}]
    )
    async def test_a_burst_is_rate_limited(self, client, user):
        responses = [await client.get(f"/api/{user.id}/tasks", headers=user.headers) for _ in range(10)]
        refused = [r for r in responses if r.status_code == 429]
        assert refused, [r.status_code for r in responses]
        assert mismatch(SECURED[0], refused[0], 429, "RATE_LIMITED") is None
        assert int(refused[0].headers["Retry-After"]) >= 1

    @pytest.mark.committing  # concurrent requests: one connection cannot serve them
    async def test_the_pin_limit_holds_on_every_pin_route(self, client, user):
        # Ten at a time: fifty at once queue for the user's row lock past the pool timeout on a loaded machine.
        for first in range(0, 50, 10):
            pins = await asyncio.gather(
                *(
                    client.post(f"/api/{user.id}/projects", json={"github_repo_name": f"o/r{i}"}, headers=user.headers)
                    for i in range(first, first + 10)
                )
            )
            assert [r.status_code for r in pins] == [201] * 10, [r.text for r in pins if r.status_code != 201]
        for path in (f"/api/{user.id}/projects", "/api/projects/pin"):
            response = await client.post(path, json={"github_repo_name": "o/one-too-many"}, headers=user.headers)
            assert mismatch(SECURED[0], response, 409, "PIN_LIMIT_REACHED") is None, response.text
        listing = await client.get(f"/api/{user.id}/projects", headers=user.headers)
        assert listing.json()["meta"]["total"] == 50


class TestAPI5BrokenFunctionLevelAuthorization:
    def test_only_sign_in_and_health_are_public(self):
        assert {str(op) for op in OPERATIONS if not op.secured} == PUBLIC

    def test_no_administrative_functions(self):
        segments = {segment for op in OPERATIONS for segment in op.path.strip("/").split("/")}
        # (`/metrics` is the documented operations endpoint, guarded by METRICS_TOKEN, not a user function.)
        assert not segments & {"admin", "internal", "debug", "users", "config", "sessions"}

    async def test_protected_operations_refuse_anonymous_callers(self, client, user):
        ids = await owned_resources(client, user, "own")
        found = [mismatch(op, await send(client, op, user.id, ids), 401, "NOT_AUTHENTICATED") for op in SECURED]
        assert failures(found) == []

    async def test_undeclared_methods_are_405_with_allow(self, client, user):
        ids = await owned_resources(client, user, "own")
        # Of the templates matching a URL, the path is the most specific one's: literal segments 1, parameters 0,
        # compared left to right (`/tasks/search` is not a `/tasks/{task_id}`, `/api/tasks` not an `/api/{user_id}`).
        templates = [
            (compile_path(op.path)[0], tuple(int(not s.startswith("{")) for s in op.path.split("/")), op.method)
            for op in OPERATIONS
        ]
        found, checked = [], 0
        for path in {op.path for op in OPERATIONS}:
            url = next(op for op in OPERATIONS if op.path == path).url(user.id, ids)
            matching = [(key, method) for regex, key, method in templates if regex.match(url)]
            allowed = {method for key, method in matching if key == max(key for key, _ in matching)}
            for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - allowed:
                checked += 1
                response = await client.request(method, url, headers=user.headers)
                found.append(mismatch(Operation(method, path, {}), response, 405, "METHOD_NOT_ALLOWED"))
                if response.headers.get("allow") != ", ".join(sorted(allowed)):
                    found.append(f"{method} {path}: Allow {response.headers.get('allow')} != {sorted(allowed)}")
        assert checked >= 50
        assert failures(found) == []


class TestAPI7ServerSideRequestForgery:
    """The server fetches only from its configured GitHub API; a client cannot point it anywhere else."""

    @pytest.mark.parametrize(
        "url",
        [
            "http://169.254.169.254/latest/meta-data",
            "https://evil.example/octo/hello",
            "https://github.com.evil.example/octo/hello",
            "https://github.com@evil.example/octo/hello",
            "file:///etc/passwd",
            "http://github.com/octo/hello",
            "https://github.com/octo/other",
        ],
    )
    async def test_repository_url_must_be_the_named_github_repository(self, client, user, url):
        response = await client.post(
            f"/api/{user.id}/projects",
            json={"github_repo_name": "octo/hello", "github_repo_url": url},
            headers=user.headers,
        )
        assert mismatch(SECURED[0], response, 422, "VALIDATION_ERROR") is None, response.text
        assert response.json()["error"]["field"] == "github_repo_url"


class TestAPI8SecurityMisconfiguration:
    async def test_security_headers_on_every_operation(self, client, user):
        ids = await owned_resources(client, user, "own")
        found = []
        for op in OPERATIONS:
            for headers in (user.headers, {}):
                response = await send(client, op, user.id, ids, headers)
                expected = {
                    "x-content-type-options": "nosniff",
                    "x-frame-options": "DENY",
                    "referrer-policy": "no-referrer",
                    "content-security-policy": API_CSP,
                }
                if op.path.startswith("/api/auth"):
                    expected["cache-control"] = "no-store"
                wrong = {name for name, value in expected.items() if response.headers.get(name) != value}
                wrong |= {name for name in ("server", "x-powered-by") if name in response.headers}
                found.append(f"{op} ({response.status_code}): {sorted(wrong)}" if wrong else None)
        assert failures(found) == []

    async def test_a_foreign_origin_gets_no_cors_grant(self, client, user):
        ids = await owned_resources(client, user, "own")
        evil = {"Origin": "https://evil.example"}
        found = []
        for op in OPERATIONS:
            response = await send(client, op, user.id, ids, {**user.headers, **evil})
            preflight = await client.options(
                op.url(user.id, ids), headers={**evil, "Access-Control-Request-Method": op.method}
            )
            for answer in (response, preflight):
                # Without Allow-Origin the browser shares nothing (Starlette's other CORS headers are inert).
                granted = "access-control-allow-origin" in answer.headers or "evil.example" in str(answer.headers)
                found.append(f"{op} ({answer.request.method}): {answer.headers}" if granted else None)
        assert failures(found) == []

    async def test_a_database_error_leaks_nothing(self, app, client):
        async def broken() -> None:
            async with app.state.sessionmaker() as session:
                await session.exec(text("SELECT secret_column FROM no_such_table_x"))

        app.add_api_route("/test/broken-sql", broken, methods=["GET"])
        response = await client.get("/test/broken-sql")
        assert response.status_code in (500, 503)
        assert response.json()["success"] is False
        for leak in ("no_such_table_x", "secret_column", "SELECT", "Traceback", "sqlalchemy", "psycopg", "sqlite"):
            assert leak not in response.text

    async def test_docs_pages_allow_no_foreign_origin(self, client):
        for path in ("/docs", "/redoc"):
            csp = (await client.get(path)).headers["content-security-policy"]
            assert csp == DOCS_CSP
            assert "http" not in csp
            assert "*" not in csp
            assert "frame-ancestors 'none'" in csp
        assert (await client.get("/openapi.json")).headers["content-security-policy"] == API_CSP

    def test_debug_is_off(self, app):
        assert app.debug is False


def as_documented(path: str) -> str:
    """A route's path as OpenAPI names it: `{name:path}` is `{name}`."""
    return re.sub(r"{(\w+):\w+}", r"{\1}", path)


class TestAPI9ImproperInventoryManagement:
    def test_every_route_is_documented(self, app):
        served = {
            f"{method} {as_documented(route.path)}"
            for route in iter_route_contexts(app.routes)
            for method in (route.methods or set()) - {"HEAD"}
            if route.path not in HIDDEN_ROUTES and not route.path.startswith("/static")
        }
        assert served == {str(op) for op in OPERATIONS}

    def test_earlier_draft_routes_are_marked_deprecated(self):
        legacy = [op for op in OPERATIONS if op.path.startswith(("/api/tasks", "/api/projects"))]
        assert len(legacy) >= 10
        assert [str(op) for op in legacy if not op.spec.get("deprecated")] == []
        assert [str(op) for op in OPERATIONS if op.spec.get("deprecated") and op not in legacy] == []

    @pytest.mark.parametrize(
        "path",
        [
            "/admin",
            "/v2/api/tasks",
            "/api/admin/users",
            "/api/v1/admin/users",
            "/api/auth/users",
            "/api/{uid}/tasks/1/share",
            "/api/{uid}/admin",
            "/.env",
            "/debug",
            "/internal/metrics",
            "/static/../../etc/passwd",
        ],
    )
    async def test_undocumented_paths_are_404(self, client, user, path):
        for method in ("GET", "POST"):
            response = await client.request(method, path.replace("{uid}", user.id), headers=user.headers)
            assert mismatch(SECURED[0], response, 404, "NOT_FOUND") is None, (method, response.text)
