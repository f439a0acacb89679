"""Rate limits: a sliding window log per key in the live bucket."""

from __future__ import annotations

import time

from .link import Bucket, NatsLink, kv_key


class NatsRateLimiter:
    """A sliding window log per key in `rate.<key>`, changed by compare-and-set.

    The last document this node wrote is cached with its revision: the next
    call tries to write on top of it at once (one request), and only reads
    the key after another node wrote in between. A refusal decided on the
    cache is sound, since the cache can only miss hits, never invent them.
    """

    _CACHE_LIMIT = 10_000

    def __init__(self, link: NatsLink, live: Bucket) -> None:
        self._link = link
        self._kv = live
        self._cache: dict[str, tuple[list[float], int]] = {}

    async def acquire(self, key: str, *, limit: int, per_seconds: float) -> bool:
        if limit <= 0:
            return False
        rate_key = kv_key("rate", key)
        async with self._link.guard():
            cached = self._cache.get(rate_key)
            for _ in range(100):
                hits, revision = cached if cached is not None else ([], 0)
                now = time.time()
                hits = [h for h in hits if h > now - per_seconds]
                if len(hits) >= limit:
                    return False
                hits.append(now)
                written = await self._kv.write(rate_key, {"hits": hits}, last=revision)
                if written is not None:
                    if len(self._cache) >= self._CACHE_LIMIT:
                        self._cache.clear()
                    self._cache[rate_key] = (hits, written)
                    return True
                doc, revision = await self._kv.read(rate_key)
                cached = ((doc or {}).get("hits", []), revision)
            raise self._link.unavailable(f"too much contention on rate key {key!r}")

    async def close(self) -> None:
        self._cache.clear()
