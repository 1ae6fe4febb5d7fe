"""Structured logging: one JSON object per line (or a readable line for humans), with the request id."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        entry.update(_extras(record))
        return json.dumps(entry, default=str)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        request_id = request_id_var.get()
        prefix = f"[{request_id}] " if request_id else ""
        line = f"{record.levelname:<7} {record.name}: {prefix}{record.getMessage()} {extras}".rstrip()
        return line


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger("taskdeck")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


security_log = logging.getLogger("taskdeck.security")


def security_event(event: str, *, level: int = logging.WARNING, **fields: Any) -> None:
    """A security-relevant event. Callers pass ids and masked values only: never secrets."""
    security_log.log(level, event, extra={"event": event, **fields})


def describe_exception(exc: BaseException) -> dict[str, str]:
    """Where an exception came from, without its message or traceback (they can carry SQL or data)."""
    tb = exc.__traceback__
    where = "?"
    while tb is not None:
        code = tb.tb_frame.f_code
        if "/backend/" in code.co_filename:
            where = f"{code.co_filename.rsplit('/backend/', 1)[1]}:{code.co_name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return {"error_type": f"{type(exc).__module__}.{type(exc).__qualname__}", "where": where}


def mask_email(email: str) -> str:
    """`ada@example.com` -> `a***@example.com`: enough to correlate, not to harvest."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"
