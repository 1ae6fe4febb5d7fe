"""The live dashboard: `GET /api/{user_id}/events` (Server-Sent Events) and its single-use tickets."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import Receive, Scope, Send

from backend.deps import BearerCredentials, OwnerDep, PrincipalDep, SessionDep, SettingsDep, ensure_owner, get_principal
from backend.envelope import Envelope, ok
from backend.errors import responses
from backend.events import TICKET_SECONDS, Event, EventBus, StreamSlot, TicketOwner
from backend.middleware import client_ip
from backend.models.change import ChangeOp, ChangeType
from backend.models.common import RESPONSE_CONFIG, USER_ID_PATTERN
from backend.models.project import ProjectPublic
from backend.models.task import TaskPublic
from backend.ratelimit import ip_key
from backend.services import auth as auth_service
from backend.services import feed

router = APIRouter(tags=["events"])
log = logging.getLogger("taskdeck.events")

EVENT_NAMES = (
    "task.created",
    "task.updated",
    "task.deleted",
    "project.pinned",
    "project.updated",
    "project.unpinned",
    "sync.progress",
    "sync.finished",
)
EVENT_TYPES = ", ".join(f"`{name}`" for name in EVENT_NAMES)
STREAM_PAGE = 200  # changes per read of the feed
# One event of the stream (OpenAPI 3.1: a `text/event-stream` schema describes each event, as a client parses it).
EVENT_SCHEMA = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "id": {"type": "string", "description": "A change's feed cursor; transient `sync.*` events have none"},
        "event": {"type": "string", "enum": list(EVENT_NAMES)},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer"},
    },
}


class StreamTicket(BaseModel):
    model_config = RESPONSE_CONFIG

    ticket: str = Field(description="Pass as `?ticket=` to the stream URL within `expires_in` seconds; works once")
    expires_in: int = Field(examples=[TICKET_SECONDS])


class StreamTicketEnvelope(Envelope[StreamTicket]):
    pass


def _bus(request: Request) -> EventBus:
    bus: EventBus = request.app.state.events
    return bus


@router.post(
    "/api/{user_id}/events/ticket",
    status_code=201,
    response_model=StreamTicketEnvelope,
    summary="Get a ticket for the event stream",
    operation_id="create_event_ticket",
    responses=responses(401, 403, 422, 429, 503),
)
async def create_ticket(owner_id: OwnerDep, principal: PrincipalDep, request: Request) -> dict[str, Any]:
    """Browsers' `EventSource` cannot send an `Authorization` header: fetch a ticket with your token, then open
    `/api/{user_id}/events?ticket=...`. Single use, valid 60 s; your access token never goes into a URL.
    The ticket belongs to your token's session: once you log out, it is refused (`401`)."""
    ticket = await _bus(request).log.issue_ticket(TicketOwner(owner_id, principal.session_id))
    return ok(StreamTicket(ticket=ticket, expires_in=TICKET_SECONDS), "Ticket issued")


@dataclass(frozen=True)
class StreamRequest:
    owner_id: str
    session_id: str | None  # the login session the stream belongs to (None: a Better-Auth token)
    start: str  # the feed cursor the stream goes on from


async def stream_request(
    request: Request,
    user_id: Annotated[str, Path(pattern=USER_ID_PATTERN, description="Your own user id")],
    # Function scope: the session is closed before the stream starts, so no connection is held while it runs.
    session: SessionDep,
    settings: SettingsDep,
    credentials: BearerCredentials,
    ticket: Annotated[str | None, Query(max_length=128, description="From POST .../events/ticket")] = None,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=64,
            description="Go on after this change cursor: the last event's `id`, or a `cursor` of `GET .../changes`",
            examples=["c42"],
        ),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(
            max_length=40,
            pattern=feed.CURSOR.pattern,
            description="Go on after this change cursor when there is no `Last-Event-ID` (a browser's new "
            "`EventSource`, opened with a new ticket, cannot send it): the last event's `id`",
            examples=["c42"],
        ),
    ] = None,
) -> StreamRequest:
    """Whose stream, from which change: a redeemed ticket's user, else the bearer token's; 403 if not the path's;
    410 if the cursor it goes on from (`Last-Event-ID` when it is a feed cursor, else `cursor`) is one the feed
    refuses.

    Every parameter is checked before any credential is (a malformed request is 422 and spends no ticket).
    """
    if ticket is not None:
        principal = await auth_service.resolve_stream_ticket(session, _bus(request).log, ticket)
        request.state.user_id = principal.user.id
    else:
        principal = await get_principal(request, session, settings, credentials)
    owner_id = ensure_owner(request, principal.user, user_id)
    # An EventSource reconnecting by itself sends its last event id as the header: that wins over the URL's.
    resume = last_event_id if last_event_id is not None and feed.parse_cursor(last_event_id) else cursor
    start = await feed.stream_start(session, owner_id, resume)
    return StreamRequest(owner_id, principal.session_id, start.encode())


class EventStreamResponse(StreamingResponse):
    """The SSE response: gives the stream's place back however the response ends (its end, the client gone,
    an error), even if the body never started."""

    def __init__(self, bus: EventBus, slot: StreamSlot | None, body: AsyncIterator[bytes]) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(body, media_type="text/event-stream", headers=headers)
        self.bus = bus
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.bus.close_slot(self.slot)


@router.get(
    "/api/{user_id}/events",
    summary="Live changes (Server-Sent Events)",
    operation_id="stream_events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": f"`text/event-stream`. Events: {EVENT_TYPES}. Task and project events are the change "
            "feed's changes (`GET .../changes`) as they are committed, each with `id` = the feed cursor after it: "
            "`<type>.created` (`project.pinned`) when the item's latest change is its creation, `*.updated` for other "
            'changes, `task.deleted` / `project.unpinned` with `{"id"}`; `data` is the item as its `GET` answers '
            "it. A stream that falls behind gets each item's latest state once, as the feed does. Reconnect with "
            "`Last-Event-ID` (the last event's `id`, or any feed `cursor`) to go on exactly after it; without one "
            "(or with an id of the earlier `<ms>-<seq>` form) the stream starts from now, its first block setting "
            "the last event id to the current cursor. A cursor the feed refuses is `410 CURSOR_EXPIRED` before the "
            "stream starts: do a full sync with `GET .../changes`, then stream from its cursor. `sync.*` events "
            "(the run and project ids with the current stage and progress, or the outcome) have no `id` and are "
            "not replayed. Comment lines "
            "(`: keep-alive`) arrive every `EVENTS_HEARTBEAT_SECONDS`. At most `EVENTS_MAX_STREAMS_PER_USER` "
            "streams per user and `EVENTS_MAX_STREAMS_PER_IP` per client address are open at once: the next is "
            "`429 TOO_MANY_STREAMS`. A stream belongs to the login session that opened it (bearer or ticket): it "
            "closes within 5 s of that session ending (logout, refresh-token reuse, account disabled or erased).",
            "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
        },
        **responses(401, 403, 410, 422, 429, 503),
    },
)
async def stream_events(
    stream: Annotated[StreamRequest, Depends(stream_request)], request: Request
) -> StreamingResponse:
    """Authenticate with `Authorization: Bearer` or a single-use `?ticket=` (for `EventSource`)."""
    bus = _bus(request)
    slot = await bus.open_slot(stream.owner_id, ip_key(client_ip(request.scope)))
    sessions = request.app.state.sessionmaker
    alive = partial(_session_alive, sessions, bus.session_check, stream)
    changes = partial(_read_changes, sessions, bus.session_check, stream.owner_id)
    body = bus.stream(stream.owner_id, stream.start, changes, slot, session_id=stream.session_id, alive=alive)
    return EventStreamResponse(bus, slot, body)


async def _read_changes(sessions: Any, within: float, owner_id: str, after: str) -> tuple[list[Event], str, bool]:
    """The owner's changes after feed cursor `after` as events (a short session of its own, bounded by `within`
    seconds: a stream waiting on the database still ends with its session soon after).

    Shielded: a stream that ends (the client gone, shutdown) while reading lets the read finish and give its
    connection back, rather than leave it mid-transaction (on SQLite, holding the write lock)."""
    read = asyncio.ensure_future(_read_page(sessions, within, owner_id, after))
    read.add_done_callback(_retrieved)
    page = await asyncio.shield(read)
    events = [change_event(change_cursor.encode(), change) for change_cursor, change in page.changes]
    return events, page.cursor.encode(), page.has_more


async def _read_page(sessions: Any, within: float, owner_id: str, after: str) -> feed.Page:
    async with asyncio.timeout(within), sessions() as session:
        if session.bind.dialect.name == "postgresql":
            # One snapshot for the rows and their items: an item is sent as it was at the rows' point (its
            # later state comes with its later seq), never ahead of it and then again (SQLite: one writer at a
            # time, every transaction a snapshot already).
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        return await feed.read_page(session, owner_id, feed.parse_cursor(after), STREAM_PAGE)


def _retrieved(read: asyncio.Future[Any]) -> None:
    """A shielded read whose stream has gone: its failure is of no one's concern (never an unretrieved error)."""
    if not read.cancelled():
        read.exception()


def change_event(event_id: str, change: dict[str, Any]) -> Event:
    """A feed change as the stream's event: `<type>.created` (`project.pinned`) when the item's latest change is
    its creation (a task's version 1; a project pinned or re-pinned and not changed since), `<type>.updated`
    for other upserts, `task.deleted` / `project.unpinned` with `{"id"}` for deletes. `data` is the item as the
    feed (and its single GET) carries it."""
    kind = ChangeType(change["type"])
    item = change["item"]
    if change["op"] == ChangeOp.DELETE or item is None:
        name = "task.deleted" if kind is ChangeType.TASK else "project.unpinned"
        data: dict[str, Any] = {"id": change["id"]}
    elif kind is ChangeType.TASK:
        name = "task.created" if item["version"] == 1 else "task.updated"
        data = TaskPublic.model_validate(item).model_dump(mode="json")
    else:
        name = "project.pinned" if item["pinned_at"] == item["last_updated"] else "project.updated"
        data = ProjectPublic.model_validate(item).model_dump(mode="json")
    return Event(event_id, name, json.dumps(data, separators=(",", ":"), ensure_ascii=False))


async def _session_alive(sessions: Any, within: float, stream: StreamRequest) -> bool:
    """Whether the stream's session is still alive (a short session of its own, no connection held between
    checks). If the database does not answer, the stream goes on (no write can happen then either) and the
    next check asks again."""
    try:
        async with asyncio.timeout(within), sessions() as session:
            return await auth_service.stream_allowed(session, stream.owner_id, stream.session_id)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        extra = {"event": "event_session_check_failed", "error_type": type(exc).__name__}
        log.warning("event stream's session not checked", extra=extra)
        return True
