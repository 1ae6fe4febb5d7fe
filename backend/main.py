"""create_app(): settings -> logging -> database -> middleware -> routers -> error handlers."""

from __future__ import annotations

import gc
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.routing import iter_route_contexts

from backend.breaker import RedisLink
from backend.config import VERSION, Settings, load_settings
from backend.db import ConnectionGate, create_engine, is_sqlite, session_factory
from backend.docs import OPENAPI_TAGS, install_docs
from backend.errors import EVERY_OPERATION, install_error_handlers
from backend.events import EventBus, publish
from backend.live_sessions import LiveSessions
from backend.logging_setup import configure_logging
from backend.metrics import Metrics, record_sync_outcome
from backend.middleware import CORS_EXPOSE, CORS_HEADERS, CORS_METHODS, CORSMiddleware, InnerMiddleware, OuterMiddleware
from backend.ratelimit import RateLimiter, RateLimitMiddleware
from backend.routers import account, auth, batch, changes, events, health, labels, legacy, projects, sync, tasks
from backend.routers import metrics as metrics_router
from backend.security.better_auth import BetterAuthVerifier, better_auth_enabled, no_external_verifier
from backend.services.changes import RING
from backend.sync import github
from backend.sync.pipeline import SyncRunner

DESCRIPTION = """
Taskdeck: tasks and pinned GitHub projects for a personal dashboard.

**Authentication.** Every route except `/api/auth/register|login|token|refresh` and `/health*`
needs `Authorization: Bearer <access token>`. Two kinds of token are accepted:

1. The API's own: `POST /api/auth/register`, then `POST /api/auth/login` answers an access token
   (15 minutes) and a refresh token. `POST /api/auth/refresh` trades the refresh token for a new
   pair (the old one stops working; presenting it again revokes the session).
   `POST /api/auth/logout` ends the session at once. In this page, *Authorize* signs in with an
   email and password (OAuth2 password flow on `POST /api/auth/token`) or takes a token.
2. A JWT from the web app's Better-Auth server (JWT plugin), checked against its JWKS; the user
   is created on their first request with Better-Auth's user id.

Data lives under `/api/{user_id}/...`, where `{user_id}` is the token's subject (`user_id` in the
login answer, `sub` in a Better-Auth token): any other id is `403 FORBIDDEN`, and someone else's
task or project id is `404`.

**Envelopes.** Success: `{"success": true, "data": ..., "message": ..., "meta": ...}` (`meta`
on lists: `total`, `limit`, `offset`). Every error, unknown routes included:
`{"success": false, "error": {"code", "message", "field", "details"}}`; branch on `error.code`
(`TOKEN_EXPIRED`: refresh and retry; `VALIDATION_ERROR`: `details` lists every failing field).

**Limits.** `429 RATE_LIMITED` carries `Retry-After` (seconds); counted responses carry
`RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`. `503 SERVICE_UNAVAILABLE` (database
down) carries `Retry-After` too. Bodies are JSON (at most `MAX_BODY_BYTES`, 1 MiB by default) and unknown
fields are refused.
"""


def served_app() -> FastAPI:
    """The app `serve` runs (uvicorn's factory, in each worker): its start-up objects frozen out of the garbage
    collector (below)."""
    return create_app(freeze_after_start=True)


def create_app(settings: Settings | None = None, *, freeze_after_start: bool = False) -> FastAPI:
    settings = settings or load_settings()
    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    engine = create_engine(
        settings.database_url,
        pool_size=settings.DB_POOL_SIZE,
        max_overflow=settings.DB_MAX_OVERFLOW,
        pool_timeout=settings.DB_POOL_TIMEOUT,
        connect_timeout=settings.DB_CONNECT_TIMEOUT,
        statement_timeout=settings.DB_STATEMENT_TIMEOUT,
        pool_recycle=settings.DB_POOL_RECYCLE,
    )

    redis = RedisLink(settings)  # one pool and one circuit breaker for every Redis use
    limiter = RateLimiter(settings, redis)
    live_sessions = LiveSessions(settings, redis)  # read through the limiter's script: backend/live_sessions.py
    verifier = BetterAuthVerifier(settings) if better_auth_enabled(settings) else None
    sessionmaker = session_factory(engine)
    github_client = partial(
        github.make_client,
        api_url=settings.GITHUB_API_URL,
        token=settings.GITHUB_TOKEN,
        timeout=settings.GITHUB_TIMEOUT_SECONDS,
        app_version=VERSION,
    )
    sync_runner = SyncRunner(sessionmaker, settings, github_client)  # loads SYNC_STAGES: a bad entry stops here

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await limiter.start()
        await app.state.events.start()
        await sync_runner.start()  # takes over runs of dead instances (their events need the bus)
        if freeze_after_start:
            # What start-up built (~160 000 objects: the app, its routes and models, SQLAlchemy's and pydantic's
            # schemas) lives as long as the process: a full collection traversed all of it every time, a 60-190
            # ms pause in which every request waited, the p99 of a route at 100 req/s (specs/performance.md,
            # "Start-up objects frozen"). Frozen, the collector skips them. Not in tests: apps come and go there,
            # and a frozen app's cycles would never be collected.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await sync_runner.close()
            await app.state.events.close()
            await redis.close()
            if verifier is not None:
                await verifier.aclose()
            await engine.dispose()

    app = FastAPI(
        title="Taskdeck API",
        version=VERSION,
        description=DESCRIPTION,
        openapi_tags=OPENAPI_TAGS,
        responses=EVERY_OPERATION,
        # Served by install_docs from backend/static/ instead of a CDN.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = sessionmaker
    # Requests take at most the pool's kept connections: an overflow connection is closed when handed back to a
    # full pool, and requests holding overflow ones reopened ~40 connections a second under load (specs/
    # performance.md, "Requests within the pool"). The overflow serves work outside requests.
    pool_slots = None if is_sqlite(settings.database_url) else settings.DB_POOL_SIZE
    app.state.db_gate = ConnectionGate(pool_slots, settings.DB_POOL_TIMEOUT)
    app.state.sync_runner = sync_runner
    app.state.external_verifier = verifier or no_external_verifier
    app.state.redis = redis
    app.state.limiter = limiter
    app.state.live_sessions = live_sessions
    app.state.metrics = Metrics(engine)
    redis.breaker.observe = app.state.metrics.observe_redis_call
    app.state.events = EventBus(settings, app.state.metrics, redis)
    # Every transaction that records changes rings their owner's live streams once committed (services/changes.py).
    sessionmaker.configure(info={RING: app.state.events.ring})
    app.state.health = health.HealthCache(settings.HEALTH_CACHE_SECONDS)
    sync_runner.notify = partial(publish, app.state)
    sync_runner.finished = partial(record_sync_outcome, app.state)

    install_error_handlers(app)
    app.include_router(auth.router)
    app.include_router(tasks.router)
    app.include_router(legacy.tasks_router)
    app.include_router(labels.router)
    app.include_router(projects.router)
    app.include_router(legacy.projects_router)
    app.include_router(batch.router)
    app.include_router(sync.router)
    app.include_router(health.router)
    app.include_router(metrics_router.router)
    # After the earlier drafts' routes, so `/api/tasks/export` and `/api/tasks/events` stay theirs.
    app.include_router(account.router)
    app.include_router(changes.router)
    app.include_router(events.router)
    install_docs(app)

    # Added innermost first. The stack, outermost first (specs/architecture.md, "A request's path through
    # the layers"): Outer (metrics, request id + access log + backstop errors, security headers) -> CORS
    # -> rate limit -> Inner (body size limit, Deprecation/Link, error rendering, 405s) -> FastAPI's handlers.
    # Errors are rendered innermost, so 405/413/500 answers still pass through rate-limit headers and CORS
    # (the limiter's 429 through CORS). Outer sits outside CORS, so a preflight gets a request id and security
    # headers, as does the 500 Outer renders when a layer inside it fails. Every layer costs a call and a
    # `send` wrapper on every request: a new concern goes into Outer or Inner, not into a layer of its own.
    app.add_middleware(
        InnerMiddleware,
        max_bytes=settings.MAX_BODY_BYTES,
        successors=legacy.SUCCESSORS,
        since=legacy.DEPRECATED_SINCE,
        gate=app.state.db_gate,
        streams=event_streams(app),
    )
    app.add_middleware(RateLimitMiddleware, limiter=limiter, live=live_sessions)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.CORS_ORIGINS,
        allow_credentials=True,
        allow_methods=CORS_METHODS,
        allow_headers=CORS_HEADERS,
        expose_headers=CORS_EXPOSE,
    )
    app.add_middleware(OuterMiddleware, metrics=app.state.metrics, hsts=settings.HSTS_ENABLED)
    return app


def event_streams(app: FastAPI) -> list[re.Pattern[str]]:
    """The path patterns of the routes answering an event stream: they wait for the gate in their session
    dependency, not in InnerMiddleware (their response outlives the session)."""
    streams = []
    for context in iter_route_contexts(app.routes):
        response_class = getattr(context, "response_class", None)
        if isinstance(response_class, type) and issubclass(response_class, StreamingResponse):
            streams.append(context.path_regex)
    return streams
