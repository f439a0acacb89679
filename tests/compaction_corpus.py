"""The small corpus the store-level compaction tests (SQLite, Redis) share:
numbered messages with text, metadata, threads and client ids, and a read
of a room's whole history page by page."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from backends import blocks
from backends.compaction import Compactor
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


async def retention_cuts_inside_a_block(
    monkeypatch: pytest.MonkeyPatch,
    store: MessageStore,
    trimmed: MessageStore,
    count: Callable[[str], Awaitable[int]],
    *,
    concurrently: bool = True,
) -> None:
    """With blocks of 8 and a dictionary that pays (blocks.py patched here):
    retention (`trimmed`: the same database, a retention of 9,399.5 minutes)
    rewrites the edge block and retires the dictionary. `count` runs a
    COUNT/SUM query on the store's database."""
    # Small blocks and a small dictionary, which pays for them by about 17 %
    # on this corpus (a 16 KiB one only by 0-0.5 %, the message ids being random).
    monkeypatch.setattr(blocks, "BLOCK_MESSAGES", 8)
    monkeypatch.setattr(blocks, "_DICT_BYTES", 4096)
    assert isinstance(store, Compactor)
    await fill(store, 1200, concurrently=concurrently)
    kept = await everything(store)
    stats = await store.compact(
        older_than=timedelta(hours=1), idempotency_window=timedelta(days=30), batch=1200
    )
    assert stats.messages == 1200 and stats.blocks == 150
    dicts = await count("SELECT COUNT(*) FROM block_dicts")
    assert dicts == 1, (dicts, stats)
    assert await count("SELECT COUNT(*) FROM message_blocks WHERE dict_id = 0") == 0
    assert await everything(store) == kept

    # Retention cuts inside a block: messages 0..600 go (the newest of them
    # 9,400 minutes old), 601.. stay.
    assert await trimmed.trim() == 601
    assert await everything(trimmed) == kept[601:]
    position = await trimmed.position(ROOM, incarnation=INC)
    assert position.first_offset == kept[601].offset
    # The dictionary held fragments of deleted messages: gone, and what used it rewritten.
    assert await count("SELECT COUNT(*) FROM block_dicts") == 0
    assert await count("SELECT COUNT(*) FROM message_blocks WHERE dict_id != 0") == 0
    assert await count("SELECT SUM(count) FROM message_blocks") == 599
    assert await count("SELECT COUNT(*) FROM compacted_messages") == 599


async def assert_window_kept(store: MessageStore, first: list[Message]) -> None:
    """Client message ids still answer for the idempotency window.

    `first`: messages 0..19 sent 10,000 - i minutes ago, then compacted with a
    window of 9,995 minutes. c6..c19 still answer with their message; a send
    with a key from past the window is a new message."""
    again, created = await store.append(message(8), incarnation=INC)
    assert (again, created) == (first[8], False)
    found = await store.find_client_message(ROOM, "user1", "c8", incarnation=INC)
    assert found == first[8]
    late, created = await store.append(message(2), incarnation=INC)
    assert created and late.offset == 21
