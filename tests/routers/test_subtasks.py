"""Subtasks (issue 18, contract §10): parent_id, depth, cycles, cascades, include=subtasks, filters."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from backend.envelope import TaskTreeEnvelope
from tests.conftest import assert_error
from tests.factories import authed, make_task, pin_project


async def create(client, user, **fields):
    """POST a task, whatever the answer."""
    return await authed(client, user).post("/api/{uid}/tasks", json={"title": "A task", **fields})


async def chain(client, user, length: int, **fields) -> list[dict]:
    """`length` tasks, each the subtask of the one before."""
    tasks = [await make_task(client, user, title="level 1", **fields)]
    for level in range(2, length + 1):
        tasks.append(await make_task(client, user, title=f"level {level}", parent_id=tasks[-1]["id"]))
    return tasks


class TestParent:
    async def test_every_task_answers_the_new_fields(self, client, user):
        task = await make_task(client, user)
        assert task["parent_id"] is None
        assert task["due_timezone"] is None
        assert task["recurrence"] is None
        assert isinstance(task["position"], str)
        assert task["position"]
        child = await make_task(client, user, parent_id=task["id"])
        assert child["parent_id"] == task["id"]

    async def test_five_levels_and_not_six(self, client, user):
        tasks = await chain(client, user, 5)
        assert [t["parent_id"] for t in tasks[1:]] == [t["id"] for t in tasks[:-1]]
        error = assert_error(await create(client, user, parent_id=tasks[-1]["id"]), 422, "TASK_DEPTH_EXCEEDED")
        assert error["field"] == "parent_id"

    async def test_a_parent_of_another_user_or_missing_is_422(self, client, user, other_user):
        theirs = await make_task(client, other_user)
        for parent_id in (theirs["id"], 2_000_000_000):
            error = assert_error(await create(client, user, parent_id=parent_id), 422, "VALIDATION_ERROR")
            assert error["field"] == "parent_id"

    async def test_a_subtask_takes_its_parents_project(self, client, user):
        project = await pin_project(client, user)
        parent = await make_task(client, user, project_id=project["id"])
        child = await make_task(client, user, parent_id=parent["id"])
        assert child["project_id"] == project["id"]
        other = await pin_project(client, user, repo="octo/other")
        response = await create(client, user, parent_id=parent["id"], project_id=other["id"])
        assert assert_error(response, 422, "VALIDATION_ERROR")["field"] == "project_id"
        # A subtask's own project cannot be changed apart from its parent's.
        response = await authed(client, user).patch(
            f"/api/{{uid}}/tasks/{child['id']}", json={"project_id": other["id"]}
        )
        assert assert_error(response, 422, "VALIDATION_ERROR")["field"] == "project_id"

    async def test_moving_a_root_to_another_project_takes_its_subtree_along(self, client, user):
        as_user = authed(client, user)
        project = await pin_project(client, user)
        root, child, grandchild = await chain(client, user, 3)
        moved = await as_user.patch(f"/api/{{uid}}/tasks/{root['id']}", json={"project_id": project["id"]})
        assert moved.status_code == 200, moved.text
        for task in (child, grandchild):
            read = (await as_user.get(f"/api/{{uid}}/tasks/{task['id']}")).json()["data"]
            assert read["project_id"] == project["id"]

    async def test_reparenting_under_itself_or_a_descendant_is_a_cycle(self, client, user):
        as_user = authed(client, user)
        root, _child, grandchild = await chain(client, user, 3)
        for parent in (root, grandchild):
            response = await as_user.patch(f"/api/{{uid}}/tasks/{root['id']}", json={"parent_id": parent["id"]})
            assert assert_error(response, 422, "CYCLE")["field"] == "parent_id"
        # The tree is unchanged.
        assert (await as_user.get(f"/api/{{uid}}/tasks/{root['id']}")).json()["data"]["parent_id"] is None

    async def test_reparenting_counts_the_whole_subtree(self, client, user):
        as_user = authed(client, user)
        deep = await chain(client, user, 3)  # levels 1-3
        subtree = await chain(client, user, 3)  # a root with 2 levels below it
        # Under level 2: the subtree would reach level 5 - allowed; under level 3: level 6 - refused.
        response = await as_user.patch(f"/api/{{uid}}/tasks/{subtree[0]['id']}", json={"parent_id": deep[2]["id"]})
        assert_error(response, 422, "TASK_DEPTH_EXCEEDED")
        response = await as_user.patch(f"/api/{{uid}}/tasks/{subtree[0]['id']}", json={"parent_id": deep[1]["id"]})
        assert response.status_code == 200, response.text
        assert response.json()["data"]["parent_id"] == deep[1]["id"]
        # Back to the top level.
        response = await as_user.patch(f"/api/{{uid}}/tasks/{subtree[0]['id']}", json={"parent_id": None})
        assert response.json()["data"]["parent_id"] is None


class TestCascades:
    async def test_completing_completes_open_descendants_only(self, client, user):
        as_user = authed(client, user)
        root, child, grandchild = await chain(client, user, 3)
        sibling = await make_task(client, user, parent_id=root["id"], completed=True)
        done_at = sibling["completed_at"]
        outsider = await make_task(client, user)
        response = await as_user.patch(f"/api/{{uid}}/tasks/{root['id']}/complete")
        assert response.json()["data"]["completed"] is True
        for task in (child, grandchild):
            read = (await as_user.get(f"/api/{{uid}}/tasks/{task['id']}")).json()["data"]
            assert read["completed"] is True
            assert read["status"] == "completed"
        kept = (await as_user.get(f"/api/{{uid}}/tasks/{sibling['id']}")).json()["data"]
        assert kept["completed_at"] == done_at  # already completed: untouched
        assert (await as_user.get(f"/api/{{uid}}/tasks/{outsider['id']}")).json()["data"]["completed"] is False

    async def test_completing_by_patch_cascades_too_and_reopening_does_not(self, client, user):
        as_user = authed(client, user)
        root, child = await chain(client, user, 2)
        await as_user.patch(f"/api/{{uid}}/tasks/{root['id']}", json={"status": "completed"})
        assert (await as_user.get(f"/api/{{uid}}/tasks/{child['id']}")).json()["data"]["completed"] is True
        await as_user.patch(f"/api/{{uid}}/tasks/{root['id']}", json={"completed": False})
        assert (await as_user.get(f"/api/{{uid}}/tasks/{child['id']}")).json()["data"]["completed"] is True

    async def test_a_subtasks_etag_changes_when_the_cascade_changes_it(self, client, user):
        as_user = authed(client, user)
        root, child = await chain(client, user, 2)
        url = f"/api/{{uid}}/tasks/{child['id']}"
        before = (await as_user.get(url)).headers["etag"]
        await as_user.patch(f"/api/{{uid}}/tasks/{root['id']}/complete")
        assert (await as_user.get(url, headers={"If-None-Match": before})).status_code == 200

    async def test_deleting_deletes_the_subtree(self, client, user):
        as_user = authed(client, user)
        root, child, grandchild = await chain(client, user, 3)
        outsider = await make_task(client, user)
        assert (await as_user.delete(f"/api/{{uid}}/tasks/{child['id']}")).status_code == 200
        assert (await as_user.get(f"/api/{{uid}}/tasks/{grandchild['id']}")).status_code == 404
        assert (await as_user.get(f"/api/{{uid}}/tasks/{root['id']}")).status_code == 200
        assert (await as_user.get(f"/api/{{uid}}/tasks/{outsider['id']}")).status_code == 200


class TestReading:
    async def test_include_subtasks_nests_the_whole_subtree_in_order(self, client, user):
        as_user = authed(client, user)
        root = await make_task(client, user, title="root")
        first = await make_task(client, user, title="first", parent_id=root["id"], labels=["x"])
        second = await make_task(client, user, title="second", parent_id=root["id"])
        deep = await make_task(client, user, title="deep", parent_id=first["id"])
        response = await as_user.get(f"/api/{{uid}}/tasks/{root['id']}?include=subtasks")
        assert response.status_code == 200, response.text
        # Serialised straight from the rows: exactly what the response model would send.
        expected = TaskTreeEnvelope.model_validate(response.json()).model_dump_json().encode()
        assert response.content == expected
        tree = response.json()["data"]
        assert tree["id"] == root["id"]
        assert [t["title"] for t in tree["subtasks"]] == ["first", "second"]
        assert tree["subtasks"][0]["labels"] == ["x"]
        assert [t["id"] for t in tree["subtasks"][0]["subtasks"]] == [deep["id"]]
        assert tree["subtasks"][0]["subtasks"][0]["subtasks"] == []
        assert tree["subtasks"][1]["id"] == second["id"]
        assert tree["subtasks"][1]["subtasks"] == []
        # Without include: the task alone, no `subtasks`.
        plain = (await as_user.get(f"/api/{{uid}}/tasks/{root['id']}")).json()["data"]
        assert "subtasks" not in plain

    async def test_the_tree_statement_is_built_once(self, app, client, user):
        """Building the recursive statement (an alias of `tasks`, a CTE, a join) on every request was about a third
        of the subtree read's CPU (specs/performance.md, "Subtree and feed page"): it is one statement object, its
        owner and root bound as it runs, whichever tree is read."""
        as_user = authed(client, user)
        roots = [await make_task(client, user, title="one"), await make_task(client, user, title="two")]
        await make_task(client, user, title="under", parent_id=roots[1]["id"])
        engine = app.state.engine.sync_engine
        trees: list[Any] = []

        def seen(conn: Any, clauseelement: Any, *args: Any) -> None:
            if "subtree" in str(clauseelement):
                trees.append(clauseelement)

        event.listen(engine, "before_execute", seen)
        try:
            for root in roots:
                response = await as_user.get(f"/api/{{uid}}/tasks/{root['id']}?include=subtasks")
                assert response.status_code == 200, response.text
        finally:
            event.remove(engine, "before_execute", seen)
        assert len(trees) == 2, trees
        assert trees[0] is trees[1]

    async def test_the_trees_etag_changes_with_any_task_in_it(self, client, user):
        as_user = authed(client, user)
        root, child = await chain(client, user, 2)
        url = f"/api/{{uid}}/tasks/{root['id']}?include=subtasks"
        etag = (await as_user.get(url)).headers["etag"]
        assert (await as_user.get(url, headers={"If-None-Match": etag})).status_code == 304
        await as_user.patch(f"/api/{{uid}}/tasks/{child['id']}", json={"title": "renamed"})
        assert (await as_user.get(url, headers={"If-None-Match": etag})).status_code == 200

    async def test_include_is_owner_scoped_and_validated(self, client, user, other_user):
        theirs = await make_task(client, other_user)
        as_user = authed(client, user)
        assert_error(await as_user.get(f"/api/{{uid}}/tasks/{theirs['id']}?include=subtasks"), 404, "NOT_FOUND")
        mine = await make_task(client, user)
        assert_error(await as_user.get(f"/api/{{uid}}/tasks/{mine['id']}?include=nope"), 422, "VALIDATION_ERROR")

    @pytest.mark.parametrize(
        ("query", "expected"),
        [("root=true", ["a", "d"]), ("root=false", ["b", "c"]), ("parent_id={a}", ["b"]), ("parent_id={b}", ["c"])],
    )
    async def test_parent_and_root_filters(self, client, user, query, expected):
        a = await make_task(client, user, title="a")
        b = await make_task(client, user, title="b", parent_id=a["id"])
        await make_task(client, user, title="c", parent_id=b["id"])
        await make_task(client, user, title="d")
        url = "/api/{uid}/tasks?sort=title&" + query.format(a=a["id"], b=b["id"])
        body = (await authed(client, user).get(url)).json()
        assert [t["title"] for t in body["data"]] == expected
        assert body["meta"]["total"] == len(expected)
