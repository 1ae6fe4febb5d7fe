"""Live events for the dashboard: task and project changes as a live tail of the change feed, transient
events (sync runs) through a short log, a doorbell, and single-use stream tickets.

**Changes** (specs/api/changes.md, specs/api/beyond.md "Live dashboard"). A transaction that records changes
rings its owner's doorbell once it is committed (`ring`, set on the app's sessionmaker: services/changes.py).
A stream, on each ring, on connect and at least every `EVENTS_SESSION_CHECK_SECONDS`, reads the feed after
its cursor from the database (a `ChangeSource`) and sends each change with `id: <feed cursor>`. The feed is
the truth and a ring only a hint: the order in which rings or publishes arrive (two instances, two
transactions) cannot reorder or lose a change, since the feed is read in `seq` (commit) order after the last
cursor sent. So the last event id is a feed cursor: `GET /changes?cursor=<it>` and `Last-Event-ID: <it>`
both go on exactly after it.

**Transient events** (`sync.progress`, `sync.finished`) go to a short per-user log (a Redis stream when
`REDIS_URL` is set, else in process) whose ids (`<ms>-<seq>`) only grow; publishing one rings the same
doorbell. They are sent without an `id:` line (EventSource keeps the last change cursor as its last event
id), and are not replayed: a stream reads the log from its own start on.

The doorbell is Redis pub/sub, so every instance hears it (else in process). A stream belongs to the login
session that opened it (its bearer token's, or its ticket's). When a session ends, a "session ended" notice
goes over the same doorbell channel; streams of that session stop at once. Each stream also re-checks its
session every `EVENTS_SESSION_CHECK_SECONDS`, so a notice that was lost still ends it.

With Redis, publishing is off the request path: `publish` and `ring` put the event or ring on a bounded
in-process queue that one background task writes to Redis, in order. Every Redis call goes through the app's
circuit breaker (backend/breaker.py); a transient event that cannot be written (queue full, Redis
unavailable) is dropped, counted (`taskdeck_events_dropped_total`) and logged: live clients miss it, the
write stands. A ring that cannot be sent loses nothing: the other instances' streams read the feed at their
next periodic re-check.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from backend.breaker import RedisLink
from backend.config import Settings
from backend.errors import CursorExpired, ServiceUnavailable, TooManyStreams
from backend.metrics import Metrics

log = logging.getLogger("taskdeck.events")

TICKET_SECONDS = 60
MAX_BUFFERED = 1000  # per user, in process
RETRY_MILLISECONDS = 3000  # what EventSource waits before reconnecting
SLOT_TTL_MARGIN_SECONDS = 10.0
# On the doorbell channel, a ring is a user id; a notice is `end <user_id> <session_id>` (`*`: every session).
END_NOTICE = "end"
ALL_SESSIONS = "*"
PUBLISH_QUEUE_SIZE = 10_000  # events waiting for Redis, per process; beyond, new ones are dropped
DROP_WARNING_SECONDS = 30.0  # at most one "events dropped" warning per interval


@dataclass(frozen=True)
class Event:
    id: str  # a change's feed cursor, or a transient event's place in the log (never sent)
    type: str
    data: str  # JSON text

    def encode(self) -> bytes:
        """A change with its cursor as `id`."""
        return f"id: {self.id}\nevent: {self.type}\ndata: {self.data}\n\n".encode()

    def encode_transient(self) -> bytes:
        """A transient event: no `id:` line, so the client's last event id stays the last change's cursor."""
        return f"event: {self.type}\ndata: {self.data}\n\n".encode()


class ChangeSource(Protocol):
    """Reads the stream's user's changes after feed cursor `after`: the events (each with its cursor as id),
    the cursor after them, and whether more are waiting. CursorExpired if the feed refuses `after`."""

    async def __call__(self, after: str) -> tuple[list[Event], str, bool]: ...


def id_order(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


@dataclass(frozen=True)
class TicketOwner:
    """Whom a stream ticket was issued to: the user, and the login session of the token that asked for it
    (None for a Better-Auth token, which has no session here)."""

    user_id: str
    session_id: str | None

    def encode(self) -> str:
        return f"{self.user_id} {self.session_id or ''}"

    @classmethod
    def decode(cls, value: str) -> TicketOwner:
        user_id, _, session_id = value.partition(" ")
        return cls(user_id, session_id or None)


class EventLog(Protocol):
    async def append(self, user_id: str, event_type: str, data: str) -> str: ...
    async def after(self, user_id: str, last_id: str) -> list[Event]: ...
    async def tail(self, user_id: str) -> str: ...
    async def issue_ticket(self, owner: TicketOwner) -> str: ...
    async def redeem_ticket(self, ticket: str) -> TicketOwner | None: ...


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
    _tickets: dict[str, tuple[TicketOwner, float]] = field(default_factory=dict)

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

    async def issue_ticket(self, owner: TicketOwner) -> str:
        now = time.monotonic()
        for key in [k for k, (_, expires) in self._tickets.items() if expires <= now]:
            del self._tickets[key]
        ticket = secrets.token_urlsafe(32)
        self._tickets[_ticket_hash(ticket)] = (owner, now + TICKET_SECONDS)
        return ticket

    async def redeem_ticket(self, ticket: str) -> TicketOwner | None:
        owner, expires = self._tickets.pop(_ticket_hash(ticket), (None, 0.0))
        return owner if expires > time.monotonic() else None


# XADD, expiry and the doorbell in one step, so rings arrive in id order. Redis's clock trims the window.
_APPEND = """
local now = redis.call('TIME')
local min_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[1])
local id = redis.call('XADD', KEYS[1], 'MINID', '~', min_ms, '*', 'type', ARGV[2], 'data', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[2], ARGV[4])
return id
"""


def _tickets_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("Live events are unavailable, try again shortly", field="redis")


class RedisLog:
    """Many instances: a Redis stream per user, tickets as keys that expire and are read once (GETDEL).

    Each call goes through `link`'s breaker; tickets need Redis, so without it they are a 503."""

    def __init__(self, link: RedisLink, redis: Redis, prefix: str, window: float) -> None:
        self.link = link
        self.redis = redis
        self.prefix = prefix
        self.channel = f"{prefix}:events"
        self.window_ms = int(window * 1000)
        self._append = redis.register_script(_APPEND)

    def _key(self, user_id: str) -> str:
        return f"{self.prefix}:events:{user_id}"

    async def append(self, user_id: str, event_type: str, data: str) -> str:
        keys = [self._key(user_id), self.channel]
        args: list[str | int] = [self.window_ms, event_type, data, user_id]
        return _text(await self.link.call(lambda: self._append(keys=keys, args=args)))

    async def after(self, user_id: str, last_id: str) -> list[Event]:
        key = self._key(user_id)
        entries = await self.link.call(lambda: self.redis.xrange(key, min=f"({last_id}", max="+", count=MAX_BUFFERED))
        return [
            Event(_text(id_), _text(fields[b"type"]), _text(fields[b"data"])) for id_, fields in entries or () if fields
        ]

    async def tail(self, user_id: str) -> str:
        key = self._key(user_id)
        last = await self.link.call(lambda: self.redis.xrevrange(key, max="+", min="-", count=1))
        return _text(last[0][0]) if last else "0-0"

    async def issue_ticket(self, owner: TicketOwner) -> str:
        ticket = secrets.token_urlsafe(32)
        key = f"{self.prefix}:events:ticket:{_ticket_hash(ticket)}"
        try:
            await self.link.call(lambda: self.redis.set(key, owner.encode(), ex=TICKET_SECONDS))
        except RedisError:
            raise _tickets_unavailable() from None
        return ticket

    async def redeem_ticket(self, ticket: str) -> TicketOwner | None:
        key = f"{self.prefix}:events:ticket:{_ticket_hash(ticket)}"
        try:
            owner = await self.link.call(lambda: self.redis.getdel(key))
        except RedisError:
            raise _tickets_unavailable() from None
        return TicketOwner.decode(_text(owner)) if owner is not None else None


@dataclass(frozen=True)
class StreamSlot:
    """One open stream's place in its user's and its client address's counts."""

    id: str
    user_key: str
    ip_key: str


def _keys(slot: StreamSlot, prefix: str = "") -> tuple[str, str]:
    return f"{prefix}user:{slot.user_key}", f"{prefix}ip:{slot.ip_key}"


@dataclass
class MemorySlots:
    """One process: each open stream is a member of its user's and its address's set, with an expiry."""

    _sets: dict[str, dict[str, float]] = field(default_factory=dict)

    def _count(self, key: str, now: float) -> int:
        members = self._sets.get(key, {})
        for member in [m for m, expires in members.items() if expires <= now]:
            del members[member]
        if not members:
            self._sets.pop(key, None)
        return len(members)

    async def acquire(self, slot: StreamSlot, limits: tuple[int, int], ttl: float) -> int:
        """0 if `slot` took its place, else which count (1: the user's, 2: the address's) is full."""
        now = time.monotonic()
        for index, (key, limit) in enumerate(zip(_keys(slot), limits, strict=True), start=1):
            if self._count(key, now) >= limit:
                return index
        await self.refresh(slot, ttl)
        return 0

    async def refresh(self, slot: StreamSlot, ttl: float) -> None:
        for key in _keys(slot):
            self._sets.setdefault(key, {})[slot.id] = time.monotonic() + ttl

    async def release(self, slot: StreamSlot) -> None:
        for key in _keys(slot):
            members = self._sets.get(key, {})
            members.pop(slot.id, None)
            if not members:
                self._sets.pop(key, None)


# Count, refuse or take a place in both sets in one step (Redis's clock): members are open streams,
# scored by when they expire, so the streams of a crashed instance age out.
_ACQUIRE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[2 + i]) then return i end
end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], now_ms + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 0
"""
_REFRESH = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], now_ms + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 0
"""


class RedisSlots:
    """Many instances: a sorted set per user and per client address, shared by every instance."""

    def __init__(self, link: RedisLink, redis: Redis, prefix: str) -> None:
        self.link = link
        self.redis = redis
        self.prefix = f"{prefix}:streams:"
        self._acquire = redis.register_script(_ACQUIRE)
        self._refresh = redis.register_script(_REFRESH)

    def _keys(self, slot: StreamSlot) -> list[str]:
        return list(_keys(slot, self.prefix))

    async def acquire(self, slot: StreamSlot, limits: tuple[int, int], ttl: float) -> int:
        args: list[str | int] = [slot.id, int(ttl * 1000), *limits]
        refused = await self.link.call(lambda: self._acquire(keys=self._keys(slot), args=args))
        return int(refused)

    async def refresh(self, slot: StreamSlot, ttl: float) -> None:
        await self.link.call(lambda: self._refresh(keys=self._keys(slot), args=[slot.id, int(ttl * 1000)]))

    async def release(self, slot: StreamSlot) -> None:
        await self.link.call(lambda: self._release(slot))

    async def _release(self, slot: StreamSlot) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self._keys(slot):
                pipe.zrem(key, slot.id)
            await pipe.execute()


class StreamBell(asyncio.Event):
    """One open stream's doorbell: set when its user has new events, or when its session ended (`ended`)."""

    def __init__(self, session_id: str | None) -> None:
        super().__init__()
        self.session_id = session_id
        self.ended = False

    def end(self) -> None:
        self.ended = True
        self.set()


# Is the stream's session still alive (its user active)? Asked every EVENTS_SESSION_CHECK_SECONDS.
SessionCheck = Callable[[], Awaitable[bool]]


class EventBus:
    def __init__(self, settings: Settings, metrics: Metrics, redis: RedisLink) -> None:
        self.metrics = metrics
        self.heartbeat = settings.EVENTS_HEARTBEAT_SECONDS
        self.max_seconds = settings.EVENTS_STREAM_MAX_SECONDS
        self.session_check = settings.EVENTS_SESSION_CHECK_SECONDS
        self.stream_limits = (settings.EVENTS_MAX_STREAMS_PER_USER, settings.EVENTS_MAX_STREAMS_PER_IP)
        # A stream refreshes its place every heartbeat; one not refreshed for this long (its instance died) is gone.
        self.slot_ttl = 3 * self.heartbeat + SLOT_TTL_MARGIN_SECONDS
        self._bells: dict[str, set[StreamBell]] = {}
        self._link = redis
        self._tasks: list[asyncio.Task[None]] = []
        # With Redis: transient events (user, type, data) and rings (user, None, "") wait here for the publisher
        # task, so a write never waits for Redis.
        self._queue: asyncio.Queue[tuple[str, str | None, str]] | None = None
        self._dropped = 0  # since the last warning
        self._last_drop_warning = -math.inf
        self._last_ring_warning = -math.inf
        self.log: EventLog
        self.slots: MemorySlots | RedisSlots
        if redis.client is not None:
            self.log = RedisLog(redis, redis.client, settings.REDIS_KEY_PREFIX, settings.EVENTS_REPLAY_SECONDS)
            self.slots = RedisSlots(redis, redis.client, settings.REDIS_KEY_PREFIX)
            self._queue = asyncio.Queue(PUBLISH_QUEUE_SIZE)
        else:
            self.log = MemoryLog(settings.EVENTS_REPLAY_SECONDS)
            self.slots = MemorySlots()

    async def start(self) -> None:
        if self._queue is not None:
            self._tasks = [
                asyncio.create_task(self._listen(), name="event-doorbell"),
                asyncio.create_task(self._publish_queued(self._queue), name="event-publisher"),
            ]

    async def close(self, flush_seconds: float = 1.0) -> None:
        """Stop the background tasks, after giving queued events `flush_seconds` to reach Redis."""
        if self._queue is not None and self._tasks:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), flush_seconds)
        for task in self._tasks:
            await _cancel(task)
        self._tasks = []

    def ring(self, user_id: str) -> None:
        """Changes of `user_id` were committed: this instance's streams read the feed now, the other instances'
        when the ring reaches them through Redis (queued, never delaying the write). A ring that is lost only
        delays their read to their next periodic re-check (logged, not counted: no event is lost)."""
        self._ring(user_id)
        if self._queue is None:
            return
        try:
            self._queue.put_nowait((user_id, None, ""))
        except asyncio.QueueFull:
            self._ring_lost("queue_full")

    async def publish(self, user_id: str, event_type: str, data: Any) -> None:
        """A transient event (not a change: `sync.*`). Never fails nor delays the write that caused it: with Redis
        unavailable, live clients miss the event (counted and logged). With Redis the event is queued for the
        publisher task; in process it is logged now."""
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        if self._queue is None:
            await self.log.append(user_id, event_type, text)
            self._ring(user_id)
            return
        try:
            self._queue.put_nowait((user_id, event_type, text))
        except asyncio.QueueFull:
            self._drop("queue_full")

    async def _publish_queued(self, queue: asyncio.Queue[tuple[str, str | None, str]]) -> None:
        """Write queued events and rings to Redis one after another (so in order); each failure drops its event
        or ring at once."""
        while True:
            user_id, event_type, text = await queue.get()
            try:
                if event_type is None:
                    await self._ring_others(user_id)
                else:
                    await self.log.append(user_id, event_type, text)
            except (RedisError, OSError) as exc:
                if event_type is None:
                    self._ring_lost("redis_unavailable", type(exc).__name__)
                else:
                    self._drop("redis_unavailable", type(exc).__name__)
            finally:
                queue.task_done()

    async def _ring_others(self, user_id: str) -> None:
        """The ring over the doorbell channel (this instance's streams hear it too: one more read, nothing new)."""
        client = self._link.client
        if client is not None and isinstance(self.log, RedisLog):
            channel = self.log.channel
            await self._link.call(lambda: client.publish(channel, user_id))

    def _ring_lost(self, reason: str, error_type: str | None = None) -> None:
        now = time.monotonic()
        if now - self._last_ring_warning >= DROP_WARNING_SECONDS:
            extra = {"event": "event_ring_lost", "reason": reason, "error_type": error_type}
            log.warning("change ring not sent to other instances; their streams re-check soon", extra=extra)
            self._last_ring_warning = now

    def _drop(self, reason: str, error_type: str | None = None) -> None:
        self.metrics.events_dropped.labels(reason).inc()
        self._dropped += 1
        now = time.monotonic()
        if now - self._last_drop_warning >= DROP_WARNING_SECONDS:
            extra = {"event": "events_dropped", "reason": reason, "error_type": error_type, "dropped": self._dropped}
            log.warning("live events not published", extra=extra)
            self._last_drop_warning, self._dropped = now, 0

    def _ring(self, user_id: str) -> None:
        for bell in self._bells.get(user_id, ()):
            bell.set()

    async def end_sessions(self, user_id: str, session_id: str | None) -> None:
        """Close the streams of `user_id`'s login session `session_id` (None: of all their sessions) on every
        instance: this one's at once, the others' when the notice arrives. Never fails: with Redis
        unreachable, the other instances' streams end at their next session check."""
        self._end(user_id, session_id)
        client = self._link.client
        if client is None or not isinstance(self.log, RedisLog):
            return
        notice = f"{END_NOTICE} {user_id} {session_id or ALL_SESSIONS}"
        channel = self.log.channel
        try:
            # Straight to Redis (through the breaker), not through the publish queue: the notice must not wait
            # behind queued events, and the user's later writes are queued after it.
            await self._link.call(lambda: client.publish(channel, notice))
        except (RedisError, OSError) as exc:
            extra = {"event": "event_session_notice_failed", "error_type": type(exc).__name__}
            log.warning("session end not announced to other instances", extra=extra)

    def _end(self, user_id: str, session_id: str | None) -> None:
        for bell in self._bells.get(user_id, ()):
            if session_id is None or bell.session_id == session_id:
                bell.end()

    def _hear(self, message: str) -> None:
        """A ring (a user id: never a space in it) or a session-ended notice."""
        kind, _, rest = message.partition(" ")
        if not rest:
            self._ring(message)
        elif kind == END_NOTICE:
            user_id, _, session_id = rest.partition(" ")
            self._end(user_id, None if session_id == ALL_SESSIONS else session_id)

    async def _listen(self) -> None:
        """Hear every instance's rings. After a (re)connect every local stream re-reads, so nothing is missed.

        The subscription goes through the breaker: while it is open, no reconnection is tried."""
        redis = self._link.subscriber()
        channel = self.log.channel if isinstance(self.log, RedisLog) else ""
        failing = False
        try:
            while True:
                try:
                    async with redis.pubsub() as pubsub:
                        await self._link.call(lambda: pubsub.subscribe(channel))
                        if failing:
                            log.warning("event doorbell reconnected", extra={"event": "event_doorbell_up"})
                            failing = False
                        for user_id in list(self._bells):
                            self._ring(user_id)
                        async for message in pubsub.listen():
                            if message.get("type") == "message":
                                self._hear(message["data"].decode())
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

    async def open_slot(self, user_id: str, ip: str) -> StreamSlot | None:
        """Take a place for a new stream of `user_id` from `ip`; TooManyStreams (429) when either count is full.

        With Redis unreachable the stream is not counted (None), as rate limits fail open: it ends at its
        first read of the log anyway."""
        slot = StreamSlot(secrets.token_hex(16), user_id, ip)
        try:
            refused = await self.slots.acquire(slot, self.stream_limits, self.slot_ttl)
        except (RedisError, OSError) as exc:
            log.warning("stream not counted", extra={"event": "event_slot_failed", "error_type": type(exc).__name__})
            return None
        if refused:
            which = "you have" if refused == 1 else "your address has"
            limit = self.stream_limits[refused - 1]
            raise TooManyStreams(math.ceil(self.heartbeat), f"Too many open event streams: {which} {limit} already")
        return slot

    async def close_slot(self, slot: StreamSlot | None) -> None:
        """Give the place back (never fails: a place not given back expires)."""
        if slot is None:
            return
        try:
            await self.slots.release(slot)
        except (RedisError, OSError) as exc:
            log.warning("stream slot kept", extra={"event": "event_slot_failed", "error_type": type(exc).__name__})

    @asynccontextmanager
    async def _bell(self, user_id: str, session_id: str | None) -> AsyncIterator[StreamBell]:
        bell = StreamBell(session_id)
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

    async def stream(
        self,
        user_id: str,
        start: str,
        changes: ChangeSource,
        slot: StreamSlot | None = None,
        *,
        session_id: str | None = None,
        alive: SessionCheck | None = None,
    ) -> AsyncIterator[bytes]:
        """The SSE body: the user's changes after feed cursor `start` (each with its cursor as `id`), then live
        ones as they are committed, transient events published from now on (no `id`), and heartbeats.

        On connect, on each ring and at least every `session_check` seconds the stream reads the feed after the
        last cursor it sent (`changes`) and the transient log after the last event it sent. `slot` (from
        `open_slot`) is refreshed every heartbeat; whoever serves the stream closes it. The stream belongs to
        login session `session_id`: it ends, delivering nothing more, once a notice says the session ended
        (`end_sessions`) or `alive` (asked every `session_check` seconds) says False."""
        async with self._bell(user_id, session_id) as bell:
            try:
                # Transient events from now on (not replayed); Redis failing ends the stream, as before the feed.
                transient = await self.log.tail(user_id)
                cursor = start
                # An `id:` with no data sets EventSource's last event id without firing an event: the client
                # holds a feed cursor from the start, even if no change comes before it disconnects.
                yield f"retry: {RETRY_MILLISECONDS}\nid: {cursor}\n: connected\n\n".encode()
                loop = asyncio.get_running_loop()
                now = loop.time()
                # Streams end after a while; EventSource reconnects with Last-Event-ID and loses nothing,
                # and the credentials are checked again.
                ends_at = now + self.max_seconds
                refresh_at = quiet_until = now + self.heartbeat
                check_at = now + self.session_check if alive is not None else math.inf
                while not bell.ended and (now := loop.time()) < ends_at:
                    if slot is not None and now >= refresh_at:
                        await self.slots.refresh(slot, self.slot_ttl)
                        refresh_at = now + self.heartbeat
                    if alive is not None and now >= check_at:
                        if not await alive():
                            bell.end()
                            break
                        check_at = loop.time() + self.session_check
                    bell.clear()
                    more = True
                    while more and not bell.ended:
                        events, cursor, more = await changes(cursor)
                        for event in events:
                            if bell.ended:
                                break
                            yield event.encode()
                            quiet_until = loop.time() + self.heartbeat
                    for event in await self.log.after(user_id, transient):
                        if bell.ended:
                            break
                        transient = event.id
                        yield event.encode_transient()
                        quiet_until = loop.time() + self.heartbeat
                    if bell.ended:
                        break
                    if loop.time() >= quiet_until:
                        yield b": keep-alive\n\n"
                        quiet_until = loop.time() + self.heartbeat
                    with suppress(TimeoutError):
                        # A ring lost (Redis down, another instance's queue full) delays a change at most this long.
                        recheck_at = loop.time() + self.session_check
                        wake_at = min(quiet_until, check_at, ends_at, recheck_at)
                        await asyncio.wait_for(bell.wait(), max(0.0, wake_at - loop.time()))
                if bell.ended:
                    log.info("event stream ended with its session", extra={"event": "event_stream_session_ended"})
            except CursorExpired:
                # Tombstones after the cursor were purged while the stream ran: the reconnect is 410, a full sync.
                log.info("event stream's cursor expired", extra={"event": "event_stream_cursor_expired"})
            except (RedisError, OSError, SQLAlchemyError) as exc:
                # End the stream; the browser reconnects with Last-Event-ID and catches up from the feed.
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
    log.warning(f"{task.get_name()} did not stop", extra={"event": "event_task_stuck", "task": task.get_name()})


async def publish(state: Any, user_id: str, event_type: str, data: Any) -> None:
    """Send transient `event_type` with `data` to the user's live event streams (on every instance), without an
    id: not for changes, which streams read from the change feed. `state` is `app.state`."""
    bus = getattr(state, "events", None)
    if isinstance(bus, EventBus):
        await bus.publish(user_id, event_type, data)


async def end_sessions(state: Any, user_id: str, session_id: str | None) -> None:
    """Close the live event streams of the user's login session `session_id` (None: of every session of the
    user) on every instance. `state` is `app.state`; call it once the session's end is committed."""
    bus = getattr(state, "events", None)
    if isinstance(bus, EventBus):
        await bus.end_sessions(user_id, session_id)
