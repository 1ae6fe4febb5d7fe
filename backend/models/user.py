"""Users: local accounts (with a password) and Better-Auth accounts (without)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, EmailStr, StringConstraints
from sqlalchemy import BigInteger, Index
from sqlmodel import Field, SQLModel

from backend.models.common import NO_NUL, RESPONSE_CONFIG, new_id, utcnow
from backend.models.emails import MAX_EMAIL_LENGTH, canonical_email
from backend.models.passwords import validate_password_rules

Password = Annotated[str, AfterValidator(validate_password_rules)]


def _canonical(address: str) -> str:
    canonical = canonical_email(address)
    if len(canonical) > MAX_EMAIL_LENGTH:
        raise ValueError(f"The address is longer than {MAX_EMAIL_LENGTH} characters once normalised")
    return canonical


# Stored in its canonical form (backend/models/emails.py): the unique index compares canonical forms.
Email = Annotated[EmailStr, AfterValidator(_canonical)]
FullName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=255, pattern=NO_NUL)]


class UserBase(SQLModel):
    email: str = Field(max_length=320)
    full_name: str | None = Field(default=None, max_length=255)


class User(UserBase, table=True):
    __tablename__ = "users"
    # `email` holds the canonical form (services write it so): plain equality, no database `lower()`.
    __table_args__ = (Index("uq_users_email", "email", unique=True),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    hashed_password: str | None = Field(default=None, max_length=128)
    is_active: bool = True
    auth_provider: str = Field(default="local", max_length=32)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # The change feed (services/changes.py): the last `seq` given to a change of this user's items, bumped under
    # the row lock; and the highest `seq` of a purged tombstone (cursors from before it are expired).
    change_seq: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"})
    changes_floor: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"})


class UserCreate(UserBase):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    email: Email = Field(max_length=320, schema_extra={"examples": ["ada@example.com"]})
    # The length rules are checked by the validator (with its own messages); documented here too.
    password: Password = Field(
        schema_extra={
            "examples": ["correct-horse-battery-staple"],
            "json_schema_extra": {"minLength": 8, "maxLength": 72},
        }
    )
    full_name: FullName | None = None


class LoginRequest(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    email: str = Field(max_length=320, schema_extra={"pattern": NO_NUL, "examples": ["ada@example.com"]})
    password: str = Field(max_length=1024, schema_extra={"examples": ["correct-horse-battery-staple"]})


class UserPublic(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    user_id: str
    email: str
    full_name: str | None
    created_at: datetime


class UserMe(UserPublic):
    is_active: bool
    auth_provider: str


def user_public(user: User) -> UserPublic:
    return UserPublic(user_id=user.id, email=user.email, full_name=user.full_name, created_at=user.created_at)


def user_me(user: User) -> UserMe:
    return UserMe(
        user_id=user.id,
        email=user.email,
        full_name=user.full_name,
        created_at=user.created_at,
        is_active=user.is_active,
        auth_provider=user.auth_provider,
    )
