"""The live event stream over real HTTP (uvicorn on 127.0.0.1): another client's writes arrive, across two
instances sharing Redis too; `Last-Event-ID` resumes; tickets are single use; heartbeats; clean disconnects.
The hand-over between the stream and the change feed: tests/routers/test_stream_feed.py."""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from backend.main import create_app
from tests.conftest import ENDING_STREAMS, REDIS_URL, UserCtx, assert_error, make_settings, make_user
from tests.support import free_port

pytestmark = pytest.mark.committing  # live servers, a second app on the same database, background sync runs

# The suite's default stream lifetime (60 s, tests/conftest.py) is one a loaded 2-core machine cannot outlast
# while a test works with its stream open; said again here because these tests depend on it.
LONG = {"EVENTS_STREAM_MAX_SECONDS": 60.0}
FAST = {"EVENTS_HEARTBEAT_SECONDS": 0.2, **LONG}


@asynccontextmanager
async def serve(app) -> AsyncIterator[httpx.AsyncClient]:
    """`app` (its lifespan already running) behind a real uvicorn server; a client for it."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), lifespan="off", log_config=None, timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.port}", timeout=10) as http:
            yield http
    finally:
        server.should_exit = True
        await task


class Stream:
    """An open event stream, read one SSE block at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.greeting: dict = {}

    async def block(self) -> dict:
        fields: dict = {"comments": []}
        async with asyncio.timeout(5):
            async for line in self.lines:
                if line == "":
                    if len(fields) > 1 or fields["comments"]:
                        return fields
                    continue
                name, _, value = line.partition(":")
                if name == "":
                    fields["comments"].append(value.strip())
                else:
                    fields[name] = value.removeprefix(" ")
        raise AssertionError("stream ended")

    async def event(self) -> dict:
        """The next event, skipping comments (heartbeats, the greeting)."""
        while True:
            block = await self.block()
            if "event" in block:
                return {"id": block["id"], "type": block["event"], "data": json.loads(block["data"])}


@asynccontextmanager
async def open_stream(http: httpx.AsyncClient, user: UserCtx, **kwargs) -> AsyncIterator[Stream]:
    params = kwargs.pop("params", None)
    headers = kwargs.pop("headers", user.headers)
    async with http.stream("GET", f"/api/{user.id}/events", params=params, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = Stream(response)
        stream.greeting = await stream.block()
        assert stream.greeting["retry"] == "3000"
        assert stream.greeting["id"].startswith("c")  # the feed cursor it starts after
        yield stream


async def ticket_for(http: httpx.AsyncClient, user: UserCtx) -> str:
    response = await http.post(f"/api/{user.id}/events/ticket", headers=user.headers)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["expires_in"] == 60
    return response.json()["data"]["ticket"]


async def event_clients(http: httpx.AsyncClient) -> float:
    text = (await http.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        if family.name == "taskdeck_event_stream_clients":
            return family.samples[0].value
    raise AssertionError("gauge missing")


class TestInProcess:
    @pytest.mark.parametrize("settings_overrides", [LONG])
    async def test_another_clients_writes_arrive_in_order(self, app):
        async with serve(app) as http:
            user, other = await make_user(http), await make_user(http)
            ticket = await ticket_for(http, user)
            async with open_stream(http, user, params={"ticket": ticket}, headers={}) as stream:
                await http.post(f"/api/{other.id}/tasks", json={"title": "not yours"}, headers=other.headers)
                # Each event awaited before the next write: a stream that reads after several writes of one item
                # gets its latest state once (the change feed is compacted).
                received = []
                created = await http.post(
                    f"/api/{user.id}/tasks", json={"title": "hello", "labels": ["Live"]}, headers=user.headers
                )
                received.append(await stream.event())
                task_id = created.json()["data"]["id"]
                await http.patch(f"/api/{user.id}/tasks/{task_id}", json={"title": "hi"}, headers=user.headers)
                received.append(await stream.event())
                await http.delete(f"/api/{user.id}/tasks/{task_id}", headers=user.headers)
                received.append(await stream.event())
                pinned = await http.post(
                    f"/api/{user.id}/projects", json={"github_repo_name": "octo/live"}, headers=user.headers
                )
                received.append(await stream.event())
                project_id = pinned.json()["data"]["id"]
                await http.delete(f"/api/{user.id}/projects/{project_id}", headers=user.headers)
                received.append(await stream.event())
            assert [e["type"] for e in received] == [
                "task.created",
                "task.updated",
                "task.deleted",
                "project.pinned",
                "project.unpinned",
            ]
            assert received[0]["data"] == created.json()["data"]
            assert received[0]["data"]["user_id"] == user.id
            assert received[1]["data"]["title"] == "hi"
            assert received[0]["data"]["labels"] == received[1]["data"]["labels"] == ["Live"]
            assert received[2]["data"] == {"id": task_id}
            assert received[3]["data"] == pinned.json()["data"]
            assert received[4]["data"] == {"id": project_id}
            # Ids are the feed's cursors: one per change of this user, in commit order, none skipped.
            assert [e["id"] for e in received] == [f"c{seq}" for seq in range(1, 6)]
            # The ticket was used up.
            reused = await http.get(f"/api/{user.id}/events", params={"ticket": ticket})
            assert_error(reused, 401, "INVALID_TOKEN")

    @pytest.mark.parametrize("settings_overrides", [FAST])
    async def test_resume_heartbeats_and_clean_disconnect(self, app):
        async with serve(app) as http:
            user = await make_user(http)
            async with open_stream(http, user) as stream:
                assert await event_clients(http) == 1
                await http.post(f"/api/{user.id}/tasks", json={"title": "seen"}, headers=user.headers)
                seen = await stream.event()
                heartbeat = await stream.block()
                assert heartbeat["comments"] == ["keep-alive"]
            for title in ("missed 1", "missed 2"):
                await http.post(f"/api/{user.id}/tasks", json={"title": title}, headers=user.headers)
            async with open_stream(http, user, headers={**user.headers, "Last-Event-ID": seen["id"]}) as stream:
                missed = [await stream.event() for _ in range(2)]
            assert [e["data"]["title"] for e in missed] == ["missed 1", "missed 2"]
            for _ in range(100):  # the server notices the disconnect at its next write (a heartbeat)
                if await event_clients(http) == 0:
                    break
                await asyncio.sleep(0.05)
            assert await event_clients(http) == 0
            assert app.state.events._bells == {}


class TestAcrossInstances:
    @pytest.fixture
    def settings_overrides(self, prefix):
        return {"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": prefix, **FAST}

    async def test_writes_on_one_instance_reach_streams_on_another_and_resume(
        self, app, database_url, data_dir, settings_overrides
    ):
        same_key = {"JWT_SECRET": app.state.settings.JWT_SECRET}
        second = create_app(make_settings(database_url, data_dir, **same_key, **settings_overrides))
        async with second.router.lifespan_context(second), serve(app) as one, serve(second) as two:
            user = await make_user(one)
            ticket = await ticket_for(two, user)  # issued by one instance, redeemed by the other
            async with open_stream(one, user, params={"ticket": ticket}, headers={}) as stream:
                created = await two.post(f"/api/{user.id}/tasks", json={"title": "from two"}, headers=user.headers)
                first = await stream.event()
                assert first["type"] == "task.created"
                assert first["data"] == created.json()["data"]
            task_id = first["data"]["id"]
            await two.patch(f"/api/{user.id}/tasks/{task_id}/complete", json={"completed": True}, headers=user.headers)
            gone = await two.post(f"/api/{user.id}/tasks", json={"title": "missed"}, headers=user.headers)
            await two.delete(f"/api/{user.id}/tasks/{gone.json()['data']['id']}", headers=user.headers)
            resumed = {**user.headers, "Last-Event-ID": first["id"]}
            async with open_stream(one, user, headers=resumed) as stream:
                missed = [await stream.event() for _ in range(2)]
                await two.post(f"/api/{user.id}/tasks", json={"title": "live again"}, headers=user.headers)
                live = await stream.event()
            # What was missed comes compacted, as the feed has it: the task created and deleted while away is
            # one delete.
            assert [e["type"] for e in missed] == ["task.updated", "task.deleted"]
            assert missed[0]["data"]["completed"] is True
            assert missed[1]["data"] == {"id": gone.json()["data"]["id"]}
            assert live["data"]["title"] == "live again"


class TestAccess:
    async def test_who_may_open_a_stream(self, client, user, other_user):
        assert_error(await client.get(f"/api/{user.id}/events"), 401, "NOT_AUTHENTICATED")
        assert_error(await client.get(f"/api/{other_user.id}/events", headers=user.headers), 403, "FORBIDDEN")
        bad = await client.get(f"/api/{user.id}/events", params={"ticket": "forged"})
        assert_error(bad, 401, "INVALID_TOKEN")
        ticket = (await client.post(f"/api/{user.id}/events/ticket", headers=user.headers)).json()["data"]["ticket"]
        assert_error(await client.get(f"/api/{other_user.id}/events", params={"ticket": ticket}), 403, "FORBIDDEN")
        stolen = await client.post(f"/api/{other_user.id}/events/ticket", headers=user.headers)
        assert_error(stolen, 403, "FORBIDDEN")
        assert_error(await client.post(f"/api/{user.id}/events/ticket"), 401, "NOT_AUTHENTICATED")

    async def test_documented(self, client):
        paths = (await client.get("/openapi.json")).json()["paths"]
        stream = paths["/api/{user_id}/events"]["get"]
        assert "text/event-stream" in stream["responses"]["200"]["content"]
        names = {p["name"] for p in stream["parameters"]}
        assert {"ticket", "Last-Event-ID"} <= names
        assert "410" in stream["responses"]
        assert "201" in paths["/api/{user_id}/events/ticket"]["post"]["responses"]


@pytest.mark.parametrize("settings_overrides", [ENDING_STREAMS])
async def test_a_stream_ends_after_its_maximum_duration(client, user):
    """EVENTS_STREAM_MAX_SECONDS: the server closes the stream (the in-process client returns once it has ended)."""
    response = await client.get(f"/api/{user.id}/events", headers=user.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("retry: ")
    assert ": connected" in response.text
