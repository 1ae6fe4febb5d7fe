"""The API's own access tokens and refresh tokens, directly."""

from __future__ import annotations

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
