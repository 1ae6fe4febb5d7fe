"""Single resources over HTTP: ETags and conditional requests (If-None-Match, If-Match).

An ETag is made from the row's table, id and `version`, an integer bumped by every ORM update
(backend/models/versioning.py): unlike a timestamp, two writes within one clock tick still differ.
It validates the resource's `data`, whichever route (current or earlier-draft) serves it.

Live events are not sent from here: every write records its changes (services/changes.record), and the commit
rings the owner's streams, which read them from the change feed (backend/events.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Protocol, TypeVar, cast

from fastapi import Depends, Header, Request, Response

from backend.envelope import ok
from backend.errors import PreconditionFailed
from backend.models.common import path_row_id

V = TypeVar("V")


class Versioned(Protocol):
    __tablename__: ClassVar[Any]
    id: int | None
    version: int


NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: `If-None-Match` matched the current ETag (no body)"}
}

IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description="Only write if the resource still has this ETag (else 412 PRECONDITION_FAILED)",
        examples=['"tasks.42.3"'],
    ),
]
IfNoneMatch = Annotated[
    str | None,
    Header(
        alias="If-None-Match",
        description="Answer 304 with no body if the resource still has this ETag",
        examples=['"tasks.42.3"'],
    ),
]


def etag_of(row: Versioned) -> str:
    return f'"{row.__tablename__}.{row.id}.{row.version}"'


def _tags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def none_match_hits(header: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison: `W/"x"` matches `"x"`."""
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in _tags(header))


def match_hits(header: str, etag: str) -> bool:
    """If-Match uses the strong comparison: a weak tag never matches."""
    return any(tag in ("*", etag) for tag in _tags(header))


async def check_if_match(if_match: str | None, raw_id: str, load: Callable[[int], Awaitable[Versioned]]) -> None:
    """With If-Match, load the row (under the lock the write takes next) and compare. Without, nothing.

    Called as a write endpoint starts (routers/common.unchanged), after the request was validated, on the
    request's session, so the comparison and the write run in one transaction: PostgreSQL holds the row
    lock, SQLite the database write lock, until commit. `raw_id` is the path parameter as sent, read as the
    route reads it ("+5" is 5); one the route refuses never gets here (its 422 comes first).
    """
    row_id = path_row_id(raw_id)
    if if_match is None or row_id is None:
        return
    row = await load(row_id)
    if not match_hits(if_match, etag_of(row)):
        raise PreconditionFailed(headers={"ETag": etag_of(row)})


@dataclass
class ResourceContext:
    request: Request
    response: Response

    @property
    def owner_id(self) -> str:
        return str(self.request.state.user_id)

    def read(self, row: Versioned) -> Any:
        """The envelope with the row's ETag, or 304 with no body when If-None-Match matches it."""
        etag = etag_of(row)
        header = self.request.headers.get("if-none-match")
        if header is not None and none_match_hits(header, etag):
            return Response(status_code=304, headers={"ETag": etag})
        self.response.headers["ETag"] = etag
        return ok(row)

    def tagged(self, row: V) -> V:
        """After a write: the row's new ETag on the response."""
        self.response.headers["ETag"] = etag_of(cast(Versioned, row))
        return row


async def _writer(request: Request, response: Response) -> ResourceContext:
    return ResourceContext(request, response)


async def _reader(request: Request, response: Response, if_none_match: IfNoneMatch = None) -> ResourceContext:
    return ResourceContext(request, response)


WriteDep = Annotated[ResourceContext, Depends(_writer)]
ReadDep = Annotated[ResourceContext, Depends(_reader)]
