"""The API's own access tokens and refresh tokens, directly."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import jwt
import pytest

from backend.errors import Unauthorized
from backend.security.tokens import (
    create_access_token,
    decode_access_token,
    hash_refresh_token,
    is_own_token,
    issued_at,
    new_refresh_token,
)

SECRET = "t" * 48


def test_round_trip():
    token, expires_in = create_access_token(secret=SECRET, user_id="u1", session_id="s1", minutes=15)
    assert expires_in == 900
    assert is_own_token(token)
    claims = decode_access_token(token, secret=SECRET, leeway=0)
    assert (claims["sub"], claims["sid"], claims["type"], claims["iss"]) == ("u1", "s1", "access", "taskdeck")
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_foreign_tokens_are_not_ours():
    assert not is_own_token("garbage")
    assert not is_own_token(jwt.encode({"iss": "https://web.example", "sub": "x"}, SECRET, algorithm="HS256"))


@pytest.mark.parametrize(("minutes", "code"), [(-1, "TOKEN_EXPIRED"), (15, "INVALID_TOKEN")])
def test_decode_failures(minutes, code):
    token, _ = create_access_token(secret=SECRET, user_id="u1", session_id="s1", minutes=minutes)
    with pytest.raises(Unauthorized) as caught:
        decode_access_token(token, secret="w" * 48 if code == "INVALID_TOKEN" else SECRET, leeway=0)
    assert caught.value.code == code
    assert caught.value.headers == {"WWW-Authenticate": "Bearer"}


def test_refresh_tokens_are_random_and_hashed():
    token, digest = new_refresh_token()
    other, _ = new_refresh_token()
    assert token != other
    assert len(token) >= 64
    assert digest == hash_refresh_token(token)
    assert len(digest) == 64
    assert token not in digest


def test_issued_at_reads_iat_of_any_token():
    token, _ = create_access_token(secret=SECRET, user_id="u1", session_id="s1", minutes=15)
    iat = jwt.decode(token, options={"verify_signature": False})["iat"]
    assert issued_at(token) == datetime.fromtimestamp(iat, UTC)
    foreign = jwt.encode({"iss": "https://web.example", "iat": 1_700_000_000}, "x" * 32, algorithm="HS256")
    assert issued_at(foreign) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert issued_at(jwt.encode({"iat": "yesterday"}, SECRET, algorithm="HS256")) is None
    assert issued_at(jwt.encode({"sub": "u1"}, SECRET, algorithm="HS256")) is None
    assert issued_at("garbage") is None
    assert issued_at("") is None


def _token(seconds: float, secret: str = SECRET, **claims: object) -> str:
    now = time.time()
    body = {"iss": "taskdeck", "sub": "u1", "sid": "s1", "jti": "j", "type": "access", "iat": int(now)}
    return jwt.encode({**body, "exp": now + seconds, **claims}, secret, algorithm="HS256")


def test_a_remembered_token_still_expires_on_time():
    """The signature check is remembered per token; the expiry is checked on every call."""
    token = _token(1.0)
    assert decode_access_token(token, secret=SECRET, leeway=0)["sub"] == "u1"
    assert decode_access_token(token, secret=SECRET, leeway=0)["sub"] == "u1"  # from the cache
    time.sleep(1.2)
    with pytest.raises(Unauthorized) as caught:
        decode_access_token(token, secret=SECRET, leeway=0)
    assert caught.value.code == "TOKEN_EXPIRED"
    assert decode_access_token(token, secret=SECRET, leeway=30)["sub"] == "u1"  # the leeway is the caller's


def test_a_remembered_token_is_remembered_for_its_secret_only():
    token = _token(60)
    assert decode_access_token(token, secret=SECRET, leeway=0)["sid"] == "s1"
    with pytest.raises(Unauthorized) as caught:
        decode_access_token(token, secret="w" * 48, leeway=0)
    assert caught.value.code == "INVALID_TOKEN"


@pytest.mark.parametrize("claims", [{"type": "refresh"}, {"sid": 7}, {"exp": "soon"}, {"iss": "someone-else"}], ids=str)
def test_a_token_that_fails_a_check_is_refused_every_time(claims):
    token = _token(60, **claims)
    for _ in range(2):
        with pytest.raises(Unauthorized) as caught:
            decode_access_token(token, secret=SECRET, leeway=0)
        assert caught.value.code == "INVALID_TOKEN"


def test_a_returned_claim_set_is_the_callers_own():
    token = _token(60)
    decode_access_token(token, secret=SECRET, leeway=0)["sub"] = "someone else"
    assert decode_access_token(token, secret=SECRET, leeway=0)["sub"] == "u1"
