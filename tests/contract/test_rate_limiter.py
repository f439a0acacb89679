"""RateLimiter contract: a sliding window per key."""

from __future__ import annotations

import asyncio
import time

from backends.protocols import RateLimiter

from .conftest import eventually


async def test_allows_up_to_the_limit_per_key(rate_limiter: RateLimiter) -> None:
    results = [await rate_limiter.acquire("a", limit=3, per_seconds=60) for _ in range(5)]
    assert results == [True, True, True, False, False]
    assert await rate_limiter.acquire("b", limit=3, per_seconds=60)


async def test_window_slides(rate_limiter: RateLimiter) -> None:
    started = time.monotonic()
    assert await rate_limiter.acquire("k", limit=2, per_seconds=0.2)
    assert await rate_limiter.acquire("k", limit=2, per_seconds=0.2)
    assert not await rate_limiter.acquire("k", limit=2, per_seconds=0.2)

    async def allowed() -> bool:
        return await rate_limiter.acquire("k", limit=2, per_seconds=0.2)

    await eventually(allowed)  # the first slot expired and was taken again
    assert time.monotonic() - started >= 0.2
    # The second expires a moment later (it was taken after the first);
    # taken again too, the window is full once more.
    await eventually(allowed)
    assert not await rate_limiter.acquire("k", limit=2, per_seconds=0.2)


async def test_refusals_are_not_counted(rate_limiter: RateLimiter) -> None:
    assert await rate_limiter.acquire("k", limit=1, per_seconds=0.15)
    refused_until = time.monotonic() + 0.1
    while time.monotonic() < refused_until:
        # Hammering while refused must not push the window out.
        assert not await rate_limiter.acquire("k", limit=1, per_seconds=0.15)
        await asyncio.sleep(0.005)

    async def allowed() -> bool:
        return await rate_limiter.acquire("k", limit=1, per_seconds=0.15)

    await eventually(allowed, within=0.5)


async def test_zero_limit_refuses(rate_limiter: RateLimiter) -> None:
    assert not await rate_limiter.acquire("k", limit=0, per_seconds=1)


async def test_many_keys(rate_limiter: RateLimiter) -> None:
    for i in range(3000):
        assert await rate_limiter.acquire(f"user-{i}", limit=1, per_seconds=60)
    assert not await rate_limiter.acquire("user-7", limit=1, per_seconds=60)
    assert not await rate_limiter.acquire("user-2999", limit=1, per_seconds=60)
