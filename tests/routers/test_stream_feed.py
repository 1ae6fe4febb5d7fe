"""The live stream and the change feed agree (specs/api/changes.md, "The live stream"): a stream's event `id` is
a feed cursor, so a client switches between `GET /changes?cursor=<last event id>` and a stream opened with
`Last-Event-ID: <feed cursor>` without losing or repeating anything, also while other requests write at once.
Over real HTTP (uvicorn on 127.0.0.1), on each database backend; with Redis, across two instances."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from backend.main import create_app
from tests.conftest import REDIS_URL, UserCtx, assert_error, make_settings, make_user
from tests.routers.test_events import FAST, Stream, open_stream, serve

pytestmark = pytest.mark.committing  # live servers, a second app on the same database


async def feed(http: httpx.AsyncClient, user: UserCtx, cursor: str | None = None, limit: int = 200) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    if cursor is not None:
        params["cursor"] = cursor
    response = await http.get(f"/api/{user.id}/changes", params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def create(http: httpx.AsyncClient, user: UserCtx, title: str) -> dict[str, Any]:
    response = await http.post(f"/api/{user.id}/tasks", json={"title": title}, headers=user.headers)
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()["data"]
    return task


def resuming(user: UserCtx, cursor: str) -> dict[str, str]:
    return {**user.headers, "Last-Event-ID": cursor}


def summary(change: dict[str, Any]) -> tuple[str, int, str]:
    return change["type"], change["id"], change["op"]


EVENT_OPS = {"task.created": "upsert", "task.updated": "upsert", "task.deleted": "delete"}


def as_change(event: dict[str, Any]) -> tuple[str, int, str]:
    """A stream event as the feed change it stands for."""
    return event["type"].split(".")[0], event["data"]["id"], EVENT_OPS[event["type"]]


@pytest.mark.parametrize("settings_overrides", [FAST])
class TestHandOver:
    async def test_stream_then_feed_then_stream(self, app):
        async with serve(app) as http:
            user = await make_user(http)
            before = await create(http, user, "before")
            async with open_stream(http, user) as stream:
                assert stream.greeting["id"] == "c1"  # live only: starts after the user's last change
                kept = await create(http, user, "kept")
                created = await stream.event()
                await http.patch(f"/api/{user.id}/tasks/{kept['id']}", json={"title": "kept!"}, headers=user.headers)
                updated = await stream.event()
            assert [created["id"], updated["id"]] == ["c2", "c3"]
            assert (created["type"], created["data"]) == ("task.created", kept)
            assert (updated["type"], updated["data"]["title"]) == ("task.updated", "kept!")

            # Stopped: the feed goes on from the last event id, with exactly what came after it.
            away = await create(http, user, "while away")
            await http.delete(f"/api/{user.id}/tasks/{kept['id']}", headers=user.headers)
            page = await feed(http, user, updated["id"])
            assert [summary(c) for c in page["changes"]] == [
                ("task", away["id"], "upsert"),
                ("task", kept["id"], "delete"),
            ]
            assert page["changes"][0]["item"] == away
            assert (page["cursor"], page["has_more"]) == ("c5", False)

            # And back: a stream opened with the feed's cursor starts right after it (nothing of the page again).
            async with open_stream(http, user, headers=resuming(user, page["cursor"])) as stream:
                assert stream.greeting["id"] == page["cursor"]
                later = await create(http, user, "later")
                event = await stream.event()
            assert (event["id"], event["type"], event["data"]) == ("c6", "task.created", later)
            assert (await feed(http, user, event["id"]))["changes"] == []
            assert before["id"] not in {c["id"] for c in (await feed(http, user, "c1"))["changes"]}

    async def test_a_stream_that_saw_no_change_hands_over_its_starting_cursor(self, app):
        """The greeting's `id:` (no data: no event fires) is the client's last event id from the start."""
        async with serve(app) as http:
            user = await make_user(http)
            await create(http, user, "before")
            async with open_stream(http, user) as stream:
                start = stream.greeting["id"]
            missed = await create(http, user, "after the stream closed")
            page = await feed(http, user, start)
            assert [c["item"] for c in page["changes"]] == [missed]

    async def test_a_stream_goes_on_with_a_full_sync_cursor(self, app):
        """A cursor taken in the middle of a full sync (`c<seq>.<guard>`): the stream sends the rest of the
        sync as the feed would (deletes of items the client never had skipped), each event's id the cursor the
        feed would answer after it."""
        async with serve(app) as http:
            user = await make_user(http)
            tasks = [await create(http, user, name) for name in "abc"]
            dropped = await create(http, user, "created and deleted before the sync")
            await http.delete(f"/api/{user.id}/tasks/{dropped['id']}", headers=user.headers)
            first = await feed(http, user, limit=1)
            assert [c["item"] for c in first["changes"]] == tasks[:1]
            assert (first["cursor"], first["has_more"]) == ("c1.5", True)
            rest = await feed(http, user, first["cursor"])
            async with open_stream(http, user, headers=resuming(user, first["cursor"])) as stream:
                events = [await stream.event() for _ in range(2)]
                late = await create(http, user, "late")
                live = await stream.event()
            assert [as_change(e) for e in events] == [summary(c) for c in rest["changes"]]
            assert [e["data"] for e in events] == tasks[1:]
            assert [e["id"] for e in events] == ["c2.5", "c3.5"]
            assert (live["id"], live["data"]) == ("c6", late)
            # Resuming the feed from a mid-sync event id gives the rest, without the skipped delete.
            after_b = await feed(http, user, events[0]["id"])
            assert [c["item"] for c in after_b["changes"]] == [tasks[2], late]

    async def test_a_browser_resumes_with_a_new_ticket_and_the_cursor_parameter(self, app):
        """EventSource cannot send headers and a ticket works once: a browser opening a new stream after a drop
        names its last event id as `?cursor=`; `Last-Event-ID`, when sent, wins."""
        from tests.routers.test_events import ticket_for

        async with serve(app) as http:
            user = await make_user(http)
            first = await create(http, user, "first")
            async with open_stream(http, user) as stream:
                second = await create(http, user, "second")
                seen = await stream.event()
            missed = await create(http, user, "missed while reconnecting")
            ticket = await ticket_for(http, user)
            async with open_stream(http, user, params={"ticket": ticket, "cursor": seen["id"]}, headers={}) as stream:
                assert stream.greeting["id"] == seen["id"]
                event = await stream.event()
            assert (event["type"], event["data"]) == ("task.created", missed)
            assert seen["data"] == second
            # Both sent: the header is the stream's own last id (an EventSource reconnecting by itself).
            headers = resuming(user, "c1")
            async with open_stream(http, user, params={"cursor": seen["id"]}, headers=headers) as stream:
                replayed = await stream.event()
            assert replayed["data"]["id"] == second["id"]
            assert first["id"] != second["id"]
            assert_error(await http.get(f"/api/{user.id}/events", params={"cursor": "nope"}), 422, "VALIDATION_ERROR")

    async def test_a_cursor_the_feed_refuses_is_410_before_streaming(self, app):
        async with serve(app) as http:
            user = await make_user(http)
            await create(http, user, "one")
            ahead = await http.get(f"/api/{user.id}/events", headers=resuming(user, "c99"))
            assert_error(ahead, 410, "CURSOR_EXPIRED")
            # The feed says the same of that cursor.
            refused = await http.get(f"/api/{user.id}/changes", params={"cursor": "c99"}, headers=user.headers)
            assert_error(refused, 410, "CURSOR_EXPIRED")

    async def test_transient_events_carry_no_id(self, app):
        """`sync.*` events keep the client's last event id a change cursor: they have no `id:` line."""
        async with serve(app) as http:
            user = await make_user(http)
            async with open_stream(http, user) as stream:
                await app.state.events.publish(user.id, "sync.progress", {"run_id": 1})
                block = await stream.block()
                while "event" not in block:
                    block = await stream.block()
                assert (block["event"], "id" in block) == ("sync.progress", False)
                task = await create(http, user, "after the sync event")
                event = await stream.event()
            assert (event["id"], event["data"]) == ("c1", task)


class TestConcurrentWriters:
    """Writes committed by concurrent requests (on two instances with Redis) arrive in `seq` order, none missing
    or repeated, and the stream's last id resumes the feed with nothing left."""

    @pytest.fixture(params=["in-process", "redis"])
    def settings_overrides(self, request, prefix):
        if request.param == "in-process":
            return FAST
        return {"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": prefix, **FAST}

    @asynccontextmanager
    async def instances(self, app: FastAPI, database_url: str, data_dir: Any) -> AsyncIterator[list[httpx.AsyncClient]]:
        """One instance in process; two sharing Redis (and the database) otherwise."""
        settings = app.state.settings
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(serve(app))]
            if settings.REDIS_URL:
                overrides = {
                    "JWT_SECRET": settings.JWT_SECRET,
                    "REDIS_URL": settings.REDIS_URL,
                    "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
                    **FAST,
                }
                second = create_app(make_settings(database_url, data_dir, **overrides))
                await stack.enter_async_context(second.router.lifespan_context(second))
                clients.append(await stack.enter_async_context(serve(second)))
            yield clients

    async def test_events_arrive_in_seq_order_without_gap(self, app, database_url, data_dir):
        writes = 24
        async with self.instances(app, database_url, data_dir) as clients:
            user = await make_user(clients[0])
            await create(clients[0], user, "before")
            async with open_stream(clients[0], user) as stream:
                start = stream.greeting["id"]
                tasks = await asyncio.gather(
                    *(create(clients[n % len(clients)], user, f"concurrent {n}") for n in range(writes))
                )
                events = await self.read(stream, writes)
            seqs = [int(e["id"].removeprefix("c")) for e in events]
            first = int(start.removeprefix("c"))
            assert seqs == list(range(first + 1, first + writes + 1))  # commit order, no gap, nothing twice
            assert {e["data"]["id"] for e in events} == {t["id"] for t in tasks}
            assert {e["type"] for e in events} == {"task.created"}
            # The same changes, in the same order, as the feed has them; nothing after the last event id.
            page = await feed(clients[0], user, start)
            assert [as_change(e) for e in events] == [summary(c) for c in page["changes"]]
            assert [e["data"] for e in events] == [c["item"] for c in page["changes"]]
            assert page["cursor"] == events[-1]["id"]
            assert (await feed(clients[-1], user, events[-1]["id"]))["changes"] == []

    async def test_concurrent_updates_of_one_item_end_at_its_latest_state(self, app, database_url, data_dir):
        """Several writers of one task: the stream may skip states (compacted), never the last, never go back."""
        async with self.instances(app, database_url, data_dir) as clients:
            user = await make_user(clients[0])
            task = await create(clients[0], user, "shared")
            async with open_stream(clients[0], user) as stream:
                answers = await asyncio.gather(
                    *(
                        clients[n % len(clients)].patch(
                            f"/api/{user.id}/tasks/{task['id']}", json={"title": f"v{n}"}, headers=user.headers
                        )
                        for n in range(8)
                    )
                )
                assert all(a.status_code == 200 for a in answers)
                final = max((a.json()["data"] for a in answers), key=lambda t: t["version"])
                events = [await stream.event()]
                while events[-1]["data"]["version"] < final["version"]:
                    events.append(await stream.event())
            versions = [e["data"]["version"] for e in events]
            assert versions == sorted(set(versions))
            assert events[-1]["data"] == final
            assert (await feed(clients[0], user, events[-1]["id"]))["changes"] == []

    @staticmethod
    async def read(stream: Stream, count: int) -> list[dict[str, Any]]:
        return [await stream.event() for _ in range(count)]
