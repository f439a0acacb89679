"""Open every role's backend from URLs, one connection per distinct URL.

The URL's scheme picks the backend module, imported lazily so that the redis,
nats and postgres extras are needed only when used. Each module's `open_stores`
follows the contract in `backends.opened`.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from .calls import CallStore, MemoryDocuments
from .compaction import Compactor
from .events import Event, decode_hub_event, encode_hub_event
from .hub import Hub
from .indexed_history import IndexedMessageStore
from .memory_cluster import MemoryClusterStore
from .opened import OPTIONAL_ROLES, ROLES, Opened
from .protocols import (
    ChannelStore,
    ClusterStore,
    MessageSearch,
    MessageStore,
    PresenceStore,
    RateLimiter,
    RoomStore,
    TypingStore,
)

MODULES = {
    "memory": "backends.memory",
    "sqlite": "backends.sqlite_backend",
    "redis": "backends.redis",
    "rediss": "backends.redis",
    "nats": "backends.nats",
    "tls": "backends.nats",
    "postgresql": "backends.postgres",
    "postgres": "backends.postgres",
}

__all__ = [
    "MODULES",
    "OPTIONAL_ROLES",
    "ROLES",
    "BackendConfigError",
    "Backends",
    "backend_module",
    "open_backends",
]


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
    search: MessageSearch | None = None
    """None when no backend provides the search role (searchMessages is off)."""
    cluster: ClusterStore = field(default_factory=MemoryClusterStore)
    """Node reports and token revocations (with the presence role)."""
    compactor: Compactor | None = None
    """The history backend, when it packs old messages into blocks."""
    calls: CallStore = field(default_factory=lambda: CallStore(MemoryDocuments()))
    """Calls and their signal buffers, on the presence role's backend."""
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
        if self.search is not None:
            await self.search.close()
        await self.cluster.close()
        for closer in reversed(self.closers):
            await closer()


def backend_module(url: str) -> Any:
    scheme = urlsplit(url).scheme
    if scheme not in MODULES:
        known = ", ".join(f"{s}://" for s in MODULES)
        raise BackendConfigError(f"unsupported backend URL scheme {scheme!r} (supported: {known})")
    return importlib.import_module(MODULES[scheme])


def _required(value: Any, role: str, url: str) -> Any:
    if value is None:
        raise BackendConfigError(f"{url.split('://')[0]}:// does not provide the {role} role")
    return value


async def open_backends(
    urls: Mapping[str, str],
    *,
    retention: timedelta | None,
    subscriber_capacity: int = 1024,
    insist_on: Collection[str] = (),
) -> Backends:
    """Open the backends for each role in `ROLES` from `urls[role]`.

    An optional role (`OPTIONAL_ROLES`) its URL does not provide is None,
    unless it is in `insist_on` (its URL was set for it): then that is a
    BackendConfigError, like any other role not provided."""
    missing = [role for role in ROLES if role not in urls]
    if missing:
        raise BackendConfigError(f"no backend URL for {', '.join(missing)}")
    roles_by_url: dict[str, list[str]] = {}
    for role in ROLES:
        roles_by_url.setdefault(urls[role], []).append(role)
    modules = {url: backend_module(url) for url in roles_by_url}

    opened: dict[str, Opened] = {}
    try:
        for url, roles in roles_by_url.items():
            opened[url] = await modules[url].open_stores(url, roles, retention=retention)
        by_role = {role: opened[urls[role]] for role in ROLES}

        def provided(role: str) -> Any:
            return _required(getattr(by_role[role], role), role, urls[role])

        hub: Hub[Event] = Hub(
            provided("broker"),
            encode=encode_hub_event,
            decode=decode_hub_event,
            capacity=subscriber_capacity,
        )
        search: MessageSearch | None = by_role["search"].search
        if search is None and "search" in insist_on:
            _required(None, "search", urls["search"])
        messages: MessageStore = provided("messages")
        compactor = messages if isinstance(messages, Compactor) else None
        if search is not None and not search.indexes_on_append:
            messages = IndexedMessageStore(messages, search)
        await hub.start()
    except BaseException:
        for item in reversed(opened.values()):
            with contextlib.suppress(Exception):
                await item.close()
        raise
    return Backends(
        messages=messages,
        search=search,
        compactor=compactor,
        rooms=provided("rooms"),
        channels=provided("channels"),
        presence=provided("presence"),
        typing=provided("typing"),
        rates=provided("limits"),
        cluster=by_role["presence"].cluster or MemoryClusterStore(),
        hub=hub,
        calls=by_role["presence"].calls or CallStore(MemoryDocuments()),
        checks=[item.ping for item in opened.values()],
        closers=[item.close for item in opened.values()],
    )
