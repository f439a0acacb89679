"""The `sqlite://` backend module (see `backends.opened`): durable roles in
one SQLite file (backends/sqlite.py), its search index in the same file
(backends/sqlite_search.py), the ephemeral roles in memory."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta

from .opened import Opened
from .sql_roles import SqlStores, open_sql_stores
from .sqlite import (
    SqliteChannelStore,
    SqliteDatabase,
    SqliteMessageStore,
    SqliteRoomStore,
    sqlite_path,
)
from .sqlite_search import SqliteMessageSearch

__all__ = ["open_stores", "sqlite_path"]


async def open_stores(url: str, roles: Collection[str], *, retention: timedelta | None) -> Opened:
    """Rooms, channels, history and search in the file; the ephemeral roles
    (fan-out, presence, typing, rate limits) in memory, as for `memory://`."""
    stores = SqlStores[SqliteDatabase](
        open_database=lambda: SqliteDatabase.open(sqlite_path(url)),
        search=lambda db, retention, with_messages: SqliteMessageSearch.open(
            db, retention, with_messages=with_messages
        ),
        messages=lambda db, retention, indexed: SqliteMessageStore(db, retention, indexed=indexed),
        rooms=SqliteRoomStore,
        channels=SqliteChannelStore,
        unindexed=lambda db: db.appending_unindexed(),
    )
    return await open_sql_stores(stores, roles, retention=retention)
