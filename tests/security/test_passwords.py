"""bcrypt runs in its own bounded, low-priority pool: a login storm cannot starve other work."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from starlette.concurrency import run_in_threadpool

from backend.security import passwords


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
