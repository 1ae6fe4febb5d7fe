"""The change feed, `GET /api/{user_id}/changes`, through HTTP on both databases (specs/api/changes.md)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, update

from backend.models.change import Change
from backend.models.common import utcnow
from tests.conftest import assert_error
from tests.factories import authed, make_task, make_user, pin_project
from tests.support import statements_sent


async def feed(client, user, cursor: str | None = None, limit: int | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if cursor is not None:
        params["cursor"] = cursor
    if limit is not None:
        params["limit"] = limit
    response = await authed(client, user).get("/api/{uid}/changes", params=params)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def drain(client, user, cursor: str | None = None, limit: int = 500) -> tuple[list[dict[str, Any]], str]:
    """Every page until `has_more` is false: the changes in order and the last cursor."""
    seen: list[dict[str, Any]] = []
    while True:
        page = await feed(client, user, cursor, limit)
        seen += page["changes"]
        cursor = page["cursor"]
        if not page["has_more"]:
            return seen, cursor


def by_id(changes: list[dict[str, Any]], kind: str = "task") -> dict[int, dict[str, Any]]:
    return {change["id"]: change for change in changes if change["type"] == kind}


async def test_full_sync_then_incremental(client, user, other_user):
    project = await pin_project(client, user)
    first = await make_task(client, user, title="one", labels=["work"])
    second = await make_task(client, user, title="two")
    await make_task(client, other_user, title="not mine")
    changes, cursor = await drain(client, user)
    assert [(c["type"], c["id"], c["op"]) for c in changes] == [
        ("project", project["id"], "upsert"),
        ("task", first["id"], "upsert"),
        ("task", second["id"], "upsert"),
    ]
    # An upsert carries the item as its GET answers it, and the version the ETag is made from.
    got = await authed(client, user).get(f"/api/{{uid}}/tasks/{first['id']}")
    assert by_id(changes)[first["id"]]["item"] == got.json()["data"]
    assert got.headers["ETag"] == f'"tasks.{first["id"]}.{by_id(changes)[first["id"]]["version"]}"'
    assert by_id(changes, "project")[project["id"]]["item"]["version"] == project["version"] == 1
    assert (await feed(client, user, cursor))["changes"] == []

    updated = await authed(client, user).patch(f"/api/{{uid}}/tasks/{second['id']}", json={"title": "2"})
    later, cursor = await drain(client, user, cursor)
    assert [(c["id"], c["op"], c["version"], c["item"]["title"]) for c in later] == [(second["id"], "upsert", 2, "2")]
    assert updated.json()["data"]["version"] == 2
    assert (await feed(client, user, cursor)) == {"changes": [], "cursor": cursor, "has_more": False}


async def test_a_deletion_and_a_completion_differ(client, user):
    done, gone = await make_task(client, user, title="done"), await make_task(client, user, title="gone")
    _, cursor = await drain(client, user)
    api = authed(client, user)
    assert (await api.patch(f"/api/{{uid}}/tasks/{done['id']}/complete")).status_code == 200
    assert (await api.delete(f"/api/{{uid}}/tasks/{gone['id']}")).status_code == 200
    changes = by_id((await drain(client, user, cursor))[0])
    assert changes[done["id"]]["op"] == "upsert"
    assert changes[done["id"]]["item"]["completed"] is True
    assert changes[gone["id"]] | {"changed_at": None} == {
        "type": "task",
        "id": gone["id"],
        "op": "delete",
        "version": 2,
        "item": None,
        "changed_at": None,
    }
    # A full sync leaves deleted tasks out.
    assert set(by_id((await drain(client, user))[0])) == {done["id"]}


async def test_deleting_a_subtree_gives_a_tombstone_for_every_descendant(client, user):
    root = await make_task(client, user, title="root")
    child = await make_task(client, user, title="child", parent_id=root["id"])
    grandchild = await make_task(client, user, title="grandchild", parent_id=child["id"])
    keep = await make_task(client, user, title="keep")
    _, cursor = await drain(client, user)
    assert (await authed(client, user).delete(f"/api/{{uid}}/tasks/{root['id']}")).status_code == 200
    changes = (await drain(client, user, cursor))[0]
    assert sorted((c["id"], c["op"]) for c in changes) == sorted(
        (task["id"], "delete") for task in (root, child, grandchild)
    )
    assert keep["id"] not in by_id(changes)


async def test_completing_a_parent_records_its_subtasks(client, user):
    root = await make_task(client, user, title="root")
    child = await make_task(client, user, title="child", parent_id=root["id"])
    _, cursor = await drain(client, user)
    assert (await authed(client, user).patch(f"/api/{{uid}}/tasks/{root['id']}/complete")).status_code == 200
    changes = by_id((await drain(client, user, cursor))[0])
    assert changes[child["id"]]["item"]["completed"] is True
    assert changes[root["id"]]["item"]["completed"] is True


async def test_renaming_or_deleting_a_label_gives_upserts_of_its_tasks(client, user):
    tagged = await make_task(client, user, title="tagged", labels=["work", "home"])
    await make_task(client, user, title="other", labels=["home"])
    _, cursor = await drain(client, user)
    api = authed(client, user)
    assert (await api.patch("/api/{uid}/labels/work", json={"name": "Job"})).status_code == 200
    changes, cursor = await drain(client, user, cursor)
    assert [(c["id"], c["op"], c["item"]["labels"]) for c in changes] == [(tagged["id"], "upsert", ["Job", "home"])]
    assert changes[0]["version"] == tagged["version"] + 1
    assert (await api.delete("/api/{uid}/labels/Job")).status_code == 200
    changes, _ = await drain(client, user, cursor)
    assert [(c["id"], c["item"]["labels"]) for c in changes] == [(tagged["id"], ["home"])]


async def test_unpinning_is_a_delete_and_a_repin_an_upsert(client, user):
    project = await pin_project(client, user, "octo/feed")
    _, cursor = await drain(client, user)
    api = authed(client, user)
    assert (await api.delete(f"/api/{{uid}}/projects/{project['id']}")).status_code == 200
    changes, cursor = await drain(client, user, cursor)
    assert [(c["type"], c["id"], c["op"], c["item"]) for c in changes] == [("project", project["id"], "delete", None)]
    again = await pin_project(client, user, "octo/feed")
    changes, _ = await drain(client, user, cursor)
    assert [(c["id"], c["op"], c["item"]["version"]) for c in changes] == [(project["id"], "upsert", again["version"])]


async def test_earlier_drafts_routes_record_and_answer_no_version(client, user):
    _, cursor = await drain(client, user)
    created = await client.post("/api/tasks", json={"title": "old"}, headers=user.headers)
    assert created.status_code == 201
    assert "version" not in created.json()["data"]
    pinned = await client.post("/api/projects/pin", json={"github_repo_name": "octo/old"}, headers=user.headers)
    assert pinned.status_code == 201
    assert "version" not in pinned.json()["data"]
    changes = (await drain(client, user, cursor))[0]
    assert [(c["type"], c["id"]) for c in changes] == [
        ("task", created.json()["data"]["id"]),
        ("project", pinned.json()["data"]["id"]),
    ]


async def test_pages_follow_each_other(client, user):
    tasks = [await make_task(client, user, title=f"t{i}") for i in range(5)]
    first = await feed(client, user, limit=2)
    assert first["has_more"] is True
    assert [c["id"] for c in first["changes"]] == [t["id"] for t in tasks[:2]]
    second = await feed(client, user, first["cursor"], limit=2)
    third = await feed(client, user, second["cursor"], limit=2)
    assert [c["id"] for c in second["changes"] + third["changes"]] == [t["id"] for t in tasks[2:]]
    assert second["has_more"] is True
    assert third["has_more"] is False
    # A change made while paging comes on a later page (a task changed after it was read comes again).
    await authed(client, user).patch(f"/api/{{uid}}/tasks/{tasks[0]['id']}", json={"title": "again"})
    fourth = await feed(client, user, third["cursor"])
    assert [(c["id"], c["item"]["title"]) for c in fourth["changes"]] == [(tasks[0]["id"], "again")]


@pytest.mark.parametrize("cursor", ["42", "c", "c-1", "c1.1", "c2.1", "c" + "9" * 19, "x1"])
async def test_a_malformed_cursor_is_422(client, user, cursor):
    response = await authed(client, user).get("/api/{uid}/changes", params={"cursor": cursor})
    assert assert_error(response, 422, "VALIDATION_ERROR")["field"] == "cursor"


@pytest.mark.parametrize("limit", [0, 501])
async def test_limit_is_1_to_500(client, user, limit):
    response = await authed(client, user).get("/api/{uid}/changes", params={"limit": limit})
    assert_error(response, 422, "VALIDATION_ERROR")


async def test_a_cursor_ahead_of_the_feed_is_expired(client, user):
    await make_task(client, user)
    response = await authed(client, user).get("/api/{uid}/changes", params={"cursor": "c1000"})
    assert_error(response, 410, "CURSOR_EXPIRED")


async def test_a_cursor_older_than_the_retention_is_410(app, client, user):
    old, kept = await make_task(client, user, title="old"), await make_task(client, user, title="kept")
    _, stale = await drain(client, user)
    assert (await authed(client, user).delete(f"/api/{{uid}}/tasks/{old['id']}")).status_code == 200
    _, fresh = await drain(client, user)
    async with app.state.sessionmaker() as session:
        await session.exec(update(Change).values(changed_at=utcnow() - timedelta(days=31)))  # type: ignore[call-overload]
        await session.commit()
    # The tombstone after `stale` is purged: that cursor cannot be served any more; `fresh` can.
    assert_error(await authed(client, user).get("/api/{uid}/changes", params={"cursor": stale}), 410, "CURSOR_EXPIRED")
    assert (await feed(client, user, fresh))["changes"] == []
    # A full sync still works and hands out a cursor that is not expired.
    changes, cursor = await drain(client, user)
    assert [c["id"] for c in changes] == [kept["id"]]
    assert (await feed(client, user, cursor))["changes"] == []


async def test_another_users_feed_is_403(client, user, other_user):
    response = await authed(client, user).get(f"/api/{other_user.id}/changes")
    assert_error(response, 403, "FORBIDDEN")


async def test_erasure_takes_the_feed_with_the_account(client):
    gone = await make_user(client)
    await make_task(client, gone)
    response = await client.request("DELETE", f"/api/{gone.id}", json={"password": gone.password}, headers=gone.headers)
    assert response.status_code == 200, response.text
    assert (await authed(client, gone).get("/api/{uid}/changes")).status_code == 401


@pytest.mark.committing
async def test_changes_committed_while_paging_are_never_skipped(client, user):
    """Writers commit while a reader pages with small pages: once the writers are done and the reader drained
    the feed, it has every task's latest version (nothing committed behind its cursor was passed over)."""
    tasks = [await make_task(client, user, title=f"t{i}") for i in range(6)]
    api = authed(client, user)
    done = asyncio.Event()

    async def write(task: dict[str, Any]) -> None:
        for round_number in range(5):
            response = await api.patch(f"/api/{{uid}}/tasks/{task['id']}", json={"title": f"r{round_number}"})
            assert response.status_code == 200, response.text

    async def writers() -> None:
        try:
            await asyncio.gather(*(write(task) for task in tasks), api.post("/api/{uid}/tasks", json={"title": "new"}))
        finally:
            done.set()

    seen: dict[int, int] = {}
    cursor: str | None = None

    async def reader() -> None:
        nonlocal cursor
        while not done.is_set():
            page = await feed(client, user, cursor, limit=3)
            for change in page["changes"]:
                assert change["version"] >= seen.get(change["id"], 0)  # commit order: never back in time
                seen[change["id"]] = change["version"]
            cursor = page["cursor"]

    await asyncio.gather(writers(), reader())
    changes, _ = await drain(client, user, cursor, limit=3)
    for change in changes:
        seen[change["id"]] = change["version"]
    current = (await api.get("/api/{uid}/tasks", params={"limit": 100})).json()["data"]
    assert seen == {task["id"]: task["version"] for task in current}
    assert all(version == 6 for task_id, version in seen.items() if task_id in {t["id"] for t in tasks})


async def test_a_new_task_never_takes_a_deleted_tasks_id(client, user):
    """Review finding (SQLite): without AUTOINCREMENT a new task reused the highest deleted id, overwriting its
    tombstone in the feed and sending its version backwards."""
    as_user = authed(client, user)
    await make_task(client, user, title="a")
    cursor = (await feed(client, user))["cursor"]
    gone = await make_task(client, user, title="b")
    await as_user.patch(f"/api/{{uid}}/tasks/{gone['id']}", json={"title": "b2"})
    await as_user.delete(f"/api/{{uid}}/tasks/{gone['id']}")
    new = await make_task(client, user, title="c")
    assert new["id"] != gone["id"]
    changes = (await feed(client, user, cursor))["changes"]
    assert {(change["id"], change["op"]) for change in changes} == {(gone["id"], "delete"), (new["id"], "upsert")}


async def test_a_page_is_exactly_what_its_response_model_sends(client, user):
    """The feed's page is serialised straight from its rows (no second pass through `response_model`): the bytes
    must be the ones that pass would have produced, with tasks, a project, a tombstone and every kind of value."""
    from backend.envelope import ChangePageEnvelope

    as_user = authed(client, user)
    project = await pin_project(client, user, "octo/bytes")
    await make_task(
        client,
        user,
        title="full ✓",
        description='with "quotes"',
        due_date="2026-03-29T01:30:00.123456+02:00",
        due_timezone="Europe/Berlin",
        recurrence="FREQ=WEEKLY",
        project_id=project["id"],
        labels=["Zeta ✓", "alpha"],
    )
    # A timestamp on a whole second (no fraction) and a completed task (`completed_at`).
    whole = await make_task(client, user, title="whole second", due_date="2026-01-01T00:00:00Z", completed=True)
    # PostgreSQL writes the tasks' JSON (services/feed.py): every escape JSON has, text that needs none, a fraction
    # ending in zeros, a subtask.
    await make_task(
        client,
        user,
        title='back\\slash "quoted" \u00e9\u2028 \U0001f600 </script>',
        description="\x01\x07\x08\t\n\x0c\r\x1f\x7f end",
        due_date="2026-07-01T12:00:00.120000Z",
        parent_id=whole["id"],
    )
    gone = await make_task(client, user, title="gone")
    cursor = (await feed(client, user))["cursor"]
    await as_user.delete(f"/api/{{uid}}/tasks/{gone['id']}")
    await as_user.patch(f"/api/{{uid}}/projects/{project['id']}", json={"description": "changed"})
    for params in ({}, {"cursor": cursor}):
        response = await as_user.get("/api/{uid}/changes", params=params)
        assert response.status_code == 200, response.text
        expected = ChangePageEnvelope.model_validate(response.json()).model_dump_json().encode()
        assert response.content == expected
        # Every value as the item's single GET answers it (read through the ORM and its types: another path),
        # each timestamp the same string (the same instant, in UTC, formatted alike).
        for change in response.json()["data"]["changes"]:
            if change["item"] is not None:
                single = await as_user.get(f"/api/{{uid}}/{change['type']}s/{change['id']}")
                assert change["item"] == single.json()["data"]


async def test_a_page_costs_one_statement_more_than_a_list(app, client, user):
    """Issue 19's profile: a page's items were read in statements of their own (one per type, one for the labels,
    plus a purge probe): five statements for one change. Now the head (with the purge probe) and the page joined
    to its items: one statement more than a list (the head, read before the page: specs/api/changes.md), however
    many items and of whichever types the page holds."""
    as_user = authed(client, user)
    await pin_project(client, user)
    await make_task(client, user, title="one", labels=["work", "home"])
    await make_task(client, user, title="two")
    engine = app.state.engine.sync_engine

    async def statements(path: str, params: dict[str, Any]) -> list[str]:
        seen: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if not statement.startswith(("BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK")):
                seen.append(statement)

        event.listen(engine, "before_cursor_execute", record)
        try:
            response = await as_user.get(path, params=params)
        finally:
            event.remove(engine, "before_cursor_execute", record)
        assert response.status_code == 200, response.text
        return seen

    listed = await statements("/api/{uid}/tasks", {})
    page = await statements("/api/{uid}/changes", {})
    assert len(page) == len(listed) + 1, page
    assert len([sql for sql in page if "FROM changes" in sql]) == 2, page  # the head (purge probe) and the page


async def test_a_write_records_its_change_in_one_statement_on_postgresql(app, client, user):
    """Recording a change read the items' versions, bumped the owner's seq and replaced their rows of `changes`:
    three round trips in every write. On PostgreSQL they are one statement (a data-modifying CTE); SQLite keeps
    the three. Either way the change carries the new seq and the row's version."""
    as_user = authed(client, user)
    task = await make_task(client, user, title="before")
    _, cursor = await drain(client, user)
    with statements_sent(app) as seen:
        response = await as_user.patch(f"/api/{{uid}}/tasks/{task['id']}", json={"title": "after"})
    assert response.status_code == 200, response.text
    starts = ("SELECT tasks.id, tasks.version FROM", "UPDATE users SET change_seq", "INSERT INTO changes")
    starts += ("WITH bumped",)
    recording = [sql for sql in seen if sql.startswith(starts)]
    if app.state.engine.dialect.name == "postgresql":
        assert len(recording) == 1, recording
        assert recording[0].startswith("WITH bumped AS (UPDATE users SET change_seq"), recording
    else:
        assert len(recording) == 3, recording
    changes, _ = await drain(client, user, cursor)
    assert [(change["id"], change["op"], change["version"]) for change in changes] == [(task["id"], "upsert", 2)]
    assert response.json()["data"]["version"] == 2
