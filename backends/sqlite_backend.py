"""The `sqlite://` backend module (see `backends.opened`): durable roles in
one SQLite file (backends/sqlite.py), its search index in the same file
(backends/sqlite_search.py), the ephemeral roles in memory."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta

from . import memory
from .opened import Opened
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
    """Rooms, channels and history in the file; the ephemeral roles (fan-out,
    presence, typing, rate limits) in memory, as for `memory://`."""
    durable = {"messages", "rooms", "channels", "search"}
    opened = await memory.open_stores(
        "memory://", [r for r in roles if r not in durable], retention=retention
    )
    if not durable.intersection(roles):
        return opened
    db = await SqliteDatabase.open(sqlite_path(url))
    try:
        if "search" in roles:
            opened.search = await SqliteMessageSearch.open(
                db, retention, with_messages="messages" in roles
            )
        elif "messages" in roles:
            await db.appending_unindexed()
    except BaseException:
        await db.close()
        raise
    if "messages" in roles:
        opened.messages = SqliteMessageStore(db, retention, indexed="search" in roles)
    if "rooms" in roles:
        opened.rooms = SqliteRoomStore(db)
    if "channels" in roles:
        opened.channels = SqliteChannelStore(db)
    opened.ping = db.ping
    opened.close = db.close
    return opened
