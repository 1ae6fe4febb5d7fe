"""OwnerDep: the path's user_id must be the token's subject, checked before any data is read."""

from __future__ import annotations

import pytest

from tests.conftest import assert_error, mount_test_routes


@pytest.fixture
async def probe(app):
    mount_test_routes(app)


@pytest.mark.usefixtures("probe")
class TestOwnerDep:
    async def test_own_id(self, client, user):
        r = await client.get(f"/api/{user.id}/probe", headers=user.headers)
        assert r.status_code == 200, r.text
        assert r.json()["data"] == {"owner": user.id}

    async def test_other_existing_user(self, client, user, other_user):
        r = await client.get(f"/api/{other_user.id}/probe", headers=user.headers)
        error = assert_error(r, 403, "FORBIDDEN")
        assert other_user.id not in error["message"]

    async def test_nonexistent_user_gets_the_same_answer(self, client, user, other_user):
        existing = await client.get(f"/api/{other_user.id}/probe", headers=user.headers)
        missing = await client.get("/api/no-such-user/probe", headers=user.headers)
        assert_error(missing, 403, "FORBIDDEN")
        assert missing.json() == existing.json()

    async def test_no_token(self, client, user):
        r = await client.get(f"/api/{user.id}/probe")
        assert_error(r, 401, "NOT_AUTHENTICATED")
        assert r.headers["www-authenticate"] == "Bearer"

    async def test_bad_token(self, client, user):
        r = await client.get(f"/api/{user.id}/probe", headers={"Authorization": "Bearer nope"})
        assert_error(r, 401, "INVALID_TOKEN")

    async def test_malformed_user_id_is_not_the_callers(self, client, user):
        """Ownership comes before validation (§9): a malformed `user_id` is someone else's, 403."""
        for user_id in ("x" * 65, "not%20an%20id", "a.b"):
            r = await client.get(f"/api/{user_id}/probe", headers=user.headers)
            assert_error(r, 403, "FORBIDDEN")
