"""Manual order (issue 18, contract §10): `position`, `POST .../tasks/{id}/move`, `sort=position`."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tests.conftest import assert_error
from tests.factories import authed, make_task, pin_project


async def ordered(as_user, query: str = "") -> list[str]:
    body = (await as_user.get(f"/api/{{uid}}/tasks?sort=position&limit=100{query}")).json()
    return [task["title"] for task in body["data"]]


async def move(as_user, task: dict, **body) -> dict:
    response = await as_user.post(f"/api/{{uid}}/tasks/{task['id']}/move", json=body)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def titled(client, user, *titles: str, **fields) -> list[dict]:
    return [await make_task(client, user, title=title, **fields) for title in titles]


class TestPositions:
    async def test_new_tasks_go_last_in_their_group(self, client, user):
        await titled(client, user, "a", "b", "c")
        assert await ordered(authed(client, user)) == ["a", "b", "c"]

    async def test_move_after_a_sibling_and_to_the_front(self, client, user):
        as_user = authed(client, user)
        a, b, c = await titled(client, user, "a", "b", "c")
        moved = await move(as_user, c, after_id=a["id"])
        assert moved["id"] == c["id"]
        assert a["position"] < moved["position"] < b["position"]
        assert await ordered(as_user) == ["a", "c", "b"]
        await move(as_user, b, after_id=None)
        assert await ordered(as_user) == ["b", "a", "c"]
        assert await ordered(as_user, "&sort=-position") == ["c", "a", "b"]

    async def test_a_move_writes_one_row(self, client, user, app):
        as_user = authed(client, user)
        tasks = await titled(client, user, *[f"t{n}" for n in range(12)])
        await move(as_user, tasks[-1], after_id=tasks[3]["id"])
        # Every other task keeps its version: only the moved row was written.
        listed = (await as_user.get("/api/{uid}/tasks?sort=position&limit=100")).json()["data"]
        etags = {t["id"]: (await as_user.get(f"/api/{{uid}}/tasks/{t['id']}")).headers["etag"] for t in listed}
        assert sum(not etag.endswith('.1"') for etag in etags.values()) == 1

    async def test_moving_under_a_new_parent_or_project(self, client, user):
        as_user = authed(client, user)
        parent, a, b = await titled(client, user, "parent", "a", "b")
        child = await make_task(client, user, title="child", parent_id=parent["id"])
        moved = await move(as_user, a, after_id=child["id"], parent_id=parent["id"])
        assert moved["parent_id"] == parent["id"]
        assert moved["position"] > child["position"]
        assert await ordered(as_user, f"&parent_id={parent['id']}") == ["child", "a"]
        project = await pin_project(client, user)
        moved = await move(as_user, b, after_id=None, project_id=project["id"])
        assert moved["project_id"] == project["id"]
        assert await ordered(as_user, f"&project_id={project['id']}") == ["b"]

    async def test_after_id_must_be_a_sibling_at_the_new_place(self, client, user, other_user):
        as_user = authed(client, user)
        parent, a = await titled(client, user, "parent", "a")
        child = await make_task(client, user, parent_id=parent["id"])
        theirs = await make_task(client, other_user)
        for after_id in (child["id"], theirs["id"], a["id"], 2_000_000_000):
            response = await as_user.post(f"/api/{{uid}}/tasks/{a['id']}/move", json={"after_id": after_id})
            assert assert_error(response, 422, "VALIDATION_ERROR")["field"] == "after_id", after_id

    async def test_the_tree_rules_apply_to_moves(self, client, user):
        as_user = authed(client, user)
        root = await make_task(client, user)
        child = await make_task(client, user, parent_id=root["id"])
        response = await as_user.post(
            f"/api/{{uid}}/tasks/{root['id']}/move", json={"after_id": None, "parent_id": child["id"]}
        )
        assert_error(response, 422, "CYCLE")

    async def test_after_id_is_required_and_unknown_fields_refused(self, client, user):
        as_user = authed(client, user)
        task = await make_task(client, user)
        url = f"/api/{{uid}}/tasks/{task['id']}/move"
        assert_error(await as_user.post(url, json={}), 422, "VALIDATION_ERROR")
        assert_error(await as_user.post(url, json={"after_id": None, "position": "a0"}), 422, "VALIDATION_ERROR")

    async def test_if_match_guards_a_move(self, client, user):
        as_user = authed(client, user)
        _a, b = await titled(client, user, "a", "b")
        url = f"/api/{{uid}}/tasks/{b['id']}/move"
        stale = (await as_user.get(f"/api/{{uid}}/tasks/{b['id']}")).headers["etag"]
        await as_user.patch(f"/api/{{uid}}/tasks/{b['id']}", json={"title": "b2"})
        assert_error(
            await as_user.post(url, json={"after_id": None}, headers={"If-Match": stale}), 412, "PRECONDITION_FAILED"
        )

    async def test_repeated_moves_to_one_spot_stay_ordered_and_keys_short(self, client, user):
        as_user = authed(client, user)
        first, _last = await titled(client, user, "first", "last")
        movers = await titled(client, user, *[f"m{n:02}" for n in range(40)])
        # Each mover goes right after `first`: keys between `first` and the previous mover keep shrinking.
        for mover in movers:
            await move(as_user, mover, after_id=first["id"])
        expected = ["first", *[m["title"] for m in reversed(movers)], "last"]
        assert await ordered(as_user) == expected
        positions = [
            t["position"] for t in (await as_user.get("/api/{uid}/tasks?sort=position&limit=100")).json()["data"]
        ]
        assert len(set(positions)) == len(positions)
        assert max(map(len, positions)) < 64

    @pytest.mark.committing  # the tie is written over a connection of its own
    async def test_tied_positions_are_renumbered_by_a_move(self, client, user, app):
        as_user = authed(client, user)
        a, _b, c = await titled(client, user, "a", "b", "c")
        # No route writes a tie; rows written by hand (or by a future merge of groups) may: make one directly.
        async with app.state.engine.begin() as conn:
            await conn.execute(text("UPDATE tasks SET position = 'a0' WHERE user_id = :u"), {"u": user.id})
        moved = await move(as_user, c, after_id=a["id"])
        assert await ordered(as_user) == ["a", "c", "b"]
        positions = [t["position"] for t in (await as_user.get("/api/{uid}/tasks?sort=position")).json()["data"]]
        assert len(set(positions)) == 3
        assert moved["position"] == positions[1]


@pytest.mark.committing  # concurrent requests, each in its own transaction
class TestConcurrency:
    async def test_concurrent_moves_never_share_a_position(self, client, user):
        as_user = authed(client, user)
        anchor = await make_task(client, user, title="anchor")
        tasks = await titled(client, user, *[f"t{n}" for n in range(10)])
        results = await asyncio.gather(
            *(as_user.post(f"/api/{{uid}}/tasks/{t['id']}/move", json={"after_id": anchor["id"]}) for t in tasks)
        )
        assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
        listed = (await as_user.get("/api/{uid}/tasks?sort=position&limit=100")).json()["data"]
        positions = [t["position"] for t in listed]
        assert len(set(positions)) == len(positions) == 11
        assert listed[0]["title"] == "anchor"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(moves=st.lists(st.tuples(st.integers(0, 5), st.integers(-1, 5)), min_size=1, max_size=12))
async def test_any_sequence_of_moves_keeps_a_strict_order(client, user, moves):
    """The list in `sort=position` order is the order a plain Python list gets from the same moves."""
    as_user = authed(client, user)
    await as_user.get("/api/{uid}/tasks")  # the owner exists for this example
    existing = (await as_user.get("/api/{uid}/tasks?limit=100")).json()["data"]
    for task in existing:
        await as_user.delete(f"/api/{{uid}}/tasks/{task['id']}")
    tasks = await titled(client, user, *[f"t{n}" for n in range(6)])
    model = [t["id"] for t in tasks]
    for moving, after in moves:
        task_id = tasks[moving]["id"]
        after_id = None if after < 0 else tasks[after]["id"]
        if after_id == task_id:
            continue
        await move(as_user, tasks[moving], after_id=after_id)
        model.remove(task_id)
        model.insert(0 if after_id is None else model.index(after_id) + 1, task_id)
    listed = (await as_user.get("/api/{uid}/tasks?sort=position&limit=100")).json()["data"]
    assert [t["id"] for t in listed] == model
    positions = [t["position"] for t in listed]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
