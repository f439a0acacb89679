"""Backfill the search role from the history of every room.

For deployments whose search role is elsewhere than their history (redis or
nats with `role_urls: {search: ...}`): messages stored before the role was
set, or while it was unreachable, are not findable until indexed. `index`
leaves a message already indexed as it is, so a reindex can run again, or
beside a serving cluster. Memory stays bounded: rooms are walked a page of
ids at a time and each history a page of messages at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .protocols import MessageSearch, MessageStore, RoomStore
from .records import HistoryWindow

__all__ = ["ReindexCounts", "reindex"]

ROOM_PAGE: Final = 200
MESSAGE_PAGE: Final = 500


@dataclass(slots=True)
class ReindexCounts:
    rooms: int = 0
    messages: int = 0


async def reindex(
    rooms: RoomStore,
    messages: MessageStore,
    search: MessageSearch,
    *,
    report: Callable[[ReindexCounts], None] = lambda counts: None,
    message_page: int = MESSAGE_PAGE,
) -> ReindexCounts:
    """Index every retained message of every room; `report` after each room."""
    counts = ReindexCounts()
    cursor = ""
    while True:
        room_ids, cursor = await rooms.room_id_page(cursor, limit=ROOM_PAGE)
        # An id the walk repeats (Redis SCAN may) is indexed again: a no-op.
        for room_id in room_ids:
            room = await rooms.get(room_id)
            if room is None:  # deleted since the walk listed it
                continue
            after = None
            while True:
                page = await messages.page(
                    room_id,
                    HistoryWindow(limit=message_page, after=after),
                    incarnation=room.incarnation,
                )
                if page.messages:
                    await search.index(page.messages)
                    counts.messages += len(page.messages)
                    after = page.messages[-1].offset
                if not page.has_more or not page.messages:
                    break
            counts.rooms += 1
            report(counts)
        if not cursor:
            return counts
