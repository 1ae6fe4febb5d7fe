"""Recurring tasks: validate an RFC 5545 RRULE and find a task's next occurrence. Pure: no database, no web layer.

The model. A rule is stored with its *anchor* (the task's due date when the rule was set; RFC 5545's DTSTART,
with dateutil's reading of it: the anchor itself is an occurrence only if it matches the rule, and COUNT counts
the occurrences from the anchor on) and its *zone* (the task's `due_timezone`; None means UTC). Occurrences are
computed in the zone's wall-clock time: the anchor becomes a naive local time, the rule is iterated naively (so
09:00 stays 09:00 local across daylight-saving changes) and each occurrence is attached to the zone again.

Wall-clock times that do not exist or exist twice (`to_utc`, shared with `backend.due_string`):
- a time in a spring-forward gap moves forward by the gap: 02:30 on the day Europe/Berlin skips 02:00-03:00
  is 03:30 CEST (01:30 UTC);
- an ambiguous time in a fall-back fold takes its first instance (fold=0): 02:30 on the day Europe/Berlin
  repeats 02:00-03:00 is 02:30 CEST (00:30 UTC).
An hourly rule therefore skips the repeated hour of a fold, and its occurrence in a gap coincides with the next.

UNTIL: a UTC UNTIL (`20261231T170000Z`) is converted to the zone's wall-clock time and compared there, which is
the same instant; a floating UNTIL (`20261231T170000`) is wall-clock time in the zone; a date UNTIL (`20261231`)
includes that whole local day. COUNT and UNTIL together are refused (RFC 5545 forbids it).

Bounds, so that no rule can make a call slow (dateutil itself loops for centuries on a rule that never matches,
such as FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30): occurrences are looked for at most 10 years after the current one
(`next_occurrence`) or after the anchor (`check_has_occurrence`); a rule with COUNT is followed at most 30 years
from its anchor. Tasks recur at most hourly: FREQ=SECONDLY and MINUTELY, BYSECOND, and more than one BYMINUTE
value are refused. COUNT is at most 1000. Times are whole seconds (microseconds are dropped).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import rrule as _rr  # type: ignore[import-untyped]

# The last instant a due date may take (the API's range, backend/models/common.LATEST): no occurrence after it.
LAST_INSTANT = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
BOUND_YEARS = 10
COUNT_SPAN_YEARS = 30
MAX_COUNT = 1000
MAX_INTERVAL = 1000
MAX_RULE_LENGTH = 500

_FREQS = ("YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY")
_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
# The order of the parts in a stored rule.
_ORDER = (
    "FREQ",
    "INTERVAL",
    "COUNT",
    "UNTIL",
    "BYMONTH",
    "BYWEEKNO",
    "BYYEARDAY",
    "BYMONTHDAY",
    "BYDAY",
    "BYHOUR",
    "BYMINUTE",
    "BYSETPOS",
    "WKST",
)
_INT = re.compile(r"[+-]?\d{1,4}")
_BYDAY = re.compile(r"([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)")
_UNTIL = re.compile(r"(\d{8})(?:T(\d{6})(Z?))?")
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")


class RecurrenceError(ValueError):
    """A rule the API refuses; the message is shown to the client as it is."""


class TimezoneError(ValueError):
    """A time zone name that is not a known IANA zone; the message is shown to the client."""


def validate_zone(name: str) -> str:
    """Return `name` if it is a known IANA time zone ('Europe/Berlin', 'UTC'); raise TimezoneError otherwise.

    The name is checked for shape before zoneinfo sees it, so that no path ('../etc', '/etc/passwd') is opened."""
    if not isinstance(name, str) or not name or len(name) > 64 or not _ZONE_NAME.fullmatch(name):
        raise TimezoneError("Time zone must be an IANA time zone name such as 'Europe/Berlin' or 'UTC'.")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise TimezoneError(f"Unknown time zone '{name}': use an IANA name such as 'Europe/Berlin'.") from None
    return name


def _zone(name: str | None) -> ZoneInfo:
    return ZoneInfo(validate_zone(name) if name is not None else "UTC")


def to_utc(local: datetime, zone: str | None) -> datetime:
    """The aware UTC instant of the naive wall-clock time `local` in `zone` (None = UTC).

    A time in a spring-forward gap moves forward by the gap; an ambiguous one takes its first instance. Both
    are what PEP 495 gives for fold=0: the offset in force before the transition."""
    return local.replace(tzinfo=_zone(zone), fold=0).astimezone(UTC)


def to_local(instant: datetime, zone: str | None) -> datetime:
    """The naive wall-clock time of the aware `instant` in `zone` (None = UTC)."""
    if instant.tzinfo is None:
        raise ValueError("expected an aware datetime")
    return instant.astimezone(_zone(zone)).replace(tzinfo=None)


@dataclass(frozen=True)
class _Rule:
    freq: str
    interval: int
    count: int | None
    until: str | None
    parts: dict[str, tuple[Any, ...]]
    wkst: str | None


def _ints(name: str, value: str, low: int, high: int, *, signed: bool) -> tuple[int, ...]:
    out: list[int] = []
    for item in value.split(","):
        if not _INT.fullmatch(item):
            raise RecurrenceError(f"{name} must be a comma-separated list of numbers, not '{value}'.")
        n = int(item)
        if n == 0 or abs(n) < low or abs(n) > high or (n < 0 and not signed):
            bounds = f"{low} to {high}" + (f" or -{high} to -{low}" if signed else "")
            raise RecurrenceError(f"{name} values must be {bounds}, not {item}.")
        out.append(n)
    return tuple(out)


def _parse(text: str) -> _Rule:
    if not isinstance(text, str):
        raise RecurrenceError("Recurrence must be a text RRULE such as 'FREQ=WEEKLY;BYDAY=MO,WE'.")
    if len(text) > MAX_RULE_LENGTH:
        raise RecurrenceError(f"Recurrence is too long (at most {MAX_RULE_LENGTH} characters).")
    body = text.strip()
    if "\n" in body or "\r" in body:
        raise RecurrenceError("Recurrence must be a single RRULE line; DTSTART, EXDATE and RDATE are not accepted.")
    upper = body.upper()
    if upper.startswith("RRULE:"):
        upper = upper[len("RRULE:") :]
    if upper.startswith(("DTSTART", "EXDATE", "RDATE", "EXRULE")):
        raise RecurrenceError("Recurrence must be a single RRULE; DTSTART, EXDATE and RDATE are not accepted.")
    if not upper:
        raise RecurrenceError("Recurrence is empty: give an RRULE such as 'FREQ=WEEKLY;BYDAY=MO,WE'.")
    raw: dict[str, str] = {}
    for part in upper.split(";"):
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise RecurrenceError(f"Recurrence part '{part}' is not of the form NAME=VALUE.")
        if name in raw:
            raise RecurrenceError(f"Recurrence names {name} twice.")
        if name in ("BYSECOND",):
            raise RecurrenceError("BYSECOND is not supported: tasks recur at most hourly.")
        if name not in _ORDER:
            raise RecurrenceError(f"Unknown recurrence part '{name}'.")
        raw[name] = value
    freq = raw.get("FREQ")
    if freq is None:
        raise RecurrenceError("Recurrence needs a FREQ, e.g. 'FREQ=DAILY'.")
    if freq in ("SECONDLY", "MINUTELY"):
        raise RecurrenceError("Tasks recur at most hourly: FREQ must be HOURLY, DAILY, WEEKLY, MONTHLY or YEARLY.")
    if freq not in _FREQS:
        raise RecurrenceError("FREQ must be HOURLY, DAILY, WEEKLY, MONTHLY or YEARLY.")
    interval = _ints("INTERVAL", raw["INTERVAL"], 1, MAX_INTERVAL, signed=False)[0] if "INTERVAL" in raw else 1
    if "INTERVAL" in raw and "," in raw["INTERVAL"]:
        raise RecurrenceError("INTERVAL must be one number.")
    count: int | None = None
    if "COUNT" in raw:
        if not raw["COUNT"].isdigit() or int(raw["COUNT"]) < 1:
            raise RecurrenceError("COUNT must be a whole number of at least 1.")
        count = int(raw["COUNT"])
        if count > MAX_COUNT:
            raise RecurrenceError(f"COUNT must be at most {MAX_COUNT}.")
    until = raw.get("UNTIL")
    if until is not None:
        if count is not None:
            raise RecurrenceError("A recurrence may have COUNT or UNTIL, not both.")
        _until_local(until, None)  # raises on a bad value
    parts: dict[str, tuple[Any, ...]] = {}
    if "BYMONTH" in raw:
        parts["BYMONTH"] = _ints("BYMONTH", raw["BYMONTH"], 1, 12, signed=False)
    if "BYWEEKNO" in raw:
        if freq != "YEARLY":
            raise RecurrenceError("BYWEEKNO is only allowed with FREQ=YEARLY.")
        parts["BYWEEKNO"] = _ints("BYWEEKNO", raw["BYWEEKNO"], 1, 53, signed=True)
    if "BYYEARDAY" in raw:
        if freq in ("DAILY", "WEEKLY", "MONTHLY"):
            raise RecurrenceError("BYYEARDAY is not allowed with FREQ=DAILY, WEEKLY or MONTHLY.")
        parts["BYYEARDAY"] = _ints("BYYEARDAY", raw["BYYEARDAY"], 1, 366, signed=True)
    if "BYMONTHDAY" in raw:
        if freq == "WEEKLY":
            raise RecurrenceError("BYMONTHDAY is not allowed with FREQ=WEEKLY.")
        parts["BYMONTHDAY"] = _ints("BYMONTHDAY", raw["BYMONTHDAY"], 1, 31, signed=True)
    if "BYDAY" in raw:
        days: list[tuple[int | None, str]] = []
        for item in raw["BYDAY"].split(","):
            m = _BYDAY.fullmatch(item)
            if not m:
                raise RecurrenceError(f"BYDAY must list days such as MO,WE or 1MO,-1FR, not '{item}'.")
            n = int(m.group(1)) if m.group(1) else None
            if n is not None:
                if freq not in ("MONTHLY", "YEARLY"):
                    raise RecurrenceError("A numbered BYDAY (such as 1MO) needs FREQ=MONTHLY or YEARLY.")
                if freq == "YEARLY" and "BYWEEKNO" in raw:
                    raise RecurrenceError("A numbered BYDAY cannot be combined with BYWEEKNO.")
                if n == 0 or abs(n) > (5 if freq == "MONTHLY" else 53):
                    raise RecurrenceError(f"BYDAY number {n} is out of range.")
            days.append((n, m.group(2)))
        parts["BYDAY"] = tuple(days)
    if "BYHOUR" in raw:
        parts["BYHOUR"] = _hours(raw["BYHOUR"])
    if "BYMINUTE" in raw:
        minutes = _minutes(raw["BYMINUTE"])
        if len(minutes) > 1:
            raise RecurrenceError("BYMINUTE may name one minute only: tasks recur at most hourly.")
        parts["BYMINUTE"] = minutes
    if "BYSETPOS" in raw:
        if not parts:
            raise RecurrenceError("BYSETPOS needs another BYxxx part to select from.")
        parts["BYSETPOS"] = _ints("BYSETPOS", raw["BYSETPOS"], 1, 366, signed=True)
    wkst = raw.get("WKST")
    if wkst is not None and wkst not in _DAYS:
        raise RecurrenceError("WKST must be one of MO, TU, WE, TH, FR, SA, SU.")
    return _Rule(freq, interval, count, until, parts, wkst)


def _hours(value: str) -> tuple[int, ...]:
    out: list[int] = []
    for item in value.split(","):
        if not item.isdigit() or int(item) > 23:
            raise RecurrenceError(f"BYHOUR values must be 0 to 23, not '{item}'.")
        out.append(int(item))
    return tuple(out)


def _minutes(value: str) -> tuple[int, ...]:
    out: list[int] = []
    for item in value.split(","):
        if not item.isdigit() or int(item) > 59:
            raise RecurrenceError(f"BYMINUTE values must be 0 to 59, not '{item}'.")
        out.append(int(item))
    return tuple(out)


def _until_local(value: str, zone: str | None) -> datetime:
    """UNTIL as naive wall-clock time in `zone`: a `Z` value is converted, a floating one taken as it is, a
    date includes its whole day."""
    m = _UNTIL.fullmatch(value)
    bad = RecurrenceError("UNTIL must be a date (20261231) or date-time (20261231T170000Z), not '" + value + "'.")
    if not m:
        raise bad
    try:
        day = datetime.strptime(m.group(1), "%Y%m%d")
        if m.group(2) is None:
            return datetime.combine(day.date(), time(23, 59, 59))
        moment = datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S")
    except ValueError:
        raise bad from None
    if m.group(3):
        try:
            return to_local(moment.replace(tzinfo=UTC), zone)
        except OverflowError:
            return moment
    return moment


def _canonical(rule: _Rule) -> str:
    out = [f"FREQ={rule.freq}"]
    for name in _ORDER[1:]:
        if name == "INTERVAL" and rule.interval != 1:
            out.append(f"INTERVAL={rule.interval}")
        elif name == "COUNT" and rule.count is not None:
            out.append(f"COUNT={rule.count}")
        elif name == "UNTIL" and rule.until is not None:
            out.append(f"UNTIL={rule.until}")
        elif name == "BYDAY" and name in rule.parts:
            out.append("BYDAY=" + ",".join(f"{n if n else ''}{d}" for n, d in rule.parts[name]))
        elif name == "WKST" and rule.wkst is not None:
            out.append(f"WKST={rule.wkst}")
        elif name in rule.parts:
            out.append(f"{name}=" + ",".join(str(v) for v in rule.parts[name]))
    return ";".join(out)


def normalise_rule(text: str) -> str:
    """Validate an RRULE and return the text to store: upper-case, parts in a fixed order, no 'RRULE:' prefix,
    INTERVAL=1 left out. Raise RecurrenceError (a client-facing message) for anything refused."""
    return _canonical(_parse(text))


class _Exhausted(Exception):
    """The bounded search ran out of months to look at."""


class _BoundedRRule(_rr.rrule):  # type: ignore[misc]
    """dateutil's rrule with a budget of calendar steps.

    dateutil's iterator yields nothing for a rule that never matches and only checks UNTIL against an
    occurrence, so it would walk on to year 9999. Its iteration rebuilds its per-year/per-month masks through
    `_iterinfo.rebuild`, at least once for every month it moves on, and that method reads `rrule._byeaster`
    each time: the property counts those reads and stops the iteration when the budget is spent. (We never use
    BYEASTER, so the value is always None.) tests/test_recurrence.py holds impossible rules that prove it."""

    _steps_left: int

    @property
    def _byeaster(self) -> None:
        left = self.__dict__.get("_steps_left")
        if left is not None:
            if left <= 0:
                raise _Exhausted
            self.__dict__["_steps_left"] = left - 1
        return None

    @_byeaster.setter
    def _byeaster(self, value: object) -> None:
        if value is not None:
            raise ValueError("BYEASTER is not supported")


def _build(rule: _Rule, start: datetime, until: datetime | None, anchor: datetime | None = None) -> _BoundedRRule:
    """A bounded dateutil rrule starting at the naive `start`. The parts dateutil would take from DTSTART are
    taken from `anchor` (default `start`) instead, so that a later start keeps the rule's meaning."""
    anchor = anchor or start
    p = rule.parts
    kwargs: dict[str, Any] = {
        "freq": getattr(_rr, rule.freq),
        "dtstart": start,
        "interval": rule.interval,
        "wkst": getattr(_rr, rule.wkst or "MO"),
        "count": rule.count,
        "until": until,
        "bymonth": p.get("BYMONTH"),
        "byweekno": p.get("BYWEEKNO"),
        "byyearday": p.get("BYYEARDAY"),
        "bymonthday": p.get("BYMONTHDAY"),
        "byhour": p.get("BYHOUR"),
        "byminute": p.get("BYMINUTE"),
        "bysetpos": p.get("BYSETPOS"),
        "byweekday": tuple(getattr(_rr, d)(n) if n else getattr(_rr, d) for n, d in p["BYDAY"])
        if "BYDAY" in p
        else None,
    }
    if not any(k in p for k in ("BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY")):
        if rule.freq == "YEARLY":
            kwargs["bymonth"] = kwargs["bymonth"] or (anchor.month,)
            kwargs["bymonthday"] = (anchor.day,)
        elif rule.freq == "MONTHLY":
            kwargs["bymonthday"] = (anchor.day,)
        elif rule.freq == "WEEKLY":
            kwargs["byweekday"] = (anchor.weekday(),)
    try:
        return _BoundedRRule(**kwargs)
    except (ValueError, OverflowError):
        raise RecurrenceError("This recurrence can never occur (its BYxxx parts exclude every time).") from None


def _months_between(a: datetime, b: datetime) -> int:
    return (b.year - a.year) * 12 + b.month - a.month


def _restart(rule: _Rule, anchor: datetime, target: datetime) -> datetime:
    """A start for iterating a rule without COUNT: the latest period start at or before `target` that lies a
    whole number of INTERVALs of periods after the anchor, so the rule's occurrences after it are unchanged."""
    if rule.count is not None or target <= anchor:
        return anchor
    step = rule.interval
    if rule.freq == "HOURLY":
        k = int((target - anchor) // timedelta(hours=1)) // step
        return anchor + timedelta(hours=k * step)
    if rule.freq == "DAILY":
        return anchor + timedelta(days=((target - anchor).days // step) * step)
    if rule.freq == "WEEKLY":
        return anchor + timedelta(days=((target - anchor).days // (7 * step)) * 7 * step)
    if rule.freq == "MONTHLY":
        k = (_months_between(anchor, target) // step) * step
        if k == 0:
            return anchor
        year, month0 = divmod(anchor.year * 12 + anchor.month - 1 + k, 12)
        return datetime.combine(date(year, month0 + 1, 1), anchor.time())
    k = ((target.year - anchor.year) // step) * step
    if k == 0:
        return anchor
    return datetime.combine(date(anchor.year + k, 1, 1), anchor.time())


def _occurrences(rule: _Rule, anchor_local: datetime, after_local: datetime, zone: str | None) -> Iterator[datetime]:
    """The rule's naive local occurrences from (about) `after_local` up to BOUND_YEARS later, in order."""
    anchor_local = anchor_local.replace(microsecond=0)
    try:
        end = after_local.replace(year=after_local.year + BOUND_YEARS) + timedelta(days=2)
    except (ValueError, OverflowError):
        end = datetime.max
    if rule.count is not None:
        with contextlib.suppress(ValueError):
            end = min(end, anchor_local.replace(year=anchor_local.year + COUNT_SPAN_YEARS))
    until = _until_local(rule.until, zone) if rule.until is not None else None
    try:
        start = _restart(rule, anchor_local, after_local - timedelta(days=2))
    except (ValueError, OverflowError):
        start = anchor_local
    try:
        rr = _build(rule, start, until, anchor_local)
    except RecurrenceError:  # e.g. BYHOUR that an HOURLY INTERVAL never reaches from this anchor
        return
    rr.__dict__["_steps_left"] = _months_between(start, min(end, datetime(9999, 12, 31))) + 3
    try:
        for occurrence in rr:
            if occurrence > end:
                return
            yield occurrence
    except _Exhausted:
        return


def next_occurrence(rule: str, anchor_utc: datetime, current_utc: datetime, zone: str | None) -> datetime | None:
    """The first occurrence strictly after `current_utc` of `rule` started at `anchor_utc`, computed in the
    wall-clock time of `zone` (None = UTC); aware UTC. None when the rule is exhausted (COUNT, UNTIL) or has
    no occurrence within 10 years after `current_utc`."""
    parsed = _parse(rule)
    anchor_local = to_local(anchor_utc, zone)
    current_local = to_local(current_utc, zone)
    try:
        for occurrence in _occurrences(parsed, anchor_local, current_local, zone):
            instant = to_utc(occurrence, zone)
            if instant > LAST_INSTANT:
                return None  # past the last instant a task may be due: the rule ends there
            if instant > current_utc:
                return instant
    except (OverflowError, ValueError):  # wall-clock times at the end of the calendar (year 9999)
        return None
    return None


def check_has_occurrence(rule: str, anchor_utc: datetime, zone: str | None) -> None:
    """Raise RecurrenceError unless `rule` started at `anchor_utc` has an occurrence (the anchor included)
    within 10 years; rules that can never occur are refused the same way, quickly."""
    if next_occurrence(rule, anchor_utc, anchor_utc - timedelta(seconds=1), zone) is None:
        raise RecurrenceError(
            f"This recurrence has no occurrence in the {BOUND_YEARS} years after the due date "
            "(check BYMONTH/BYMONTHDAY, UNTIL and COUNT)."
        )
