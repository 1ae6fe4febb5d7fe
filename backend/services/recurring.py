"""Due dates in a zone, recurring tasks and their completions: the rules of `due_string`, `due_timezone` and
`recurrence` on a task (the maths: backend/recurrence.py, the phrases: backend/due_string.py).

- `due_string` is read in the request's `X-Timezone` (else UTC) and sets `due_date`, `due_timezone` and
  `recurrence` together; sent with any of those three, it is a 422 (one request, one meaning).
- A rule needs a due date: its anchor (`recurrence_start`) is the due date when the rule or the due date was
  last set by the client; COUNT counts from it. Completing moves `due_date`, never the anchor.
- Completing a recurring task records a completion (the due date it completed) and moves `due_date` to the next
  occurrence: the task stays open, and its subtasks are open again for the new occurrence. A rule with no next
  occurrence (COUNT or UNTIL exhausted, nothing within 10 years) completes the task for good.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as rows_of
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.due_string import DueStringError, parse_due_string
from backend.errors import InvalidRecurrence, ValidationFailed
from backend.models.common import EARLIEST, LATEST
from backend.models.task import Task, TaskCompletion, TaskStatus
from backend.recurrence import (
    RecurrenceError,
    TimezoneError,
    check_has_occurrence,
    next_occurrence,
    normalise_rule,
    validate_zone,
)

_SCHEDULE = ("due_date", "due_timezone", "recurrence")
COMPLETIONS: Any = TaskCompletion.__table__  # type: ignore[attr-defined]
_COMPLETIONS = COMPLETIONS.c
_FIELDS = ("id", "task_id", "completed_at", "due_date")


def schedule(task: Task | None, changes: dict[str, Any], zone_header: str | None, now: datetime) -> dict[str, Any]:
    """`changes` (a create's fields, or a PATCH's fields as sent) with `due_string` read into the schedule
    fields, the rule checked and stored in its canonical form, and the anchor set when it moves."""
    due_string = changes.pop("due_string", None)
    if due_string is not None:
        if sent := [name for name in _SCHEDULE if name in changes]:
            raise ValidationFailed(
                f"due_string sets {', '.join(_SCHEDULE)}: send it without {sent[0]}", field="due_string"
            )
        changes.update(_read_due_string(due_string, zone_header, now))
    if not (_SCHEDULE[0] in changes or _SCHEDULE[2] in changes or task is None):
        return changes  # nothing that moves the anchor; a new zone alone keeps it too
    rule = changes.get("recurrence", task.recurrence if task is not None else None)
    due = changes.get("due_date", task.due_date if task is not None else None)
    zone = changes.get("due_timezone", task.due_timezone if task is not None else None)
    if rule is None:
        changes["recurrence_start"] = None
        return changes
    if due is None:
        raise InvalidRecurrence("A recurring task needs a due_date: set one, or clear recurrence")
    try:
        if "recurrence" in changes:
            rule = changes["recurrence"] = normalise_rule(rule)
        check_has_occurrence(rule, due, zone)
    except RecurrenceError as exc:
        raise InvalidRecurrence(str(exc)) from None
    changes["recurrence_start"] = due
    return changes


def _read_due_string(text: str, zone_header: str | None, now: datetime) -> dict[str, Any]:
    try:
        zone = validate_zone(zone_header) if zone_header is not None else "UTC"
    except TimezoneError as exc:
        raise ValidationFailed(f"X-Timezone: {exc}", field="X-Timezone") from None
    try:
        spec = parse_due_string(text, now, zone)
    except (DueStringError, RecurrenceError) as exc:
        raise ValidationFailed(f"due_string: {exc}", field="due_string") from None
    except (OverflowError, ValueError):
        spec = None  # a date at the end of the calendar, in a zone behind UTC
    if spec is None or not EARLIEST <= spec.due_date <= LATEST:
        raise ValidationFailed(
            "due_string: the date lies outside 0001-01-02T00:00:00Z to 9999-12-30T23:59:59Z", field="due_string"
        )
    return {"due_date": spec.due_date, "due_timezone": spec.due_timezone, "recurrence": spec.recurrence}


async def advance(session: AsyncSession, task: Task, now: datetime) -> dict[str, Any] | None:
    """Completing recurring `task`: record the completion, and answer the changes that move it to its next
    occurrence (None: the rule is exhausted, the task completes for good)."""
    assert task.id is not None
    assert task.recurrence is not None
    session.add(TaskCompletion(task_id=task.id, completed_at=now, due_date=task.due_date))
    if task.due_date is None:  # pragma: no cover - a rule is never stored without a due date
        return None
    anchor = task.recurrence_start or task.due_date
    following = next_occurrence(task.recurrence, anchor, task.due_date, task.due_timezone)
    if following is None:
        return None
    return {"due_date": following, "status": TaskStatus.PENDING, "completed": False, "completed_at": None}


async def completions(session: AsyncSession, task_id: int, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """A page of the task's completions, newest first, and their total (the caller checked the owner)."""
    connection = await session.connection()
    total = func.count().over().label("total")
    query = (
        rows_of(_COMPLETIONS.id, _COMPLETIONS.task_id, _COMPLETIONS.completed_at, _COMPLETIONS.due_date, total)
        .where(_COMPLETIONS.task_id == task_id)
        .order_by(_COMPLETIONS.completed_at.desc(), _COMPLETIONS.id.desc())
        .limit(limit)
        .offset(offset)
    )
    rows = (await connection.execute(query)).all()
    if rows:
        return [dict(zip(_FIELDS, row, strict=False)) for row in rows], int(rows[0].total)
    count = rows_of(func.count()).select_from(COMPLETIONS).where(_COMPLETIONS.task_id == task_id)
    return [], int((await connection.execute(count)).scalar_one()) if offset else 0
