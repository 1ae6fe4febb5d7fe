"""Which login sessions are alive, answered from memory most of the time, with every instance told at once of an end.

Every request on one of our access tokens used to ask the database (`services.auth._LOGIN_QUERY`: the user joined
to the token's login session) whether that login is alive. Now each instance remembers the answers for a short
while (`SESSION_CACHE_SECONDS`, bounded by the session's own expiry; at most `CACHE_SIZE` logins, least recently
used out first), each marked with the **epoch** of its user: a random value kept in Redis
(`<REDIS_KEY_PREFIX>:sessions:epoch:<user_id>`), replaced whenever something ends a login session of the user or
changes what a cached answer carries (`sessions_ended`: logout, refresh-token reuse, erasure), after the change is
committed and before the response that made it is sent. A remembered answer is used only while the user's epoch
is still the one it was stored with, so the next request after such a change, on any instance, asks the database.

The epoch costs no round trip of its own: the per-IP rate-limit script (`backend.ratelimit`), which every
request already runs on Redis, reads it too, for the user the bearer token *claims* to be (its `sub`, read
without checking the signature: it only chooses which epoch to read). The token is verified afterwards as
before, and the cache is keyed by the verified `sub` and `sid`; an epoch read for another user is not used.
An answer is stored with the epoch read at the request's start, before the database was asked, so a change
committed while the query ran leaves an entry that the next request no longer trusts.

No epoch, no memory: without Redis (limits in process), with rate limiting off, with Redis unreachable or the
breaker open, for an exempt path, or when the script fails, the database answers as before. An epoch missing in
Redis (never set, expired after `EPOCH_KEY_SECONDS`, Redis restarted empty) is created by the script with a fresh
random value, which no remembered answer carries: values never repeat, unlike a counter starting again at 0.

What is NOT seen at once: a login session revoked or an account disabled by hand in the database (no API does
that) and a Redis failure when the epoch is replaced (retried once, then logged `session_epoch_bump_failed`):
both within `SESSION_CACHE_SECONDS` (default 5). specs/operations.md, "Live sessions", has the guarantees.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError

from backend.breaker import RedisLink
from backend.config import Settings
from backend.events import end_sessions

log = logging.getLogger("taskdeck.sessions")

CACHE_SIZE = 4096  # logins remembered per process (an entry is the user's row: well under 1 KB)
EPOCH_KEY_SECONDS = 3600  # an epoch not replaced for this long is dropped; the next read makes a new one
# In the ASGI scope's state: (the user id the token claims, that user's epoch), set by the rate-limit middleware.
EPOCH_STATE = "session_epoch"


def new_epoch() -> str:
    """A value no epoch had before (64 random bits)."""
    return secrets.token_hex(8)


class LiveSessions:
    """This instance's memory of live login sessions, and the epochs in Redis that invalidate it everywhere."""

    def __init__(self, settings: Settings, redis: RedisLink) -> None:
        self.seconds = settings.SESSION_CACHE_SECONDS
        self.redis: RedisLink | None = redis if redis.client is not None else None
        self.key_prefix = f"{settings.REDIS_KEY_PREFIX}:sessions:epoch"
        self.size = CACHE_SIZE
        # (user id, session id) -> (epoch, the user's row, wall-clock time it may be used until)
        self._entries: OrderedDict[tuple[str, str], tuple[str, Any, float]] = OrderedDict()

    @property
    def reads_epochs(self) -> bool:
        """Whether requests should read their user's epoch (the cache is on and there is a Redis to read it from)."""
        return self.seconds > 0 and self.redis is not None

    def epoch_key(self, user_id: str) -> str:
        return f"{self.key_prefix}:{user_id}"

    def get(self, user_id: str, session_id: str, epoch: str) -> Any | None:
        """The row remembered for this login under `epoch`; None if there is none, or it is stale or too old."""
        key = (user_id, session_id)
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_epoch, row, until = entry
        if stored_epoch != epoch or time.time() >= until:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return row

    def put(self, user_id: str, session_id: str, epoch: str, row: Any, session_expires: datetime) -> None:
        """Remember that this login is alive, with `row` its user's columns, as of `epoch` (read before the query)."""
        if self.seconds <= 0:
            return
        until = min(time.time() + self.seconds, session_expires.timestamp())
        key = (user_id, session_id)
        self._entries[key] = (epoch, row, until)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, user_id: str) -> None:
        """Drop every login of `user_id` from this instance's memory."""
        for key in [key for key in self._entries if key[0] == user_id]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    async def bump(self, user_id: str) -> None:
        """Something cached about `user_id` changed (committed): this instance forgets it at once, every instance at
        its next request (a new epoch). Redis failing twice: logged, and the other instances' entries expire
        within `SESSION_CACHE_SECONDS`. Done whenever Redis is configured, even with this instance's cache off."""
        self.forget(user_id)
        if self.redis is None:
            return
        client, key = self.redis.client, self.epoch_key(user_id)
        assert client is not None
        failure: BaseException | None = None
        for _ in range(2):
            try:
                await self.redis.call(lambda: client.set(key, new_epoch(), ex=EPOCH_KEY_SECONDS))
                return
            except (RedisError, OSError) as exc:
                failure = exc
        log.warning(
            "login-session epoch not replaced; other instances may answer from memory until their entries expire",
            extra={
                "event": "session_epoch_bump_failed",
                "user_id": user_id,
                "error_type": type(failure).__name__,
                "within_seconds": self.seconds,
            },
        )


async def sessions_ended(state: Any, user_id: str, session_id: str | None) -> None:
    """After the commit that ended the user's login session `session_id` (None: every session, or the user is gone):
    no instance answers from memory for the user any more, then their event streams close (`events.end_sessions`).
    `state` is `app.state`. The service's `SessionsEnded` callback (`partial(sessions_ended, app.state)`)."""
    live = getattr(state, "live_sessions", None)
    if isinstance(live, LiveSessions):
        await live.bump(user_id)
    await end_sessions(state, user_id, session_id)
