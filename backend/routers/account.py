"""The account as a whole: `GET /api/{user_id}/export` and `DELETE /api/{user_id}`."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ConfigDict
from sqlmodel import Field, SQLModel

from backend.deps import CurrentUser, OwnerDep, SessionDep
from backend.envelope import MessageEnvelope, ok
from backend.errors import responses
from backend.live_sessions import sessions_ended
from backend.ratelimit import by_user, rate_limit
from backend.routers.common import json_attachment
from backend.security.tokens import issued_at
from backend.services import account as account_service
from backend.services import export as export_service

router = APIRouter(tags=["account"])


class AccountErase(SQLModel):
    """Local accounts confirm with their current password; Better-Auth accounts send no body."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    password: str | None = Field(default=None, max_length=1024, schema_extra={"examples": ["correct-horse-battery"]})


def _token_issued_at(request: Request) -> datetime | None:
    """`iat` of the bearer token this request was authenticated with (its signature was checked already)."""
    return issued_at(request.headers.get("authorization", "").partition(" ")[2])


@router.get(
    "/api/{user_id}/export",
    summary="Download your whole account as JSON",
    operation_id="export_account",
    response_class=Response,
    responses={
        200: {
            "description": "Profile (no password hash), every task, every project (unpinned too) and the sync "
            "history, as a JSON attachment with a stable field order and ISO 8601 UTC dates",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **responses(401, 403, 422, 429, 503),
    },
)
async def export_account(owner_id: OwnerDep, user: CurrentUser, session: SessionDep) -> Response:
    """Data portability: everything the API stores about you, in one file (`Content-Disposition: attachment`)."""
    export = await export_service.export_account(session, user)
    return json_attachment(export, f"taskdeck-account-{owner_id}.json")


@router.delete(
    "/api/{user_id}",
    response_model=MessageEnvelope,
    summary="Erase your account and everything it owns",
    operation_id="erase_account",
    responses=responses(400, 401, 403, 413, 422, 429, 503),
    dependencies=[rate_limit("login", by_user)],
)
async def erase_account(
    owner_id: OwnerDep,
    user: CurrentUser,
    session: SessionDep,
    request: Request,
    payload: AccountErase | None = None,
) -> dict[str, Any]:
    """Local accounts send `{"password": ...}` (wrong: 401 `INVALID_CREDENTIALS`); Better-Auth accounts need a
    token issued in the last 5 minutes (else 401 `REAUTHENTICATION_REQUIRED`). Tasks, projects, sync history,
    sessions and idempotency keys go with the account; every token of it stops working at once, and its event
    streams close within 5 s. Irreversible."""
    await account_service.confirm_erasure(
        session, user, password=payload.password if payload else None, token_issued_at=_token_issued_at(request)
    )
    await account_service.erase_account(session, owner_id, partial(sessions_ended, request.app.state))
    return ok(None, "Account erased")
