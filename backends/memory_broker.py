"""The broker of a single process: broadcaster's `BroadcastBackend`
contract (its public base class) over one queue.

broadcaster ships one (`broadcaster._backends.memory`), but in a private
module; this is the same few lines on the public API, so no version of
broadcaster can move it from under us.
"""

from __future__ import annotations

import asyncio
from typing import Any

from broadcaster import BroadcastBackend, Event


class MemoryBroker(BroadcastBackend):
    """Events published in this process, for the channels subscribed in it."""

    def __init__(self) -> None:
        self._subscribed: set[str] = set()
        self._published: asyncio.Queue[Event] = asyncio.Queue()

    async def connect(self) -> None:
        self._published = asyncio.Queue()

    async def disconnect(self) -> None:
        return None

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    async def publish(self, channel: str, message: Any) -> None:
        await self._published.put(Event(channel=channel, message=message))

    async def next_published(self) -> Event:
        while True:
            event = await self._published.get()
            if event.channel in self._subscribed:
                return event
