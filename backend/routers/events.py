"""The live dashboard: `GET /api/{user_id}/events` (Server-Sent Events) and its single-use tickets."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from backend.deps import OwnerDep, bearer_scheme, get_principal
from backend.envelope import Envelope, ok
from backend.errors import AccountDisabled, Forbidden, InvalidToken, responses
from backend.events import TICKET_SECONDS, EventBus
from backend.logging_setup import security_event
from backend.models.common import USER_ID_PATTERN
from backend.models.user import User

router = APIRouter(tags=["events"])

EVENT_TYPES = "`task.created`, `task.updated`, `task.deleted`, `project.pinned`, `project.updated`, `project.unpinned`"


class StreamTicket(BaseModel):
    ticket: str = Field(description="Pass as `?ticket=` to the stream URL within `expires_in` seconds; works once")
    expires_in: int = Field(examples=[TICKET_SECONDS])


def _bus(request: Request) -> EventBus:
    bus: EventBus = request.app.state.events
    return bus


@router.post(
    "/api/{user_id}/events/ticket",
    status_code=201,
    response_model=Envelope[StreamTicket],
    summary="Get a ticket for the event stream",
    operation_id="create_event_ticket",
    responses=responses(401, 403, 422, 429, 503),
)
async def create_ticket(owner_id: OwnerDep, request: Request) -> dict[str, Any]:
    """Browsers' `EventSource` cannot send an `Authorization` header: fetch a ticket with your token, then open
    `/api/{user_id}/events?ticket=...`. Single use, valid 60 s; your access token never goes into a URL."""
    ticket = await _bus(request).log.issue_ticket(owner_id)
    return ok(StreamTicket(ticket=ticket, expires_in=TICKET_SECONDS), "Ticket issued")


async def _stream_owner(
    request: Request, user_id: str, ticket: str | None, credentials: HTTPAuthorizationCredentials | None
) -> str:
    """Who may open this stream: a redeemed ticket's user, else the bearer token's. 403 if not the path's user."""
    async with request.app.state.sessionmaker() as session:  # closed before streaming: no connection held
        if ticket is not None:
            subject = await _bus(request).log.redeem_ticket(ticket)
            user = await session.get(User, subject) if subject else None
            if user is None:
                raise InvalidToken("The stream ticket is invalid, used or expired")
            if not user.is_active:
                raise AccountDisabled()
            request.state.user_id = user.id
        else:
            principal = await get_principal(request, session, request.app.state.settings, credentials)
            user = principal.user
    if user.id != user_id:
        security_event("forbidden", user_id=user.id, path_user_id=user_id, route="/api/{user_id}/events")
        raise Forbidden("You may only access your own resources")
    return user.id


@router.get(
    "/api/{user_id}/events",
    summary="Live changes (Server-Sent Events)",
    operation_id="stream_events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": f"`text/event-stream`. Events: {EVENT_TYPES} (and sync progress once sync runs publish); "
            '`data` is the resource as JSON (`{"id"}` for deletions and unpins). Every event has an `id`; '
            "reconnect with `Last-Event-ID` to receive what you missed within the replay window. Comment lines "
            "(`: keep-alive`) arrive every `EVENTS_HEARTBEAT_SECONDS`.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **responses(401, 403, 422, 429, 503),
    },
)
async def stream_events(
    request: Request,
    user_id: Annotated[str, Path(pattern=USER_ID_PATTERN, description="Your own user id")],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ticket: Annotated[str | None, Query(max_length=128, description="From POST .../events/ticket")] = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=64, description="Resume after this event id")
    ] = None,
) -> StreamingResponse:
    """Authenticate with `Authorization: Bearer` or a single-use `?ticket=` (for `EventSource`)."""
    owner_id = await _stream_owner(request, user_id, ticket, credentials)
    return StreamingResponse(
        _bus(request).stream(owner_id, last_event_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
