"""The cluster role in this process only: one node, nobody else to tell.

Reports are stored encoded, as the other backends store them, so a report
that cannot travel fails here too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson


class MemoryClusterStore:
    def __init__(self) -> None:
        self._reports: dict[str, tuple[float, bytes]] = {}  # node id -> (expires at, report)
        self._revoked: dict[str, float] = {}

    async def report(self, node_id: str, status: Mapping[str, Any], *, ttl: float) -> None:
        self._reports[node_id] = (time.monotonic() + ttl, orjson.dumps(dict(status)))

    async def nodes(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        for node_id in [n for n, (expires, _) in self._reports.items() if expires <= now]:
            del self._reports[node_id]
        return [orjson.loads(raw) for _, (_, raw) in sorted(self._reports.items())]

    async def revoke_tokens(self, user_id: str, before: float) -> None:
        self._revoked[user_id] = max(before, self._revoked.get(user_id, before))

    async def tokens_revoked_before(self, user_id: str) -> float | None:
        return self._revoked.get(user_id)

    async def close(self) -> None:
        return None
