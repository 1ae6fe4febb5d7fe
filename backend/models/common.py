"""Pieces every model family shares."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime


def utcnow() -> datetime:
    """Aware UTC now: the only kind of timestamp the models accept."""
    return datetime.now(UTC)


def new_id() -> str:
    """An opaque id for local users and sessions (32 hex chars, within the contract's user_id rules)."""
    return uuid.uuid4().hex


USER_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# Input datetimes must carry an offset; they are kept (and answered) as the same instant in UTC.
UTCDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
