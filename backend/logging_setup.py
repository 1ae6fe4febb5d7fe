"""Structured logging: one JSON object per line (or a readable line for humans), with the request id."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Not extras: the record's own attributes, and uvicorn's `color_message` (its line again, with terminal colours).
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}

# The loggers of a served process that are not the app's own (`taskdeck`) yet come out in its format:
# uvicorn's (start-up and shutdown lines, its error logger; `uvicorn.error` and `uvicorn.access` propagate
# to `uvicorn`) and Python's warnings (logging.captureWarnings).
SERVED_LOGGERS = ("uvicorn", "py.warnings")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
    if record.exc_info and record.exc_info[1] is not None:  # `log.exception` of a library: where, not the traceback
        extras = {**describe_exception(record.exc_info[1]), **extras}
    return extras


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


def _formatter(fmt: str) -> type[logging.Formatter]:
    return JsonFormatter if fmt == "json" else ConsoleFormatter


def configure_logging(level: str = "info", fmt: str = "json", loggers: tuple[str, ...] = ("taskdeck",)) -> None:
    """`loggers` (the app's own by default) write LOG_FORMAT lines on standard output, from `level` up."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_formatter(fmt)())
    for name in loggers:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def served_log_config(level: str = "info", fmt: str = "json") -> dict[str, Any]:
    """uvicorn's `log_config` (a logging.config.dictConfig, applied in every worker process): its own lines and
    Python's warnings in the app's format on standard output, as configure_logging sets the app's loggers."""
    formatter = _formatter(fmt)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"app": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "app", "stream": "ext://sys.stdout"}},
        "loggers": {
            name: {"handlers": ["stdout"], "level": level.upper(), "propagate": False} for name in SERVED_LOGGERS
        },
    }


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
