"""What every hub must do whatever carries its events (memory, Redis, NATS):
broadcaster's defects, as checks each broker's test module runs."""

from __future__ import annotations

import asyncio
from typing import Any

from backends.hub import Hub, HubSubscription

TIMEOUT = 5.0


async def receive(sub: HubSubscription[Any], timeout: float = TIMEOUT) -> Any:
    """The next item (an event, or RESYNC), or TimeoutError."""
    return await asyncio.wait_for(anext(sub), timeout)


async def concurrent_first_subscribers_all_receive(hub: Hub[str], count: int = 10) -> None:
    """broadcaster raced here: one of two first subscribers of a topic never
    got messages and raised KeyError on exit."""
    started = asyncio.Barrier(count + 1)
    results: list[object] = []

    async def subscriber() -> None:
        async with hub.subscribe("race") as sub:
            await started.wait()
            results.append(await receive(sub))

    tasks = [asyncio.create_task(subscriber()) for _ in range(count)]
    await started.wait()
    await hub.publish("race", "go")
    await asyncio.gather(*tasks)
    assert results == ["go"] * count
    assert hub.subscriber_count() == 0
