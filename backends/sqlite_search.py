"""The search role on SQLite: FTS5 MATCH over `message_fts` (backends/sqlite_fts.py).

Opened on the same file as the message store, that store indexes each
append in its own transaction and this module only reads (and, at open,
indexes messages appended while the search role was elsewhere). Opened on a
file of its own, `index` copies the messages it is given into the file's
`messages` table with their FTS rows: a search-only mirror.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Final

import orjson

from .codecs import to_micros
from .errors import DataCorrupted
from .records import Message, incarnation_of, utcnow
from .search_query import (
    AnyOf,
    Phrase,
    SearchKey,
    SearchOrder,
    SearchPage,
    SearchRequest,
    Term,
    TextMatch,
    hit_of,
)
from .search_text import tokens
from .sqlite import (
    _MESSAGE_COLUMNS,
    SqliteDatabase,
    _dump,
    _message,
    _one,
    drop_room_rows,
)
from .sqlite_blocks import add_key_rows, hydrate, key_rows_missing
from .sqlite_fts import (
    forget_before,
    forget_room,
    index_message,
    indexed_upto,
    set_indexed_upto,
)
from .sqlite_rowids import NEXT_ROWID

__all__ = ["SqliteMessageSearch", "match_expression"]

log = logging.getLogger(__name__)

BACKFILL_BATCH: Final = 2000


def _quoted(tokens: Sequence[str]) -> str:
    # Tokens are folded word characters; doubling quotes keeps it safe anyway.
    return '"' + " ".join(t.replace('"', '""') for t in tokens) + '"'


def _clause(clause: Term | Phrase | AnyOf) -> str:
    if isinstance(clause, AnyOf):
        return "(" + " OR ".join(_clause(option) for option in clause.options) + ")"
    if isinstance(clause, Phrase):
        return _quoted(clause.tokens)
    return _quoted([clause.token]) + ("*" if clause.prefix else "")


MAX_ROOM_FILTER: Final = 64
"""Scopes of more rooms are filtered by the join alone."""


def match_expression(match: TextMatch, room_ids: Sequence[str] = ()) -> str:
    """The FTS5 MATCH expression of a parsed query, in the given rooms."""
    expression = "(" + " AND ".join(_clause(c) for c in match.required) + ")"
    for excluded in match.excluded:
        expression += " NOT " + _clause(excluded)
    expression = f"body : ({expression})"
    # Room ids split into tokens like any text ("a-b" is "a b"), so this may
    # let another room through: the join on room_id decides.
    phrases = [tokens(r) for r in room_ids]
    if phrases and len(phrases) <= MAX_ROOM_FILTER and all(phrases):
        expression += " AND room : (" + " OR ".join(_quoted(p) for p in phrases) + ")"
    return expression


class SqliteMessageSearch:
    """Searches `message_fts`, joined to the messages of the rooms asked."""

    def __init__(
        self, db: SqliteDatabase, retention: timedelta | None, *, with_messages: bool
    ) -> None:
        self._db = db
        self._retention = retention
        self.indexes_on_append = with_messages

    @classmethod
    async def open(
        cls, db: SqliteDatabase, retention: timedelta | None, *, with_messages: bool
    ) -> SqliteMessageSearch:
        search = cls(db, retention, with_messages=with_messages)
        await search.backfill()
        return search

    async def backfill(self) -> int:
        """Index the messages appended while indexing was off; return how many.

        In batches of BACKFILL_BATCH, one transaction each, so appends (of
        another process on the file) wait at most one batch."""
        done = await self._backfill_compacted()
        while True:
            async with self._db.transaction() as conn:
                start = await indexed_upto(conn)
                async with conn.execute(
                    "SELECT m.rowid, m.room_id, m.data, m.event FROM messages m WHERE m.rowid > ?"
                    " AND NOT EXISTS (SELECT 1 FROM message_fts f WHERE f.rowid = m.rowid)"
                    " ORDER BY m.rowid LIMIT ?",
                    (start, BACKFILL_BATCH),
                ) as cursor:
                    rows = list(await cursor.fetchall())
                for rowid, room_id, data, event in rows:
                    await index_message(conn, rowid, room_id, data, event)
                if len(rows) < BACKFILL_BATCH:
                    top = await _one(conn, "SELECT MAX(rowid) FROM messages")
                    await set_indexed_upto(conn, 0 if top is None or top[0] is None else top[0])
                    return done + len(rows)
                await set_indexed_upto(conn, rows[-1][0])
            done += len(rows)

    async def _backfill_compacted(self) -> int:
        """Index the messages compacted into blocks while indexing was off
        (they have no key row), a block per transaction; before the rows,
        whose backfill moves `indexed_upto` off 0 as it goes."""
        async with self._db.transaction() as conn:
            if await indexed_upto(conn):
                return 0  # nothing was appended unindexed since the last backfill
        done = 0
        for block in await key_rows_missing(self._db.fetch):
            try:
                entries = await self._db.blocks.entries(block, self._db.fetch)
            except DataCorrupted as exc:
                # The other blocks are indexed; this one's messages fail
                # their reads anyway (deleted meanwhile: nothing to do).
                if await self._db.fetch("SELECT 1 FROM message_blocks WHERE id = ?", (block.id,)):
                    log.warning("compacted messages not indexed for search: %s", exc)
                continue
            async with self._db.transaction() as conn:
                for rowid, room_id, data, event in await add_key_rows(conn, block, entries):
                    await index_message(conn, rowid, room_id, data, event)
                    done += 1
        return done

    async def index(self, messages: Sequence[Message]) -> None:
        async with self._db.transaction() as conn:
            for message in messages:
                await self._mirror(conn, message)

    async def _mirror(self, conn: Any, message: Message) -> None:
        if message.room_id is None:
            raise ValueError("only room messages are searched")
        incarnation = incarnation_of(message.epoch)
        stream = await _one(conn, "SELECT epoch FROM streams WHERE room_id = ?", (message.room_id,))
        if stream is not None and incarnation_of(stream[0]) != incarnation:
            # The room was made again: what this mirror holds of it is gone.
            await forget_room(conn, message.room_id)
            await conn.execute("DELETE FROM messages WHERE room_id = ?", (message.room_id,))
            await conn.execute("DELETE FROM streams WHERE room_id = ?", (message.room_id,))
        await conn.execute(
            "INSERT INTO streams (room_id, epoch, last_offset, incarnation) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (room_id) DO UPDATE SET epoch = excluded.epoch,"
            " last_offset = MAX(last_offset, excluded.last_offset)",
            (message.room_id, message.epoch, message.offset, incarnation),
        )
        data = _dump(message.data)
        inserted = await _one(
            conn,
            "INSERT INTO messages (rowid, room_id, seq, id, kind, user_id, ts, channel_id,"
            " event, data, metadata, thread_id, client_message_id)"
            f" VALUES ({NEXT_ROWID}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING RETURNING rowid",
            (
                message.room_id,
                message.offset,
                message.id,
                message.kind.value,
                message.user_id,
                to_micros(message.timestamp, "timestamp"),
                message.channel_id,
                message.event,
                data,
                _dump(message.metadata),
                message.thread_id,
                message.client_message_id,
            ),
        )
        if inserted is not None:
            await index_message(conn, inserted[0], message.room_id, data, message.event)

    async def search(self, request: SearchRequest) -> SearchPage:
        for _ in range(SEARCH_ATTEMPTS):
            rows = await self._matches(request)
            page = await hydrate(rows[: request.limit], self._db.fetch, self._db.blocks)
            # A hit whose message was deleted between reading the matches and
            # its block is left out by `hydrate`: search again, the deletion
            # is done now, so the page is full again.
            if len(page) == min(len(rows), request.limit):
                break
        hits = [hit_of(_message(r), r[6], float(r[13]), request.order) for r in page]
        return SearchPage(hits=hits, has_more=len(rows) > request.limit)

    async def _matches(self, request: SearchRequest) -> list[Any]:
        """Up to `limit + 1` matching rows in the order asked (those of
        compacted messages without their bodies)."""
        filters, filter_params = self._filters(request)
        rows: list[Any] | None = None
        if request.order is SearchOrder.NEWEST:
            sql, params, wanted = _newest_candidates(request, filters, filter_params)
            found = list(await self._db.fetch(sql, params))
            rows = sorted(found, key=_newest_first)[: request.limit + 1]
            # A match left out has a lower rowid, so (appended earlier) a
            # time no later than the oldest candidate's: the page is exact
            # when it ends strictly after that time, or when every match
            # was read. Otherwise (ties in time) sort them all. Messages
            # stamped earlier than ones appended before them (a clock
            # stepped back) may be paged in append order.
            if len(found) == wanted and rows[-1][3] <= min(r[3] for r in found):
                rows = None
        if rows is None:
            sql, params = _scored(request, filters, filter_params)
            rows = list(await self._db.fetch(sql, params))
        return rows

    def _filters(self, request: SearchRequest) -> tuple[list[str], list[Any]]:
        """The conditions on `m` besides the text and the rooms."""
        where: list[str] = []
        params: list[Any] = []
        since = [request.since] if request.since is not None else []
        if self._retention is not None:
            since.append(utcnow() - self._retention)
        if since:
            where.append("m.ts >= ?")
            params.append(to_micros(max(since), "since"))
        if request.until is not None:
            where.append("m.ts < ?")
            params.append(to_micros(request.until, "until"))
        if request.user_ids is not None:
            where.append("m.user_id IN (SELECT value FROM json_each(?))")
            params.append(orjson.dumps(sorted(request.user_ids)).decode())
        if request.events is not None:
            where.append("m.event IN (SELECT value FROM json_each(?))")
            params.append(orjson.dumps(sorted(request.events)).decode())
        if request.thread_id is not None:
            where.append("m.thread_id = ?")
            params.append(request.thread_id)
        if request.has_thread:
            where.append("m.thread_id IS NOT NULL")
        return where, params

    async def drop_room(self, room_id: str, *, incarnation: str | None = None) -> None:
        if self.indexes_on_append:
            return  # the message store's drop_room dropped the index rows
        async with self._db.transaction() as conn:
            await drop_room_rows(conn, room_id, incarnation)

    async def trim(self) -> int:
        if self.indexes_on_append or self._retention is None:
            return 0
        cutoff = to_micros(utcnow() - self._retention, "cutoff")
        async with self._db.transaction() as conn:
            await forget_before(conn, cutoff)
            async with conn.execute("DELETE FROM messages WHERE ts < ?", (cutoff,)) as cursor:
                return cursor.rowcount

    async def close(self) -> None:
        return None


_MESSAGE_FIELDS: Final = [
    "room_id",
    "seq",
    "id",
    "kind",
    "user_id",
    "ts",
    "channel_id",
    "event",
    "data",
    "metadata",
    "thread_id",
    "client_message_id",
]


def _searched() -> str:
    """The matches as `m`: a message's row, from `messages` or, compacted,
    from `compacted_messages` (whose bodies are then read from the blocks,
    `hydrate`), with its rowid and score.

    Each match's rowid is looked up in both tables, instead of joining the
    `searchable_messages` view: SQLite cannot push the join into a UNION ALL
    view, so it would materialize every message; this way FTS5 drives, and
    an ORDER BY rowid with a LIMIT stops it early."""
    fields = ", ".join(
        f"CASE WHEN a.rowid IS NULL THEN c.{name} ELSE a.{name} END AS {name}"
        for name in _MESSAGE_FIELDS
    )
    return (
        f"(SELECT message_fts.rowid AS rowid, {fields}, -bm25(message_fts, 1.0, 0.0) AS score"
        " FROM message_fts LEFT JOIN messages a ON a.rowid = message_fts.rowid"
        " LEFT JOIN compacted_messages c ON c.rowid = message_fts.rowid"
        " WHERE message_fts MATCH ?) m JOIN streams s ON s.room_id = m.room_id"
    )


_SEARCHED: Final = _searched()
_SCORED_COLUMNS: Final = f"{_MESSAGE_COLUMNS}, m.score"
SEARCH_ATTEMPTS: Final = 3
"""Searches again this often when deletions keep racing it; then answers
the short page (the deleted hits left out)."""
CANDIDATE_PAGES: Final = 4
"""Newest first reads this many pages of the newest rowids (ties in time
across rooms may order differently than rowids do)."""


def _newest_candidates(
    request: SearchRequest, filters: list[str], filter_params: list[Any]
) -> tuple[str, list[Any], int]:
    """The newest-rowid matches, read from the end of FTS5's lists: the SQL,
    its parameters, and how many it asks for.

    Messages are appended in time order, so the newest matches are among
    the highest rowids: FTS5 walks its lists backwards (`ORDER BY rowid
    DESC`) and stops after a few pages' worth, instead of reading and
    sorting every match of a common word. Their order is then the exact
    one; `search` checks the candidates were enough (see there).
    """
    sql, params = _matching(request, filters, filter_params)
    wanted = CANDIDATE_PAGES * (request.limit + 1)
    if request.after is not None:
        sql += " AND (-m.ts, m.room_id, -m.seq) > (?, ?, ?)"
        params += list(_newest_bound(request.after))
    sql += " ORDER BY m.rowid DESC LIMIT ?"
    params.append(wanted)
    return sql, params, wanted


def _matching(
    request: SearchRequest, filters: list[str], filter_params: list[Any]
) -> tuple[str, list[Any]]:
    """Every match in the rooms, unsorted."""
    where = [
        "(m.room_id, s.incarnation) IN (SELECT json_extract(value, '$[0]'),"
        " json_extract(value, '$[1]') FROM json_each(?))",
        *filters,
    ]
    params: list[Any] = [
        match_expression(request.match, [r.room_id for r in request.rooms]),
        orjson.dumps([[r.room_id, r.incarnation] for r in request.rooms]).decode(),
        *filter_params,
    ]
    return f"SELECT {_SCORED_COLUMNS} FROM {_SEARCHED} WHERE {' AND '.join(where)}", params


def _scored(
    request: SearchRequest, filters: list[str], filter_params: list[Any]
) -> tuple[str, list[Any]]:
    """Every match in the rooms, sorted: by relevance, or by time."""
    inner, params = _matching(request, filters, filter_params)
    after = request.after
    if request.order is SearchOrder.NEWEST:
        sql = inner
        if after is not None:
            sql += " AND (-m.ts, m.room_id, -m.seq) > (?, ?, ?)"
            params += list(_newest_bound(after))
        sql += " ORDER BY m.ts DESC, m.room_id, m.seq DESC LIMIT ?"
        params.append(request.limit + 1)
    else:
        sql = f"SELECT * FROM ({inner} ORDER BY m.ts DESC, m.room_id, m.seq DESC LIMIT ?) c"
        params.append(request.max_candidates)
        if after is not None:
            sql += " WHERE (-c.score, -c.ts, c.room_id, -c.seq) > (?, ?, ?, ?)"
            params += [-(after.score or 0.0), *_newest_bound(after)]
        sql += " ORDER BY c.score DESC, c.ts DESC, c.room_id, c.seq DESC LIMIT ?"
        params.append(request.limit + 1)
    return sql, params


def _newest_first(row: Any) -> tuple[int, str, int]:
    return (-row[3], row[6], -row[4])


def _newest_bound(key: SearchKey) -> tuple[int, str, int]:
    return (-to_micros(key.timestamp, "after"), key.room_id, -key.offset)
