"""The in-process fan-out hub over a broadcaster `BroadcastBackend`.

broadcaster's own `Broadcast` gives every subscriber an unbounded queue,
races when two coroutines subscribe to a new channel at once, and lets its
listener die silently. The hub keeps the backend interface and replaces the
rest: one upstream subscription per topic per process (taken under a
per-topic lock), one decode per event, and a bounded queue per local
subscriber that is failed with `SlowConsumer` when it overflows, so one slow
reader never stalls the others nor grows memory without bound.

A backend that loses its connection either raises from `next_published`
or returns an event on `RESYNC_CHANNEL` once it is back; either way every
local subscriber receives `RESYNC` and must catch up from history.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from broadcaster import BroadcastBackend

log = logging.getLogger(__name__)

T = TypeVar("T")

RESYNC_CHANNEL: Final = "__hub.resync__"


class _Resync:
    def __repr__(self) -> str:
        return "RESYNC"


RESYNC: Final = _Resync()
"""Yielded to subscribers after an outage: events may have been missed."""


class SlowConsumer(Exception):
    """The subscriber's queue overflowed; it has been cut off."""


class HubClosed(Exception):
    """The hub stopped while the subscription was open."""


class BoundedStream(Generic[T]):
    """A bounded queue read as an async iterator, by one reader.

    One that overflows is failed with `SlowConsumer` and its items freed at
    once; `end` lets the reader finish what is queued, then stop. Idle, it
    holds no queue and no event: there is one per subscriber, and most wait.
    """

    def __init__(self, capacity: int, label: str) -> None:
        self._capacity = capacity
        self._label = label
        self._items: deque[T] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        self._ended = False

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _deliver(self, item: T) -> None:
        if self.finished():
            return
        if self._items is None:
            self._items = deque()
        elif len(self._items) >= self._capacity:
            self._fail(SlowConsumer(f"more than {self._capacity} {self._label}"))
            return
        self._items.append(item)
        self._wake()

    def _fail(self, error: Exception) -> None:
        if not self.finished():
            self._error = error
            self._items = None  # free the memory now, not when the reader wakes
            self._wake()

    def _end(self, *last: T) -> None:
        """Stop after what is queued and `last` (kept even past capacity)."""
        if not self.finished():
            if last:
                self._items = self._items or deque()
                self._items.extend(last)
            self._ended = True
            self._wake()

    def finished(self) -> bool:
        """Failed or ended: nothing more is taken."""
        return self._error is not None or self._ended

    def __aiter__(self) -> BoundedStream[T]:
        return self

    async def __anext__(self) -> T:
        while not self._items:
            if self._error is not None:
                raise self._error
            if self._ended:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def pending(self) -> int:
        return len(self._items or ())


class HubSubscription(BoundedStream[T | _Resync]):
    """A local subscriber's bounded queue; iterate it for events."""

    def __init__(self, topic: str, capacity: int) -> None:
        super().__init__(capacity, f"events queued on {topic}")
        self.topic = topic


@dataclass
class _Topic(Generic[T]):
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    subscribers: set[HubSubscription[T]] = field(default_factory=set)
    upstream: bool = False
    users: int = 0  # coroutines holding this entry, subscribed or waiting for the lock


class Hub(Generic[T]):
    """Publish encoded events to topics; subscribe locally to decoded ones."""

    def __init__(
        self,
        backend: BroadcastBackend,
        *,
        encode: Callable[[T], str],
        decode: Callable[[str], T],
        capacity: int = 1024,
        retry_delay: float = 0.5,
    ) -> None:
        self._backend = backend
        self._encode = encode
        self._decode = decode
        self._capacity = capacity
        self._retry_delay = retry_delay
        self._topics: dict[str, _Topic[T]] = {}
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._backend.connect()
        self._listener = asyncio.create_task(self._listen(), name="hub-listener")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        for topic in self._topics.values():
            for sub in topic.subscribers:
                sub._fail(HubClosed("server is shutting down"))
        await self._backend.disconnect()

    async def publish(self, topic: str, event: T) -> None:
        await self._backend.publish(topic, self._encode(event))

    def subscriber_count(self, topic: str | None = None) -> int:
        """Local subscribers of `topic`, or of every topic."""
        entries = self._topics.values() if topic is None else [self._topics.get(topic)]
        return sum(len(entry.subscribers) for entry in entries if entry)

    @asynccontextmanager
    async def subscribe(self, topic: str) -> AsyncIterator[HubSubscription[T]]:
        sub: HubSubscription[T] = HubSubscription(topic, self._capacity)
        entry = self._topics.setdefault(topic, _Topic())
        entry.users += 1
        try:
            async with entry.lock:
                if not entry.upstream:
                    await self._backend.subscribe(topic)
                    entry.upstream = True
                entry.subscribers.add(sub)
            try:
                yield sub
            finally:
                async with entry.lock:
                    entry.subscribers.discard(sub)
                    if not entry.subscribers and entry.upstream:
                        entry.upstream = False
                        await self._backend.unsubscribe(topic)
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._topics[topic]

    def _dispatch(self, channel: str, raw: str) -> None:
        entry = self._topics.get(channel)
        if entry is None or not entry.subscribers:
            return
        try:
            event = self._decode(raw)
        except ValueError:
            log.warning("dropped an undecodable event on %s", channel)
            return
        for sub in list(entry.subscribers):
            sub._deliver(event)

    def _resync_all(self) -> None:
        for entry in self._topics.values():
            for sub in list(entry.subscribers):
                sub._deliver(RESYNC)

    async def _listen(self) -> None:
        failed = False
        while True:
            try:
                event = await self._backend.next_published()
            except asyncio.CancelledError:
                raise
            except Exception:
                if not failed:
                    log.exception("fan-out backend failed; retrying")
                failed = True
                await asyncio.sleep(self._retry_delay)
                continue
            if failed:
                failed = False
                self._resync_all()
            if event.channel == RESYNC_CHANNEL:
                self._resync_all()
            else:
                self._dispatch(event.channel, event.message)
