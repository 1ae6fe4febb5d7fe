"""Pinned GitHub projects: ProjectBase -> Project (table) / ProjectCreate / ProjectUpdate / ProjectPublic."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from annotated_types import Interval
from pydantic import ConfigDict, StringConstraints, ValidationInfo, field_validator, model_validator
from sqlalchemy import JSON, Column, Index, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from backend.models.common import JSON_INTEGER, NO_NUL, NOT_NULL, RESPONSE_CONFIG, RowIdInt, refuse_null, utcnow

MAX_ACTIVE_PINS = 50

# GitHub's rules: owner 1-39 letters, digits or single inner hyphens; repo 1-100 of letters,
# digits, '.', '-', '_' (but not '.' or '..').
OWNER_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
REPO_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
REPO_NAME_SCHEMA_PATTERN = r"^\s*[A-Za-z0-9](?:-?[A-Za-z0-9])*/[A-Za-z0-9._-]+\s*$"
URL_RE = re.compile(r"^https://github\.com/([^/?#]+)/([^/?#]+?)(?:\.git)?/?$", re.IGNORECASE)


def validate_repo_name(value: str) -> str:
    owner, sep, repo = value.strip().partition("/")
    if not sep or "/" in repo:
        raise ValueError("must be 'owner/repo'")
    if not OWNER_RE.match(owner):
        raise ValueError("owner must be 1-39 letters, digits or single inner hyphens")
    if not REPO_RE.match(repo) or repo in {".", ".."}:
        raise ValueError("repository must be 1-100 letters, digits, '.', '-' or '_' (not '.' or '..')")
    return f"{owner}/{repo}"


def repo_url(name: str) -> str:
    return f"https://github.com/{name}"


JSONType = JSON().with_variant(JSONB(), "postgresql")
DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=255, pattern=NO_NUL)]
Description = Annotated[str, StringConstraints(max_length=10_000, pattern=NO_NUL)]
Position = Annotated[int, Interval(ge=0, le=10_000), JSON_INTEGER]


class ProjectBase(SQLModel):
    github_repo_name: str = Field(max_length=255)
    github_repo_url: str = Field(max_length=500)
    display_name: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    position: int = 0


class Project(ProjectBase, table=True):
    __tablename__ = "pinned_projects"
    __table_args__ = (
        # One row per repository per user, whatever the case of the name.
        Index("uq_pinned_projects_user_id_repo_lower", "user_id", func.lower("github_repo_name"), unique=True),
        Index("ix_pinned_projects_user_id_is_active_position", "user_id", "is_active", "position"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(foreign_key="users.id", ondelete="CASCADE", max_length=64)
    description: str | None = Field(default=None, sa_type=Text)
    is_active: bool = True
    pinned_at: datetime = Field(default_factory=utcnow)
    last_updated: datetime = Field(default_factory=utcnow)
    repo_metadata: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType, nullable=True))
    last_synced_at: datetime | None = None
    version: int = Field(default=1, sa_column_kwargs={"server_default": "1"})  # bumped by every update


class ProjectCreate(SQLModel):
    """Pin a repository. The URL is derived from the name when omitted, and must agree when given."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    github_repo_name: str = Field(
        max_length=255,
        # Documents the shape for clients and fuzzers; the validator enforces it with the length limits.
        schema_extra={"examples": ["fastapi/fastapi"], "json_schema_extra": {"pattern": REPO_NAME_SCHEMA_PATTERN}},
    )
    github_repo_url: str | None = Field(default=None, max_length=500)
    display_name: DisplayName | None = None
    description: Description | None = None
    position: Position | None = None

    @field_validator("github_repo_name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_repo_name(value)

    @field_validator("github_repo_url")
    @classmethod
    def _url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        match = URL_RE.match(value.strip())
        if not match:
            raise ValueError("must be https://github.com/<owner>/<repo>")
        name = info.data.get("github_repo_name")
        given = f"{match.group(1)}/{match.group(2)}"
        if name is not None and given.lower() != name.lower():
            raise ValueError("must point at the same repository as github_repo_name")
        return repo_url(name or given)

    @model_validator(mode="after")
    def _derive_url(self) -> ProjectCreate:
        if self.github_repo_url is None:
            self.github_repo_url = repo_url(self.github_repo_name)
        return self


class ProjectUpdate(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    display_name: DisplayName | None = None
    description: Description | None = None
    position: Position | None = Field(default=None, schema_extra=NOT_NULL)  # may be left out, but not null

    _not_null = field_validator("position", mode="before")(refuse_null)


class ProjectOrder(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    project_ids: list[RowIdInt] = Field(max_length=MAX_ACTIVE_PINS, schema_extra={"examples": [[3, 1, 2]]})


class ProjectPublicV1(ProjectBase):
    """A project as the earlier drafts' routes answer it (routers/legacy.py): the fields they always had."""

    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    id: int
    user_id: str
    is_active: bool
    pinned_at: datetime
    last_updated: datetime
    repo_metadata: dict[str, Any] | None
    last_synced_at: datetime | None


class ProjectPublic(ProjectPublicV1):
    """A project as every current route answers it."""

    version: int = Field(schema_extra={"examples": [3]})  # +1 on every change; the ETag is made from it
