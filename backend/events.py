"""Live change events for the dashboard: a per-user log with ids, a doorbell, and single-use stream tickets.

Each user's events go to a short log (a Redis stream when `REDIS_URL` is set, else in process) whose
ids (`<ms>-<seq>`) only grow. Publishing rings a doorbell (Redis pub/sub, so every instance hears it);
a connected stream then reads the log after the last id it sent. The log is the truth, the doorbell
only a hint: resuming with `Last-Event-ID` and catching up after a missed ring are the same read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from backend.config import Settings
from backend.metrics import Metrics

log = logging.getLogger("taskdeck.events")

EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
TICKET_SECONDS = 60
MAX_BUFFERED = 1000  # per user, in process
RETRY_MILLISECONDS = 3000  # what EventSource waits before reconnecting
REDIS_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    data: str  # JSON text

    def encode(self) -> bytes:
        return f"id: {self.id}\nevent: {self.type}\ndata: {self.data}\n\n".encode()


def id_order(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


class EventLog(Protocol):
    async def append(self, user_id: str, event_type: str, data: str) -> str: ...
    async def after(self, user_id: str, last_id: str) -> list[Event]: ...
    async def tail(self, user_id: str) -> str: ...
    async def issue_ticket(self, user_id: str) -> str: ...
    async def redeem_ticket(self, ticket: str) -> str | None: ...


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ticket_hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


@dataclass
class MemoryLog:
    """One process: ids from the clock (never going back), events kept for `window` seconds."""

    window: float
    _events: dict[str, deque[tuple[float, Event]]] = field(default_factory=dict)
    _last: dict[str, tuple[int, int]] = field(default_factory=dict)
    _tickets: dict[str, tuple[str, float]] = field(default_factory=dict)

    async def append(self, user_id: str, event_type: str, data: str) -> str:
        now_ms = time.time_ns() // 1_000_000
        last_ms, last_seq = self._last.get(user_id, (0, -1))
        ms, seq = (last_ms, last_seq + 1) if now_ms <= last_ms else (now_ms, 0)
        self._last[user_id] = (ms, seq)
        event = Event(f"{ms}-{seq}", event_type, data)
        events = self._events.setdefault(user_id, deque(maxlen=MAX_BUFFERED))
        events.append((time.monotonic(), event))
        while events and events[0][0] < time.monotonic() - self.window:
            events.popleft()
        return event.id

    async def after(self, user_id: str, last_id: str) -> list[Event]:
        cursor = id_order(last_id)
        return [event for _, event in self._events.get(user_id, ()) if id_order(event.id) > cursor]

    async def tail(self, user_id: str) -> str:
        ms, seq = self._last.get(user_id, (0, 0))
        return f"{ms}-{seq}"

    async def issue_ticket(self, user_id: str) -> str:
        now = time.monotonic()
        for key in [k for k, (_, expires) in self._tickets.items() if expires <= now]:
            del self._tickets[key]
        ticket = secrets.token_urlsafe(32)
        self._tickets[_ticket_hash(ticket)] = (user_id, now + TICKET_SECONDS)
        return ticket

    async def redeem_ticket(self, ticket: str) -> str | None:
        user_id, expires = self._tickets.pop(_ticket_hash(ticket), ("", 0.0))
        return user_id if expires > time.monotonic() else None


# XADD, expiry and the doorbell in one step, so rings arrive in id order. Redis's clock trims the window.
_APPEND = """
local now = redis.call('TIME')
local min_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[1])
local id = redis.call('XADD', KEYS[1], 'MINID', '~', min_ms, '*', 'type', ARGV[2], 'data', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[2], ARGV[4])
return id
"""


class RedisLog:
    """Many instances: a Redis stream per user, tickets as keys that expire and are read once (GETDEL)."""

    def __init__(self, redis: Redis, prefix: str, window: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.channel = f"{prefix}:events"
        self.window_ms = int(window * 1000)
        self._append = redis.register_script(_APPEND)

    def _key(self, user_id: str) -> str:
        return f"{self.prefix}:events:{user_id}"

    async def append(self, user_id: str, event_type: str, data: str) -> str:
        keys = [self._key(user_id), self.channel]
        return _text(await self._append(keys=keys, args=[self.window_ms, event_type, data, user_id]))

    async def after(self, user_id: str, last_id: str) -> list[Event]:
        entries = await self.redis.xrange(self._key(user_id), min=f"({last_id}", max="+", count=MAX_BUFFERED)
        return [
            Event(_text(id_), _text(fields[b"type"]), _text(fields[b"data"])) for id_, fields in entries or () if fields
        ]

    async def tail(self, user_id: str) -> str:
        last = await self.redis.xrevrange(self._key(user_id), max="+", min="-", count=1)
        return _text(last[0][0]) if last else "0-0"

    async def issue_ticket(self, user_id: str) -> str:
        ticket = secrets.token_urlsafe(32)
        await self.redis.set(f"{self.prefix}:events:ticket:{_ticket_hash(ticket)}", user_id, ex=TICKET_SECONDS)
        return ticket

    async def redeem_ticket(self, ticket: str) -> str | None:
        user_id = await self.redis.getdel(f"{self.prefix}:events:ticket:{_ticket_hash(ticket)}")
        return _text(user_id) if user_id is not None else None


class EventBus:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.metrics = metrics
        self.heartbeat = settings.EVENTS_HEARTBEAT_SECONDS
        self.max_seconds = settings.EVENTS_STREAM_MAX_SECONDS
        self._bells: dict[str, set[asyncio.Event]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._redis_url = settings.REDIS_URL
        self.log: EventLog
        if settings.REDIS_URL:
            self._redis: Redis | None = Redis.from_url(
                settings.REDIS_URL, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS
            )
            self.log = RedisLog(self._redis, settings.REDIS_KEY_PREFIX, settings.EVENTS_REPLAY_SECONDS)
        else:
            self._redis = None
            self.log = MemoryLog(settings.EVENTS_REPLAY_SECONDS)

    async def start(self) -> None:
        if self._redis_url is not None:
            self._listener = asyncio.create_task(self._listen(self._redis_url), name="event-doorbell")

    async def close(self) -> None:
        if self._listener is not None:
            await _cancel(self._listener)
        if self._redis is not None:
            await self._redis.aclose()

    async def publish(self, user_id: str, event_type: str, data: Any) -> None:
        """Never fails the write that caused it: with Redis down, live clients miss the event (logged)."""
        try:
            await self.log.append(user_id, event_type, json.dumps(data, separators=(",", ":"), ensure_ascii=False))
        except (RedisError, OSError) as exc:
            extra = {"event": "event_publish_failed", "error_type": type(exc).__name__}
            log.warning("event not published", extra=extra)
            return
        if self._redis is None:
            self._ring(user_id)

    def _ring(self, user_id: str) -> None:
        for bell in self._bells.get(user_id, ()):
            bell.set()

    async def _listen(self, url: str) -> None:
        """Hear every instance's rings. After a (re)connect every local stream re-reads, so nothing is missed."""
        redis = Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, health_check_interval=30)
        channel = self.log.channel if isinstance(self.log, RedisLog) else ""
        failing = False
        try:
            while True:
                try:
                    async with redis.pubsub() as pubsub:
                        await pubsub.subscribe(channel)
                        if failing:
                            log.warning("event doorbell reconnected", extra={"event": "event_doorbell_up"})
                            failing = False
                        for user_id in list(self._bells):
                            self._ring(user_id)
                        async for message in pubsub.listen():
                            if message.get("type") == "message":
                                self._ring(message["data"].decode())
                except (RedisError, OSError) as exc:
                    if not failing:
                        log.warning(
                            "event doorbell lost; retrying",
                            extra={"event": "event_doorbell_down", "error_type": type(exc).__name__},
                        )
                    failing = True
                    await asyncio.sleep(1)
        finally:
            await redis.aclose()

    @asynccontextmanager
    async def _bell(self, user_id: str) -> AsyncIterator[asyncio.Event]:
        bell = asyncio.Event()
        self._bells.setdefault(user_id, set()).add(bell)
        self.metrics.event_clients.inc()
        try:
            yield bell
        finally:
            self.metrics.event_clients.dec()
            bells = self._bells.get(user_id)
            if bells is not None:
                bells.discard(bell)
                if not bells:
                    del self._bells[user_id]

    async def stream(self, user_id: str, last_event_id: str | None) -> AsyncIterator[bytes]:
        """The SSE body: missed events after `last_event_id` (if still kept), then live ones and heartbeats."""
        async with self._bell(user_id) as bell:
            try:
                cursor = last_event_id if last_event_id and EVENT_ID.match(last_event_id) else None
                cursor = cursor or await self.log.tail(user_id)
                yield f"retry: {RETRY_MILLISECONDS}\n: connected\n\n".encode()
                loop = asyncio.get_running_loop()
                # Streams end after a while; EventSource reconnects with Last-Event-ID and loses nothing,
                # and the credentials are checked again (a revoked session does not stream for ever).
                ends_at = loop.time() + self.max_seconds
                while (left := ends_at - loop.time()) > 0:
                    bell.clear()
                    for event in await self.log.after(user_id, cursor):
                        cursor = event.id
                        yield event.encode()
                    try:
                        await asyncio.wait_for(bell.wait(), min(self.heartbeat, left))
                    except TimeoutError:
                        yield b": keep-alive\n\n"
            except (RedisError, OSError) as exc:
                # End the stream; the browser reconnects with Last-Event-ID and catches up.
                extra = {"event": "event_stream_failed", "error_type": type(exc).__name__}
                log.warning("event stream ended", extra=extra)


async def _cancel(task: asyncio.Task[None], *, attempts: int = 10, wait: float = 0.5) -> None:
    """Cancel `task` and wait for its end, cancelling again if the cancellation was swallowed: redis-py's
    pub/sub read can swallow one, and a shutdown must never wait for ever on Redis."""
    for _ in range(attempts):
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=wait)
        if done:
            with suppress(asyncio.CancelledError):
                task.result()
            return
    log.warning("event doorbell did not stop", extra={"event": "event_doorbell_stuck"})


async def publish(state: Any, user_id: str, event_type: str, data: Any) -> None:
    """Send `event_type` with `data` to the user's live event streams (on every instance). `state` is `app.state`."""
    bus = getattr(state, "events", None)
    if isinstance(bus, EventBus):
        await bus.publish(user_id, event_type, data)
