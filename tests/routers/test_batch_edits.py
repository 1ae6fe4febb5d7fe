"""Runs of field edits in a batch, written set-based (services/batch_edits.py, specs/api/batch.md "Runs of field
edits"): the same answers, rows and feed as the commands one by one, in a few statements. SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from backend.services import batch_edits
from tests.factories import authed, make_task, make_user, pin_project
from tests.routers.test_batch import cmd, send, statuses
from tests.routers.test_changes import drain
from tests.support import statements_sent

TIMESTAMPS = ("created_at", "updated_at", "completed_at", "changed_at", "pinned_at", "last_updated")


async def test_a_run_of_field_edits_is_a_few_statements_not_a_few_per_command(app, client, user):
    """Issue 19's profile: each `task.update` of a batch cost a savepoint, its locking read, its UPDATE and the
    release, about 4 ms of CPU per command (a batch of 100: over the 250 ms target). A run of them is now one
    locking read and one executemany UPDATE, with no savepoint."""
    as_user = authed(client, user)
    tasks = [await make_task(client, user, title=f"task {i}") for i in range(20)]
    with statements_sent(app) as seen:
        answer = await send(as_user, *(cmd("task.update", target=t["id"], data={"title": "new"}) for t in tasks))
    assert statuses(answer) == [200] * 20
    # The suite runs each request's transaction in a savepoint, and the hourly purge of expired records in one.
    assert len([sql for sql in seen if sql.startswith("SAVEPOINT")]) <= 2, seen
    written = [sql for sql in seen if sql.startswith(("SELECT tasks.title", "UPDATE tasks"))]
    assert len(written) == 2, written  # the locking read and the UPDATE (executemany)
    assert len(seen) <= 20, seen
    listed = (await as_user.get("/api/{uid}/tasks?limit=100")).json()["data"]
    assert {task["title"] for task in listed} == {"new"}
    assert {task["version"] for task in listed} == {2}


async def _scenario(client) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """One user, three tasks and a batch mixing field edits with everything that interrupts or fails them: the
    batch's answer, the user's tasks after it and the feed's changes it made, each with ids made symbolic."""
    user = await make_user(client)
    as_user = authed(client, user)
    pinned = await pin_project(client, user)
    one = await make_task(client, user, title="one", labels=["x"])
    two = await make_task(client, user, title="two", due_date="2027-03-22T08:00:00Z", due_timezone="Europe/Berlin")
    three = await make_task(client, user, title="three")
    _, cursor = await drain(client, user)
    first = cmd("task.update", target=one["id"], data={"title": "one, renamed"})
    commands = [
        first,
        cmd("task.update", target=one["id"], if_version=2, data={"priority": "high"}),
        cmd("task.update", target=one["id"], if_version=2, data={"description": "stale"}),  # 412: it is 3 now
        cmd("task.update", target=2_000_000_000, data={"title": "nobody's"}),  # 404
        cmd("task.update", target=two["id"], data={"due_string": "every monday at 9am"}),
        cmd("task.update", target=three["id"], data={"recurrence": "FREQ=DAILY"}),  # 422: no due date
        cmd("task.update", target=three["id"], data={"due_string": "whenever the moon is blue"}),  # 422
        cmd("project.pin", temp_id="p", data={"github_repo_name": "octo/edits"}),
        cmd("task.update", target="p", data={"title": "a project's temp id"}),  # 404: names no task
        cmd("task.create", temp_id="t", data={"title": "new"}),
        cmd("task.update", target="t", data={"title": "new, renamed"}),
        cmd("task.update", target=three["id"], data={"labels": ["z"]}),  # not a field edit: on its own
        cmd("task.update", target=three["id"], data={"title": "three, due", "due_date": "2027-03-28T00:30:00Z"}),
        cmd("task.complete", target=two["id"]),  # recurring: moves on to the next week, in its zone
        cmd("task.update", target=two["id"], data={"title": "two, after completing"}),
        cmd("task.update", target=two["id"], data={"labels": ["q"]}),  # reads the row the edit above wrote
        first,  # its id again: its recorded result
        cmd("task.update", target="t", if_version=2, data={"description": "from the batch"}),
        cmd("task.update", target=one["id"], data={"title": "one, " + "x" * 300}),  # 422 (the schema): alone
    ]
    response = await as_user.post(
        "/api/{uid}/batch", json={"commands": commands}, headers={"X-Timezone": "Europe/Berlin"}
    )
    assert response.status_code == 200, response.text
    answer = response.json()["data"]
    ids = {("task", one["id"]): "one", ("task", two["id"]): "two", ("task", three["id"]): "three"}
    ids |= {("task", answer["temp_ids"]["t"]): "t", ("project", answer["temp_ids"]["p"]): "p"}
    ids[("project", pinned["id"])] = "pinned"
    listed = (await as_user.get("/api/{uid}/tasks?sort=created_at")).json()["data"]
    changes, _ = await drain(client, user, cursor)
    assert {
        name: ids[("project" if name == "p" else "task", row_id)] for name, row_id in answer["temp_ids"].items()
    } == {
        "p": "p",
        "t": "t",
    }
    return (
        _symbolic(answer, ids, user.id),
        [_symbolic(task, ids, user.id) for task in listed],
        [_symbolic(change, ids, user.id) for change in changes],
    )


def _named(ids: dict[tuple[str, int], str], kind: str, value: Any) -> Any:
    if isinstance(value, str):
        return "<command id>"
    return ids.get((kind, value), value)


def _symbolic(value: Any, ids: dict[tuple[str, int], str], user_id: str) -> Any:
    """`value` with row ids named, the user's id and command ids replaced and timestamps left out."""
    if isinstance(value, dict):
        kind = "project" if "github_repo_name" in value or value.get("type") == "project" else "task"
        kinds = {"id": kind, "parent_id": "task", "project_id": "project"}
        return {
            key: _named(ids, kinds[key], item) if key in kinds else _symbolic(item, ids, user_id)
            for key, item in value.items()
            if key not in TIMESTAMPS and key not in ("cursor", "temp_ids")
        }
    if isinstance(value, list):
        return [_symbolic(item, ids, user_id) for item in value]
    if value == user_id:
        return "<user>"
    return value


async def test_field_edits_answer_as_the_commands_one_by_one_would(client, monkeypatch):
    """The same batch for two users with the same tasks, once with runs of field edits written set-based and once
    with every command on its own (no field counts as one): the same results, errors, rows and feed."""
    set_based = await _scenario(client)
    monkeypatch.setattr(batch_edits, "FIELDS", frozenset())
    one_by_one = await _scenario(client)
    answer, tasks, changes = set_based
    assert statuses(answer)[:16] == [200, 200, 412, 404, 200, 422, 422, 201, 404, 201, 200, 200, 200, 200, 200, 200]
    assert statuses(answer)[16:] == [200, 200, 422]
    assert answer["results"][16] == answer["results"][0]
    errors = [result["error"] for result in answer["results"] if result["error"] is not None]
    assert [error["code"] for error in errors] == [
        "PRECONDITION_FAILED",
        "NOT_FOUND",
        "INVALID_RECURRENCE",
        "VALIDATION_ERROR",
        "NOT_FOUND",
        "VALIDATION_ERROR",
    ]
    by_name = {task["id"]: task for task in tasks}
    assert by_name["one"]["title"] == "one, renamed"
    assert by_name["one"]["priority"] == "high"
    assert by_name["one"]["description"] is None
    assert by_name["two"]["title"] == "two, after completing"
    assert by_name["two"]["labels"] == ["q"]
    assert by_name["two"]["recurrence"] == "FREQ=WEEKLY;BYDAY=MO"
    assert by_name["three"]["labels"] == ["z"]
    assert by_name["t"]["description"] == "from the batch"
    # Each item once, after its last change, in the order of those last changes (services/changes.flush).
    feed = [(change["type"], change["id"], change["version"]) for change in changes]
    assert feed == [("task", "one", 3), ("project", "p", 1), ("task", "three", 3), ("task", "two", 6), ("task", "t", 3)]
    assert set_based == one_by_one
