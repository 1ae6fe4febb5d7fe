"""Every list answers the same way (§9): `limit`/`offset` accepted, `meta: {total, limit, offset}` where
`limit` is the page size asked for (the default applied), `offset` echoes and `total` counts every item."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from tests.factories import authed, make_task, pin_project

DEFAULT_LIMIT = 50


def list_operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every operation whose success answer is a list envelope (`...ListEnvelope`)."""
    found = []
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
                if status.startswith("2") and ref.endswith("ListEnvelope"):
                    found.append((method.upper(), path))
    return sorted(set(found))


async def seeded(client, user) -> dict[str, Any]:
    """Three tasks with a label each and three pinned projects: every list has three items (sync runs: none)."""
    tasks = [
        await make_task(client, user, title=f"find {title}", labels=[f"label {title}"])
        for title in ("one", "two", "three")
    ]
    projects = [await pin_project(client, user, f"octo/repo-{n}") for n in range(3)]
    return {"pid": projects[0]["id"], "order": [p["id"] for p in projects], "tid": tasks[0]["id"]}


def url_and_body(method: str, path: str, ids: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    url = path.replace("{user_id}", "{uid}").replace("{project_id}", str(ids["pid"]))
    url = url.replace("{task_id}", str(ids["tid"]))
    if path.endswith("/search"):
        url += "?q=find&"
    else:
        url += "?"
    body = {"project_ids": ids["order"]} if path.endswith("/order") else None
    return url, body


async def test_every_list_operation_is_found(app):
    assert list_operations(app) == [
        ("GET", "/api/projects/pinned"),
        ("GET", "/api/tasks"),
        ("GET", "/api/tasks/search"),
        ("GET", "/api/{user_id}/labels"),
        ("GET", "/api/{user_id}/projects"),
        ("GET", "/api/{user_id}/projects/{project_id}/sync"),
        ("GET", "/api/{user_id}/tasks"),
        ("GET", "/api/{user_id}/tasks/search"),
        ("GET", "/api/{user_id}/tasks/{task_id}/completions"),
        ("PUT", "/api/{user_id}/projects/order"),
    ]


async def test_every_list_documents_limit_and_offset(app):
    paths = app.openapi()["paths"]
    for method, path in list_operations(app):
        params = {p["name"]: p for p in paths[path][method.lower()].get("parameters", []) if p["in"] == "query"}
        assert {"limit", "offset"} <= params.keys(), (method, path)
        assert params["limit"]["schema"]["default"] == DEFAULT_LIMIT, (method, path)
        assert params["offset"]["schema"]["default"] == 0, (method, path)


async def test_meta_limit_is_the_page_size_asked_for_with_the_default_applied(app, client, user):
    as_user = authed(client, user)
    ids = await seeded(client, user)
    for method, path in list_operations(app):
        url, body = url_and_body(method, path, ids)
        expected_total = 0 if path.endswith(("/sync", "/completions")) else 3

        default = await as_user.request(method, url, json=body)
        assert default.status_code == 200, (method, path, default.text)
        assert default.json()["meta"] == {"total": expected_total, "limit": DEFAULT_LIMIT, "offset": 0}, (method, path)

        paged = await as_user.request(method, url + "limit=2&offset=1", json=body)
        assert paged.status_code == 200, (method, path, paged.text)
        assert paged.json()["meta"] == {"total": expected_total, "limit": 2, "offset": 1}, (method, path)
        assert len(paged.json()["data"]) == max(0, min(2, expected_total - 1)), (method, path)

        beyond = await as_user.request(method, url + "limit=10&offset=7", json=body)
        assert beyond.json()["data"] == [], (method, path)
        assert beyond.json()["meta"] == {"total": expected_total, "limit": 10, "offset": 7}, (method, path)


async def test_pages_of_projects_follow_the_dashboard_order(client, user):
    as_user = authed(client, user)
    ids = await seeded(client, user)
    for path in ("/api/{uid}/projects", "/api/projects/pinned"):
        pages = [await as_user.get(f"{path}?limit=2&offset={offset}") for offset in (0, 2)]
        assert [p["id"] for page in pages for p in page.json()["data"]] == ids["order"]
    new_order = {"project_ids": ids["order"][::-1]}
    reordered = await as_user.put("/api/{uid}/projects/order?limit=1&offset=2", json=new_order)
    assert [p["id"] for p in reordered.json()["data"]] == [ids["order"][0]]
    assert reordered.json()["meta"] == {"total": 3, "limit": 1, "offset": 2}


async def test_limit_and_offset_out_of_range_are_422_on_every_list(app, client, user):
    as_user = authed(client, user)
    ids = await seeded(client, user)
    for method, path in list_operations(app):
        url, body = url_and_body(method, path, ids)
        for query in ("limit=0", "limit=101", "offset=-1", "limit=x"):
            response = await as_user.request(method, url + query, json=body)
            assert response.status_code == 422, (method, path, query, response.text)
            assert response.json()["error"]["field"] == query.split("=")[0], (method, path, query)


async def test_a_task_list_is_exactly_what_its_response_model_sends(client, user):
    """The task lists are serialised straight from their rows (no second pass through `response_model`): the
    bytes must be the ones that pass would have produced — every field, in order, datetimes in UTC with `Z`, and
    nulls — for the list, the search and the earlier drafts' list (in their shape: no `labels`), with every kind
    of value present."""
    from backend.envelope import TaskListEnvelope, TaskV1ListEnvelope

    project = await pin_project(client, user, "octo/bytes")
    await make_task(client, user, title="find plain")
    await make_task(
        client,
        user,
        title="find full ✓",
        description='with "quotes" and é',
        priority="high",
        due_date="2026-03-29T01:30:00.123456+02:00",
        project_id=project["id"],
        completed=True,
        labels=["Zeta ✓", "alpha", "ZETA ✓"],
    )
    # PostgreSQL writes the tasks' JSON (services/tasks.json_fields): every escape JSON has, a whole second, a
    # fraction ending in zeros, a subtask.
    whole = await make_task(client, user, title="find whole", due_date="2026-01-01T00:00:00Z")
    await make_task(
        client,
        user,
        title='find back\\slash "quoted" \u2028 \U0001f600 </script>',
        description="\x01\x07\x08\t\n\x0c\r\x1f\x7f end",
        due_date="2026-07-01T12:00:00.120000Z",
        parent_id=whole["id"],
    )
    for url, model in (
        (f"/api/{user.id}/tasks", TaskListEnvelope),
        (f"/api/{user.id}/tasks?offset=50", TaskListEnvelope),  # past the end: no row, the total counted apart
        (f"/api/{user.id}/tasks?priority=low&completed=true", TaskListEnvelope),  # no match at all
        (f"/api/{user.id}/tasks/search?q=find&sort=title", TaskListEnvelope),
        (f"/api/{user.id}/tasks?label=alpha&label=zeta%20%E2%9C%93", TaskListEnvelope),
        ("/api/tasks?limit=1&offset=1", TaskV1ListEnvelope),
        ("/api/tasks/search?q=find", TaskV1ListEnvelope),
    ):
        response = await client.get(url, headers=user.headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        expected = model.model_validate(response.json()).model_dump_json().encode()
        assert response.content == expected, url
        assert all(("labels" in task) == (model is TaskListEnvelope) for task in response.json()["data"]), url
    # Every value as the task's single GET answers it (read through the ORM and its types: another path).
    for task in (await client.get(f"/api/{user.id}/tasks", headers=user.headers)).json()["data"]:
        single = await client.get(f"/api/{user.id}/tasks/{task['id']}", headers=user.headers)
        assert task == single.json()["data"]
    labelled = (await client.get(f"/api/{user.id}/tasks?label=ALPHA", headers=user.headers)).json()["data"]
    assert [task["labels"] for task in labelled] == [["Zeta ✓", "alpha"]]
    full = (await client.get(f"/api/{user.id}/tasks?sort=-priority", headers=user.headers)).json()["data"][0]
    assert (full["due_date"], full["completed"]) == ("2026-03-28T23:30:00.123456Z", True)
    assert full["completed_at"].endswith("Z")
