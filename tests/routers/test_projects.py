"""Pinned projects: contract §5 (without sync runs) and the routes of §6, on SQLite and PostgreSQL."""

import asyncio
import json

import pytest

from tests.conftest import UserCtx, assert_error, make_user
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
        still = await client.get(f"/api/{user.id}/projects/{project['id']}", headers=user.headers)
        assert still.json()["data"]["is_active"] is False
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
        assert list(export) == ["format", "exported_at", "project", "tasks", "sync_runs"]
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
