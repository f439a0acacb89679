"""Room history: the `messages` table, offsets and epochs kept in `streams`.

One `streams` row per room holds its epoch, last offset given and
incarnation. Every append locks that row for its transaction (an INSERT ...
ON CONFLICT DO UPDATE that advances it, or `FOR UPDATE` when a client
message id must be looked up first), so appends to one room are serialised
and commit in offset order (a reader never sees a later offset before an
earlier one; a duplicate `client_message_id` is seen by the next append),
while other rooms go on in parallel. `drop_room` takes the same lock, so it
never drops what an append of another incarnation stored after its check.
JSON fields are orjson text, as in sqlite: what is read back is what was
stored.

Old messages may be packed into compressed blocks (`compact`, see
backends/postgres/blocks.py): offsets up to `streams.compacted_upto` are
read from blocks, those after it from `messages`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from ..codecs import from_micros, message_from_row, require_utc, to_micros
from ..compaction import COMPACT_BATCH, CompactionStats
from ..errors import ForeignStream
from ..records import (
    HistoryPage,
    HistoryWindow,
    Message,
    NewMessage,
    StreamPosition,
    new_epoch,
    utcnow,
)
from ..sqlite_blocks import (
    BlockCache,
    cold_rows,
    compact_room,
    compact_rooms,
    compacted_client_row,
    drop_room_blocks,
    steady_rows,
    trim_blocks,
    window_rows,
)
from .blocks import POSTGRES_DIALECT, QmarkConnection, qmark_fetch, qmark_transaction
from .database import Connection, Params, PostgresDatabase, changed_rows
from .tsvector import tsvector_of

__all__ = ["PostgresMessageStore"]

MESSAGE_COLUMNS = (
    "m.id, m.kind, m.user_id, m.ts, m.seq, s.epoch, m.room_id, m.channel_id, m.event,"
    " m.data, m.metadata, m.thread_id, m.client_message_id"
)
MESSAGE_FROM = "messages m JOIN streams s ON s.room_id = m.room_id"
# How often a stream row deleted under us (a concurrent drop) is made again.
_STREAM_ATTEMPTS = 5


def message_of(row: asyncpg.Record | Sequence[Any]) -> Message:
    """A message from a row of `messages`, or of a block (its time in microseconds)."""
    ts = row[3]
    return message_from_row(row, from_micros(ts) if isinstance(ts, int) else ts)


async def _own_stream(
    conn: Connection, room_id: str, incarnation: str, *, lock: bool
) -> asyncpg.Record:
    """The room's stream row (epoch, last_offset), started for `incarnation`
    if there is none, locked for the transaction with `lock`; ForeignStream
    if it belongs to another incarnation."""
    select = (
        "SELECT epoch, last_offset, incarnation, compacted_upto FROM streams WHERE room_id = $1"
    )
    if lock:
        select += " FOR UPDATE"
    for _ in range(_STREAM_ATTEMPTS):
        await conn.execute(
            "INSERT INTO streams (room_id, epoch, last_offset, incarnation)"
            " VALUES ($1, $2, 0, $3) ON CONFLICT (room_id) DO NOTHING",
            room_id,
            new_epoch(incarnation),
            incarnation,
        )
        row = await conn.fetchrow(select, room_id)
        if row is None:
            continue  # dropped between the two statements: start it again
        if row["incarnation"] != incarnation:
            raise ForeignStream(room_id, row["incarnation"])
        return row
    raise RuntimeError(f"the history of room {room_id!r} kept being dropped")


# Advances the room's stream (making it, for the incarnation $14 with the
# epoch $13, if it has none) and stores the message at the new offset; or,
# when the stream belongs to another incarnation, changes nothing and
# returns no row. The ON CONFLICT update locks the stream row until the
# statement's transaction ends, so appends to one room are serialised.
_APPEND = """
WITH s AS (
    INSERT INTO streams (room_id, epoch, last_offset, incarnation) VALUES ($1, $13, 1, $14)
    ON CONFLICT (room_id) DO UPDATE SET last_offset = streams.last_offset + 1
    WHERE streams.incarnation = excluded.incarnation
    RETURNING epoch, last_offset
), m AS (
    INSERT INTO messages (room_id, seq, id, kind, user_id, ts, channel_id, event,
                          data, metadata, thread_id, client_message_id, tsv)
    SELECT $1, s.last_offset, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::tsvector FROM s
)
SELECT epoch, last_offset FROM s
"""


def _dump(value: Any) -> str:
    return orjson.dumps(value).decode()


class PostgresMessageStore:
    """Room history in PostgreSQL (see the module doc)."""

    publishes_on_append = False

    def __init__(
        self, db: PostgresDatabase, retention: timedelta | None = None, *, indexed: bool = False
    ) -> None:
        self._db = db
        self._retention = retention
        # With the search role on this database: each message is stored with
        # its tsvector, so it is searchable as soon as it is stored.
        self._indexed = indexed
        self.blocks = BlockCache()
        """Decoded blocks of old messages (replaceable: bench/compression.py
        empties it to time cold pages)."""
        self._fetch = qmark_fetch(db)

    def _cutoff(self) -> datetime | None:
        return None if self._retention is None else utcnow() - self._retention

    def _cutoff_micros(self) -> int | None:
        cutoff = self._cutoff()
        return None if cutoff is None else to_micros(cutoff, "retention")

    async def append(self, message: NewMessage, *, incarnation: str) -> tuple[Message, bool]:
        if message.room_id is None:
            raise ValueError("a stored message needs a room_id")
        data, metadata = _dump(message.data), _dump(message.metadata)
        draft = replace(
            message.stored(timestamp=require_utc(message.timestamp, "timestamp")),
            # What a reader would get back, so a JSON quirk shows at once.
            data=orjson.loads(data),
            metadata=orjson.loads(metadata),
        )
        # Made before any lock is taken: the room waits for no tokenizing.
        tsv = tsvector_of(draft.data, draft.event) if self._indexed else None
        row = [draft.id, draft.kind.value, draft.user_id, draft.timestamp, draft.channel_id]
        row += [draft.event, data, metadata, draft.thread_id, draft.client_message_id, tsv]
        if draft.client_message_id is None:
            return await self._append_in_one_statement(draft, row, incarnation), True
        async with self._db.transaction() as conn:
            await _own_stream(conn, draft.room_id or "", incarnation, lock=True)
            first = await conn.fetchrow(
                f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM}"
                " WHERE m.room_id = $1 AND m.user_id = $2 AND m.client_message_id = $3",
                draft.room_id,
                draft.user_id,
                draft.client_message_id,
            )
            if first is not None:
                return message_of(first), False
            key = (draft.room_id or "", draft.user_id, draft.client_message_id)
            fetch = qmark_fetch(QmarkConnection(conn))
            packed = await compacted_client_row(fetch, self.blocks, key, incarnation=None)
            if packed is not None:
                return message_of(packed), False
            # The stream exists (made and locked above): no epoch is needed.
            stream = await conn.fetchrow(_APPEND, draft.room_id, *row, "", incarnation)
        if stream is None:
            raise RuntimeError(f"the history of room {draft.room_id!r} vanished under its lock")
        return replace(draft, offset=stream["last_offset"], epoch=stream["epoch"]), True

    async def _append_in_one_statement(
        self, draft: Message, row: list[Any], incarnation: str
    ) -> Message:
        """Without a client message id there is nothing to look up first: the
        stream row is made or advanced and the message stored by one statement,
        its own transaction (one round trip)."""
        room_id = draft.room_id or ""
        for _ in range(_STREAM_ATTEMPTS):
            stream = await self._db.fetchrow(
                _APPEND, room_id, *row, new_epoch(incarnation), incarnation
            )
            if stream is not None:
                return replace(draft, offset=stream["last_offset"], epoch=stream["epoch"])
            found = await self._db.fetchrow(
                "SELECT incarnation FROM streams WHERE room_id = $1", room_id
            )
            if found is not None and found["incarnation"] != incarnation:
                raise ForeignStream(room_id, found["incarnation"])
            # The other incarnation's history was dropped meanwhile: again.
        raise RuntimeError(f"the history of room {room_id!r} kept changing hands")

    async def find_client_message(
        self, room_id: str, user_id: str, client_message_id: str, *, incarnation: str
    ) -> Message | None:
        row = await self._db.fetchrow(
            f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} WHERE m.room_id = $1"
            " AND s.incarnation = $2 AND m.user_id = $3 AND m.client_message_id = $4",
            room_id,
            incarnation,
            user_id,
            client_message_id,
        )
        if row is not None:
            return message_of(row)
        key = (room_id, user_id, client_message_id)
        packed = await compacted_client_row(self._fetch, self.blocks, key, incarnation=incarnation)
        return None if packed is None else message_of(packed)

    async def page(self, room_id: str, window: HistoryWindow, *, incarnation: str) -> HistoryPage:
        async def hot(count: int) -> list[Any]:
            return await self._hot_rows(room_id, window, count, incarnation=incarnation)

        rows = await steady_rows(
            room_id,
            lambda: self._mark(room_id, incarnation),
            lambda mark: window_rows(
                self._fetch,
                self.blocks,
                room_id,
                mark,
                window,
                min_ts=self._cutoff_micros(),
                hot=hot,
            ),
        )
        has_more = len(rows) > window.limit
        rows = rows[: window.limit]
        if window.from_end:
            rows.reverse()
        return HistoryPage(messages=[message_of(r) for r in rows], has_more=has_more)

    async def _mark(self, room_id: str, incarnation: str) -> tuple[str, int] | None:
        row = await self._db.fetchrow(
            "SELECT epoch, compacted_upto FROM streams WHERE room_id = $1 AND incarnation = $2",
            room_id,
            incarnation,
        )
        return None if row is None else (row[0], int(row[1]))

    async def _hot_rows(
        self, room_id: str, window: HistoryWindow, count: int, *, incarnation: str
    ) -> list[asyncpg.Record]:
        """Up to `count` rows of `messages` in the window, in the direction of travel."""
        param = Params()
        where = [f"m.room_id = {param(room_id)}", f"s.incarnation = {param(incarnation)}"]
        if window.after is not None:
            where.append(f"m.seq > {param(window.after)}")
        if window.before is not None:
            where.append(f"m.seq < {param(window.before)}")
        if window.thread_id is not None:
            where.append(f"m.thread_id = {param(window.thread_id)}")
        cutoff = self._cutoff()
        if cutoff is not None:
            where.append(f"m.ts >= {param(cutoff)}")
        order = "DESC" if window.from_end else "ASC"
        return await self._db.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} WHERE {' AND '.join(where)}"
            f" ORDER BY m.seq {order} LIMIT {param(count)}",
            *param.values,
        )

    async def position(self, room_id: str, *, incarnation: str) -> StreamPosition:
        cutoff = self._cutoff()
        async with self._db.transaction() as conn:
            stream = await _own_stream(conn, room_id, incarnation, lock=False)
            oldest = await cold_rows(
                qmark_fetch(QmarkConnection(conn)),
                self.blocks,
                room_id,
                stream["epoch"],
                low=0,
                high=int(stream["compacted_upto"]) + 1,
                descending=False,
                want=1,
                thread_id=None,
                min_ts=self._cutoff_micros(),
            )
            if oldest:
                first = oldest[0][4]
            elif cutoff is None:
                first = await conn.fetchval(
                    "SELECT MIN(seq) FROM messages WHERE room_id = $1", room_id
                )
            else:
                first = await conn.fetchval(
                    "SELECT MIN(seq) FROM messages WHERE room_id = $1 AND ts >= $2",
                    room_id,
                    cutoff,
                )
        return StreamPosition(
            epoch=stream["epoch"],
            last_offset=stream["last_offset"],
            first_offset=0 if first is None else int(first),
        )

    async def trim(self) -> int:
        cutoff = self._cutoff()
        if cutoff is None:
            return 0
        async with self._db.transaction() as conn:
            packed = await trim_blocks(QmarkConnection(conn), to_micros(cutoff, "retention"))
            await conn.execute("DELETE FROM compacted_messages WHERE ts < $1", cutoff)
            rows = await conn.execute("DELETE FROM messages WHERE ts < $1", cutoff)
        return changed_rows(rows) + packed

    async def drop_room(self, room_id: str, *, incarnation: str | None = None) -> None:
        async with self._db.transaction() as conn:
            # The stream row goes first, as one statement that checks the
            # incarnation on the row it locks: appends wait for this
            # transaction, and a stream made meanwhile for another
            # incarnation (a new row, not this one) is never matched.
            if incarnation is None:
                dropped = await conn.fetchval(
                    "DELETE FROM streams WHERE room_id = $1 RETURNING 1", room_id
                )
            else:
                dropped = await conn.fetchval(
                    "DELETE FROM streams WHERE room_id = $1 AND incarnation = $2 RETURNING 1",
                    room_id,
                    incarnation,
                )
            if dropped is not None:
                await conn.execute("DELETE FROM messages WHERE room_id = $1", room_id)
                await drop_room_blocks(QmarkConnection(conn), room_id)

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
        room by room, `batch` messages per transaction (compressed in a
        worker thread, outside it), sleeping `pause` seconds between
        batches; `progress` is told the running totals after each batch."""
        now = utcnow()
        before_ts = to_micros(now - older_than, "older_than")
        since = to_micros(now - idempotency_window, "idempotency_window")
        await self._db.execute("DELETE FROM compacted_client_ids WHERE ts < $1", since)
        rooms = [str(r[0]) for r in await self._db.fetch("SELECT room_id FROM streams")]
        transaction = qmark_transaction(self._db)
        return await compact_rooms(
            rooms,
            lambda room_id: compact_room(
                self._fetch,
                transaction,
                room_id,
                before_ts=before_ts,
                client_ids_since=since,
                max_messages=batch,
                searchable=self._indexed,
                dialect=POSTGRES_DIALECT,
            ),
            pause=pause,
            progress=progress,
        )

    async def close(self) -> None:
        return None
