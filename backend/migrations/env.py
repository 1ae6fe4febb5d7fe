"""Alembic environment: async engine, batch mode on SQLite, type comparison on."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

import backend.models  # noqa: F401 - registers every table on the metadata
from backend.db import create_engine
from backend.migrations.runner import include_object_for
from backend.models.common import metadata

config = context.config


def _url() -> str:
    # `alembic` run by hand reads the environment: the migrations' URL first (a direct connection), as the CLI does.
    return (
        config.attributes.get("database_url")
        or os.environ.get("MIGRATIONS_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
        or "sqlite:///data/taskdeck.db"
    )


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=include_object_for(connection.dialect.name),
    )


def _run(connection: Connection) -> None:
    # The transaction begins before Alembic looks, so every revision runs in it and it is committed once
    # (by _run_async). Alembic would otherwise commit after each revision on SQLite (no transactional DDL),
    # and another instance waiting for the write lock would start from this one's half-way version.
    connection.begin()
    _configure(connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Several instances starting together: one migrates, the others wait, then find nothing to do.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(727465)")
        context.run_migrations()


async def _run_async() -> None:
    # No foreign-key pragma on this connection: batch rebuilds would fire ON DELETE CASCADE.
    engine = create_engine(_url(), for_migrations=True)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
