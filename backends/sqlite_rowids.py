"""Message rowids of the SQLite store are never given twice.

A message's rowid outlives its row: compaction (backends/sqlite_blocks.py)
deletes the row and keeps the rowid in the message's block, its search key
row (`compacted_messages`) and its FTS row. SQLite gives a new row
max(rowid) + 1, which, once the rows with the highest rowids are gone, is a
rowid such a message still has: its FTS row would be overwritten and search
would see two messages under one id.

So the file keeps the highest rowid a deleted message row had
(`message_rowid_floor.top`), raised by a trigger on every delete from
`messages` (compaction, retention, a room's deletion, by any process or
code path), and every insert takes `NEXT_ROWID`: one above both it and the
table's highest rowid. Both are B-tree seeks inside the insert's own
statement, read under the write lock, so they are right for batches
(each row sees the ones before it), retried appends and other processes
on the file alike, without a round trip to the database thread.
"""

from __future__ import annotations

import logging
from typing import Final

import aiosqlite

from .blocks import Body
from .errors import DataCorrupted
from .sqlite_blocks import E_ROWID, BlockCache, fetch_on, key_rows_missing

__all__ = ["NEXT_ROWID", "keep_rowids"]

log = logging.getLogger(__name__)

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS message_rowid_floor (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        top INTEGER NOT NULL
    )""",
    # WHEN: compaction and retention delete the oldest rows, rarely the top one.
    """CREATE TRIGGER IF NOT EXISTS messages_keep_rowid AFTER DELETE ON messages
        WHEN OLD.rowid > (SELECT top FROM message_rowid_floor)
    BEGIN
        UPDATE message_rowid_floor SET top = OLD.rowid;
    END""",
)

NEXT_ROWID: Final = (
    "(SELECT MAX(top, IFNULL((SELECT MAX(rowid) FROM messages), 0)) + 1 FROM message_rowid_floor)"
)
"""The rowid of a message row being inserted, as an SQL expression."""


async def keep_rowids(conn: aiosqlite.Connection) -> None:
    """At open, inside the caller's transaction (after the other tables are
    made): the floor table and its trigger; a file made before them gets
    the highest rowid its compacted messages and FTS rows still hold."""
    for statement in _SCHEMA:
        await conn.execute(statement)
    rows = await conn.execute_fetchall("SELECT top FROM message_rowid_floor")
    if rows:
        return
    await conn.execute(
        "INSERT INTO message_rowid_floor (one, top) VALUES (1, ?)", (await _highest_kept(conn),)
    )


async def _highest_kept(conn: aiosqlite.Connection) -> int:
    """The highest rowid held outside `messages`: by a key row, an FTS row,
    or (for rooms compacted while search was elsewhere: no key rows) a
    block, decoded once here."""
    fetch = fetch_on(conn)
    found = [
        *await fetch("SELECT MAX(rowid) FROM compacted_messages", ()),
        *await fetch("SELECT rowid FROM message_fts ORDER BY rowid DESC LIMIT 1", ()),
    ]
    top = max((int(r[0]) for r in found if r[0] is not None), default=0)
    cache = BlockCache(capacity=1)
    for block in await key_rows_missing(fetch):
        try:
            entries: list[Body] = await cache.entries(block, fetch)
        except DataCorrupted as exc:
            # Its messages cannot be read nor indexed: their rowids come back nowhere.
            log.warning("rowids of a damaged block not read: %s", exc)
            continue
        top = max([top, *(int(e[E_ROWID]) for e in entries)])
    return top
