"""What the two SQL backend modules (`sqlite://`, `postgresql://`) share:
one database serves the durable roles (messages, rooms, channels) and
search; the ephemeral ones (fan-out, presence, typing, rate limits) are in
memory, as for `memory://`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, Protocol, TypeVar

from . import memory
from .opened import Opened
from .protocols import ChannelStore, MessageSearch, MessageStore, RoomStore

__all__ = ["SqlStores", "open_sql_stores"]

DURABLE = frozenset({"messages", "rooms", "channels", "search"})


class SqlDatabase(Protocol):
    async def ping(self) -> None: ...

    async def close(self) -> None: ...


D = TypeVar("D", bound=SqlDatabase)


@dataclass(frozen=True)  # no slots: they break Generic's subscripted call
class SqlStores(Generic[D]):
    """How one backend opens its database and the stores on it."""

    open_database: Callable[[], Awaitable[D]]
    # (db, retention, with_messages): the search opened with the messages
    # role indexes what it stores as it stores it.
    search: Callable[[D, timedelta | None, bool], Awaitable[MessageSearch]]
    # (db, retention, indexed): indexed when the search role is served too.
    messages: Callable[[D, timedelta | None, bool], MessageStore]
    rooms: Callable[[D], RoomStore]
    channels: Callable[[D], ChannelStore]
    # Told when the messages are stored without the search role (SQLite
    # stops keeping its index then); None: nothing to do.
    unindexed: Callable[[D], Awaitable[None]] | None = None


async def open_sql_stores(
    stores: SqlStores[D], roles: Collection[str], *, retention: timedelta | None
) -> Opened:
    """The durable roles and search in the database; the others in memory."""
    opened = await memory.open_stores(
        "memory://", [r for r in roles if r not in DURABLE], retention=retention
    )
    if not DURABLE.intersection(roles):
        return opened
    db = await stores.open_database()
    searched, stored = "search" in roles, "messages" in roles
    try:
        if searched:
            opened.search = await stores.search(db, retention, stored)
        elif stored and stores.unindexed is not None:
            await stores.unindexed(db)
    except BaseException:
        await db.close()
        raise
    if stored:
        opened.messages = stores.messages(db, retention, searched)
    if "rooms" in roles:
        opened.rooms = stores.rooms(db)
    if "channels" in roles:
        opened.channels = stores.channels(db)
    opened.ping = db.ping
    opened.close = db.close
    return opened
