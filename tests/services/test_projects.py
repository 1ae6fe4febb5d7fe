"""The project service, called directly (no HTTP), on SQLite and PostgreSQL, in a rolled-back transaction."""

from __future__ import annotations

import pytest

from backend.errors import NotFound, PinLimitReached, ProjectAlreadyPinned, ValidationFailed
from backend.models.project import MAX_ACTIVE_PINS, ProjectCreate, ProjectUpdate
from backend.services import projects


async def pin(session, owner: str, repo: str = "octo/hello", **fields):
    return await projects.pin_project(session, owner, ProjectCreate(github_repo_name=repo, **fields))


class TestPin:
    async def test_derives_the_url_and_appends(self, db_session, owner):
        first = await pin(db_session, owner)
        second = await pin(db_session, owner, "octo/world", display_name="World")
        assert first.github_repo_url == "https://github.com/octo/hello"
        assert (first.position, second.position) == (0, 1)
        assert (second.display_name, second.is_active, second.version) == ("World", True, 1)
        assert [p.id for p in await projects.list_projects(db_session, owner)] == [first.id, second.id]

    async def test_pinned_twice_is_a_conflict_whatever_the_case(self, db_session, owner):
        await pin(db_session, owner, "Octo/Hello")
        with pytest.raises(ProjectAlreadyPinned) as caught:
            await pin(db_session, owner, "octo/hello")
        assert caught.value.field == "github_repo_name"

    async def test_the_same_repository_for_two_users(self, db_session, owner, stranger):
        mine, theirs = await pin(db_session, owner), await pin(db_session, stranger)
        assert mine.id != theirs.id

    async def test_limit(self, db_session, owner):
        for i in range(MAX_ACTIVE_PINS):
            await pin(db_session, owner, f"octo/r{i}")
        with pytest.raises(PinLimitReached):
            await pin(db_session, owner, "octo/one-too-many")
        # An unpinned project does not count.
        [first, *_] = await projects.list_projects(db_session, owner)
        await projects.unpin_project(db_session, owner, first.id)
        assert (await pin(db_session, owner, "octo/fits-again")).is_active


class TestUpdate:
    async def test_changes_only_what_is_sent(self, db_session, owner):
        project = await pin(db_session, owner, description="kept")
        updated = await projects.update_project(
            db_session, owner, project.id, ProjectUpdate(display_name="Renamed", position=7)
        )
        assert (updated.display_name, updated.position, updated.description) == ("Renamed", 7, "kept")

    async def test_someone_elses_or_unpinned_is_not_found(self, db_session, owner, stranger):
        project = await pin(db_session, owner)
        with pytest.raises(NotFound):
            await projects.update_project(db_session, stranger, project.id, ProjectUpdate(display_name="x"))
        await projects.unpin_project(db_session, owner, project.id)
        with pytest.raises(NotFound):
            await projects.update_project(db_session, owner, project.id, ProjectUpdate(display_name="x"))


class TestUnpin:
    async def test_keeps_the_row_and_a_repin_brings_it_back(self, db_session, owner):
        project = await pin(db_session, owner, display_name="Old name")
        project_id = project.id
        await projects.unpin_project(db_session, owner, project_id)
        assert await projects.list_projects(db_session, owner) == []
        with pytest.raises(NotFound):  # gone for every read, though the row stays
            await projects.get_project(db_session, owner, project_id)
        with pytest.raises(ValidationFailed):  # and no new task can be linked to it
            await projects.ensure_project(db_session, owner, project_id)
        back = await pin(db_session, owner, "OCTO/hello")
        assert (back.id, back.is_active, back.github_repo_name) == (project_id, True, "OCTO/hello")
        assert back.display_name == "Old name"
        assert (await projects.get_project(db_session, owner, project_id)).id == project_id

    async def test_twice_or_someone_elses_is_not_found(self, db_session, owner, stranger):
        project = await pin(db_session, owner)
        with pytest.raises(NotFound):
            await projects.unpin_project(db_session, stranger, project.id)
        await projects.unpin_project(db_session, owner, project.id)
        with pytest.raises(NotFound):
            await projects.unpin_project(db_session, owner, project.id)


class TestReorder:
    async def test_positions_follow_the_order_given(self, db_session, owner):
        a, b, c = [await pin(db_session, owner, f"octo/{name}") for name in "abc"]
        ids = [c.id, a.id, b.id]
        reordered = await projects.reorder_projects(db_session, owner, ids)
        assert [p.id for p in reordered] == ids
        assert [p.id for p in await projects.list_projects(db_session, owner)] == ids
