"""Recurring tasks, time zones and due strings through HTTP (issue 18, contract §10)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import assert_error
from tests.factories import authed, make_task


async def complete(as_user, task: dict) -> dict:
    response = await as_user.patch(f"/api/{{uid}}/tasks/{task['id']}/complete")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def berlin(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).astimezone(ZoneInfo("Europe/Berlin"))


class TestRecurrence:
    async def test_weekly_0900_berlin_stays_0900_local_across_the_october_change(self, client, user):
        as_user = authed(client, user)
        # Monday 19 October 2026, 09:00 CEST (07:00 UTC); clocks go back on Sunday 25 October.
        task = await make_task(
            client,
            user,
            due_date="2026-10-19T07:00:00Z",
            due_timezone="Europe/Berlin",
            recurrence="freq=weekly;byday=mo",
        )
        assert task["recurrence"] == "FREQ=WEEKLY;BYDAY=MO"  # stored in its canonical form
        done = await complete(as_user, task)
        assert done["completed"] is False
        assert done["status"] == "pending"
        assert done["due_date"] == "2026-10-26T08:00:00Z"  # 09:00 CET
        assert berlin(done["due_date"]).hour == 9
        again = await complete(as_user, done)
        assert again["due_date"] == "2026-11-02T08:00:00Z"

    async def test_completions_are_recorded_newest_first_and_paged(self, client, user):
        as_user = authed(client, user)
        task = await make_task(client, user, due_date="2026-01-01T09:00:00Z", recurrence="FREQ=DAILY")
        for _ in range(3):
            await complete(as_user, task)
        url = f"/api/{{uid}}/tasks/{task['id']}/completions"
        body = (await as_user.get(url)).json()
        assert body["meta"]["total"] == 3
        assert [c["due_date"] for c in body["data"]] == [
            "2026-01-03T09:00:00Z",
            "2026-01-02T09:00:00Z",
            "2026-01-01T09:00:00Z",
        ]
        assert all(c["task_id"] == task["id"] for c in body["data"])
        second = (await as_user.get(url + "?limit=1&offset=1")).json()
        assert [c["due_date"] for c in second["data"]] == ["2026-01-02T09:00:00Z"]
        past = (await as_user.get(url + "?offset=5")).json()
        assert past["data"] == []
        assert past["meta"]["total"] == 3

    async def test_an_exhausted_rule_completes_the_task_for_good(self, client, user):
        as_user = authed(client, user)
        task = await make_task(client, user, due_date="2026-03-01T10:00:00Z", recurrence="FREQ=DAILY;COUNT=2")
        first = await complete(as_user, task)
        assert first["completed"] is False
        assert first["due_date"] == "2026-03-02T10:00:00Z"
        last = await complete(as_user, first)
        assert last["completed"] is True
        assert last["due_date"] == "2026-03-02T10:00:00Z"
        total = (await as_user.get(f"/api/{{uid}}/tasks/{task['id']}/completions")).json()["meta"]["total"]
        assert total == 2

    async def test_completing_by_patch_advances_too_and_reopens_subtasks(self, client, user):
        as_user = authed(client, user)
        task = await make_task(client, user, due_date="2026-05-04T06:00:00Z", recurrence="FREQ=WEEKLY")
        step = await make_task(client, user, parent_id=task["id"], completed=True)
        response = await as_user.patch(f"/api/{{uid}}/tasks/{task['id']}", json={"completed": True})
        assert response.json()["data"]["due_date"] == "2026-05-11T06:00:00Z"
        assert response.json()["data"]["completed"] is False
        assert (await as_user.get(f"/api/{{uid}}/tasks/{step['id']}")).json()["data"]["completed"] is False

    async def test_a_plain_task_has_no_completions(self, client, user, other_user):
        as_user = authed(client, user)
        task = await make_task(client, user)
        await complete(as_user, task)
        body = (await as_user.get(f"/api/{{uid}}/tasks/{task['id']}/completions")).json()
        assert body["data"] == []
        assert body["meta"]["total"] == 0
        theirs = await make_task(client, other_user)
        assert_error(await as_user.get(f"/api/{{uid}}/tasks/{theirs['id']}/completions"), 404, "NOT_FOUND")

    @pytest.mark.parametrize(
        "fields",
        [
            {"recurrence": "FREQ=DAILY"},  # no due date
            {"recurrence": "FREQ=SECONDLY", "due_date": "2026-01-01T00:00:00Z"},
            {"recurrence": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "due_date": "2026-01-01T00:00:00Z"},
            {"recurrence": "NOT A RULE", "due_date": "2026-01-01T00:00:00Z"},
            {"recurrence": "FREQ=DAILY;COUNT=0", "due_date": "2026-01-01T00:00:00Z"},
        ],
    )
    async def test_invalid_rules_are_invalid_recurrence(self, client, user, fields):
        response = await authed(client, user).post("/api/{uid}/tasks", json={"title": "t", **fields})
        assert assert_error(response, 422, "INVALID_RECURRENCE")["field"] == "recurrence"

    async def test_clearing_the_due_date_of_a_recurring_task_is_refused(self, client, user):
        as_user = authed(client, user)
        task = await make_task(client, user, due_date="2026-01-01T09:00:00Z", recurrence="FREQ=DAILY")
        url = f"/api/{{uid}}/tasks/{task['id']}"
        assert_error(await as_user.patch(url, json={"due_date": None}), 422, "INVALID_RECURRENCE")
        cleared = await as_user.patch(url, json={"due_date": None, "recurrence": None})
        assert cleared.status_code == 200, cleared.text
        assert cleared.json()["data"]["recurrence"] is None

    @pytest.mark.parametrize("zone", ["Mars/Olympus", "../etc/passwd", "", "utc+1"])
    async def test_an_unknown_zone_is_422_on_the_field(self, client, user, zone):
        response = await authed(client, user).post("/api/{uid}/tasks", json={"title": "t", "due_timezone": zone})
        assert assert_error(response, 422, "VALIDATION_ERROR")["field"] == "due_timezone"


class TestDueStrings:
    async def test_every_monday_at_9am_in_the_callers_zone(self, client, user):
        as_user = authed(client, user)
        response = await as_user.post(
            "/api/{uid}/tasks",
            json={"title": "standup", "due_string": "every monday at 9am"},
            headers={"X-Timezone": "Europe/Berlin"},
        )
        assert response.status_code == 201, response.text
        task = response.json()["data"]
        assert task["due_timezone"] == "Europe/Berlin"
        assert task["recurrence"] == "FREQ=WEEKLY;BYDAY=MO"
        due = berlin(task["due_date"])
        assert (due.weekday(), due.hour, due.minute) == (0, 9, 0)
        assert datetime.fromisoformat(task["due_date"]) > datetime.now(UTC)
        assert "due_string" not in task  # write-only

    @pytest.mark.parametrize(
        "phrase",
        [
            "today",
            "tomorrow 5pm",
            "next monday",
            "every day",
            "every weekday",
            "every 2 weeks",
            "every month on the 15th",
            "every year",
            "every mon",
            "every 3 days",
            "every weekday at 8:30",
        ],
    )
    async def test_the_contracts_phrases_are_read(self, client, user, phrase):
        response = await authed(client, user).post("/api/{uid}/tasks", json={"title": "t", "due_string": phrase})
        assert response.status_code == 201, (phrase, response.text)
        task = response.json()["data"]
        assert task["due_timezone"] == "UTC"
        due = datetime.fromisoformat(task["due_date"])
        assert datetime.now(UTC) - timedelta(days=1) < due < datetime.now(UTC) + timedelta(days=400)
        assert (task["recurrence"] is not None) == phrase.startswith("every")

    async def test_tomorrow_5pm_is_tomorrow_local(self, client, user):
        response = await authed(client, user).post(
            "/api/{uid}/tasks",
            json={"title": "t", "due_string": "tomorrow 5pm"},
            headers={"X-Timezone": "Asia/Kolkata"},
        )
        due = datetime.fromisoformat(response.json()["data"]["due_date"]).astimezone(ZoneInfo("Asia/Kolkata"))
        today = datetime.now(ZoneInfo("Asia/Kolkata")).date()
        assert due.date() == today + timedelta(days=1)
        assert (due.hour, due.minute) == (17, 0)

    async def test_unreadable_text_is_422_naming_the_field(self, client, user):
        response = await authed(client, user).post(
            "/api/{uid}/tasks", json={"title": "t", "due_string": "whenever the moon is blue"}
        )
        assert assert_error(response, 422, "VALIDATION_ERROR")["field"] == "due_string"

    async def test_due_string_with_a_schedule_field_or_a_bad_zone_is_refused(self, client, user):
        as_user = authed(client, user)
        both = {"title": "t", "due_string": "today", "due_date": "2026-01-01T00:00:00Z"}
        assert assert_error(await as_user.post("/api/{uid}/tasks", json=both), 422, "VALIDATION_ERROR")["field"] == (
            "due_string"
        )
        response = await as_user.post(
            "/api/{uid}/tasks", json={"title": "t", "due_string": "today"}, headers={"X-Timezone": "Nowhere/Land"}
        )
        assert assert_error(response, 422, "VALIDATION_ERROR")["field"] == "X-Timezone"

    async def test_patch_with_a_due_string_reschedules(self, client, user):
        as_user = authed(client, user)
        task = await make_task(client, user)
        response = await as_user.patch(
            f"/api/{{uid}}/tasks/{task['id']}", json={"due_string": "every day"}, headers={"X-Timezone": "UTC"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["data"]["recurrence"] == "FREQ=DAILY"
        assert_error(
            await as_user.patch(f"/api/{{uid}}/tasks/{task['id']}", json={"due_string": None}), 422, "VALIDATION_ERROR"
        )


async def test_exports_carry_the_new_fields_and_the_completions(client, user):
    as_user = authed(client, user)
    task = await make_task(
        client, user, due_date="2026-06-01T07:00:00Z", due_timezone="Europe/Berlin", recurrence="FREQ=DAILY"
    )
    child = await make_task(client, user, parent_id=task["id"], labels=["x"])
    await complete(as_user, task)
    export = (await as_user.get("/api/{uid}/export")).json()
    exported = {t["id"]: t for t in export["tasks"]}
    assert exported[task["id"]]["recurrence"] == "FREQ=DAILY"
    assert exported[task["id"]]["due_timezone"] == "Europe/Berlin"
    assert exported[child["id"]]["parent_id"] == task["id"]
    assert exported[child["id"]]["labels"] == ["x"]
    assert [(c["task_id"], c["due_date"]) for c in export["task_completions"]] == [(task["id"], "2026-06-01T07:00:00Z")]


@pytest.mark.parametrize(("phrase", "zone"), [("dec 31 9999", "America/New_York"), ("9999-12-31", "UTC")])
async def test_a_due_string_past_the_last_date_is_422_not_500(client, user, phrase, zone):
    """Review finding: a due string near year 9999 overflowed (500) or stored a date past the allowed range."""
    response = await authed(client, user).post(
        "/api/{uid}/tasks", json={"title": "t", "due_string": phrase}, headers={"X-Timezone": zone}
    )
    assert assert_error(response, 422, "VALIDATION_ERROR")["field"] == "due_string"


async def test_a_rule_whose_next_date_is_past_the_last_date_completes_the_task(client, user):
    """Review finding: completing a recurring task whose next occurrence lies past year 9999 answered 500."""
    as_user = authed(client, user)
    task = await make_task(
        client,
        user,
        due_date="9999-12-30T20:00:00Z",
        due_timezone="Pacific/Honolulu",
        recurrence="FREQ=DAILY;BYHOUR=10,20",
    )
    for _ in range(3):
        done = await complete(as_user, task)
    assert done["completed"] is True
    assert done["due_date"] <= "9999-12-30T23:59:59Z"
