"""The AppError family and the handlers that render every failure in the one error envelope."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.config import Settings, readable_message
from backend.db import is_foreign_key_violation, violated_constraint
from backend.envelope import ErrorEnvelope
from backend.logging_setup import describe_exception
from backend.models.common import NO_NUL, NON_BLANK
from backend.routing import RouteTable, route_path

log = logging.getLogger("taskdeck.errors")


class AppError(Exception):
    """A failure the client can act on. Each subclass is one failure: its status, its `error.code`,
    and a default message. Raise the class that names the failure; never pass a code as a string."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "BAD_REQUEST"
    message = "Bad request"
    default_headers: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        message: str | None = None,
        *,
        field: str | None = None,
        details: list[dict[str, Any]] | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.field = field
        self.details = details
        self.headers = {**self.default_headers, **(headers or {})}
        super().__init__(self.message)


class MalformedRequest(AppError):
    status_code, code, message = 400, "MALFORMED_REQUEST", "The request body is not valid JSON"


class CorsNotAllowed(AppError):
    status_code, code, message = 400, "CORS_NOT_ALLOWED", "This origin, method or header is not allowed here"


class Unauthorized(AppError):
    """401: every subclass answers with `WWW-Authenticate: Bearer`."""

    status_code, code, message = 401, "NOT_AUTHENTICATED", "Not authenticated"
    default_headers = {"WWW-Authenticate": "Bearer"}


class NotAuthenticated(Unauthorized):
    """No bearer token (or not one at all)."""


class InvalidToken(Unauthorized):
    code, message = "INVALID_TOKEN", "The access token is invalid"


class TokenExpired(Unauthorized):
    code, message = "TOKEN_EXPIRED", "The access token has expired"


class InvalidCredentials(Unauthorized):
    code, message = "INVALID_CREDENTIALS", "Incorrect email or password"


class RefreshTokenReused(Unauthorized):
    code, message = "REFRESH_TOKEN_REUSED", "This refresh token was already used; the session is revoked"


class ReauthenticationRequired(Unauthorized):
    code, message = "REAUTHENTICATION_REQUIRED", "Sign in again to do this"


class Forbidden(AppError):
    status_code, code, message = 403, "FORBIDDEN", "You may not access this resource"


class AccountDisabled(Forbidden):
    code, message = "ACCOUNT_DISABLED", "This account is disabled"


class NotFound(AppError):
    status_code, code, message = 404, "NOT_FOUND", "Not found"


class MethodNotAllowed(AppError):
    status_code, code, message = 405, "METHOD_NOT_ALLOWED", "Method not allowed"


class Conflict(AppError):
    status_code, code, message = 409, "CONFLICT", "Conflict"


class EmailTaken(Conflict):
    code, message = "EMAIL_TAKEN", "An account with this email already exists"


class ProjectAlreadyPinned(Conflict):
    code, message = "PROJECT_ALREADY_PINNED", "This repository is already pinned"


class PinLimitReached(Conflict):
    code, message = "PIN_LIMIT_REACHED", "The pinned-project limit is reached"


class LabelExists(Conflict):
    message = "You already have a label with this name"


class PreconditionFailed(AppError):
    status_code, code = 412, "PRECONDITION_FAILED"
    message = "The resource changed since you read it (If-Match does not match its ETag); read it again"


class CursorExpired(AppError):
    status_code, code = 410, "CURSOR_EXPIRED"
    message = "This cursor is older than the change history kept; start a full sync (no cursor)"


class PayloadTooLarge(AppError):
    status_code, code, message = 413, "PAYLOAD_TOO_LARGE", "The request body is larger than allowed"

    @classmethod
    def over(cls, max_bytes: int) -> PayloadTooLarge:
        """The refusal of a body over `max_bytes` (MAX_BODY_BYTES), naming the limit."""
        return cls(f"The request body is larger than {_size(max_bytes)}")


def _size(count: int) -> str:
    """A byte count as people write it: `1 MiB`, `512 KiB`, else `1500 bytes`."""
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if count >= factor and count % factor == 0:
            return f"{count // factor} {unit}"
    return f"{count} bytes"


class ValidationFailed(AppError):
    status_code, code, message = 422, "VALIDATION_ERROR", "Validation failed"


class TaskDepthExceeded(ValidationFailed):
    code, message = "TASK_DEPTH_EXCEEDED", "Subtasks nest at most 5 levels deep"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, field="parent_id")


class TaskCycle(ValidationFailed):
    code, message = "CYCLE", "A task cannot be moved under itself or one of its subtasks"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, field="parent_id")


class InvalidRecurrence(ValidationFailed):
    code, message = "INVALID_RECURRENCE", "The recurrence rule is not valid"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, field="recurrence")


class BatchTooLarge(AppError):
    status_code, code, message = 422, "BATCH_TOO_LARGE", "A batch has at most 100 commands"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, field="commands")


class IdempotencyKeyReused(AppError):
    status_code, code = 422, "IDEMPOTENCY_KEY_REUSED"
    message = "This Idempotency-Key was already used with a different request"


class RateLimited(AppError):
    status_code, code, message = 429, "RATE_LIMITED", "Too many requests"

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


class TooManyStreams(AppError):
    """Over EVENTS_MAX_STREAMS_PER_USER or EVENTS_MAX_STREAMS_PER_IP open event streams."""

    status_code, code, message = 429, "TOO_MANY_STREAMS", "Too many open event streams; close one first"

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


class InternalError(AppError):
    status_code, code, message = 500, "INTERNAL_ERROR", "An unexpected error occurred"


class ServiceUnavailable(AppError):
    status_code, code, message = 503, "SERVICE_UNAVAILABLE", "A service this request needs is unavailable"
    default_headers = {"Retry-After": "5"}


def error_classes() -> list[type[AppError]]:
    """Every failure the API can answer, AppError's whole family (what OpenAPI documents)."""
    found: list[type[AppError]] = []
    pending: list[type[AppError]] = [AppError]
    while pending:
        cls = pending.pop(0)
        found.extend(sub for sub in cls.__subclasses__() if sub not in found)
        pending.extend(cls.__subclasses__())
    return found


def _envelope(exc: AppError) -> dict[str, Any]:
    return {"success": False, "error": error_body(exc)}


def render_error(exc: AppError) -> JSONResponse:
    """The one place an error response is built: `exc`'s status, headers and envelope."""
    return JSONResponse(_envelope(exc), status_code=exc.status_code, headers=exc.headers)


# The HTTPExceptions the framework raises (routing, static files, body reading, security schemes).
_HTTP_ERRORS: dict[int, type[AppError]] = {
    400: MalformedRequest,
    401: NotAuthenticated,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
}


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[0] if loc else "body")


def _is_database_outage(exc: BaseException) -> bool:
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeoutError, OSError, TimeoutError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return render_error(exc)


# The input patterns, said in words instead of pydantic's "String should match pattern '^[^\x00]*…'".
_PATTERN_MESSAGES = {
    NO_NUL: "must not contain the character U+0000",
    NON_BLANK: "must contain a character other than white space, and no U+0000",
}


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(err.get("type") == "json_invalid" for err in errors):
        return render_error(MalformedRequest())
    content_type = request.headers.get("content-type", "")
    whole_body = any(tuple(err.get("loc", ())) == ("body",) for err in errors)
    if whole_body and "json" not in content_type and request.method in ("POST", "PUT", "PATCH"):
        return render_error(MalformedRequest("Send the body as application/json"))
    return render_error(validation_failed(errors))


def validation_failed(errors: Sequence[Mapping[str, Any]]) -> ValidationFailed:
    """Pydantic's errors as the 422 names them: every failing field in `details`, the first in `field` and
    `message`. Also a batch command's invalid `data` (services/batch.py): the same body as its single route's."""
    details = [
        {
            "field": _field_name(tuple(err.get("loc", ()))),
            "message": _PATTERN_MESSAGES.get(str((err.get("ctx") or {}).get("pattern"))) or readable_message(err),
            "type": err.get("type", ""),
        }
        for err in errors
    ]
    first = details[0] if details else {"field": None, "message": "Validation failed"}
    message = f"{first['field']}: {first['message']}" if first["field"] else str(first["message"])
    return ValidationFailed(message, field=first["field"], details=details)


def error_body(exc: AppError) -> dict[str, Any]:
    """The `error` object of `exc`'s envelope (a batch command's `error`, too)."""
    return {"code": exc.code, "message": exc.message, "field": exc.field, "details": exc.details}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error_class = _HTTP_ERRORS.get(exc.status_code)
    if error_class is None:  # nothing raises one today: every failure of ours is an AppError
        log.error("unmapped HTTP error", extra={"event": "unmapped_http_error", "status": exc.status_code})
        return render_error(InternalError())
    message = exc.detail if isinstance(exc.detail, str) and exc.status_code not in (404, 405) else None
    error = error_class(message)
    error.headers = dict(exc.headers or {})  # what the framework sent, not the class's defaults
    if exc.status_code == 405:
        error.headers["Allow"] = _allowed_methods(request) or error.headers.get("Allow", "")
    return render_error(error)


def _allowed_methods(request: Request) -> str:
    """The methods of the path's own routes (backend/routing.py; Starlette's 405 names only the first route's)."""
    return ", ".join(sorted(RouteTable.of(request.app).allowed(route_path(request.scope))))


def render_unexpected(exc: BaseException) -> JSONResponse:
    """503 for a database outage, else 500. Details go to the log only, never to the client."""
    if _is_database_outage(exc):
        log.error("database unavailable", extra={"event": "db_unavailable", **describe_exception(exc)})
        return render_error(ServiceUnavailable("The database is unavailable, try again shortly"))
    log.error("unhandled error", extra={"event": "unhandled_error", **describe_exception(exc)})
    return render_error(InternalError())


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    return render_unexpected(exc)


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    """A write that refers to a row deleted meanwhile (a foreign-key violation, at flush or commit) raced the
    erasure of its account: nothing else deletes a row that others refer to (users; their sessions and projects
    go by cascade). Answer what the next request would get, a 401: the token's session is gone (`INVALID_TOKEN`),
    or, for a login, the account is (`INVALID_CREDENTIALS`). Any other integrity error is unexpected (500)."""
    assert isinstance(exc, IntegrityError)
    if not is_foreign_key_violation(exc):
        return render_unexpected(exc)
    user_id = getattr(request.state, "user_id", None)
    log.warning(
        "a write raced the erasure of its account",
        extra={"event": "write_raced_erasure", "user_id": user_id, "constraint": violated_constraint(exc)},
    )
    if user_id is None:
        return render_error(InvalidCredentials())
    return render_error(InvalidToken("This account no longer exists"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Handled inside the middleware stack, so request ids and security headers still apply.
    # Anything else that escapes is rendered by middleware.InnerMiddleware (OuterMiddleware: a backstop).
    for exc_class in (DBAPIError, PoolTimeoutError, OSError, TimeoutError):
        app.add_exception_handler(exc_class, _unexpected)
    app.add_exception_handler(IntegrityError, _integrity_error)


# What each documented error status means, and the failure its OpenAPI example shows. The codes a
# status can carry are not listed here: they come from error_classes(), so a new class documents itself.
_ERROR_DOCS: dict[int, tuple[str, AppError]] = {
    400: (
        "Bad request: a malformed body (not JSON, or not sent as application/json), or a refused CORS preflight",
        MalformedRequest(),
    ),
    401: ("Missing, invalid or expired bearer token, or wrong credentials", TokenExpired()),
    403: (
        "Not allowed: the path `{user_id}` is not the token's subject, or the account is inactive",
        Forbidden("You may only access your own resources"),
    ),
    404: ("Not found, or owned by someone else", NotFound()),
    409: ("Conflict with the current state", Conflict()),
    410: ("The change feed's cursor is older than the history kept: start a full sync (no cursor)", CursorExpired()),
    412: (
        "`If-Match` does not match the current `ETag`: the resource changed since it was read",
        PreconditionFailed("The resource changed since you read it"),
    ),
    413: (
        "Body over the size limit (`MAX_BODY_BYTES`, 1 MiB by default); the message names the limit",
        PayloadTooLarge.over(Settings.model_fields["MAX_BODY_BYTES"].default),
    ),
    422: (
        "The request cannot be processed as sent; on a validation failure `field` names the first failing field "
        "and `details` lists them all",
        ValidationFailed(
            "title: String should have at least 1 character",
            field="title",
            details=[
                {"field": "title", "message": "String should have at least 1 character", "type": "string_too_short"}
            ],
        ),
    ),
    429: ("Rate limited (or too many open event streams); retry after `Retry-After` seconds", RateLimited(1)),
    500: ("An unexpected failure; nothing about it is sent, it is logged with the request id", InternalError()),
    503: (
        "A service the request needs (usually the database) is unavailable; retry after `Retry-After` seconds",
        ServiceUnavailable("The database is unavailable, try again shortly"),
    ),
}
_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    503: {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
}


def error_codes() -> list[str]:
    """Every `error.code` the API answers, grouped by status: the enum OpenAPI gives `ErrorBody.code`."""
    return [code for _, code in sorted({(cls.status_code, cls.code) for cls in error_classes()})]


def codes_by_status() -> dict[int, dict[str, str]]:
    """Each status's `error.code`s with their default messages, from the AppError family."""
    codes: dict[int, dict[str, str]] = {}
    for cls in error_classes():
        codes.setdefault(cls.status_code, {}).setdefault(cls.code, cls.message)
    return codes


def _describe(status: int, meaning: str) -> str:
    codes = codes_by_status().get(status, {})
    return "\n".join([f"{meaning}. `error.code` is one of:", "", *(f"- `{c}`: {m}" for c, m in codes.items())])


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "model": ErrorEnvelope,
        "description": _describe(status, meaning),
        "content": {"application/json": {"example": _envelope(example)}},
        **({"headers": _ERROR_HEADERS[status]} if status in _ERROR_HEADERS else {}),
    }
    for status, (meaning, example) in _ERROR_DOCS.items()
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The documented error responses of an operation, for `responses=` in a route decorator."""
    return {status: ERROR_RESPONSES[status] for status in sorted(statuses)}


# What any operation can answer, documented on every one (the app's own `responses=`).
EVERY_OPERATION = responses(500)
