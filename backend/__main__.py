"""`python -m backend serve [--host --port --workers]`, `python -m backend migrate`, and
`python -m backend openapi [--output FILE]` (the OpenAPI document, as committed in specs/openapi.json).

Start-up failures are one line on stderr, never a traceback: exit code 2 for a bad setting, 3 for
a database that cannot be reached (after retrying for DB_STARTUP_RETRY_SECONDS). specs/operations.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable

from backend.config import ConfigError, Settings, load_settings

EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3


class Unreachable(Exception):
    """A dependency cannot be reached at start-up; the message is the whole line to print."""


def refuse_local_state(settings: Settings, workers: int) -> None:
    """Several processes without Redis would each keep their own tickets, event streams and rate limits."""
    if workers > 1 and not settings.REDIS_URL and not settings.ALLOW_LOCAL_STATE:
        raise ConfigError(
            f"--workers {workers} needs REDIS_URL: event tickets, event streams and rate limits would be kept "
            "per worker (set ALLOW_LOCAL_STATE=true to run so anyway)"
        )


def _first_line(exc: BaseException) -> str:
    """What a driver error says, on one line (libpq's messages name the host, never the password)."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    return text.removeprefix("connection failed: ") or type(orig).__name__


def _bad_options(exc: BaseException) -> bool:
    """libpq refusing the URL's own options (`?sslmode=bogus`, an unknown option): a configuration error."""
    from psycopg import ProgrammingError

    text = str(getattr(exc, "orig", None) or exc)
    return isinstance(getattr(exc, "orig", None), ProgrammingError) or "invalid sslmode value" in text


def wait_for_database(url: str, settings: Settings, setting: str = "DATABASE_URL") -> None:
    """Connect once, retrying with back-off for DB_STARTUP_RETRY_SECONDS (a database scaled to zero wakes slowly)."""
    import asyncio

    from sqlalchemy.exc import DBAPIError

    from backend.db import create_engine, is_definitive_failure, is_sqlite, ping

    if is_sqlite(url):  # a file: nothing to wait for (a path that cannot be opened fails the migrations, exit 3)
        return

    async def attempt() -> None:
        engine = create_engine(
            url,
            connect_timeout=settings.DB_CONNECT_TIMEOUT,
            statement_timeout=settings.DB_STATEMENT_TIMEOUT,
            for_migrations=True,
        )
        try:
            await ping(engine)
        finally:
            await engine.dispose()

    deadline = time.monotonic() + settings.DB_STARTUP_RETRY_SECONDS
    delay = 0.5
    while True:
        try:
            asyncio.run(attempt())
            return
        except (DBAPIError, OSError) as exc:
            if _bad_options(exc):
                raise ConfigError(f"Invalid configuration: {setting}: {_first_line(exc)}") from None
            if is_definitive_failure(exc):
                raise Unreachable(f"error: the database ({setting}) cannot be used: {_first_line(exc)}") from None
            if time.monotonic() + delay > deadline:
                raise Unreachable(f"error: the database ({setting}) is unreachable: {_first_line(exc)}") from None
        time.sleep(delay)
        delay = min(delay * 2, 4.0)


def migrate(url: str, settings: Settings, setting: str = "DATABASE_URL") -> None:
    """Wait for the database, then apply pending migrations; a connection lost midway is `Unreachable` too."""
    from sqlalchemy.exc import OperationalError

    from backend.migrations.runner import upgrade

    wait_for_database(url, settings, setting)
    try:
        upgrade(url)
    except (OperationalError, OSError) as exc:
        raise Unreachable(f"error: migrations stopped, the database ({setting}) failed: {_first_line(exc)}") from None


def write_openapi(settings: Settings, output: str) -> None:
    """The app's /openapi.json, rendered as specs/openapi.json keeps it (`make openapi`)."""
    from backend.docs import openapi_text
    from backend.main import create_app

    text = openapi_text(create_app(settings).openapi())
    if output == "-":
        sys.stdout.write(text)
    else:
        with open(output, "w", encoding="utf-8") as file:
            file.write(text)


def serve_logging(settings: Settings) -> None:
    """The app's loggers, uvicorn's and Python's warnings in LOG_FORMAT on standard output, before the
    migrations run (their lines, and any warning, come out as the served app's do)."""
    import logging

    from backend.logging_setup import SERVED_LOGGERS, configure_logging

    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT, ("taskdeck", *SERVED_LOGGERS))
    logging.captureWarnings(True)


def prepare_database(settings: Settings, *, migrating: bool) -> int:
    """Apply pending migrations (else only wait for the database): 0, or the exit code with its one line printed."""
    from backend.migrations import MigrationRefused  # not the runner: alembic is loaded only to migrate

    migrations_setting = "MIGRATIONS_DATABASE_URL" if settings.MIGRATIONS_DATABASE_URL else "DATABASE_URL"
    try:
        if migrating:
            migrate(settings.migrations_database_url, settings, migrations_setting)
        else:
            wait_for_database(settings.database_url, settings)
    except ConfigError as exc:  # the database refused the URL's options
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Unreachable as exc:
        print(exc, file=sys.stderr)
        return EXIT_UNREACHABLE
    except MigrationRefused as exc:  # e.g. revision 0006 found two accounts with one canonical email
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def apart(job: Callable[[], int]) -> int:
    """`job`'s exit code, run in a forked child: `serve`'s migrations. A process keeps every module it imports,
    so alembic and the migration scripts (~9 MB of RSS) would stay in the server for its lifetime
    (specs/performance.md). The child writes where the server does, in its LOG_FORMAT (it inherits the logging
    set up by `serve_logging` and the file descriptors); an unexpected error is its traceback and exit code 1,
    as in one process. Without `os.fork` (not POSIX), in this process."""
    if not hasattr(os, "fork"):
        return job()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        code = 1
        try:
            code = job()
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend", description="Taskdeck API")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="apply pending migrations (unless AUTO_MIGRATE=false) and serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default: $PORT, else 8000")
    serve.add_argument("--workers", type=int, default=1)
    commands.add_parser("migrate", help="apply pending migrations and exit")
    openapi = commands.add_parser("openapi", help="write the OpenAPI document (no database needed) and exit")
    openapi.add_argument("--output", default="-", help="file to write (default: standard output)")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
        if args.command == "serve":
            from backend.sync.pipeline import load_stages

            load_stages(settings.SYNC_STAGES)  # a bad stage path is a configuration error, before anything runs
            refuse_local_state(settings, args.workers)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    if args.command == "openapi":
        write_openapi(settings, args.output)
        return 0

    if args.command == "migrate":
        code = prepare_database(settings, migrating=True)
        if code == 0:
            print("migrations applied")
        return code
    serve_logging(settings)  # from here on, every line a served process writes is in LOG_FORMAT
    if settings.AUTO_MIGRATE:
        code = apart(lambda: prepare_database(settings, migrating=True))
    else:
        code = prepare_database(settings, migrating=False)
    if code:
        return code

    import uvicorn

    from backend.logging_setup import served_log_config

    settings.jwt_secret  # noqa: B018 - create the development key once, before workers race for it
    uvicorn.run(
        "backend.main:served_app",
        factory=True,
        host=args.host,
        port=settings.PORT if args.port is None else args.port,
        workers=args.workers,
        # uvicorn trusts X-Forwarded-For from 127.0.0.1 by default. The app reads it itself
        # (middleware.client_ip, TRUSTED_PROXIES only): one source of truth for the client address.
        proxy_headers=False,
        server_header=False,
        access_log=False,
        timeout_graceful_shutdown=20,
        log_level=settings.LOG_LEVEL,
        log_config=served_log_config(settings.LOG_LEVEL, settings.LOG_FORMAT),  # applied in each worker too
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
