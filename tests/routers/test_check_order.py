"""The order of checks (§9): authentication (401) -> ownership (403) -> validation of path, query and body
(422/400) -> existence (404) -> preconditions (If-Match, 412) -> the rule itself (409 ...). And a method the
path does not have is 405 with `Allow`, also where a longer path template could swallow the segment."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from tests.conftest import assert_error
from tests.factories import authed, post_project, post_task

STALE = '"stale.0.0"'

# (method, path, an invalid body): every write that honours If-Match, current and earlier-draft routes.
# `{id}` is the row, `{uid}` the caller.
CONDITIONAL_WRITES = [
    ("PUT", "/api/{uid}/tasks/{id}", {"title": ""}),
    ("PATCH", "/api/{uid}/tasks/{id}", {"priority": "urgent"}),
    ("PATCH", "/api/{uid}/tasks/{id}/complete", {"completed": "maybe"}),
    ("PUT", "/api/tasks/{id}", {"title": ""}),
    ("PATCH", "/api/tasks/{id}", {"user_id": "someone"}),
    ("PUT", "/api/{uid}/projects/{id}", {"position": -1}),
    ("PUT", "/api/projects/pinned/{id}", {"display_name": "x" * 300}),
]


async def row_of(client, user, path: str) -> int:
    created = await (post_task(client, user) if "/tasks" in path else post_project(client, user))
    row_id: int = created.json()["data"]["id"]
    return row_id


class TestValidationBeforeExistenceAndPreconditions:
    @pytest.mark.parametrize(("method", "path", "body"), CONDITIONAL_WRITES)
    async def test_an_invalid_body_is_422_whatever_if_match_says(self, client, user, method, path, body):
        row_id = await row_of(client, user, path)
        for if_match in (STALE, "*", "W/" + STALE):
            response = await authed(client, user).request(
                method, path.format(uid="{uid}", id=row_id), json=body, headers={"If-Match": if_match}
            )
            assert_error(response, 422, "VALIDATION_ERROR")

    @pytest.mark.parametrize(("method", "path", "body"), CONDITIONAL_WRITES)
    async def test_an_invalid_body_on_a_missing_row_is_422_not_404(self, client, user, method, path, body):
        for headers in ({}, {"If-Match": STALE}):
            response = await authed(client, user).request(
                method, path.format(uid="{uid}", id=999_999), json=body, headers=headers
            )
            assert_error(response, 422, "VALIDATION_ERROR")

    async def test_a_malformed_body_with_a_stale_if_match_is_400(self, client, user):
        row_id = await row_of(client, user, "/tasks")
        response = await authed(client, user).patch(
            f"/api/{{uid}}/tasks/{row_id}",
            content=b"{not json",
            headers={"If-Match": STALE, "Content-Type": "application/json"},
        )
        assert_error(response, 400, "MALFORMED_REQUEST")

    async def test_a_missing_row_with_a_stale_if_match_is_404(self, client, user, other_user):
        theirs = await row_of(client, other_user, "/tasks")
        for task_id in (theirs, 999_999):
            response = await authed(client, user).patch(
                f"/api/{{uid}}/tasks/{task_id}", json={"title": "ok"}, headers={"If-Match": STALE}
            )
            assert_error(response, 404, "NOT_FOUND")

    async def test_a_stale_if_match_comes_before_the_rule(self, client, user):
        """`project_id` must be one of the caller's projects: a rule the schema cannot state, checked last."""
        row_id = await row_of(client, user, "/tasks")
        response = await authed(client, user).patch(
            f"/api/{{uid}}/tasks/{row_id}", json={"project_id": 999_999}, headers={"If-Match": STALE}
        )
        assert_error(response, 412, "PRECONDITION_FAILED")
        without = await authed(client, user).patch(f"/api/{{uid}}/tasks/{row_id}", json={"project_id": 999_999})
        assert without.status_code in (404, 422), without.text


class TestAuthenticationAndOwnershipFirst:
    async def test_no_token_is_401_before_anything_else(self, client, user, other_user):
        row_id = await row_of(client, user, "/tasks")
        for path in (f"/api/{other_user.id}/tasks/{row_id}", f"/api/{user.id}/tasks/999999", f"/api/{user.id}/tasks/x"):
            response = await client.patch(path, json={"title": ""}, headers={"If-Match": STALE})
            assert_error(response, 401, "NOT_AUTHENTICATED")

    async def test_someone_elses_path_is_403_before_validation_and_existence(self, client, user, other_user):
        as_user = authed(client, user)
        for path in (
            f"/api/{other_user.id}/tasks/999999",
            f"/api/{other_user.id}/tasks/not-an-id",
            f"/api/{other_user.id}/tasks?limit=0",
            f"/api/{other_user.id}/projects/{{pid}}/sync?offset=-1",
            "/api/not%20a%20user%20id/tasks",
        ):
            response = await as_user.request(
                "PATCH" if path.endswith(("999999", "not-an-id")) else "GET",
                path.replace("{pid}", "1"),
                json={"title": ""},
                headers={"If-Match": STALE},
            )
            assert_error(response, 403, "FORBIDDEN")


def shadowing(app: FastAPI) -> dict[str, set[str]]:
    """Paths made of literal segments only whose methods another template's parameter also matches: the
    methods each path has (`/api/{user_id}/tasks/search` also reads as `/api/{user_id}/tasks/{task_id}`)."""
    routes = [(r.path, r.path_regex, r.methods or set()) for r in iter_route_contexts(app.routes) if r.methods]
    found: dict[str, set[str]] = {}
    for path, _, methods in routes:
        concrete = path.replace("{user_id}", "u1").replace("{project_id}", "7")
        if "{" in concrete:
            continue
        if any(other != path and regex.match(concrete) for other, regex, _ in routes):
            found.setdefault(concrete, set()).update(methods)
    return found


class TestMethodNotAllowed:
    def test_the_swallowed_segments_are_found(self, app):
        assert shadowing(app) == {
            "/api/u1/tasks/search": {"GET"},
            "/api/u1/projects/order": {"PUT"},
            "/api/tasks/search": {"GET"},
            "/api/tasks": {"GET", "POST"},
        }

    async def test_put_on_tasks_search_is_405_with_allow_get(self, client, user):
        response = await authed(client, user).put("/api/{uid}/tasks/search", json={"title": "x"})
        assert_error(response, 405, "METHOD_NOT_ALLOWED")
        assert response.headers["allow"] == "GET"

    async def test_every_other_method_on_a_swallowed_segment_is_405(self, app, client, user):
        as_user = authed(client, user)
        checked = 0
        for path, methods in shadowing(app).items():
            for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - methods):
                checked += 1
                for headers in ({}, {"Authorization": ""}):  # with and without a token: routing comes first
                    response = await as_user.request(method, path.replace("u1", "{uid}"), json={}, headers=headers)
                    assert_error(response, 405, "METHOD_NOT_ALLOWED")
                    assert response.headers["allow"] == ", ".join(sorted(methods)), (method, path)
        assert checked >= 14

    async def test_the_segment_as_a_value_keeps_working(self, client, user):
        """Only the literal segment is taken: other ids still reach the parameterized routes."""
        as_user = authed(client, user)
        task_id = await row_of(client, user, "/tasks")
        assert (await as_user.put(f"/api/{{uid}}/tasks/{task_id}", json={"title": "x"})).status_code == 200
        assert_error(await as_user.put("/api/{uid}/tasks/searches", json={"title": "x"}), 422, "VALIDATION_ERROR")
        assert (await as_user.get("/api/{uid}/tasks/search?q=x")).status_code == 200
        assert (await as_user.put("/api/{uid}/projects/order", json={"project_ids": []})).status_code == 200
