"""Security events in the structured log: the right events, and never a secret in any line."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import select

from backend.deps import OwnerDep
from backend.models.user import User
from tests.conftest import PASSWORD, make_user
from tests.support import captured_logs, events

WRONG = "Wrong-Password-77"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"RATE_LIMIT_ENABLED": True, "REDIS_URL": None, "RATE_LIMIT_LOGIN": "4/hour"}


async def test_scripted_session_logs_events_without_secrets(app: FastAPI, client: httpx.AsyncClient) -> None:
    async def probe(owner: OwnerDep) -> dict[str, Any]:
        return {"success": True, "data": owner}

    app.add_api_route("/api/{user_id}/probe", probe, methods=["GET"])
    bob = await make_user(client)
    secrets: list[str] = [PASSWORD, WRONG, bob.access_token, bob.refresh_token]

    with captured_logs() as lines:
        alice_email = "alice.liddell@example.com"
        assert (await client.post("/api/auth/register", json={"email": alice_email, "password": PASSWORD})).is_success
        wrong = await client.post("/api/auth/login", json={"email": alice_email, "password": WRONG})
        unknown = await client.post("/api/auth/login", json={"email": "ghost@example.com", "password": WRONG})
        assert (wrong.status_code, unknown.status_code) == (401, 401)

        first = (await client.post("/api/auth/login", json={"email": alice_email, "password": PASSWORD})).json()["data"]
        auth = {"Authorization": f"Bearer {first['access_token']}"}
        assert (await client.get("/api/auth/me", headers=auth)).status_code == 200
        rotated = (await client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()
        assert rotated["success"], rotated
        reused = await client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert reused.json()["error"]["code"] == "REFRESH_TOKEN_REUSED"

        second = (await client.post("/api/auth/login", json={"email": alice_email, "password": PASSWORD})).json()
        auth = {"Authorization": f"Bearer {second['data']['access_token']}"}
        assert (await client.get(f"/api/{bob.id}/probe", headers=auth)).status_code == 403
        assert (await client.post("/api/auth/logout", headers=auth)).status_code == 200
        assert (await client.get("/api/auth/me", headers=auth)).status_code == 401
        assert (await client.get("/api/auth/me", headers={"Authorization": "Bearer not.a.jwt"})).status_code == 401

        statuses = [
            (await client.post("/api/auth/login", json={"email": alice_email, "password": WRONG})).status_code
            for _ in range(2)
        ]
        assert statuses == [401, 429]  # attempts 4 and 5 of the hour for this email

    async with app.state.sessionmaker() as session:
        hashes = (await session.exec(select(User.hashed_password))).all()
    secrets += [first["access_token"], first["refresh_token"], *rotated["data"].values(), *second["data"].values()]
    secrets = [s for s in secrets if isinstance(s, str) and len(s) >= 16] + [h for h in hashes if h]
    alice_id = second["data"]["user_id"]
    secrets = [s for s in secrets if s != alice_id and s != "bearer"]

    for line in lines:
        for secret in secrets:
            assert secret not in line, f"a secret reached the log: {line}"
        assert alice_email not in line
        assert "$2b$" not in line
        json.loads(line)  # every line is one JSON object

    failures = events(lines, "login_failed")
    assert {f["email"] for f in failures} == {"a***@example.com", "g***@example.com"}
    assert events(lines, "refresh_token_reused")[0]["user_id"] == alice_id
    assert events(lines, "logout")[0]["user_id"] == alice_id
    (forbidden,) = events(lines, "forbidden")
    assert (forbidden["user_id"], forbidden["route"]) == (alice_id, "/api/{user_id}/probe")
    unauthenticated = events(lines, "unauthenticated")
    assert {u["route"] for u in unauthenticated} == {"/api/auth/me"}
    assert all(u["client"] == "127.0.0.1" for u in unauthenticated)
    (lockout,) = events(lines, "login_lockout")
    assert lockout["email"] == "a***@example.com"
    (refusal,) = events(lines, "rate_limited")
    assert (refusal["policy"], refusal["route"]) == ("login", "/api/auth/login")
