"""The response shapes every route returns, as they appear in OpenAPI."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class ListMeta(BaseModel):
    total: int = Field(examples=[123])
    limit: int = Field(examples=[50])
    offset: int = Field(examples=[0])


class Envelope(BaseModel, Generic[T]):
    success: Literal[True] = True
    data: T
    message: str | None = None


class ListEnvelope(BaseModel, Generic[T]):
    success: Literal[True] = True
    data: list[T]
    message: str | None = None
    meta: ListMeta


class FieldError(BaseModel):
    field: str = Field(examples=["email"])
    message: str = Field(examples=["value is not a valid email address"])
    type: str = Field(examples=["value_error"])


class ErrorBody(BaseModel):
    code: str = Field(examples=["VALIDATION_ERROR"])
    message: str = Field(examples=["Invalid email format"])
    field: str | None = None
    details: list[FieldError] | list[dict[str, Any]] | None = None


class ErrorEnvelope(BaseModel):
    success: Literal[False] = False
    error: ErrorBody


def ok(data: Any, message: str | None = None) -> dict[str, Any]:
    return {"success": True, "data": data, "message": message}


def page(items: list[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
    return {"success": True, "data": items, "message": None, "meta": {"total": total, "limit": limit, "offset": offset}}
