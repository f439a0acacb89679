"""The cluster role in Redis: node reports that expire, token revocations.

    node:<id>         STRING  the node's report (JSON), PX = its TTL
    nodes:            ZSET    ids of nodes that reported (pruned when their key expired)
    revoked:<user>    STRING  epoch seconds: the user's tokens issued before are refused

A killed node's key expires by itself; the index loses it on the next read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from redis.asyncio import Redis

from .common import Commands, Keys, Scripts, translated

# Only ever forward: a revocation cannot be undone by a later, older one.
_REVOKE = """
local current = redis.call('GET', KEYS[1])
if not current or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
"""


class RedisClusterStore:
    def __init__(self, client: Redis, scripts: Scripts, keys: Keys) -> None:
        self._client = client
        self._redis = Commands(client)
        self._scripts = scripts
        self._keys = keys
        scripts.register("cluster-revoke", _REVOKE)

    @translated
    async def report(self, node_id: str, status: Mapping[str, Any], *, ttl: float) -> None:
        await self._redis.multi(
            ("SET", self._keys.key("node", node_id), orjson.dumps(dict(status)), "PX", _ms(ttl)),
            ("ZADD", self._keys.key("nodes"), 0, node_id),
        )

    @translated
    async def nodes(self) -> list[dict[str, Any]]:
        ids = [raw.decode() for raw in await self._redis.zrange_all(self._keys.key("nodes"))]
        if not ids:
            return []
        reports = await self._client.mget([self._keys.key("node", node_id) for node_id in ids])
        gone = [node_id for node_id, raw in zip(ids, reports, strict=True) if raw is None]
        if gone:
            await self._client.zrem(self._keys.key("nodes"), *gone)
        return [orjson.loads(raw) for raw in reports if raw is not None]  # bytes: RESP2

    @translated
    async def revoke_tokens(self, user_id: str, before: float) -> None:
        await self._scripts.run(
            "cluster-revoke", [self._keys.key("revoked", user_id)], [repr(before)]
        )

    @translated
    async def tokens_revoked_before(self, user_id: str) -> float | None:
        raw = await self._client.get(self._keys.key("revoked", user_id))
        return None if raw is None else float(raw)

    async def close(self) -> None:
        return None


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
