"""Rate limits: moving windows, on Redis when REDIS_URL is set (one script call per hit: the hit and the window's
stats together), else in process (the `limits` package's memory storage, same algorithm).

`RateLimitMiddleware` applies the default per-IP policy to every request (unknown routes too) and
writes the `RateLimit-*` headers; `rate_limit(policy, key=...)` and `limit_login` add tighter,
per-route policies. Redis down or hung means fail open: requests proceed, one warning per interval. Every
Redis call goes through the app's one circuit breaker (backend/breaker.py): while it is open, the
limiter does not even try, so a request pays nothing for an unavailable Redis.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.util import WindowStats
from redis.exceptions import RedisError
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.breaker import RedisLink
from backend.config import Settings
from backend.deps import PrincipalDep
from backend.errors import RateLimited, render_error
from backend.live_sessions import EPOCH_KEY_SECONDS, EPOCH_STATE, LiveSessions, new_epoch
from backend.logging_setup import mask_email, security_event
from backend.metrics import record_rate_limited
from backend.middleware import client_ip, route_of
from backend.models.emails import canonical_email
from backend.security.tokens import claimed_subject

log = logging.getLogger("taskdeck.ratelimit")

Policy = Literal["default", "login", "login_ip", "register", "sync"]
Health = Literal["ok", "down", "disabled"]

EXEMPT_PATHS = frozenset(
    {"/health", "/health/live", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/metrics"}
)
EXEMPT_PREFIXES = ("/health/", "/static/")

STATE_KEY = "ratelimit"

# The moving window on Redis in one round trip: `limits`' acquire_moving_window.lua (a list of hit timestamps,
# newest first, at most `limit` long) followed by its moving_window.lua (binary search for the oldest hit still
# in the window), in one script, so a request costs one Redis call instead of two. Same keys and data as the
# `limits` package's Redis storage. Returns {allowed (0/1), oldest hit in the window (or now), hits in it}.
# With a second key, the login-session epoch of the user the bearer token claims (backend/live_sessions.py) is
# appended: read, or created with ARGV[5] (a fresh random value, expiring after ARGV[6] s) when there is none.
MOVING_WINDOW_HIT = """
local epoch = nil
if KEYS[2] then
    epoch = redis.call('get', KEYS[2])
    if not epoch then
        epoch = ARGV[5]
        redis.call('set', KEYS[2], epoch, 'EX', tonumber(ARGV[6]))
    end
end
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local expiry = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local since = now - expiry
local allowed = 0
if cost <= limit then
    local entry = redis.call('lindex', KEYS[1], limit - cost)
    if not (entry and tonumber(entry) >= since) then
        for _ = 1, cost do
            redis.call('lpush', KEYS[1], now)
        end
        redis.call('ltrim', KEYS[1], 0, limit - 1)
        redis.call('expire', KEYS[1], expiry)
        allowed = 1
    end
end
local low, high, found = 0, limit - 1, nil
while low <= high do
    local mid = math.floor((low + high) / 2)
    local value = tonumber(redis.call('lindex', KEYS[1], mid))
    if value and value >= since then
        found = mid
        low = mid + 1
    else
        high = mid - 1
    end
end
if found then
    return {allowed, tostring(redis.call('lindex', KEYS[1], found)), found + 1, epoch}
end
return {allowed, tostring(now), 0, epoch}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    """One counted hit: allowed or not, and what the `RateLimit-*` headers say."""

    policy: Policy
    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # whole seconds until the oldest hit in the window leaves it
    epoch: str | None = None  # the login-session epoch read with the hit (`hit(..., epoch_key=...)`), if any

    @property
    def retry_after(self) -> int:
        return max(1, self.reset_after)

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
        }


class RateLimiter:
    """The policies and their store. `hit` answers None when nothing was counted (off, or store down)."""

    warn_interval = 30.0  # at most one "store unavailable" warning per interval (a class attribute: tunable)

    def __init__(self, settings: Settings, redis: RedisLink) -> None:
        self.enabled = settings.RATE_LIMIT_ENABLED
        self.items: dict[Policy, RateLimitItem] = {
            "default": parse(settings.RATE_LIMIT_DEFAULT),
            "login": parse(settings.RATE_LIMIT_LOGIN),
            "login_ip": parse(settings.RATE_LIMIT_LOGIN_IP),
            "register": parse(settings.RATE_LIMIT_REGISTER),
            "sync": parse(settings.RATE_LIMIT_SYNC),
        }
        self.redis: RedisLink | None = None
        self.key_prefix = f"{settings.REDIS_KEY_PREFIX}:ratelimit"
        self.script: Any = None
        if self.enabled and redis.client is not None:
            self.redis = redis
            # redis-py's Script reloads itself on NoScriptError, so a restarted Redis (empty script cache) is fine.
            self.script = redis.client.register_script(MOVING_WINDOW_HIT)
        self.strategy = MovingWindowRateLimiter(MemoryStorage())  # without Redis
        self._last_warning = -math.inf
        self._failing = False

    @property
    def uses_redis(self) -> bool:
        return self.redis is not None

    async def _count(self, item: RateLimitItem, policy: Policy, key: str, cost: int) -> tuple[bool, WindowStats]:
        """In process: `limits`' moving window (`cost` hits, all or none, then the window's stats)."""
        allowed = await self.strategy.hit(item, policy, key, cost=cost)
        return allowed, await self.strategy.get_window_stats(item, policy, key)

    async def _count_on_redis(
        self, redis: RedisLink, item: RateLimitItem, policy: Policy, key: str, cost: int, epoch_key: str | None
    ) -> tuple[bool, WindowStats, str | None]:
        """On Redis: the hit and the window's stats in one script call, within one deadline, through the breaker;
        and the epoch at `epoch_key` (created if missing), read in the same call."""
        expiry = item.get_expiry()
        keys = [f"{self.key_prefix}:{item.key_for(policy, key)}"]
        args: list[Any] = [time.time(), item.amount, expiry, cost]
        if epoch_key is not None:
            keys.append(epoch_key)
            args += [new_epoch(), EPOCH_KEY_SECONDS]
        allowed, oldest, count, *epoch = await redis.call(lambda: self.script(keys=keys, args=args))
        read = (epoch[0].decode() if isinstance(epoch[0], bytes) else str(epoch[0])) if epoch else None
        return bool(allowed), WindowStats(float(oldest) + expiry, item.amount - int(count)), read

    async def hit(self, policy: Policy, key: str, cost: int = 1, *, epoch_key: str | None = None) -> Decision | None:
        """Count `cost` requests at once: all of them when the window has room for all, else none (refused).

        On Redis, `epoch_key` is read (or created) in the same call: the decision's `epoch`."""
        if not self.enabled:
            return None
        item = self.items[policy]
        epoch = None
        try:
            if self.redis is None:
                allowed, stats = await self._count(item, policy, key, cost)
            else:
                allowed, stats, epoch = await self._count_on_redis(self.redis, item, policy, key, cost, epoch_key)
        except (RedisError, OSError) as exc:
            self._store_failed(exc)
            return None
        if self._failing:
            self._failing = False
            log.warning("rate-limit store is back; limits enforced again", extra={"event": "ratelimit_store_up"})
        reset_after = max(0, math.ceil(stats.reset_time - time.time()))
        return Decision(policy, allowed, item.amount, max(0, stats.remaining), reset_after, epoch)

    def _store_failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._failing = True
        if now - self._last_warning >= self.warn_interval:
            self._last_warning = now
            log.warning(
                "rate-limit store unavailable; limits are not enforced until it returns",
                extra={"event": "ratelimit_store_down", "error_type": type(exc).__name__},
            )

    async def start(self) -> None:
        """Connect early, so an unreachable Redis is reported at start-up (the API starts anyway)."""
        if await self.health() == "down":
            self._store_failed(ConnectionError("Redis unreachable at start-up"))

    async def health(self) -> Health:
        if self.redis is None:
            return "disabled"
        return "ok" if await self.redis.ping() else "down"


@lru_cache(maxsize=4096)  # the same addresses again and again; parsing one took longer than the lookup
def ip_key(ip: str) -> str:
    """The rate-limit identity of an address: IPv6 clients get a /64, which one host can rotate within."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def masked(identity: str) -> str:
    """What a log line may show of an identity: a network for an address, a masked email, else the id."""
    try:
        network = ipaddress.ip_network(identity, strict=False)
    except ValueError:
        return mask_email(identity) if "@" in identity else identity
    prefix = 24 if network.version == 4 else 48
    return str(network.supernet(new_prefix=prefix)) if network.prefixlen > prefix else str(network)


def _route_template(scope: Scope) -> str:
    return str(getattr(scope.get("route"), "path", "<unmatched>"))


def _record(scope: Scope, decision: Decision) -> None:
    scope.setdefault("state", {}).setdefault(STATE_KEY, []).append(decision)


def _refused(scope: Scope, decision: Decision, shown: str) -> None:
    # A path no route takes has no template: the (bounded) concrete path instead.
    fields: dict[str, Any] = {"policy": decision.policy, "method": scope.get("method"), "identity": shown}
    if "route" in scope:
        fields["route"] = _route_template(scope)
    else:
        fields["path"] = str(scope["path"])[:200]
    security_event("rate_limited", retry_after=decision.retry_after, **fields)
    record_rate_limited(scope, decision.policy)


async def enforce(request: Request, policy: Policy, key: str, *, shown: str | None = None, cost: int = 1) -> None:
    """Count `cost` hits of `policy` for `key`; RateLimited (429), and none counted, when the window lacks room."""
    limiter: RateLimiter | None = getattr(request.app.state, "limiter", None)
    if limiter is None or cost < 1:
        return
    decision = await limiter.hit(policy, key, cost)
    if decision is None:
        return
    _record(request.scope, decision)
    if not decision.allowed:
        _refused(request.scope, decision, shown or masked(key))
        raise RateLimited(decision.retry_after)


async def count_more(request: Request, extra: int) -> None:
    """`extra` more requests of the default per-IP policy, which the middleware counted once for this one (a
    batch of N commands counts N): all of them, or a 429 with none counted."""
    await enforce(request, "default", ip_key(client_ip(request.scope)), cost=extra)


async def by_ip(request: Request) -> str:
    return ip_key(client_ip(request.scope))


async def by_user(principal: PrincipalDep) -> str:
    return principal.user.id


def rate_limit(policy: Policy, key: Callable[..., Any] = by_ip, *, per_route: bool = False) -> Any:
    """A dependency counting `policy` for the identity `key` yields (a dependency itself: by_ip, by_user).

    With per_route, each route template has its own window (never the concrete path)."""

    # A default rather than Annotated: with postponed annotations FastAPI could not see the closure's `key`.
    async def dependency(request: Request, identity: str = Depends(key)) -> None:
        scoped = f"{_route_template(request.scope)}|{identity}" if per_route else identity
        await enforce(request, policy, scoped, shown=masked(identity))

    return Depends(dependency)


async def limit_login(request: Request, email: str) -> None:
    """Login attempts: a looser window per client IP, a strict one per email (whatever the IP)."""
    email = canonical_email(email)  # every typing of one address shares its lockout
    try:
        await enforce(request, "login_ip", ip_key(client_ip(request.scope)))
        # Hashed: no email addresses in Redis, and a bounded key however long the form field.
        digest = hashlib.sha256(email.encode()).hexdigest()[:32]
        await enforce(request, "login", digest, shown=mask_email(email))
    except RateLimited:
        security_event("login_lockout", email=mask_email(email), client=masked(ip_key(client_ip(request.scope))))
        raise


def is_exempt(path: str) -> bool:
    return path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer":
                return None
            return token.strip() or None
    return None


class RateLimitMiddleware:
    """The default per-IP policy on every request but health and docs, and `RateLimit-*` on limited responses.

    With `live` reading epochs, the same script call reads the login-session epoch of the user an own bearer token
    claims, for `deps.get_principal` (scope state `EPOCH_STATE`: (claimed user id, epoch)); backend/live_sessions.py.
    """

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter, live: LiveSessions | None = None) -> None:
        self.app = app
        self.limiter = limiter
        self.live = live if live is not None and live.reads_epochs and limiter.uses_redis else None

    def _claimed_subject(self, scope: Scope) -> str | None:
        token = _bearer_token(scope) if self.live is not None else None
        return claimed_subject(token) if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limiter.enabled:
            await self.app(scope, receive, send)
            return
        if not is_exempt(scope["path"]):
            key = ip_key(client_ip(scope))
            subject = self._claimed_subject(scope)
            epoch_key = self.live.epoch_key(subject) if self.live is not None and subject is not None else None
            decision = await self.limiter.hit("default", key, epoch_key=epoch_key)
            if decision is not None:
                _record(scope, decision)
                if decision.epoch is not None:
                    scope.setdefault("state", {})[EPOCH_STATE] = (subject, decision.epoch)
                if not decision.allowed:
                    # Refused before routing: the route it was aimed at all the same, for the logs and metrics.
                    if (route := route_of(scope)) is not None:
                        scope["route"] = route
                    _refused(scope, decision, masked(key))
                    response = render_error(RateLimited(decision.retry_after))
                    response.headers.update(decision.headers())
                    await response(scope, receive, send)
                    return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                decisions: list[Decision] = scope.get("state", {}).get(STATE_KEY, [])
                if decisions:
                    # Several policies may apply: report the one closest to refusing.
                    tightest = min(decisions, key=lambda d: (d.allowed, d.remaining))
                    MutableHeaders(scope=message).update(tightest.headers())
            await send(message)

        await self.app(scope, receive, send_wrapper)
