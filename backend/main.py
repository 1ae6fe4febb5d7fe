"""create_app(): settings -> logging -> database -> middleware -> routers -> error handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from backend.config import VERSION, Settings, load_settings
from backend.db import create_engine, session_factory
from backend.deps import no_external_verifier
from backend.errors import install_error_handlers
from backend.logging_setup import configure_logging
from backend.middleware import BodySizeLimitMiddleware, RequestContextMiddleware, SecurityHeadersMiddleware
from backend.routers import auth, health

DESCRIPTION = """
Taskdeck: tasks and pinned GitHub projects for a personal dashboard.

**Authentication.** Send `Authorization: Bearer <access token>`. Get a token from
`POST /api/auth/login` (or the *Authorize* button, which uses `POST /api/auth/token`), or
present a JWT issued by the web app's Better-Auth server. Every `/api/{user_id}/...` route
answers `403` unless `{user_id}` is the token's subject.

**Envelopes.** Success: `{"success": true, "data": ..., "message": ..., "meta": ...}`.
Errors: `{"success": false, "error": {"code", "message", "field", "details"}}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    engine = create_engine(
        settings.database_url,
        pool_size=settings.DB_POOL_SIZE,
        max_overflow=settings.DB_MAX_OVERFLOW,
        pool_timeout=settings.DB_POOL_TIMEOUT,
        connect_timeout=settings.DB_CONNECT_TIMEOUT,
        pool_recycle=settings.DB_POOL_RECYCLE,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(
        title="Taskdeck API",
        version=VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = session_factory(engine)
    app.state.external_verifier = no_external_verifier
    app.state.limiter = None

    install_error_handlers(app)
    app.include_router(auth.router)
    app.include_router(health.router)

    # Added innermost first. Security headers wrap the request context, so even the 500 that
    # the request context renders for an escaped exception carries them (and the request id).
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.MAX_BODY_BYTES)
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.HSTS_ENABLED)
    return app
