"""Pinned projects: contract §5 (without sync runs) and the routes of §6, on SQLite and PostgreSQL."""

import asyncio
import json

import pytest

from tests.conftest import UserCtx, assert_error, make_user
from tests.factories import make_task, post_project
from tests.factories import pin_project as pin


async def listing(client, user: UserCtx):
    response = await client.get(f"/api/{user.id}/projects", headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()


OPERATIONS = [
    ("GET", "/api/{uid}/projects", None),
    ("POST", "/api/{uid}/projects", {"github_repo_name": "a/b"}),
    ("PUT", "/api/{uid}/projects/order", {"project_ids": []}),
    ("GET", "/api/{uid}/projects/{pid}", None),
    ("PUT", "/api/{uid}/projects/{pid}", {"display_name": "x"}),
    ("DELETE", "/api/{uid}/projects/{pid}", None),
    ("GET", "/api/{uid}/projects/{pid}/export", None),
]
ITEM_OPERATIONS = [op for op in OPERATIONS if "{pid}" in op[1]]


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS)
async def test_without_token_is_401(client, user, method, path, body):
    response = await client.request(method, path.format(uid=user.id, pid=1), json=body)
    assert_error(response, 401, "NOT_AUTHENTICATED")


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS)
async def test_other_users_path_is_403(client, user, other_user, method, path, body):
    project = await pin(client, other_user)
    response = await client.request(
        method, path.format(uid=other_user.id, pid=project["id"]), json=body, headers=user.headers
    )
    assert_error(response, 403, "FORBIDDEN")
    assert (await listing(client, other_user))["meta"]["total"] == 1


@pytest.mark.parametrize(("method", "path", "body"), ITEM_OPERATIONS)
async def test_other_users_project_is_404(client, user, other_user, method, path, body):
    project = await pin(client, other_user, display_name="secret")
    response = await client.request(
        method, path.format(uid=user.id, pid=project["id"]), json=body, headers=user.headers
    )
    assert_error(response, 404, "NOT_FOUND")
    assert "secret" not in response.text
    assert (await listing(client, other_user))["data"][0]["display_name"] == "secret"


@pytest.mark.parametrize(("method", "path", "body"), ITEM_OPERATIONS)
async def test_missing_is_404_and_bad_id_is_422(client, user, method, path, body):
    assert_error(
        await client.request(method, path.format(uid=user.id, pid=424242), json=body, headers=user.headers),
        404,
        "NOT_FOUND",
    )
    assert_error(
        await client.request(method, path.format(uid=user.id, pid="x1"), json=body, headers=user.headers),
        422,
        "VALIDATION_ERROR",
    )


class TestPinProject:
    async def test_pin_derives_url_and_defaults(self, client, user):
        project = await pin(client, user, "  tiangolo/fastapi ")
        assert project["github_repo_name"] == "tiangolo/fastapi"
        assert project["github_repo_url"] == "https://github.com/tiangolo/fastapi"
        assert project["is_active"] is True
        assert project["position"] == 0
        assert project["repo_metadata"] is None
        assert project["last_synced_at"] is None
        assert project["user_id"] == user.id

    @pytest.mark.parametrize(
        "url",
        [
            "https://github.com/Octo/Hello",
            "https://github.com/octo/hello.git",
            "https://github.com/octo/hello/",
            "https://GITHUB.com/octo/hello",
        ],
    )
    async def test_given_url_is_normalised(self, client, user, url):
        project = await pin(client, user, "octo/hello", github_repo_url=url)
        assert project["github_repo_url"] == "https://github.com/octo/hello"

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"github_repo_name": "no-slash"}, "github_repo_name"),
            ({"github_repo_name": "a/b/c"}, "github_repo_name"),
            ({"github_repo_name": "-octo/repo"}, "github_repo_name"),
            ({"github_repo_name": "octo-/repo"}, "github_repo_name"),
            ({"github_repo_name": "oc--to/repo"}, "github_repo_name"),
            ({"github_repo_name": "o" * 40 + "/repo"}, "github_repo_name"),
            ({"github_repo_name": "octo_x/repo"}, "github_repo_name"),
            ({"github_repo_name": "octo/" + "r" * 101}, "github_repo_name"),
            ({"github_repo_name": "octo/."}, "github_repo_name"),
            ({"github_repo_name": "octo/.."}, "github_repo_name"),
            ({"github_repo_name": "octo/re po"}, "github_repo_name"),
            ({"github_repo_name": "octo/<script>"}, "github_repo_name"),
            ({"github_repo_name": ""}, "github_repo_name"),
            ({}, "github_repo_name"),
            ({"github_repo_name": "octo/hello", "github_repo_url": "https://github.com/octo/other"}, "github_repo_url"),
            ({"github_repo_name": "octo/hello", "github_repo_url": "javascript:alert(1)"}, "github_repo_url"),
            ({"github_repo_name": "octo/hello", "github_repo_url": "http://github.com/octo/hello"}, "github_repo_url"),
            ({"github_repo_name": "octo/hello", "github_repo_url": "https://gitlab.com/octo/hello"}, "github_repo_url"),
            (
                {"github_repo_name": "octo/hello", "github_repo_url": "https://github.com.evil.io/octo/hello"},
                "github_repo_url",
            ),
            (
                {"github_repo_name": "octo/hello", "github_repo_url": "https://github.com/octo/hello?x=1"},
                "github_repo_url",
            ),
            ({"github_repo_name": "octo/hello", "display_name": "d" * 256}, "display_name"),
            ({"github_repo_name": "octo/hello", "description": "d" * 10_001}, "description"),
            ({"github_repo_name": "octo/hello", "position": -1}, "position"),
            ({"github_repo_name": "octo/hello", "user_id": "x"}, "user_id"),
            ({"github_repo_name": "octo/hello", "is_active": False}, "is_active"),
            ({"github_repo_name": "octo/hello", "id": 7}, "id"),
            ({"github_repo_name": "octo/hello", "repo_metadata": {}}, "repo_metadata"),
        ],
    )
    async def test_invalid_bodies_are_422_and_store_nothing(self, client, user, body, field):
        response = await client.post(f"/api/{user.id}/projects", json=body, headers=user.headers)
        error = assert_error(response, 422, "VALIDATION_ERROR")
        assert error["field"] == field
        assert (await listing(client, user))["meta"]["total"] == 0

    async def test_valid_edge_names(self, client, user):
        for name in ("a/b", "o" * 39 + "/r", "a-b-c/" + "r" * 100, "x/.github", "x/_under.score-dash"):
            await pin(client, user, name)
        assert (await listing(client, user))["meta"]["total"] == 5

    async def test_same_repo_in_another_case_is_409(self, client, user, other_user):
        await pin(client, user, "Octo/Hello")
        response = await client.post(
            f"/api/{user.id}/projects", json={"github_repo_name": "octo/HELLO"}, headers=user.headers
        )
        assert_error(response, 409, "PROJECT_ALREADY_PINNED")
        await pin(client, other_user, "octo/hello")  # another user's pins are their own

    async def test_unpin_and_repin_brings_the_row_back(self, client, user):
        project = await pin(client, user, "octo/hello", display_name="Mine")
        task = await client.post(
            f"/api/{user.id}/tasks", json={"title": "t", "project_id": project["id"]}, headers=user.headers
        )
        assert task.status_code == 201
        unpinned = await client.delete(f"/api/{user.id}/projects/{project['id']}", headers=user.headers)
        assert unpinned.json() == {"success": True, "data": None, "message": "Project unpinned"}
        assert (await listing(client, user))["meta"]["total"] == 0
        assert_error(
            await client.get(f"/api/{user.id}/projects/{project['id']}", headers=user.headers), 404, "NOT_FOUND"
        )
        assert_error(
            await client.delete(f"/api/{user.id}/projects/{project['id']}", headers=user.headers), 404, "NOT_FOUND"
        )
        again = await pin(client, user, "OCTO/hello")
        assert again["id"] == project["id"]
        assert again["is_active"] is True
        assert again["display_name"] == "Mine"
        assert again["github_repo_name"] == "OCTO/hello"
        tasks = await client.get(f"/api/{user.id}/tasks?project_id={project['id']}", headers=user.headers)
        assert tasks.json()["meta"]["total"] == 1

    @pytest.mark.committing  # concurrent requests: one connection cannot serve them
    async def test_limit_of_50_and_unpin_frees_a_slot(self, client, user):
        pins = await asyncio.gather(*(pin(client, user, f"octo/r{i}") for i in range(50)))
        response = await client.post(
            f"/api/{user.id}/projects", json={"github_repo_name": "octo/r50"}, headers=user.headers
        )
        assert_error(response, 409, "PIN_LIMIT_REACHED")
        await client.delete(f"/api/{user.id}/projects/{pins[0]['id']}", headers=user.headers)
        await pin(client, user, "octo/r50")
        assert (await listing(client, user))["meta"]["total"] == 50

    @pytest.mark.committing  # concurrent requests: one connection cannot serve them
    async def test_concurrent_pins_never_exceed_the_limit(self, client):
        """45 pinned, 20 concurrent pins from separate connections: exactly 5 win, round after round."""
        rounds = 10
        for round_number in range(rounds):
            user = await make_user(client)
            await asyncio.gather(*(pin(client, user, f"seed/r{i}") for i in range(45)))
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"/api/{user.id}/projects", json={"github_repo_name": f"race/r{i}"}, headers=user.headers
                    )
                    for i in range(20)
                )
            )
            codes = sorted(r.status_code for r in responses)
            assert codes == [201] * 5 + [409] * 15, (round_number, codes)
            assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {"PIN_LIMIT_REACHED"}
            assert (await listing(client, user))["meta"]["total"] == 50

    @pytest.mark.committing  # concurrent requests: one connection cannot serve them
    async def test_concurrent_pins_of_one_repo_make_one_row(self, client, user):
        responses = await asyncio.gather(
            *(
                client.post(f"/api/{user.id}/projects", json={"github_repo_name": name}, headers=user.headers)
                for name in ["octo/same", "Octo/Same", "OCTO/SAME", "octo/same"] * 3
            )
        )
        assert sorted(r.status_code for r in responses) == [201] + [409] * 11
        assert (await listing(client, user))["meta"]["total"] == 1


class TestListProjects:
    async def test_dashboard_order_and_meta(self, client, user, other_user):
        first = await pin(client, user, "octo/one")
        second = await pin(client, user, "octo/two")
        third = await pin(client, user, "octo/three", position=0)
        await pin(client, other_user, "octo/not-mine")
        body = await listing(client, user)
        assert [p["id"] for p in body["data"]] == [first["id"], third["id"], second["id"]]
        assert body["meta"] == {"total": 3, "limit": 50, "offset": 0}  # the page size, not the count


class TestUpdateProject:
    async def test_update_bumps_last_updated(self, client, user):
        project = await pin(client, user, description="old")
        response = await client.put(
            f"/api/{user.id}/projects/{project['id']}",
            json={"display_name": "  Hello  ", "position": 4},
            headers=user.headers,
        )
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert (data["display_name"], data["position"], data["description"]) == ("Hello", 4, "old")
        assert data["last_updated"] > project["last_updated"]
        assert data["pinned_at"] == project["pinned_at"]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"github_repo_name": "other/repo"}, "github_repo_name"),
            ({"is_active": False}, "is_active"),
            ({"position": None}, "position"),
            ({"position": -3}, "position"),
            ({"display_name": "x" * 256}, "display_name"),
            ({"user_id": "x"}, "user_id"),
        ],
    )
    async def test_invalid_updates_are_422(self, client, user, body, field):
        project = await pin(client, user)
        error = assert_error(
            await client.put(f"/api/{user.id}/projects/{project['id']}", json=body, headers=user.headers),
            422,
            "VALIDATION_ERROR",
        )
        assert error["field"] == field

    async def test_unpinned_project_cannot_be_updated(self, client, user):
        project = await pin(client, user)
        await client.delete(f"/api/{user.id}/projects/{project['id']}", headers=user.headers)
        assert_error(
            await client.put(f"/api/{user.id}/projects/{project['id']}", json={"position": 1}, headers=user.headers),
            404,
            "NOT_FOUND",
        )


class TestReorderProjects:
    async def test_reorder(self, client, user):
        ids = [(await pin(client, user, f"octo/r{i}"))["id"] for i in range(3)]
        new_order = [ids[2], ids[0], ids[1]]
        response = await client.put(
            f"/api/{user.id}/projects/order", json={"project_ids": new_order}, headers=user.headers
        )
        assert response.status_code == 200, response.text
        assert [p["id"] for p in (await listing(client, user))["data"]] == new_order

    @pytest.mark.parametrize("mangle", ["missing", "duplicate", "foreign"])
    async def test_reorder_must_list_each_pin_once(self, client, user, other_user, mangle):
        ids = [(await pin(client, user, f"octo/r{i}"))["id"] for i in range(3)]
        foreign = (await pin(client, other_user, "x/y"))["id"]
        bad = {"missing": ids[:2], "duplicate": [*ids, ids[0]], "foreign": [*ids[:2], foreign]}[mangle]
        error = assert_error(
            await client.put(f"/api/{user.id}/projects/order", json={"project_ids": bad}, headers=user.headers),
            422,
            "VALIDATION_ERROR",
        )
        assert error["field"] == "project_ids"


class TestExportProject:
    async def test_export_is_a_json_attachment(self, client, user):
        project = await pin(client, user, "octo/hello-world")
        for title in ("b", "a"):
            await client.post(
                f"/api/{user.id}/tasks", json={"title": title, "project_id": project["id"]}, headers=user.headers
            )
        await client.post(f"/api/{user.id}/tasks", json={"title": "unrelated"}, headers=user.headers)
        response = await client.get(f"/api/{user.id}/projects/{project['id']}/export", headers=user.headers)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        disposition = response.headers["content-disposition"]
        assert disposition == f'attachment; filename="taskdeck-project-{project["id"]}-octo-hello-world.json"'
        export = json.loads(response.content)
        assert list(export) == ["format", "exported_at", "project", "tasks", "task_completions", "sync_runs"]
        assert export["project"] == project
        assert [t["title"] for t in export["tasks"]] == ["b", "a"]
        assert export["exported_at"].endswith("Z")
        assert isinstance(export["sync_runs"], list)


class TestTaskProjectLink:
    async def test_task_project_must_be_the_owners(self, client, user, other_user):
        foreign = await pin(client, other_user)
        response = await client.post(
            f"/api/{user.id}/tasks", json={"title": "t", "project_id": foreign["id"]}, headers=user.headers
        )
        assert assert_error(response, 422, "VALIDATION_ERROR")["field"] == "project_id"

    async def test_filter_by_project(self, client, user):
        project = await pin(client, user)
        await client.post(
            f"/api/{user.id}/tasks", json={"title": "in", "project_id": project["id"]}, headers=user.headers
        )
        await client.post(f"/api/{user.id}/tasks", json={"title": "out"}, headers=user.headers)
        body = (await client.get(f"/api/{user.id}/tasks?project_id={project['id']}", headers=user.headers)).json()
        assert [t["title"] for t in body["data"]] == ["in"]


class TestLegacyRoutes:
    async def test_earlier_draft_paths_act_on_the_tokens_user(self, client, user, other_user):
        created = await client.post("/api/projects/pin", json={"github_repo_name": "octo/legacy"}, headers=user.headers)
        assert created.status_code == 201
        project = created.json()["data"]
        pinned = await client.get("/api/projects/pinned", headers=user.headers)
        assert [p["id"] for p in pinned.json()["data"]] == [project["id"]]
        updated = await client.put(
            f"/api/projects/pinned/{project['id']}", json={"display_name": "L"}, headers=user.headers
        )
        assert updated.json()["data"]["display_name"] == "L"
        assert_error(
            await client.delete(f"/api/projects/unpin/{project['id']}", headers=other_user.headers), 404, "NOT_FOUND"
        )
        unpinned = await client.delete(f"/api/projects/unpin/{project['id']}", headers=user.headers)
        assert unpinned.json()["message"] == "Project unpinned"
        assert (await client.get("/api/projects/pinned", headers=user.headers)).json()["data"] == []
        assert_error(await client.get("/api/projects/pinned"), 401, "NOT_AUTHENTICATED")


# Every route that names one project (its sync runs: tests/routers/test_sync.py, which runs them).
PROJECT_ROUTES = [
    ("GET", "/api/{uid}/projects/{pid}", None),
    ("PUT", "/api/{uid}/projects/{pid}", {"display_name": "x"}),
    ("DELETE", "/api/{uid}/projects/{pid}", None),
    ("GET", "/api/{uid}/projects/{pid}/export", None),
    ("POST", "/api/{uid}/projects/{pid}/sync", None),
    ("GET", "/api/{uid}/projects/{pid}/sync", None),
    ("PUT", "/api/projects/pinned/{pid}", {"display_name": "x"}),
    ("DELETE", "/api/projects/unpin/{pid}", None),
]
UNPIN_ROUTES = ["/api/{uid}/projects/{pid}", "/api/projects/unpin/{pid}"]
PIN_ROUTES = ["/api/{uid}/projects", "/api/projects/pin"]


async def unpin(client, user: UserCtx, project_id: int, route: str = UNPIN_ROUTES[0]) -> None:
    response = await client.delete(route.format(uid=user.id, pid=project_id), headers=user.headers)
    assert response.status_code == 200, response.text


async def repin(client, user: UserCtx, repo: str, route: str = PIN_ROUTES[0]) -> dict:
    response = await client.post(route.format(uid=user.id), json={"github_repo_name": repo}, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()["data"]


class TestUnpinnedIsGone:
    """Contract §9: after DELETE the project answers 404 everywhere and is in no list, until pinned again."""

    @pytest.mark.parametrize("route", UNPIN_ROUTES)
    async def test_every_route_of_an_unpinned_project_is_404(self, client, user, route):
        created = await post_project(client, user, "octo/hidden", display_name="Hidden name")
        project, etag = created.json()["data"], created.headers["etag"]
        await unpin(client, user, project["id"], route)
        for method, path, body in PROJECT_ROUTES:
            url = path.format(uid=user.id, pid=project["id"])
            response = await client.request(method, url, json=body, headers=user.headers)
            assert_error(response, 404, "NOT_FOUND")
            assert "Hidden name" not in response.text, (method, path)
        # A cached copy is not revalidated (304) nor a precondition checked (412): the project is gone.
        url = f"/api/{user.id}/projects/{project['id']}"
        assert_error(await client.get(url, headers={**user.headers, "If-None-Match": etag}), 404, "NOT_FOUND")
        conditional = await client.put(url, json={"position": 3}, headers={**user.headers, "If-Match": etag})
        assert_error(conditional, 404, "NOT_FOUND")

    @pytest.mark.parametrize("route", UNPIN_ROUTES)
    async def test_an_unpinned_project_is_in_no_list(self, client, user, route):
        kept = await pin(client, user, "octo/kept")
        gone = await pin(client, user, "octo/gone")
        await unpin(client, user, gone["id"], route)
        for path in ("/api/{uid}/projects", "/api/projects/pinned"):
            body = (await client.get(path.format(uid=user.id), headers=user.headers)).json()
            assert [p["id"] for p in body["data"]] == [kept["id"]], path
            assert body["meta"]["total"] == 1
        # The dashboard order lists pinned projects only: naming the unpinned one is refused.
        reorder = await client.put(
            f"/api/{user.id}/projects/order", json={"project_ids": [kept["id"], gone["id"]]}, headers=user.headers
        )
        assert assert_error(reorder, 422, "VALIDATION_ERROR")["field"] == "project_ids"
        ordered = await client.put(
            f"/api/{user.id}/projects/order", json={"project_ids": [kept["id"]]}, headers=user.headers
        )
        assert [p["id"] for p in ordered.json()["data"]] == [kept["id"]]

    @pytest.mark.parametrize("route", PIN_ROUTES)
    async def test_repin_brings_back_the_same_id_and_its_tasks(self, client, user, route):
        project = await pin(client, user, "octo/back", display_name="Back", description="kept")
        task = await make_task(client, user, title="linked", project_id=project["id"])
        await unpin(client, user, project["id"])
        again = await repin(client, user, "Octo/Back", route)
        assert again["id"] == project["id"]
        assert (again["display_name"], again["description"], again["is_active"]) == ("Back", "kept", True)
        fetched = await client.get(f"/api/{user.id}/projects/{project['id']}", headers=user.headers)
        assert fetched.json()["data"]["id"] == project["id"]
        assert [p["id"] for p in (await listing(client, user))["data"]] == [project["id"]]
        tasks = await client.get(f"/api/{user.id}/tasks", params={"project_id": project["id"]}, headers=user.headers)
        assert [t["id"] for t in tasks.json()["data"]] == [task["id"]]
        export = await client.get(f"/api/{user.id}/projects/{project['id']}/export", headers=user.headers)
        assert [t["id"] for t in export.json()["tasks"]] == [task["id"]]

    async def test_a_task_keeps_its_link_but_no_new_task_can_link_an_unpinned_project(self, client, user):
        project = await pin(client, user, "octo/linked")
        task = await make_task(client, user, title="linked", project_id=project["id"])
        other = await make_task(client, user, title="other")
        await unpin(client, user, project["id"])
        # The task still says where it belongs, so that a re-pin brings it back with the project.
        url = f"/api/{user.id}/tasks/{task['id']}"
        assert (await client.get(url, headers=user.headers)).json()["data"]["project_id"] == project["id"]
        filtered = await client.get(f"/api/{user.id}/tasks", params={"project_id": project["id"]}, headers=user.headers)
        assert [t["id"] for t in filtered.json()["data"]] == [task["id"]]
        # Sending the task back as it was read keeps working; pointing a task at the project anew does not.
        resent = await client.put(url, json={"title": "renamed", "project_id": project["id"]}, headers=user.headers)
        assert resent.status_code == 200, resent.text
        assert resent.json()["data"]["project_id"] == project["id"]
        refused = [
            await client.post(
                f"/api/{user.id}/tasks", json={"title": "new", "project_id": project["id"]}, headers=user.headers
            ),
            await client.patch(
                f"/api/{user.id}/tasks/{other['id']}", json={"project_id": project["id"]}, headers=user.headers
            ),
        ]
        for response in refused:
            assert assert_error(response, 422, "VALIDATION_ERROR")["field"] == "project_id"
        unlinked = await client.patch(url, json={"project_id": None}, headers=user.headers)
        assert unlinked.json()["data"]["project_id"] is None

    async def test_only_pinned_projects_count_towards_the_limit(self, client, user):
        gone = await pin(client, user, "octo/gone")
        await unpin(client, user, gone["id"])
        pins = [await pin(client, user, f"octo/r{i}") for i in range(50)]  # 51 rows, 50 of them pinned
        # At the limit, re-pinning is a new pin like any other: refused, and the project stays gone.
        response = await client.post(
            f"/api/{user.id}/projects", json={"github_repo_name": "octo/gone"}, headers=user.headers
        )
        assert_error(response, 409, "PIN_LIMIT_REACHED")
        assert_error(await client.get(f"/api/{user.id}/projects/{gone['id']}", headers=user.headers), 404, "NOT_FOUND")
        await unpin(client, user, pins[0]["id"])
        assert (await repin(client, user, "octo/gone"))["id"] == gone["id"]
        assert (await listing(client, user))["meta"]["total"] == 50
