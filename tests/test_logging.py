"""Structured logs: an access line per request, security events, and never a secret."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
from sqlmodel import select

from backend.logging_setup import ConsoleFormatter, JsonFormatter, configure_logging, describe_exception, mask_email
from backend.models.user import User
from tests.conftest import PASSWORD, mount_test_routes


@pytest.fixture
def log_lines(app):
    """Every JSON line the app logs during the test (configure_logging ran in create_app)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("taskdeck")
    logger.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)


async def test_no_secret_is_ever_logged(client, app, log_lines):
    mount_test_routes(app)
    email = "secretive@example.com"
    await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    login = (await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})).json()["data"]
    rotated = (await client.post("/api/auth/refresh", json={"refresh_token": login["refresh_token"]})).json()["data"]
    await client.post("/api/auth/login", json={"email": email, "password": "Wrong-Password-99"})
    await client.post("/api/auth/login", json={"email": "ghost@example.com", "password": "Ghost-Password-77"})
    second = (await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})).json()["data"]
    await client.get(f"/api/{second['user_id']}x/probe", headers={"Authorization": f"Bearer {second['access_token']}"})
    await client.post("/api/auth/logout", headers={"Authorization": f"Bearer {second['access_token']}"})
    await client.post("/api/auth/refresh", json={"refresh_token": login["refresh_token"]})  # reuse
    await client.get("/api/auth/me", headers={"Authorization": "Bearer not-a-token"})
    async with app.state.sessionmaker() as session:
        hashed = (await session.exec(select(User.hashed_password).where(User.email == email))).one()

    lines = log_lines()
    text = "\n".join(json.dumps(line) for line in lines)
    secrets = [PASSWORD, "Wrong-Password-99", "Ghost-Password-77", hashed, hashed[7:29]]
    secrets += [t[k] for t in (login, rotated, second) for k in ("access_token", "refresh_token")]
    for secret in secrets:
        assert secret not in text
    assert email not in text  # emails appear masked only
    events = {line.get("event") for line in lines}
    assert {
        "register",
        "login_succeeded",
        "login_failed",
        "refresh_token_reused",
        "logout",
        "unauthenticated",
        "forbidden",
        "http_request",
    } <= events
    failures = [line for line in lines if line.get("event") == "login_failed"]
    assert {line["reason"] for line in failures} == {"wrong_password", "unknown_email"}
    assert {line["email"] for line in failures} == {"s***@example.com", "g***@example.com"}


async def test_access_line_describes_the_request(client, user, log_lines):
    r = await client.get("/api/auth/me", headers=user.headers | {"X-Request-ID": "req-42"})
    (line,) = [entry for entry in log_lines() if entry.get("event") == "http_request"]
    assert line["method"] == "GET"
    assert line["route"] == "/api/auth/me"
    assert line["status"] == r.status_code == 200
    assert line["user_id"] == user.id
    assert line["request_id"] == "req-42"
    assert isinstance(line["duration_ms"], float)
    assert line["logger"] == "taskdeck.access"


async def test_route_template_not_concrete_path(client, app, user, log_lines):
    mount_test_routes(app)
    await client.get(f"/api/{user.id}/probe", headers=user.headers)
    await client.get("/nowhere")
    routes = [entry["route"] for entry in log_lines() if entry.get("event") == "http_request"]
    assert routes == ["/api/{user_id}/probe", "<unmatched>"]


async def test_unexpected_error_is_logged_without_its_message(client, app, log_lines):
    mount_test_routes(app)
    await client.get("/test/boom")
    (line,) = [entry for entry in log_lines() if entry.get("event") == "unhandled_error"]
    assert line["error_type"] == "builtins.RuntimeError"
    assert "hunter2" not in json.dumps(line)
    assert line["request_id"]


def test_console_format(capsys):
    configure_logging("debug", "console")
    logging.getLogger("taskdeck.test").info("hello", extra={"event": "greeting", "user_id": "u1"})
    out = capsys.readouterr().out
    assert "INFO    taskdeck.test: hello event=greeting user_id=u1" in out
    configure_logging("info", "json")
    logging.getLogger("taskdeck.test").info("hello")
    assert json.loads(capsys.readouterr().out)["msg"] == "hello"


def test_library_records_come_out_in_the_app_format():
    """uvicorn's records as the app's formatters write them: its `color_message` (the line again, with terminal
    colours) left out; an exception logged with its traceback (`Exception in ASGI application`) shows its type
    and backend frame, never the traceback or the exception's message."""
    from backend.config import parse_rate

    try:
        parse_rate("SELECT secret")
    except Exception:
        exc_info = sys.exc_info()
    message = "Exception in ASGI application"
    record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, message, (), exc_info)
    record.color_message = "\x1b[31mException in ASGI application\x1b[0m"
    entry = json.loads(JsonFormatter().format(record))
    assert set(entry) == {"ts", "level", "logger", "msg", "error_type", "where"}
    assert (entry["logger"], entry["msg"]) == ("uvicorn.error", "Exception in ASGI application")
    assert entry["error_type"] == "backend.config.ConfigError"
    assert entry["where"].startswith("config.py:parse_rate:")
    line = ConsoleFormatter().format(record)
    assert line.startswith("ERROR   uvicorn.error: Exception in ASGI application error_type=backend.config.ConfigError")
    for leak in ("SELECT secret", "Traceback", "\x1b"):
        assert leak not in json.dumps(entry, ensure_ascii=False)
        assert leak not in line


def test_mask_email():
    assert mask_email("ada@example.com") == "a***@example.com"
    assert mask_email("not-an-email") == "***"


def test_describe_exception_points_into_backend():
    from backend.config import parse_rate

    try:
        parse_rate("bad")
    except Exception as exc:
        described = describe_exception(exc)
    assert described == {"error_type": "backend.config.ConfigError", "where": described["where"]}
    assert described["where"].startswith("config.py:parse_rate:")
