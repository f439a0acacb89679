"""Factories for the contract suite: one registry entry per backend and role.

A factory gets a scratch directory and returns the store with its cleanup.
Adding a backend (redis, nats) is one entry per role it implements; the
`durable` registry lists the backends whose data must survive a restart.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from backends.memory import (
    MemoryChannelStore,
    MemoryMessageStore,
    MemoryPresenceStore,
    MemoryRateLimiter,
    MemoryRoomStore,
    MemoryTypingStore,
)
from backends.protocols import (
    ChannelStore,
    MessageStore,
    PresenceStore,
    RateLimiter,
    RoomStore,
    TypingStore,
)
from backends.sqlite import (
    SqliteChannelStore,
    SqliteDatabase,
    SqliteMessageStore,
    SqliteRoomStore,
)

Cleanup = Callable[[], Awaitable[None]]


async def eventually(
    predicate: Callable[[], Awaitable[bool]], *, within: float = 2.0, interval: float = 0.01
) -> None:
    """Poll `predicate` until it holds; fail the test after `within` seconds."""
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(interval)


async def _sqlite(tmp: Path) -> SqliteDatabase:
    return await SqliteDatabase.open(tmp / f"{uuid.uuid4().hex}.db")


async def _memory_messages(tmp: Path, retention: timedelta | None) -> tuple[MessageStore, Cleanup]:
    store = MemoryMessageStore(retention)
    return store, store.close


async def _sqlite_messages(tmp: Path, retention: timedelta | None) -> tuple[MessageStore, Cleanup]:
    db = await _sqlite(tmp)
    store = SqliteMessageStore(db, retention)

    async def cleanup() -> None:
        await store.close()
        await db.close()

    return store, cleanup


async def _memory_rooms(tmp: Path) -> tuple[RoomStore, Cleanup]:
    store = MemoryRoomStore()
    return store, store.close


async def _sqlite_rooms(tmp: Path) -> tuple[RoomStore, Cleanup]:
    db = await _sqlite(tmp)
    store = SqliteRoomStore(db)

    async def cleanup() -> None:
        await store.close()
        await db.close()

    return store, cleanup


async def _memory_channels(tmp: Path) -> tuple[ChannelStore, Cleanup]:
    store = MemoryChannelStore()
    return store, store.close


async def _sqlite_channels(tmp: Path) -> tuple[ChannelStore, Cleanup]:
    db = await _sqlite(tmp)
    store = SqliteChannelStore(db)

    async def cleanup() -> None:
        await store.close()
        await db.close()

    return store, cleanup


async def _memory_presence(tmp: Path) -> tuple[PresenceStore, Cleanup]:
    store = MemoryPresenceStore()
    return store, store.close


async def _memory_typing(tmp: Path) -> tuple[TypingStore, Cleanup]:
    store = MemoryTypingStore()
    return store, store.close


async def _memory_rates(tmp: Path) -> tuple[RateLimiter, Cleanup]:
    store = MemoryRateLimiter()
    return store, store.close


MESSAGE_STORES: dict[
    str, Callable[[Path, timedelta | None], Awaitable[tuple[MessageStore, Cleanup]]]
] = {"memory": _memory_messages, "sqlite": _sqlite_messages}
ROOM_STORES: dict[str, Callable[[Path], Awaitable[tuple[RoomStore, Cleanup]]]] = {
    "memory": _memory_rooms,
    "sqlite": _sqlite_rooms,
}
CHANNEL_STORES: dict[str, Callable[[Path], Awaitable[tuple[ChannelStore, Cleanup]]]] = {
    "memory": _memory_channels,
    "sqlite": _sqlite_channels,
}
PRESENCE_STORES: dict[str, Callable[[Path], Awaitable[tuple[PresenceStore, Cleanup]]]] = {
    "memory": _memory_presence,
}
TYPING_STORES: dict[str, Callable[[Path], Awaitable[tuple[TypingStore, Cleanup]]]] = {
    "memory": _memory_typing,
}
RATE_LIMITERS: dict[str, Callable[[Path], Awaitable[tuple[RateLimiter, Cleanup]]]] = {
    "memory": _memory_rates,
}


@dataclass
class DurableStores:
    """The durable roles of one backend, opened on the same data."""

    messages: MessageStore
    rooms: RoomStore
    channels: ChannelStore
    close: Cleanup


async def _sqlite_durable(data: Path, retention: timedelta | None) -> DurableStores:
    db = await SqliteDatabase.open(data / "nested" / "forge.db")

    async def close() -> None:
        for store in (messages, rooms, channels):
            await store.close()
        await db.close()

    messages = SqliteMessageStore(db, retention)
    rooms = SqliteRoomStore(db)
    channels = SqliteChannelStore(db)
    return DurableStores(messages=messages, rooms=rooms, channels=channels, close=close)


DURABLE: dict[str, Callable[[Path, timedelta | None], Awaitable[DurableStores]]] = {
    "sqlite": _sqlite_durable,
}

MessageStoreMaker = Callable[..., Awaitable[MessageStore]]
Reopen = Callable[..., Awaitable[DurableStores]]


@pytest.fixture(params=sorted(MESSAGE_STORES))
async def make_message_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[MessageStoreMaker]:
    """Build message stores of one backend: `await make(retention=...)`."""
    factory = MESSAGE_STORES[request.param]
    cleanups: list[Cleanup] = []

    async def make(retention: timedelta | None = None) -> MessageStore:
        store, cleanup = await factory(tmp_path, retention)
        cleanups.append(cleanup)
        return store

    yield make
    for cleanup in reversed(cleanups):
        await cleanup()


@pytest.fixture
async def message_store(make_message_store: MessageStoreMaker) -> MessageStore:
    return await make_message_store()


@pytest.fixture(params=sorted(ROOM_STORES))
async def room_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RoomStore]:
    store, cleanup = await ROOM_STORES[request.param](tmp_path)
    yield store
    await cleanup()


@pytest.fixture(params=sorted(CHANNEL_STORES))
async def channel_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ChannelStore]:
    store, cleanup = await CHANNEL_STORES[request.param](tmp_path)
    yield store
    await cleanup()


@pytest.fixture(params=sorted(PRESENCE_STORES))
async def presence_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[PresenceStore]:
    store, cleanup = await PRESENCE_STORES[request.param](tmp_path)
    yield store
    await cleanup()


@pytest.fixture(params=sorted(TYPING_STORES))
async def typing_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[TypingStore]:
    store, cleanup = await TYPING_STORES[request.param](tmp_path)
    yield store
    await cleanup()


@pytest.fixture(params=sorted(RATE_LIMITERS))
async def rate_limiter(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[RateLimiter]:
    store, cleanup = await RATE_LIMITERS[request.param](tmp_path)
    yield store
    await cleanup()


@pytest.fixture(params=sorted(DURABLE))
async def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Reopen]:
    """Open the durable stores on the same data, again and again: a restart.

    Close one set (`await stores.close()`) before opening the next; any left
    open are closed at teardown.
    """
    factory = DURABLE[request.param]
    opened: list[DurableStores] = []

    async def open_stores(retention: timedelta | None = None) -> DurableStores:
        stores = await factory(tmp_path, retention)
        opened.append(stores)
        return stores

    yield open_stores
    for stores in reversed(opened):
        await stores.close()
