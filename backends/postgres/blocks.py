"""Compressed blocks of old messages on PostgreSQL: the SQL stores' block
code (backends/sqlite_blocks.py) run through a connection that turns its
`?` parameters into PostgreSQL's numbered ones, and what differs here.

Block and client id times are microseconds (bigint), as in SQLite, so the
shared code compares them as integers; a compacted message's row keeps its
timestamp as microseconds and `message_of` turns it back into the same
datetime. PostgreSQL's transactions make each batch atomic as SQLite's do;
the watermark is read `FOR UPDATE`, so two nodes compacting one room at once
wait for each other instead of both writing the same blocks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, cast

import asyncpg

from ..sqlite_blocks import BlockDialect, Fetch, Row
from .database import Connection, PostgresDatabase

__all__ = ["POSTGRES_DIALECT", "QmarkConnection", "numbered", "qmark_fetch", "qmark_transaction"]

POSTGRES_DIALECT: Final = BlockDialect(
    entry_columns=(
        "seq, 0, id, kind, user_id, (extract(epoch FROM ts) * 1000000)::bigint, channel_id,"
        " event, data, metadata, thread_id, client_message_id"
    ),
    search_copy=(
        "INSERT INTO compacted_messages (room_id, seq, user_id, ts, event, thread_id, tsv)"
        " SELECT room_id, seq, user_id, ts, event, thread_id, tsv FROM messages"
        " WHERE room_id = ? AND seq BETWEEN ? AND ?"
    ),
    lock=" FOR UPDATE",
)


def _rows(records: list[asyncpg.Record]) -> list[Row]:
    # A Record is a sequence, though asyncpg's stubs do not say so.
    return cast(list[Row], records)


def numbered(sql: str) -> str:
    """`sql` with its `?` as $1, $2, ... (the shared statements hold no
    other question mark)."""
    parts = sql.split("?")
    out = [parts[0]]
    for i, part in enumerate(parts[1:], start=1):
        out.append(f"${i}{part}")
    return "".join(out)


class QmarkConnection:
    """An asyncpg connection seen through the subset of aiosqlite's API the
    shared block code uses (`BlockConnection`)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def execute_fetchall(self, sql: str, parameters: Sequence[Any]) -> list[Row]:
        return _rows(await self._connection.fetch(numbered(sql), *parameters))

    async def execute(self, sql: str, parameters: Sequence[Any]) -> Any:
        return await self._connection.execute(numbered(sql), *parameters)

    async def executemany(self, sql: str, parameters: Any) -> Any:
        rows = list(parameters)
        if rows:
            await self._connection.executemany(numbered(sql), rows)


def qmark_fetch(db: PostgresDatabase | QmarkConnection) -> Fetch:
    async def fetch(sql: str, params: Sequence[Any] = ()) -> list[Row]:
        if isinstance(db, QmarkConnection):
            return await db.execute_fetchall(sql, params)
        return _rows(await db.fetch(numbered(sql), *params))

    return fetch


def qmark_transaction(db: PostgresDatabase) -> Any:
    @asynccontextmanager
    async def transaction() -> AsyncIterator[QmarkConnection]:
        async with db.transaction() as connection:
            yield QmarkConnection(connection)

    return transaction
