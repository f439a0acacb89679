"""Factories for the contract suite: one registry entry per backend and role.

A factory gets a scratch directory and returns the store with its cleanup.
Adding a backend (redis, nats) is one entry per role it implements; the
`durable` registry lists the backends whose data must survive a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from backends.factory import backend_module as factory_module
from backends.opened import Opened
from backends.protocols import (
    ChannelStore,
    ClusterStore,
    MessageStore,
    RoomStore,
)
from backends.records import MessageKind, NewMessage
from tests.conftest import require_service
from tests.services import PRIVATE_POSTGRES

Cleanup = Callable[[], Awaitable[None]]


def new_message(
    data: Any,
    *,
    room_id: str,
    user_id: str = "alice",
    event: str | None = "chat",
    thread_id: str | None = None,
    client_message_id: str | None = None,
    timestamp: datetime | None = None,
) -> NewMessage:
    """A user's message to append; sent now unless `timestamp` says when."""
    return NewMessage(
        kind=MessageKind.MESSAGE,
        user_id=user_id,
        room_id=room_id,
        event=event,
        data=data,
        thread_id=thread_id,
        client_message_id=client_message_id,
        timestamp=timestamp or datetime.now(UTC),
    )


async def eventually(
    predicate: Callable[[], Awaitable[bool]], *, within: float = 2.0, interval: float = 0.01
) -> None:
    """Poll `predicate` until it holds; fail the test after `within` seconds."""
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class BackendSpec:
    """How the contract suite opens one backend.

    `url` makes a URL for a fresh, isolated data set (a new file, a new key
    namespace); `roles` are the roles the backend stores itself; `durable`
    backends must keep messages, rooms and channels across a reopen;
    `service` names the server (and port) a backend needs.
    """

    url: Callable[[Path], str]
    roles: frozenset[str]
    durable: bool = False
    service: tuple[str, int] | None = None
    cleanup: Callable[[str], Awaitable[None]] | None = None
    """Deletes the data set behind a URL made by `url`, after the test."""


EVERY_ROLE = frozenset({"messages", "rooms", "channels", "presence", "typing", "limits"})


async def _delete_namespace(url: str) -> None:
    await factory_module(url).delete_namespace(url)


def _namespaced_server(base_url: str, service: tuple[str, int]) -> BackendSpec:
    """A server backend with every role: each test gets a fresh key namespace, deleted after."""
    return BackendSpec(
        url=lambda tmp: f"{base_url}?namespace=t{uuid4().hex[:12]}",
        roles=EVERY_ROLE,
        durable=True,
        service=service,
        cleanup=_delete_namespace,
    )


BACKENDS: dict[str, BackendSpec] = {
    "memory": BackendSpec(url=lambda tmp: "memory://", roles=EVERY_ROLE | {"search"}),
    "sqlite": BackendSpec(
        url=lambda tmp: f"sqlite:///{tmp / 'nested' / 'forge.db'}",
        roles=frozenset({"messages", "rooms", "channels", "search"}),
        durable=True,
    ),
    "redis": _namespaced_server("redis://127.0.0.1:6379/0", ("Redis", 6379)),
    "nats": _namespaced_server("nats://127.0.0.1:4222", ("NATS", 4222)),
    "postgresql": BackendSpec(
        # The session's private cluster, started by the first test that needs it.
        url=lambda tmp: f"{PRIVATE_POSTGRES.url()}?schema=t{uuid4().hex[:12]}",
        roles=frozenset({"messages", "rooms", "channels", "search"}),
        durable=True,
        cleanup=_delete_namespace,
    ),
}


def backends_with(role: str) -> list[str]:
    return sorted(name for name, spec in BACKENDS.items() if role in spec.roles)


class Opener:
    """Opens stores of one backend on one data set; closes them all at the end."""

    def __init__(self, name: str, tmp: Path) -> None:
        spec = BACKENDS[name]
        if spec.service is not None:
            require_service(*spec.service)
        self.url = spec.url(tmp)
        self._cleanup = spec.cleanup
        self._opened: list[tuple[Any, Opened]] = []

    async def open(
        self, role: str, retention: timedelta | None = None, *, part: str | None = None
    ) -> Any:
        """The store of `role`, or the `part` (an attribute of `Opened`) opened with it."""
        opened = await factory_module(self.url).open_stores(self.url, [role], retention=retention)
        store = getattr(opened, part or role)
        self._opened.append((store, opened))
        return store

    async def close(self, store: Any) -> None:
        for i, (candidate, opened) in enumerate(self._opened):
            if candidate is store:
                del self._opened[i]
                await store.close()
                await opened.close()
                return

    async def close_all(self) -> None:
        while self._opened:
            await self.close(self._opened[-1][0])
        if self._cleanup is not None:
            await self._cleanup(self.url)


@dataclass
class DurableStores:
    """The durable roles of one backend, opened on the same data."""

    messages: MessageStore
    rooms: RoomStore
    channels: ChannelStore
    close: Cleanup


MessageStoreMaker = Callable[..., Awaitable[MessageStore]]
Reopen = Callable[..., Awaitable[DurableStores]]


@pytest.fixture(params=backends_with("messages"))
async def make_message_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[MessageStoreMaker]:
    """Build message stores of one backend: `await make(retention=...)`."""
    opener = Opener(request.param, tmp_path)

    async def make(retention: timedelta | None = None) -> MessageStore:
        store: MessageStore = await opener.open("messages", retention)
        return store

    yield make
    await opener.close_all()


@pytest.fixture
async def message_store(make_message_store: MessageStoreMaker) -> MessageStore:
    return await make_message_store()


def _store_fixture(role: str) -> Any:
    """A fixture giving `role`'s store of each backend that has one, closed after the test."""

    @pytest.fixture(params=backends_with(role))
    async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
        opener = Opener(request.param, tmp_path)
        yield await opener.open(role)
        await opener.close_all()

    return store


# Each fixture takes the name it is bound to here.
room_store = _store_fixture("rooms")
channel_store = _store_fixture("channels")
presence_store = _store_fixture("presence")
typing_store = _store_fixture("typing")
rate_limiter = _store_fixture("limits")


ClusterStoreMaker = Callable[[], Awaitable[ClusterStore]]


@pytest.fixture(params=backends_with("presence"))
async def make_cluster_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ClusterStoreMaker]:
    """Open the cluster role (it comes with presence) on one data set, once
    per node: `await make()`. In memory there is one node: every call gives
    the same store."""
    opener = Opener(request.param, tmp_path)
    made: list[ClusterStore] = []

    async def make() -> ClusterStore:
        if made and request.param == "memory":
            return made[0]
        store: ClusterStore = await opener.open("presence", part="cluster")
        made.append(store)
        return store

    yield make
    await opener.close_all()


@pytest.fixture(params=sorted(name for name, spec in BACKENDS.items() if spec.durable))
async def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Reopen]:
    """Open the durable stores on the same data, again and again: a restart.

    Close one set (`await stores.close()`) before opening the next; any left
    open are closed at teardown.
    """
    opener = Opener(request.param, tmp_path)

    async def open_stores(retention: timedelta | None = None) -> DurableStores:
        messages = await opener.open("messages", retention)
        rooms = await opener.open("rooms")
        channels = await opener.open("channels")

        async def close() -> None:
            for store in (messages, rooms, channels):
                await opener.close(store)

        return DurableStores(messages=messages, rooms=rooms, channels=channels, close=close)

    yield open_stores
    await opener.close_all()
