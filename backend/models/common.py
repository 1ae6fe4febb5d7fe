"""Pieces every model family shares."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from annotated_types import Interval
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, ConfigDict, Strict, TypeAdapter, ValidationError
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

# The config of every response model: the server always sends each of its fields (null where it may
# be), so OpenAPI's response schemas list them all as `required`, those with a default too. Only the
# serialization schema changes: validation, and any request schema, stay as they were.
RESPONSE_CONFIG = ConfigDict(json_schema_serialization_defaults_required=True)


def utcnow() -> datetime:
    """Aware UTC now: the only kind of timestamp the models accept."""
    return datetime.now(UTC)


def iso_z(moment: datetime) -> str:
    """ISO 8601 with `Z` for UTC (`2026-11-03T12:00:00Z`): how exports and stage results write an instant."""
    return moment.isoformat().replace("+00:00", "Z")


def new_id() -> str:
    """An opaque id for local users and sessions (32 hex chars, within the contract's user_id rules)."""
    return uuid.uuid4().hex


USER_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# PostgreSQL text cannot hold U+0000: it is refused on every backend (422), never left to fail in the database (500).
NO_NUL = r"^[^\x00]*$"
# NO_NUL and at least one character that is not Unicode White_Space (what `strip_whitespace` removes): a
# blank text is refused by the schema too, so a client or a fuzzer that follows the schema never sends one.
# `\uXXXX` escapes read the same in pydantic's Rust regex, Python's `re` and JavaScript.
WHITE_SPACE = r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NON_BLANK = rf"^[^\x00]*[^\x00{WHITE_SPACE}][^\x00]*$"
# Row ids are 32-bit `integer` columns: a larger id cannot exist, and the drivers fail on it (a 500).
MAX_ROW_ID = 2_147_483_647


# The instants a datetime input may name. Python's datetime holds years 1-9999, and PostgreSQL hands a
# timestamp back in its session's time zone (up to 14 hours off UTC): a day's margin at each end keeps every
# stored instant readable whatever the server's TimeZone.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
_OUT_OF_RANGE = "out of range: must lie between 0001-01-02T00:00:00Z and 9999-12-30T23:59:59Z"


def _to_utc(value: datetime) -> datetime:
    """The same instant in UTC (a naive value, allowed in query parameters only, is taken as UTC), within
    EARLIEST-LATEST: `0001-01-01T00:00:00+14:00` is before year 1 in UTC, a 422 (the conversion would raise)."""
    try:
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError(_OUT_OF_RANGE) from None
    if not EARLIEST <= moment <= LATEST:
        raise ValueError(_OUT_OF_RANGE)
    return moment


_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


def _iso_only(value: object) -> object:
    """Pydantic would read a number as Unix time; the contract (and `format: date-time`) say ISO 8601."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("must be an ISO 8601 date-time")
    return value


# Body datetimes must carry an offset; they are kept (and answered) as the same instant in UTC.
UTCDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_only), AfterValidator(_to_utc)]
# Query datetimes (`due_before`): an offset is optional (none means UTC); compared as the instant in UTC.
UTCQueryDatetime = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(_to_utc)]


def _json_integer(value: object) -> object:
    """JSON Schema's `integer`: 3 and 3.0, but neither `true` nor "3" (which Pydantic would coerce)."""
    if isinstance(value, bool | str):
        raise ValueError("must be an integer")
    return value


# Constraints go before the validator: after it, Pydantic still enforces them but the schema loses them.
JSON_INTEGER = BeforeValidator(_json_integer)
RowIdInt = Annotated[int, Interval(ge=1, le=MAX_ROW_ID), JSON_INTEGER]
# A row id in a path segment, read as the routes read it (`RowIdPath`: lax, so "+5" and "5.0" are 5).
_PATH_ROW_ID: TypeAdapter[int] = TypeAdapter(Annotated[int, Interval(ge=1, le=MAX_ROW_ID)])


def path_row_id(raw: str) -> int | None:
    """The row id a route will read from path segment `raw`, or None where the route answers 422 instead
    (not a number, "²", beyond 32 bits): a dependency that runs before the route's own validation uses it."""
    try:
        return _PATH_ROW_ID.validate_python(raw)
    except ValidationError:
        return None


JsonBool = Annotated[bool, Strict()]  # `true`/`false` only, not "yes" or 1


def omit_null(schema: dict[str, Any]) -> None:
    """`json_schema_extra` for a field that may be left out but not sent as null (its validator refuses null)."""
    branches = [branch for branch in schema.pop("anyOf", []) if branch.get("type") != "null"]
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches


NOT_NULL: dict[str, Any] = {"json_schema_extra": omit_null}


def refuse_null(value: object) -> object:
    """A `mode="before"` field validator for the NOT_NULL fields: null is refused, leaving the field out is not."""
    if value is None:
        raise ValueError("may be left out, but not null")
    return value
