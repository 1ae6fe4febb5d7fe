"""Who is calling: shared by the web layer (deps), the services and the token verifiers."""

from __future__ import annotations

from dataclasses import dataclass

from backend.models.user import User


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user, and the login session behind an own token (None for Better-Auth)."""

    user: User
    session_id: str | None
