"""This node's part in the cluster: its self-report through the backend, and
the requests every node answers (see resolvers/cluster.py for why requests).

Each node writes its status through the backend's cluster role every
`node_report_interval`, kept `node_ttl` (backends/protocols.py
ClusterStore), so a killed node drops out by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from backends import topics
from backends.errors import Unavailable
from backends.events import ClusterEvent, Event
from backends.factory import Backends
from backends.hub import HubSubscription
from core.metrics import Metrics
from core.settings import Settings

from .connection_registry import ConnectionRegistry
from .revocations import Revocations

log = logging.getLogger(__name__)

# Users a node tells in one reply (Cluster.users counts their union).
MAX_USERS_PER_REPLY = 10_000


def _version() -> str:
    try:
        return version("forge-streaming")
    except PackageNotFoundError:
        return "unknown"


def _memory_bytes() -> float:
    """This process's resident set size (peak size where /proc is absent)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return float(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


@dataclass
class _Rates:
    """Per-second rates of two counters over the last report interval."""

    at: float = field(default_factory=time.monotonic)
    messages: float = 0.0
    deliveries: float = 0.0

    def update(self, messages: float, deliveries: float) -> tuple[float, float]:
        now = time.monotonic()
        span = max(now - self.at, 1e-6)
        rates = ((messages - self.messages) / span, (deliveries - self.deliveries) / span)
        self.at, self.messages, self.deliveries = now, messages, deliveries
        return rates


def node_status(
    settings: Settings,
    metrics: Metrics,
    registry: ConnectionRegistry,
    rates: _Rates,
    *,
    started_at: datetime,
) -> dict[str, Any]:
    messages_rate, deliveries_rate = rates.update(
        metrics.total(metrics.messages_broadcast), metrics.total(metrics.deliveries)
    )
    return {
        "id": settings.node_id,
        "started_at": started_at.isoformat(),
        "version": _version(),
        "backend": settings.backend,
        "connections": len(registry),
        "users": len(registry.users()),
        "subscriptions": _gauge(metrics.subscriptions_active),
        "shared_executions": _gauge(metrics.shared_executions),
        "messages_per_second": messages_rate,
        "deliveries_per_second": deliveries_rate,
        "memory_bytes": _memory_bytes(),
        "last_seen": datetime.now(UTC).isoformat(),
    }


def _gauge(gauge: Any) -> int:
    for metric in gauge.collect():
        for sample in metric.samples:
            return int(sample.value)
    return 0


class ClusterLink:
    """This node's side of the cluster: its reports, and the requests of
    every node (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        metrics: Metrics,
        registry: ConnectionRegistry,
        revocations: Revocations,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.metrics = metrics
        self.registry = registry
        self.revocations = revocations
        self.started_at = datetime.now(UTC)
        self._pending: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._ready = asyncio.Event()
        self._rates = _Rates()

    @property
    def node_id(self) -> str:
        return self.settings.node_id

    async def run(self) -> None:
        """Report, answer requests and route replies, until cancelled; a
        failure (the backend down) is logged and the whole started again."""
        while True:
            try:
                await self._run_once()
            except* Exception as failure:
                log.warning("cluster link failed, restarting: %r", failure.exceptions[0])
            self._ready.clear()
            await asyncio.sleep(self.settings.node_report_interval.total_seconds())

    async def _run_once(self) -> None:
        hub = self.backends.hub
        async with (
            hub.subscribe(topics.CLUSTER_REQUESTS) as requests,
            hub.subscribe(topics.cluster_replies(self.node_id)) as replies,
            asyncio.TaskGroup() as tasks,
        ):
            self._ready.set()
            tasks.create_task(self._report_every_interval())
            tasks.create_task(self._answer(requests))
            tasks.create_task(self._route(replies))

    async def report(self) -> None:
        status = node_status(
            self.settings, self.metrics, self.registry, self._rates, started_at=self.started_at
        )
        await self.backends.cluster.report(
            self.node_id, status, ttl=self.settings.node_ttl.total_seconds()
        )

    async def _report_every_interval(self) -> None:
        self._rates = _Rates()
        interval = self.settings.node_report_interval.total_seconds()
        failing = False
        while True:
            try:
                await self.report()
                failing = False
            except Unavailable as exc:
                if not failing:
                    log.warning("node report failed: %s", exc)
                failing = True
            await asyncio.sleep(interval)

    async def _answer(self, requests: HubSubscription[Event]) -> None:
        async for event in requests:
            if not isinstance(event, ClusterEvent) or event.kind != "request":
                continue  # a resync: requests are not replayed
            try:
                reply = self._handle(event.body)
                reply_to = str(event.body["from"])
                request_id = str(event.body["id"])
            except (KeyError, TypeError, ValueError):
                log.warning("dropped a malformed cluster request")
                continue
            await self.backends.hub.publish(
                topics.cluster_replies(reply_to),
                ClusterEvent("reply", {"id": request_id, "node": self.node_id, **reply}),
            )

    def _handle(self, body: dict[str, Any]) -> dict[str, Any]:
        registry = self.registry
        args = body["args"]
        match body["kind"]:
            case "connections":
                if args.get("node_id") not in (None, self.node_id):
                    return {"connections": []}
                found = registry.listing(args.get("user_id"))
                after = args.get("after")
                if after is not None:
                    key = (float(after[0]), str(after[1]), str(after[2]))
                    found = [c for c in found if c.sort_key() > key]
                return {"connections": [c.to_dict() for c in found[: int(args["limit"])]]}
            case "summary":
                return {
                    "users": sorted(registry.users())[:MAX_USERS_PER_REPLY],
                    "connections": len(registry),
                    "subscriptions": _gauge(self.metrics.subscriptions_active),
                }
            case "disconnect":
                if (before := args.get("revoked_before")) is not None:
                    self.revocations.note(str(args["user_id"]), float(before))
                closed = registry.end_user(str(args["user_id"]), str(args["reason"]))
                return {"closed": closed}
        raise ValueError(f"unknown cluster request {body['kind']!r}")

    async def _route(self, replies: HubSubscription[Event]) -> None:
        async for event in replies:
            if isinstance(event, ClusterEvent) and event.kind == "reply":
                queue = self._pending.get(str(event.body.get("id")))
                if queue is not None:
                    queue.put_nowait(event.body)

    async def ask(self, kind: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        """Every node's reply to a request (the nodes that reported
        themselves and this one); the ones that do not answer within
        `cluster_reply_timeout` are left out."""
        try:
            await asyncio.wait_for(self._ready.wait(), self._timeout())
        except TimeoutError:
            raise Unavailable(
                "this node is not linked to the cluster (its broker is down)"
            ) from None
        expected = {str(n.get("id")) for n in await self.backends.cluster.nodes()}
        expected.add(self.node_id)
        request_id = uuid.uuid4().hex
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending[request_id] = queue
        replies: dict[str, dict[str, Any]] = {}
        try:
            body = {"id": request_id, "from": self.node_id, "kind": kind, "args": args}
            await self.backends.hub.publish(topics.CLUSTER_REQUESTS, ClusterEvent("request", body))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._timeout()):
                    while not expected <= replies.keys():
                        reply = await queue.get()
                        replies[str(reply["node"])] = reply
        finally:
            del self._pending[request_id]
        missing = expected - replies.keys()
        if missing:
            log.warning("cluster request %s: no reply from %s", kind, ", ".join(sorted(missing)))
        return list(replies.values())

    def _timeout(self) -> float:
        return self.settings.cluster_reply_timeout.total_seconds()
