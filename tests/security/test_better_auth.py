"""Better-Auth tokens against a real JWKS server on 127.0.0.1, end to end through the API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import APIRouter, FastAPI
from sqlmodel import select

from backend.config import ConfigError
from backend.deps import OwnerDep
from backend.models.emails import canonical_email
from backend.models.user import User
from backend.security.better_auth import BetterAuthVerifier, no_external_verifier
from tests.conftest import PASSWORD, assert_error, make_settings
from tests.security.better_auth_kit import (
    ALGORITHMS,
    JwksServer,
    Key,
    better_auth_id,
    claims,
    free_port,
    hs256_token,
    make_key,
    rsa_pem_as_hmac_secret,
    segment,
    sign,
)

SECRET = "a-shared-better-auth-secret-of-at-least-32-bytes"

TokenFactory = Callable[..., str]


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {alg: make_key(alg) for alg in ALGORITHMS}


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


@pytest.fixture
def jwks(jwks_server: JwksServer, keys: dict[str, Key]) -> JwksServer:
    jwks_server.reset(*keys.values())
    return jwks_server


@pytest.fixture
def settings_overrides(jwks: JwksServer) -> dict[str, Any]:
    return {"BETTER_AUTH_URL": jwks.url}


@pytest.fixture
def issuer(app: FastAPI) -> str:
    value: str = app.state.settings.better_auth_issuer
    return value


@pytest.fixture
def token(issuer: str, keys: dict[str, Key]) -> TokenFactory:
    """`token(alg="EdDSA", key=None, **claim_overrides)`: a token as Better-Auth would sign it."""

    def make(alg: str = "EdDSA", key: Key | None = None, **overrides: Any) -> str:
        return sign(key or keys[alg], claims(issuer, **overrides))

    return make


@pytest.fixture
async def swap_verifier(app: FastAPI) -> AsyncIterator[Callable[..., BetterAuthVerifier]]:
    """Replace the app's verifier with one tuned for the test (short intervals)."""
    made: list[BetterAuthVerifier] = []

    def swap(**kwargs: Any) -> BetterAuthVerifier:
        verifier = BetterAuthVerifier(app.state.settings, **kwargs)
        made.append(verifier)
        app.state.external_verifier = verifier
        return verifier

    yield swap
    for verifier in made:
        await verifier.aclose()


probe = APIRouter()


@probe.get("/api/{user_id}/probe")
async def probe_owner(owner: OwnerDep) -> dict[str, str]:
    return {"owner": owner}


@pytest.fixture
def with_probe(app: FastAPI) -> None:
    """A test-only owned route: the ownership check every /api/{user_id}/... route uses."""
    app.include_router(probe)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def users_with_id(app: FastAPI, user_id: str) -> list[User]:
    async with app.state.sessionmaker() as session:
        return list((await session.exec(select(User).where(User.id == user_id))).all())


class TestAcceptedTokens:
    @pytest.mark.parametrize("alg", ALGORITHMS)
    async def test_each_algorithm_is_accepted(self, client: httpx.AsyncClient, token: TokenFactory, alg: str) -> None:
        sub = better_auth_id()
        response = await client.get("/api/auth/me", headers=bearer(token(alg, sub=sub)))
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert data["user_id"] == sub
        assert data["email"] == f"{sub.lower()}@example.com"
        assert data["full_name"] == "Ada Lovelace"
        assert data["auth_provider"] == "better-auth"

    @pytest.mark.parametrize("alg", ALGORITHMS)
    async def test_keys_without_alg_are_inferred_from_kty_and_crv(
        self, client: httpx.AsyncClient, jwks: JwksServer, issuer: str, alg: str
    ) -> None:
        key = make_key(alg, publish_alg=False)
        jwks.publish(key)
        assert "alg" not in key.jwk
        response = await client.get("/api/auth/me", headers=bearer(sign(key, claims(issuer))))
        assert response.status_code == 200, response.text

    async def test_trailing_slash_on_issuer_and_audience_is_not_significant(
        self, client: httpx.AsyncClient, token: TokenFactory, issuer: str
    ) -> None:
        response = await client.get("/api/auth/me", headers=bearer(token(iss=issuer + "/", aud=issuer + "/")))
        assert response.status_code == 200, response.text

    async def test_audience_may_be_a_list(self, client: httpx.AsyncClient, token: TokenFactory, issuer: str) -> None:
        response = await client.get("/api/auth/me", headers=bearer(token(aud=["other-api", issuer])))
        assert response.status_code == 200, response.text

    async def test_extra_claims_and_missing_image_are_fine(
        self, client: httpx.AsyncClient, token: TokenFactory
    ) -> None:
        response = await client.get("/api/auth/me", headers=bearer(token(image=..., role="admin", iat=...)))
        assert response.status_code == 200, response.text

    async def test_small_clock_skew_is_tolerated(self, client: httpx.AsyncClient, token: TokenFactory) -> None:
        response = await client.get("/api/auth/me", headers=bearer(token(lifetime=-3)))
        assert response.status_code == 200, response.text


@pytest.mark.usefixtures("with_probe")
class TestOwnership:
    async def test_own_path_is_allowed(self, client: httpx.AsyncClient, token: TokenFactory) -> None:
        sub = better_auth_id()
        response = await client.get(f"/api/{sub}/probe", headers=bearer(token(sub=sub)))
        assert response.status_code == 200, response.text
        assert response.json() == {"owner": sub}

    async def test_another_users_path_is_forbidden(
        self, client: httpx.AsyncClient, token: TokenFactory, other_user: Any
    ) -> None:
        for path_user in (other_user.id, better_auth_id()):
            response = await client.get(f"/api/{path_user}/probe", headers=bearer(token()))
            assert_error(response, 403, "FORBIDDEN")


class TestRejectedTokens:
    @pytest.mark.parametrize(
        "overrides",
        [
            pytest.param({"iss": "https://evil.example.com"}, id="wrong-issuer"),
            pytest.param({"aud": "https://evil.example.com"}, id="wrong-audience"),
            pytest.param({"iss": ...}, id="no-issuer"),
            pytest.param({"aud": ...}, id="no-audience"),
            pytest.param({"exp": ...}, id="no-exp"),
            pytest.param({"sub": ...}, id="no-sub"),
            pytest.param({"email": ...}, id="no-email"),
            pytest.param({"email": "not-an-email"}, id="bad-email"),
            pytest.param({"sub": "me"}, id="reserved-sub"),
            pytest.param({"sub": "Tasks"}, id="reserved-sub-any-case"),
            pytest.param({"sub": "has space"}, id="sub-bad-chars"),
            pytest.param({"sub": "x" * 65}, id="sub-too-long"),
            pytest.param({"sub": ""}, id="sub-empty"),
            pytest.param({"sub": 42}, id="sub-not-a-string"),
            pytest.param({"nbf": 4102444800}, id="not-yet-valid"),
        ],
    )
    async def test_invalid_claims(
        self, client: httpx.AsyncClient, token: TokenFactory, overrides: dict[str, Any]
    ) -> None:
        response = await client.get("/api/auth/me", headers=bearer(token(**overrides)))
        assert_error(response, 401, "INVALID_TOKEN")
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_expired(self, client: httpx.AsyncClient, token: TokenFactory) -> None:
        response = await client.get("/api/auth/me", headers=bearer(token(lifetime=-60)))
        assert_error(response, 401, "TOKEN_EXPIRED")

    async def test_tampered_payload(self, client: httpx.AsyncClient, token: TokenFactory, issuer: str) -> None:
        header, _, signature = token().split(".")
        forged = f"{header}.{segment(claims(issuer))}.{signature}"
        response = await client.get("/api/auth/me", headers=bearer(forged))
        assert_error(response, 401, "INVALID_TOKEN")

    @pytest.mark.parametrize("alg", ALGORITHMS)
    async def test_other_key_with_the_same_kid(
        self, client: httpx.AsyncClient, keys: dict[str, Key], issuer: str, alg: str
    ) -> None:
        impostor = make_key(alg, kid=keys[alg].kid)
        response = await client.get("/api/auth/me", headers=bearer(sign(impostor, claims(issuer))))
        assert_error(response, 401, "INVALID_TOKEN")

    async def test_alg_none(self, client: httpx.AsyncClient, keys: dict[str, Key], issuer: str) -> None:
        unsigned = jwt.encode(claims(issuer), None, algorithm="none", headers={"kid": keys["EdDSA"].kid})
        response = await client.get("/api/auth/me", headers=bearer(unsigned))
        assert_error(response, 401, "INVALID_TOKEN")

    async def test_hs256_signed_with_the_rsa_public_key(
        self, client: httpx.AsyncClient, keys: dict[str, Key], issuer: str
    ) -> None:
        response = await client.get("/api/auth/me", headers=bearer(rsa_pem_as_hmac_secret(keys["RS256"], issuer)))
        assert_error(response, 401, "INVALID_TOKEN")

    async def test_algorithm_other_than_the_keys(
        self, client: httpx.AsyncClient, keys: dict[str, Key], issuer: str
    ) -> None:
        """The RSA key is published for RS256: a PS256 signature by the same key is refused."""
        as_ps256 = Key("PS256", keys["RS256"].kid, keys["RS256"].private, keys["RS256"].jwk)
        response = await client.get("/api/auth/me", headers=bearer(sign(as_ps256, claims(issuer))))
        assert_error(response, 401, "INVALID_TOKEN")

    async def test_missing_kid(self, client: httpx.AsyncClient, keys: dict[str, Key], issuer: str) -> None:
        no_kid = jwt.encode(claims(issuer), keys["EdDSA"].private, algorithm="EdDSA")
        response = await client.get("/api/auth/me", headers=bearer(no_kid))
        assert_error(response, 401, "INVALID_TOKEN")

    async def test_encryption_keys_are_not_used_for_signatures(
        self, client: httpx.AsyncClient, jwks: JwksServer, issuer: str
    ) -> None:
        key = make_key("ES256")
        key.jwk["use"] = "enc"
        jwks.publish(key, make_key("EdDSA"))
        response = await client.get("/api/auth/me", headers=bearer(sign(key, claims(issuer))))
        assert_error(response, 401, "INVALID_TOKEN")

    @pytest.mark.parametrize("garbage", ["abc", "a.b.c", "e30.e30.", "x" * 5000])
    async def test_garbage(self, client: httpx.AsyncClient, garbage: str) -> None:
        response = await client.get("/api/auth/me", headers=bearer(garbage))
        assert_error(response, 401, "INVALID_TOKEN")

    async def test_hs256_is_refused_without_a_shared_secret(
        self, client: httpx.AsyncClient, issuer: str, keys: dict[str, Key]
    ) -> None:
        forged = hs256_token(SECRET.encode(), claims(issuer), keys["EdDSA"].kid)
        response = await client.get("/api/auth/me", headers=bearer(forged))
        assert_error(response, 401, "INVALID_TOKEN")


class TestJwksFetching:
    @pytest.mark.committing  # concurrent requests: one connection cannot serve them
    async def test_concurrent_first_requests_fetch_the_jwks_once(
        self, client: httpx.AsyncClient, jwks: JwksServer, token: TokenFactory
    ) -> None:
        responses = await asyncio.gather(*(client.get("/api/auth/me", headers=bearer(token())) for _ in range(10)))
        assert [r.status_code for r in responses] == [200] * 10
        assert jwks.hits == 1

    async def test_known_kids_are_served_from_the_cache(
        self, client: httpx.AsyncClient, jwks: JwksServer, token: TokenFactory
    ) -> None:
        for alg in ALGORITHMS:
            assert (await client.get("/api/auth/me", headers=bearer(token(alg)))).status_code == 200
        assert jwks.hits == 1

    async def test_unknown_kid_after_rotation_is_accepted_after_one_refetch(
        self, client: httpx.AsyncClient, jwks: JwksServer, swap_verifier: Any, issuer: str, token: TokenFactory
    ) -> None:
        swap_verifier(refetch_interval=0.2)
        assert (await client.get("/api/auth/me", headers=bearer(token()))).status_code == 200
        assert jwks.hits == 1
        rotated = make_key("EdDSA")
        jwks.publish(rotated)
        await asyncio.sleep(0.25)
        for _ in range(3):
            response = await client.get("/api/auth/me", headers=bearer(sign(rotated, claims(issuer))))
            assert response.status_code == 200, response.text
        assert jwks.hits == 2

    @pytest.mark.committing  # concurrent requests: one connection cannot serve them
    async def test_a_flood_of_random_kids_does_not_hammer_the_jwks(
        self, client: httpx.AsyncClient, jwks: JwksServer, issuer: str, token: TokenFactory
    ) -> None:
        assert (await client.get("/api/auth/me", headers=bearer(token()))).status_code == 200
        flood = [sign(make_key("EdDSA"), claims(issuer)) for _ in range(30)]
        responses = await asyncio.gather(*(client.get("/api/auth/me", headers=bearer(t)) for t in flood))
        for response in responses:
            assert_error(response, 401, "INVALID_TOKEN")
        assert jwks.hits == 1
        # A genuinely new key inside the interval waits for it too: the price of the throttle.
        rotated = make_key("EdDSA")
        jwks.publish(rotated)
        assert_error(
            await client.get("/api/auth/me", headers=bearer(sign(rotated, claims(issuer)))), 401, "INVALID_TOKEN"
        )
        assert jwks.hits == 1

    async def test_stale_keys_are_refreshed_and_removed_keys_stop_working(
        self, client: httpx.AsyncClient, jwks: JwksServer, swap_verifier: Any, keys: dict[str, Key], token: TokenFactory
    ) -> None:
        swap_verifier(refetch_interval=0.05, max_age=0.2)
        assert (await client.get("/api/auth/me", headers=bearer(token("ES256")))).status_code == 200
        jwks.publish(keys["EdDSA"])
        await asyncio.sleep(0.3)
        assert_error(await client.get("/api/auth/me", headers=bearer(token("ES256"))), 401, "INVALID_TOKEN")
        assert jwks.hits == 2

    async def test_stale_keys_keep_working_while_the_jwks_is_down(
        self, client: httpx.AsyncClient, jwks: JwksServer, swap_verifier: Any, token: TokenFactory
    ) -> None:
        swap_verifier(refetch_interval=0.05, max_age=0.2)
        assert (await client.get("/api/auth/me", headers=bearer(token()))).status_code == 200
        jwks.serve(500, b"{}")
        await asyncio.sleep(0.3)
        assert (await client.get("/api/auth/me", headers=bearer(token()))).status_code == 200
        assert jwks.hits == 2


class TestJwksUnavailable:
    @pytest.mark.parametrize(
        ("status", "body"),
        [
            pytest.param(500, b'{"error": "boom"}', id="5xx"),
            pytest.param(404, b"{}", id="not-found"),
            pytest.param(200, b"<html>not json</html>", id="not-json"),
            pytest.param(200, b"[1, 2]", id="not-an-object"),
            pytest.param(200, b'{"keys": []}', id="no-keys"),
            pytest.param(
                200, b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k", "alg": "HS256"}]}', id="only-hmac"
            ),
            pytest.param(200, b'{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "!!", "kid": "k"}]}', id="broken-key"),
            pytest.param(200, b'{"keys": [' + b" " * 300_000 + b"]}", id="too-large"),
        ],
    )
    async def test_bad_jwks_is_503(
        self, client: httpx.AsyncClient, jwks: JwksServer, token: TokenFactory, status: int, body: bytes
    ) -> None:
        jwks.serve(status, body)
        response = await client.get("/api/auth/me", headers=bearer(token()))
        assert_error(response, 503, "SERVICE_UNAVAILABLE")
        assert "Retry-After" in response.headers

    async def test_failures_are_retried_after_a_pause_then_recover(
        self, client: httpx.AsyncClient, jwks: JwksServer, swap_verifier: Any, keys: dict[str, Key], token: TokenFactory
    ) -> None:
        swap_verifier(retry_interval=0.5)
        jwks.serve(502, b"bad gateway")
        for _ in range(5):
            assert_error(await client.get("/api/auth/me", headers=bearer(token())), 503, "SERVICE_UNAVAILABLE")
        assert jwks.hits == 1
        jwks.publish(*keys.values())
        await asyncio.sleep(0.55)
        assert (await client.get("/api/auth/me", headers=bearer(token()))).status_code == 200
        assert jwks.hits == 2


class TestJwksServerDown:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"BETTER_AUTH_URL": f"http://127.0.0.1:{free_port()}"}

    async def test_503_and_own_tokens_still_work(
        self, client: httpx.AsyncClient, token: TokenFactory, user: Any
    ) -> None:
        assert_error(await client.get("/api/auth/me", headers=bearer(token())), 503, "SERVICE_UNAVAILABLE")
        mine = await client.get("/api/auth/me", headers=user.headers)
        assert mine.status_code == 200, mine.text
        assert mine.json()["data"]["user_id"] == user.id
        login = await client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
        assert login.status_code == 200, login.text


class TestSharedSecret:
    @pytest.fixture
    def settings_overrides(self, jwks: JwksServer) -> dict[str, Any]:
        return {"BETTER_AUTH_URL": jwks.url, "BETTER_AUTH_SECRET": SECRET}

    def hs(self, payload: dict[str, Any], secret: str = SECRET, alg: str = "HS256") -> str:
        return jwt.encode(payload, secret, algorithm=alg, headers={"typ": None})

    async def test_hs256_with_the_secret_is_accepted(self, client: httpx.AsyncClient, issuer: str) -> None:
        sub = better_auth_id()
        response = await client.get("/api/auth/me", headers=bearer(self.hs(claims(issuer, sub=sub))))
        assert response.status_code == 200, response.text
        assert response.json()["data"]["user_id"] == sub

    async def test_jwks_tokens_still_work(self, client: httpx.AsyncClient, token: TokenFactory) -> None:
        assert (await client.get("/api/auth/me", headers=bearer(token("ES512")))).status_code == 200

    @pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
    @pytest.mark.parametrize("forgery", ["wrong-secret", "other-hmac-alg", "rsa-public-key-as-secret"])
    async def test_refused(self, client: httpx.AsyncClient, issuer: str, keys: dict[str, Key], forgery: str) -> None:
        forged = {
            "wrong-secret": lambda: self.hs(claims(issuer), "another-secret-that-is-also-32-bytes-long"),
            "other-hmac-alg": lambda: self.hs(claims(issuer), SECRET, "HS512"),
            "rsa-public-key-as-secret": lambda: rsa_pem_as_hmac_secret(keys["RS256"], issuer),
        }[forgery]()
        assert_error(await client.get("/api/auth/me", headers=bearer(forged)), 401, "INVALID_TOKEN")

    async def test_expired(self, client: httpx.AsyncClient, issuer: str) -> None:
        response = await client.get("/api/auth/me", headers=bearer(self.hs(claims(issuer, lifetime=-60))))
        assert_error(response, 401, "TOKEN_EXPIRED")


class TestSharedSecretOnly:
    ISSUER = "https://app.example.com"
    AUDIENCE = "taskdeck-api"

    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"BETTER_AUTH_SECRET": SECRET, "BETTER_AUTH_ISSUER": self.ISSUER, "BETTER_AUTH_AUDIENCE": self.AUDIENCE}

    async def test_custom_issuer_and_audience(self, client: httpx.AsyncClient) -> None:
        payload = claims(self.ISSUER, aud=self.AUDIENCE)
        good = await client.get("/api/auth/me", headers=bearer(jwt.encode(payload, SECRET, algorithm="HS256")))
        assert good.status_code == 200, good.text
        swapped = claims(self.AUDIENCE, aud=self.ISSUER)
        bad = await client.get("/api/auth/me", headers=bearer(jwt.encode(swapped, SECRET, algorithm="HS256")))
        assert_error(bad, 401, "INVALID_TOKEN")

    async def test_asymmetric_tokens_are_refused_without_a_jwks(
        self, client: httpx.AsyncClient, keys: dict[str, Key]
    ) -> None:
        response = await client.get("/api/auth/me", headers=bearer(sign(keys["EdDSA"], claims(self.ISSUER))))
        assert_error(response, 401, "INVALID_TOKEN")


class TestNotConfigured:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {}

    async def test_better_auth_tokens_are_refused(
        self, app: FastAPI, client: httpx.AsyncClient, keys: dict[str, Key]
    ) -> None:
        assert app.state.external_verifier is no_external_verifier
        response = await client.get("/api/auth/me", headers=bearer(sign(keys["EdDSA"], claims("http://x"))))
        assert_error(response, 401, "INVALID_TOKEN")


class TestConfiguration:
    @pytest.mark.parametrize(
        "overrides",
        [
            pytest.param({"BETTER_AUTH_SECRET": "too-short"}, id="short-secret"),
            pytest.param({"BETTER_AUTH_SECRET": SECRET}, id="secret-without-issuer"),
            pytest.param({"BETTER_AUTH_JWKS_URL": "http://127.0.0.1:1/jwks"}, id="jwks-without-issuer"),
            pytest.param(
                {"BETTER_AUTH_JWKS_URL": "http://127.0.0.1:1/jwks", "BETTER_AUTH_ISSUER": "x"}, id="no-audience"
            ),
        ],
    )
    def test_refused_at_start_up(self, tmp_path: Path, overrides: dict[str, Any]) -> None:
        with pytest.raises(ConfigError, match="BETTER_AUTH"):
            make_settings("sqlite:///unused.db", tmp_path, **overrides)

    def test_jwks_url_derived_from_the_base_url(self, tmp_path: Path) -> None:
        settings = make_settings("sqlite:///unused.db", tmp_path, BETTER_AUTH_URL="https://app.example.com/")
        assert settings.better_auth_jwks_url == "https://app.example.com/api/auth/jwks"


class TestJustInTimeUsers:
    async def test_first_token_creates_the_user_without_a_password(
        self, app: FastAPI, client: httpx.AsyncClient, token: TokenFactory
    ) -> None:
        sub = better_auth_id()
        assert await users_with_id(app, sub) == []
        assert (await client.get("/api/auth/me", headers=bearer(token(sub=sub)))).status_code == 200
        [user] = await users_with_id(app, sub)
        assert user.email == f"{sub.lower()}@example.com"
        assert user.full_name == "Ada Lovelace"
        assert user.auth_provider == "better-auth"
        assert user.hashed_password is None
        assert user.is_active is True

    async def test_later_tokens_update_name_and_email(
        self, app: FastAPI, client: httpx.AsyncClient, token: TokenFactory
    ) -> None:
        sub = better_auth_id()
        assert (await client.get("/api/auth/me", headers=bearer(token(sub=sub)))).status_code == 200
        changed = token(sub=sub, name="Ada King", email="countess@example.com")
        response = await client.get("/api/auth/me", headers=bearer(changed))
        assert response.status_code == 200, response.text
        assert response.json()["data"]["full_name"] == "Ada King"
        assert response.json()["data"]["email"] == "countess@example.com"
        assert len(await users_with_id(app, sub)) == 1

    @pytest.mark.committing  # concurrent requests: one connection cannot serve them
    async def test_concurrent_first_requests_create_one_user(
        self, app: FastAPI, client: httpx.AsyncClient, token: TokenFactory
    ) -> None:
        sub = better_auth_id()
        first = token(sub=sub)
        responses = await asyncio.gather(*(client.get("/api/auth/me", headers=bearer(first)) for _ in range(10)))
        assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses if r.status_code != 200]
        assert {r.json()["data"]["user_id"] for r in responses} == {sub}
        assert len(await users_with_id(app, sub)) == 1

    async def test_cannot_log_in_with_a_password(self, client: httpx.AsyncClient, token: TokenFactory) -> None:
        sub = better_auth_id()
        assert (await client.get("/api/auth/me", headers=bearer(token(sub=sub)))).status_code == 200
        for password in (PASSWORD, "", "x" * 100):
            response = await client.post(
                "/api/auth/login", json={"email": f"{sub.lower()}@example.com", "password": password}
            )
            assert_error(response, 401, "INVALID_CREDENTIALS")

    async def test_email_of_a_local_account_is_a_conflict(
        self, app: FastAPI, client: httpx.AsyncClient, token: TokenFactory, user: Any
    ) -> None:
        sub = better_auth_id()
        response = await client.get("/api/auth/me", headers=bearer(token(sub=sub, email=user.email.upper())))
        error = assert_error(response, 409, "CONFLICT")
        assert error["field"] == "email"
        assert await users_with_id(app, sub) == []

    @pytest.mark.parametrize(
        "claimed",
        ["Bob-{id}@\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.org", "\u0130nci-{id}@Example.org"],
        ids=["fullwidth", "dotted-I"],
    )
    async def test_an_email_in_another_form_is_the_same_address(
        self, app: FastAPI, client: httpx.AsyncClient, token: TokenFactory, claimed: str
    ) -> None:
        sub = better_auth_id()
        email = claimed.format(id=sub.lower()[:12])
        response = await client.get("/api/auth/me", headers=bearer(token(sub=sub, email=email)))
        assert response.status_code == 200, response.text
        [user] = await users_with_id(app, sub)
        assert user.email == canonical_email(email) == response.json()["data"]["email"]
        # The same address typed otherwise by the auth server: the same user, not a change.
        retyped = await client.get("/api/auth/me", headers=bearer(token(sub=sub, email=email.upper())))
        assert retyped.status_code == 200, retyped.text
        assert (await users_with_id(app, sub))[0].updated_at == user.updated_at
        # Registration and another Better-Auth user find it under any typing.
        registered = await client.post("/api/auth/register", json={"email": email.upper(), "password": PASSWORD})
        assert_error(registered, 409, "EMAIL_TAKEN")
        other = await client.get("/api/auth/me", headers=bearer(token(sub=better_auth_id(), email=email.lower())))
        assert assert_error(other, 409, "CONFLICT")["field"] == "email"

    async def test_disabled_user_is_refused(self, app: FastAPI, client: httpx.AsyncClient, token: TokenFactory) -> None:
        sub = better_auth_id()
        assert (await client.get("/api/auth/me", headers=bearer(token(sub=sub)))).status_code == 200
        async with app.state.sessionmaker() as session:
            user = await session.get(User, sub)
            assert user is not None
            user.is_active = False
            session.add(user)
            await session.commit()
        assert_error(await client.get("/api/auth/me", headers=bearer(token(sub=sub))), 403, "ACCOUNT_DISABLED")

    async def test_logout_is_a_no_op_for_better_auth_tokens(
        self, client: httpx.AsyncClient, token: TokenFactory
    ) -> None:
        first = token()
        assert (await client.post("/api/auth/logout", headers=bearer(first))).status_code == 200
        assert (await client.get("/api/auth/me", headers=bearer(first))).status_code == 200
