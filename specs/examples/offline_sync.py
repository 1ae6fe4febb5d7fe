"""An offline-capable client from Python with httpx: the steps of specs/offline-clients.md, run for real.

    pip install httpx
    python specs/examples/offline_sync.py http://127.0.0.1:8000      # or BASE_URL=... python ...

1. A full sync: `GET /changes` without a cursor, page after page while `has_more`, into a local store.
2. Changes made elsewhere (a task completed, one deleted, a new task with a subtask), then an incremental sync
   from the saved cursor: the completed task comes as an `upsert` with `completed: true`, the deleted one as a
   `delete` with `item: null`.
3. Offline: commands queued with temp ids, sent as one batch; the answer is lost (a timeout), the same batch is
   sent again, and again: nothing is applied twice.
4. A command made against an old version (`if_version`) answers 412; the client reads the task again and sends
   the command again, with the fresh version and a new command id.
5. A cursor the server cannot resume from answers 410 CURSOR_EXPIRED: the client starts a full sync.

Exits with 1 at the first surprise.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from typing import Any

import httpx

BASE_URL = (sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BASE_URL", "http://127.0.0.1:8000")).rstrip("/")
PAGE = 2  # small pages, so that the full sync of this demo's few tasks takes several


def expect(response: httpx.Response, status: int, step: str) -> Any:
    """Stop unless `response` has `status`; print the step; return the envelope's `data` (or `error`)."""
    request = response.request
    if response.status_code != status:
        print(f"FAIL  {step}: {request.method} {request.url.path} answered {response.status_code}, expected {status}")
        print(f"      {response.text}")
        sys.exit(1)
    print(f"ok    {step:<34} {request.method:<6} {request.url.path:<44} -> {response.status_code}")
    body = response.json()
    return body.get("data") if body.get("success") else body.get("error")


def check(condition: bool, what: str) -> None:
    if not condition:
        print(f"FAIL  {what}")
        sys.exit(1)
    print(f"      {what}")


def command(op: str, **fields: Any) -> dict[str, Any]:
    """A queued command: its id is made once, when it is queued, and sent unchanged on every retry."""
    return {"id": str(uuid.uuid4()), "op": op, **fields}


class Replica:
    """The client's copy of the user's tasks and pinned projects, and the feed cursor it is up to date with."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, int], dict[str, Any]] = {}
        self.cursor: str | None = None

    def apply(self, change: dict[str, Any]) -> None:
        key = (change["type"], change["id"])
        if change["op"] == "upsert":
            self.items[key] = change["item"]
        else:
            self.items.pop(key, None)

    def tasks(self) -> dict[int, dict[str, Any]]:
        return {item_id: item for (kind, item_id), item in self.items.items() if kind == "task"}


def show(change: dict[str, Any]) -> None:
    item = change["item"]
    state = "item null"
    if item is not None:
        state = f"{item['title']!r} completed={item['completed']} parent={item['parent_id']}"
    print(f"      {change['op']:<6} {change['type']} {change['id']} v{change['version']}: {state}")


def sync(api: httpx.Client, user_id: str, replica: Replica, step: str) -> list[dict[str, Any]]:
    """Read the feed from the replica's cursor (none: a full sync) until `has_more` is false; on 410, start over
    with a full sync. Returns the changes applied."""
    applied: list[dict[str, Any]] = []
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": PAGE}
        if replica.cursor is not None:
            params["cursor"] = replica.cursor
        response = api.get(f"/api/{user_id}/changes", params=params)
        if response.status_code == 410:
            error = expect(response, 410, f"{step}: cursor expired")
            check(error["code"] == "CURSOR_EXPIRED", "410 CURSOR_EXPIRED: drop the replica, full sync")
            replica.items.clear()
            replica.cursor = None
            applied.clear()
            continue
        page = expect(response, 200, f"{step}, page {pages + 1}")
        pages += 1
        for change in page["changes"]:
            replica.apply(change)
            applied.append(change)
        replica.cursor = page["cursor"]  # kept only once the page is applied: a crash re-reads it, harmlessly
        print(f"      {len(page['changes'])} changes, has_more={page['has_more']}, cursor {page['cursor']}")
        if not page["has_more"]:
            return applied


def server_tasks(api: httpx.Client, user_id: str) -> dict[int, dict[str, Any]]:
    tasks = api.get(f"/api/{user_id}/tasks", params={"limit": 100}).json()["data"]
    return {task["id"]: task for task in tasks}


def version_of(response: httpx.Response) -> int:
    """A row's version: the last number of its ETag, `"tasks.42.3"` -> 3."""
    return int(response.headers["ETag"].strip('W/"').rsplit(".", 1)[1])


def main() -> None:
    print(f"Taskdeck offline sync example against {BASE_URL}")
    with httpx.Client(base_url=BASE_URL, timeout=15) as api:
        expect(api.get("/health/live"), 200, "liveness")
        email = f"offline-{uuid.uuid4().hex[:12]}@example.com"
        password = "Sturdy-Lantern-42"  # noqa: S105  # pragma: allowlist secret (a throwaway demo account)
        expect(api.post("/api/auth/register", json={"email": email, "password": password}), 201, "register")
        tokens = expect(api.post("/api/auth/login", json={"email": email, "password": password}), 200, "login")
        user_id = tokens["user_id"]
        api.headers["Authorization"] = f"Bearer {tokens['access_token']}"
        tasks = f"/api/{user_id}/tasks"

        # Some tasks made on another device before this client first syncs.
        ids = []
        for title in ("Water the plants", "Renew the passport", "Read chapter 3", "Fix the bike", "Write the report"):
            ids.append(expect(api.post(tasks, json={"title": title}), 201, "create a task (other device)")["id"])

        # 1. Full sync: no cursor; pages while has_more. The last page's cursor is where incremental syncs start.
        replica = Replica()
        applied = sync(api, user_id, replica, "full sync")
        check(all(change["op"] == "upsert" for change in applied), "a full sync is upserts only")
        check(set(replica.tasks()) == set(server_tasks(api, user_id)), "the replica holds every task")
        check("." not in replica.cursor, f"after the last page, an incremental cursor: {replica.cursor}")

        # 2. Changes on another device, then an incremental sync from the saved cursor.
        expect(api.patch(f"{tasks}/{ids[0]}/complete", json={"completed": True}), 200, "complete a task (other)")
        expect(api.delete(f"{tasks}/{ids[1]}"), 200, "delete a task (other)")
        parent = expect(api.post(tasks, json={"title": "Call the plumber"}), 201, "create a task (other)")["id"]
        child = expect(api.post(tasks, json={"title": "Find the invoice", "parent_id": parent}), 201, "add a subtask")
        applied = sync(api, user_id, replica, "incremental sync")
        for change in applied:
            show(change)
        by_id = {change["id"]: change for change in applied}
        check(by_id[ids[0]]["op"] == "upsert" and by_id[ids[0]]["item"]["completed"], "completed: an upsert")
        check(by_id[ids[1]]["op"] == "delete" and by_id[ids[1]]["item"] is None, "deleted: a tombstone, item null")
        check(by_id[child["id"]]["item"]["parent_id"] == parent, "the subtask names its parent")
        check(len(applied) == 4, "four changes, nothing else")
        check(set(replica.tasks()) == set(server_tasks(api, user_id)), "the replica matches the server again")

        # 3. Offline: queue commands. "trip" is a temp id, a name for a task that does not exist yet.
        queue = [
            command("task.create", temp_id="trip", data={"title": "Plan the trip"}),
            command("task.create", data={"title": "Book the train", "parent_id": "trip"}),
            command("task.complete", target=ids[2]),
        ]
        batch = {"commands": queue}
        print(f"      queued: {json.dumps(queue[1])}")
        # Back online, the batch is sent, and the answer never arrives (a read timeout far too short for it).
        try:
            api.post(f"/api/{user_id}/batch", json=batch, timeout=httpx.Timeout(15, read=0.001))
            print("      the answer came after all; a client that is not sure sends the batch again anyway")
        except httpx.TimeoutException as exc:
            print(f"      the answer was lost ({type(exc).__name__}): applied or not, the client cannot tell")
        answer = expect(api.post(f"/api/{user_id}/batch", json=batch), 200, "send the same batch again")
        for cmd, result in zip(queue, answer["results"], strict=True):
            print(f"      {cmd['op']:<13} -> {result['status']} id {result['item']['id']}")
        check([result["status"] for result in answer["results"]] == [201, 201, 200], "every command applied")
        check(answer["results"][1]["item"]["parent_id"] == answer["temp_ids"]["trip"], "temp id resolved")
        third = expect(api.post(f"/api/{user_id}/batch", json=batch), 200, "and once more")
        check(third["results"] == answer["results"], "the same results, replayed")
        titles = [task["title"] for task in server_tasks(api, user_id).values()]
        check(titles.count("Plan the trip") == 1 and titles.count("Book the train") == 1, "nothing applied twice")
        applied = sync(api, user_id, replica, "sync after the batch")
        batch_ids = sorted(result["item"]["id"] for result in answer["results"])
        check(sorted(change["id"] for change in applied) == batch_ids, "the batch's three tasks, once each")

        # 4. A stale version: the client read a task, another device changed it, then the client's command.
        read = api.get(f"{tasks}/{ids[3]}")
        expect(read, 200, "read a task")
        seen = version_of(read)
        print(f"      ETag {read.headers['ETag']}: version {seen}")
        expect(api.patch(f"{tasks}/{ids[3]}", json={"title": "Fix the bike brakes"}), 200, "rename it (other)")
        stale = command("task.update", target=ids[3], if_version=seen, data={"priority": "high"})
        answer = expect(api.post(f"/api/{user_id}/batch", json={"commands": [stale]}), 200, "update (stale)")
        result = answer["results"][0]
        error = result["error"]
        print(f"      {result['status']} {error['code']} ({error['field']}): {error['message']}")
        check(result["status"] == 412 and error["code"] == "PRECONDITION_FAILED", "412 PRECONDITION_FAILED")
        # Resolve: read the task again, look at what changed, and send the edit again against the fresh version,
        # with a new command id (a failed command's id is spent: it would answer the same 412).
        read = api.get(f"{tasks}/{ids[3]}")
        expect(read, 200, "read it again")
        check(read.json()["data"]["priority"] != "high", "412, nothing changed")
        fresh = version_of(read)
        print(f"      now version {fresh}, title {read.json()['data']['title']!r}: keep it, set the priority")
        retry = command("task.update", target=ids[3], if_version=fresh, data={"priority": "high"})
        answer = expect(api.post(f"/api/{user_id}/batch", json={"commands": [retry]}), 200, "update (fresh version)")
        item = answer["results"][0]["item"]
        check(answer["results"][0]["status"] == 200, "applied")
        check((item["title"], item["priority"]) == ("Fix the bike brakes", "high"), "both edits kept")

        # 5. A cursor the server cannot resume from (here: one it never handed out) -> 410, then a full sync.
        replica.cursor = "c999999"
        sync(api, user_id, replica, "sync from a dead cursor")
        check(set(replica.tasks()) == set(server_tasks(api, user_id)), "after the full sync the replica matches")
    print("offline sync example complete")


if __name__ == "__main__":
    main()
