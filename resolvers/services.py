"""What every resolver works with: settings, backends, metrics, the viewer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from backends.factory import Backends
from core.metrics import Metrics
from core.settings import Settings
from resolvers.errors import FeatureDisabled

from .cluster_link import ClusterLink
from .connection_registry import ConnectionRegistry
from .presence_watch import PresenceWatch
from .revocations import Revocations


@dataclass(frozen=True, slots=True)
class Viewer:
    """The authenticated user, and their WebSocket connection if any."""

    user_id: str
    conn_id: str | None = None
    # A server admin (the admin_users setting, an admin token, an admin API
    # key): may act in any room as its owner (rooms.membership).
    is_admin: bool = False


class KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@dataclass
class Services:
    settings: Settings
    backends: Backends
    metrics: Metrics
    # Appending and publishing a room's message under one lock keeps this
    # process's live events in offset order; readers fill any gap anyway.
    room_locks: KeyedLocks = field(default_factory=KeyedLocks)
    # conn_id -> user_id of this process's WebSocket connections, refreshed
    # by the presence heartbeat.
    connections: dict[str, str] = field(default_factory=dict)
    # conn_id -> {session_id: call_id}: the call sessions bound to this
    # process's connections, refreshed by the heartbeat, released on close.
    call_sessions: dict[str, dict[str, str]] = field(default_factory=dict)
    # presence(userIds:) subscriptions, over a few shared topics.
    presence_watch: PresenceWatch = field(default_factory=PresenceWatch)
    # This process's subscriptions that run on their own and are live (the
    # shared executions count their subscribers themselves).
    live_subscriptions: int = 0
    # This node's client connections, every transport (admin API).
    registry: ConnectionRegistry = field(init=False)
    # This node's part in the cluster API (reports, requests to every node);
    # `cluster_link.run()` runs for the app's lifetime.
    cluster_link: ClusterLink = field(init=False)
    # Users' token revocations, read through a short cache.
    revocations: Revocations = field(init=False)

    def __post_init__(self) -> None:
        self.registry = ConnectionRegistry(self.settings.node_id)
        self.revocations = Revocations(self.backends.cluster)
        self.cluster_link = ClusterLink(
            self.settings, self.backends, self.metrics, self.registry, self.revocations
        )

    def viewer(self, user_id: str, conn_id: str | None = None, *, admin: bool = False) -> Viewer:
        """The viewer `user_id`; `admin` when their credentials say so, else
        when the admin_users setting names them."""
        is_admin = admin or user_id in self.settings.admin_users
        return Viewer(user_id, conn_id, is_admin=is_admin)

    def require(self, feature: str) -> None:
        enabled = {
            "rooms": self.settings.enable_rooms,
            "channels": self.settings.enable_channels,
            "presence": self.settings.enable_presence,
            "typing": self.settings.enable_typing_indicators,
            "history": self.settings.enable_message_history,
        }[feature]
        if not enabled:
            raise FeatureDisabled(f"{feature} are disabled on this server", feature=feature)
