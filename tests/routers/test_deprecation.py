"""The earlier drafts' routes (§6) say they are deprecated (§9): `Deprecation` (RFC 9745, a structured-field
date) and `Link: <successor>; rel="successor-version"`, the successor being the request's own
`/api/{user_id}/...` path. They keep working."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from fastapi import FastAPI

from tests.conftest import assert_error
from tests.factories import authed, make_task, pin_project

# The earlier drafts' routes were deprecated from the first release that had `/api/{user_id}/...`.
DEPRECATED_SINCE = "@" + str(int(datetime(2026, 11, 21, tzinfo=UTC).timestamp()))
LINK = re.compile(r'^<(?P<target>/api/[^>]+)>; rel="successor-version"$')


def deprecated_operations(app: FastAPI) -> set[tuple[str, str]]:
    paths = app.openapi()["paths"]
    return {(m.upper(), p) for p, item in paths.items() for m, op in item.items() if op.get("deprecated")}


# (method, earlier path, body, successor): `{tid}` a task of the caller, `{pid}` a project, `{uid}` the caller.
CASES = [
    ("GET", "/api/tasks", None, "/api/{uid}/tasks"),
    ("POST", "/api/tasks", {"title": "new"}, "/api/{uid}/tasks"),
    ("GET", "/api/tasks/search?q=x", None, "/api/{uid}/tasks/search"),
    ("GET", "/api/tasks/{tid}", None, "/api/{uid}/tasks/{tid}"),
    ("PUT", "/api/tasks/{tid}", {"title": "put"}, "/api/{uid}/tasks/{tid}"),
    ("PATCH", "/api/tasks/{tid}", {"title": "patched"}, "/api/{uid}/tasks/{tid}"),
    ("DELETE", "/api/tasks/{tid}", None, "/api/{uid}/tasks/{tid}"),
    ("GET", "/api/projects/pinned", None, "/api/{uid}/projects"),
    ("POST", "/api/projects/pin", {"github_repo_name": "octo/new"}, "/api/{uid}/projects"),
    ("PUT", "/api/projects/pinned/{pid}", {"display_name": "D"}, "/api/{uid}/projects/{pid}"),
    ("DELETE", "/api/projects/unpin/{pid}", None, "/api/{uid}/projects/{pid}"),
]


def template(path: str) -> str:
    return path.split("?")[0].replace("{tid}", "{task_id}").replace("{pid}", "{project_id}")


def test_every_deprecated_operation_is_covered(app):
    covered = {(method, template(path)) for method, path, _, _ in CASES}
    assert deprecated_operations(app) == covered


def test_the_headers_are_documented(app):
    paths = app.openapi()["paths"]
    for method, path in deprecated_operations(app):
        success = [r for status, r in paths[path][method.lower()]["responses"].items() if status.startswith("2")]
        assert success, (method, path)
        for response in success:
            assert {"Deprecation", "Link"} <= response.get("headers", {}).keys(), (method, path)


async def test_every_earlier_route_says_it_is_deprecated_and_names_its_successor(client, user):
    as_user = authed(client, user)
    for method, path, body, successor in CASES:
        task, project = await make_task(client, user), await pin_project(client, user, f"octo/p{len(path)}{method}")
        ids = {"tid": str(task["id"]), "pid": str(project["id"]), "uid": user.id}
        response = await as_user.request(method, path.format(**ids), json=body)
        assert response.status_code in (200, 201), (method, path, response.text)
        assert response.headers["deprecation"] == DEPRECATED_SINCE, (method, path)
        link = LINK.match(response.headers["link"])
        assert link is not None, response.headers["link"]
        assert link["target"] == successor.format(**ids), (method, path)


async def test_the_successor_answers_the_same(client, user):
    as_user = authed(client, user)
    task = await make_task(client, user)
    earlier = await as_user.get(f"/api/tasks/{task['id']}")
    successor = LINK.match(earlier.headers["link"])
    assert successor is not None
    current = await as_user.get(successor["target"])
    # The same task; the earlier shape has none of the fields added since.
    answer = current.json()
    added = {
        name: answer["data"].pop(name) for name in ("labels", "parent_id", "due_timezone", "recurrence", "version")
    }
    assert added == {"labels": [], "parent_id": None, "due_timezone": None, "recurrence": None, "version": 1}
    assert isinstance(answer["data"].pop("position"), str)
    assert answer == earlier.json()
    assert "deprecation" not in current.headers
    assert "link" not in current.headers


async def test_errors_say_so_too(client, user, other_user):
    theirs = await make_task(client, other_user)
    refused = await authed(client, user).get(f"/api/tasks/{theirs['id']}")
    assert_error(refused, 404, "NOT_FOUND")
    assert refused.headers["deprecation"] == DEPRECATED_SINCE
    assert refused.headers["link"] == f'</api/{user.id}/tasks/{theirs["id"]}>; rel="successor-version"'
    invalid = await authed(client, user).post("/api/tasks", json={"title": ""})
    assert_error(invalid, 422, "VALIDATION_ERROR")
    assert invalid.headers["deprecation"] == DEPRECATED_SINCE
    assert invalid.headers["link"] == f'</api/{user.id}/tasks>; rel="successor-version"'
    # Without a caller there is no user id to name: the route is still deprecated.
    anonymous = await client.get("/api/projects/pinned")
    assert_error(anonymous, 401, "NOT_AUTHENTICATED")
    assert anonymous.headers["deprecation"] == DEPRECATED_SINCE
    assert "link" not in anonymous.headers


async def test_current_routes_are_not_deprecated(client, user):
    for path in ("/api/{uid}/tasks", "/api/{uid}/projects", "/api/auth/me", "/health"):
        response = await authed(client, user).get(path)
        assert response.status_code == 200, path
        assert "deprecation" not in response.headers, path
