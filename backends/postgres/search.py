"""The search role on PostgreSQL: a tsvector per message, a GIN index over them.

Opened on the same URL as the message store, that store writes each
message's tsvector in the INSERT that stores it, and drops it with the room
and with retention (`indexes_on_append`); this module only reads, and at
open indexes the messages stored while the search role was elsewhere.
Opened on a URL of its own (history on Redis or NATS), `index` copies the
messages it is given into this schema's `messages` table with their
tsvectors: a search-only mirror, trimmed and dropped through this role.

How text becomes tsvectors and a parsed query a tsquery is `tsvector`.
Every query names the rooms (and incarnations) it may read, so the GIN
match is always joined to a bounded set of rooms; its cost is bounded by
the request's limit, or for RELEVANCE by `max_candidates`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final, cast

import orjson

from ..records import Message, incarnation_of, utcnow
from ..search_query import SearchKey, SearchOrder, SearchPage, SearchRequest, hit_of
from ..sqlite_blocks import BlockCache, hydrate
from .blocks import qmark_fetch
from .database import Connection, Params, PostgresDatabase
from .messages import MESSAGE_COLUMNS, PostgresMessageStore, message_of
from .tsvector import tsquery_of, tsvector_of

__all__ = ["PostgresMessageSearch"]

BACKFILL_BATCH: Final = 2000
# Compacted messages keep their searched columns and tsvector in
# `compacted_messages`: search sees both tables as one; the bodies of those
# it finds are then read from their blocks (`hydrate`).
_SEARCHED_FROM: Final = "searchable_messages m JOIN streams s ON s.room_id = m.room_id"


def _after_newest(p: Params, key: SearchKey, prefix: str) -> str:
    """Strictly after `key` in (ts desc, room_id asc, seq desc) order."""
    ts, room, seq = p(key.timestamp), p(key.room_id), p(key.offset)
    return (
        f"({prefix}ts < {ts} OR ({prefix}ts = {ts} AND ({prefix}room_id > {room}"
        f" OR ({prefix}room_id = {room} AND {prefix}seq < {seq}))))"
    )


class PostgresMessageSearch:
    """Full-text search over the `messages` table (see the module doc)."""

    def __init__(
        self, db: PostgresDatabase, retention: timedelta | None, *, with_messages: bool
    ) -> None:
        self._db = db
        self._retention = retention
        self.indexes_on_append = with_messages
        # The mirror's own history operations (drop, trim) are the store's.
        self._mirror = PostgresMessageStore(db, retention)
        self._blocks = BlockCache()
        self._fetch = qmark_fetch(db)

    @classmethod
    async def open(
        cls, db: PostgresDatabase, retention: timedelta | None, *, with_messages: bool
    ) -> PostgresMessageSearch:
        search = cls(db, retention, with_messages=with_messages)
        await search.backfill()
        return search

    async def backfill(self) -> int:
        """Index the messages stored without a tsvector; return how many.

        In batches of BACKFILL_BATCH, one transaction each, so the appends
        of other nodes wait for at most one batch."""
        done = 0
        while True:
            async with self._db.transaction() as conn:
                rows = await conn.fetch(
                    "SELECT room_id, seq, data, event FROM messages WHERE tsv IS NULL"
                    " ORDER BY room_id, seq LIMIT $1 FOR UPDATE SKIP LOCKED",
                    BACKFILL_BATCH,
                )
                await conn.executemany(
                    "UPDATE messages SET tsv = $3::tsvector WHERE room_id = $1 AND seq = $2",
                    [
                        (r["room_id"], r["seq"], tsvector_of(orjson.loads(r["data"]), r["event"]))
                        for r in rows
                    ],
                )
            done += len(rows)
            if len(rows) < BACKFILL_BATCH:
                return done

    async def index(self, messages: Sequence[Message]) -> None:
        async with self._db.transaction() as conn:
            for message in messages:
                await self._copy(conn, message)

    async def _copy(self, conn: Connection, message: Message) -> None:
        if message.room_id is None:
            raise ValueError("only room messages are searched")
        incarnation = incarnation_of(message.epoch)
        found = await conn.fetchval(
            "SELECT incarnation FROM streams WHERE room_id = $1 FOR UPDATE", message.room_id
        )
        if found is not None and found != incarnation:
            # The room was made again: what this mirror holds of it is gone.
            await conn.execute("DELETE FROM messages WHERE room_id = $1", message.room_id)
            await conn.execute("DELETE FROM streams WHERE room_id = $1", message.room_id)
        await conn.execute(
            "INSERT INTO streams (room_id, epoch, last_offset, incarnation)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (room_id) DO UPDATE SET"
            " epoch = excluded.epoch,"
            " last_offset = GREATEST(streams.last_offset, excluded.last_offset)",
            message.room_id,
            message.epoch,
            message.offset,
            incarnation,
        )
        await conn.execute(
            "INSERT INTO messages (room_id, seq, id, kind, user_id, ts, channel_id, event,"
            " data, metadata, thread_id, client_message_id, tsv)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::tsvector)"
            " ON CONFLICT DO NOTHING",
            message.room_id,
            message.offset,
            message.id,
            message.kind.value,
            message.user_id,
            message.timestamp,
            message.channel_id,
            message.event,
            orjson.dumps(message.data).decode(),
            orjson.dumps(message.metadata).decode(),
            message.thread_id,
            message.client_message_id,
            tsvector_of(message.data, message.event),
        )

    def _since(self, request: SearchRequest) -> datetime | None:
        bounds = [] if request.since is None else [request.since]
        if self._retention is not None:
            bounds.append(utcnow() - self._retention)
        return max(bounds) if bounds else None

    async def search(self, request: SearchRequest) -> SearchPage:
        p = Params()
        query = p(tsquery_of(request.match))
        rooms = [r.room_id for r in request.rooms]
        where = [
            # Both in the indexes messages_tsv_room and compacted_messages_tsv_room (migration 4).
            f"m.tsv @@ {query}::tsquery",
            f"ARRAY[m.room_id] && {p(rooms)}::text[]",
            f"(m.room_id, (SELECT s.incarnation FROM streams s WHERE s.room_id = m.room_id))"
            f" IN (SELECT * FROM unnest({p(rooms)}::text[],"
            f" {p([r.incarnation for r in request.rooms])}::text[]))",
        ]
        since = self._since(request)
        if since is not None:
            where.append(f"m.ts >= {p(since)}")
        if request.until is not None:
            where.append(f"m.ts < {p(request.until)}")
        if request.user_ids is not None:
            where.append(f"m.user_id = ANY({p(sorted(request.user_ids))}::text[])")
        if request.events is not None:
            where.append(f"m.event = ANY({p(sorted(request.events))}::text[])")
        if request.thread_id is not None:
            where.append(f"m.thread_id = {p(request.thread_id)}")
        if request.has_thread:
            where.append("m.thread_id IS NOT NULL")
        newest = "ORDER BY m.ts DESC, m.room_id, m.seq DESC"
        inner = (
            f"SELECT {MESSAGE_COLUMNS}, ts_rank(m.tsv, {query}::tsquery)::float8 AS score"
            f" FROM {_SEARCHED_FROM} WHERE {' AND '.join(where)}"
        )
        after = request.after
        if request.order is SearchOrder.NEWEST:
            sql = inner
            if after is not None:
                sql += " AND " + _after_newest(p, after, "m.")
            sql += f" {newest} LIMIT {p(request.limit + 1)}"
        else:
            sql = f"SELECT * FROM ({inner} {newest} LIMIT {p(request.max_candidates)}) c"
            if after is not None:
                at = p(after.score or 0.0)
                sql += (
                    f" WHERE (c.score < {at} OR (c.score = {at} AND"
                    f" {_after_newest(p, after, 'c.')}))"
                )
            sql += " ORDER BY c.score DESC, c.ts DESC, c.room_id, c.seq DESC"
            sql += f" LIMIT {p(request.limit + 1)}"
        found = await self._db.fetch(sql, *p.values)
        rows = await hydrate(cast(list[Sequence[Any]], found), self._fetch, self._blocks)
        hits = [
            hit_of(message_of(r), r[6], float(r[13]), request.order) for r in rows[: request.limit]
        ]
        return SearchPage(hits=hits, has_more=len(rows) > request.limit)

    async def drop_room(self, room_id: str, *, incarnation: str | None = None) -> None:
        if not self.indexes_on_append:  # else the message store's drop_room did it
            await self._mirror.drop_room(room_id, incarnation=incarnation)

    async def trim(self) -> int:
        if self.indexes_on_append:  # the message store's trim does it
            return 0
        return await self._mirror.trim()

    async def close(self) -> None:
        return None
