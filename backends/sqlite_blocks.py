"""Old messages of the SQL stores packed into compressed blocks (format:
backends/blocks.py). Written for SQLite; PostgreSQL runs the same statements
through a connection that numbers their `?` (backends/postgres/blocks.py),
with its own columns and search copy (`BlockDialect`).

Compaction moves a room's messages, oldest first, from `messages` into
`message_blocks`, one transaction per batch: the blocks are written, the
rows deleted and the room's watermark (`streams.compacted_upto`) moved, so a
kill at any point leaves either the rows or the blocks, never both or
neither. Offsets up to the watermark are in blocks, those after it in rows:
a page reads the blocks for the part of its range below the watermark.

Two small side tables keep what other readers need by key:
- `compacted_client_ids`: (room, user, clientMessageId) -> offset, for the
  idempotency window after the send (`idempotency_window`), then dropped;
- `compacted_messages`: with the search index on the same file, a row per
  compacted message with the columns search filters and orders on and the
  message's old rowid, which its FTS row keeps pointing to. Search looks
  each match up in `messages` and in this table (a join with the
  `searchable_messages` view, which unites them, would be materialized
  whole: backends/sqlite_search.py); its message bodies come from the
  blocks. No full VACUUM ever renumbers rowids:
  freed pages go back with `PRAGMA incremental_vacuum`; nor is the rowid
  of a compacted message ever given to a new one (backends/sqlite_rowids.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from .blocks import BlockUnreadable, Body, PackedRun, pack, pack_run, unpack
from .compaction import CompactionStats
from .errors import DataCorrupted
from .records import HistoryWindow

__all__ = [
    "BLOCKS_SCHEMA",
    "E_ROWID",
    "SQLITE_DIALECT",
    "BlockCache",
    "BlockConnection",
    "BlockDialect",
    "BlockInfo",
    "Fetch",
    "add_key_rows",
    "cold_rows",
    "compact_room",
    "compacted_client_row",
    "drop_room_blocks",
    "fetch_on",
    "hydrate",
    "key_rows_missing",
    "steady_rows",
    "trim_blocks",
    "window_rows",
]

BLOCKS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS message_blocks (
    id INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    min_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    count INTEGER NOT NULL,
    dict_id INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS message_blocks_room ON message_blocks (room_id, last_seq);
CREATE INDEX IF NOT EXISTS message_blocks_ts ON message_blocks (last_ts);
CREATE TABLE IF NOT EXISTS block_dicts (
    id INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS block_dicts_room ON block_dicts (room_id);
CREATE TABLE IF NOT EXISTS compacted_client_ids (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    client_message_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id, client_message_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS compacted_messages (
    rowid INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT,
    kind TEXT,
    user_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    channel_id TEXT,
    event TEXT,
    data TEXT,
    metadata TEXT,
    thread_id TEXT,
    client_message_id TEXT
);
CREATE VIEW IF NOT EXISTS searchable_messages AS
    SELECT rowid AS rowid, room_id, seq, id, kind, user_id, ts, channel_id, event, data,
        metadata, thread_id, client_message_id FROM messages
    UNION ALL
    SELECT rowid, room_id, seq, id, kind, user_id, ts, channel_id, event, data,
        metadata, thread_id, client_message_id FROM compacted_messages;
"""

Row = Sequence[Any]
Fetch = Callable[[str, Sequence[Any]], Awaitable[list[Row]]]


class BlockConnection(Protocol):
    """What the writes below use of a connection in a transaction: the
    subset of aiosqlite's, statements with `?` parameters."""

    async def execute_fetchall(self, sql: str, parameters: Sequence[Any]) -> Any: ...

    def execute(self, sql: str, parameters: Sequence[Any]) -> Awaitable[Any]: ...

    async def executemany(self, sql: str, parameters: Any) -> Any: ...


def fetch_on(conn: BlockConnection) -> Fetch:
    """Reads on this connection (inside its caller's transaction)."""

    async def fetch(sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(await conn.execute_fetchall(sql, params))

    return fetch


# A block entry: [seq, rowid, id, kind, user_id, ts, channel_id, event, data,
# metadata, thread_id, client_message_id]; a message row (backends/sqlite.py
# _MESSAGE_COLUMNS): id, kind, user_id, ts, seq, epoch, room_id, channel_id,
# event, data, metadata, thread_id, client_message_id.
_ENTRY_COLUMNS: Final = (
    "seq, rowid, id, kind, user_id, ts, channel_id, event, data, metadata, thread_id,"
    " client_message_id"
)
E_SEQ, E_ROWID, E_USER, E_TS, E_EVENT, E_DATA, E_THREAD, E_CID = 0, 1, 4, 5, 7, 8, 10, 11


@dataclass(frozen=True, slots=True)
class BlockDialect:
    """What differs between the SQL stores in a compaction."""

    entry_columns: str
    """The block entry's columns, as read from `messages` (ts in microseconds)."""
    search_copy: str
    """Copies the searched columns of a room's rows seq BETWEEN ? AND ? to
    `compacted_messages`."""
    lock: str = ""
    """Appended to the read of the watermark in the write transaction, so
    that two compactions of one room wait for each other."""


SQLITE_DIALECT: Final = BlockDialect(
    entry_columns=_ENTRY_COLUMNS,
    search_copy=(
        "INSERT INTO compacted_messages (rowid, room_id, seq, user_id, ts, event,"
        " thread_id) SELECT rowid, room_id, seq, user_id, ts, event, thread_id"
        " FROM messages WHERE room_id = ? AND seq BETWEEN ? AND ?"
    ),
)


def entry_row(entry: Body, epoch: str, room_id: str) -> tuple[Any, ...]:
    e = entry
    return (e[2], e[3], e[4], e[5], e[0], epoch, room_id, e[6], e[7], e[8], e[9], e[10], e[11])


@dataclass(frozen=True, slots=True)
class BlockInfo:
    id: int
    room_id: str
    dict_id: int


class BlockCache:
    """Recently decoded blocks, by block id (a block is never changed in
    place: a rewrite gets a new id), so that paging through old history
    decodes each block once."""

    def __init__(self, capacity: int = 64) -> None:
        self._capacity = capacity
        self._blocks: OrderedDict[int, list[Body]] = OrderedDict()

    def has(self, block_id: int) -> bool:
        return block_id in self._blocks

    async def entries(self, block: BlockInfo, fetch: Fetch) -> list[Body]:
        cached = self._blocks.get(block.id)
        if cached is not None:
            self._blocks.move_to_end(block.id)
            return cached
        rows = await fetch("SELECT body FROM message_blocks WHERE id = ?", (block.id,))
        if not rows:
            raise DataCorrupted(block.room_id, block.id, "block missing")
        dictionary: bytes | None = None
        if block.dict_id:
            found = await fetch("SELECT body FROM block_dicts WHERE id = ?", (block.dict_id,))
            if not found:
                raise DataCorrupted(block.room_id, block.id, f"dictionary {block.dict_id} missing")
            dictionary = bytes(found[0][0])
        try:
            entries = unpack(bytes(rows[0][0]), dictionary)
        except BlockUnreadable as exc:
            raise DataCorrupted(block.room_id, block.id, str(exc)) from None
        self._blocks[block.id] = entries
        if len(self._blocks) > self._capacity:
            self._blocks.popitem(last=False)
        return entries


async def cold_rows(
    fetch: Fetch,
    cache: BlockCache,
    room_id: str,
    epoch: str,
    *,
    low: int,
    high: int,
    descending: bool,
    want: int,
    thread_id: str | None,
    min_ts: int | None,
) -> list[tuple[Any, ...]]:
    """Up to `want` compacted messages of the room with low < offset < high,
    in the order asked, as message rows."""
    found: list[tuple[Any, ...]] = []
    order = "DESC" if descending else "ASC"
    cursor_low, cursor_high = low, high
    while len(found) < want and cursor_low + 1 < cursor_high:
        metas = await fetch(
            "SELECT id, first_seq, last_seq, last_ts, dict_id FROM message_blocks"
            " WHERE room_id = ? AND last_seq > ? AND first_seq < ?"
            f" ORDER BY last_seq {order} LIMIT 8",
            (room_id, cursor_low, cursor_high),
        )
        if not metas:
            break
        for block_id, first_seq, last_seq, last_ts, dict_id in metas:
            if descending:
                cursor_high = first_seq
            else:
                cursor_low = last_seq
            if min_ts is not None and last_ts < min_ts:
                continue  # all of it is past retention
            cached = cache.has(block_id)
            entries = await cache.entries(BlockInfo(block_id, room_id, dict_id), fetch)
            if not cached:
                # A filter that matches rarely (a thread) may decode many
                # blocks: let other work run between two, a block being
                # a fraction of a millisecond.
                await asyncio.sleep(0)
            picked = [
                e
                for e in (reversed(entries) if descending else entries)
                if low < e[E_SEQ] < high
                and (thread_id is None or e[E_THREAD] == thread_id)
                and (min_ts is None or e[E_TS] >= min_ts)
            ]
            found.extend(entry_row(e, epoch, room_id) for e in picked[: want - len(found)])
            if len(found) >= want:
                break
    return found


async def hydrate(rows: Sequence[Row], fetch: Fetch, cache: BlockCache) -> list[Row]:
    """Message rows with the bodies of compacted ones (data NULL: a row of
    `compacted_messages`) read from their blocks.

    The rows and the blocks are read in two steps: retention or a room's
    deletion may delete a message in between (its key row and its block in
    one transaction). Such a row is left out, as if it had expired before
    the search; a block missing while its key row is still there is damage."""
    out: list[Row] = []
    for row in rows:
        if row[9] is not None:
            out.append(row)
            continue
        try:
            entry = await _compacted_entry(row[6], row[4], fetch, cache)
        except DataCorrupted:
            if await fetch(
                "SELECT 1 FROM compacted_messages WHERE room_id = ? AND seq = ? LIMIT 1",
                (row[6], row[4]),
            ):
                raise
            continue  # deleted since the rows were read
        # Columns after the message's own (a search score) stay as read.
        out.append((*entry_row(entry, row[5], row[6]), *row[13:]))
    return out


async def _compacted_entry(room_id: str, seq: int, fetch: Fetch, cache: BlockCache) -> Body:
    metas = await fetch(
        "SELECT id, dict_id FROM message_blocks WHERE room_id = ? AND last_seq >= ?"
        " AND first_seq <= ? ORDER BY last_seq LIMIT 1",
        (room_id, seq, seq),
    )
    if not metas:
        raise DataCorrupted(room_id, 0, f"offset {seq} is in no block")
    entries = await cache.entries(BlockInfo(metas[0][0], room_id, metas[0][1]), fetch)
    entry = next((e for e in entries if e[E_SEQ] == seq), None)
    if entry is None:
        raise DataCorrupted(room_id, metas[0][0], f"offset {seq} missing from its block")
    return entry


async def compact_room(
    fetch: Fetch,
    transaction: Callable[[], Any],
    room_id: str,
    *,
    before_ts: int,
    client_ids_since: int,
    max_messages: int,
    searchable: bool,
    dialect: BlockDialect = SQLITE_DIALECT,
) -> tuple[CompactionStats, bool]:
    """Pack up to `max_messages` of the room's oldest uncompacted messages
    stamped before `before_ts` into blocks; True if more may be left.

    The rows are read and compressed (in a worker thread) outside any
    transaction; the write checks that nothing changed meanwhile (another
    compaction, retention, the room dropped) and otherwise writes nothing."""
    started = time.perf_counter()
    stream = await fetch("SELECT compacted_upto FROM streams WHERE room_id = ?", (room_id,))
    if not stream:
        return CompactionStats(), False
    upto = int(stream[0][0])
    rows = await fetch(
        f"SELECT {dialect.entry_columns} FROM messages WHERE room_id = ? AND seq > ?"
        " ORDER BY seq LIMIT ?",
        (room_id, upto, max_messages),
    )
    bodies: list[Body] = []
    for row in rows:
        if row[E_TS] >= before_ts:
            break
        bodies.append(list(row))
    if not bodies:
        return CompactionStats(), False
    packed: PackedRun = await asyncio.to_thread(pack_run, bodies)
    first, last = bodies[0][E_SEQ], bodies[-1][E_SEQ]
    stats = CompactionStats(
        messages=len(bodies),
        blocks=len(packed.blocks),
        bytes_before=sum(_text_bytes(b) for b in bodies),
        bytes_after=sum(len(b) for _, b in packed.blocks) + len(packed.dictionary or b""),
    )
    async with transaction() as conn:
        now = await _all(
            conn, f"SELECT compacted_upto FROM streams WHERE room_id = ?{dialect.lock}", (room_id,)
        )
        count = await _all(
            conn,
            "SELECT COUNT(*) FROM messages WHERE room_id = ? AND seq BETWEEN ? AND ?",
            (room_id, first, last),
        )
        if not now or int(now[0][0]) != upto or int(count[0][0]) != len(bodies):
            return CompactionStats(), True  # changed meanwhile: read again
        dict_id = 0
        if packed.dictionary is not None:
            made = await _all(
                conn,
                "INSERT INTO block_dicts (room_id, body) VALUES (?, ?) RETURNING id",
                (room_id, packed.dictionary),
            )
            dict_id = int(made[0][0])
        await conn.executemany(
            _INSERT_BLOCK, [_block_row(room_id, g, dict_id, blob) for g, blob in packed.blocks]
        )
        await conn.executemany(
            "INSERT INTO compacted_client_ids (room_id, user_id, client_message_id, seq, ts)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, user_id, client_message_id)"
            " DO UPDATE SET seq = excluded.seq, ts = excluded.ts",
            [
                (room_id, b[E_USER], b[E_CID], b[E_SEQ], b[E_TS])
                for b in bodies
                if b[E_CID] is not None and b[E_TS] >= client_ids_since
            ],
        )
        if searchable:
            await conn.execute(dialect.search_copy, (room_id, first, last))
        await conn.execute(
            "DELETE FROM messages WHERE room_id = ? AND seq BETWEEN ? AND ?",
            (room_id, first, last),
        )
        await conn.execute(
            "UPDATE streams SET compacted_upto = ? WHERE room_id = ?", (last, room_id)
        )
    stats.seconds = time.perf_counter() - started
    return stats, len(rows) == max_messages or len(bodies) < len(rows)


_INSERT_BLOCK = (
    "INSERT INTO message_blocks (room_id, first_seq, last_seq, min_ts, last_ts, count,"
    " dict_id, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _block_row(room_id: str, entries: Sequence[Body], dict_id: int, body: bytes) -> tuple[Any, ...]:
    """The `message_blocks` row of a block holding `entries` (in offset order)."""
    return (
        room_id,
        entries[0][E_SEQ],
        entries[-1][E_SEQ],
        min(e[E_TS] for e in entries),
        max(e[E_TS] for e in entries),
        len(entries),
        dict_id,
        body,
    )


async def key_rows_missing(fetch: Fetch) -> list[BlockInfo]:
    """The blocks of the rooms some of whose compacted messages have no
    `compacted_messages` row: compacted while the search role was on
    another file, so never indexed (the search role's backfill adds them)."""
    rows = await fetch(
        "SELECT id, room_id, dict_id FROM message_blocks WHERE room_id IN"
        " (SELECT b.room_id FROM"
        " (SELECT room_id, SUM(count) AS n FROM message_blocks GROUP BY room_id) b"
        " LEFT JOIN (SELECT room_id, COUNT(*) AS n FROM compacted_messages GROUP BY room_id) k"
        " ON k.room_id = b.room_id WHERE k.n IS NULL OR k.n < b.n)"
        " ORDER BY room_id, last_seq",
        (),
    )
    return [BlockInfo(int(r[0]), r[1], int(r[2])) for r in rows]


async def add_key_rows(
    conn: BlockConnection, block: BlockInfo, entries: Sequence[Body]
) -> list[tuple[int, str, str, str | None]]:
    """Inside the caller's transaction: the missing `compacted_messages`
    rows of the block's messages; returns (rowid, room, data, event) of
    each message given one, to index. Nothing if the block is gone."""
    if not entries or not await _all(
        conn, "SELECT 1 FROM message_blocks WHERE id = ?", (block.id,)
    ):
        return []
    marks = ", ".join("?" * len(entries))
    have = await _all(
        conn,
        f"SELECT rowid FROM compacted_messages WHERE rowid IN ({marks})",
        [e[E_ROWID] for e in entries],
    )
    known = {int(r[0]) for r in have}
    new = [e for e in entries if e[E_ROWID] not in known]
    await conn.executemany(
        "INSERT INTO compacted_messages (rowid, room_id, seq, user_id, ts, event, thread_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (e[E_ROWID], block.room_id, e[E_SEQ], e[E_USER], e[E_TS], e[E_EVENT], e[E_THREAD])
            for e in new
        ],
    )
    return [(e[E_ROWID], block.room_id, e[E_DATA], e[E_EVENT]) for e in new]


def _text_bytes(body: Body) -> int:
    return sum(len(v.encode()) if isinstance(v, str) else 8 for v in body)


async def _all(conn: BlockConnection, sql: str, params: Sequence[Any] = ()) -> list[Row]:
    return list(await conn.execute_fetchall(sql, params))


async def drop_room_blocks(conn: BlockConnection, room_id: str) -> None:
    """Inside the caller's transaction, before the stream row is deleted."""
    await conn.execute("DELETE FROM message_blocks WHERE room_id = ?", (room_id,))
    await conn.execute("DELETE FROM block_dicts WHERE room_id = ?", (room_id,))
    await conn.execute("DELETE FROM compacted_client_ids WHERE room_id = ?", (room_id,))
    await conn.execute("DELETE FROM compacted_messages WHERE room_id = ?", (room_id,))


async def trim_blocks(conn: BlockConnection, cutoff: int) -> int:
    """Retention inside the caller's transaction: delete the blocks all of
    whose messages are older than `cutoff`, rewrite a block only some of
    whose are; a dictionary that loses any of the blocks it was trained on
    goes, and its other blocks are rewritten without it. Returns the
    messages removed."""
    removed = 0
    doomed = await _all(
        conn, "SELECT id, room_id, count, dict_id FROM message_blocks WHERE last_ts < ?", (cutoff,)
    )
    retired = {int(r[3]) for r in doomed if r[3]}
    for block_id, _room, count, _dict in doomed:
        removed += int(count)
        await conn.execute("DELETE FROM message_blocks WHERE id = ?", (block_id,))
    # Blocks that hold messages on both sides of the cutoff.
    partial = await _all(
        conn,
        "SELECT id, room_id, dict_id FROM message_blocks WHERE min_ts < ? AND last_ts >= ?",
        (cutoff, cutoff),
    )
    dicts: dict[int, bytes | None] = {}
    for block_id, room_id, dict_id in partial:
        entries = await _block_entries(conn, block_id, room_id, dict_id, dicts)
        kept = [e for e in entries if e[E_TS] >= cutoff]
        if len(kept) == len(entries):
            continue
        removed += len(entries) - len(kept)
        if dict_id:
            retired.add(int(dict_id))
        await _rewrite(conn, block_id, room_id, kept)
    for dict_id in retired:
        users = await _all(
            conn, "SELECT id, room_id FROM message_blocks WHERE dict_id = ?", (dict_id,)
        )
        for block_id, room_id in users:
            entries = await _block_entries(conn, block_id, room_id, dict_id, dicts)
            await _rewrite(conn, block_id, room_id, entries)
        await conn.execute("DELETE FROM block_dicts WHERE id = ?", (dict_id,))
    await conn.execute("DELETE FROM compacted_client_ids WHERE ts < ?", (cutoff,))
    # `compacted_messages` is the caller's: its ts is the store's own type.
    return removed


async def _block_entries(
    conn: BlockConnection,
    block_id: int,
    room_id: str,
    dict_id: int,
    dicts: dict[int, bytes | None],
) -> list[Body]:
    rows = await _all(conn, "SELECT body FROM message_blocks WHERE id = ?", (block_id,))
    if dict_id and dict_id not in dicts:
        found = await _all(conn, "SELECT body FROM block_dicts WHERE id = ?", (dict_id,))
        dicts[dict_id] = bytes(found[0][0]) if found else None
    dictionary = dicts.get(dict_id) if dict_id else None
    if not rows or (dict_id and dictionary is None):
        raise DataCorrupted(room_id, block_id, "block or its dictionary missing")
    try:
        # Off the event loop: retention may rewrite a block per room at once.
        return await asyncio.to_thread(unpack, bytes(rows[0][0]), dictionary)
    except BlockUnreadable as exc:
        raise DataCorrupted(room_id, block_id, str(exc)) from None


async def _rewrite(conn: BlockConnection, block_id: int, room_id: str, entries: list[Body]) -> None:
    """Replace the block by one of `entries` without dictionary, under a new
    id (readers cache blocks by id)."""
    await conn.execute("DELETE FROM message_blocks WHERE id = ?", (block_id,))
    if not entries:
        return
    body = await asyncio.to_thread(pack, entries)
    await conn.execute(_INSERT_BLOCK, _block_row(room_id, entries, 0, body))


ClientKey = tuple[str, str, str]


async def compacted_client_row(
    fetch: Fetch, cache: BlockCache, key: ClientKey, *, incarnation: str | None
) -> tuple[Any, ...] | None:
    """The message row with this (room, user, clientMessageId) if it was
    compacted within the idempotency window."""
    room_id, user_id, client_message_id = key
    rows = await fetch(
        "SELECT c.seq, s.epoch, s.incarnation FROM compacted_client_ids c"
        " JOIN streams s ON s.room_id = c.room_id"
        " WHERE c.room_id = ? AND c.user_id = ? AND c.client_message_id = ?",
        (room_id, user_id, client_message_id),
    )
    if not rows or (incarnation is not None and rows[0][2] != incarnation):
        return None
    seq, epoch = int(rows[0][0]), rows[0][1]
    found = await cold_rows(
        fetch,
        cache,
        room_id,
        epoch,
        low=seq - 1,
        high=seq + 1,
        descending=False,
        want=1,
        thread_id=None,
        min_ts=None,
    )
    return found[0] if found else None


Rows = Callable[[int], Awaitable[list[Row]]]
M = TypeVar("M")

_PAGE_ATTEMPTS: Final = 4


async def window_rows(
    fetch: Fetch,
    cache: BlockCache,
    room_id: str,
    mark: tuple[str, int],
    window: HistoryWindow,
    *,
    min_ts: int | None,
    hot: Rows,
) -> list[Row]:
    """Up to limit + 1 rows of the window in the direction of travel: from
    blocks for offsets up to the watermark (`mark`: epoch, compacted_upto),
    from `hot` (the table) after it."""
    epoch, upto = mark
    want = window.limit + 1
    low = window.after or 0
    high = upto + 1 if window.before is None else min(window.before, upto + 1)

    async def cold(count: int) -> list[Row]:
        if upto == 0 or low >= upto or count <= 0:
            return []
        return list(
            await cold_rows(
                fetch,
                cache,
                room_id,
                epoch,
                low=low,
                high=high,
                descending=window.from_end,
                want=count,
                thread_id=window.thread_id,
                min_ts=min_ts,
            )
        )

    if window.from_end:
        rows = await hot(want)
        return rows + await cold(want - len(rows))
    rows = await cold(want)
    if len(rows) < want:
        rows += await hot(want - len(rows))
    return rows


async def steady_rows(
    room_id: str,
    mark: Callable[[], Awaitable[M | None]],
    read: Callable[[M], Awaitable[list[Row]]],
) -> list[Row]:
    """What `read` gives at a watermark that did not move meanwhile: a
    compaction may move messages from rows to blocks between the reads of a
    page, so the room's mark is read before and after, and the page read
    again if it moved. No rows if the room has no history."""
    for _ in range(_PAGE_ATTEMPTS):
        before = await mark()
        if before is None:
            return []
        rows = await read(before)
        if await mark() == before:
            return rows
    raise DataCorrupted(room_id, 0, "history kept moving under the read")


# A room whose rows keep changing under compaction is left for the next pass.
_MAX_BATCHES_PER_ROOM_PASS: Final = 100_000


async def compact_rooms(
    rooms: Sequence[str],
    one_batch: Callable[[str], Awaitable[tuple[CompactionStats, bool]]],
    *,
    pause: float,
    progress: Callable[[CompactionStats], None] | None,
    after_batch: Callable[[], Awaitable[None]] | None = None,
) -> CompactionStats:
    """Compact room by room, `one_batch` (a `compact_room`) at a time,
    sleeping `pause` seconds between batches; `progress` is told the
    running totals after each batch that moved messages."""
    total = CompactionStats()
    for room_id in rooms:
        for _ in range(_MAX_BATCHES_PER_ROOM_PASS):
            stats, more = await one_batch(room_id)
            if stats.messages:
                total.add(stats)
                if after_batch is not None:
                    await after_batch()
                if progress is not None:
                    progress(total)
            await asyncio.sleep(pause)
            if not more:
                break
    return total
