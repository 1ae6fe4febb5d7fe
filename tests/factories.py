"""Factories: the few rows almost every API test starts from, made through the API as a client would.

Plain functions (no fixtures), so a test reads `task = await make_task(client, user, title="x")`.
Each asserts its request succeeded, so a broken factory fails where it is called, not three lines later.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.models.user import User

PASSWORD = "Sturdy-Lantern-42"  # pragma: allowlist secret (a test password, generated users only)


@dataclass
class UserCtx:
    """A registered, logged-in user: what most tests start from."""

    id: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def make_user(client: httpx.AsyncClient, email: str | None = None, password: str = PASSWORD) -> UserCtx:
    """Register and log in a user (a fresh email unless given)."""
    email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
    registered = await client.post("/api/auth/register", json={"email": email, "password": password})
    assert registered.status_code == 201, registered.text
    login = await client.post("/api/auth/login", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    tokens = login.json()["data"]
    return UserCtx(tokens["user_id"], email, password, tokens["access_token"], tokens["refresh_token"])


async def post_task(client: httpx.AsyncClient, user: UserCtx, **fields: Any) -> httpx.Response:
    """Create a task ("A task" unless `title` is given): the 201 response, for its headers (ETag, Location)."""
    response = await client.post(f"/api/{user.id}/tasks", json={"title": "A task", **fields}, headers=user.headers)
    assert response.status_code == 201, response.text
    return response


async def make_task(client: httpx.AsyncClient, user: UserCtx, **fields: Any) -> dict[str, Any]:
    """Create a task: its representation (`data` of the 201 answer)."""
    data: dict[str, Any] = (await post_task(client, user, **fields)).json()["data"]
    return data


async def post_project(
    client: httpx.AsyncClient, user: UserCtx, repo: str = "octo/hello", **fields: Any
) -> httpx.Response:
    """Pin a GitHub repository (`owner/name`): the 201 response, for its headers."""
    response = await client.post(
        f"/api/{user.id}/projects", json={"github_repo_name": repo, **fields}, headers=user.headers
    )
    assert response.status_code == 201, response.text
    return response


async def pin_project(
    client: httpx.AsyncClient, user: UserCtx, repo: str = "octo/hello", **fields: Any
) -> dict[str, Any]:
    """Pin a GitHub repository: the project's representation."""
    data: dict[str, Any] = (await post_project(client, user, repo, **fields)).json()["data"]
    return data


@dataclass
class Authed:
    """`client`, speaking as `user`: their bearer token on every request, `{uid}` in a path filled in.

    `await authed(client, user).get("/api/{uid}/tasks")`; headers given to a call are added to (and win over)
    the token, so `headers={"Authorization": ""}` still tests an anonymous call.
    """

    client: httpx.AsyncClient
    user: UserCtx

    async def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        url = path.replace("{uid}", self.user.id)
        return await self.client.request(method, url, headers={**self.user.headers, **(headers or {})}, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kwargs)


def authed(client: httpx.AsyncClient, user: UserCtx) -> Authed:
    return Authed(client, user)


# --- rows for service-level tests (a session, no HTTP) --------------------------------------------


async def add_user(session: AsyncSession, email: str | None = None, **fields: Any) -> User:
    """A local user row (a placeholder password hash: service tests do not log in)."""
    user = User(email=email or f"user-{uuid.uuid4().hex[:8]}@example.com", hashed_password="$2b$04$" + "x" * 53)
    for name, value in fields.items():
        setattr(user, name, value)
    session.add(user)
    await session.commit()
    return user
