"""bcrypt hashing (off the event loop) and the password rules of the contract."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import TypeVar

import bcrypt

from backend.models.passwords import MAX_BYTES

T = TypeVar("T")


def _hash(password: str, rounds: int) -> str:
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=rounds)).decode("ascii")


def _verify(password: str, hashed: str) -> bool:
    encoded = password.encode("utf-8")
    if len(encoded) > MAX_BYTES:  # bcrypt 5 raises here; a too-long password is simply wrong
        encoded = b"\0"
    return bcrypt.checkpw(encoded, hashed.encode("ascii"))


def _lower_priority() -> None:
    # Linux niceness is per thread: a login storm then takes only the CPU that requests leave idle.
    if hasattr(os, "setpriority"):
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + 10))


# bcrypt's own pool, one thread per usable core: it cannot starve the shared thread pool, and a
# login storm queues here instead of taking every core away from the event loop (issue 10 figures).
_executor = ThreadPoolExecutor(
    max_workers=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
    thread_name_prefix="bcrypt",
    initializer=_lower_priority,
)


async def _in_pool(fn: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(_executor, fn, *args)


async def hash_password(password: str, rounds: int) -> str:
    return await _in_pool(_hash, password, rounds)


async def verify_password(password: str, hashed: str) -> bool:
    return await _in_pool(_verify, password, hashed)


@lru_cache(maxsize=8)
def dummy_hash(rounds: int) -> str:
    """A hash to check against when the email is unknown, so both failures cost the same."""
    return _hash("not-a-real-password-just-for-timing", rounds)


async def verify_dummy(password: str, rounds: int) -> None:
    """The bcrypt work of a real check, for an unknown email (the dummy hash is built off the loop too)."""
    await verify_password(password, await _in_pool(dummy_hash, rounds))
