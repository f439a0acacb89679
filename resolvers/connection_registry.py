"""This node's client connections, whatever their transport, for the admin
API (Query.connections, Mutation.disconnectUser, Query.cluster's counts).

Transports add a connection once it is authenticated and remove it when it
ends (transport/ws/handlers.py `connection_init`, transport/sse/events.py
`StreamPresence`); each brings a way to count its live subscriptions and a
way to end it telling the client why, so nothing here knows a transport.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backends.codecs import from_iso_utc, to_iso_utc

TRANSPORTS = ("websocket", "sse")
PROTOCOLS = ("graphql-transport-ws", "graphql-ws", "graphql-sse-distinct", "graphql-sse-single")


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """A connection as Query.connections shows it; travels between nodes."""

    id: str
    node_id: str
    user_id: str
    transport: str
    protocol: str
    connected_at: datetime
    subscriptions: int

    def sort_key(self) -> tuple[float, str, str]:
        """The order of Query.connections: oldest first, then by node and id."""
        return (self.connected_at.timestamp(), self.node_id, self.id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "node_id": self.node_id,
            "user_id": self.user_id,
            "transport": self.transport,
            "protocol": self.protocol,
            "connected_at": to_iso_utc(self.connected_at),
            "subscriptions": self.subscriptions,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ConnectionInfo:
        return cls(
            id=str(doc["id"]),
            node_id=str(doc["node_id"]),
            user_id=str(doc["user_id"]),
            transport=str(doc["transport"]),
            protocol=str(doc["protocol"]),
            connected_at=from_iso_utc(doc["connected_at"]),
            subscriptions=int(doc["subscriptions"]),
        )


@dataclass(frozen=True, slots=True)
class LocalConnection:
    id: str
    user_id: str
    transport: str
    protocol: str
    connected_at: datetime
    live_subscriptions: Callable[[], int]
    # Ends the connection, telling the client the reason (its transport's way).
    end: Callable[[str], None]


class ConnectionRegistry:
    """The open connections of this node (`node_id`)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._by_id: dict[str, LocalConnection] = {}

    def add(self, connection: LocalConnection) -> None:
        if connection.transport not in TRANSPORTS or connection.protocol not in PROTOCOLS:
            raise ValueError(f"unknown transport or protocol: {connection.protocol!r}")
        self._by_id[connection.id] = connection

    def remove(self, conn_id: str) -> None:
        self._by_id.pop(conn_id, None)

    def __len__(self) -> int:
        return len(self._by_id)

    def users(self) -> set[str]:
        return {c.user_id for c in self._by_id.values()}

    def listing(self, user_id: str | None = None) -> list[ConnectionInfo]:
        """This node's connections (of `user_id` only, if given), in order."""
        found = [
            ConnectionInfo(
                id=c.id,
                node_id=self.node_id,
                user_id=c.user_id,
                transport=c.transport,
                protocol=c.protocol,
                connected_at=c.connected_at,
                subscriptions=c.live_subscriptions(),
            )
            for c in self._by_id.values()
            if user_id is None or c.user_id == user_id
        ]
        return sorted(found, key=ConnectionInfo.sort_key)

    def end_user(self, user_id: str, reason: str) -> int:
        """End every connection of `user_id` here; how many there were."""
        ending = [c for c in self._by_id.values() if c.user_id == user_id]
        for connection in ending:
            self._by_id.pop(connection.id, None)
            connection.end(reason)
        return len(ending)
