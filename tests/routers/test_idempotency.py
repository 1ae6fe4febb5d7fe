"""`Idempotency-Key` on creates: replay, mismatch, concurrency, release on failure, expiry; SQLite and PostgreSQL."""

import asyncio
import json
import time
import uuid
from datetime import timedelta

import pytest
from sqlmodel import select

from backend.idempotency import fingerprint
from backend.models.common import utcnow
from backend.models.idempotency import IdempotencyKey, KeyStatus
from tests.conftest import assert_error


def keyed(user, key):
    return {**user.headers, "Idempotency-Key": key}


async def count_tasks(client, user) -> int:
    return (await client.get(f"/api/{user.id}/tasks", headers=user.headers)).json()["meta"]["total"]


async def insert_key(app, user_id, key, request_hash, **fields):
    now = utcnow()
    values = {"user_id": user_id, "key": key, "request_hash": request_hash, "created_at": now}
    async with app.state.sessionmaker() as session:
        session.add(IdempotencyKey.model_validate(values, update={"expires_at": now + timedelta(hours=24), **fields}))
        await session.commit()


async def stored_keys(app, user_id):
    async with app.state.sessionmaker() as session:
        return (await session.exec(select(IdempotencyKey).where(IdempotencyKey.user_id == user_id))).all()


class TestReplay:
    async def test_same_key_and_body_replays_the_first_response(self, client, user):
        key = str(uuid.uuid4())
        first = await client.post(
            f"/api/{user.id}/tasks", json={"title": "Pay rent", "priority": "high"}, headers=keyed(user, key)
        )
        assert first.status_code == 201
        assert "idempotent-replayed" not in first.headers
        # Same JSON, other key order and spacing: the same request.
        body = json.dumps({"priority": "high", "title": "Pay rent"}, indent=2)
        headers = {**keyed(user, key), "Content-Type": "application/json"}
        again = await client.post(f"/api/{user.id}/tasks", content=body, headers=headers)
        assert again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        assert again.headers["etag"] == first.headers["etag"]
        assert await count_tasks(client, user) == 1

    async def test_pins_are_idempotent_too_and_on_earlier_draft_routes(self, client, user):
        body = {"github_repo_name": "octo/repo"}
        first = await client.post(f"/api/{user.id}/projects", json=body, headers=keyed(user, "pin-1"))
        again = await client.post(f"/api/{user.id}/projects", json=body, headers=keyed(user, "pin-1"))
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["data"]["id"] == first.json()["data"]["id"]
        legacy = [await client.post("/api/tasks", json={"title": "x"}, headers=keyed(user, "legacy")) for _ in range(2)]
        assert [r.status_code for r in legacy] == [201, 201]
        assert legacy[1].json() == legacy[0].json()
        assert await count_tasks(client, user) == 1

    async def test_keys_belong_to_one_user(self, client, user, other_user):
        for owner in (user, other_user):
            created = await client.post(f"/api/{owner.id}/tasks", json={"title": "x"}, headers=keyed(owner, "shared"))
            assert created.status_code == 201
            assert "idempotent-replayed" not in created.headers
            assert created.json()["data"]["user_id"] == owner.id

    async def test_without_a_key_every_request_creates(self, client, user):
        for _ in range(2):
            assert (await client.post(f"/api/{user.id}/tasks", json={"title": "x"}, headers=user.headers)).status_code
        assert await count_tasks(client, user) == 2


class TestMismatch:
    async def test_same_key_other_body_is_422(self, client, user):
        url = f"/api/{user.id}/tasks"
        assert (await client.post(url, json={"title": "one"}, headers=keyed(user, "k"))).status_code == 201
        error = assert_error(
            await client.post(url, json={"title": "two"}, headers=keyed(user, "k")), 422, "IDEMPOTENCY_KEY_REUSED"
        )
        assert error["field"] == "Idempotency-Key"
        pin = await client.post(f"/api/{user.id}/projects", json={"github_repo_name": "a/b"}, headers=keyed(user, "k"))
        assert_error(pin, 422, "IDEMPOTENCY_KEY_REUSED")
        assert await count_tasks(client, user) == 1

    @pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
    async def test_malformed_key_is_a_validation_error(self, client, user, key):
        response = await client.post(f"/api/{user.id}/tasks", json={"title": "x"}, headers=keyed(user, key))
        error = assert_error(response, 422, "VALIDATION_ERROR")
        assert error["field"] == "Idempotency-Key"
        assert await count_tasks(client, user) == 0


class TestFailures:
    async def test_an_invalid_body_does_not_take_the_key(self, app, client, user):
        url = f"/api/{user.id}/tasks"
        assert_error(await client.post(url, json={"title": ""}, headers=keyed(user, "k")), 422, "VALIDATION_ERROR")
        assert await stored_keys(app, user.id) == []
        assert (await client.post(url, json={"title": "ok"}, headers=keyed(user, "k"))).status_code == 201

    async def test_a_failed_create_releases_the_key_so_a_retry_runs(self, client, user):
        body = {"github_repo_name": "octo/repo"}
        url = f"/api/{user.id}/projects"
        pinned = await client.post(url, json=body, headers=user.headers)
        refused = await client.post(url, json=body, headers=keyed(user, "retry-me"))
        assert_error(refused, 409, "PROJECT_ALREADY_PINNED")
        await client.delete(f"{url}/{pinned.json()['data']['id']}", headers=user.headers)
        retried = await client.post(url, json=body, headers=keyed(user, "retry-me"))
        assert retried.status_code == 201
        assert "idempotent-replayed" not in retried.headers


class TestConcurrency:
    @pytest.mark.committing  # concurrent requests: one connection cannot serve them
    async def test_concurrent_requests_with_one_key_execute_once(self, client, user):
        url = f"/api/{user.id}/tasks"
        responses = await asyncio.gather(
            *(client.post(url, json={"title": "once"}, headers=keyed(user, "race")) for _ in range(6))
        )
        assert [r.status_code for r in responses] == [201] * 6, [r.text for r in responses]
        assert sum("idempotent-replayed" not in r.headers for r in responses) == 1
        assert len({r.json()["data"]["id"] for r in responses}) == 1
        assert await count_tasks(client, user) == 1

    @pytest.mark.parametrize("settings_overrides", [{"IDEMPOTENCY_WAIT_SECONDS": 0.3}])
    async def test_a_request_still_in_progress_is_409_after_the_wait(self, app, client, user):
        body = {"title": "slow"}
        digest = fingerprint("POST", "/api/{user_id}/tasks", {"user_id": user.id}, json.dumps(body).encode())
        await insert_key(app, user.id, "busy", digest)
        started = time.monotonic()
        busy = await client.post(f"/api/{user.id}/tasks", json=body, headers=keyed(user, "busy"))
        assert_error(busy, 409, "CONFLICT")
        assert busy.headers["retry-after"] == "1"
        assert time.monotonic() - started >= 0.3
        assert await count_tasks(client, user) == 0

    async def test_a_stale_in_progress_key_is_taken_over(self, app, client, user):
        body = {"title": "orphaned"}
        digest = fingerprint("POST", "/api/{user_id}/tasks", {"user_id": user.id}, json.dumps(body).encode())
        await insert_key(app, user.id, "orphan", digest, created_at=utcnow() - timedelta(minutes=10))
        taken = await client.post(f"/api/{user.id}/tasks", json=body, headers=keyed(user, "orphan"))
        assert taken.status_code == 201
        [row] = await stored_keys(app, user.id)
        assert row.status == KeyStatus.DONE
        assert json.loads(row.response_body)["data"]["title"] == "orphaned"


class TestExpiry:
    async def test_an_expired_key_is_free_and_expired_keys_are_purged(self, app, client, user, other_user):
        past = {"expires_at": utcnow() - timedelta(seconds=1), "status": KeyStatus.DONE}
        await insert_key(app, user.id, "old", "0" * 64, **past)
        await insert_key(app, other_user.id, "forgotten", "0" * 64, **past)
        fresh = await client.post(f"/api/{user.id}/tasks", json={"title": "new"}, headers=keyed(user, "old"))
        assert fresh.status_code == 201
        assert "idempotent-replayed" not in fresh.headers
        assert await stored_keys(app, other_user.id) == []
        [row] = await stored_keys(app, user.id)
        assert row.expires_at - utcnow() > timedelta(hours=23)


async def test_openapi_documents_the_header(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/api/{user_id}/tasks", "/api/{user_id}/projects", "/api/tasks"):
        params = paths[path]["post"]["parameters"]
        assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in params), path
    assert not any(p["name"] == "Idempotency-Key" for p in paths["/api/{user_id}/tasks"]["get"]["parameters"])
