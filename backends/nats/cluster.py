"""The cluster role on NATS: node reports in the live KV bucket (its TTL a
backstop), token revocations in the state bucket.

    live:  node.<id>       {"exp": epoch seconds, "report": {...}}
    state: revoked.<user>  {"before": epoch seconds}

nats-server 2.9 has no per-key TTL (see presence.py), so a report carries
its own expiry: `nodes` leaves out, and deletes, the expired ones.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..markers import KEEP
from .link import Bucket, NatsLink, kv_key


class NatsClusterStore:
    def __init__(self, link: NatsLink, state: Bucket, live: Bucket) -> None:
        self._link = link
        self._state = state
        self._live = live

    async def report(self, node_id: str, status: Mapping[str, Any], *, ttl: float) -> None:
        doc = {"exp": time.time() + ttl, "report": dict(status)}

        async def change(current: Any) -> tuple[Any, None]:
            return doc, None

        async with self._link.guard():
            await self._live.mutate(kv_key("node", node_id), change)

    async def nodes(self) -> list[dict[str, Any]]:
        now = time.time()
        async with self._link.guard():
            found = await self._live.scan("node.")
            reports = []
            for key, doc, revision in found:
                if doc["exp"] > now:
                    reports.append(doc["report"])
                else:  # a node that stopped reporting; whoever reads first removes it
                    await self._live.remove(key, last=revision)
        return sorted(reports, key=lambda report: str(report.get("id")))

    async def revoke_tokens(self, user_id: str, before: float) -> None:
        async def change(doc: Any) -> tuple[Any, None]:
            if doc is not None and doc["before"] >= before:
                return KEEP, None
            return {"before": before}, None

        async with self._link.guard():
            await self._state.mutate(kv_key("revoked", user_id), change)

    async def tokens_revoked_before(self, user_id: str) -> float | None:
        async with self._link.guard():
            doc, _ = await self._state.read(kv_key("revoked", user_id))
        return None if doc is None else float(doc["before"])

    async def close(self) -> None:
        return None
