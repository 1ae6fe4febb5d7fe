"""Labels (issue 18): on tasks, as filters, and `/api/{user_id}/labels` (list, rename, delete)."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import assert_error
from tests.factories import authed, make_task, pin_project


async def labels_of(as_user) -> list[dict]:
    response = await as_user.get("/api/{uid}/labels")
    assert response.status_code == 200, response.text
    return response.json()["data"]


class TestOnTasks:
    async def test_trimmed_deduplicated_in_any_case_order_kept(self, client, user):
        task = await make_task(client, user, labels=["  Work ", "home", "WORK", "urgent", "Home"])
        assert task["labels"] == ["Work", "home", "urgent"]
        as_user = authed(client, user)
        read = (await as_user.get(f"/api/{{uid}}/tasks/{task['id']}")).json()["data"]
        assert read["labels"] == ["Work", "home", "urgent"]

    async def test_the_first_spelling_is_kept_for_every_task(self, client, user):
        await make_task(client, user, labels=["Errands"])
        second = await make_task(client, user, labels=["ERRANDS", "new"])
        assert second["labels"] == ["Errands", "new"]
        assert [label["name"] for label in await labels_of(authed(client, user))] == ["Errands", "new"]

    async def test_every_task_answer_carries_labels(self, client, user):
        as_user = authed(client, user)
        plain = await make_task(client, user)
        assert plain["labels"] == []
        task = await make_task(client, user, labels=["a"])
        url = f"/api/{{uid}}/tasks/{task['id']}"
        assert (await as_user.patch(url, json={"title": "retitled"})).json()["data"]["labels"] == ["a"]
        assert (await as_user.patch(url + "/complete")).json()["data"]["labels"] == ["a"]
        assert (await as_user.put(url, json={"priority": "high"})).json()["data"]["labels"] == ["a"]
        listed = (await as_user.get("/api/{uid}/tasks?sort=created_at")).json()["data"]
        assert [t["labels"] for t in listed] == [[], ["a"]]
        found = (await as_user.get("/api/{uid}/tasks/search?q=retitled")).json()["data"]
        assert [t["labels"] for t in found] == [["a"]]

    async def test_update_replaces_the_list_and_empty_clears_it(self, client, user):
        as_user = authed(client, user)
        task = await make_task(client, user, labels=["a", "b"])
        url = f"/api/{{uid}}/tasks/{task['id']}"
        changed = await as_user.patch(url, json={"labels": ["c", "A"]})
        assert changed.status_code == 200, changed.text
        assert changed.json()["data"]["labels"] == ["c", "a"]
        assert changed.headers["etag"] != (await as_user.get(url)).headers.get("x-none", "")
        assert (await as_user.patch(url, json={"labels": []})).json()["data"]["labels"] == []
        assert (await as_user.get(url)).json()["data"]["labels"] == []

    async def test_a_label_change_is_a_new_version(self, client, user):
        as_user = authed(client, user)
        task = await make_task(client, user, labels=["a"])
        url = f"/api/{{uid}}/tasks/{task['id']}"
        before = (await as_user.get(url)).headers["etag"]
        after = (await as_user.patch(url, json={"labels": ["b"]})).headers["etag"]
        assert before != after
        assert (await as_user.get(url, headers={"If-None-Match": before})).status_code == 200

    @pytest.mark.parametrize(
        "labels",
        [
            None,
            ["x" * 61],
            [""],
            ["   "],
            ["a\x00b"],
            [f"l{n}" for n in range(21)],
            "a,b",
            [1],
        ],
    )
    async def test_invalid_labels_are_422_on_the_field(self, client, user, labels):
        as_user = authed(client, user)
        task = await make_task(client, user)
        update = await as_user.patch(f"/api/{{uid}}/tasks/{task['id']}", json={"labels": labels})
        assert assert_error(update, 422, "VALIDATION_ERROR")["field"].split(".")[0] == "labels"
        if labels is not None:
            create = await as_user.post("/api/{uid}/tasks", json={"title": "t", "labels": labels})
            assert assert_error(create, 422, "VALIDATION_ERROR")["field"].split(".")[0] == "labels"

    async def test_limits_are_inclusive(self, client, user):
        twenty = [f"label {n}" for n in range(20)]
        assert (await make_task(client, user, labels=twenty))["labels"] == twenty
        sixty = "é" * 60
        assert (await make_task(client, user, labels=[f"  {sixty}  "]))["labels"] == [sixty]


class TestFilters:
    async def test_one_label_and_all_of_several_in_any_case(self, client, user):
        as_user = authed(client, user)
        both = await make_task(client, user, title="find both", labels=["Work", "Urgent"])
        work = await make_task(client, user, title="find work", labels=["work"])
        await make_task(client, user, title="find none")
        for path in ("/api/{uid}/tasks?", "/api/{uid}/tasks/search?q=find&"):
            one = (await as_user.get(path + "label=WORK&sort=created_at")).json()
            assert [t["id"] for t in one["data"]] == [both["id"], work["id"]]
            assert one["meta"]["total"] == 2
            two = (await as_user.get(path + "label=work&label=urgent")).json()
            assert [t["id"] for t in two["data"]] == [both["id"]]
            unknown = (await as_user.get(path + "label=nope")).json()
            assert (unknown["data"], unknown["meta"]["total"]) == ([], 0)

    async def test_another_users_labels_match_nothing(self, client, user, other_user):
        await make_task(client, other_user, labels=["shared"])
        response = await authed(client, user).get("/api/{uid}/tasks?label=shared")
        assert response.json()["data"] == []

    async def test_too_many_or_nul_filters_are_422(self, client, user):
        as_user = authed(client, user)
        many = "&".join(f"label=l{n}" for n in range(21))
        assert assert_error(await as_user.get(f"/api/{{uid}}/tasks?{many}"), 422, "VALIDATION_ERROR")
        assert assert_error(await as_user.get("/api/{uid}/tasks?label=%00"), 422, "VALIDATION_ERROR")


class TestLabelRoutes:
    async def test_list_with_counts_sorted_by_name_in_any_case_paged(self, client, user):
        as_user = authed(client, user)
        await make_task(client, user, labels=["beta", "Alpha"])
        await make_task(client, user, labels=["alpha", "gamma"])
        task = await make_task(client, user, labels=["zed"])
        await as_user.delete(f"/api/{{uid}}/tasks/{task['id']}")  # the label stays, with no task
        assert await labels_of(as_user) == [
            {"name": "Alpha", "task_count": 2},
            {"name": "beta", "task_count": 1},
            {"name": "gamma", "task_count": 1},
            {"name": "zed", "task_count": 0},
        ]
        page = (await as_user.get("/api/{uid}/labels?limit=2&offset=1")).json()
        assert [label["name"] for label in page["data"]] == ["beta", "gamma"]
        assert page["meta"] == {"total": 4, "limit": 2, "offset": 1}
        beyond = (await as_user.get("/api/{uid}/labels?offset=9")).json()
        assert (beyond["data"], beyond["meta"]["total"]) == ([], 4)

    async def test_rename_on_every_task_and_new_versions(self, client, user):
        as_user = authed(client, user)
        first = await make_task(client, user, labels=["x", "old"])
        second = await make_task(client, user, labels=["OLD"])
        etag = (await as_user.get(f"/api/{{uid}}/tasks/{first['id']}")).headers["etag"]
        renamed = await as_user.patch("/api/{uid}/labels/Old", json={"name": "  New  "})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["data"] == {"name": "New", "task_count": 2}
        assert (await as_user.get(f"/api/{{uid}}/tasks/{first['id']}")).json()["data"]["labels"] == ["x", "New"]
        assert (await as_user.get(f"/api/{{uid}}/tasks/{second['id']}")).json()["data"]["labels"] == ["New"]
        reread = await as_user.get(f"/api/{{uid}}/tasks/{first['id']}", headers={"If-None-Match": etag})
        assert reread.status_code == 200  # the task changed: its ETag too
        assert (await as_user.get("/api/{uid}/tasks?label=old")).json()["data"] == []
        # Another spelling of the same label changes its case.
        assert (await as_user.patch("/api/{uid}/labels/new", json={"name": "NEW"})).json()["data"]["name"] == "NEW"

    async def test_rename_onto_another_label_is_409_and_changes_nothing(self, client, user):
        as_user = authed(client, user)
        await make_task(client, user, labels=["a", "b"])
        assert_error(await as_user.patch("/api/{uid}/labels/a", json={"name": "B"}), 409, "CONFLICT")
        assert [label["name"] for label in await labels_of(as_user)] == ["a", "b"]

    async def test_delete_removes_it_from_every_task(self, client, user):
        as_user = authed(client, user)
        task = await make_task(client, user, labels=["keep", "drop"])
        other = await make_task(client, user, labels=["DROP"])
        deleted = await as_user.delete("/api/{uid}/labels/Drop")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["message"] == "Label deleted"
        assert (await as_user.get(f"/api/{{uid}}/tasks/{task['id']}")).json()["data"]["labels"] == ["keep"]
        assert (await as_user.get(f"/api/{{uid}}/tasks/{other['id']}")).json()["data"]["labels"] == []
        assert [label["name"] for label in await labels_of(as_user)] == ["keep"]
        assert_error(await as_user.delete("/api/{uid}/labels/drop"), 404, "NOT_FOUND")

    async def test_a_name_with_a_slash(self, client, user):
        as_user = authed(client, user)
        await make_task(client, user, labels=["a/b"])
        renamed = await as_user.patch("/api/{uid}/labels/A%2FB", json={"name": "c/d"})
        assert renamed.json()["data"] == {"name": "c/d", "task_count": 1}
        assert (await as_user.delete("/api/{uid}/labels/c/d")).status_code == 200

    async def test_unknown_is_404_and_body_checked_first(self, client, user):
        as_user = authed(client, user)
        assert_error(await as_user.patch("/api/{uid}/labels/none", json={"name": "x"}), 404, "NOT_FOUND")
        assert_error(await as_user.delete("/api/{uid}/labels/none"), 404, "NOT_FOUND")
        bad = await as_user.patch("/api/{uid}/labels/none", json={"name": "x" * 61})
        assert assert_error(bad, 422, "VALIDATION_ERROR")["field"] == "name"

    async def test_another_users_labels_are_invisible(self, client, user, other_user):
        await make_task(client, other_user, labels=["theirs"])
        as_user = authed(client, user)
        assert await labels_of(as_user) == []
        assert_error(await as_user.patch("/api/{uid}/labels/theirs", json={"name": "x"}), 404, "NOT_FOUND")
        assert_error(await as_user.delete("/api/{uid}/labels/theirs"), 404, "NOT_FOUND")
        their_path = f"/api/{other_user.id}/labels"
        assert_error(await as_user.get(their_path), 403, "FORBIDDEN")
        assert_error(await as_user.patch(their_path + "/theirs", json={"name": "x"}), 403, "FORBIDDEN")
        assert_error(await as_user.delete(their_path + "/theirs"), 403, "FORBIDDEN")
        assert [label["name"] for label in await labels_of(authed(client, other_user))] == ["theirs"]


class TestEarlierDrafts:
    async def test_the_earlier_routes_answer_the_old_task_shape(self, client, user):
        old_fields = {
            "id", "user_id", "title", "description", "status", "priority", "completed", "due_date",
            "project_id", "created_at", "updated_at", "completed_at",
        }  # fmt: skip
        as_user = authed(client, user)
        created = await as_user.post("/api/tasks", json={"title": "old client"})
        assert created.status_code == 201, created.text
        assert set(created.json()["data"]) == old_fields
        task_id = created.json()["data"]["id"]
        await as_user.patch(f"/api/{{uid}}/tasks/{task_id}", json={"labels": ["new"]})
        assert set((await as_user.get(f"/api/tasks/{task_id}")).json()["data"]) == old_fields
        assert set((await as_user.put(f"/api/tasks/{task_id}", json={"title": "t"})).json()["data"]) == old_fields
        for url in ("/api/tasks", "/api/tasks/search?q=t"):
            assert [set(task) for task in (await as_user.get(url)).json()["data"]] == [old_fields]


class TestIdempotentCreate:
    async def test_a_replayed_create_answers_the_same_labels(self, client, user):
        as_user = authed(client, user)
        body, key = {"title": "once", "labels": ["b", "A", "a"]}, {"Idempotency-Key": "labels-once"}
        first = await as_user.post("/api/{uid}/tasks", json=body, headers=key)
        assert first.status_code == 201, first.text
        assert first.json()["data"]["labels"] == ["b", "A"]
        again = await as_user.post("/api/{uid}/tasks", json=body, headers=key)
        assert again.json() == first.json()
        legacy = await as_user.post("/api/tasks", json=body, headers={"Idempotency-Key": "labels-legacy"})
        assert legacy.status_code == 201, legacy.text
        assert "labels" not in legacy.json()["data"]


class TestConditionalWrites:
    async def test_if_match_then_labels(self, client, user):
        as_user = authed(client, user)
        task = await make_task(client, user, labels=["a"])
        url = f"/api/{{uid}}/tasks/{task['id']}"
        etag = (await as_user.get(url)).headers["etag"]
        changed = await as_user.patch(url, json={"labels": ["b"]}, headers={"If-Match": etag})
        assert changed.json()["data"]["labels"] == ["b"]
        stale = await as_user.patch(url, json={"labels": ["c"]}, headers={"If-Match": etag})
        assert_error(stale, 412, "PRECONDITION_FAILED")
        assert (await as_user.get(url)).json()["data"]["labels"] == ["b"]


class TestExportsAndEvents:
    async def test_exports_carry_labels(self, client, user):
        as_user = authed(client, user)
        project = await pin_project(client, user, "octo/labels")
        await make_task(client, user, labels=["b", "a"], project_id=project["id"])
        await make_task(client, user)
        export = (await as_user.get("/api/{uid}/export")).json()
        assert [task["labels"] for task in export["tasks"]] == [["b", "a"], []]
        export = (await as_user.get(f"/api/{{uid}}/projects/{project['id']}/export")).json()
        assert [task["labels"] for task in export["tasks"]] == [["b", "a"]]


@pytest.mark.committing  # concurrent requests: one connection cannot serve them
async def test_a_rename_racing_label_writes_never_fails(client, user):
    """A rename onto a name while tasks are created with it and an existing task (under If-Match) is relabelled
    with it: each answers 200/201 or 409, never a deadlock or a unique violation (500/503)."""
    as_user = authed(client, user)
    for round_number in range(5):
        old, new = f"old{round_number}", f"new{round_number}"
        task = await make_task(client, user, labels=[old])
        url = f"/api/{{uid}}/tasks/{task['id']}"
        etag = (await as_user.get(url)).headers["etag"]
        responses = await asyncio.gather(
            as_user.patch(f"/api/{{uid}}/labels/{old}", json={"name": new}),
            as_user.patch(url, json={"labels": [new, old]}, headers={"If-Match": etag}),
            *(as_user.post("/api/{uid}/tasks", json={"title": "t", "labels": [new, old]}) for _ in range(3)),
        )
        assert responses[0].status_code in (200, 409), responses[0].text
        assert responses[1].status_code in (200, 412), responses[1].text
        assert all(r.status_code == 201 for r in responses[2:]), [r.text for r in responses[2:]]
        names = {label["name"].casefold() for label in await labels_of(as_user)}
        assert new in names
