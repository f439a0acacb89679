"""The small corpus the store-level compaction tests (SQLite, Redis) share:
numbered messages with text, metadata, threads and client ids, and a read
of a room's whole history page by page."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from backends.protocols import MessageStore
from backends.records import HistoryWindow, Message, MessageKind, NewMessage, utcnow

ROOM, OTHER, INC = "room-1", "room-2", "inc1"
WORDS = ["deploy", "review", "coffee", "lunch", "ship", "merge", "the", "a", "we", "today"]


def message(i: int, *, room: str = ROOM, minutes_ago: float = 0.0) -> NewMessage:
    text = " ".join(WORDS[(i * k) % len(WORDS)] for k in (1, 3, 7, 11))
    return NewMessage(
        kind=MessageKind.MESSAGE,
        user_id=f"user{i % 7}",
        room_id=room,
        data={"text": f"{text} {i}"},
        metadata={"client": "web"} if i % 2 else None,
        thread_id="t" if i % 5 == 0 else None,
        client_message_id=f"c{i}",
        timestamp=utcnow() - timedelta(minutes=minutes_ago),
    )


async def fill(
    store: MessageStore, count: int, *, room: str = ROOM, concurrently: bool = True
) -> None:
    """Messages 0..count-1, message i sent 10,000 - i minutes ago, at offset
    i + 1 (gather keeps the order of submission on SQLite, which commits in
    that order; PostgreSQL's pool does not, so it goes one by one)."""
    sends = [
        store.append(message(i, room=room, minutes_ago=10_000 - i), incarnation=INC)
        for i in range(count)
    ]
    if concurrently:
        await asyncio.gather(*sends)
    else:
        for send in sends:
            await send


async def everything(store: MessageStore, room: str = ROOM) -> list[Message]:
    out: list[Message] = []
    after = None
    while True:
        page = await store.page(room, HistoryWindow(limit=200, after=after), incarnation=INC)
        out += page.messages
        if not page.has_more:
            return out
        after = out[-1].offset
