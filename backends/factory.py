"""Open every role's backend from URLs, one per role.

The scheme picks the implementation and its module is imported lazily, so
the redis and nats extras are needed only when they are used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from broadcaster import BroadcastBackend

from .events import Event, decode_event, encode_event
from .hub import Hub
from .protocols import (
    ChannelStore,
    MessageStore,
    PresenceStore,
    RateLimiter,
    RoomStore,
    TypingStore,
)

if TYPE_CHECKING:
    from .sqlite import SqliteDatabase

ROLES = ("broker", "messages", "rooms", "channels", "presence", "typing", "limits")


class BackendConfigError(ValueError):
    pass


@dataclass
class Backends:
    messages: MessageStore
    rooms: RoomStore
    channels: ChannelStore
    presence: PresenceStore
    typing: TypingStore
    rates: RateLimiter
    hub: Hub[Event]
    checks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def ping(self) -> None:
        """Raise if any backing service cannot be reached."""
        for check in self.checks:
            await check()

    async def close(self) -> None:
        await self.hub.stop()
        for store in (
            self.messages,
            self.rooms,
            self.channels,
            self.presence,
            self.typing,
            self.rates,
        ):
            await store.close()
        for closer in reversed(self.closers):
            await closer()


def _scheme(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in ("memory", "sqlite"):
        raise BackendConfigError(
            f"unsupported backend URL scheme {scheme!r} (supported: memory://, sqlite:///path)"
        )
    return scheme


def sqlite_path(url: str) -> Path:
    """`sqlite:///relative.db` and `sqlite:////absolute.db`, as SQLAlchemy reads them."""
    path = url.removeprefix("sqlite:///")
    if not path or path == url:
        raise BackendConfigError(f"sqlite URL needs a path: sqlite:///path/to.db, got {url!r}")
    return Path(path)


async def open_backends(
    urls: Mapping[str, str],
    *,
    retention: timedelta | None,
    subscriber_capacity: int = 1024,
) -> Backends:
    """Open the backends for each role in `ROLES` from `urls[role]`."""
    from . import memory

    missing = [role for role in ROLES if role not in urls]
    if missing:
        raise BackendConfigError(f"no backend URL for {', '.join(missing)}")
    schemes = {role: _scheme(urls[role]) for role in ROLES}

    closers: list[Callable[[], Awaitable[None]]] = []
    checks: list[Callable[[], Awaitable[None]]] = []
    databases: dict[Path, SqliteDatabase] = {}

    async def database(url: str) -> SqliteDatabase:
        from .sqlite import SqliteDatabase

        path = sqlite_path(url)
        if path not in databases:
            db = await SqliteDatabase.open(path)
            databases[path] = db
            closers.append(db.close)
            checks.append(db.ping)
        return databases[path]

    try:
        messages: MessageStore
        rooms: RoomStore
        channels: ChannelStore
        if schemes["messages"] == "sqlite":
            from .sqlite import SqliteMessageStore

            messages = SqliteMessageStore(await database(urls["messages"]), retention)
        else:
            messages = memory.MemoryMessageStore(retention)
        if schemes["rooms"] == "sqlite":
            from .sqlite import SqliteRoomStore

            rooms = SqliteRoomStore(await database(urls["rooms"]))
        else:
            rooms = memory.MemoryRoomStore()
        if schemes["channels"] == "sqlite":
            from .sqlite import SqliteChannelStore

            channels = SqliteChannelStore(await database(urls["channels"]))
        else:
            channels = memory.MemoryChannelStore()
        # Presence, typing and limits are ephemeral: sqlite keeps them in memory.
        broker = _broadcast_backend(urls["broker"])
        hub: Hub[Event] = Hub(
            broker, encode=encode_event, decode=decode_event, capacity=subscriber_capacity
        )
        await hub.start()
    except BaseException:
        for closer in reversed(closers):
            with contextlib.suppress(Exception):
                await closer()
        raise
    return Backends(
        messages=messages,
        rooms=rooms,
        channels=channels,
        presence=memory.MemoryPresenceStore(),
        typing=memory.MemoryTypingStore(),
        rates=memory.MemoryRateLimiter(),
        hub=hub,
        checks=checks,
        closers=closers,
    )


def _broadcast_backend(url: str) -> BroadcastBackend:
    # memory and sqlite both fan out in-process: one node only.
    from broadcaster._backends.memory import MemoryBackend

    return MemoryBackend(url)
