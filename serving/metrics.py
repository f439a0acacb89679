"""Prometheus metrics, on a registry of the app's own (no global state).

The seed's names (`streaming.connections.active`, ...) become Prometheus
names with underscores; counters get the `_total` suffix on exposition.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections_active = Gauge(
            "streaming_connections_active", "Open WebSocket and SSE connections", registry=r
        )
        self.connections_total = Counter(
            "streaming_connections", "WebSocket and SSE connections accepted", registry=r
        )
        self.messages_broadcast = Counter(
            "streaming_messages_broadcast", "Messages published to rooms and channels", registry=r
        )
        self.rooms_joins = Counter("streaming_rooms_joins", "Room joins", registry=r)
        self.presence_updates = Counter(
            "streaming_presence_updates", "Presence changes published", registry=r
        )
        self.subscriptions_active = Gauge(
            "streaming_subscriptions_active", "Local subscribers of the fan-out hub", registry=r
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
