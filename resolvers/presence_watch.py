"""This process's watchers of chosen users' presence (`presence(userIds:)`).

Users' presence changes travel on a few topics shared by all users
(`topics.user_presence`). A watcher of N users does not subscribe to N
topics, nor to each of its topics on its own: the process holds one hub
subscription per topic that any watcher needs, and hands each change only
to the watchers of that user. So a node holds at most
`topics.PRESENCE_SHARDS` upstream subscriptions for presence however many
users are watched, and a change costs work only for those who watch it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from backends import topics
from backends.events import Event, PresenceEvent
from backends.hub import BoundedStream, Hub
from backends.records import PresenceEntry

__all__ = ["PresenceWatch", "Watcher"]


class Watcher(BoundedStream[PresenceEntry]):
    """One subscription's changes of the users it watches; iterate it."""

    def __init__(self, user_ids: Iterable[str], capacity: int) -> None:
        super().__init__(capacity, "presence changes queued")
        self.user_ids = frozenset(user_ids)


@dataclass
class _Topic:
    reader: asyncio.Task[None] | None = None
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    watchers: set[Watcher] = field(default_factory=set)


class PresenceWatch:
    """Per process; built with the app's services."""

    def __init__(self) -> None:
        self._topics: dict[str, _Topic] = {}
        self._by_user: dict[str, set[Watcher]] = {}

    def topic_count(self) -> int:
        """Hub topics held for watchers now (at most PRESENCE_SHARDS)."""
        return len(self._topics)

    @contextlib.asynccontextmanager
    async def watch(
        self, hub: Hub[Event], user_ids: Iterable[str], capacity: int
    ) -> AsyncIterator[Watcher]:
        """A watcher of `user_ids`, receiving every change from when this
        yields; its topics are let go when it ends."""
        watcher = Watcher(user_ids, capacity)
        needed = sorted({topics.user_presence(u) for u in watcher.user_ids})
        for user_id in watcher.user_ids:
            self._by_user.setdefault(user_id, set()).add(watcher)
        entries = []
        for name in needed:
            entry = self._topics.get(name)
            if entry is None:
                entry = self._topics[name] = _Topic()
                entry.reader = asyncio.create_task(self._read(hub, name, entry))
            entry.watchers.add(watcher)
            entries.append((name, entry))
        try:
            for _, entry in entries:
                await _subscribed(entry)
            yield watcher
        finally:
            for user_id in watcher.user_ids:
                watching = self._by_user.get(user_id)
                if watching is not None:
                    watching.discard(watcher)
                    if not watching:
                        del self._by_user[user_id]
            for name, entry in entries:
                entry.watchers.discard(watcher)
                if not entry.watchers and self._topics.get(name) is entry:
                    del self._topics[name]
                    if entry.reader is not None:
                        entry.reader.cancel()
                        await asyncio.gather(entry.reader, return_exceptions=True)

    async def _read(self, hub: Hub[Event], name: str, entry: _Topic) -> None:
        try:
            async with hub.subscribe(name) as live:
                entry.subscribed.set()
                async for item in live:
                    if isinstance(item, PresenceEvent):
                        for watcher in list(self._by_user.get(item.entry.user_id, ())):
                            # A watcher that stopped reading is cut off by its
                            # own bounded queue, without holding up the others.
                            watcher._deliver(item.entry)
        except Exception as exc:  # the hub stopped or failed: tell every watcher
            for watcher in list(entry.watchers):
                watcher._fail(exc)
            if self._topics.get(name) is entry:
                del self._topics[name]


async def _subscribed(entry: _Topic) -> None:
    """Wait until the topic's reader holds its hub subscription, or ended
    (then it failed its watchers with the reason)."""
    if entry.reader is None:
        raise RuntimeError("a presence topic without its reader")
    waiting = asyncio.ensure_future(entry.subscribed.wait())
    try:
        await asyncio.wait({waiting, entry.reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
