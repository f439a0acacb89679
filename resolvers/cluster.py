"""The cluster API: every node's self-report, the connections of every node,
disconnecting a user everywhere (admins only).

Each node writes its status through the backend's cluster role every
`node_report_interval`, kept `node_ttl` (backends/protocols.py
ClusterStore): Query.cluster reads those reports, so a killed node drops out
by itself.

Connections are not in the reports: they are asked for when wanted. The
asking node publishes a request on `topics.CLUSTER_REQUESTS`; every node
(itself included) answers on the asker's reply topic, and the asker waits
for the nodes that reported themselves, at most `cluster_reply_timeout`. A
listing is thus current (a disconnectUser's count is the connections really
closed) and costs nothing while nobody asks, where publishing each node's
list with its report would cost every interval and be stale by up to one;
each reply is bounded (`first` + 1 entries after the cursor), so a page
costs the same whatever the size of the cluster's connection list.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

from .admin import require_admin
from .connection_registry import ConnectionInfo
from .errors import BadUserInput
from .opaque_cursor import decode_cursor, encode_cursor
from .services import Services, Viewer
from .stream_signals import LIVE

log = logging.getLogger(__name__)

# A user's connections closed by an admin: WebSocket close code and reason prefix.
DISCONNECTED_CODE = 4403
DISCONNECTED = "DISCONNECTED"
# clusterStats(intervalMs:): faster would be a load of its own (each tick
# asks every node), slower than a minute is no longer live.
MIN_STATS_INTERVAL_MS = 500
MAX_STATS_INTERVAL_MS = 60_000


# --- the admin API --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterView:
    nodes: list[dict[str, Any]]
    connections: int
    users: int
    subscriptions: int
    rooms: int


async def cluster_view(services: Services, viewer: Viewer) -> ClusterView:
    require_admin(viewer)
    return await cluster_now(services)


async def cluster_now(services: Services) -> ClusterView:
    """The cluster as any admin sees it (no viewer: clusterStats shares it)."""
    link = services.cluster_link
    nodes = await services.backends.cluster.nodes()
    if not any(n.get("id") == link.node_id for n in nodes):
        # Not reported yet (just started), or its backend keeps nothing.
        await link.report()
        nodes = await services.backends.cluster.nodes()
    # The totals are this moment's (each node's reply), and so are the
    # counts in each answering node's row: taken from its last report, a row
    # could say 0 connections beside a total of 1 for up to a report
    # interval. The rest of a row (rates, memory) is as of its last report.
    users: set[str] = set()
    connections = subscriptions = 0
    now: dict[str, dict[str, int]] = {}
    for reply in await link.ask("summary", {}):
        users.update(str(u) for u in reply.get("users", []))
        counts = {
            "connections": int(reply.get("connections", 0)),
            "subscriptions": int(reply.get("subscriptions", 0)),
        }
        now[str(reply.get("node"))] = counts
        connections += counts["connections"]
        subscriptions += counts["subscriptions"]
    return ClusterView(
        nodes=[{**n, **now.get(str(n.get("id")), {})} for n in nodes],
        connections=connections,
        users=len(users),
        subscriptions=subscriptions,
        rooms=await _room_count(services),
    )


async def _room_count(services: Services) -> int:
    if not services.settings.enable_rooms:
        return 0
    count, cursor = 0, ""
    while True:
        ids, cursor = await services.backends.rooms.room_id_page(cursor, limit=500)
        count += len(ids)
        if not cursor:
            return count


def stats_interval(args: Mapping[str, Any]) -> int:
    """clusterStats' `intervalMs` (2000 when not given)."""
    interval = args.get("intervalMs")
    return 2000 if interval is None else int(interval)


async def authorize_cluster_stats(
    services: Services, viewer: Viewer, args: Mapping[str, Any]
) -> None:
    require_admin(viewer)
    if not MIN_STATS_INTERVAL_MS <= stats_interval(args) <= MAX_STATS_INTERVAL_MS:
        raise BadUserInput(
            f"intervalMs must be between {MIN_STATS_INTERVAL_MS} and {MAX_STATS_INTERVAL_MS}",
            argument="intervalMs",
        )


async def cluster_stats(
    services: Services, args: Mapping[str, Any]
) -> AsyncGenerator[object, None]:
    """Query.cluster now and every `intervalMs`, for any admin (the same
    for all: identical clusterStats subscriptions share one execution)."""
    yield LIVE
    interval = stats_interval(args) / 1000
    while True:
        yield await cluster_now(services)
        await asyncio.sleep(interval)


@dataclass(frozen=True, slots=True)
class ConnectionPage:
    connections: list[ConnectionInfo]
    has_next_page: bool


def encode_connection_cursor(connection: ConnectionInfo) -> str:
    return encode_cursor(list(connection.sort_key()))


def _is_sort_key(key: list[Any]) -> bool:
    return (
        len(key) == 3
        and isinstance(key[0], int | float)
        and all(isinstance(k, str) for k in key[1:])
    )


def _decode_cursor(after: str) -> list[Any]:
    return decode_cursor(after, _is_sort_key, "connections")


async def list_connections(
    services: Services,
    viewer: Viewer,
    *,
    user_id: str | None,
    node_id: str | None,
    first: int | None,
    after: str | None,
) -> ConnectionPage:
    require_admin(viewer)
    limit_max = services.settings.max_page_size
    limit = limit_max if first is None else first
    if not 0 <= limit <= limit_max:
        raise BadUserInput(f"first must be between 0 and {limit_max}", argument="first")
    key = _decode_cursor(after) if after else None
    args = {"user_id": user_id, "node_id": node_id, "after": key, "limit": limit + 1}
    found = [
        ConnectionInfo.from_dict(doc)
        for reply in await services.cluster_link.ask("connections", args)
        for doc in reply.get("connections", [])
    ]
    found.sort(key=ConnectionInfo.sort_key)
    return ConnectionPage(found[:limit], has_next_page=len(found) > limit)


async def disconnect_user(
    services: Services, viewer: Viewer, user_id: str, reason: str | None, revoke_tokens: bool
) -> int:
    """Close the user's connections on every node; how many were closed.
    `revoke_tokens`: their tokens issued before now are refused from now on."""
    require_admin(viewer)
    revoked_before = None
    if revoke_tokens:
        revoked_before = time.time()
        await services.backends.cluster.revoke_tokens(user_id, revoked_before)
        services.revocations.note(user_id, revoked_before)
    log.info(
        "admin %s disconnects user %s (revoke tokens: %s)", viewer.user_id, user_id, revoke_tokens
    )
    text = f"{DISCONNECTED}: {reason}" if reason else f"{DISCONNECTED}: by a server admin"
    replies = await services.cluster_link.ask(
        "disconnect", {"user_id": user_id, "reason": text, "revoked_before": revoked_before}
    )
    return sum(int(reply.get("closed", 0)) for reply in replies)
