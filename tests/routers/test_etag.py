"""ETags, If-None-Match (304) and If-Match (412) on tasks and projects, on SQLite and PostgreSQL."""

import asyncio

import pytest

from tests.conftest import assert_error
from tests.factories import post_project as make_project
from tests.factories import post_task as make_task


def with_header(user, name, value):
    return {**user.headers, name: value}


class TestTaskETag:
    async def test_create_and_get_agree_and_if_none_match_is_304(self, client, user):
        created = await make_task(client, user)
        etag = created.headers["etag"]
        assert etag[0] == etag[-1] == '"'
        url = f"/api/{user.id}/tasks/{created.json()['data']['id']}"
        fetched = await client.get(url, headers=user.headers)
        assert fetched.headers["etag"] == etag
        for header in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
            cached = await client.get(url, headers=with_header(user, "If-None-Match", header))
            assert cached.status_code == 304
            assert cached.content == b""
            assert cached.headers["etag"] == etag
        stale = await client.get(url, headers=with_header(user, "If-None-Match", '"tasks.0.0"'))
        assert stale.status_code == 200
        assert stale.json()["data"]["title"] == "A task"

    async def test_every_write_gets_a_new_etag_even_within_one_clock_tick(self, client, user):
        created = await make_task(client, user)
        url = f"/api/{user.id}/tasks/{created.json()['data']['id']}"
        etags = [created.headers["etag"]]
        for index in range(5):
            updated = await client.patch(url, json={"title": f"t{index}"}, headers=user.headers)
            etags.append(updated.headers["etag"])
        completed = await client.patch(f"{url}/complete", json={"completed": True}, headers=user.headers)
        etags.append(completed.headers["etag"])
        assert len(set(etags)) == len(etags)
        assert (await client.get(url, headers=user.headers)).headers["etag"] == etags[-1]

    @pytest.mark.parametrize(
        ("method", "suffix", "body"),
        [
            ("PUT", "", {"title": "changed"}),
            ("PATCH", "", {"title": "changed"}),
            ("PATCH", "/complete", {"completed": True}),
            ("DELETE", "", None),
        ],
    )
    async def test_if_match_guards_every_write(self, client, user, method, suffix, body):
        created = await make_task(client, user)
        url = f"/api/{user.id}/tasks/{created.json()['data']['id']}"
        old = created.headers["etag"]
        touched = await client.patch(url, json={"description": "someone else was here"}, headers=user.headers)
        current = touched.headers["etag"]
        for stale in (old, f"W/{current}"):  # a weak tag never satisfies If-Match
            headers = with_header(user, "If-Match", stale)
            refused = await client.request(method, url + suffix, json=body, headers=headers)
            error = assert_error(refused, 412, "PRECONDITION_FAILED")
            assert "changed" in error["message"]
            assert refused.headers["etag"] == current
        unchanged = (await client.get(url, headers=user.headers)).json()["data"]
        assert unchanged["title"] == "A task"
        assert unchanged["completed"] is False
        allowed = await client.request(
            method, url + suffix, json=body, headers=with_header(user, "If-Match", f'"x", {current}')
        )
        assert allowed.status_code == 200, allowed.text
        if method == "DELETE":
            assert (await client.get(url, headers=user.headers)).status_code == 404
        else:
            assert allowed.headers["etag"] not in (old, current)

    async def test_if_match_star_and_no_header_behave_as_before(self, client, user):
        created = await make_task(client, user)
        url = f"/api/{user.id}/tasks/{created.json()['data']['id']}"
        star = await client.patch(url, json={"title": "a"}, headers=with_header(user, "If-Match", "*"))
        assert star.status_code == 200
        assert (await client.patch(url, json={"title": "b"}, headers=user.headers)).json()["data"]["title"] == "b"

    async def test_if_match_on_a_missing_or_foreign_task_is_404(self, client, user, other_user):
        theirs = (await make_task(client, other_user)).json()["data"]["id"]
        for task_id in (theirs, 999999):
            response = await client.patch(
                f"/api/{user.id}/tasks/{task_id}", json={"title": "x"}, headers=with_header(user, "If-Match", "*")
            )
            assert_error(response, 404, "NOT_FOUND")

    async def test_earlier_draft_routes_share_the_etags(self, client, user):
        created = await make_task(client, user)
        task_id = created.json()["data"]["id"]
        legacy = await client.get(f"/api/tasks/{task_id}", headers=user.headers)
        assert legacy.headers["etag"] == created.headers["etag"]
        refused = await client.put(
            f"/api/tasks/{task_id}", json={"title": "x"}, headers=with_header(user, "If-Match", '"tasks.0.0"')
        )
        assert_error(refused, 412, "PRECONDITION_FAILED")

    @pytest.mark.committing  # concurrent requests: one connection cannot serve them
    async def test_two_clients_racing_an_update_one_wins_one_gets_412(self, client, user):
        created = await make_task(client, user)
        url = f"/api/{user.id}/tasks/{created.json()['data']['id']}"
        etag = (await client.get(url, headers=user.headers)).headers["etag"]
        for _ in range(3):
            responses = await asyncio.gather(
                *(
                    client.patch(url, json={"title": f"writer {n}"}, headers=with_header(user, "If-Match", etag))
                    for n in range(4)
                )
            )
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [200, 412, 412, 412], [r.text for r in responses]
            winner = next(r for r in responses if r.status_code == 200)
            final = await client.get(url, headers=user.headers)
            assert final.json()["data"]["title"] == winner.json()["data"]["title"]
            assert final.headers["etag"] == winner.headers["etag"]
            etag = final.headers["etag"]


class TestProjectETag:
    async def test_get_put_and_unpin_are_conditional(self, client, user):
        pinned = await make_project(client, user)
        url = f"/api/{user.id}/projects/{pinned.json()['data']['id']}"
        etag = pinned.headers["etag"]
        assert (await client.get(url, headers=user.headers)).headers["etag"] == etag
        assert (await client.get(url, headers=with_header(user, "If-None-Match", etag))).status_code == 304
        updated = await client.put(url, json={"display_name": "Mine"}, headers=with_header(user, "If-Match", etag))
        assert updated.status_code == 200
        new = updated.headers["etag"]
        assert new != etag
        stale = await client.put(url, json={"display_name": "Lost"}, headers=with_header(user, "If-Match", etag))
        assert_error(stale, 412, "PRECONDITION_FAILED")
        assert_error(await client.delete(url, headers=with_header(user, "If-Match", etag)), 412, "PRECONDITION_FAILED")
        assert (await client.get(url, headers=user.headers)).json()["data"]["display_name"] == "Mine"
        assert (await client.delete(url, headers=with_header(user, "If-Match", new))).status_code == 200
        assert_error(await client.get(url, headers=user.headers), 404, "NOT_FOUND")  # unpinned is gone

    async def test_reorder_changes_the_etags_of_moved_projects(self, client, user):
        first = (await make_project(client, user, "octo/one")).json()["data"]["id"]
        second = (await make_project(client, user, "octo/two")).json()["data"]["id"]
        before = (await client.get(f"/api/{user.id}/projects/{first}", headers=user.headers)).headers["etag"]
        order = await client.put(
            f"/api/{user.id}/projects/order", json={"project_ids": [second, first]}, headers=user.headers
        )
        assert order.status_code == 200
        after = (await client.get(f"/api/{user.id}/projects/{first}", headers=user.headers)).headers["etag"]
        assert after != before


# Ids the routes refuse (422): a digit that is no ASCII digit ("²".isdigit() is true), and ids beyond 32 bits.
BAD_IDS = ["²", "٣", "2147483648", "9" * 30, "0"]
CONDITIONAL_WRITES = [
    ("PUT", "/api/{uid}/tasks/{id}", {"title": "x"}, "task_id"),
    ("PATCH", "/api/{uid}/tasks/{id}", {"title": "x"}, "task_id"),
    ("PATCH", "/api/{uid}/tasks/{id}/complete", {"completed": True}, "task_id"),
    ("DELETE", "/api/{uid}/tasks/{id}", None, "task_id"),
    ("PUT", "/api/tasks/{id}", {"title": "x"}, "task_id"),
    ("PATCH", "/api/tasks/{id}", {"title": "x"}, "task_id"),
    ("DELETE", "/api/tasks/{id}", None, "task_id"),
    ("PUT", "/api/{uid}/projects/{id}", {"display_name": "x"}, "project_id"),
    ("DELETE", "/api/{uid}/projects/{id}", None, "project_id"),
    ("PUT", "/api/projects/pinned/{id}", {"display_name": "x"}, "project_id"),
    ("DELETE", "/api/projects/unpin/{id}", None, "project_id"),
]


class TestIfMatchOnAnyPathId:
    @pytest.mark.parametrize(("method", "path", "body", "field"), CONDITIONAL_WRITES)
    async def test_an_id_the_route_refuses_is_422_with_if_match_too(self, client, user, method, path, body, field):
        for bad in BAD_IDS:
            for if_match in ('"tasks.1.1"', "*"):
                response = await client.request(
                    method,
                    path.format(uid=user.id, id=bad),
                    json=body,
                    headers=with_header(user, "If-Match", if_match),
                )
                error = assert_error(response, 422, "VALIDATION_ERROR")
                assert error["field"] == field, (bad, error)

    @pytest.mark.parametrize(("method", "path", "body", "field"), CONDITIONAL_WRITES)
    async def test_an_id_the_route_reads_leniently_is_still_checked(self, client, user, method, path, body, field):
        """The route reads "+7" or "7.0" as 7: a stale If-Match must stop that write too, not be skipped."""
        created = await (make_task(client, user) if field == "task_id" else make_project(client, user))
        row_id = created.json()["data"]["id"]
        for spelled in (f"+{row_id}", f"{row_id}.0", f"0{row_id}"):
            response = await client.request(
                method,
                path.format(uid=user.id, id=spelled),
                json=body,
                headers=with_header(user, "If-Match", '"stale.0.0"'),
            )
            assert_error(response, 412, "PRECONDITION_FAILED")
            assert response.headers["etag"] == created.headers["etag"]


async def test_openapi_documents_conditional_requests(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    item = paths["/api/{user_id}/tasks/{task_id}"]
    assert "304" in item["get"]["responses"]
    for method in ("put", "patch", "delete"):
        assert "412" in item[method]["responses"]
        assert any(p["name"] == "If-Match" and p["in"] == "header" for p in item[method]["parameters"])
    assert any(p["name"] == "If-None-Match" for p in item["get"]["parameters"])
    assert "412" in paths["/api/{user_id}/projects/{project_id}"]["put"]["responses"]
