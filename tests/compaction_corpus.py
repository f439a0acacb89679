"""The small corpus the store-level compaction tests (SQLite, Redis) share:
numbered messages with text, metadata, threads and client ids, and a read
of a room's whole history page by page."""

from __future__ import annotations

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


async def everything(store: MessageStore, room: str = ROOM) -> list[Message]:
    out: list[Message] = []
    after = None
    while True:
        page = await store.page(room, HistoryWindow(limit=200, after=after), incarnation=INC)
        out += page.messages
        if not page.has_more:
            return out
        after = out[-1].offset


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
