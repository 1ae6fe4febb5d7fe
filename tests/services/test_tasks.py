"""The task service, called directly (no HTTP), on SQLite and PostgreSQL, in a rolled-back transaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from backend.errors import NotFound, ValidationFailed
from backend.models.project import ProjectCreate
from backend.models.task import TaskCreate, TaskSort, TaskStatus, TaskUpdate
from backend.services import tasks
from backend.services.projects import pin_project
from backend.services.tasks import TaskFilters

EVERYTHING = TaskFilters()


async def create(session, owner, title: str = "A task", **fields):
    return await tasks.create_task(session, owner, TaskCreate(title=title, **fields))


async def listed(session, owner, filters: TaskFilters, sort: TaskSort, *, limit: int, offset: int):
    """A page as `list_tasks` answers it (its items' JSON text, the total), the items read back."""
    items, total = await tasks.list_tasks(session, owner, filters, sort, limit, offset)
    return json.loads(items), total


async def titles(session, owner, filters: TaskFilters = EVERYTHING, sort: TaskSort = TaskSort("created_at")):
    rows, total = await listed(session, owner, filters, sort, limit=100, offset=0)
    assert total == len(rows)
    return [task["title"] for task in rows]


class TestCreate:
    async def test_defaults(self, db_session, owner):
        task = await create(db_session, owner)
        assert task.id is not None
        assert (task.user_id, task.status, task.priority) == (owner, TaskStatus.PENDING, "medium")
        assert (task.completed, task.completed_at, task.version) == (False, None, 1)
        assert await tasks.get_task(db_session, owner, task.id) is task

    async def test_created_completed(self, db_session, owner):
        task = await create(db_session, owner, completed=True)
        assert (task.status, task.completed) == (TaskStatus.COMPLETED, True)
        assert task.completed_at is not None

    async def test_status_and_completed_must_agree(self, db_session, owner):
        with pytest.raises(ValidationFailed):
            await create(db_session, owner, status=TaskStatus.COMPLETED, completed=False)

    async def test_in_own_project_only(self, db_session, owner, stranger):
        theirs = await pin_project(db_session, stranger, ProjectCreate(github_repo_name="octo/theirs"))
        with pytest.raises(ValidationFailed) as caught:
            await create(db_session, owner, project_id=theirs.id)
        assert caught.value.field == "project_id"
        mine = await pin_project(db_session, owner, ProjectCreate(github_repo_name="octo/mine"))
        assert (await create(db_session, owner, project_id=mine.id)).project_id == mine.id


class TestUpdate:
    async def test_changes_only_what_is_sent(self, db_session, owner):
        task = await create(db_session, owner, description="kept")
        updated = await tasks.update_task(db_session, owner, task.id, TaskUpdate(title="Renamed"))
        assert (updated.title, updated.description) == ("Renamed", "kept")
        assert updated.updated_at >= task.created_at

    async def test_status_completed_moves_completion(self, db_session, owner):
        task = await create(db_session, owner)
        done = await tasks.update_task(db_session, owner, task.id, TaskUpdate(status=TaskStatus.COMPLETED))
        assert (done.completed, done.completed_at is not None) == (True, True)
        reopened = await tasks.update_task(db_session, owner, task.id, TaskUpdate(completed=False))
        assert (reopened.status, reopened.completed_at) == (TaskStatus.PENDING, None)


class TestComplete:
    async def test_complete_and_reopen(self, db_session, owner):
        task = await create(db_session, owner)
        done = await tasks.set_completed(db_session, owner, task.id, True)
        first_moment = done.completed_at
        assert (done.status, done.completed, first_moment is not None) == (TaskStatus.COMPLETED, True, True)
        again = await tasks.set_completed(db_session, owner, task.id, True)
        assert again.completed_at == first_moment  # completing again keeps the original moment
        reopened = await tasks.set_completed(db_session, owner, task.id, False)
        assert (reopened.status, reopened.completed, reopened.completed_at) == (TaskStatus.PENDING, False, None)


class TestDelete:
    async def test_gone_afterwards(self, db_session, owner):
        task = await create(db_session, owner)
        await tasks.delete_task(db_session, owner, task.id)
        with pytest.raises(NotFound):
            await tasks.get_task(db_session, owner, task.id)
        with pytest.raises(NotFound):
            await tasks.delete_task(db_session, owner, task.id)


class TestOwnership:
    """Every function filters by owner: someone else's task is NotFound, and left untouched."""

    @pytest.mark.parametrize(
        "call",
        [
            lambda s, uid, tid: tasks.get_task(s, uid, tid),
            lambda s, uid, tid: tasks.update_task(s, uid, tid, TaskUpdate(title="Mine now")),
            lambda s, uid, tid: tasks.set_completed(s, uid, tid, True),
            lambda s, uid, tid: tasks.delete_task(s, uid, tid),
        ],
        ids=["get", "update", "complete", "delete"],
    )
    async def test_someone_elses_task_is_not_found(self, db_session, owner, stranger, call):
        task = await create(db_session, owner)
        with pytest.raises(NotFound):
            await call(db_session, stranger, task.id)
        kept = await tasks.get_task(db_session, owner, task.id)
        assert (kept.title, kept.completed) == ("A task", False)

    async def test_lists_hold_only_the_owners_tasks(self, db_session, owner, stranger):
        await create(db_session, owner, "mine")
        await create(db_session, stranger, "theirs")
        assert await titles(db_session, owner) == ["mine"]
        assert await titles(db_session, stranger) == ["theirs"]


class TestListFilters:
    @pytest.fixture
    async def tasks_of_owner(self, db_session, owner):
        now = datetime.now(UTC)
        await create(db_session, owner, "Buy milk", priority="low", due_date=now + timedelta(days=1))
        await create(db_session, owner, "Write report", description="100% done_soon", priority="high")
        await create(db_session, owner, "Call Bob", completed=True, due_date=now + timedelta(days=10))
        await create(db_session, owner, "Plan trip", status=TaskStatus.IN_PROGRESS, due_date=now - timedelta(days=1))
        return now

    @pytest.mark.parametrize(
        ("filters", "expected"),
        [
            (TaskFilters(), {"Buy milk", "Write report", "Call Bob", "Plan trip"}),
            (TaskFilters(completed=True), {"Call Bob"}),
            (TaskFilters(completed=False), {"Buy milk", "Write report", "Plan trip"}),
            (TaskFilters(status=TaskStatus.IN_PROGRESS), {"Plan trip"}),
            (TaskFilters(priority="high"), {"Write report"}),
            (TaskFilters(q="MILK"), {"Buy milk"}),
            (TaskFilters(q="100%"), {"Write report"}),  # in the description; % is not a wildcard
            (TaskFilters(q="%"), {"Write report"}),
            (TaskFilters(q="y_m"), set()),  # _ is not a wildcard either ("Buy milk")
            (TaskFilters(q="done_soon"), {"Write report"}),
        ],
    )
    async def test_filters(self, db_session, owner, tasks_of_owner, filters, expected):
        assert set(await titles(db_session, owner, filters)) == expected

    async def test_due_window(self, db_session, owner, tasks_of_owner):
        now = tasks_of_owner
        assert set(await titles(db_session, owner, TaskFilters(due_after=now))) == {"Buy milk", "Call Bob"}
        assert await titles(db_session, owner, TaskFilters(due_before=now)) == ["Plan trip"]
        window = TaskFilters(due_after=now, due_before=now + timedelta(days=2))
        assert await titles(db_session, owner, window) == ["Buy milk"]

    async def test_by_project(self, db_session, owner, tasks_of_owner):
        project = await pin_project(db_session, owner, ProjectCreate(github_repo_name="octo/hello"))
        await create(db_session, owner, "In project", project_id=project.id)
        assert await titles(db_session, owner, TaskFilters(project_id=project.id)) == ["In project"]

    async def test_sort_due_date_puts_undated_last(self, db_session, owner, tasks_of_owner):
        ordered = await titles(db_session, owner, sort=TaskSort("due_date"))
        assert ordered == ["Plan trip", "Buy milk", "Call Bob", "Write report"]
        assert (await titles(db_session, owner, sort=TaskSort("-due_date")))[-1] == "Write report"

    async def test_pages_and_total(self, db_session, owner, tasks_of_owner):
        page, total = await listed(db_session, owner, EVERYTHING, TaskSort("title"), limit=2, offset=1)
        assert ([task["title"] for task in page], total) == (["Call Bob", "Plan trip"], 4)
        past_the_end = await listed(db_session, owner, EVERYTHING, TaskSort("title"), limit=2, offset=10)
        assert past_the_end == ([], 4)


class TestSearch:
    """`q`: text contained in the title or the description, case-insensitive, `%`, `_` and `\\` literal.
    The search query (a subquery of the matches, revision 0008's index on PostgreSQL) finds exactly the rows
    and order of the plain list filtered in Python, for every sort, on both databases."""

    TASKS = (  # (title, description)
        ("Send INVOICE to Acme", None),  # title only, upper case
        ("Pay rent", "the invoice is late"),  # description only
        ("Invoice review", "check the invoice twice"),  # both
        ("Discount 50%", "50% off, code a_b"),
        ("Path C:\\tmp", "back\\slash"),
        ("Crème BRÛLÉE", "dessert, déjà vu"),  # non-ASCII letters in one case (SQLite lowers ASCII only)
        ("ab", ""),
        ("x", "single"),
        ("Abacus", None),
    )
    QUERIES = (
        "invoice",
        "INVOICE",
        "InVoIcE",
        "voice to",
        "%",
        "50%",
        "_",
        "a_b",
        "a%b",
        "\\",
        "c:\\tmp",
        "brÛlÉe",
        "Û",
        "déjà vu",
        "a",
        "ab",
        "AB",
        "x",
        "e",
        "nothing here",
        "é",
    )

    @staticmethod
    def contains(task: dict, q: str) -> bool:
        return q.lower() in task["title"].lower() or q.lower() in (task["description"] or "").lower()

    @pytest.fixture
    async def tasks_of_owner(self, db_session, owner, stranger):
        for title, description in self.TASKS:
            await create(db_session, owner, title, description=description)
        await create(db_session, stranger, "invoice of someone else", description="% _ \\ ab x")

    async def test_the_same_rows_as_the_list_filtered_in_python(self, db_session, owner, tasks_of_owner):
        for sort in TaskSort:
            everything, _ = await listed(db_session, owner, EVERYTHING, sort, limit=100, offset=0)
            for q in self.QUERIES:
                expected = [task for task in everything if self.contains(task, q)]
                found, total = await listed(db_session, owner, TaskFilters(q=q), sort, limit=100, offset=0)
                assert (found, total) == (expected, len(expected)), (sort, q)

    @pytest.mark.parametrize(
        ("q", "expected"),
        [
            ("invoice", {"Send INVOICE to Acme", "Pay rent", "Invoice review"}),
            ("%", {"Discount 50%"}),
            ("_", {"Discount 50%"}),
            ("a%b", set()),
            ("\\", {"Path C:\\tmp"}),
            ("brÛlÉe", {"Crème BRÛLÉE"}),
            ("ab", {"ab", "Abacus"}),
            ("x", {"x"}),
        ],
    )
    async def test_matches(self, db_session, owner, tasks_of_owner, q, expected):
        assert set(await titles(db_session, owner, TaskFilters(q=q))) == expected

    async def test_pages_and_total(self, db_session, owner, tasks_of_owner):
        search = TaskFilters(q="invoice")
        first, total = await listed(db_session, owner, search, TaskSort("title"), limit=2, offset=0)
        assert ([task["title"] for task in first], total) == (["Invoice review", "Pay rent"], 3)
        last, total = await listed(db_session, owner, search, TaskSort("title"), limit=2, offset=2)
        assert ([task["title"] for task in last], total) == (["Send INVOICE to Acme"], 3)
        assert await listed(db_session, owner, search, TaskSort("title"), limit=2, offset=5) == ([], 3)
