"""Timestamps read from rows without `UTCDateTime`'s conversion of every value (specs/performance.md, "Issue 19"
and "Timestamps of a page as UTC wall times").

`UTCDateTime` answers every timestamp in UTC: psycopg first turns a `timestamptz` into the session's zone (a
`ZoneInfo`), then the type converts it back to UTC, for every value of every row, NULLs included. A page read
for an answer instead selects each timestamp column as stored (`as_stored`): on PostgreSQL as its UTC wall time
(`AT TIME ZONE 'UTC'`, naive), on SQLite as SQLite keeps it (naive UTC); `utc` then makes the non-NULL values
aware by adding their distance from the epoch (0.15 µs each on the benchmark VM, where `replace(tzinfo=UTC)` took
2.3 µs). The values are the same instants, formatted alike (the list and feed tests compare the bytes).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, case, func, literal_column, type_coerce
from sqlmodel.sql.sqltypes import UTCDateTime

_AS_STORED = DateTime(timezone=True)
_AS_UTC_WALL_TIME = DateTime(timezone=False)
_EPOCH, _EPOCH_UTC = datetime(1970, 1, 1), datetime(1970, 1, 1, tzinfo=UTC)


def utc(value: datetime) -> datetime:
    """A timestamp as `UTCDateTime` answers it: in UTC (a naive one, SQLite's or PostgreSQL's UTC wall time, is UTC
    already)."""
    return _EPOCH_UTC + (value - _EPOCH) if value.tzinfo is None else value.astimezone(UTC)


def is_timestamp(column: Any) -> bool:
    return isinstance(column.type, UTCDateTime)


def as_stored(column: Any, name: str, folded: bool) -> Any:
    """`column` labelled `name`; a `UTCDateTime` one without the type's conversion (`folded`, PostgreSQL: as its
    UTC wall time). Its non-NULL values go through `utc`."""
    if is_timestamp(column):
        if folded:
            column = type_coerce(func.timezone(literal_column("'UTC'"), column), _AS_UTC_WALL_TIME)
        else:
            column = type_coerce(column, _AS_STORED)
    return column.label(name)


_WHOLE_SECOND: Any = literal_column("""'YYYY-MM-DD"T"HH24:MI:SS"Z"'""")
_WITH_FRACTION: Any = literal_column("""'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'""")


def as_json_text(column: Any) -> Any:
    """PostgreSQL: a `timestamptz` column as text, written as pydantic writes the aware UTC datetime in JSON: its UTC
    wall time, `T`, six digits of fraction unless it is a whole second, `Z` (NULL stays NULL). For answers that
    PostgreSQL serialises itself (the change feed's items: services/feed.py)."""
    wall = func.timezone(literal_column("'UTC'"), column)
    whole = func.date_trunc(literal_column("'second'"), wall) == wall
    return func.to_char(wall, case((whole, _WHOLE_SECOND), else_=_WITH_FRACTION))
