"""backend.due_string: phrases x reference times x zones, recurrences' first due dates, refusals."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.due_string import DueSpec, DueStringError, parse_due_string
from backend.recurrence import TimezoneError, next_occurrence

BERLIN = "Europe/Berlin"
NY = "America/New_York"
KOLKATA = "Asia/Kolkata"

# Reference times (UTC) and what they are locally.
MON_0800_BERLIN = datetime(2026, 3, 23, 7, 0, tzinfo=UTC)  # Monday 08:00 CET
SAT_BEFORE_SPRING = datetime(2026, 3, 28, 10, 0, tzinfo=UTC)  # Saturday 11:00 CET; DST starts Sunday 02:00
SAT_BEFORE_AUTUMN = datetime(2026, 10, 24, 10, 0, tzinfo=UTC)  # Saturday 12:00 CEST; DST ends Sunday 03:00
NY_LATE = datetime(2026, 7, 15, 3, 30, tzinfo=UTC)  # Tuesday 23:30 EDT on 14 July (UTC: Wednesday 15th)
KOLKATA_LATE = datetime(2026, 7, 14, 19, 0, tzinfo=UTC)  # Wednesday 00:30 IST on 15 July (UTC: Tuesday 14th)
UTC_NOON = datetime(2026, 12, 31, 12, 0, tzinfo=UTC)  # Thursday


def wall(spec: DueSpec) -> str:
    return spec.due_date.astimezone(ZoneInfo(spec.due_timezone)).strftime("%Y-%m-%d %a %H:%M %Z")


TABLE = [
    # phrase, now, zone, local due date, recurrence
    ("today", MON_0800_BERLIN, BERLIN, "2026-03-23 Mon 23:59 CET", None),
    ("Today", NY_LATE, NY, "2026-07-14 Tue 23:59 EDT", None),
    ("tonight", MON_0800_BERLIN, BERLIN, "2026-03-23 Mon 20:00 CET", None),
    ("tomorrow", SAT_BEFORE_SPRING, BERLIN, "2026-03-29 Sun 23:59 CEST", None),
    ("tomorrow 2:30am", SAT_BEFORE_SPRING, BERLIN, "2026-03-29 Sun 03:30 CEST", None),  # in the gap
    ("tomorrow 2:30am", SAT_BEFORE_AUTUMN, BERLIN, "2026-10-25 Sun 02:30 CEST", None),  # the fold: first
    ("tomorrow 5pm", MON_0800_BERLIN, BERLIN, "2026-03-24 Tue 17:00 CET", None),
    ("tomorrow  5 PM", NY_LATE, NY, "2026-07-15 Wed 17:00 EDT", None),
    ("tomorrow at 17:00", KOLKATA_LATE, KOLKATA, "2026-07-16 Thu 17:00 IST", None),
    ("5pm tomorrow", UTC_NOON, "UTC", "2027-01-01 Fri 17:00 UTC", None),
    ("tomorrow noon", MON_0800_BERLIN, BERLIN, "2026-03-24 Tue 12:00 CET", None),
    ("today midnight", MON_0800_BERLIN, BERLIN, "2026-03-23 Mon 23:59 CET", None),
    ("9:30am", MON_0800_BERLIN, BERLIN, "2026-03-23 Mon 09:30 CET", None),
    ("7am", MON_0800_BERLIN, BERLIN, "2026-03-24 Tue 07:00 CET", None),
    ("monday", MON_0800_BERLIN, BERLIN, "2026-03-23 Mon 23:59 CET", None),
    ("mon 7am", MON_0800_BERLIN, BERLIN, "2026-03-30 Mon 07:00 CEST", None),
    ("next monday", MON_0800_BERLIN, BERLIN, "2026-03-30 Mon 23:59 CEST", None),
    ("next mon", NY_LATE, NY, "2026-07-20 Mon 23:59 EDT", None),
    ("wed", NY_LATE, NY, "2026-07-15 Wed 23:59 EDT", None),
    ("wed", KOLKATA_LATE, KOLKATA, "2026-07-15 Wed 23:59 IST", None),
    ("next wednesday", KOLKATA_LATE, KOLKATA, "2026-07-22 Wed 23:59 IST", None),
    ("sunday", SAT_BEFORE_AUTUMN, BERLIN, "2026-10-25 Sun 23:59 CET", None),
    ("in 3 days", NY_LATE, NY, "2026-07-17 Fri 23:59 EDT", None),
    ("in 2 weeks", MON_0800_BERLIN, BERLIN, "2026-04-06 Mon 23:59 CEST", None),
    ("in a week", UTC_NOON, "UTC", "2027-01-07 Thu 23:59 UTC", None),
    ("in 3 hours", NY_LATE, NY, "2026-07-15 Wed 02:30 EDT", None),
    ("2026-12-25", KOLKATA_LATE, KOLKATA, "2026-12-25 Fri 23:59 IST", None),
    ("2026-12-25 09:00", NY_LATE, NY, "2026-12-25 Fri 09:00 EST", None),
    ("dec 25", MON_0800_BERLIN, BERLIN, "2026-12-25 Fri 23:59 CET", None),
    ("25 dec", UTC_NOON, "UTC", "2027-12-25 Sat 23:59 UTC", None),
    ("december 25 2027", MON_0800_BERLIN, BERLIN, "2027-12-25 Sat 23:59 CET", None),
    ("December 25th, 2027 at 9:30am", NY_LATE, NY, "2027-12-25 Sat 09:30 EST", None),
    ("feb 29", MON_0800_BERLIN, BERLIN, "2028-02-29 Tue 23:59 CET", None),
    # recurrences: the first due date is the first occurrence at or after now (local)
    ("every day", MON_0800_BERLIN, BERLIN, "2026-03-23 Mon 23:59 CET", "FREQ=DAILY"),
    ("daily at 7am", MON_0800_BERLIN, BERLIN, "2026-03-24 Tue 07:00 CET", "FREQ=DAILY"),
    ("every weekday", SAT_BEFORE_SPRING, BERLIN, "2026-03-30 Mon 23:59 CEST", "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"),
    ("every weekday at 8:30", NY_LATE, NY, "2026-07-15 Wed 08:30 EDT", "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"),
    ("every weekend", MON_0800_BERLIN, BERLIN, "2026-03-28 Sat 23:59 CET", "FREQ=WEEKLY;BYDAY=SA,SU"),
    ("every monday", NY_LATE, NY, "2026-07-20 Mon 23:59 EDT", "FREQ=WEEKLY;BYDAY=MO"),
    ("every monday at 9am", MON_0800_BERLIN, BERLIN, "2026-03-23 Mon 09:00 CET", "FREQ=WEEKLY;BYDAY=MO"),
    (
        "every monday at 9am",
        MON_0800_BERLIN.replace(hour=9),
        BERLIN,
        "2026-03-30 Mon 09:00 CEST",
        "FREQ=WEEKLY;BYDAY=MO",
    ),
    ("every mon", MON_0800_BERLIN, BERLIN, "2026-03-23 Mon 23:59 CET", "FREQ=WEEKLY;BYDAY=MO"),
    ("every mon, wed", KOLKATA_LATE, KOLKATA, "2026-07-15 Wed 23:59 IST", "FREQ=WEEKLY;BYDAY=MO,WE"),
    ("every friday and monday 6pm", UTC_NOON, "UTC", "2027-01-01 Fri 18:00 UTC", "FREQ=WEEKLY;BYDAY=MO,FR"),
    ("every 2 weeks", MON_0800_BERLIN, BERLIN, "2026-03-23 Mon 23:59 CET", "FREQ=WEEKLY;INTERVAL=2"),
    ("every other week", NY_LATE, NY, "2026-07-14 Tue 23:59 EDT", "FREQ=WEEKLY;INTERVAL=2"),
    ("every other monday", KOLKATA_LATE, KOLKATA, "2026-07-20 Mon 23:59 IST", "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO"),
    ("every 3 days", SAT_BEFORE_AUTUMN, BERLIN, "2026-10-24 Sat 23:59 CEST", "FREQ=DAILY;INTERVAL=3"),
    ("every month", UTC_NOON, "UTC", "2026-12-31 Thu 23:59 UTC", "FREQ=MONTHLY"),
    ("every month on the 15th", MON_0800_BERLIN, BERLIN, "2026-04-15 Wed 23:59 CEST", "FREQ=MONTHLY;BYMONTHDAY=15"),
    ("every month on the 15th", KOLKATA_LATE, KOLKATA, "2026-07-15 Wed 23:59 IST", "FREQ=MONTHLY;BYMONTHDAY=15"),
    ("every 15th at 10am", NY_LATE, NY, "2026-07-15 Wed 10:00 EDT", "FREQ=MONTHLY;BYMONTHDAY=15"),
    ("every month on the last day", UTC_NOON, "UTC", "2026-12-31 Thu 23:59 UTC", "FREQ=MONTHLY;BYMONTHDAY=-1"),
    ("every year", MON_0800_BERLIN, BERLIN, "2026-03-23 Mon 23:59 CET", "FREQ=YEARLY"),
    ("yearly", NY_LATE, NY, "2026-07-14 Tue 23:59 EDT", "FREQ=YEARLY"),
    ("every dec 25", UTC_NOON, "UTC", "2027-12-25 Sat 23:59 UTC", "FREQ=YEARLY;BYMONTH=12;BYMONTHDAY=25"),
    ("every day at 2:30", SAT_BEFORE_SPRING, BERLIN, "2026-03-29 Sun 03:30 CEST", "FREQ=DAILY"),
]


@pytest.mark.parametrize(("phrase", "now", "zone", "due", "recurrence"), TABLE)
def test_phrase_table(phrase: str, now: datetime, zone: str, due: str, recurrence: str | None) -> None:
    spec = parse_due_string(phrase, now, zone)
    assert (wall(spec), spec.recurrence) == (due, recurrence)
    assert spec.due_timezone == zone
    assert spec.due_date.tzinfo is UTC


def test_due_spec_is_frozen() -> None:
    spec = parse_due_string("today", MON_0800_BERLIN, BERLIN)
    with pytest.raises(AttributeError):
        spec.recurrence = "FREQ=DAILY"  # type: ignore[misc]


def test_a_recurrence_then_steps_by_its_interval_and_keeps_the_wall_time() -> None:
    spec = parse_due_string("every other monday at 9am", SAT_BEFORE_SPRING, BERLIN)
    assert spec.recurrence is not None
    assert wall(spec) == "2026-03-30 Mon 09:00 CEST"
    following = next_occurrence(spec.recurrence, spec.due_date, spec.due_date, BERLIN)
    assert following is not None
    assert wall(DueSpec(following, BERLIN, None)) == "2026-04-13 Mon 09:00 CEST"


@pytest.mark.parametrize(
    "phrase",
    [
        "",
        "   ",
        "someday",
        "every",
        "every blah",
        "every 0 days",
        "every hour",
        "tomorrow 25pm",
        "tomorrow 13pm",
        "tomorrow 24:00",
        "feb 30",
        "2026-02-30",
        "tomorrow 5pm 6pm",
        "in 3 hours 5pm",
        "next",
        "x" * 300,
    ],
)
def test_unreadable_text_is_refused_with_an_example(phrase: str) -> None:
    with pytest.raises(DueStringError) as caught:
        parse_due_string(phrase, MON_0800_BERLIN, BERLIN)
    message = str(caught.value)
    assert message
    assert "Traceback" not in message
    if len(phrase.strip()) < 30 and "feb 30" not in phrase and "2026-02-30" not in phrase and "5pm 6pm" not in phrase:
        assert "tomorrow 5pm" in message


def test_an_unknown_zone_is_a_timezone_error() -> None:
    with pytest.raises(TimezoneError):
        parse_due_string("today", MON_0800_BERLIN, "Mars/Base")


@settings(max_examples=100, deadline=None)
@given(
    phrase=st.sampled_from([row[0] for row in TABLE]),
    now=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)),
    zone=st.sampled_from([BERLIN, NY, KOLKATA, "UTC", "Australia/Lord_Howe"]),
)
def test_every_phrase_reads_at_any_time_and_is_never_in_the_past(phrase: str, now: datetime, zone: str) -> None:
    spec = parse_due_string(phrase, now, zone)
    assert spec.due_date.tzinfo is UTC
    if spec.recurrence is not None or phrase.startswith(("in ", "tomorrow", "next", "every")):
        assert spec.due_date >= now.replace(microsecond=0)
