"""Account erasure, called directly (no HTTP), on SQLite and PostgreSQL, in a rolled-back transaction."""

from __future__ import annotations

from sqlalchemy import func, select

from backend.models.common import metadata
from backend.models.project import ProjectCreate
from backend.models.task import TaskCreate
from backend.services import account, sync
from backend.services.projects import pin_project
from backend.services.tasks import create_task


async def rows_of(session, user_id: str) -> dict[str, int]:
    """How many rows of each table with a `user_id` (or `id`, for users) belong to `user_id`."""
    counts = {}
    for table in metadata.sorted_tables:
        column = table.c.id if table.name == "users" else table.c.get("user_id")
        if column is not None:
            counts[table.name] = (
                await session.exec(select(func.count()).select_from(table).where(column == user_id))
            ).one()[0]
    return counts


async def fill(session, user_id: str) -> None:
    project = await pin_project(session, user_id, ProjectCreate(github_repo_name="octo/hello"))
    await create_task(session, user_id, TaskCreate(title="In project", project_id=project.id))
    await create_task(session, user_id, TaskCreate(title="Loose"))
    await sync.start_sync(session, user_id, project.id, ["fetch"], sync.Lease("instance-a", 30))


async def test_erasure_removes_every_row_of_the_user_and_no_one_elses(db_session, owner, stranger):
    await fill(db_session, owner)
    await fill(db_session, stranger)
    before = await rows_of(db_session, owner)
    assert before["users"] == before["pinned_projects"] == before["sync_runs"] == 1
    assert before["tasks"] == 2
    theirs = await rows_of(db_session, stranger)

    await account.erase_account(db_session, owner)

    assert set((await rows_of(db_session, owner)).values()) == {0}
    assert await rows_of(db_session, stranger) == theirs
