"""Pieces every model family shares."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime
from sqlalchemy import MetaData
from sqlmodel import SQLModel

# Stable constraint names on every backend, so Alembic can find and drop them later. Set here,
# in the module every model imports, because names are fixed when a table is defined.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata: MetaData = SQLModel.metadata


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
