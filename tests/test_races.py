"""Races on PostgreSQL, round after round: concurrent requests that must serialise.

Also raced elsewhere, on both backends: concurrent registrations of one email (tests/services/test_auth.py),
the 50-pin limit under 20 concurrent pins for 10 rounds and one repository pinned 12 times at once
(tests/routers/test_projects.py), and the first requests of a new Better-Auth user creating exactly one
account (tests/security/test_better_auth.py::TestJustInTimeUsers).
"""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
import psycopg
import pytest

from tests.conftest import UserCtx, assert_error, make_user
from tests.support import postgresql_only as postgresql_only  # the module's database_url fixture

pytestmark = pytest.mark.committing  # races between concurrent requests, read back over connections of their own

ROUNDS = 10


async def scalar(conninfo: str, query: str, *params: Any) -> Any:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        row = await (await conn.execute(query, params)).fetchone()
        return row[0] if row else None


async def login(client, user: UserCtx) -> dict[str, Any]:
    response = await client.post("/api/auth/login", json={"email": user.email, "password": user.password})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


class TestRefreshRace:
    async def test_one_refresh_token_is_traded_once(self, client, user, database_url):
        """2 to 5 concurrent refreshes with one token: exactly one new pair; reuse is detected and ends the session."""
        for round_number in range(ROUNDS):
            tokens = await login(client, user)
            body = {"refresh_token": tokens["refresh_token"]}
            responses = await asyncio.gather(
                *(client.post("/api/auth/refresh", json=body) for _ in range(2 + round_number % 4))
            )
            winners = [r for r in responses if r.status_code == 200]
            assert len(winners) == 1, (round_number, [r.status_code for r in responses])
            # The first loser sees the reuse and ends the session; one that reads after it finds the session over.
            codes = [assert_error(r, 401, r.json()["error"]["code"])["code"] for r in responses if r is not winners[0]]
            assert "REFRESH_TOKEN_REUSED" in codes
            assert set(codes) <= {"REFRESH_TOKEN_REUSED", "INVALID_TOKEN"}, codes
            sid = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"]
            assert await scalar(database_url, "SELECT count(*) FROM refresh_tokens WHERE session_id = %s", sid) == 2
            assert await scalar(database_url, "SELECT revoked_at IS NOT NULL FROM sessions WHERE id = %s", sid)
            won = {"refresh_token": winners[0].json()["data"]["refresh_token"]}
            assert (await client.post("/api/auth/refresh", json=won)).status_code == 401


class TestPinRace:
    async def test_pin_unpin_and_repin_of_one_repository_keep_one_row(self, client, user, database_url):
        """Per round, a new repository: 8 racing first pins (in any case), then 4 unpins racing 4 re-pins."""
        url = f"/api/{user.id}/projects"
        for round_number in range(ROUNDS):
            names = [f"octo/race{round_number}", f"OCTO/Race{round_number}", f"Octo/RACE{round_number}"]
            first = await asyncio.gather(
                *(client.post(url, json={"github_repo_name": names[i % 3]}, headers=user.headers) for i in range(8))
            )
            assert sorted(r.status_code for r in first) == [201] + [409] * 7, round_number
            assert {r.json()["error"]["code"] for r in first if r.status_code == 409} == {"PROJECT_ALREADY_PINNED"}
            [project_id] = [r.json()["data"]["id"] for r in first if r.status_code == 201]

            calls = [client.delete(f"{url}/{project_id}", headers=user.headers) for _ in range(4)]
            calls += [client.post(url, json={"github_repo_name": names[i % 3]}, headers=user.headers) for i in range(4)]
            responses = await asyncio.gather(*calls)
            for response in responses:
                expected = {200, 404} if response.request.method == "DELETE" else {201, 409}
                assert response.status_code in expected, (round_number, response.text)
            # A re-pin brings the one row back: never a second row for the name, whatever the case.
            assert {r.json()["data"]["id"] for r in responses if r.status_code == 201} <= {project_id}
            rows = await scalar(
                database_url,
                "SELECT count(*) FROM pinned_projects WHERE user_id = %s AND lower(github_repo_name) = %s",
                user.id,
                names[0],
            )
            assert rows == 1, round_number
            active = await scalar(database_url, "SELECT is_active FROM pinned_projects WHERE id = %s", project_id)
            listed = [p["id"] for p in (await client.get(url, headers=user.headers)).json()["data"]]
            assert (project_id in listed) == active


class TestCompletionRace:
    @pytest.mark.parametrize("path", ["/api/{uid}/tasks/{tid}", "/api/tasks/{tid}"])
    async def test_completes_and_updates_never_disagree_or_get_lost(self, client, database_url, path):
        user = await make_user(client)
        for round_number in range(ROUNDS):
            created = await client.post(f"/api/{user.id}/tasks", json={"title": "race"}, headers=user.headers)
            task_id = created.json()["data"]["id"]
            url = path.format(uid=user.id, tid=task_id)
            complete = f"/api/{user.id}/tasks/{task_id}/complete"
            bodies = [{"status": "in_progress"}, {"status": "completed"}, {"completed": False}, {"status": "pending"}]
            calls = [client.patch(complete, json={"completed": i % 2 == 0}, headers=user.headers) for i in range(6)]
            calls += [client.patch(url, json=body, headers=user.headers) for body in bodies]
            calls.append(client.put(url, json={"title": f"renamed {round_number}"}, headers=user.headers))
            responses = await asyncio.gather(*calls)
            assert [r.status_code for r in responses] == [200] * len(calls), [r.text for r in responses]
            for response in responses:
                task = response.json()["data"]
                assert task["completed"] == (task["status"] == "completed"), task
            inconsistent = await scalar(
                database_url,
                "SELECT count(*) FROM tasks WHERE user_id = %s"
                " AND (completed <> (status = 'completed') OR completed <> (completed_at IS NOT NULL))",
                user.id,
            )
            assert inconsistent == 0, round_number
            title = await scalar(database_url, "SELECT title FROM tasks WHERE id = %s", task_id)
            assert title == f"renamed {round_number}"  # the rename was not lost to a concurrent write
