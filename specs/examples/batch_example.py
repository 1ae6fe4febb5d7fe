"""A batch from Python with httpx: temp ids, and sending the same batch again after a lost answer (specs/api/batch.md).

    pip install httpx
    BASE_URL=http://127.0.0.1:8000 python specs/examples/batch_example.py

An offline client queues commands, each with its own UUID, and sends them in one batch when it is back. A
command may name a row an earlier command creates by its `temp_id`. If the answer never arrives (a timeout),
the client sends the very same batch again: commands already applied answer their recorded result, nothing is
applied twice. Exits with 1 at the first surprise.
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any

import httpx

BASE_URL = os.environ.get("BASE_URL", "http://127.0.0.1:8000").rstrip("/")


def expect(response: httpx.Response, status: int, step: str) -> Any:
    """Stop unless `response` has `status`; print the step; return the envelope's `data`."""
    request = response.request
    if response.status_code != status:
        print(f"FAIL  {step}: {request.method} {request.url.path} answered {response.status_code}, expected {status}")
        print(f"      {response.text}")
        sys.exit(1)
    print(f"ok    {step:<34} {request.method:<6} {request.url.path:<52} -> {response.status_code}")
    return response.json().get("data")


def check(condition: bool, what: str) -> None:
    if not condition:
        print(f"FAIL  {what}")
        sys.exit(1)
    print(f"      {what}")


def command(op: str, **fields: Any) -> dict[str, Any]:
    """A queued command: its id is made once, when it is queued, and sent unchanged on every retry."""
    return {"id": str(uuid.uuid4()), "op": op, **fields}


def main() -> None:
    print(f"Taskdeck batch example against {BASE_URL}")
    with httpx.Client(base_url=BASE_URL, timeout=15) as api:
        expect(api.get("/health/live"), 200, "liveness")
        email = f"batch-{uuid.uuid4().hex[:12]}@example.com"
        password = "Sturdy-Lantern-42"  # noqa: S105  # pragma: allowlist secret (a throwaway demo account)
        expect(api.post("/api/auth/register", json={"email": email, "password": password}), 201, "register")
        tokens = expect(api.post("/api/auth/login", json={"email": email, "password": password}), 200, "login")
        user_id = tokens["user_id"]
        api.headers["Authorization"] = f"Bearer {tokens['access_token']}"

        # What the client queued while offline. "proj" and "plan" are temp ids: names for rows that do not exist
        # yet, usable by the later commands of the same batch (as target, parent_id, project_id, after_id).
        queue = [
            command("project.pin", temp_id="proj", data={"github_repo_name": "octo/hello"}),
            command("task.create", temp_id="plan", data={"title": "Plan the release", "project_id": "proj"}),
            command("task.create", temp_id="notes", data={"title": "Write the notes", "parent_id": "plan"}),
            command("task.create", temp_id="tag", data={"title": "Tag v1.0", "parent_id": "plan"}),
            command("task.move", target="tag", data={"after_id": None}),  # the tag first among the subtasks
            command("task.update", target="plan", data={"title": ""}),  # invalid: this one alone fails
            command("task.complete", target="notes"),
        ]
        batch = {"commands": queue}
        answer = expect(api.post(f"/api/{user_id}/batch", json=batch), 200, "send the batch")
        for cmd, result in zip(queue, answer["results"], strict=True):
            outcome = result["error"]["code"] if result["error"] else f"id {result['item']['id']}"
            print(f"      {cmd['op']:<14} -> {result['status']} {outcome}")
        statuses = [result["status"] for result in answer["results"]]
        check(statuses == [201, 201, 201, 201, 200, 422, 200], "every command answered on its own, in order")
        ids = answer["temp_ids"]
        print(f"      temp ids: {ids}")

        # The answer was lost (say the connection dropped): send the very same batch again.
        again = expect(api.post(f"/api/{user_id}/batch", json=batch), 200, "send the same batch again")
        check(again["results"] == answer["results"], "the same results, replayed")
        tasks = expect(api.get(f"/api/{user_id}/tasks", params={"project_id": ids["proj"]}), 200, "list the tasks")
        check(len(tasks) == 3, "three tasks: nothing was created twice")
        subtasks = api.get(f"/api/{user_id}/tasks", params={"parent_id": ids["plan"], "sort": "position"}).json()
        check([task["title"] for task in subtasks["data"]] == ["Tag v1.0", "Write the notes"], "subtasks in order")

        # The failed command's id is spent (it answers its failure again): fix it and send it with a new id.
        fixed = command("task.update", target=ids["plan"], data={"title": "Plan the v1.0 release"})
        answer = expect(api.post(f"/api/{user_id}/batch", json={"commands": [fixed]}), 200, "send the fix")
        check(answer["results"][0]["item"]["title"] == "Plan the v1.0 release", "fixed with a new id")
    print("batch example complete")


if __name__ == "__main__":
    main()
