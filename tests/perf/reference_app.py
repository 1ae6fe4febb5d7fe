"""The references: the list's bare work, served by uvicorn with the same options as `python -m backend serve`
(`python -m tests.perf.reference_app --port 8001`), on a pool of the same size as ours.

- `GET /lean/users/{user_id}/tasks` — the **lean reference** (the one the target is set against): FastAPI +
  async SQLAlchemy **Core** + psycopg, `engine.connect()`, one `SELECT <columns> … WHERE user_id = … ORDER BY
  created_at DESC LIMIT 50`, the rows returned through a Pydantic response model. No ORM entities.
- `GET /users/{user_id}/tasks` — the older, heavier ORM reference (a session loading `Task` entities,
  validated by `response_model`), kept as a second row.

No auth, no ownership check, no envelope, no middleware, no rate limiting, no logging: the ratio of our list
throughput to these is what all of those cost.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import desc
from sqlalchemy import select as core_select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import col, select

from backend.db import async_url, create_engine, session_factory
from backend.models.task import Task, TaskPublicV1


def create_app() -> FastAPI:
    engine = create_engine(
        os.environ["DATABASE_URL"],
        pool_size=int(os.environ.get("DB_POOL_SIZE", "10")),
        max_overflow=int(os.environ.get("DB_MAX_OVERFLOW", "10")),
        pool_timeout=float(os.environ.get("DB_POOL_TIMEOUT", "5")),
    )
    sessions = session_factory(engine)
    # The lean reference's own engine: SQLAlchemy's and psycopg's defaults (no pre-ping, psycopg's prepared
    # statements, none of our bounds), the same pool size as ours.
    lean_engine = create_async_engine(
        async_url(os.environ["DATABASE_URL"]),
        pool_size=int(os.environ.get("DB_POOL_SIZE", "10")),
        max_overflow=int(os.environ.get("DB_MAX_OVERFLOW", "10")),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.dispose()
        await lean_engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/users/{user_id}/tasks", response_model=list[TaskPublicV1])
    async def list_tasks(user_id: str) -> list[Task]:
        async with sessions() as session:
            query = (
                select(Task)
                .where(Task.user_id == user_id)
                .order_by(col(Task.created_at).desc(), col(Task.id).desc())
                .limit(50)
            )
            return list((await session.exec(query)).all())

    table = Task.__table__  # type: ignore[attr-defined]
    columns = [table.c[name] for name in TaskPublicV1.model_fields]

    @app.get("/lean/users/{user_id}/tasks", response_model=list[TaskPublicV1])
    async def lean_list_tasks(user_id: str) -> list[dict[str, object]]:
        query = (
            core_select(*columns)
            .where(table.c.user_id == user_id)
            .order_by(desc(table.c.created_at), desc(table.c.id))
            .limit(50)
        )
        async with lean_engine.connect() as connection:
            return [dict(row._mapping) for row in await connection.execute(query)]

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(
        "tests.perf.reference_app:create_app",
        factory=True,
        host="127.0.0.1",
        port=args.port,
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
