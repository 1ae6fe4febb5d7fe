"""Tasks: contract §4 and the routes of §6, on SQLite and PostgreSQL."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import assert_error, make_user
from tests.factories import make_task

# Every owned operation: (method, path template, body). `{uid}` and `{tid}` are filled in per case.
OPERATIONS = [
    ("GET", "/api/{uid}/tasks", None),
    ("POST", "/api/{uid}/tasks", {"title": "x"}),
    ("GET", "/api/{uid}/tasks/search?q=x", None),
    ("GET", "/api/{uid}/tasks/{tid}", None),
    ("PUT", "/api/{uid}/tasks/{tid}", {"title": "y"}),
    ("PATCH", "/api/{uid}/tasks/{tid}", {"title": "y"}),
    ("PATCH", "/api/{uid}/tasks/{tid}/complete", {"completed": True}),
    ("DELETE", "/api/{uid}/tasks/{tid}", None),
]
ITEM_OPERATIONS = [op for op in OPERATIONS if "{tid}" in op[1]]


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS)
async def test_without_token_is_401(client, user, method, path, body):
    response = await client.request(method, path.format(uid=user.id, tid=1), json=body)
    assert_error(response, 401, "NOT_AUTHENTICATED")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS)
async def test_other_users_path_is_403_before_any_data(client, user, other_user, method, path, body):
    task = await make_task(client, other_user)
    for uid in (other_user.id, "nobody-at-all"):
        response = await client.request(method, path.format(uid=uid, tid=task["id"]), json=body, headers=user.headers)
        assert_error(response, 403, "FORBIDDEN")
    assert (await client.get(f"/api/{other_user.id}/tasks/{task['id']}", headers=other_user.headers)).json()["data"][
        "title"
    ] == "A task"


@pytest.mark.parametrize(("method", "path", "body"), ITEM_OPERATIONS)
async def test_other_users_task_under_own_path_is_404(client, user, other_user, method, path, body):
    task = await make_task(client, other_user, title="secret")
    response = await client.request(method, path.format(uid=user.id, tid=task["id"]), json=body, headers=user.headers)
    assert_error(response, 404, "NOT_FOUND")
    assert "secret" not in response.text
    unchanged = await client.get(f"/api/{other_user.id}/tasks/{task['id']}", headers=other_user.headers)
    assert unchanged.json()["data"]["title"] == "secret"
    assert unchanged.json()["data"]["completed"] is False


@pytest.mark.parametrize(("method", "path", "body"), ITEM_OPERATIONS)
async def test_missing_task_is_404_and_bad_id_is_422(client, user, method, path, body):
    assert_error(
        await client.request(method, path.format(uid=user.id, tid=999999), json=body, headers=user.headers),
        404,
        "NOT_FOUND",
    )
    error = assert_error(
        await client.request(method, path.format(uid=user.id, tid="abc"), json=body, headers=user.headers),
        422,
        "VALIDATION_ERROR",
    )
    assert error["field"] == "task_id"


class TestCreateTask:
    async def test_defaults_and_trimmed_title(self, client, user):
        task = await make_task(client, user, title="  Write notes \n")
        assert task["title"] == "Write notes"
        assert task["status"] == "pending"
        assert task["priority"] == "medium"
        assert task["completed"] is False
        assert task["completed_at"] is None
        assert task["user_id"] == user.id
        assert task["created_at"].endswith("Z")

    async def test_text_is_stored_exactly(self, client, user):
        text = "<script>alert('x')</script> & ünïcode ✓ 'quotes' \"dq\""
        task = await make_task(client, user, title=text, description=text)
        fetched = await client.get(f"/api/{user.id}/tasks/{task['id']}", headers=user.headers)
        assert fetched.json()["data"]["title"] == text
        assert fetched.json()["data"]["description"] == text

    async def test_due_date_keeps_the_instant(self, client, user):
        task = await make_task(client, user, due_date="2026-12-01T12:00:00+02:00")
        assert task["due_date"] == "2026-12-01T10:00:00Z"

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "title"),
            ({"title": "   "}, "title"),
            ({"title": "x" * 256}, "title"),
            ({"title": "ok", "description": "d" * 10_001}, "description"),
            ({"title": "ok", "status": "done"}, "status"),
            ({"title": "ok", "priority": "urgent"}, "priority"),
            ({"title": "ok", "due_date": "tomorrow"}, "due_date"),
            ({"title": "ok", "due_date": "2026-12-01T12:00:00"}, "due_date"),
            ({"title": "ok", "user_id": "someone-else"}, "user_id"),
            ({"title": "ok", "id": 5}, "id"),
            ({"title": "ok", "created_at": "2026-01-01T00:00:00Z"}, "created_at"),
            ({"title": "ok", "completed_at": "2026-01-01T00:00:00Z"}, "completed_at"),
            ({"title": "ok", "project_id": 0}, "project_id"),
            ({"title": "ok", "project_id": 12345}, "project_id"),
            ({"title": "ok", "completed": True, "status": "pending"}, "completed"),
        ],
    )
    async def test_invalid_bodies_are_422_and_store_nothing(self, client, user, body, field):
        error = assert_error(
            await client.post(f"/api/{user.id}/tasks", json=body, headers=user.headers), 422, "VALIDATION_ERROR"
        )
        assert error["field"] == field
        listing = await client.get(f"/api/{user.id}/tasks", headers=user.headers)
        assert listing.json()["meta"]["total"] == 0

    async def test_every_failing_field_is_listed(self, client, user):
        body = {"title": "", "priority": "urgent", "user_id": "x"}
        error = assert_error(
            await client.post(f"/api/{user.id}/tasks", json=body, headers=user.headers), 422, "VALIDATION_ERROR"
        )
        assert {d["field"] for d in error["details"]} == {"title", "priority", "user_id"}

    async def test_malformed_json_is_400(self, client, user):
        response = await client.post(
            f"/api/{user.id}/tasks", content=b"{not json", headers={**user.headers, "Content-Type": "application/json"}
        )
        assert_error(response, 400, "MALFORMED_REQUEST")

    @pytest.mark.parametrize(
        ("body", "status", "completed"),
        [
            ({"completed": True}, "completed", True),
            ({"status": "completed"}, "completed", True),
            ({"status": "in_progress"}, "in_progress", False),
            ({"completed": False}, "pending", False),
            ({"completed": True, "status": "completed"}, "completed", True),
            ({"completed": False, "status": "in_progress"}, "in_progress", False),
        ],
    )
    async def test_status_and_completed_agree(self, client, user, body, status, completed):
        task = await make_task(client, user, **body)
        assert (task["status"], task["completed"]) == (status, completed)
        assert (task["completed_at"] is not None) == completed

    @pytest.mark.committing  # concurrent requests: one connection cannot serve them
    async def test_concurrent_creates_all_land_with_distinct_ids(self, client, user):
        responses = await asyncio.gather(
            *(client.post(f"/api/{user.id}/tasks", json={"title": f"t{i}"}, headers=user.headers) for i in range(100))
        )
        assert [r.status_code for r in responses] == [201] * 100
        ids = {r.json()["data"]["id"] for r in responses}
        assert len(ids) == 100
        listing = await client.get(f"/api/{user.id}/tasks?limit=1", headers=user.headers)
        assert listing.json()["meta"]["total"] == 100


class TestGetTask:
    async def test_returns_the_task(self, client, user):
        task = await make_task(client, user, title="Mine", priority="high")
        response = await client.get(f"/api/{user.id}/tasks/{task['id']}", headers=user.headers)
        assert response.status_code == 200
        assert response.json() == {"success": True, "data": task, "message": None}


class TestUpdateTask:
    @pytest.mark.parametrize("method", ["PUT", "PATCH"])
    async def test_partial_update_changes_only_what_is_sent(self, client, user, method):
        task = await make_task(client, user, title="Old", description="keep", priority="low")
        response = await client.request(
            method, f"/api/{user.id}/tasks/{task['id']}", json={"title": " New "}, headers=user.headers
        )
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert data["title"] == "New"
        assert data["description"] == "keep"
        assert data["priority"] == "low"
        assert data["updated_at"] > task["updated_at"]
        assert data["created_at"] == task["created_at"]

    async def test_description_and_due_date_can_be_cleared(self, client, user):
        task = await make_task(client, user, description="d", due_date="2026-12-01T00:00:00Z")
        response = await client.patch(
            f"/api/{user.id}/tasks/{task['id']}", json={"description": None, "due_date": None}, headers=user.headers
        )
        assert response.json()["data"]["description"] is None
        assert response.json()["data"]["due_date"] is None

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"title": None}, "title"),
            ({"title": ""}, "title"),
            ({"status": None}, "status"),
            ({"completed": None}, "completed"),
            ({"user_id": "x"}, "user_id"),
            ({"id": 9}, "id"),
            ({"updated_at": "2026-01-01T00:00:00Z"}, "updated_at"),
            ({"completed": True, "status": "in_progress"}, "completed"),
        ],
    )
    async def test_invalid_updates_are_422_and_change_nothing(self, client, user, body, field):
        task = await make_task(client, user, title="Same")
        error = assert_error(
            await client.patch(f"/api/{user.id}/tasks/{task['id']}", json=body, headers=user.headers),
            422,
            "VALIDATION_ERROR",
        )
        assert error["field"] == field
        after = await client.get(f"/api/{user.id}/tasks/{task['id']}", headers=user.headers)
        assert after.json()["data"] == task

    @pytest.mark.parametrize(
        ("start", "body", "status", "completed"),
        [
            ({}, {"status": "completed"}, "completed", True),
            ({}, {"completed": True}, "completed", True),
            ({}, {"status": "in_progress"}, "in_progress", False),
            ({"completed": True}, {"completed": False}, "pending", False),
            ({"completed": True}, {"status": "in_progress"}, "in_progress", False),
            ({"completed": True}, {"status": "pending"}, "pending", False),
            ({"status": "in_progress"}, {"completed": False}, "in_progress", False),
            ({"status": "in_progress"}, {"completed": True}, "completed", True),
            ({"completed": True}, {"title": "just a rename"}, "completed", True),
        ],
    )
    async def test_status_completed_matrix(self, client, user, start, body, status, completed):
        task = await make_task(client, user, **start)
        response = await client.patch(f"/api/{user.id}/tasks/{task['id']}", json=body, headers=user.headers)
        data = response.json()["data"]
        assert (data["status"], data["completed"]) == (status, completed)
        assert (data["completed_at"] is not None) == completed


class TestCompleteTask:
    async def test_complete_then_reopen(self, client, user):
        task = await make_task(client, user, status="in_progress")
        done = await client.patch(
            f"/api/{user.id}/tasks/{task['id']}/complete", json={"completed": True}, headers=user.headers
        )
        assert done.json()["data"]["status"] == "completed"
        assert done.json()["data"]["completed"] is True
        first_completed_at = done.json()["data"]["completed_at"]
        assert first_completed_at is not None
        again = await client.patch(
            f"/api/{user.id}/tasks/{task['id']}/complete", json={"completed": True}, headers=user.headers
        )
        assert again.json()["data"]["completed_at"] == first_completed_at
        reopened = await client.patch(
            f"/api/{user.id}/tasks/{task['id']}/complete", json={"completed": False}, headers=user.headers
        )
        assert reopened.json()["data"]["status"] == "pending"
        assert reopened.json()["data"]["completed"] is False
        assert reopened.json()["data"]["completed_at"] is None
        assert reopened.json()["message"] == "Task reopened"

    async def test_bad_body_is_422(self, client, user):
        task = await make_task(client, user)
        for body in ({"completed": "perhaps"}, {"completed": True, "status": "pending"}):
            assert_error(
                await client.patch(f"/api/{user.id}/tasks/{task['id']}/complete", json=body, headers=user.headers),
                422,
                "VALIDATION_ERROR",
            )

    @pytest.mark.committing  # concurrent requests: one connection cannot serve them
    async def test_concurrent_completes_and_updates_stay_consistent(self, client, user):
        task = await make_task(client, user)
        url = f"/api/{user.id}/tasks/{task['id']}"
        calls = []
        for i in range(30):
            if i % 3 == 0:
                calls.append(client.patch(url + "/complete", json={"completed": True}, headers=user.headers))
            elif i % 3 == 1:
                calls.append(client.patch(url + "/complete", json={"completed": False}, headers=user.headers))
            else:
                calls.append(client.patch(url, json={"status": "in_progress"}, headers=user.headers))
        assert {r.status_code for r in await asyncio.gather(*calls)} == {200}
        final = (await client.get(url, headers=user.headers)).json()["data"]
        assert final["completed"] == (final["status"] == "completed")
        assert (final["completed_at"] is not None) == final["completed"]


class TestDeleteTask:
    async def test_delete_then_gone(self, client, user):
        task = await make_task(client, user)
        response = await client.delete(f"/api/{user.id}/tasks/{task['id']}", headers=user.headers)
        assert response.status_code == 200
        assert response.json() == {"success": True, "data": None, "message": "Task deleted"}
        assert_error(await client.get(f"/api/{user.id}/tasks/{task['id']}", headers=user.headers), 404, "NOT_FOUND")
        assert_error(await client.delete(f"/api/{user.id}/tasks/{task['id']}", headers=user.headers), 404, "NOT_FOUND")


class TestListTasks:
    async def seed(self, client, user):
        now = datetime.now(UTC)
        specs = [
            {"title": "Alpha report", "priority": "low", "due_date": (now + timedelta(days=1)).isoformat()},
            {
                "title": "beta review",
                "priority": "high",
                "status": "in_progress",
                "due_date": (now + timedelta(days=3)).isoformat(),
            },
            {"title": "Gamma", "priority": "medium", "completed": True, "description": "about the report"},
            {"title": "delta 100% done_ok", "priority": "high", "due_date": (now - timedelta(days=2)).isoformat()},
        ]
        return [await make_task(client, user, **spec) for spec in specs], now

    async def list(self, client, user, query=""):
        response = await client.get(f"/api/{user.id}/tasks{query}", headers=user.headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def test_default_is_newest_first_with_meta(self, client, user, other_user):
        tasks, _ = await self.seed(client, user)
        await make_task(client, other_user, title="not mine")
        body = await self.list(client, user)
        assert [t["id"] for t in body["data"]] == [t["id"] for t in reversed(tasks)]
        assert body["meta"] == {"total": 4, "limit": 50, "offset": 0}

    @pytest.mark.parametrize(
        ("query", "titles"),
        [
            ("?status=in_progress", {"beta review"}),
            ("?status=completed", {"Gamma"}),
            ("?priority=high", {"beta review", "delta 100% done_ok"}),
            ("?completed=true", {"Gamma"}),
            ("?completed=false", {"Alpha report", "beta review", "delta 100% done_ok"}),
            ("?q=REPORT", {"Alpha report", "Gamma"}),
            ("?q=report&priority=low", {"Alpha report"}),
            ("?q=100%25", {"delta 100% done_ok"}),
            ("?q=%25", {"delta 100% done_ok"}),
            ("?q=_", {"delta 100% done_ok"}),
            ("?q=o_k", set()),
            ("?q=\\", set()),
        ],
    )
    async def test_filters(self, client, user, query, titles):
        await self.seed(client, user)
        body = await self.list(client, user, query)
        assert {t["title"] for t in body["data"]} == titles
        assert body["meta"]["total"] == len(titles)

    async def test_due_window(self, client, user):
        _, now = await self.seed(client, user)
        after = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        before = (now + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = await self.list(client, user, f"?due_after={after}&due_before={before}")
        assert [t["title"] for t in body["data"]] == ["Alpha report"]
        naive = (now + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S")
        body = await self.list(client, user, f"?due_before={naive}")
        assert {t["title"] for t in body["data"]} == {"Alpha report", "delta 100% done_ok"}

    @pytest.mark.parametrize(
        ("sort", "expected"),
        [
            ("title", ["Alpha report", "beta review", "delta 100% done_ok", "Gamma"]),
            ("-title", ["Gamma", "delta 100% done_ok", "beta review", "Alpha report"]),
            ("priority", ["Alpha report", "Gamma", "beta review", "delta 100% done_ok"]),
            ("-priority", ["delta 100% done_ok", "beta review", "Gamma", "Alpha report"]),
            ("created_at", ["Alpha report", "beta review", "Gamma", "delta 100% done_ok"]),
            ("due_date", ["delta 100% done_ok", "Alpha report", "beta review", "Gamma"]),
            ("-due_date", ["beta review", "Alpha report", "delta 100% done_ok", "Gamma"]),
        ],
    )
    async def test_sorts(self, client, user, sort, expected):
        """Titles sort case-insensitively; tasks without a due date come last both ways."""
        await self.seed(client, user)
        titles = [t["title"] for t in (await self.list(client, user, f"?sort={sort}"))["data"]]
        assert titles == expected

    async def test_updated_at_sorts(self, client, user):
        tasks, _ = await self.seed(client, user)
        await client.patch(f"/api/{user.id}/tasks/{tasks[0]['id']}", json={"title": "touched"}, headers=user.headers)
        assert (await self.list(client, user, "?sort=-updated_at"))["data"][0]["title"] == "touched"
        assert (await self.list(client, user, "?sort=updated_at"))["data"][-1]["title"] == "touched"

    async def test_pagination_edges(self, client, user):
        await self.seed(client, user)
        one = await self.list(client, user, "?limit=1&offset=1&sort=created_at")
        assert [t["title"] for t in one["data"]] == ["beta review"]
        assert one["meta"] == {"total": 4, "limit": 1, "offset": 1}
        hundred = await self.list(client, user, "?limit=100")
        assert len(hundred["data"]) == 4
        past = await self.list(client, user, "?offset=10")
        assert past["data"] == []
        assert past["meta"]["total"] == 4

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("?limit=101", "limit"),
            ("?limit=0", "limit"),
            ("?offset=-1", "offset"),
            ("?sort=owner", "sort"),
            ("?status=done", "status"),
            ("?completed=maybe", "completed"),
            ("?due_before=soon", "due_before"),
            ("?project_id=0", "project_id"),
        ],
    )
    async def test_bad_query_is_422(self, client, user, query, field):
        error = assert_error(
            await client.get(f"/api/{user.id}/tasks{query}", headers=user.headers), 422, "VALIDATION_ERROR"
        )
        assert error["field"] == field


class TestSearchTasks:
    async def test_search_needs_q(self, client, user):
        error = assert_error(
            await client.get(f"/api/{user.id}/tasks/search", headers=user.headers), 422, "VALIDATION_ERROR"
        )
        assert error["field"] == "q"

    async def test_search_matches_title_and_description(self, client, user):
        await make_task(client, user, title="Buy milk")
        await make_task(client, user, title="Chores", description="milk and bread")
        await make_task(client, user, title="Other")
        body = (await client.get(f"/api/{user.id}/tasks/search?q=MILK&sort=title", headers=user.headers)).json()
        assert [t["title"] for t in body["data"]] == ["Buy milk", "Chores"]
        assert body["meta"]["total"] == 2

    async def test_a_search_matches_within_a_field_never_across_the_two(self, client, user):
        """PostgreSQL searches one stored text, title and description joined by a line break (revision 0014): a
        text with a line break must still match inside one field only, never title's end and description's start."""
        await make_task(client, user, title="Across one", description="line two")
        await make_task(client, user, title="Inside", description="step one\nline two")
        for path in (f"/api/{user.id}/tasks/search", f"/api/{user.id}/tasks"):
            body = (await client.get(path, params={"q": "ONE\nLINE"}, headers=user.headers)).json()
            assert [t["title"] for t in body["data"]] == ["Inside"], path
            assert body["meta"]["total"] == 1
            body = (await client.get(path, params={"q": "one"}, headers=user.headers)).json()
            assert body["meta"]["total"] == 2

    async def test_a_search_folds_case_beyond_ascii_on_postgresql(self, app, client, user):
        """As ILIKE does: PostgreSQL lowers both sides with the database's collation (SQLite's lower() folds ASCII
        only, and so does its search)."""
        await make_task(client, user, title="École du soir", description="ÜBER alles")
        async with app.state.engine.connect() as conn:
            postgresql = conn.dialect.name == "postgresql"
        for q in ("éCOLE", "über", "SOIR"):
            body = (await client.get(f"/api/{user.id}/tasks/search", params={"q": q}, headers=user.headers)).json()
            assert body["meta"]["total"] == (1 if postgresql or q == "SOIR" else 0), q

    async def test_every_search_is_planned_for_its_text(self, app, client, user):
        """No search statement is a prepared one: PostgreSQL plans an unprepared statement for its values, so the
        plan is chosen for the text's trigrams and the owner (specs/performance.md, "Search"). psycopg prepares a
        query run 5 times on a connection (its default `prepare_threshold`), and after 5 more runs PostgreSQL may
        switch it to a generic plan, chosen without the values, the same for every text and owner (backend/db.py
        turns preparing off)."""
        await make_task(client, user, title="Invoice for March")
        await make_task(client, user, title="Other", description="the INVOICE is paid")
        for _ in range(12):  # past both thresholds: psycopg's 5 runs, then PostgreSQL's 5 custom plans
            body = (await client.get(f"/api/{user.id}/tasks/search?q=invoice", headers=user.headers)).json()
            assert body["meta"]["total"] == 2
        async with app.state.engine.connect() as conn:  # the connection the requests ran on (a rolled-back test)
            if conn.dialect.name != "postgresql":
                return  # SQLite has no server-side plans to keep
            prepared = (await conn.exec_driver_sql("SELECT statement FROM pg_prepared_statements")).scalars().all()
        assert [statement for statement in prepared if "search_text" in statement or "ILIKE" in statement] == []


class TestLegacyRoutes:
    async def test_same_behaviour_on_the_tokens_user(self, client, user, other_user):
        created = await client.post("/api/tasks", json={"title": "legacy"}, headers=user.headers)
        assert created.status_code == 201
        task = created.json()["data"]
        assert task["user_id"] == user.id
        listing = await client.get("/api/tasks", headers=user.headers)
        assert [t["id"] for t in listing.json()["data"]] == [task["id"]]
        found = await client.get("/api/tasks/search?q=leg", headers=user.headers)
        assert found.json()["meta"]["total"] == 1
        for method in ("PUT", "PATCH"):
            updated = await client.request(
                method, f"/api/tasks/{task['id']}", json={"priority": "high"}, headers=user.headers
            )
            assert updated.json()["data"]["priority"] == "high"
        assert (await client.get(f"/api/tasks/{task['id']}", headers=user.headers)).status_code == 200
        assert_error(await client.get(f"/api/tasks/{task['id']}", headers=other_user.headers), 404, "NOT_FOUND")
        assert_error(await client.get("/api/tasks"), 401, "NOT_AUTHENTICATED")
        deleted = await client.delete(f"/api/tasks/{task['id']}", headers=user.headers)
        assert deleted.json()["message"] == "Task deleted"

    async def test_user_data_is_isolated(self, client):
        first, second = await make_user(client), await make_user(client)
        await client.post("/api/tasks", json={"title": "first's"}, headers=first.headers)
        assert (await client.get("/api/tasks", headers=second.headers)).json()["meta"]["total"] == 0


# Instants a due date cannot name: outside years 1-9999 once in UTC (Python's datetime cannot hold them), or
# within a day of those ends (PostgreSQL would hand them back in its session's time zone, up to 14 hours off).
OUT_OF_RANGE = [
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+00:01",
    "0001-01-01T00:00:00Z",
    "9999-12-31T00:00:00Z",
]
# The farthest instants that can be named, however they are written: kept, and answered in UTC.
EDGES = [
    ("0001-01-02T14:00:00+14:00", "0001-01-02T00:00:00Z"),
    ("0001-01-02T00:00:00Z", "0001-01-02T00:00:00Z"),
    ("9999-12-30T09:59:59-14:00", "9999-12-30T23:59:59Z"),
]


class TestDueDateRange:
    @pytest.mark.parametrize("value", OUT_OF_RANGE)
    async def test_out_of_range_is_422_on_every_route(self, client, user, value):
        task = await make_task(client, user, title="Kept")
        writes = [
            ("POST", f"/api/{user.id}/tasks"),
            ("POST", "/api/tasks"),
            ("PUT", f"/api/{user.id}/tasks/{task['id']}"),
            ("PATCH", f"/api/{user.id}/tasks/{task['id']}"),
            ("PUT", f"/api/tasks/{task['id']}"),
            ("PATCH", f"/api/tasks/{task['id']}"),
        ]
        for method, path in writes:
            response = await client.request(method, path, json={"title": "x", "due_date": value}, headers=user.headers)
            assert assert_error(response, 422, "VALIDATION_ERROR")["field"] == "due_date", (method, path)
        lists = [f"/api/{user.id}/tasks", f"/api/{user.id}/tasks/search", "/api/tasks", "/api/tasks/search"]
        for path in lists:
            for name in ("due_before", "due_after"):
                response = await client.get(path, params={name: value, "q": "x"}, headers=user.headers)
                assert assert_error(response, 422, "VALIDATION_ERROR")["field"] == name, (path, name)
        listing = await client.get(f"/api/{user.id}/tasks", headers=user.headers)
        assert listing.json()["data"] == [task]

    @pytest.mark.parametrize(("value", "stored"), EDGES)
    async def test_the_farthest_instants_are_kept_and_filter(self, client, user, value, stored):
        task = await make_task(client, user, due_date=value)
        assert task["due_date"] == stored
        url = f"/api/{user.id}/tasks"
        patched = await client.patch(f"{url}/{task['id']}", json={"due_date": value}, headers=user.headers)
        assert patched.json()["data"]["due_date"] == stored
        for name in ("due_before", "due_after"):  # both strict: the task's own instant matches neither
            response = await client.get(url, params={name: value}, headers=user.headers)
            assert response.status_code == 200, response.text
            assert response.json()["meta"]["total"] == 0
