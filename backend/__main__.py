"""`python -m backend serve [--host --port --workers]` and `python -m backend migrate`."""

from __future__ import annotations

import argparse
import sys

from backend.config import ConfigError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend", description="Taskdeck API")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="apply pending migrations (unless AUTO_MIGRATE=false) and serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    commands.add_parser("migrate", help="apply pending migrations and exit")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
        if args.command == "serve":
            from backend.sync.pipeline import load_stages

            load_stages(settings.SYNC_STAGES)  # a bad stage path is a configuration error, before anything runs
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from backend.migrations.runner import upgrade

    if args.command == "migrate":
        upgrade(settings.migrations_database_url)
        print("migrations applied")
        return 0

    import uvicorn

    if settings.AUTO_MIGRATE:
        upgrade(settings.migrations_database_url)
    settings.jwt_secret  # noqa: B018 - create the development key once, before workers race for it
    uvicorn.run(
        "backend.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        # uvicorn trusts X-Forwarded-For from 127.0.0.1 by default. The app reads it itself
        # (middleware.client_ip, TRUSTED_PROXIES only): one source of truth for the client address.
        proxy_headers=False,
        server_header=False,
        access_log=False,
        timeout_graceful_shutdown=20,
        log_level=settings.LOG_LEVEL,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
