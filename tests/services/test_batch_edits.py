"""services/batch_edits.py called directly, on SQLite and PostgreSQL, in a rolled-back transaction."""

from __future__ import annotations

import uuid

from backend.errors import NotFound
from backend.models.batch import TaskUpdateCommand
from backend.models.task import TaskCreate
from backend.services import batch_edits, tasks


def edit(target: int, **data: object) -> batch_edits.Edit:
    command = TaskUpdateCommand.model_validate(
        {"id": str(uuid.uuid4()), "op": "task.update", "target": target, "data": data}
    )
    assert batch_edits.is_field_edit(command)
    return batch_edits.Edit(command, target)


async def test_a_copy_the_session_holds_is_read_again_after_the_run(db_session, owner):
    """The run writes with Core; a task an earlier command of the batch loaded (and something still holds) must
    not answer its old values to a later command: its loaded copy is expired, so the next read refreshes it."""
    held = await tasks.create_task(db_session, owner, TaskCreate(title="before"))
    task_id = held.id
    assert task_id is not None
    results = await batch_edits.apply_edits(db_session, owner, None, [edit(task_id, title="after")])
    assert results[0][1]["title"] == "after"  # type: ignore[index]
    again = await tasks.lock_task(db_session, owner, task_id)
    assert again is held
    assert (again.title, again.version) == ("after", 2)


async def test_a_missing_target_writes_nothing(db_session, owner):
    task = await tasks.create_task(db_session, owner, TaskCreate(title="kept"))
    assert task.id is not None
    missing = batch_edits.Edit(edit(task.id, title="x").command, None)  # a temp id naming no task
    results = await batch_edits.apply_edits(db_session, owner, None, [missing])
    assert isinstance(results[0], NotFound)
    assert (await tasks.read_task(db_session, owner, task.id)).title == "kept"
