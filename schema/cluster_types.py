"""The admin API's types (issue 13's binding names): the cluster, its
nodes, and the client connections of every node."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from resolvers import admin_rooms, cluster
from resolvers.connection_registry import ConnectionInfo

from .types import PageInfo, Room


@strawberry.type
class NodeStatus:
    id: strawberry.ID
    started_at: datetime
    version: str
    backend: str
    connections: int
    subscriptions: int
    shared_executions: int
    messages_per_second: float
    deliveries_per_second: float
    memory_bytes: float
    last_seen: datetime

    @classmethod
    def of(cls, report: dict[str, Any]) -> NodeStatus:
        return cls(
            id=strawberry.ID(str(report["id"])),
            started_at=datetime.fromisoformat(report["started_at"]),
            version=str(report["version"]),
            backend=str(report["backend"]),
            connections=int(report["connections"]),
            subscriptions=int(report["subscriptions"]),
            shared_executions=int(report["shared_executions"]),
            messages_per_second=float(report["messages_per_second"]),
            deliveries_per_second=float(report["deliveries_per_second"]),
            memory_bytes=float(report["memory_bytes"]),
            last_seen=datetime.fromisoformat(report["last_seen"]),
        )


@strawberry.type
class Cluster:
    nodes: list[NodeStatus]
    connections: int
    users: int
    subscriptions: int
    rooms: int

    @classmethod
    def of(cls, view: cluster.ClusterView) -> Cluster:
        return cls(
            nodes=[NodeStatus.of(n) for n in view.nodes],
            connections=view.connections,
            users=view.users,
            subscriptions=view.subscriptions,
            rooms=view.rooms,
        )


@strawberry.type
class ClientConnection:
    id: strawberry.ID
    node_id: strawberry.ID
    user_id: strawberry.ID
    transport: str = strawberry.field(description='"websocket" or "sse".')
    protocol: str = strawberry.field(
        description='"graphql-transport-ws", "graphql-ws", "graphql-sse-distinct" '
        'or "graphql-sse-single".'
    )
    connected_at: datetime
    subscriptions: int = strawberry.field(description="Its live subscriptions now.")

    @classmethod
    def of(cls, info: ConnectionInfo) -> ClientConnection:
        return cls(
            id=strawberry.ID(info.id),
            node_id=strawberry.ID(info.node_id),
            user_id=strawberry.ID(info.user_id),
            transport=info.transport,
            protocol=info.protocol,
            connected_at=info.connected_at,
            subscriptions=info.subscriptions,
        )


@strawberry.type
class ConnectionPage:
    edges: list[ClientConnection]
    page_info: PageInfo

    @classmethod
    def of(cls, page: cluster.ConnectionPage) -> ConnectionPage:
        found = page.connections
        return cls(
            edges=[ClientConnection.of(c) for c in found],
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=False,
                start_cursor=cluster.encode_connection_cursor(found[0]) if found else None,
                end_cursor=cluster.encode_connection_cursor(found[-1]) if found else None,
            ),
        )


@strawberry.type(description="Every room, private ones too (Query.adminRooms).")
class AdminRoomPage:
    edges: list[Room]
    page_info: PageInfo = strawberry.field(
        description="endCursor continues the walk; startCursor is always null."
    )

    @classmethod
    def of(cls, listing: admin_rooms.RoomListing) -> AdminRoomPage:
        return cls(
            edges=[Room(record=r) for r in listing.rooms],
            page_info=PageInfo(
                has_next_page=listing.end_cursor is not None,
                has_previous_page=False,
                start_cursor=None,
                end_cursor=listing.end_cursor,
            ),
        )
