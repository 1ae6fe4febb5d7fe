"""Batches (issue 19, specs/api/batch.md): `POST /api/{user_id}/batch`, through HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.conftest import assert_error
from tests.factories import authed, make_task, pin_project
from tests.support import REDIS_URL, limited


def cmd(op: str, **fields: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "op": op, **fields}


async def send(as_user, *commands: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = await as_user.post("/api/{uid}/batch", json={"commands": list(commands)})
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body["data"] if status == 200 else body


def statuses(answer: dict[str, Any]) -> list[int]:
    return [result["status"] for result in answer["results"]]


async def count_tasks(as_user) -> int:
    total: int = (await as_user.get("/api/{uid}/tasks?limit=1")).json()["meta"]["total"]
    return total


class TestOps:
    async def test_every_task_op(self, client, user):
        as_user = authed(client, user)
        first = await make_task(client, user, title="first")
        answer = await send(
            as_user,
            cmd("task.create", temp_id="t", data={"title": "new", "labels": ["x"]}),
            cmd("task.update", target="t", data={"priority": "high"}),
            cmd("task.complete", target="t"),
            cmd("task.reopen", target="t"),
            cmd("task.move", target="t", data={"after_id": None}),
            cmd("task.delete", target=first["id"]),
        )
        assert statuses(answer) == [201, 200, 200, 200, 200, 200]
        created, updated, completed, reopened, moved, deleted = (r["item"] for r in answer["results"])
        task_id = answer["temp_ids"]["t"]
        assert created["id"] == task_id
        assert created["labels"] == ["x"]
        assert created["priority"] == "medium"
        assert updated["priority"] == "high"  # each item is the row right after its own command
        assert completed["completed"] is True
        assert completed["status"] == "completed"
        assert reopened["completed"] is False
        assert reopened["status"] == "pending"
        assert moved["position"] < first["position"] < created["position"]  # first among its siblings
        assert deleted is None
        assert all(r["error"] is None for r in answer["results"])
        # The items are what the single GET answers.
        single = (await as_user.get(f"/api/{{uid}}/tasks/{task_id}")).json()["data"]
        assert single == moved
        assert (await as_user.get(f"/api/{{uid}}/tasks/{first['id']}")).status_code == 404
        listed = (await as_user.get("/api/{uid}/tasks?sort=position")).json()["data"]
        assert [task["id"] for task in listed] == [task_id]

    async def test_every_project_op(self, client, user):
        as_user = authed(client, user)
        answer = await send(
            as_user,
            cmd("project.pin", temp_id="p", data={"github_repo_name": "octo/one"}),
            cmd("project.update", target="p", data={"display_name": "One"}),
            cmd("project.unpin", target="p"),
        )
        assert statuses(answer) == [201, 200, 200]
        pinned, updated, unpinned = (r["item"] for r in answer["results"])
        assert pinned["github_repo_name"] == "octo/one"
        assert pinned["id"] == answer["temp_ids"]["p"]
        assert updated["display_name"] == "One"
        assert unpinned is None
        assert (await as_user.get(f"/api/{{uid}}/projects/{pinned['id']}")).status_code == 404

    async def test_temp_ids_as_target_parent_project_and_after(self, client, user):
        as_user = authed(client, user)
        answer = await send(
            as_user,
            cmd("project.pin", temp_id="proj", data={"github_repo_name": "octo/two"}),
            cmd("task.create", temp_id="parent", data={"title": "parent", "project_id": "proj"}),
            cmd("task.create", temp_id="a", data={"title": "a", "parent_id": "parent"}),
            cmd("task.create", temp_id="b", data={"title": "b", "parent_id": "parent"}),
            cmd("task.move", target="a", data={"after_id": "b"}),
            cmd("task.create", temp_id="loose", data={"title": "loose"}),
            cmd("task.update", target="loose", data={"parent_id": "parent"}),
        )
        assert statuses(answer) == [201, 201, 201, 201, 200, 201, 200], answer
        ids = answer["temp_ids"]
        assert set(ids) == {"proj", "parent", "a", "b", "loose"}
        items = [r["item"] for r in answer["results"]]
        assert items[1]["project_id"] == ids["proj"]
        assert items[2]["parent_id"] == ids["parent"]
        assert items[2]["project_id"] == ids["proj"]
        assert items[6]["parent_id"] == ids["parent"]
        assert items[6]["project_id"] == ids["proj"]
        children = (await as_user.get(f"/api/{{uid}}/tasks?parent_id={ids['parent']}&sort=position")).json()["data"]
        assert [task["title"] for task in children] == ["b", "a", "loose"]

    async def test_a_temp_id_of_the_wrong_kind_or_unknown(self, client, user):
        as_user = authed(client, user)
        answer = await send(
            as_user,
            cmd("project.pin", temp_id="p", data={"github_repo_name": "octo/three"}),
            cmd("task.update", target="p", data={"title": "x"}),  # a project's temp id names no task
            cmd("task.create", data={"title": "x", "parent_id": "nope"}),
            cmd("task.create", data={"title": "x", "project_id": "nope"}),
            cmd("task.create", temp_id="p", data={"title": "x"}),  # already names a row
        )
        assert statuses(answer) == [201, 404, 422, 422, 422]
        errors = [r["error"] for r in answer["results"]]
        assert errors[1]["code"] == "NOT_FOUND"
        assert errors[1]["message"] == "Task not found"
        assert [e["field"] for e in errors[2:]] == ["parent_id", "project_id", "temp_id"]
        assert await count_tasks(as_user) == 0


class TestFailures:
    async def test_a_failing_command_answers_as_its_single_route_and_the_others_apply(self, client, user):
        as_user = authed(client, user)
        task = await make_task(client, user, title="kept")
        await pin_project(client, user, "octo/dup")
        bad_bodies = {"title": "  ", "completed": True, "status": "pending", "priority": "urgent"}
        answer = await send(
            as_user,
            cmd("task.create", data={"title": "one"}),
            cmd("task.update", target=task["id"], data=bad_bodies),
            cmd("task.update", target=2_000_000_000, data={"title": "x"}),
            cmd("project.pin", data={"github_repo_name": "OCTO/dup"}),
            cmd("task.create", data={"title": "two", "id": 5}),
            cmd("task.create", data={"title": "three"}),
        )
        assert statuses(answer) == [201, 422, 404, 409, 422, 201]
        singles = [
            await as_user.patch(f"/api/{{uid}}/tasks/{task['id']}", json=bad_bodies),
            await as_user.patch("/api/{uid}/tasks/2000000000", json={"title": "x"}),
            await as_user.post("/api/{uid}/projects", json={"github_repo_name": "OCTO/dup"}),
            await as_user.post("/api/{uid}/tasks", json={"title": "two", "id": 5}),
        ]
        for result, single in zip(answer["results"][1:5], singles, strict=True):
            assert result["status"] == single.status_code
            assert result["error"] == single.json()["error"]
            assert result["item"] is None
        assert answer["results"][1]["error"]["details"]  # every failing field, as the 422 lists them
        titles = {t["title"] for t in (await as_user.get("/api/{uid}/tasks")).json()["data"]}
        assert titles == {"kept", "one", "three"}

    async def test_a_rule_failing_midway_undoes_that_command_only(self, client, user):
        """A subtask create that fails on depth after its row lock and checks: nothing of it stays."""
        as_user = authed(client, user)
        answer = await send(
            as_user,
            cmd("task.create", temp_id="l1", data={"title": "1"}),
            *[
                cmd("task.create", temp_id=f"l{n}", data={"title": str(n), "parent_id": f"l{n - 1}"})
                for n in range(2, 7)
            ],
        )
        assert statuses(answer) == [201, 201, 201, 201, 201, 422]
        assert answer["results"][5]["error"]["code"] == "TASK_DEPTH_EXCEEDED"
        assert await count_tasks(as_user) == 5

    async def test_if_version(self, client, user):
        as_user = authed(client, user)
        task = await make_task(client, user)
        project = await pin_project(client, user, "octo/four")
        await as_user.patch(f"/api/{{uid}}/tasks/{task['id']}", json={"title": "changed"})  # version 2
        answer = await send(
            as_user,
            cmd("task.update", target=task["id"], if_version=1, data={"title": "stale"}),
            cmd("task.delete", target=task["id"], if_version=1),
            cmd("task.update", target=task["id"], if_version=2, data={"title": "fresh"}),
            cmd("project.update", target=project["id"], if_version=2, data={"position": 3}),
            cmd("project.unpin", target=project["id"], if_version=1),
            cmd("task.complete", target=2_000_000_000, if_version=1),  # missing: 404 before 412
        )
        assert statuses(answer) == [412, 412, 200, 412, 200, 404]
        assert answer["results"][0]["error"]["code"] == "PRECONDITION_FAILED"
        assert answer["results"][0]["error"]["field"] == "if_version"
        assert answer["results"][2]["item"]["title"] == "fresh"
        etag = (await as_user.get(f"/api/{{uid}}/tasks/{task['id']}")).headers["ETag"]
        assert etag == f'"tasks.{task["id"]}.3"'

    async def test_another_users_ids_are_not_found(self, client, user, other_user):
        theirs = await make_task(client, other_user, title="theirs")
        project = await pin_project(client, other_user, "octo/theirs")
        answer = await send(
            authed(client, user),
            cmd("task.update", target=theirs["id"], data={"title": "mine"}),
            cmd("task.delete", target=theirs["id"]),
            cmd("task.move", target=theirs["id"], data={"after_id": None}),
            cmd("project.update", target=project["id"], data={"display_name": "mine"}),
            cmd("project.unpin", target=project["id"]),
            cmd("task.create", data={"title": "x", "parent_id": theirs["id"]}),
            cmd("task.create", data={"title": "x", "project_id": project["id"]}),
        )
        assert statuses(answer) == [404, 404, 404, 404, 404, 422, 422]
        assert [r["error"]["message"] for r in answer["results"][:5]] == ["Task not found"] * 3 + [
            "Project not found"
        ] * 2
        still = (await authed(client, other_user).get(f"/api/{{uid}}/tasks/{theirs['id']}")).json()["data"]
        assert still["title"] == "theirs"

    async def test_another_users_path_is_forbidden(self, client, user, other_user):
        response = await client.post(
            f"/api/{other_user.id}/batch",
            json={"commands": [cmd("task.create", data={"title": "x"})]},
            headers=user.headers,
        )
        assert_error(response, 403, "FORBIDDEN")
        assert await count_tasks(authed(client, other_user)) == 0

    async def test_more_than_100_commands(self, client, user):
        as_user = authed(client, user)
        commands = [cmd("task.create", data={"title": str(n)}) for n in range(101)]
        response = await as_user.post("/api/{uid}/batch", json={"commands": commands})
        error = assert_error(response, 422, "BATCH_TOO_LARGE")
        assert error["field"] == "commands"
        assert await count_tasks(as_user) == 0
        answer = await send(as_user, *commands[:100])
        assert statuses(answer) == [201] * 100

    async def test_a_malformed_command_refuses_the_whole_batch(self, client, user):
        as_user = authed(client, user)
        for commands in (
            [cmd("task.create", data={"title": "x"}), cmd("task.explode", target=1)],
            [cmd("task.create", data={"title": "x"}), {"op": "task.delete", "target": 1}],  # no id
            [cmd("task.create", data={"title": "x"}), cmd("task.complete", target=1, data={})],
            [],
        ):
            response = await as_user.post("/api/{uid}/batch", json={"commands": commands})
            assert_error(response, 422, "VALIDATION_ERROR")
        assert await count_tasks(as_user) == 0


class TestReplay:
    async def test_the_same_batch_again_applies_nothing_twice(self, client, user):
        """A client whose answer was lost (a timeout) sends the same batch again: same answer, same rows."""
        as_user = authed(client, user)
        task = await make_task(client, user, title="old")
        commands = [
            cmd("task.create", temp_id="t", data={"title": "new"}),
            cmd("task.create", data={"title": "child", "parent_id": "t"}),
            cmd("task.update", target=task["id"], data={"title": "  "}),  # fails: recorded too
            cmd("task.complete", target=task["id"]),
            cmd("project.pin", temp_id="p", data={"github_repo_name": "octo/five"}),
            cmd("task.update", target="t", data={"project_id": "p"}),
        ]
        first = await send(as_user, *commands)
        assert statuses(first) == [201, 201, 422, 200, 201, 200]
        before = await count_tasks(as_user)
        etag = (await as_user.get(f"/api/{{uid}}/tasks/{task['id']}")).headers["ETag"]
        again = await send(as_user, *commands)
        assert again == first
        assert await count_tasks(as_user) == before == 3
        assert (await as_user.get(f"/api/{{uid}}/tasks/{task['id']}")).headers["ETag"] == etag
        assert len((await as_user.get("/api/{uid}/projects")).json()["data"]) == 1
        # A longer batch: the applied prefix is replayed, the rest applied; temp ids still resolve.
        longer = await send(as_user, *commands, cmd("task.update", target="t", data={"title": "renamed"}))
        assert longer["results"][:6] == first["results"]
        assert statuses(longer)[6] == 200
        assert longer["temp_ids"] == first["temp_ids"]

    async def test_a_failed_command_is_fixed_with_a_new_id(self, client, user):
        as_user = authed(client, user)
        bad = cmd("task.create", data={"title": ""})
        assert statuses(await send(as_user, bad)) == [422]
        assert statuses(await send(as_user, {**bad, "data": {"title": "fixed"}})) == [422]  # the id is spent
        fixed = await send(as_user, {**bad, "id": str(uuid.uuid4()), "data": {"title": "fixed"}})
        assert statuses(fixed) == [201]

    async def test_an_id_again_with_another_command(self, client, user):
        as_user = authed(client, user)
        original = cmd("task.create", data={"title": "one"})
        await send(as_user, original)
        answer = await send(as_user, {**original, "data": {"title": "two"}})
        result = answer["results"][0]
        assert result["status"] == 422
        assert result["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
        assert result["error"]["field"] == "id"
        # Within one batch, too: the second use of an id is its replay, or this error.
        twice = cmd("task.create", data={"title": "three"})
        answer = await send(as_user, twice, twice, {**twice, "data": {"title": "four"}})
        assert statuses(answer) == [201, 201, 422]
        assert answer["results"][0] == answer["results"][1]
        assert await count_tasks(as_user) == 2


@pytest.mark.committing
async def test_concurrent_retries_of_one_batch_apply_it_once(client, user):
    """The retry arrives while the first attempt still runs: one applies each command, the other replays it."""
    as_user = authed(client, user)
    commands = [cmd("task.create", temp_id=f"t{n}", data={"title": str(n)}) for n in range(20)]
    commands.append(cmd("project.pin", data={"github_repo_name": "octo/six"}))
    answers = await asyncio.gather(*(send(as_user, *commands) for _ in range(3)))
    assert answers[0] == answers[1] == answers[2]
    assert statuses(answers[0]) == [201] * 21
    assert await count_tasks(as_user) == 20


class TestRateLimit:
    @pytest.fixture(params=[REDIS_URL, None], ids=["redis", "memory"])
    def settings_overrides(self, request, prefix):
        # register and login count 2 of the 10.
        return limited(prefix, request.param, RATE_LIMIT_DEFAULT="10/minute")

    async def test_n_commands_count_n_requests(self, client, user):
        as_user = authed(client, user)
        response = await as_user.post(
            "/api/{uid}/batch", json={"commands": [cmd("task.create", data={"title": str(n)}) for n in range(5)]}
        )
        assert response.status_code == 200
        assert response.headers["RateLimit-Remaining"] == "3"  # 2 + 5 of 10
        refused = await as_user.post(
            "/api/{uid}/batch", json={"commands": [cmd("task.create", data={"title": str(n)}) for n in range(4)]}
        )
        assert_error(refused, 429, "RATE_LIMITED")  # counted once (8), 3 more do not fit: none applied
        assert int(refused.headers["Retry-After"]) >= 1
        fits = await as_user.post(
            "/api/{uid}/batch", json={"commands": [cmd("task.create", data={"title": str(n)}) for n in range(2)]}
        )
        assert fits.status_code == 200, fits.text
        assert fits.headers["RateLimit-Remaining"] == "0"
        assert (await as_user.get("/api/{uid}/tasks")).status_code == 429


@pytest.mark.committing
async def test_concurrent_batches_and_creates_of_one_user_never_deadlock(client, user):
    """Review finding: the claim's INSERT share-locked the owner's row (its foreign key) before the first command
    took it for update; two batches (or a batch and a create) then deadlocked on PostgreSQL (503)."""
    as_user = authed(client, user)
    batches = [send(as_user, cmd("task.create", data={"title": f"b{n}"})) for n in range(6)]
    creates = [as_user.post("/api/{uid}/tasks", json={"title": f"c{n}"}) for n in range(4)]
    answers = await asyncio.gather(*batches, *creates)
    assert [statuses(answer) for answer in answers[:6]] == [[201]] * 6
    assert [response.status_code for response in answers[6:]] == [201] * 4
    assert await count_tasks(as_user) == 10


async def test_a_failed_command_leaves_the_answers_cursor_on_the_feed(client, user):
    """Review finding: a command that recorded a change and then failed (rolled back to its savepoint) left the
    batch's cursor ahead of the feed: 410 for the client, or later changes skipped."""
    as_user = authed(client, user)
    project = await pin_project(client, user)
    parent = await make_task(client, user)
    await make_task(client, user, parent_id=parent["id"])
    answer = await send(
        as_user,
        cmd(
            "task.update",
            target=parent["id"],
            data={"project_id": project["id"], "completed": True, "status": "pending"},
        ),
    )
    assert statuses(answer) == [422]
    following = await as_user.get("/api/{uid}/changes", params={"cursor": answer["cursor"]})
    assert following.status_code == 200, following.text
    later = await make_task(client, user, title="after the batch")
    changes = (await as_user.get("/api/{uid}/changes", params={"cursor": answer["cursor"]})).json()["data"]
    assert [change["id"] for change in changes["changes"]] == [later["id"]]


async def test_more_than_100_commands_is_batch_too_large_even_with_a_malformed_one(client, user):
    as_user = authed(client, user)
    commands = [cmd("task.create", data={"title": str(n)}) for n in range(101)]
    commands[5] = {"id": "x", "op": "task.nope"}
    response = await as_user.post("/api/{uid}/batch", json={"commands": commands})
    assert_error(response, 422, "BATCH_TOO_LARGE")


async def test_a_batch_records_each_item_once_after_its_last_change(client, user):
    """A batch's changes are written together at its end (services/changes.defer): an item changed by several
    commands takes one seq, for its last change, and a failed command takes none; the feed after the batch
    holds each item once, in the order of their last changes, with the version of its last state."""
    as_user = authed(client, user)
    first, second = await make_task(client, user, title="first"), await make_task(client, user, title="second")
    before = (await as_user.get("/api/{uid}/changes", params={"limit": 500})).json()["data"]["cursor"]
    answer = await send(
        as_user,
        cmd("task.update", target=first["id"], data={"title": "first, once"}),
        cmd("task.update", target=second["id"], data={"title": "second, once"}),
        cmd("task.update", target=first["id"], data={"title": "first, twice"}),
        cmd("task.update", target=second["id"], data={"priority": "nonsense"}),
        cmd("task.create", temp_id="n", data={"title": "new"}),
        cmd("task.delete", target="n"),
    )
    assert statuses(answer) == [200, 200, 200, 422, 201, 200]
    assert int(answer["cursor"][1:]) == int(before[1:]) + 3  # three items: first, second, the new one
    page = (await as_user.get("/api/{uid}/changes", params={"cursor": before})).json()["data"]
    assert [(c["id"], c["op"]) for c in page["changes"]] == [
        (second["id"], "upsert"),
        (first["id"], "upsert"),
        (answer["temp_ids"]["n"], "delete"),
    ]
    second_item, first_item, gone = (c for c in page["changes"])
    assert first_item["item"]["title"] == "first, twice"
    assert first_item["version"] == first["version"] + 2 == first_item["item"]["version"]
    assert second_item["version"] == second["version"] + 1
    assert gone["item"] is None
    assert gone["version"] == 2  # created at 1; its tombstone is the version after its last
    assert page["cursor"] == answer["cursor"]
