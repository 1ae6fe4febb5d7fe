"""Database engines (SQLite for the embedded default, PostgreSQL in production) and sessions."""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import generators, pq
from psycopg.abc import PQGen
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, InvalidatePoolError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.config import PG_SCHEMES, SQLITE_SCHEMES
from backend.models.common import metadata as metadata  # re-exported: naming convention set before any table


def async_url(url: str) -> str:
    """Rewrite the URL forms people paste (`postgres://`, Neon's `?sslmode=...`) to our async drivers."""
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    if scheme in PG_SCHEMES:
        parts = urlsplit("postgresql+psycopg://" + rest)
        return urlunsplit(parts._replace(query=urlencode(parse_qsl(parts.query))))
    if scheme in SQLITE_SCHEMES:
        return "sqlite+aiosqlite://" + rest
    raise ValueError(f"Unsupported DATABASE_URL scheme {scheme!r}: use sqlite:// or postgresql://")


def is_sqlite(url: str) -> bool:
    return async_url(url).startswith("sqlite")


def _sqlite_file(url: str) -> str | None:
    database = make_url(async_url(url)).database
    return database if database and database != ":memory:" else None


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout: float = 5.0,
    connect_timeout: float = 5.0,
    statement_timeout: float | None = None,
    pool_recycle: int = 1800,
    for_migrations: bool = False,
) -> AsyncEngine:
    """One engine per URL. `for_migrations` leaves out the SQLite foreign-key pragma (see STACK.md).

    PostgreSQL only: `statement_timeout` bounds every round trip to the server (see `BoundedConnection`);
    None (migrations: DDL and the migration lock may take long) bounds nothing."""
    full = async_url(url)
    if full.startswith("sqlite"):
        path = _sqlite_file(url)
        if path:
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(full, connect_args={"timeout": 30})
        _configure_sqlite(engine, foreign_keys=not for_migrations)
        return engine
    engine = create_async_engine(
        full,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_recycle=pool_recycle,
        connect_args={
            # No server-side prepared statements: psycopg prepares a query after 5 runs (`_pg3_0`, ...), and a
            # transaction-mode pooler (PgBouncer, Neon's `-pooler` host) hands the next transaction another
            # server connection, where the statement is missing, already taken, or another query's. Without
            # them the API is correct behind such a pooler with no setting; the cost is measured in
            # specs/performance.md. (SQLAlchemy's psycopg dialect prepares nothing of its own.)
            "prepare_threshold": None,
            # An idle pooled connection to a host that vanished is noticed by TCP, and data left unacknowledged
            # is given up on, instead of waiting for the kernel's defaults (minutes to hours). Socket options of
            # ours: nothing a pooler sees.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": math.ceil(((statement_timeout or connect_timeout) + connect_timeout) * 1000),
            "async_creator_fn": Connector(connect_timeout, statement_timeout),
        },
    )
    _ping_when_idle(engine)
    return engine


# A pooled connection back within this long of its last use is handed out without a ping.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    """SQLAlchemy's pre-ping, for connections that sat idle in the pool only.

    `pool_pre_ping` costs every request a round trip (and two autocommit switches). Under traffic a connection
    comes back to the pool and goes out again within milliseconds, and one that fails then fails the request
    as a failure during it would. A connection idle for `PING_AFTER_IDLE_SECONDS` or more (after an outage, a
    restart, a quiet night) is pinged as before: a dead one invalidates the pool, and the request gets a new
    connection (`InvalidatePoolError`, SQLAlchemy's own pre-ping path). A fresh connection is not pinged."""
    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect

    @event.listens_for(sync_engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)  # none: a fresh connection
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise InvalidatePoolError() from None
            raise


class BoundedConnection(psycopg.AsyncConnection[Any]):
    """A psycopg connection whose every wait for the server is bounded, for a server that is hung, not down.

    A SIGSTOPped (or wedged) server's kernel still accepts connections and acknowledges what is sent: TCP
    never fails, and the server's own `statement_timeout` never fires. So each round trip (a statement, a
    fetch, COMMIT, ROLLBACK, the pool's ping of an idle connection) waits at most `round_trip_timeout`; then
    the connection is closed, not cancelled (a cancel request to a stopped server is not answered either, and
    psycopg would wait for it), and an OperationalError on a closed connection makes SQLAlchemy discard it and
    every pooled connection of its generation: after the server resumes, only new connections are used.

    The server is asked to end a slow statement itself a little earlier (`SET LOCAL statement_timeout`, sent
    in the same message as the transaction's `BEGIN`: no extra round trip, and transaction-scoped, which a
    transaction-mode pooler accepts where it refuses the `options` startup parameter); its connection stays.
    """

    round_trip_timeout: float | None = None
    begin_suffix: bytes = b""

    def bound(self, seconds: float | None) -> None:
        self.round_trip_timeout = seconds
        # The server gives up half a second before the client (at least half the budget), so a statement
        # that is merely slow ends with `57014 query_canceled` and keeps its connection.
        server_ms = int(max(seconds - 0.5, seconds / 2) * 1000) if seconds else 0
        self.begin_suffix = b"; SET LOCAL statement_timeout = %d" % server_ms if server_ms else b""

    async def wait(self, gen: PQGen[Any], interval: float = 0.1, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - psycopg's signature
        limit = self.round_trip_timeout if timeout is None else timeout
        try:
            return await super().wait(gen, interval, timeout=limit)
        except pg_errors._WaitTimeout:
            if timeout is not None:  # a wait of psycopg's own, with its own limit
                raise
            self.pgconn.finish()
            raise psycopg.OperationalError(f"the database did not answer within {limit:g} s") from None

    def _start_query(self) -> PQGen[None]:
        if not self.begin_suffix or self._autocommit or self._pipeline:
            return (yield from super()._start_query())
        if self.pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return None
        # As psycopg's own BEGIN (the simple query protocol, which poolers accept), plus the timeout.
        self._check_connection_ok()
        self.pgconn.send_query(self._get_tx_start_command() + self.begin_suffix)
        for result in (yield from generators.execute(self.pgconn)):
            if result.status == pq.ExecStatus.FATAL_ERROR:
                raise pg_errors.error_from_result(result, encoding=self.info.encoding)
        return None


# libpq's answers that waiting does not change: no such database, wrong password or role.
DEFINITIVE_SQLSTATES = {"3D000", "28P01", "28000"}


def is_definitive_failure(exc: BaseException) -> bool:
    """A connection refused for a reason that retrying does not change (SQLAlchemy's wrapper or the driver's error)."""
    orig = getattr(exc, "orig", None)
    if getattr(orig or exc, "sqlstate", None) in DEFINITIVE_SQLSTATES:
        return True
    text = str(orig or exc)
    return "does not exist" in text or "authentication failed" in text or "unable to open database" in text


class Connector:
    """Opens the pool's PostgreSQL connections, each attempt bounded by `connect_timeout`.

    A database that scales to zero (Neon) may refuse or fail the first connection while it wakes: a failed
    attempt is retried with back-off (0.1 s, 0.2 s, ... 1 s) for at most `connect_timeout` in all. Once an
    attempt has failed that way, the database is known down and the next requests try once, so an outage
    costs each of them one attempt, not the whole budget, until a connection succeeds again."""

    def __init__(self, connect_timeout: float, round_trip_timeout: float | None) -> None:
        self.connect_timeout = connect_timeout
        self.round_trip_timeout = round_trip_timeout
        self.down = False

    async def __call__(self, *args: Any, **kwargs: Any) -> BoundedConnection:
        deadline = time.monotonic() + self.connect_timeout
        delay = 0.1
        while True:
            remaining = deadline - time.monotonic()
            # libpq counts whole seconds, 2 at least.
            kwargs["connect_timeout"] = max(2, math.ceil(min(remaining, self.connect_timeout)))
            try:
                connection = await BoundedConnection.connect(*args, **kwargs)
            except psycopg.OperationalError as exc:
                if self.down or is_definitive_failure(exc) or time.monotonic() + delay >= deadline:
                    self.down = True
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self.down = False
            connection.bound(self.round_trip_timeout)
            return connection


def _configure_sqlite(engine: AsyncEngine, *, foreign_keys: bool) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if foreign_keys:
            cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # SQLite has one writer. Taking the write lock at BEGIN makes every transaction
        # serialisable and avoids SQLITE_BUSY on a read-then-write upgrade; read-only work
        # that then waits on something slow ends its transaction first (see `end_read`).
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# In a request's ASGI scope: True while the request holds a gate slot taken before its dependencies were solved
# (InnerMiddleware), which its session then takes over (ConnectionGate.__call__).
ADMITTED = "taskdeck.db_slot"


class ConnectionGate:
    """Requests take the pool's connections first come, first served.

    SQLAlchemy's async pool is not fair: a connection handed back wakes the longest waiter, but a request
    arriving meanwhile takes it first, and the woken one queues again at the back. Under sustained overload
    (256 or 1 024 connections on a pool of 30) a few requests starved until `DB_POOL_TIMEOUT` and were
    answered 503 while later ones went through. The gate is a FIFO semaphore in front of it, of the pool's kept
    size (`DB_POOL_SIZE`: requests never open an overflow connection, which the pool would close again when it
    is handed back; the overflow is for work outside requests): a request waits here, in order, at most
    `timeout` (then the pool's own TimeoutError, a 503 as before), and once through it finds a connection.
    None: no gate (SQLite, whose pool is not the limit).

    A request without a body under `/api/` waits before FastAPI solves its dependencies (`admit`, from
    InnerMiddleware): waiting there it holds ~6 KB, where one waiting inside the dependencies held ~20 KB (specs/
    performance.md, "RSS after the overload (2026-12-08)"). Its session takes that slot over (`__call__` with the
    scope) and gives it back when it ends, as one that waited in the session dependency does."""

    def __init__(self, slots: int | None, timeout: float) -> None:
        self.slots = asyncio.Semaphore(slots) if slots else None
        self.timeout = timeout

    async def enter(self) -> None:
        """Take a slot, waiting in order at most `timeout`: the pool's TimeoutError after that."""
        assert self.slots is not None
        if not self.slots.locked():  # free and nobody waiting: no timer to set up
            await self.slots.acquire()
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self.slots.acquire()
        except TimeoutError:
            raise PoolTimeoutError(f"no database connection free within {self.timeout:g} s") from None

    async def admit(self, scope: MutableMapping[str, Any]) -> bool:
        """Take a slot for the request of `scope` before its dependencies are solved; False when there is no gate."""
        if self.slots is None:
            return False
        await self.enter()
        scope[ADMITTED] = True
        return True

    def dismiss(self, scope: MutableMapping[str, Any]) -> None:
        """Give back the slot `admit` took, unless the request's session took it over (and gave it back itself)."""
        if scope.pop(ADMITTED, False):
            assert self.slots is not None
            self.slots.release()

    @asynccontextmanager
    async def __call__(self, scope: MutableMapping[str, Any] | None = None) -> AsyncIterator[None]:
        """Hold a slot for the block: the one the request of `scope` was admitted with, else one waited for here."""
        slots = self.slots
        if slots is None:
            yield
            return
        if scope is None or not scope.pop(ADMITTED, False):
            await self.enter()
        try:
            yield
        finally:
            slots.release()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False, autoflush=False)


# The unit of work. Services add, change and flush; they never commit. A request's work is
# committed once, by the session dependency, after the route returns and before the response is
# sent (deps.get_session); work outside a request (sync runs, start-up) uses `unit_of_work`. What
# must happen only once the work is durable (a live event) is registered with `after_commit`.
AfterCommit = Callable[[], Awaitable[None] | None]


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once the session's work is committed (never if it is rolled back)."""
    session.info.setdefault("after_commit", []).append(callback)


async def commit(session: AsyncSession) -> None:
    """The commit point of a unit of work, then what the work registered with `after_commit`."""
    await session.commit()
    callbacks: list[AfterCommit] = session.info.pop("after_commit", [])
    for callback in callbacks:
        result = callback()
        if inspect.isawaitable(result):
            await result


@asynccontextmanager
async def unit_of_work(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose work is committed when the block ends, or rolled back if it raises."""
    async with factory() as session:
        yield session
        await commit(session)


async def flush_unique(session: AsyncSession, row: Any, conflict: Callable[[], Exception]) -> None:
    """Write `row` (new or changed) in a savepoint. A unique violation raises `conflict()` and leaves the rest of the
    transaction usable (e.g. to read the row that won); any other integrity error propagates."""
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError as exc:
        if not is_unique_violation(exc):
            raise
        raise conflict() from None


Row = TypeVar("Row", bound=SQLModel)


async def save(session: AsyncSession, row: Row, changes: dict[str, Any]) -> Row:
    """Set `changes` on `row` (a loaded row) and flush the UPDATE; the request's unit of work commits it."""
    row.sqlmodel_update(changes)
    session.add(row)
    await session.flush()
    return row


async def end_read(session: AsyncSession) -> None:
    """End a read-only transaction before slow work, so SQLite's write lock is not held during it."""
    if session.in_transaction() and session.get_bind().dialect.name == "sqlite":
        await commit(session)


async def lock_user_row(session: AsyncSession, user_id: str) -> None:
    """Serialise this user's writers until the transaction ends (e.g. count-then-insert).

    PostgreSQL locks the user row; SQLite already holds the database write lock (BEGIN IMMEDIATE). A lock the
    transaction already holds (taken outside any savepoint: a savepoint rolled back releases the locks taken in
    it) is not asked for again: a batch of 100 commands locks its owner once, not 101 times.
    """
    from backend.models.user import User

    if session.get_bind().dialect.name != "postgresql":
        return
    held = session.info.get(_USER_LOCK)
    if held is not None and held[1] == user_id and held[0] is session.get_transaction():
        return
    await session.exec(select(col(User.id)).where(col(User.id) == user_id).with_for_update())
    if not session.in_nested_transaction():
        session.info[_USER_LOCK] = (session.get_transaction(), user_id)


_USER_LOCK = "user_row_locked"  # in a session's info: (the transaction holding the lock, the user id)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SELECT 1")


def is_unique_violation(exc: IntegrityError) -> bool:
    """True for a unique-constraint violation, whichever driver raised it (see STACK.md)."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "23505":
        return True
    return getattr(orig, "sqlite_errorname", "") in {"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"}


def is_foreign_key_violation(exc: IntegrityError) -> bool:
    """True when a write refers to a row that is not there (PostgreSQL 23503, SQLite's FOREIGNKEY constraint)."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "23503":
        return True
    return getattr(orig, "sqlite_errorname", "") == "SQLITE_CONSTRAINT_FOREIGNKEY"


def violated_constraint(exc: IntegrityError) -> str | None:
    """The constraint's name where the driver reports it (psycopg does; SQLite does not)."""
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    return str(name) if name else None
