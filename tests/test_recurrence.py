"""backend.recurrence: rule validation, next occurrences in wall-clock time, DST gaps and folds, bounds."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.recurrence import (
    RecurrenceError,
    TimezoneError,
    check_has_occurrence,
    next_occurrence,
    normalise_rule,
    to_local,
    to_utc,
    validate_zone,
)

BERLIN = "Europe/Berlin"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(instant: datetime, zone: str) -> datetime:
    return instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def successors(rule: str, anchor: datetime, zone: str | None, first: datetime, limit: int) -> list[datetime]:
    out, current = [], first
    while len(out) < limit:
        found = next_occurrence(rule, anchor, current, zone)
        if found is None:
            break
        out.append(found)
        current = found
    return out


# --- normalise_rule -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_rule", "stored"),
    [
        ("FREQ=WEEKLY;BYDAY=MO,WE", "FREQ=WEEKLY;BYDAY=MO,WE"),
        ("rrule:freq=weekly;byday=mo,we", "FREQ=WEEKLY;BYDAY=MO,WE"),
        ("  FREQ=DAILY  ", "FREQ=DAILY"),
        ("FREQ=DAILY;INTERVAL=1", "FREQ=DAILY"),
        ("INTERVAL=2;FREQ=WEEKLY", "FREQ=WEEKLY;INTERVAL=2"),
        ("FREQ=MONTHLY;BYMONTHDAY=31;BYMONTH=4", "FREQ=MONTHLY;BYMONTH=4;BYMONTHDAY=31"),
        ("FREQ=MONTHLY;BYDAY=-1FR", "FREQ=MONTHLY;BYDAY=-1FR"),
        ("FREQ=MONTHLY;BYDAY=+2TU", "FREQ=MONTHLY;BYDAY=2TU"),
        ("FREQ=YEARLY;COUNT=3", "FREQ=YEARLY;COUNT=3"),
        ("FREQ=DAILY;UNTIL=20261231T170000Z", "FREQ=DAILY;UNTIL=20261231T170000Z"),
        ("FREQ=DAILY;UNTIL=20261231", "FREQ=DAILY;UNTIL=20261231"),
        ("FREQ=HOURLY;INTERVAL=4", "FREQ=HOURLY;INTERVAL=4"),
        ("FREQ=DAILY;BYHOUR=9,17;BYMINUTE=30", "FREQ=DAILY;BYHOUR=9,17;BYMINUTE=30"),
        ("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1"),
        ("FREQ=WEEKLY;WKST=SU;INTERVAL=2;BYDAY=TU", "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU;WKST=SU"),
    ],
)
def test_normalise_rule_returns_canonical_text(given_rule: str, stored: str) -> None:
    assert normalise_rule(given_rule) == stored
    assert normalise_rule(stored) == stored


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ("", "empty"),
        ("FREQ=SECONDLY", "at most hourly"),
        ("FREQ=MINUTELY;INTERVAL=90", "at most hourly"),
        ("FREQ=DAILY;BYSECOND=5", "at most hourly"),
        ("FREQ=HOURLY;BYMINUTE=0,30", "at most hourly"),
        ("FREQ=FORTNIGHTLY", "FREQ must be"),
        ("BYDAY=MO", "needs a FREQ"),
        ("FREQ=DAILY;FOO=1", "Unknown recurrence part"),
        ("FREQ=DAILY;INTERVAL", "NAME=VALUE"),
        ("FREQ=DAILY;;", "NAME=VALUE"),
        ("FREQ=DAILY;FREQ=WEEKLY", "twice"),
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL"),
        ("FREQ=DAILY;INTERVAL=x", "INTERVAL"),
        ("FREQ=DAILY;COUNT=0", "COUNT"),
        ("FREQ=DAILY;COUNT=-1", "COUNT"),
        ("FREQ=DAILY;COUNT=1001", "at most 1000"),
        ("FREQ=DAILY;UNTIL=tomorrow", "UNTIL"),
        ("FREQ=DAILY;UNTIL=20261332", "UNTIL"),
        ("FREQ=DAILY;UNTIL=20261231T250000Z", "UNTIL"),
        ("FREQ=DAILY;COUNT=3;UNTIL=20261231", "not both"),
        ("FREQ=WEEKLY;BYDAY=XX", "BYDAY"),
        ("FREQ=WEEKLY;BYDAY=1MO", "numbered BYDAY"),
        ("FREQ=MONTHLY;BYDAY=6MO", "out of range"),
        ("FREQ=MONTHLY;BYMONTHDAY=32", "BYMONTHDAY"),
        ("FREQ=MONTHLY;BYMONTHDAY=0", "BYMONTHDAY"),
        ("FREQ=WEEKLY;BYMONTHDAY=3", "not allowed with FREQ=WEEKLY"),
        ("FREQ=MONTHLY;BYYEARDAY=3", "BYYEARDAY"),
        ("FREQ=MONTHLY;BYWEEKNO=3", "BYWEEKNO"),
        ("FREQ=YEARLY;BYMONTH=13", "BYMONTH"),
        ("FREQ=DAILY;BYHOUR=24", "BYHOUR"),
        ("FREQ=DAILY;BYSETPOS=1", "BYSETPOS"),
        ("FREQ=DAILY;WKST=XX", "WKST"),
        ("DTSTART:20260101T090000Z\nRRULE:FREQ=DAILY", "single RRULE"),
        ("DTSTART:20260101T090000Z", "DTSTART"),
        ("FREQ=DAILY\nEXDATE:20260102T090000Z", "single RRULE"),
        ("FREQ=DAILY;BYMONTHDAY=" + ",".join(["1"] * 300), "too long"),
    ],
)
def test_normalise_rule_refuses_with_a_plain_message(rule: str, says: str) -> None:
    with pytest.raises(RecurrenceError, match=says) as caught:
        normalise_rule(rule)
    assert "Traceback" not in str(caught.value)
    assert "dateutil" not in str(caught.value)


def test_recurrence_error_is_a_value_error() -> None:
    assert issubclass(RecurrenceError, ValueError)
    assert issubclass(TimezoneError, ValueError)


# --- zones and the gap/fold helper --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Europe/Berlin", "UTC", "America/New_York", "Asia/Kolkata", "Etc/GMT+5"])
def test_validate_zone_accepts_iana_names_as_given(name: str) -> None:
    assert validate_zone(name) == name


@pytest.mark.parametrize(
    "name", ["", "Mars/Olympus", "../etc/passwd", "/etc/localtime", "Europe/../UTC", "Europe//Berlin", "a" * 200]
)
def test_validate_zone_refuses_unknown_names_and_paths(name: str) -> None:
    with pytest.raises(TimezoneError):
        validate_zone(name)


def test_gap_time_moves_forward_by_the_gap() -> None:
    # 2026-03-29: Europe/Berlin skips 02:00-03:00; 02:30 is read as 03:30 CEST.
    instant = to_utc(datetime(2026, 3, 29, 2, 30), BERLIN)
    assert instant == utc(2026, 3, 29, 1, 30)
    assert local(instant, BERLIN) == datetime(2026, 3, 29, 3, 30)


def test_ambiguous_time_takes_its_first_instance() -> None:
    # 2026-10-25: Europe/Berlin repeats 02:00-03:00; 02:30 is the first one, CEST (00:30 UTC).
    assert to_utc(datetime(2026, 10, 25, 2, 30), BERLIN) == utc(2026, 10, 25, 0, 30)
    assert to_utc(datetime(2026, 11, 1, 1, 30), "America/New_York") == utc(2026, 11, 1, 5, 30)


def test_to_local_needs_an_aware_instant() -> None:
    with pytest.raises(ValueError, match="aware"):
        to_local(datetime(2026, 1, 1), BERLIN)


# --- next_occurrence ----------------------------------------------------------------------------------------


def test_weekly_09_00_berlin_stays_09_00_local_across_both_dst_changes() -> None:
    anchor = utc(2026, 3, 16, 8, 0)  # Monday 09:00 CET
    found = successors("FREQ=WEEKLY", anchor, BERLIN, anchor, 34)
    assert {local(f, BERLIN).time() for f in found} == {time(9, 0)}
    assert all(local(f, BERLIN).weekday() == 0 for f in found)
    assert found[0] == utc(2026, 3, 23, 8, 0)  # still CET
    assert found[1] == utc(2026, 3, 30, 7, 0)  # CEST: UTC hour 8 -> 7
    assert found[32] == utc(2026, 11, 2, 8, 0)  # CET again: 7 -> 8
    assert {f.hour for f in found} == {7, 8}


def test_daily_across_the_spring_gap_and_the_autumn_fold() -> None:
    spring = utc(2026, 3, 28, 1, 30)  # 02:30 CET, the day before the gap
    assert next_occurrence("FREQ=DAILY", spring, spring, BERLIN) == utc(2026, 3, 29, 1, 30)  # 03:30 CEST
    assert next_occurrence("FREQ=DAILY", spring, utc(2026, 3, 29, 1, 30), BERLIN) == utc(2026, 3, 30, 0, 30)
    autumn = utc(2026, 10, 24, 0, 30)  # 02:30 CEST
    assert next_occurrence("FREQ=DAILY", autumn, autumn, BERLIN) == utc(2026, 10, 25, 0, 30)  # first 02:30
    assert next_occurrence("FREQ=DAILY", autumn, utc(2026, 10, 25, 0, 30), BERLIN) == utc(2026, 10, 26, 1, 30)


def test_hourly_through_the_gap_and_the_fold() -> None:
    anchor = utc(2026, 3, 28, 23, 30)  # 00:30 CET on the gap day
    found = successors("FREQ=HOURLY", anchor, BERLIN, anchor, 3)
    # 01:30 CET, then 02:30 (in the gap: 03:30 CEST, 01:30 UTC), then 03:30 CEST is the same instant: skipped.
    assert found == [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2, 30)]
    anchor = utc(2026, 10, 24, 22, 30)  # 00:30 CEST on the fold day
    found = successors("FREQ=HOURLY", anchor, BERLIN, anchor, 3)
    # 01:30 CEST, 02:30 CEST (first instance), then 03:30 CET: the repeated 02:30 CET is skipped.
    assert found == [utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2, 30)]


def test_next_is_strictly_after_current_and_none_zone_is_utc() -> None:
    anchor = utc(2026, 5, 4, 9, 0)  # a Monday
    assert next_occurrence("FREQ=WEEKLY;BYDAY=MO,WE", anchor, anchor, None) == utc(2026, 5, 6, 9, 0)
    assert next_occurrence("FREQ=WEEKLY;BYDAY=MO,WE", anchor, anchor - timedelta(seconds=1), None) == anchor
    assert next_occurrence("FREQ=WEEKLY;BYDAY=MO,WE", anchor, utc(2026, 5, 6, 9, 0), "UTC") == utc(2026, 5, 11, 9)


def test_current_far_after_the_anchor_keeps_the_interval_phase() -> None:
    anchor = utc(2020, 1, 6, 9, 0)  # Monday
    found = next_occurrence("FREQ=WEEKLY;INTERVAL=3", anchor, utc(2026, 6, 1), None)
    assert found is not None
    assert (found.date() - anchor.date()).days % 21 == 0
    assert found - utc(2026, 6, 1) <= timedelta(days=21)
    found = next_occurrence("FREQ=MONTHLY;INTERVAL=5", utc(2020, 1, 31, 9), utc(2026, 6, 1), None)
    assert found is not None
    assert found.day == 31
    assert ((found.year - 2020) * 12 + found.month - 1) % 5 == 0
    assert next_occurrence("FREQ=YEARLY;INTERVAL=4", utc(2000, 2, 29, 9), utc(2026, 6, 1), None) == utc(2028, 2, 29, 9)
    assert next_occurrence("FREQ=HOURLY;INTERVAL=7", utc(2020, 1, 1), utc(2026, 1, 1), None) == utc(2026, 1, 1, 4)


def test_monthly_on_the_31st_skips_short_months() -> None:
    anchor = utc(2026, 1, 31, 9, 0)
    found = successors("FREQ=MONTHLY", anchor, None, anchor, 3)
    assert [f.date() for f in found] == [date(2026, 3, 31), date(2026, 5, 31), date(2026, 7, 31)]


def test_count_counts_from_the_anchor_and_then_is_exhausted() -> None:
    anchor = utc(2026, 5, 4, 7, 0)
    found = successors("FREQ=DAILY;COUNT=3", anchor, BERLIN, anchor, 10)
    assert found == [utc(2026, 5, 5, 7, 0), utc(2026, 5, 6, 7, 0)]
    # current far later than the last occurrence: still exhausted
    assert next_occurrence("FREQ=DAILY;COUNT=3", anchor, utc(2027, 1, 1), BERLIN) is None


@pytest.mark.parametrize(
    ("until", "last"),
    [
        ("20260507T070000Z", utc(2026, 5, 7, 7, 0)),  # UTC: the same instant, inclusive
        ("20260507T065959Z", utc(2026, 5, 6, 7, 0)),
        ("20260507T090000", utc(2026, 5, 7, 7, 0)),  # floating: 09:00 Berlin wall time
        ("20260507T085959", utc(2026, 5, 6, 7, 0)),
        ("20260507", utc(2026, 5, 7, 7, 0)),  # date: the whole local day
    ],
)
def test_until_utc_floating_and_date(until: str, last: datetime) -> None:
    anchor = utc(2026, 5, 4, 7, 0)  # 09:00 CEST
    found = successors(f"FREQ=DAILY;UNTIL={until}", anchor, BERLIN, anchor, 10)
    assert found[-1] == last


def test_no_occurrence_within_ten_years_after_current_is_none() -> None:
    anchor = utc(2001, 2, 28, 9)
    assert next_occurrence("FREQ=YEARLY;INTERVAL=11;BYMONTH=2;BYMONTHDAY=28", anchor, anchor, None) is None
    assert next_occurrence("FREQ=YEARLY;INTERVAL=9;BYMONTH=2;BYMONTHDAY=28", anchor, anchor, None) == utc(
        2010, 2, 28, 9
    )


IMPOSSIBLE = [
    "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
    "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=31",
    "FREQ=MONTHLY;BYMONTHDAY=31;BYMONTH=4",
    "FREQ=HOURLY;BYMONTH=2;BYMONTHDAY=30",
    "FREQ=WEEKLY;BYMONTH=6;BYDAY=MO;BYSETPOS=2",
    "FREQ=YEARLY;BYWEEKNO=53;BYMONTH=1;BYDAY=MO;BYYEARDAY=200",
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("rule", IMPOSSIBLE)
def test_impossible_rules_are_refused_without_hanging(rule: str) -> None:
    assert normalise_rule(rule)
    anchor = utc(2026, 1, 1, 9)
    with pytest.raises(RecurrenceError, match="no occurrence in the 10 years"):
        check_has_occurrence(rule, anchor, BERLIN)
    assert next_occurrence(rule, anchor, anchor, BERLIN) is None
    assert next_occurrence(rule, anchor, utc(2200, 1, 1), "America/New_York") is None


@pytest.mark.timeout(20)
def test_rules_far_from_the_anchor_or_near_year_9999_return() -> None:
    assert (
        next_occurrence(
            "FREQ=HOURLY;COUNT=1000;BYMONTH=2;BYMONTHDAY=29;BYHOUR=0", utc(2001, 1, 1), utc(2040, 1, 1), None
        )
        is None
    )
    # No occurrence after the last instant a task may be due (9999-12-30T23:59:59Z), nor an overflow near it.
    assert next_occurrence("FREQ=DAILY", utc(9999, 12, 29), utc(9999, 12, 29), None) == utc(9999, 12, 30)
    assert next_occurrence("FREQ=DAILY", utc(9999, 12, 30), utc(9999, 12, 30), None) is None
    assert (
        next_occurrence("FREQ=DAILY;BYHOUR=10,20", utc(9999, 12, 30, 20), utc(9999, 12, 30, 20), "Pacific/Honolulu")
        is None
    )
    assert next_occurrence("FREQ=HOURLY", utc(1, 1, 2), utc(9000, 1, 1), None) == utc(9000, 1, 1, 1)


def test_check_has_occurrence_accepts_the_anchor_itself_and_refuses_a_past_until() -> None:
    anchor = utc(2026, 5, 4, 7)
    check_has_occurrence("FREQ=DAILY;COUNT=1", anchor, BERLIN)
    check_has_occurrence("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29", anchor, BERLIN)
    with pytest.raises(RecurrenceError):
        check_has_occurrence("FREQ=DAILY;UNTIL=20260101T000000Z", anchor, BERLIN)
    # every 6 hours from 09:00 reaches 09, 15, 21, 03 only
    rule = normalise_rule("FREQ=HOURLY;INTERVAL=6;BYHOUR=3,10")
    check_has_occurrence(rule, utc(2026, 5, 4, 9), None)
    assert next_occurrence(rule, utc(2026, 5, 4, 9), utc(2026, 5, 4, 9), None) == utc(2026, 5, 5, 3)
    with pytest.raises(RecurrenceError):
        check_has_occurrence("FREQ=HOURLY;INTERVAL=6;BYHOUR=10", utc(2026, 5, 4, 9), None)
    assert next_occurrence("FREQ=HOURLY;INTERVAL=6;BYHOUR=10", utc(2026, 5, 4, 9), utc(2026, 5, 4, 9), None) is None


# --- properties ---------------------------------------------------------------------------------------------

ZONES = ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "UTC", "Australia/Lord_Howe", "America/Sao_Paulo"]
DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]


@st.composite
def rules(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    freq = draw(st.sampled_from(["DAILY", "WEEKLY", "MONTHLY", "YEARLY"]))
    parts: dict[str, object] = {"FREQ": freq}
    interval = draw(st.integers(1, 3))
    if interval > 1:
        parts["INTERVAL"] = interval
    by = draw(st.sampled_from(["none", "day", "monthday"] if freq != "WEEKLY" else ["none", "day"]))
    if by == "day":
        parts["BYDAY"] = sorted(draw(st.sets(st.sampled_from(DAYS), min_size=1, max_size=3)), key=DAYS.index)
    elif by == "monthday":
        parts["BYMONTHDAY"] = sorted(draw(st.sets(st.integers(1, 28), min_size=1, max_size=3)))
    if draw(st.booleans()):
        parts["COUNT"] = draw(st.integers(1, 5))
    text = ";".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in parts.items())
    return text, parts


anchors = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 12, 28), timezones=st.just(UTC)).filter(
    lambda d: d.day <= 28
)


@settings(max_examples=200, deadline=None)
@given(rule=rules(), zone=st.sampled_from(ZONES), anchor=anchors)
def test_successors_keep_wall_time_and_satisfy_the_rule(
    rule: tuple[str, dict[str, object]], zone: str, anchor: datetime
) -> None:
    text, parts = rule
    anchor = anchor.replace(microsecond=0)
    anchor_local = local(anchor, zone)
    if anchor_local.day > 28:  # the local date of a late-UTC anchor can be the 29th..31st
        anchor = anchor - timedelta(days=3)
        anchor_local = local(anchor, zone)
    first = next_occurrence(text, anchor, anchor - timedelta(seconds=1), zone)
    assert first is not None
    found = [first, *successors(text, anchor, zone, first, 12)]
    assert all(a < b for a, b in itertools.pairwise(found))
    assert found[0] >= anchor
    for occurrence in found:
        wall = local(occurrence, zone)
        # the anchor's wall-clock time on the occurrence's local date (moved forward by a gap if it falls in one)
        assert to_utc(datetime.combine(wall.date(), anchor_local.time()), zone) == occurrence
        if wall.time() != anchor_local.time():
            assert local(to_utc(datetime.combine(wall.date(), anchor_local.time()), zone), zone) != datetime.combine(
                wall.date(), anchor_local.time()
            )
        if "BYDAY" in parts:
            assert DAYS[wall.weekday()] in parts["BYDAY"]  # type: ignore[operator]
        elif "BYMONTHDAY" in parts:
            assert wall.day in parts["BYMONTHDAY"]  # type: ignore[operator]
        elif parts["FREQ"] == "WEEKLY":
            assert wall.weekday() == anchor_local.weekday()
        elif parts["FREQ"] == "MONTHLY":
            assert wall.day == anchor_local.day
        elif parts["FREQ"] == "YEARLY":
            assert (wall.month, wall.day) == (anchor_local.month, anchor_local.day)
        if parts["FREQ"] == "DAILY" and "INTERVAL" in parts:
            assert (wall.date() - anchor_local.date()).days % parts["INTERVAL"] == 0  # type: ignore[operator]
    if "COUNT" in parts:
        assert len(found) == parts["COUNT"]
        assert next_occurrence(text, anchor, found[-1], zone) is None
    else:
        assert len(found) == 13
