"""Alembic configured in code, so the app needs no ini file or working directory to migrate."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config

HERE = Path(__file__).parent


def include_object_for(dialect: str) -> Callable[..., bool]:
    """Autogenerate leaves out objects the models declare for another dialect only (`ddl_if`),
    such as the PostgreSQL trigram indexes."""

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        ddl_if = getattr(obj, "_ddl_if", None)
        return ddl_if is None or ddl_if.dialect is None or ddl_if.dialect == dialect

    return include_object


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["database_url"] = database_url
    return config


def _in_thread(fn: object, *args: object) -> None:
    # env.py runs its own event loop; a thread keeps that working when a caller already has one.
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn(*args)  # type: ignore[operator]
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations over `database_url`: the CLI passes `settings.migrations_database_url` (a direct
    connection; the advisory lock and DDL are not for a transaction-mode pooler)."""
    _in_thread(command.upgrade, alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    _in_thread(command.downgrade, alembic_config(database_url), revision)
