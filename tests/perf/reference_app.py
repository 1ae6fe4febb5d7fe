"""The reference: the list's bare work (one `SELECT ... LIMIT 50` through the same async engine).

No auth, no ownership check, no envelope, no middleware, no rate limiting, no logging: the ratio
of our list throughput to this app's is what all of those cost. Served by uvicorn with the same
options as `python -m backend serve`: `python -m tests.perf.reference_app --port 8001`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlmodel import col, select

from backend.db import create_engine, session_factory
from backend.models.task import Task, TaskPublic


def create_app() -> FastAPI:
    engine = create_engine(
        os.environ["DATABASE_URL"],
        pool_size=int(os.environ.get("DB_POOL_SIZE", "10")),
        max_overflow=int(os.environ.get("DB_MAX_OVERFLOW", "10")),
        pool_timeout=float(os.environ.get("DB_POOL_TIMEOUT", "5")),
    )
    sessions = session_factory(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/users/{user_id}/tasks", response_model=list[TaskPublic])
    async def list_tasks(user_id: str) -> list[Task]:
        async with sessions() as session:
            query = (
                select(Task)
                .where(Task.user_id == user_id)
                .order_by(col(Task.created_at).desc(), col(Task.id).desc())
                .limit(50)
            )
            return list((await session.exec(query)).all())

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
