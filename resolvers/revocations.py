"""Token revocations as this node reads them: through a short cache.

Reading the backend's record on every request cost about a fifth of a
plain HTTP request's CPU on Redis (README: Admin API). Revocations are
rare, so each user's answer is kept `ttl` seconds, and a revocation made on
any node is told to every node at once with its disconnect request
(resolvers/cluster_link.py), which updates the cache before the node
answers; the TTL bounds how long a node that missed that message goes on
accepting a revoked token.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from backends.protocols import ClusterStore

# How long a user's revocation record is trusted without reading it again.
CACHE_SECONDS = 1.0
# Users remembered (least recently read dropped first).
MAX_CACHED_USERS = 10_000


class Revocations:
    def __init__(self, store: ClusterStore) -> None:
        self._store = store
        self._cached: OrderedDict[str, tuple[float, float | None]] = OrderedDict()

    async def revoked_before(self, user_id: str) -> float | None:
        """The moment before which the user's tokens are refused, or None."""
        now = time.monotonic()
        hit = self._cached.get(user_id)
        if hit is not None and hit[0] > now:
            self._cached.move_to_end(user_id)
            return hit[1]
        before = await self._store.tokens_revoked_before(user_id)
        self._remember(user_id, before, now)
        return before

    def note(self, user_id: str, before: float) -> None:
        """A revocation made now (by this node or told by another)."""
        known = self._cached.get(user_id)
        if known is not None and known[1] is not None and known[1] > before:
            before = known[1]
        self._remember(user_id, before, time.monotonic())

    def _remember(self, user_id: str, before: float | None, now: float) -> None:
        self._cached[user_id] = (now + CACHE_SECONDS, before)
        self._cached.move_to_end(user_id)
        while len(self._cached) > MAX_CACHED_USERS:
            self._cached.popitem(last=False)
