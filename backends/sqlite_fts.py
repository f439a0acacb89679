"""The FTS5 index of room messages inside the SQLite database.

`message_fts` holds one row per indexed message, its rowid the message's
rowid in `messages`, its body the message's searchable text
(`backends.search_text`), and its room id: a search in a few rooms
intersects the words' matches with the rooms' (FTS5 skips through long
match lists), instead of reading every match of a common word. The
tokenizer `unicode61 remove_diacritics 2` makes it case- and
accent-insensitive. Writers call these helpers inside their own
transaction, so the index changes atomically with the messages.

`search_state.indexed_upto` is the highest message rowid up to which every
message is indexed; appends that did not index (the search role was
elsewhere) reset it to 0, and the next open with the search role indexes
what is missing, in batches.

Caveat: a `VACUUM` may renumber the rowids of `messages`; run
`DELETE FROM message_fts; DELETE FROM search_state;` after one, and the
next start rebuilds the index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import aiosqlite
import orjson

from .search_text import message_text

__all__ = [
    "FTS_SCHEMA",
    "body_of",
    "forget_before",
    "forget_room",
    "index_message",
    "index_messages",
    "indexed_upto",
    "mark_unindexed",
    "set_indexed_upto",
]

FTS_SCHEMA: Final = """
CREATE VIRTUAL TABLE IF NOT EXISTS message_fts
    USING fts5(body, room, tokenize = 'unicode61 remove_diacritics 2');
CREATE TABLE IF NOT EXISTS search_state (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


def body_of(data_json: str, event: str | None) -> str:
    """The indexed text of a message from its stored `data` JSON and event."""
    text = message_text(orjson.loads(data_json))
    return text if not event else f"{text}\n{event}"


async def index_message(
    conn: aiosqlite.Connection, rowid: int, room_id: str, data_json: str, event: str | None
) -> None:
    # REPLACE: a row left behind by a server without this index (its trim
    # deleted the message, not the row) must not block a message that
    # reuses the rowid (a file from before rowids were kept for good:
    # backends/sqlite_rowids.py).
    await conn.execute(
        "INSERT OR REPLACE INTO message_fts (rowid, body, room) VALUES (?, ?, ?)",
        (rowid, body_of(data_json, event), room_id),
    )


async def index_messages(
    conn: aiosqlite.Connection, rows: Sequence[tuple[str, int, str, str | None]]
) -> None:
    """The FTS rows of messages just inserted in this transaction, given as
    (room_id, seq, data_json, event): one statement for a whole batch."""
    # REPLACE, as index_message.
    await conn.executemany(
        "INSERT OR REPLACE INTO message_fts (rowid, body, room) VALUES"
        " ((SELECT rowid FROM messages WHERE room_id = ? AND seq = ?), ?, ?)",
        [(room_id, seq, body_of(data, event), room_id) for room_id, seq, data, event in rows],
    )


async def forget_room(conn: aiosqlite.Connection, room_id: str) -> None:
    """Before the room's messages are deleted."""
    await conn.execute(
        "DELETE FROM message_fts WHERE rowid IN"
        " (SELECT rowid FROM searchable_messages WHERE room_id = ?)",
        (room_id,),
    )


async def forget_before(conn: aiosqlite.Connection, ts: int) -> None:
    """Before the messages older than `ts` (microseconds) are deleted."""
    await conn.execute(
        "DELETE FROM message_fts WHERE rowid IN (SELECT rowid FROM searchable_messages"
        " WHERE ts < ?)",
        (ts,),
    )


async def indexed_upto(conn: aiosqlite.Connection) -> int:
    async with conn.execute("SELECT value FROM search_state WHERE key = 'indexed_upto'") as cur:
        row: Any = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def set_indexed_upto(conn: aiosqlite.Connection, rowid: int) -> None:
    await conn.execute(
        "INSERT INTO search_state (key, value) VALUES ('indexed_upto', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (rowid,),
    )


async def mark_unindexed(conn: aiosqlite.Connection) -> None:
    """Messages are appended without indexing from now on."""
    await set_indexed_upto(conn, 0)
