"""`due_string`: a little English for due dates and recurrences ('tomorrow 5pm', 'every monday at 9am').

A small deterministic grammar, case-insensitive, extra spaces and commas ignored. The text is read in the
wall-clock time of the request's zone and the result is an aware UTC due date, that zone and an RRULE (or None).

Decisions:
- A phrase without a time is due at the END of that local day, 23:59:00 ("today" is not overdue the moment it
  is created; "tonight" is 20:00). "midnight" means that same end of the day; "noon" is 12:00.
- A bare weekday ("monday", "mon") is the first such day, today included, whose due time has not passed;
  "next monday" is the first Monday strictly after today. A date without a year ("dec 25") is this year's
  if that day is today or later, else next year's. A time alone ("5pm") is the next time the clock shows it.
- A recurrence's RRULE carries no time of day: the due date's time does. The first due date is the first
  occurrence at or after now (local): "every monday at 9am" on a Monday at 08:00 is today 09:00, at 10:00 next
  Monday. For the first date the INTERVAL is ignored ("every other monday" said on a Wednesday is due the coming
  Monday); the following dates step by the interval from there.
- Times in a daylight-saving gap or fold follow `backend.recurrence.to_utc` (a gap time moves forward by the
  gap; an ambiguous time takes its first instance).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from backend.recurrence import check_has_occurrence, next_occurrence, normalise_rule, to_local, to_utc, validate_zone

END_OF_DAY = time(23, 59)
TONIGHT = time(20, 0)
MAX_LENGTH = 200

EXAMPLES = "'today', 'tomorrow 5pm', 'next monday', 'dec 25', 'in 3 days', 'every weekday at 9am' or 'every 2 weeks'"

_WEEKDAYS = {
    "monday": 0,
    "mon": 0,
    "tuesday": 1,
    "tue": 1,
    "tues": 1,
    "wednesday": 2,
    "wed": 2,
    "thursday": 3,
    "thu": 3,
    "thur": 3,
    "thurs": 3,
    "friday": 4,
    "fri": 4,
    "saturday": 5,
    "sat": 5,
    "sunday": 6,
    "sun": 6,
}
_RRULE_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7}

_DAY = "|".join(sorted(_WEEKDAYS, key=len, reverse=True))
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_ORD = r"(\d{1,2})(?:st|nd|rd|th)?"
_N = r"(\d{1,3}|other|a|an|one|two|three|four|five|six|seven)"

# A time, with an optional "at" before it; the first that matches is taken out of the text.
_TIMES = (
    re.compile(r"(?:\bat )?\b(noon|midday|midnight)\b"),
    re.compile(r"(?:\bat )?\b(\d{1,2})(?::(\d{2}))? ?(am|pm)\b"),
    re.compile(r"(?:\bat )?\b(\d{1,2}):(\d{2})\b"),
    re.compile(r"\bat (\d{1,2})\b"),
)


class DueStringError(ValueError):
    """Text `parse_due_string` cannot read; the message is shown to the client and names examples that work."""


@dataclass(frozen=True)
class DueSpec:
    due_date: datetime  # aware, UTC
    due_timezone: str
    recurrence: str | None


def _fail(text: str) -> DueStringError:
    shown = text if len(text) <= 60 else text[:57] + "..."
    return DueStringError(f"Could not read the due string '{shown}'. Try for example {EXAMPLES}.")


def _take_time(phrase: str, text: str) -> tuple[str, time | None]:
    """Take the (one) time out of `phrase`: the rest of the phrase, and the time or None."""
    for pattern in _TIMES:
        m = pattern.search(phrase)
        if m is None:
            continue
        rest = " ".join((phrase[: m.start()] + " " + phrase[m.end() :]).split())
        if any(p.search(rest) for p in _TIMES):
            raise DueStringError(f"The due string '{text}' names more than one time.")
        groups = m.groups()
        if groups[0] in ("noon", "midday"):
            return rest, time(12, 0)
        if groups[0] == "midnight":
            return rest, END_OF_DAY
        hour = int(groups[0])
        minute = int(groups[1]) if len(groups) > 1 and groups[1] else 0
        meridiem = groups[2] if len(groups) > 2 else None
        if meridiem:
            if not 1 <= hour <= 12:
                raise _fail(text)
            hour = hour % 12 + (12 if meridiem == "pm" else 0)
        if hour > 23 or minute > 59:
            raise _fail(text)
        return rest, time(hour, minute)
    return phrase, None


def _count(word: str) -> int:
    if word == "other":
        return 2
    n = _NUMBERS.get(word)
    return n if n is not None else int(word)


def _day_list(phrase: str) -> list[int] | None:
    """'mon wed', 'monday and friday', 'tue, thu' -> weekday numbers; None if the phrase is not only days."""
    words = [w for w in phrase.replace(",", " ").split() if w != "and"]
    if not words or any(w not in _WEEKDAYS for w in words):
        return None
    return sorted({_WEEKDAYS[w] for w in words})


def _recurrence(phrase: str) -> str | None:
    """The RRULE for a recurrence phrase ('every 2 weeks'), or None when the phrase is not a recurrence."""
    aliases = {"daily": "every day", "weekly": "every week", "monthly": "every month"}
    aliases |= {"yearly": "every year", "annually": "every year", "weekdays": "every weekday"}
    for alias, meaning in aliases.items():
        if phrase == alias or phrase.startswith(alias + " "):
            phrase = meaning + phrase[len(alias) :]
    if not phrase.startswith("every "):
        return None
    body = phrase[len("every ") :].strip()
    if body in ("weekday", "workday", "work day", "business day"):
        return "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"
    if body in ("weekend", "weekend day"):
        return "FREQ=WEEKLY;BYDAY=SA,SU"
    m = re.fullmatch(rf"(?:{_N} )?(hour|day|week|month|year)s?(?: on (.+))?", body)
    if m:
        n = _count(m.group(1)) if m.group(1) else 1
        unit, on = m.group(2), m.group(3)
        if n < 1:
            return None
        rule = {"hour": "HOURLY", "day": "DAILY", "week": "WEEKLY", "month": "MONTHLY", "year": "YEARLY"}[unit]
        rule = f"FREQ={rule}" + (f";INTERVAL={n}" if n != 1 else "")
        if on is None:
            return rule if unit != "hour" else None
        return _with_on(rule, unit, on)
    m = re.fullmatch(rf"(?:{_N} )?(.+)", body)
    if m and m.group(1) and _day_list(m.group(2)) is None:
        m = None
    if m:
        days = _day_list(m.group(2))
        if days is not None:
            n = _count(m.group(1)) if m.group(1) else 1
            interval = f";INTERVAL={n}" if n != 1 else ""
            return f"FREQ=WEEKLY{interval};BYDAY=" + ",".join(_RRULE_DAYS[d] for d in days)
    m = re.fullmatch(rf"{_ORD}(?: of (?:the|each|every) month)?", body)
    if m and body[0].isdigit() and not body.isdigit():
        return f"FREQ=MONTHLY;BYMONTHDAY={int(m.group(1))}"
    month_day = _month_day(body)
    if month_day is not None:
        return f"FREQ=YEARLY;BYMONTH={month_day[0]};BYMONTHDAY={month_day[1]}"
    return None


def _with_on(rule: str, unit: str, on: str) -> str | None:
    """'every month on the 15th', 'every week on mon, wed', 'every year on dec 25'."""
    on = on.removeprefix("the ").strip()
    if unit == "week":
        days = _day_list(on)
        return rule + ";BYDAY=" + ",".join(_RRULE_DAYS[d] for d in days) if days else None
    if unit == "month":
        if on in ("last day", "last"):
            return rule + ";BYMONTHDAY=-1"
        m = re.fullmatch(_ORD, on)
        return rule + f";BYMONTHDAY={int(m.group(1))}" if m else None
    if unit == "year":
        month_day = _month_day(on)
        return rule + f";BYMONTH={month_day[0]};BYMONTHDAY={month_day[1]}" if month_day else None
    return None


def _month_day(phrase: str) -> tuple[int, int] | None:
    """'dec 25', 'december 25th', '25 dec', '25th of december' -> (12, 25)."""
    m = re.fullmatch(rf"({_MONTH}) {_ORD}", phrase) or re.fullmatch(rf"{_ORD} (?:of )?({_MONTH})", phrase)
    if m is None:
        return None
    a, b = m.groups()
    month, day = (_MONTHS[a], int(b)) if a in _MONTHS else (_MONTHS[b], int(a))
    try:
        date(2000, month, day)  # a leap year: Feb 29 is a day some years have
    except ValueError:
        return None
    return month, day


def _date(phrase: str, today: date, at: time, now: datetime, text: str) -> date | None:
    """The local date a one-off phrase names, or None when the phrase is not a date."""
    if phrase in ("today", "tod", "tonight"):
        return today
    if phrase in ("tomorrow", "tmr", "tmrw", "tomorow"):
        return today + timedelta(days=1)
    m = re.fullmatch(rf"(next |this |on )?({_DAY})", phrase)
    if m:
        wanted = _WEEKDAYS[m.group(2)]
        ahead = (wanted - today.weekday()) % 7
        if (m.group(1) == "next " and ahead == 0) or (ahead == 0 and datetime.combine(today, at) < now):
            ahead = 7
        return today + timedelta(days=ahead)
    m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", phrase)
    if m:
        try:
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            raise DueStringError(f"The due string '{text}' names a date that does not exist.") from None
    m = re.fullmatch(r"(.+?)(?: (\d{4}))?", phrase.removeprefix("on "))
    if m:
        month_day = _month_day(m.group(1))
        if month_day is not None:
            years = [int(m.group(2))] if m.group(2) else list(range(today.year, min(today.year + 9, 10000)))
            for year in years:
                try:
                    found = date(year, *month_day)
                except ValueError:
                    continue
                if m.group(2) or found >= today:
                    return found
            raise DueStringError(f"The due string '{text}' names a date that does not exist.")
    m = re.fullmatch(rf"in {_N} (day|week)s?", phrase)
    if m and m.group(1) != "other":
        n = _count(m.group(1))
        if n > 3660 // (7 if m.group(2) == "week" else 1):
            raise _fail(text)
        return today + timedelta(days=n * (7 if m.group(2) == "week" else 1))
    return None


def parse_due_string(text: str, now_utc: datetime, zone: str) -> DueSpec:
    """Read `text` at the moment `now_utc` in the wall-clock time of `zone` (an IANA name; TimezoneError if
    unknown). Raise DueStringError for text outside the grammar."""
    zone = validate_zone(zone)
    if not isinstance(text, str) or len(text) > MAX_LENGTH:
        raise DueStringError(f"The due string must be text of at most {MAX_LENGTH} characters.")
    phrase = " ".join(text.lower().replace(",", " ").replace(".", " ").split())
    if not phrase:
        raise _fail(text)
    phrase, at = _take_time(phrase, text)
    now_local = to_local(now_utc, zone)
    today = now_local.date()

    rule = _recurrence(phrase)
    if rule is not None:
        rule = normalise_rule(rule)
        anchor = to_utc(datetime.combine(today, at or END_OF_DAY), zone)
        first_rule = re.sub(r";INTERVAL=\d+", "", rule)
        start = now_utc.replace(microsecond=0) - timedelta(seconds=1)
        first = next_occurrence(first_rule, anchor, start, zone)
        if first is None:
            raise DueStringError(f"The due string '{text}' names a recurrence that never occurs.")
        check_has_occurrence(rule, first, zone)
        return DueSpec(first, zone, rule)

    if phrase.startswith("every ") or phrase in ("daily", "weekly", "monthly", "yearly"):
        raise _fail(text)
    m = re.fullmatch(r"in (\d{1,3}|a|an|one|two|three) (hour|minute)s?", phrase)
    if m:
        if at is not None:
            raise _fail(text)
        delta = timedelta(**{m.group(2) + "s": _count(m.group(1))})
        return DueSpec(now_utc.replace(microsecond=0) + delta, zone, None)
    if not phrase:
        if at is None:
            raise _fail(text)
        day = today if datetime.combine(today, at) >= now_local else today + timedelta(days=1)
        return DueSpec(to_utc(datetime.combine(day, at), zone), zone, None)
    default = TONIGHT if phrase == "tonight" else END_OF_DAY
    day_or_none = _date(phrase, today, at or default, now_local, text)
    if day_or_none is None:
        raise _fail(text)
    return DueSpec(to_utc(datetime.combine(day_or_none, at or default), zone), zone, None)
