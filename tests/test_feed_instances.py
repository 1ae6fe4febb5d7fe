"""The change feed under writers on two server processes (PostgreSQL): a reader paging the feed the whole time,
from either instance, ends with exactly the server's state (issue 19: no change is ever skipped)."""

from __future__ import annotations

import asyncio
import random
import secrets
from typing import Any

import httpx
import pytest

from tests.factories import PASSWORD
from tests.support import postgresql_only as postgresql_only  # the module's database_url fixture
from tests.test_leases import cleanup as cleanup  # empties the database afterwards
from tests.test_leases import instances

pytestmark = pytest.mark.committing  # two server processes on one database

WRITERS = 4
MUTATIONS = 60  # per writer: 240 in all, on both instances


async def account(http: httpx.AsyncClient, base: str) -> tuple[str, dict[str, str]]:
    body = {"email": f"feed-{secrets.token_hex(4)}@example.com", "password": PASSWORD}
    assert (await http.post(f"{base}/api/auth/register", json=body)).status_code == 201
    tokens = (await http.post(f"{base}/api/auth/login", json=body)).json()["data"]
    return tokens["user_id"], {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_a_paging_reader_ends_with_exactly_the_servers_state(database_url, tmp_path, cleanup):
    with instances(database_url, tmp_path, "a", "b", JWT_SECRET=secrets.token_urlsafe(48)) as servers:
        bases = [server.base for server in servers]
        async with httpx.AsyncClient(timeout=120) as http:
            user_id, headers = await account(http, bases[0])

            async def call(n: int, method: str, path: str, **kwargs: Any) -> httpx.Response:
                return await http.request(method, f"{bases[n % 2]}/api/{user_id}{path}", headers=headers, **kwargs)

            async def writer(number: int) -> None:
                chance, mine = random.Random(number), []
                for step in range(MUTATIONS):
                    roll = chance.random()
                    if not mine or roll < 0.35:
                        response = await call(step + number, "POST", "/tasks", json={"title": f"w{number}s{step}"})
                        assert response.status_code == 201, response.text
                        mine.append(response.json()["data"]["id"])
                        continue
                    task_id = chance.choice(mine)
                    if roll < 0.6:
                        body = {"title": f"w{number}s{step} renamed", "labels": [f"l{step % 3}"]}
                        response = await call(step, "PATCH", f"/tasks/{task_id}", json=body)
                    elif roll < 0.8:
                        response = await call(step, "PATCH", f"/tasks/{task_id}/complete")
                    else:
                        response = await call(step, "DELETE", f"/tasks/{task_id}")
                        mine.remove(task_id)
                    assert response.status_code == 200, response.text

            state: dict[int, dict[str, Any] | None] = {}
            cursor: str | None = None
            pages = 0

            async def page() -> bool:
                nonlocal cursor, pages
                params = {"limit": 7} | ({"cursor": cursor} if cursor else {})
                response = await call(pages, "GET", "/changes", params=params)
                assert response.status_code == 200, response.text
                data = response.json()["data"]
                for change in data["changes"]:
                    if change["type"] == "task":
                        state[change["id"]] = change["item"] if change["op"] == "upsert" else None
                cursor, pages = data["cursor"], pages + 1
                return bool(data["has_more"])

            writing = asyncio.gather(*(writer(number) for number in range(WRITERS)))
            while not writing.done():
                await page()
            await writing
            while await page():
                pass

            server: dict[int, dict[str, Any]] = {}
            offset = 0
            while True:
                body = (await call(0, "GET", "/tasks", params={"limit": 100, "offset": offset})).json()
                server.update({task["id"]: task for task in body["data"]})
                offset += 100
                if offset >= body["meta"]["total"]:
                    break
    assert pages > 10  # the reader paged while the writers wrote
    assert {task_id: item for task_id, item in state.items() if item is not None} == server
