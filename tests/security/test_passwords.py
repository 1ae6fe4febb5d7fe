"""Password rules and bcrypt, directly."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from starlette.concurrency import run_in_threadpool

from backend.models.passwords import common_passwords, validate_password_rules
from backend.security import passwords
from backend.security.passwords import dummy_hash, hash_password, verify_dummy, verify_password


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


# bcrypt runs in its own bounded, low-priority pool: a login storm cannot starve other work.


async def test_hash_and_verify_round_trip() -> None:
    hashed = await passwords.hash_password("Sturdy-Lantern-42", 4)

    assert await passwords.verify_password("Sturdy-Lantern-42", hashed)
    assert not await passwords.verify_password("Sturdy-Lantern-43", hashed)


async def test_bcrypt_threads_run_at_lower_priority() -> None:
    loop = asyncio.get_running_loop()
    own = os.getpriority(os.PRIO_PROCESS, 0)

    theirs = await loop.run_in_executor(passwords._executor, os.getpriority, os.PRIO_PROCESS, 0)

    assert theirs == min(19, own + 10)


@pytest.mark.slow
async def test_busy_bcrypt_pool_leaves_the_shared_thread_pool_free() -> None:
    workers = passwords._executor._max_workers
    hashes = [asyncio.create_task(passwords.hash_password("Sturdy-Lantern-42", 12)) for _ in range(workers + 1)]
    await asyncio.sleep(0.05)

    started = time.perf_counter()
    assert await run_in_threadpool(lambda: 42) == 42
    waited = time.perf_counter() - started

    assert waited < 0.25
    assert not all(task.done() for task in hashes)
    await asyncio.gather(*hashes)
