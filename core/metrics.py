"""Prometheus metrics, on a registry of the app's own (no global state).

The seed's names (`streaming.connections.active`, ...) become Prometheus
names with underscores; counters get the `_total` suffix on exposition.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# History pages take about a millisecond; the target is p99 under 5 ms.
_HISTORY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.1, 1.0)


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
        self.deliveries = Counter(
            "streaming_deliveries",
            "Results of streaming operations written to clients, one per subscriber",
            registry=r,
        )
        self.rooms_joins = Counter("streaming_rooms_joins", "Room joins", registry=r)
        self.presence_updates = Counter(
            "streaming_presence_updates", "Presence changes published", registry=r
        )
        self.subscriptions_active = Gauge(
            "streaming_subscriptions_active",
            "Live subscriptions (each subscriber of a shared execution counts)",
            registry=r,
        )
        self.shared_executions = Gauge(
            "streaming_shared_executions",
            "Executions serving groups of identical subscriptions, one per group",
            registry=r,
        )
        self.presence_topics = Gauge(
            "streaming_presence_topics",
            "Shared presence topics this process subscribes to for presence(userIds:)",
            registry=r,
        )
        self.graphql_errors = Counter(
            "streaming_graphql_errors",
            "Errors in the GraphQL results sent to clients, by code (a shared "
            "subscription's result counts once, not once per subscriber)",
            ["code"],
            registry=r,
        )
        self.history_seconds = Histogram(
            "streaming_history_seconds",
            "Time to answer Query.history: access check, store calls, the page",
            buckets=_HISTORY_BUCKETS,
            registry=r,
        )
        self.search_seconds = Histogram(
            "streaming_search_seconds",
            "Time to answer Query.searchMessages: parsing, access checks, the search, snippets",
            buckets=_HISTORY_BUCKETS,
            registry=r,
        )

        self.compaction_messages = Counter(
            "streaming_compaction_messages", "Old messages packed into blocks", registry=r
        )
        self.compaction_blocks = Counter(
            "streaming_compaction_blocks", "Compressed blocks written", registry=r
        )
        self.compaction_bytes_before = Counter(
            "streaming_compaction_bytes_before",
            "Stored bytes of the messages compacted, before",
            registry=r,
        )
        self.compaction_bytes_after = Counter(
            "streaming_compaction_bytes_after",
            "Bytes of the blocks and dictionaries written for them",
            registry=r,
        )
        self.compaction_seconds = Counter(
            "streaming_compaction_seconds",
            "Time spent compacting (reads, zstd, writes)",
            registry=r,
        )

    @staticmethod
    def total(counter: Counter) -> float:
        """A counter's value so far, through the public collector API."""
        for metric in counter.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    return float(sample.value)
        return 0.0

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
