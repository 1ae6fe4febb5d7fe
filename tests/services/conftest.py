"""Service tests: a session (`db_session`, tests/conftest.py) in a transaction rolled back at the test's end."""

from __future__ import annotations

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.models.user import User
from tests.factories import add_user


@pytest.fixture
async def owner(db_session: AsyncSession) -> str:
    """A user's id (an id, not the row: a rollback in a test would expire the row's attributes)."""
    user: User = await add_user(db_session)
    return user.id


@pytest.fixture
async def stranger(db_session: AsyncSession) -> str:
    """Another user's id."""
    user: User = await add_user(db_session)
    return user.id
