"""SQLite implementations of the durable roles: history, rooms and channels.

One `SqliteDatabase` owns one aiosqlite connection shared by every store
built on it. The connection runs in autocommit mode; a store that needs more
than one statement takes the database's lock and opens an explicit
transaction, so coroutines never interleave inside one. Reads take the same
lock, so they never see another coroutine's uncommitted writes; reads by key
(`lookup`) go to a second, read-only connection on the event loop, which
sees only what is committed. Message appends are group-committed: one writer
task puts the appends that arrive together into one transaction.

JSON fields are orjson text; datetimes are integer microseconds since the
Unix epoch, read back as UTC.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from .codecs import from_micros, message_from_row, to_micros
from .compaction import COMPACT_BATCH, CompactionStats
from .errors import Conflict, ForeignStream, LimitReached, Missing
from .group_commit import GroupCommit
from .records import (
    NO_QUOTA,
    Channel,
    HistoryPage,
    HistoryWindow,
    MemberQuota,
    Message,
    NewMessage,
    Room,
    RoomMember,
    RoomRole,
    StreamPosition,
    new_epoch,
    utcnow,
)
from .sqlite_blocks import (
    BLOCKS_SCHEMA,
    BlockCache,
    ClientKey,
    Fetch,
    cold_rows,
    compact_room,
    compact_rooms,
    compacted_client_row,
    drop_room_blocks,
    fetch_on,
    steady_rows,
    trim_blocks,
    window_rows,
)
from .sqlite_fts import FTS_SCHEMA, forget_before, forget_room, index_messages, mark_unindexed
from .sqlite_rowids import NEXT_ROWID, keep_rowids

__all__ = [
    "SqliteChannelStore",
    "SqliteDatabase",
    "SqliteMessageStore",
    "SqliteRoomStore",
    "sqlite_path",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    room_id TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    last_offset INTEGER NOT NULL,
    incarnation TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS messages (
    room_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    user_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    channel_id TEXT,
    event TEXT,
    data TEXT NOT NULL,
    metadata TEXT NOT NULL,
    thread_id TEXT,
    client_message_id TEXT,
    PRIMARY KEY (room_id, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_client_id
    ON messages (room_id, user_id, client_message_id)
    WHERE client_message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_thread ON messages (room_id, thread_id, seq);
CREATE INDEX IF NOT EXISTS messages_ts ON messages (ts);
CREATE TABLE IF NOT EXISTS rooms (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    is_private INTEGER NOT NULL,
    description TEXT,
    metadata TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    incarnation TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS rooms_created ON rooms (created_at, id);
CREATE TABLE IF NOT EXISTS members (
    room_id TEXT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,
    joined_at INTEGER NOT NULL,
    added INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX IF NOT EXISTS members_user ON members (user_id);
CREATE TABLE IF NOT EXISTS bans (
    room_id TEXT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE TABLE IF NOT EXISTS channels (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_by TEXT NOT NULL,
    is_private INTEGER NOT NULL,
    description TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS channels_creator ON channels (created_by);
CREATE TABLE IF NOT EXISTS grants (
    channel_id TEXT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    PRIMARY KEY (channel_id, user_id)
);
"""

# Columns added after the first release: a file made before gets them on
# open, with defaults that keep its data as it was (rooms and histories of
# LEGACY_INCARNATION; every membership the user's own).
_ADDED_COLUMNS = (
    ("streams", "incarnation", "TEXT NOT NULL DEFAULT ''"),
    ("rooms", "incarnation", "TEXT NOT NULL DEFAULT ''"),
    ("members", "added", "INTEGER NOT NULL DEFAULT 0"),
    # Offsets up to here are in compressed blocks (backends/sqlite_blocks.py).
    ("streams", "compacted_upto", "INTEGER NOT NULL DEFAULT 0"),
)


async def _add_missing_columns(connection: aiosqlite.Connection) -> None:
    for table, column, declaration in _ADDED_COLUMNS:
        rows = await connection.execute_fetchall(f"PRAGMA table_info({table})")
        if column not in {row[1] for row in rows}:
            await connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def _dump(value: Any) -> str:
    return orjson.dumps(value).decode()


Row = Sequence[Any]

# SQLite gives the -wal and -shm files the database file's own mode.
_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def _create_private(path: Path) -> None:
    """Make the database file (and its folder, when new) private to this
    user: the history of private rooms must not be readable by others on a
    shared host, and SQLite would create the file 0644 under a usual umask."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for suffix in _SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", 0o600)


# SQLite calls a loop-side read's progress handler every _PROGRESS_STEPS
# virtual-machine steps; a read that runs past its budget is stopped there
# and done on the writer's thread instead (a page that has to skip many
# expired messages, say), so it never holds the event loop for long.
_PROGRESS_STEPS = 1000
LOOP_READ_STEPS = 20_000
"""Budget of a read on the event loop, in SQLite VM steps: a page of 200
messages takes about 3,600, a lookup by key a few dozen."""


class _LoopReader:
    """A read-only connection in autocommit mode (each read sees the latest
    commit) that never waits for a lock, used on the event loop."""

    def __init__(self, path: Path, max_steps: int) -> None:
        self._conn = sqlite3.connect(path, timeout=0, isolation_level=None)
        self._conn.execute("PRAGMA query_only = ON")
        self._ticks = max(1, max_steps // _PROGRESS_STEPS)
        self._left = self._ticks
        self._conn.set_progress_handler(self._tick, _PROGRESS_STEPS)

    def _tick(self) -> int:
        self._left -= 1
        return 1 if self._left < 0 else 0

    def read(self, sql: str, params: Sequence[Any]) -> list[Row] | None:
        """The rows, or None if the file was busy or the read ran over budget."""
        self._left = self._ticks
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return None

    def close(self) -> None:
        self._conn.close()


class SqliteDatabase:
    """One SQLite file: the connection, its lock, and the schema."""

    def __init__(self, connection: aiosqlite.Connection, reader: _LoopReader | None = None) -> None:
        self._connection = connection
        self._reader = reader
        self._lock = asyncio.Lock()
        self._closed = False
        self._commits = 0
        self.blocks = BlockCache()
        """Decoded blocks of old messages, shared by history and search."""

    @classmethod
    async def open(
        cls, path: str | Path, *, loop_read_steps: int = LOOP_READ_STEPS
    ) -> SqliteDatabase:
        """Open (creating if needed) the database file and its schema.

        Reads by key are answered on the event loop (`lookup`) while they
        take at most `loop_read_steps` SQLite steps."""
        path = Path(path)
        if str(path) != ":memory:":
            _create_private(path)
        connection = await aiosqlite.connect(path, isolation_level=None)
        try:
            # Only a new file takes it (an existing one keeps its mode until
            # a full VACUUM, which this server never runs): compaction then
            # gives freed pages back with `PRAGMA incremental_vacuum`.
            await connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
            await connection.execute("PRAGMA journal_mode = WAL")
            await connection.execute("PRAGMA foreign_keys = ON")
            await connection.execute("PRAGMA busy_timeout = 5000")
            await connection.execute("PRAGMA synchronous = NORMAL")
            await connection.executescript(_SCHEMA)
            await connection.executescript(FTS_SCHEMA)
            await _add_missing_columns(connection)
            await connection.executescript(BLOCKS_SCHEMA)
            # One transaction: no row is deleted between the trigger that
            # keeps the top rowid and the top's first reading.
            await connection.execute("BEGIN IMMEDIATE")
            await keep_rowids(connection)
            await connection.commit()
        except BaseException:
            await connection.close()
            raise
        reader = None if str(path) == ":memory:" else _LoopReader(path, loop_read_steps)
        return cls(connection, reader)

    async def close(self) -> None:
        """Close the connection; later calls do nothing."""
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            await self._connection.close()

    async def ping(self) -> None:
        """Raise if the database cannot answer a query."""
        rows = await self.fetch("SELECT 1")
        if list(rows) != [(1,)]:
            raise RuntimeError("sqlite ping returned an unexpected answer")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Hold the lock and a write transaction; commit on success."""
        async with self._lock:
            try:
                await self._connection.execute("BEGIN IMMEDIATE")
                yield self._connection
            except BaseException:
                await self._connection.rollback()
                raise
            await self._connection.commit()
            self._commits += 1

    @property
    def commits(self) -> int:
        """Write transactions committed so far (group commit shows in it)."""
        return self._commits

    async def appending_unindexed(self) -> None:
        """Record that messages are appended without their FTS rows from now
        on, so that the search role indexes them when it comes back."""
        async with self.transaction() as conn:
            await mark_unindexed(conn)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._lock:
            return list(await self._connection.execute_fetchall(sql, params))

    async def lookup(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """A read by key (a room, a member, a ban, a page of history),
        answered on the event loop from the reader connection: SQLite takes
        microseconds for it, far less than a hop to the writer's thread, and
        every message sent needs several. It sees what is committed. A read
        that finds the file busy (WAL recovery, rare) or runs over its budget
        is done on the writer's thread instead."""
        if self._reader is not None:
            rows = self._reader.read(sql, params)
            if rows is not None:
                return rows
        return await self.fetch(sql, params)

    async def give_back_space(self) -> None:
        """Return the file's free pages to the file system, a bounded number
        at a time, between write transactions (no-op unless the file was
        made with auto_vacuum = INCREMENTAL)."""
        # executescript steps the pragma to the end; execute would stop
        # after its first step, one page.
        async with self._lock:
            await self._connection.executescript("PRAGMA incremental_vacuum(2000);")

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        async with self._lock, self._connection.execute(sql, params) as cursor:
            return cursor.rowcount


async def _one(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> Row | None:
    async with conn.execute(sql, params) as cursor:
        return await cursor.fetchone()


async def drop_room_rows(conn: aiosqlite.Connection, room_id: str, incarnation: str | None) -> bool:
    """A room's history, search index rows and stream, unless the stream is
    of another incarnation than the one named (then False: nothing dropped)."""
    if incarnation is not None:
        row = await _one(conn, "SELECT incarnation FROM streams WHERE room_id = ?", (room_id,))
        if row is not None and row[0] != incarnation:
            return False
    await forget_room(conn, room_id)
    await conn.execute("DELETE FROM messages WHERE room_id = ?", (room_id,))
    await conn.execute("DELETE FROM streams WHERE room_id = ?", (room_id,))
    return True


# --- messages -------------------------------------------------------------

_MESSAGE_COLUMNS = (
    "m.id, m.kind, m.user_id, m.ts, m.seq, s.epoch, m.room_id, m.channel_id, m.event,"
    " m.data, m.metadata, m.thread_id, m.client_message_id"
)
_MESSAGE_FROM = "messages m JOIN streams s ON s.room_id = m.room_id"


def _message(row: Row) -> Message:
    return message_from_row(row, from_micros(row[3]))


async def _own_stream(conn: aiosqlite.Connection, room_id: str, incarnation: str) -> Row:
    """The room's stream row (epoch, last offset), started for `incarnation`
    if there is none; ForeignStream if it belongs to another incarnation."""
    await conn.execute(
        "INSERT OR IGNORE INTO streams (room_id, epoch, last_offset, incarnation)"
        " VALUES (?, ?, 0, ?)",
        (room_id, new_epoch(incarnation), incarnation),
    )
    row = await _one(
        conn,
        "SELECT epoch, last_offset, incarnation, compacted_upto FROM streams WHERE room_id = ?",
        (room_id,),
    )
    if row is None:
        raise RuntimeError(f"no stream row for room {room_id!r}")
    if row[2] != incarnation:
        raise ForeignStream(room_id, row[2])
    return row


Appended = tuple[Message, bool]

# Bound parameters per batch stay far below SQLite's limit (32,766).
_MAX_BATCH = 256


@dataclass(frozen=True, slots=True)
class _Append:
    message: NewMessage
    room_id: str
    incarnation: str
    ts: int


async def _own_streams(
    conn: aiosqlite.Connection, appends: Sequence[_Append]
) -> dict[str, tuple[str, int, str]]:
    """Each room's stream (epoch, last offset, incarnation), started for the
    first incarnation that appends to it if there is none. Inside the
    caller's write transaction: nobody else starts one meanwhile."""
    rooms = list(dict.fromkeys(a.room_id for a in appends))
    rows = await conn.execute_fetchall(
        "SELECT room_id, epoch, last_offset, incarnation FROM streams"
        f" WHERE room_id IN ({', '.join('?' * len(rooms))})",
        rooms,
    )
    streams = {row[0]: (row[1], row[2], row[3]) for row in rows}
    started: list[tuple[str, str, str]] = []
    for a in appends:
        if a.room_id not in streams:
            streams[a.room_id] = (new_epoch(a.incarnation), 0, a.incarnation)
            started.append((a.room_id, streams[a.room_id][0], a.incarnation))
    if started:
        await conn.executemany(
            "INSERT INTO streams (room_id, epoch, last_offset, incarnation) VALUES (?, ?, 0, ?)",
            started,
        )
    return streams


async def _compacted_client_message(
    fetch: Fetch, cache: BlockCache, key: ClientKey, *, incarnation: str | None
) -> Message | None:
    found = await compacted_client_row(fetch, cache, key, incarnation=incarnation)
    return None if found is None else _message(found)


async def _client_messages(
    conn: aiosqlite.Connection, keys: Collection[ClientKey], cache: BlockCache
) -> dict[ClientKey, Message]:
    """The stored messages with these (room, user, clientMessageId)."""
    if not keys:
        return {}
    known = await _stored_client_messages(conn, keys)
    for key in keys:
        if key not in known:
            found = await _compacted_client_message(fetch_on(conn), cache, key, incarnation=None)
            if found is not None:
                known[key] = found
    return known


async def _stored_client_messages(
    conn: aiosqlite.Connection, keys: Collection[ClientKey]
) -> dict[ClientKey, Message]:
    # OR of equalities (not a row-value IN): SQLite then searches the index once per key.
    one = "(m.room_id = ? AND m.user_id = ? AND m.client_message_id = ?)"
    match = " OR ".join([one] * len(keys))
    rows = await conn.execute_fetchall(
        f"SELECT {_MESSAGE_COLUMNS} FROM {_MESSAGE_FROM}"
        f" WHERE m.client_message_id IS NOT NULL AND ({match})",
        [part for key in keys for part in key],
    )
    found = (_message(row) for row in rows)
    return {(m.room_id or "", m.user_id, m.client_message_id or ""): m for m in found}


async def _insert_messages(conn: aiosqlite.Connection, rows: Sequence[Row]) -> None:
    """The one place message rows are written (columns as in _INSERT_MESSAGE)."""
    await conn.executemany(_INSERT_MESSAGE, rows)


# A rowid no message ever had, also a compacted one (backends/sqlite_rowids.py).
_INSERT_MESSAGE = (
    "INSERT INTO messages (rowid, room_id, seq, id, kind, user_id, ts, channel_id, event,"
    " data, metadata, thread_id, client_message_id)"
    f" VALUES ({NEXT_ROWID}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


async def _append_all(
    conn: aiosqlite.Connection, appends: Sequence[_Append], *, indexed: bool, cache: BlockCache
) -> list[Appended | BaseException]:
    """Append in order inside the caller's transaction: offsets per room in
    the order given, a clientMessageId stored once (also twice in one batch),
    ForeignStream for an append to another incarnation's history."""
    streams = await _own_streams(conn, appends)
    wanted = {
        (a.room_id, a.message.user_id, cid)
        for a in appends
        if (cid := a.message.client_message_id) is not None
        and streams[a.room_id][2] == a.incarnation
    }
    known = await _client_messages(conn, wanted, cache)
    last = {room_id: stream[1] for room_id, stream in streams.items()}
    results: list[Appended | BaseException] = []
    rows: list[Row] = []
    for a in appends:
        epoch, _, owner = streams[a.room_id]
        if owner != a.incarnation:
            results.append(ForeignStream(a.room_id, owner))
            continue
        message, cid = a.message, a.message.client_message_id
        key = (a.room_id, message.user_id, cid or "")
        if cid is not None and key in known:
            results.append((known[key], False))
            continue
        try:
            data, metadata = _dump(message.data), _dump(message.metadata)
        except TypeError as exc:
            results.append(exc)
            continue
        offset = last[a.room_id] = last[a.room_id] + 1
        stored = replace(
            message.stored(timestamp=from_micros(a.ts), offset=offset, epoch=epoch),
            # What a reader would get back, so a JSON quirk shows at once.
            data=orjson.loads(data),
            metadata=orjson.loads(metadata),
        )
        rows.append(
            (
                a.room_id,
                offset,
                stored.id,
                stored.kind.value,
                stored.user_id,
                a.ts,
                stored.channel_id,
                stored.event,
                data,
                metadata,
                stored.thread_id,
                cid,
            )
        )
        if cid is not None:
            known[key] = stored
        results.append((stored, True))
    if rows:
        await _insert_messages(conn, rows)
        if indexed:
            # (room_id, seq, data, event) of each row, as _INSERT_MESSAGE orders them
            await index_messages(conn, [(r[0], r[1], r[8], r[7]) for r in rows])
        await conn.executemany(
            "UPDATE streams SET last_offset = ? WHERE room_id = ?",
            [(offset, room) for room, offset in last.items() if offset != streams[room][1]],
        )
    return results


class SqliteMessageStore:
    """Room history in the `messages` table, offsets kept in `streams`."""

    publishes_on_append = False

    def __init__(
        self, db: SqliteDatabase, retention: timedelta | None = None, *, indexed: bool = False
    ) -> None:
        self._db = db
        self._retention = retention
        # With the search role on this database: each append also writes the
        # message's FTS row, in its transaction.
        self._indexed = indexed
        self._appends = GroupCommit(self._write_appends, max_batch=_MAX_BATCH)

    def _cutoff(self) -> int | None:
        if self._retention is None:
            return None
        return to_micros(utcnow() - self._retention, "cutoff")

    async def append(self, message: NewMessage, *, incarnation: str) -> tuple[Message, bool]:
        if message.room_id is None:
            raise ValueError("a stored message needs a room_id")
        ts = to_micros(message.timestamp, "timestamp")
        return await self._appends.submit(_Append(message, message.room_id, incarnation, ts))

    async def _write_appends(self, batch: Sequence[_Append]) -> list[Appended | BaseException]:
        """One transaction for the whole batch; if it fails, each append in
        its own, so one bad append does not fail the others."""
        try:
            async with self._db.transaction() as conn:
                return await _append_all(conn, batch, indexed=self._indexed, cache=self._db.blocks)
        except sqlite3.Error:
            if len(batch) == 1:
                raise
        results: list[Appended | BaseException] = []
        for one in batch:
            try:
                async with self._db.transaction() as conn:
                    results.extend(
                        await _append_all(conn, [one], indexed=self._indexed, cache=self._db.blocks)
                    )
            except sqlite3.Error as exc:
                results.append(exc)
        return results

    async def find_client_message(
        self, room_id: str, user_id: str, client_message_id: str, *, incarnation: str
    ) -> Message | None:
        rows = await self._db.lookup(
            f"SELECT {_MESSAGE_COLUMNS} FROM {_MESSAGE_FROM} WHERE m.room_id = ?"
            " AND s.incarnation = ? AND m.user_id = ? AND m.client_message_id = ?",
            (room_id, incarnation, user_id, client_message_id),
        )
        if rows:
            return _message(rows[0])
        return await _compacted_client_message(
            self._db.lookup,
            self._db.blocks,
            (room_id, user_id, client_message_id),
            incarnation=incarnation,
        )

    async def page(self, room_id: str, window: HistoryWindow, *, incarnation: str) -> HistoryPage:
        limit, after, before = window.limit, window.after, window.before
        from_end, thread_id = window.from_end, window.thread_id
        cutoff = self._cutoff()

        async def hot(count: int) -> list[Row]:
            return await self._hot_rows(
                room_id, incarnation, count, after, before, from_end, thread_id
            )

        rows = await steady_rows(
            room_id,
            lambda: self._mark(room_id, incarnation),
            lambda mark: window_rows(
                self._db.lookup, self._db.blocks, room_id, mark, window, min_ts=cutoff, hot=hot
            ),
        )
        has_more = len(rows) > limit
        rows = rows[:limit]
        if from_end:
            rows.reverse()
        return HistoryPage(messages=[_message(r) for r in rows], has_more=has_more)

    async def _mark(self, room_id: str, incarnation: str) -> tuple[str, int] | None:
        rows = await self._db.lookup(
            "SELECT epoch, compacted_upto FROM streams WHERE room_id = ? AND incarnation = ?",
            (room_id, incarnation),
        )
        return (rows[0][0], int(rows[0][1])) if rows else None

    async def _hot_rows(
        self,
        room_id: str,
        incarnation: str,
        count: int,
        after: int | None,
        before: int | None,
        from_end: bool,
        thread_id: str | None,
    ) -> list[Row]:
        where = ["m.room_id = ?", "s.incarnation = ?"]
        params: list[Any] = [room_id, incarnation]
        if after is not None:
            where.append("m.seq > ?")
            params.append(after)
        if before is not None:
            where.append("m.seq < ?")
            params.append(before)
        if thread_id is not None:
            where.append("m.thread_id = ?")
            params.append(thread_id)
        cutoff = self._cutoff()
        if cutoff is not None:
            where.append("m.ts >= ?")
            params.append(cutoff)
        order = "DESC" if from_end else "ASC"
        return list(
            await self._db.lookup(
                f"SELECT {_MESSAGE_COLUMNS} FROM {_MESSAGE_FROM} WHERE {' AND '.join(where)}"
                f" ORDER BY m.seq {order} LIMIT ?",
                (*params, count),
            )
        )

    async def position(self, room_id: str, *, incarnation: str) -> StreamPosition:
        cutoff = self._cutoff()
        async with self._db.transaction() as conn:
            stream = await _own_stream(conn, room_id, incarnation)
            oldest = await cold_rows(
                fetch_on(conn),
                self._db.blocks,
                room_id,
                stream[0],
                low=0,
                high=int(stream[3]) + 1,
                descending=False,
                want=1,
                thread_id=None,
                min_ts=cutoff,
            )
            if oldest:
                first: Row | None = (oldest[0][4],)
            elif cutoff is None:
                first = await _one(
                    conn, "SELECT MIN(seq) FROM messages WHERE room_id = ?", (room_id,)
                )
            else:
                first = await _one(
                    conn,
                    "SELECT MIN(seq) FROM messages WHERE room_id = ? AND ts >= ?",
                    (room_id, cutoff),
                )
        first_offset = 0 if first is None or first[0] is None else int(first[0])
        return StreamPosition(
            epoch=stream[0],
            last_offset=stream[1],
            first_offset=first_offset,
        )

    async def trim(self) -> int:
        cutoff = self._cutoff()
        if cutoff is None:
            return 0
        async with self._db.transaction() as conn:
            await forget_before(conn, cutoff)
            compacted = await trim_blocks(conn, cutoff)
            await conn.execute("DELETE FROM compacted_messages WHERE ts < ?", (cutoff,))
            async with conn.execute("DELETE FROM messages WHERE ts < ?", (cutoff,)) as cursor:
                return cursor.rowcount + compacted

    async def drop_room(self, room_id: str, *, incarnation: str | None = None) -> None:
        async with self._db.transaction() as conn:
            if await drop_room_rows(conn, room_id, incarnation):
                await drop_room_blocks(conn, room_id)

    async def compact(
        self,
        *,
        older_than: timedelta,
        idempotency_window: timedelta,
        batch: int = COMPACT_BATCH,
        pause: float = 0.0,
        progress: Callable[[CompactionStats], None] | None = None,
    ) -> CompactionStats:
        """Pack the messages older than `older_than` into compressed blocks,
        room by room, `batch` messages per write transaction, sleeping
        `pause` seconds between batches; `progress` is told the running
        totals after each batch."""
        now = utcnow()
        before_ts = to_micros(now - older_than, "older_than")
        since = to_micros(now - idempotency_window, "idempotency_window")
        await self._db.execute("DELETE FROM compacted_client_ids WHERE ts < ?", (since,))
        rooms = [str(r[0]) for r in await self._db.fetch("SELECT room_id FROM streams")]
        return await compact_rooms(
            rooms,
            lambda room_id: compact_room(
                self._db.fetch,
                self._db.transaction,
                room_id,
                before_ts=before_ts,
                client_ids_since=since,
                max_messages=batch,
                searchable=self._indexed,
            ),
            pause=pause,
            progress=progress,
            after_batch=self._db.give_back_space,
        )

    async def close(self) -> None:
        await self._appends.close()


# --- rooms ----------------------------------------------------------------

_ROOM_COLUMNS = (
    "r.id, r.name, r.owner, r.is_private, r.description, r.metadata, r.created_at, r.incarnation"
)


def _room(row: Row) -> Room:
    return Room(
        id=row[0],
        name=row[1],
        owner=row[2],
        is_private=bool(row[3]),
        description=row[4],
        metadata=orjson.loads(row[5]),
        created_at=from_micros(row[6]),
        incarnation=row[7],
    )


def _member(row: Row) -> RoomMember:
    return RoomMember(
        room_id=row[0], user_id=row[1], role=RoomRole(row[2]), joined_at=from_micros(row[3])
    )


async def _room_count(conn: aiosqlite.Connection, user_id: str, *, added: bool) -> int:
    """Rooms the user created or joined (`added` False), or was added to by others."""
    row = await _one(
        conn, "SELECT COUNT(*) FROM members WHERE user_id = ? AND added = ?", (user_id, int(added))
    )
    return 0 if row is None else int(row[0])


class SqliteRoomStore:
    """Rooms, members and bans in tables; members and bans cascade with the room."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def create(self, room: Room, *, max_rooms_per_user: int | None = None) -> RoomMember:
        created_at = to_micros(room.created_at, "created_at")
        owner = RoomMember(
            room_id=room.id,
            user_id=room.owner,
            role=RoomRole.OWNER,
            joined_at=from_micros(created_at),
        )
        async with self._db.transaction() as conn:
            if await _one(conn, "SELECT 1 FROM rooms WHERE id = ?", (room.id,)) is not None:
                raise Conflict(f"room {room.id!r} already exists")
            if (
                max_rooms_per_user is not None
                and await _room_count(conn, room.owner, added=False) >= max_rooms_per_user
            ):
                raise LimitReached("rooms", max_rooms_per_user)
            await conn.execute(
                "INSERT INTO rooms (id, name, owner, is_private, description, metadata,"
                " created_at, incarnation) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    room.id,
                    room.name,
                    room.owner,
                    int(room.is_private),
                    room.description,
                    _dump(room.metadata),
                    created_at,
                    room.incarnation,
                ),
            )
            await conn.execute(
                "INSERT INTO members (room_id, user_id, role, joined_at) VALUES (?, ?, ?, ?)",
                (room.id, room.owner, RoomRole.OWNER.value, created_at),
            )
        return owner

    async def get(self, room_id: str) -> Room | None:
        rows = await self._db.lookup(
            f"SELECT {_ROOM_COLUMNS} FROM rooms r WHERE r.id = ?", (room_id,)
        )
        return _room(rows[0]) if rows else None

    async def update(self, room: Room) -> None:
        changed = await self._db.execute(
            "UPDATE rooms SET name = ?, is_private = ?, description = ?, metadata = ? WHERE id = ?",
            (room.name, int(room.is_private), room.description, _dump(room.metadata), room.id),
        )
        if changed == 0:
            raise Missing(f"room {room.id!r} does not exist")

    async def delete(self, room_id: str, *, incarnation: str | None = None) -> bool:
        if incarnation is None:
            return await self._db.execute("DELETE FROM rooms WHERE id = ?", (room_id,)) > 0
        changed = await self._db.execute(
            "DELETE FROM rooms WHERE id = ? AND incarnation = ?", (room_id, incarnation)
        )
        return changed > 0

    async def room_id_page(self, cursor: str = "", *, limit: int = 500) -> tuple[list[str], str]:
        rows = await self._db.fetch(
            "SELECT id FROM rooms WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit)
        )
        ids = [str(r[0]) for r in rows]
        return ids, ids[-1] if len(ids) == limit else ""

    async def list_visible(self, user_id: str) -> list[Room]:
        rows = await self._db.fetch(
            f"SELECT {_ROOM_COLUMNS} FROM rooms r WHERE r.is_private = 0 OR EXISTS"
            " (SELECT 1 FROM members m WHERE m.room_id = r.id AND m.user_id = ?)"
            " ORDER BY r.created_at, r.id",
            (user_id,),
        )
        return [_room(r) for r in rows]

    async def list_joined(self, user_id: str) -> list[Room]:
        rows = await self._db.fetch(
            f"SELECT {_ROOM_COLUMNS} FROM rooms r JOIN members m ON m.room_id = r.id"
            " WHERE m.user_id = ? ORDER BY r.created_at, r.id",
            (user_id,),
        )
        return [_room(r) for r in rows]

    async def add_member(
        self, member: RoomMember, quota: MemberQuota = NO_QUOTA
    ) -> tuple[RoomMember, bool]:
        joined_at = to_micros(member.joined_at, "joined_at")
        async with self._db.transaction() as conn:
            if await _one(conn, "SELECT 1 FROM rooms WHERE id = ?", (member.room_id,)) is None:
                raise Missing(f"room {member.room_id!r} does not exist")
            existing = await _one(
                conn,
                "SELECT room_id, user_id, role, joined_at FROM members"
                " WHERE room_id = ? AND user_id = ?",
                (member.room_id, member.user_id),
            )
            if existing is not None:
                return _member(existing), False
            limit, added = quota.limit, quota.by_other
            if limit is not None and await _room_count(conn, member.user_id, added=added) >= limit:
                raise LimitReached(quota.what, limit)
            await conn.execute(
                "INSERT INTO members (room_id, user_id, role, joined_at, added)"
                " VALUES (?, ?, ?, ?, ?)",
                (member.room_id, member.user_id, member.role.value, joined_at, int(added)),
            )
        return replace(member, joined_at=from_micros(joined_at)), True

    async def remove_member(self, room_id: str, user_id: str) -> bool:
        changed = await self._db.execute(
            "DELETE FROM members WHERE room_id = ? AND user_id = ?", (room_id, user_id)
        )
        return changed > 0

    async def get_member(self, room_id: str, user_id: str) -> RoomMember | None:
        rows = await self._db.lookup(
            "SELECT room_id, user_id, role, joined_at FROM members"
            " WHERE room_id = ? AND user_id = ?",
            (room_id, user_id),
        )
        return _member(rows[0]) if rows else None

    async def members(self, room_id: str) -> list[RoomMember]:
        rows = await self._db.fetch(
            "SELECT room_id, user_id, role, joined_at FROM members WHERE room_id = ?"
            " ORDER BY joined_at, user_id",
            (room_id,),
        )
        return [_member(r) for r in rows]

    async def member_count(self, room_id: str) -> int:
        rows = await self._db.fetch("SELECT COUNT(*) FROM members WHERE room_id = ?", (room_id,))
        return int(rows[0][0])

    async def set_role(self, room_id: str, user_id: str, role: RoomRole) -> RoomMember | None:
        rows = await self._db.fetch(
            "UPDATE members SET role = ? WHERE room_id = ? AND user_id = ?"
            " RETURNING room_id, user_id, role, joined_at",
            (role.value, room_id, user_id),
        )
        return _member(rows[0]) if rows else None

    async def transfer_ownership(self, room_id: str, new_owner: str) -> RoomMember:
        async with self._db.transaction() as conn:
            row = await _one(conn, "SELECT owner FROM rooms WHERE id = ?", (room_id,))
            if row is None:
                raise Missing(f"room {room_id!r} does not exist")
            promoted = await _one(
                conn,
                "UPDATE members SET role = ? WHERE room_id = ? AND user_id = ?"
                " RETURNING room_id, user_id, role, joined_at",
                (RoomRole.OWNER.value, room_id, new_owner),
            )
            if promoted is None:
                raise Missing(f"{new_owner!r} is not a member of room {room_id!r}")
            if row[0] != new_owner:
                await conn.execute(
                    "UPDATE members SET role = ? WHERE room_id = ? AND user_id = ?",
                    (RoomRole.ADMIN.value, room_id, row[0]),
                )
            await conn.execute("UPDATE rooms SET owner = ? WHERE id = ?", (new_owner, room_id))
        return _member(promoted)

    async def ban(self, room_id: str, user_id: str) -> None:
        async with self._db.transaction() as conn:
            if await _one(conn, "SELECT 1 FROM rooms WHERE id = ?", (room_id,)) is None:
                raise Missing(f"room {room_id!r} does not exist")
            await conn.execute(
                "INSERT OR IGNORE INTO bans (room_id, user_id) VALUES (?, ?)", (room_id, user_id)
            )
            await conn.execute(
                "DELETE FROM members WHERE room_id = ? AND user_id = ?", (room_id, user_id)
            )

    async def unban(self, room_id: str, user_id: str) -> bool:
        changed = await self._db.execute(
            "DELETE FROM bans WHERE room_id = ? AND user_id = ?", (room_id, user_id)
        )
        return changed > 0

    async def is_banned(self, room_id: str, user_id: str) -> bool:
        rows = await self._db.lookup(
            "SELECT 1 FROM bans WHERE room_id = ? AND user_id = ?", (room_id, user_id)
        )
        return bool(rows)

    async def close(self) -> None:
        return None


# --- channels -------------------------------------------------------------

_CHANNEL_COLUMNS = "id, name, created_by, is_private, description, created_at"


def _channel(row: Row) -> Channel:
    return Channel(
        id=row[0],
        name=row[1],
        created_by=row[2],
        is_private=bool(row[3]),
        description=row[4],
        created_at=from_micros(row[5]),
    )


class SqliteChannelStore:
    """Channels and grants in tables; grants cascade with the channel."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def create(self, channel: Channel, *, max_channels_per_user: int | None = None) -> None:
        created_at = to_micros(channel.created_at, "created_at")
        async with self._db.transaction() as conn:
            if await _one(conn, "SELECT 1 FROM channels WHERE id = ?", (channel.id,)) is not None:
                raise Conflict(f"channel {channel.id!r} already exists")
            if max_channels_per_user is not None:
                row = await _one(
                    conn,
                    "SELECT COUNT(*) FROM channels WHERE created_by = ?",
                    (channel.created_by,),
                )
                if row is not None and row[0] >= max_channels_per_user:
                    raise LimitReached("channels", max_channels_per_user)
            await conn.execute(
                f"INSERT INTO channels ({_CHANNEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    channel.id,
                    channel.name,
                    channel.created_by,
                    int(channel.is_private),
                    channel.description,
                    created_at,
                ),
            )

    async def get(self, channel_id: str) -> Channel | None:
        rows = await self._db.fetch(
            f"SELECT {_CHANNEL_COLUMNS} FROM channels WHERE id = ?", (channel_id,)
        )
        return _channel(rows[0]) if rows else None

    async def delete(self, channel_id: str) -> bool:
        return await self._db.execute("DELETE FROM channels WHERE id = ?", (channel_id,)) > 0

    async def list_all(self) -> list[Channel]:
        rows = await self._db.fetch(
            f"SELECT {_CHANNEL_COLUMNS} FROM channels ORDER BY created_at, id"
        )
        return [_channel(r) for r in rows]

    async def grant(self, channel_id: str, user_id: str) -> None:
        try:
            await self._db.execute(
                "INSERT OR IGNORE INTO grants (channel_id, user_id) VALUES (?, ?)",
                (channel_id, user_id),
            )
        except sqlite3.IntegrityError as exc:  # the foreign key: no such channel
            raise Missing(f"channel {channel_id!r} does not exist") from exc

    async def revoke(self, channel_id: str, user_id: str) -> bool:
        changed = await self._db.execute(
            "DELETE FROM grants WHERE channel_id = ? AND user_id = ?", (channel_id, user_id)
        )
        return changed > 0

    async def is_granted(self, channel_id: str, user_id: str) -> bool:
        rows = await self._db.fetch(
            "SELECT 1 FROM grants WHERE channel_id = ? AND user_id = ?", (channel_id, user_id)
        )
        return bool(rows)

    async def grants(self, channel_id: str) -> list[str]:
        rows = await self._db.fetch(
            "SELECT user_id FROM grants WHERE channel_id = ? ORDER BY user_id", (channel_id,)
        )
        return [r[0] for r in rows]

    async def close(self) -> None:
        return None


def sqlite_path(url: str) -> Path:
    """`sqlite:///relative.db` and `sqlite:////absolute.db`, as SQLAlchemy reads them."""
    path = url.removeprefix("sqlite:///")
    if not path or path == url:
        raise ValueError(f"a sqlite URL needs a path: sqlite:///path/to.db, got {url!r}")
    return Path(path)
