"""create_app(): settings -> logging -> database -> middleware -> routers -> error handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from backend.config import VERSION, Settings, load_settings
from backend.db import create_engine, session_factory
from backend.deps import no_external_verifier
from backend.errors import install_error_handlers
from backend.events import EventBus
from backend.logging_setup import configure_logging
from backend.metrics import Metrics, MetricsMiddleware
from backend.middleware import (
    CORS_EXPOSE,
    CORS_HEADERS,
    CORS_METHODS,
    BodySizeLimitMiddleware,
    CORSMiddleware,
    ErrorRenderingMiddleware,
    RequestContextMiddleware,
    SecurityHeadersMiddleware,
)
from backend.ratelimit import RateLimiter, RateLimitMiddleware
from backend.routers import account, auth, events, health, projects, tasks
from backend.routers import metrics as metrics_router
from backend.security.better_auth import BetterAuthVerifier, better_auth_enabled

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

    limiter = RateLimiter(settings)
    verifier = BetterAuthVerifier(settings) if better_auth_enabled(settings) else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await limiter.start()
        await app.state.events.start()
        try:
            yield
        finally:
            await app.state.events.close()
            await limiter.close()
            if verifier is not None:
                await verifier.aclose()
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
    app.state.external_verifier = verifier or no_external_verifier
    app.state.limiter = limiter
    app.state.metrics = Metrics(engine)
    app.state.events = EventBus(settings, app.state.metrics)

    install_error_handlers(app)
    app.include_router(auth.router)
    app.include_router(tasks.router)
    app.include_router(tasks.legacy_router)
    app.include_router(projects.router)
    app.include_router(projects.legacy_router)
    app.include_router(health.router)
    app.include_router(metrics_router.router)
    # After the earlier drafts' routes, so `/api/tasks/export` and `/api/tasks/events` stay theirs.
    app.include_router(account.router)
    app.include_router(events.router)

    # Added innermost first. Errors are rendered innermost, so 413/429/500 responses still pass
    # through rate-limit headers and CORS. The request context gives every response (a CORS
    # preflight too) an id; security headers wrap even the 500 it renders for a middleware failure.
    app.add_middleware(ErrorRenderingMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.MAX_BODY_BYTES)
    app.add_middleware(RateLimitMiddleware, limiter=limiter)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.CORS_ORIGINS,
        allow_credentials=True,
        allow_methods=CORS_METHODS,
        allow_headers=CORS_HEADERS,
        expose_headers=CORS_EXPOSE,
    )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.HSTS_ENABLED)
    return app
