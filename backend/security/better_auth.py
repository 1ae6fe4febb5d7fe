"""Better-Auth tokens: verified against the auth server's JWKS (or a shared HS256 secret), then mapped to a user.

One allow-list per key source, so no token can pick how it is checked: a JWKS key verifies only
the asymmetric algorithm it is published for, the shared secret only HS256, and `none` nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import jwt
from jwt import PyJWK, PyJWTError

from backend.config import ConfigError, Settings
from backend.errors import InvalidToken, ServiceUnavailable, TokenExpired, Unauthorized
from backend.models.common import USER_ID_PATTERN
from backend.models.emails import MAX_EMAIL_LENGTH, canonical_email

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("taskdeck.better_auth")

ASYMMETRIC_ALGORITHMS = frozenset({"EdDSA", "ES256", "ES512", "RS256", "PS256"})
SHARED_SECRET_ALGORITHMS = frozenset({"HS256"})
RESERVED_USER_IDS = frozenset({"auth", "tasks", "projects", "me", "health"})
REQUIRED_CLAIMS = ["exp", "sub", "iss", "aud"]
MAX_JWKS_BYTES = 256 * 1024
MAX_NAME_LENGTH = 255
_USER_ID = re.compile(USER_ID_PATTERN)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
KEYS_UNAVAILABLE = "The sign-in service's keys are unavailable, try again shortly"


def better_auth_enabled(settings: Settings) -> bool:
    return bool(settings.better_auth_jwks_url or settings.BETTER_AUTH_SECRET)


class JwksUnavailable(Exception):
    """The JWKS could not be fetched or held no usable key. The message names the cause, never a key."""


@dataclass(frozen=True)
class SigningKey:
    key: Any  # a `cryptography` public key
    algorithms: frozenset[str]


@dataclass(frozen=True)
class ExternalIdentity:
    user_id: str
    email: str
    full_name: str | None


def _key_algorithms(jwk: dict[str, Any]) -> frozenset[str]:
    """The algorithms one JWK may verify: its `alg`, or (when absent) what its type and curve imply."""
    alg = jwk.get("alg")
    if alg is not None:
        return frozenset({alg}) & ASYMMETRIC_ALGORITHMS
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "OKP" and crv == "Ed25519":
        return frozenset({"EdDSA"})
    if kty == "EC":
        return frozenset({"ES256"} if crv == "P-256" else {"ES512"} if crv == "P-521" else set())
    if kty == "RSA":
        return frozenset({"RS256", "PS256"})
    return frozenset()


def parse_jwks(document: object) -> dict[str, SigningKey]:
    """Usable signature keys by `kid`. Symmetric (`oct`), encryption-only and malformed keys are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksUnavailable("the JWKS is not a JSON object with a 'keys' list")
    keys: dict[str, SigningKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or jwk.get("use", "sig") != "sig":
            continue
        algorithms = _key_algorithms(jwk)
        if not algorithms:
            continue
        try:
            parsed = PyJWK(jwk, algorithm=min(algorithms))
        except (PyJWTError, ValueError, TypeError):
            continue
        keys[jwk["kid"]] = SigningKey(parsed.key, algorithms)
    if not keys:
        raise JwksUnavailable("the JWKS holds no usable signature key")
    return keys


def _slash_variants(url: str) -> list[str]:
    """Better-Auth puts its configured base URL in `iss`/`aud` verbatim: a trailing slash is not significant."""
    bare = url.rstrip("/")
    return [bare, bare + "/"]


def _invalid(message: str = "The access token is invalid") -> Unauthorized:
    return InvalidToken(message)


def identity_from_claims(claims: dict[str, Any]) -> ExternalIdentity:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not _USER_ID.match(sub) or sub.lower() in RESERVED_USER_IDS:
        raise _invalid("The token's subject is not a valid user id")
    email = claims.get("email")
    if not isinstance(email, str) or len(email.strip()) > MAX_EMAIL_LENGTH or not _EMAIL.match(email.strip()):
        raise _invalid("The token carries no usable email claim")
    email = canonical_email(email)
    if len(email) > MAX_EMAIL_LENGTH:  # a compatibility form can expand (NFKC)
        raise _invalid("The token carries no usable email claim")
    name = claims.get("name")
    full_name = (name.strip()[:MAX_NAME_LENGTH] or None) if isinstance(name, str) else None
    return ExternalIdentity(user_id=sub, email=email, full_name=full_name)


class ExternalVerifier(Protocol):
    """Turns a token that is not ours into a verified identity (or raises Unauthorized / ServiceUnavailable)."""

    async def verify(self, token: str) -> ExternalIdentity: ...


class _NoExternalVerifier:
    async def verify(self, token: str) -> ExternalIdentity:
        raise InvalidToken()


# `app.state.external_verifier` when Better-Auth is not configured: a token that is not ours is invalid.
no_external_verifier: ExternalVerifier = _NoExternalVerifier()


class BetterAuthVerifier:
    """`app.state.external_verifier` when Better-Auth is configured: token -> verified claims -> identity.

    The JWKS is fetched lazily and cached. An unknown `kid` triggers a refetch at most once per
    `refetch_interval` seconds (a failed fetch is retried after `retry_interval`), so a flood of
    made-up kids cannot hammer the auth server; concurrent refetches collapse into one.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        refetch_interval: float = 30.0,
        retry_interval: float = 5.0,
        max_age: float = 3600.0,
        timeout: float = 5.0,
    ) -> None:
        issuer, audience = settings.better_auth_issuer, settings.better_auth_audience
        if not issuer or not audience:
            raise ConfigError("Better-Auth tokens need an issuer and an audience: set BETTER_AUTH_URL")
        self._jwks_url = settings.better_auth_jwks_url
        self._secret = settings.BETTER_AUTH_SECRET
        self._issuers = _slash_variants(issuer)
        self._audiences = _slash_variants(audience)
        self._leeway = settings.JWT_LEEWAY_SECONDS
        self._refetch_interval = refetch_interval
        self._retry_interval = retry_interval
        self._max_age = max_age
        import httpx  # only with Better-Auth on: a served process without it never carries it (specs/performance.md)

        self._http: httpx.AsyncClient = httpx.AsyncClient(
            timeout=timeout, follow_redirects=True, max_redirects=3, headers={"Accept": "application/json"}
        )
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._last_failed = False
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def verify(self, token: str) -> ExternalIdentity:
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError:
            raise _invalid() from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise _invalid()
        key: Any
        if alg in SHARED_SECRET_ALGORITHMS and self._secret:
            key = self._secret
        elif alg in ASYMMETRIC_ALGORITHMS and self._jwks_url:
            key = await self._public_key(header.get("kid"), alg)
        else:
            raise _invalid()
        return identity_from_claims(self._decode(token, key, alg))

    def _decode(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=self._issuers,
                audience=self._audiences,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired() from None
        except (PyJWTError, ValueError):
            raise _invalid() from None
        return claims

    async def _public_key(self, kid: object, alg: str) -> Any:
        if not isinstance(kid, str) or not kid:
            raise _invalid()
        key = self._keys.get(kid)
        if key is None or self._stale():
            await self._refresh(kid)
            key = self._keys.get(kid)
        if key is None or alg not in key.algorithms:
            raise _invalid()
        return key.key

    def _stale(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at > self._max_age

    async def _refresh(self, kid: str) -> None:
        """Refetch the JWKS unless that happened recently. 503 only when the token's key cannot be known."""
        async with self._lock:
            now = time.monotonic()
            wait = self._retry_interval if self._last_failed else self._refetch_interval
            if self._attempted_at is not None and now - self._attempted_at < wait:
                if self._last_failed and kid not in self._keys:
                    raise ServiceUnavailable(KEYS_UNAVAILABLE)
                return
            self._attempted_at = now
            try:
                self._keys = await self._fetch()
            except JwksUnavailable as exc:
                self._last_failed = True
                log.warning("JWKS fetch failed", extra={"event": "jwks_unavailable", "reason": str(exc)})
                if kid not in self._keys:
                    raise ServiceUnavailable(KEYS_UNAVAILABLE) from None
                return  # keep serving the keys we have
            self._last_failed = False
            self._fetched_at = now

    async def _fetch(self) -> dict[str, SigningKey]:
        import httpx  # loaded by then: self._http is one of its clients

        assert self._jwks_url is not None
        try:
            async with self._http.stream("GET", self._jwks_url) as response:
                if response.status_code != 200:
                    raise JwksUnavailable(f"the JWKS endpoint answered {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise JwksUnavailable("the JWKS is larger than allowed")
        except httpx.HTTPError as exc:
            raise JwksUnavailable(f"the JWKS endpoint is unreachable ({type(exc).__name__})") from None
        try:
            document = json.loads(body)
        except ValueError:
            raise JwksUnavailable("the JWKS is not valid JSON") from None
        return parse_jwks(document)
