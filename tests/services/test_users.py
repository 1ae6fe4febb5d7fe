"""Just-in-time Better-Auth users: created on first sight, kept in step with the token's claims."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import select

from backend.db import unit_of_work
from backend.errors import Conflict
from backend.models.user import User
from backend.services.users import upsert_external_user
from tests.conftest import UserCtx


def new_sub() -> str:
    return uuid.uuid4().hex


async def upsert(app: FastAPI, sub: str, email: str, name: str | None = "Ada Lovelace") -> User:
    async with unit_of_work(app.state.sessionmaker) as session:
        return await upsert_external_user(session, sub, email, name)


async def stored(app: FastAPI, sub: str) -> list[User]:
    async with app.state.sessionmaker() as session:
        return list((await session.exec(select(User).where(User.id == sub))).all())


class TestUpsertExternalUser:
    async def test_creates_a_passwordless_better_auth_user(self, app: FastAPI) -> None:
        sub = new_sub()
        user = await upsert(app, sub, f"{sub}@example.com")
        [row] = await stored(app, sub)
        assert (row.id, row.email, row.full_name) == (sub, f"{sub}@example.com", "Ada Lovelace")
        assert row.auth_provider == "better-auth"
        assert row.hashed_password is None
        assert user.id == sub

    async def test_unchanged_claims_write_nothing(self, app: FastAPI) -> None:
        sub = new_sub()
        await upsert(app, sub, f"{sub}@example.com")
        [before] = await stored(app, sub)
        await upsert(app, sub, f"{sub}@example.com")
        [after] = await stored(app, sub)
        assert after.updated_at == before.updated_at

    async def test_changed_claims_are_written(self, app: FastAPI) -> None:
        sub = new_sub()
        await upsert(app, sub, f"{sub}@example.com")
        [before] = await stored(app, sub)
        await upsert(app, sub, "New.Address@example.com", "Ada King")
        [after] = await stored(app, sub)
        assert (after.email, after.full_name) == ("new.address@example.com", "Ada King")  # the canonical form
        assert after.updated_at > before.updated_at

    async def test_a_token_without_a_name_keeps_the_stored_one(self, app: FastAPI) -> None:
        sub = new_sub()
        await upsert(app, sub, f"{sub}@example.com", "Ada")
        await upsert(app, sub, f"{sub}@example.com", None)
        [row] = await stored(app, sub)
        assert row.full_name == "Ada"

    async def test_email_of_another_account_is_a_conflict(self, app: FastAPI, user: UserCtx) -> None:
        sub = new_sub()
        with pytest.raises(Conflict) as created:
            await upsert(app, sub, user.email.upper())
        assert created.value.field == "email"
        assert await stored(app, sub) == []
        await upsert(app, sub, f"{sub}@example.com")
        with pytest.raises(Conflict):
            await upsert(app, sub, user.email)
        [row] = await stored(app, sub)
        assert row.email == f"{sub}@example.com"

    async def test_a_local_accounts_id_is_not_taken_over(self, app: FastAPI, user: UserCtx) -> None:
        with pytest.raises(Conflict):
            await upsert(app, user.id, user.email)
        [row] = await stored(app, user.id)
        assert row.auth_provider == "local"
        assert row.hashed_password is not None

    @pytest.mark.committing  # concurrent requests: one connection cannot serve them
    async def test_concurrent_first_sight_creates_one_row(self, app: FastAPI) -> None:
        sub = new_sub()
        users = await asyncio.gather(*(upsert(app, sub, f"{sub}@example.com") for _ in range(10)))
        assert {u.id for u in users} == {sub}
        assert len(await stored(app, sub)) == 1

    async def test_email_case_change_is_the_same_address(self, app: FastAPI) -> None:
        sub = new_sub()
        await upsert(app, sub, f"{sub}@example.com")
        [before] = await stored(app, sub)
        await upsert(app, sub, f"{sub.upper()}@EXAMPLE.COM")
        [row] = await stored(app, sub)
        assert row.email == f"{sub}@example.com"
        assert row.updated_at == before.updated_at  # not even a write


async def test_jit_user_has_no_password_login(app: FastAPI, client: httpx.AsyncClient) -> None:
    """services/auth.py treats a missing password hash as wrong credentials, whatever is typed."""
    sub = new_sub()
    await upsert(app, sub, f"{sub}@example.com")
    response = await client.post("/api/auth/login", json={"email": f"{sub}@example.com", "password": "anything-at-all"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "INVALID_CREDENTIALS"
