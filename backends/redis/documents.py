"""`calls.Documents` on Redis: a HASH {v: version, d: JSON} per document,
written by a compare-and-set script (so no WATCH connection is held)."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from redis.asyncio import Redis

from ..calls import Change
from ..errors import Unavailable
from ..markers import KEEP
from ..topics import escape_token
from .common import Keys, Scripts, translated

T = TypeVar("T")

_MAX_ATTEMPTS = 50

_CAS_LUA = """
local cur = redis.call('HGET', KEYS[1], 'v') or '0'
if cur ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'v', tostring(tonumber(cur) + 1), 'd', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"""

# A safety net only (calls expire by their participants' times): a document
# nobody wrote for a day is gone.
_KEY_TTL_MS = 24 * 3600 * 1000


class RedisDocuments:
    def __init__(self, client: Redis, scripts: Scripts, keys: Keys) -> None:
        self._client = client
        self._scripts = scripts
        self._keys = keys
        scripts.register("doc_cas", _CAS_LUA)

    def _key(self, kind: str, ident: str) -> str:
        # Ids come from clients: escaped and bounded (topics.escape_token).
        return self._keys.key(f"doc-{kind}", escape_token(ident))

    async def _get(self, key: str) -> tuple[Any, bytes | str]:
        version, data = await self._client.hmget(key, ["v", "d"])
        return (None if data is None else orjson.loads(data)), (version or b"0")

    @translated
    async def read(self, kind: str, ident: str) -> Any:
        value, _ = await self._get(self._key(kind, ident))
        return value

    @translated
    async def mutate(self, kind: str, ident: str, change: Change[T]) -> T:
        key = self._key(kind, ident)
        for _ in range(_MAX_ATTEMPTS):
            current, version = await self._get(key)
            new, result = change(current)
            if new is KEEP or (new is None and current is None):
                return result
            data = b"" if new is None else orjson.dumps(new)
            if await self._scripts.run("doc_cas", [key], [version, data, _KEY_TTL_MS]):
                return result
        raise Unavailable(f"too much contention on {kind} {ident!r}")
