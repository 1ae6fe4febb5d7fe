"""Password rules and bcrypt, directly."""

from __future__ import annotations

import pytest

from backend.security.passwords import (
    common_passwords,
    dummy_hash,
    hash_password,
    validate_password_rules,
    verify_dummy,
    verify_password,
)


def test_common_list_is_real_and_large():
    words = common_passwords()
    assert len(words) >= 10_000
    assert {"password", "123456", "iloveyou", "qwertyuiop"} <= words
    assert not any(word.startswith("#") for word in words)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "at least 8 characters"),
        ("é" * 37, "at most 72 bytes"),
        ("PassWord1", "too common"),
    ],
)
def test_rules(password, message):
    with pytest.raises(ValueError, match=message):
        validate_password_rules(password)


def test_rules_accept_a_good_password():
    assert validate_password_rules("é" * 36) == "é" * 36


async def test_hash_and_verify():
    hashed = await hash_password("Sturdy-Lantern-42", 4)
    assert hashed.startswith("$2b$04$")
    assert await verify_password("Sturdy-Lantern-42", hashed)
    assert not await verify_password("Sturdy-Lantern-43", hashed)
    assert not await verify_password("x" * 100, hashed)  # bcrypt 5 would raise; it is just wrong


async def test_dummy_check_does_the_same_work():
    await verify_dummy("anything-at-all", 4)
    assert dummy_hash(4).startswith("$2b$04$")
    assert dummy_hash(4) is dummy_hash(4)
