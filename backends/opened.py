"""What one backend URL provides: the contract of every backend module.

Each backend module (`backends.memory`, `backends.sqlite_backend`, and the
redis and nats ones) has

    async def open_stores(url: str, roles: Collection[str], *,
                          retention: timedelta | None) -> Opened

which opens one connection for that URL and returns a store for every role
asked (`ROLES`; the optional `search` only if it has one), plus the fan-out
backend for "broker". A message store that is opened together with the
broker may publish each appended message itself, atomically with the append
(`MessageStore.publishes_on_append`); one opened together with the search
role indexes each appended message in the same transaction
(`MessageSearch.indexes_on_append`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from broadcaster import BroadcastBackend

from .calls import CallStore
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

ROLES = ("broker", "messages", "rooms", "channels", "presence", "typing", "limits", "search")
OPTIONAL_ROLES = frozenset({"search"})
"""Roles a backend may not provide: without one the feature is off (a
backend module leaves it None), unless its URL was set for that role."""


async def _nothing() -> None:
    return None


@dataclass
class Opened:
    broker: BroadcastBackend | None = None
    messages: MessageStore | None = None
    rooms: RoomStore | None = None
    channels: ChannelStore | None = None
    presence: PresenceStore | None = None
    typing: TypingStore | None = None
    limits: RateLimiter | None = None
    search: MessageSearch | None = None
    cluster: ClusterStore | None = None
    """Opened with the presence role (both are what nodes tell each other
    that expires); a backend without it leaves the cluster to this node."""
    calls: CallStore | None = None
    """Opened with the presence role (ephemeral state); None: in memory."""
    ping: Callable[[], Awaitable[None]] = field(default=_nothing)
    """Raises if the backing service cannot be reached."""
    close: Callable[[], Awaitable[None]] = field(default=_nothing)
    """Closes the connection (the stores' own close() is called first)."""
