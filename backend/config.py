"""Settings: one object, read from the environment (and an optional `.env`), validated at start-up."""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

VERSION = "1.0.0"

RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)\s*$")
CommaList = Annotated[list[str], NoDecode]
# The schemes backend.db understands (it rewrites them to aiosqlite / psycopg 3).
SQLITE_SCHEMES = frozenset({"sqlite", "sqlite+aiosqlite"})
PG_SCHEMES = frozenset(
    {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg_async", "postgresql+asyncpg"}
)
REDIS_SCHEMES = frozenset({"redis", "rediss"})
DATABASE_URL_FORMS = "sqlite:///path/to/file.db or postgresql://user:password@host/db"  # pragma: allowlist secret
DEFAULT_SYNC_STAGES = (
    "backend.sync.github:repository",
    "backend.sync.github:release",
    "backend.sync.github:commit",
    "backend.sync.github:summary",
)


class ConfigError(ValueError):
    """A setting is missing or wrong: the message says which and why."""


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    ENVIRONMENT: Literal["development", "test", "production"] = "development"
    DATA_DIR: Path = Path("data")
    DATABASE_URL: str = ""
    # Migrations (and their advisory lock) over a direct connection when DATABASE_URL is a transaction-mode pooler.
    MIGRATIONS_DATABASE_URL: str | None = None
    DB_POOL_SIZE: int = Field(default=10, ge=1, le=200)
    DB_MAX_OVERFLOW: int = Field(default=10, ge=0, le=200)
    DB_POOL_TIMEOUT: float = Field(default=5.0, gt=0)
    DB_CONNECT_TIMEOUT: float = Field(default=5.0, gt=0)
    # PostgreSQL: the longest one round trip to the server may take (a hung server answers nothing: the
    # connection is then dropped and the request answers 503); the server ends a slow statement 0.5 s earlier.
    DB_STATEMENT_TIMEOUT: float = Field(default=5.0, ge=0.5, le=600)
    DB_POOL_RECYCLE: int = Field(default=1800, ge=60)
    AUTO_MIGRATE: bool = True
    # How long start-up keeps trying an unreachable database (a Neon database scaled to zero
    # wakes in seconds) before exiting with code 3; 0 tries once.
    DB_STARTUP_RETRY_SECONDS: float = Field(default=10.0, ge=0, le=600)

    REDIS_URL: str | None = None
    REDIS_KEY_PREFIX: str = "taskdeck"
    # A hung Redis costs a request at most this (each Redis call: connect, send and read), and once
    # REDIS_BREAKER_FAILURES calls in a row failed, nothing: no call for REDIS_BREAKER_OPEN_SECONDS, then one probe.
    REDIS_TIMEOUT_SECONDS: float = Field(default=0.2, gt=0, le=10)
    REDIS_BREAKER_FAILURES: int = Field(default=3, ge=1, le=100)
    REDIS_BREAKER_OPEN_SECONDS: float = Field(default=30.0, gt=0, le=3600)
    # Several worker processes without REDIS_URL split tickets, event streams and rate limits per
    # process: `serve --workers N` refuses to start then, unless this says it is wanted.
    ALLOW_LOCAL_STATE: bool = False
    # `serve` listens on this port when --port is not given (platforms such as Render or Cloud Run set it).
    PORT: int = Field(default=8000, ge=1, le=65535)
    # Seconds one /health dependency check is reused within a process (0: check on every call).
    HEALTH_CACHE_SECONDS: float = Field(default=1.0, ge=0, le=10)

    JWT_SECRET: str | None = None
    ACCESS_TOKEN_EXPIRE_MINUTES: int = Field(default=15, ge=1, le=30)
    REFRESH_TOKEN_EXPIRE_DAYS: int = Field(default=14, ge=1, le=365)
    JWT_LEEWAY_SECONDS: int = Field(default=10, ge=0, le=120)
    # How long an instance may answer "this login session is alive" from its memory instead of the database
    # (backend/live_sessions.py). Changes made through the API (logout, refresh-token reuse, erasure) are seen at
    # once whatever this is; changes made in the database by hand within this. 0: ask the database every time.
    SESSION_CACHE_SECONDS: float = Field(default=5.0, ge=0, le=60)
    BCRYPT_ROUNDS: int = Field(default=12, ge=4, le=16)

    CORS_ORIGINS: CommaList = ["http://localhost:3000"]
    TRUSTED_PROXIES: CommaList = []
    HSTS_ENABLED: bool = False
    MAX_BODY_BYTES: int = Field(default=1024 * 1024, ge=1024)

    BETTER_AUTH_URL: str | None = None
    BETTER_AUTH_JWKS_URL: str | None = None
    BETTER_AUTH_SECRET: str | None = None
    BETTER_AUTH_ISSUER: str | None = None
    BETTER_AUTH_AUDIENCE: str | None = None

    GITHUB_API_URL: str = "https://api.github.com"
    GITHUB_TOKEN: str | None = None
    GITHUB_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)
    # Sync-run stages in order, as `module:function` (or `module.function`); see specs/api/sync_runs.md.
    # Only split here: the sync runner imports and checks them when the app is built (start-up).
    SYNC_STAGES: CommaList = list(DEFAULT_SYNC_STAGES)
    SYNC_STAGE_TIMEOUT_SECONDS: float = Field(default=60.0, gt=0)  # a stuck stage must not hold the project
    # A running sync run belongs to the instance holding its lease, renewed every third of this; once it
    # expired (the instance died), another instance takes the run over (specs/api/sync_runs.md).
    SYNC_LEASE_SECONDS: float = Field(default=30.0, ge=1, le=3600)

    RATE_LIMIT_ENABLED: bool = True
    RATE_LIMIT_DEFAULT: str = "100/minute"
    RATE_LIMIT_LOGIN: str = "10/hour"
    RATE_LIMIT_LOGIN_IP: str = "50/hour"
    RATE_LIMIT_REGISTER: str = "20/hour"
    RATE_LIMIT_SYNC: str = "30/hour"

    METRICS_TOKEN: str | None = None
    IDEMPOTENCY_WAIT_SECONDS: float = Field(default=10.0, ge=0, le=60)
    EVENTS_HEARTBEAT_SECONDS: float = Field(default=15.0, gt=0, le=300)
    EVENTS_REPLAY_SECONDS: int = Field(default=300, ge=1, le=86_400)
    EVENTS_STREAM_MAX_SECONDS: float = Field(default=3600.0, gt=0, le=86_400)
    EVENTS_MAX_STREAMS_PER_USER: int = Field(default=5, ge=1, le=1000)
    EVENTS_MAX_STREAMS_PER_IP: int = Field(default=20, ge=1, le=100_000)
    # How often an open stream re-checks its login session in the database (the safety net behind the
    # "session ended" notice): a stream of an ended session closes within this (the contract says 5 s).
    EVENTS_SESSION_CHECK_SECONDS: float = Field(default=3.0, gt=0, le=60)
    # The change feed keeps tombstones (deleted tasks, unpinned projects) this long; an older cursor is
    # 410 CURSOR_EXPIRED and the client starts a full sync (specs/api/changes.md).
    CHANGES_RETENTION_DAYS: int = Field(default=30, ge=1, le=3650)

    LOG_LEVEL: Literal["debug", "info", "warning", "error"] = "info"
    LOG_FORMAT: Literal["json", "console"] = "json"

    @field_validator("CORS_ORIGINS", "TRUSTED_PROXIES", "SYNC_STAGES", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("TRUSTED_PROXIES")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
        return value

    @field_validator("DATABASE_URL")
    @classmethod
    def _database_url(cls, value: str) -> str:
        value = value.strip()
        if value:
            _check_url(value, SQLITE_SCHEMES | PG_SCHEMES, DATABASE_URL_FORMS)
        return value

    @field_validator("REDIS_URL")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        if not value:
            return None
        _check_url(value, REDIS_SCHEMES, "redis://host:6379/0 or rediss://...")
        path = urlsplit(value).path.strip("/")
        if path and not path.isdigit():
            raise ValueError("the database after the host must be a number (redis://host:6379/0)")
        return value

    @field_validator("LOG_LEVEL", "LOG_FORMAT", "ENVIRONMENT", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator(
        "RATE_LIMIT_DEFAULT",
        "RATE_LIMIT_LOGIN",
        "RATE_LIMIT_LOGIN_IP",
        "RATE_LIMIT_REGISTER",
        "RATE_LIMIT_SYNC",
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        if not RATE_RE.match(value):
            raise ValueError("must look like N/second, N/minute, N/hour or N/day")
        return value.strip()

    @field_validator("CORS_ORIGINS")
    @classmethod
    def _no_wildcard(cls, value: list[str]) -> list[str]:
        if "*" in value:
            raise ValueError("'*' is not allowed: credentials are allowed, so list origins explicitly")
        return value

    @model_validator(mode="after")
    def _production_rules(self) -> Settings:
        if self.ENVIRONMENT == "production":
            if not self.JWT_SECRET:
                raise ValueError("JWT_SECRET is required when ENVIRONMENT=production")
            if self.BCRYPT_ROUNDS < 12:
                raise ValueError("BCRYPT_ROUNDS must be at least 12 when ENVIRONMENT=production")
        if self.JWT_SECRET is not None and len(self.JWT_SECRET.encode()) < 32:
            raise ValueError("JWT_SECRET must be at least 32 bytes")
        if self.BETTER_AUTH_SECRET is not None and len(self.BETTER_AUTH_SECRET.encode()) < 32:
            raise ValueError("BETTER_AUTH_SECRET must be at least 32 bytes")
        if (self.BETTER_AUTH_JWKS_URL or self.BETTER_AUTH_SECRET) and not (
            (self.BETTER_AUTH_ISSUER or self.BETTER_AUTH_URL) and (self.BETTER_AUTH_AUDIENCE or self.BETTER_AUTH_URL)
        ):
            raise ValueError("Better-Auth tokens need an issuer and an audience: set BETTER_AUTH_URL")
        return self

    @cached_property
    def database_url(self) -> str:
        return self.DATABASE_URL or f"sqlite:///{(self.DATA_DIR / 'taskdeck.db').as_posix()}"

    @cached_property
    def migrations_database_url(self) -> str:
        """Where migrations run: MIGRATIONS_DATABASE_URL (e.g. Neon's direct host), else DATABASE_URL."""
        return self.MIGRATIONS_DATABASE_URL or self.database_url

    @cached_property
    def jwt_secret(self) -> str:
        """The configured key, or (outside production) one generated once and kept in DATA_DIR."""
        if self.JWT_SECRET:
            return self.JWT_SECRET
        path = self.DATA_DIR / "jwt_secret"
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.touch(mode=0o600)
        path.write_text(key)
        return key

    @cached_property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """TRUSTED_PROXIES parsed once: the peers whose X-Forwarded-For is believed."""
        return tuple(ipaddress.ip_network(item, strict=False) for item in self.TRUSTED_PROXIES)

    @cached_property
    def better_auth_jwks_url(self) -> str | None:
        if self.BETTER_AUTH_JWKS_URL:
            return self.BETTER_AUTH_JWKS_URL
        if self.BETTER_AUTH_URL:
            return self.BETTER_AUTH_URL.rstrip("/") + "/api/auth/jwks"
        return None

    @cached_property
    def better_auth_issuer(self) -> str | None:
        return self.BETTER_AUTH_ISSUER or self.BETTER_AUTH_URL

    @cached_property
    def better_auth_audience(self) -> str | None:
        return self.BETTER_AUTH_AUDIENCE or self.BETTER_AUTH_URL


def _check_url(url: str, schemes: frozenset[str], example: str) -> None:
    """The URL's shape only (never echoed: it may hold a password); reachability is checked at start-up."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in schemes:
        raise ValueError(f"not a supported URL: use {example}")
    if scheme in SQLITE_SCHEMES:
        return
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    try:
        urlsplit(url).port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError(
            "the port is not a number: percent-encode '@', '/' and ':' in the user name and password (@ is %40)"
        ) from None
    if netloc.count("@") > 1:
        raise ValueError("more than one '@' before the host: percent-encode '@' in the password as %40")


def parse_rate(value: str) -> tuple[int, int]:
    """'10/minute' -> (10, 60): the allowance and its window in seconds."""
    match = RATE_RE.match(value)
    if not match:
        raise ConfigError(f"bad rate {value!r}")
    seconds = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}[match.group(2)]
    return int(match.group(1)), seconds


def readable_message(error: Mapping[str, object]) -> str:
    """One entry of a Pydantic ValidationError as a person reads it: a ValueError raised in a validator is
    its own text, without the `Value error, ` Pydantic puts before it. Used for the API's 422 and here."""
    message = str(error.get("msg") or "invalid")
    return message.removeprefix("Value error, ") if error.get("type") == "value_error" else message


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning pydantic's report into one readable ConfigError."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {readable_message(err)}" for err in exc.errors()
        )
        raise ConfigError(f"Invalid configuration: {problems}") from None
