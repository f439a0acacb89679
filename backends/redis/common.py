"""What the Redis stores share: key names, error translation, time, Lua helpers.

Key layout: every key is `<namespace>:<kind>:<id>` where the namespace is
restricted to [A-Za-z0-9_.-] and no kind contains a colon, so the first two
colons split any key unambiguously and raw (unescaped) room, channel and user
ids can follow without two different ids ever naming the same key. Lua
scripts build per-user keys the same way (`ns .. ':' .. kind .. ':' .. id`),
which is why they get the namespace as their first argument. Scripts that
derive keys are fine on a single Redis (or a replicated/Sentinel one); they
are not Redis Cluster compatible, which this backend does not claim.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, ParamSpec, TypeVar, cast

import redis.exceptions
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection, Connection
from redis.commands.core import AsyncScript

from ..errors import Overloaded, Unavailable
from .cancel_safe import cancel_safe

P = ParamSpec("P")
R = TypeVar("R")

NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# Errors that mean "Redis could not be reached or did not answer in time".
# AuthenticationError is a ConnectionError subclass in redis-py.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)


def translated(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Turn redis-py's connection failures into `errors.Unavailable`.

    The resolvers know only `backends.errors`; an outage must reach the
    client as UNAVAILABLE, never as an internal error.
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except CONNECTION_ERRORS as exc:
            raise Unavailable(f"Redis is unavailable: {exc}") from exc

    return wrapper


class WaitingPool(BlockingConnectionPool):
    """A bounded pool whose callers wait for a free connection, for a while.

    redis-py's default pool refuses a command ("Too many connections", a
    ConnectionError) the moment all its connections are busy, so a burst of
    load looked like an outage. Here a caller waits up to `timeout` seconds
    for a connection; one that gets none raises `errors.Overloaded`. An
    outage is still told apart, and at once: connecting fails fast (the
    connection's own connect timeout) and raises a ConnectionError, so
    callers queue only behind connections that are busy; and a wait that
    ends while connecting has been failing raises `Unavailable`, not
    `Overloaded`.
    """

    def __init__(self, **kwargs: Any) -> None:
        # Connections whose commands keep a cancellation (cancel_safe.py);
        # the broker's own connection is of this class too.
        kwargs["connection_class"] = cancel_safe(kwargs.get("connection_class", Connection))
        super().__init__(**kwargs)
        # Whether connecting (or checking a connection out) failed last time.
        self._connecting_fails = False

    async def get_connection(
        self, command_name: object = None, *keys: object, **options: object
    ) -> AbstractConnection:
        # The arguments are deprecated and unused: redis-py passes none.
        try:
            get: Callable[[], Awaitable[AbstractConnection]] = super().get_connection
            connection = await get()
        except redis.exceptions.ConnectionError as exc:
            if not isinstance(exc.__cause__, asyncio.TimeoutError):
                raise  # connecting failed: an outage
            if self._connecting_fails:
                raise Unavailable(f"Redis is unavailable: {exc}") from exc
            raise Overloaded(
                f"no Redis connection came free within {self.timeout:g}s"
                f" ({self.max_connections} busy)"
            ) from None
        return connection

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        try:
            await super().ensure_connection(connection)
        except CONNECTION_ERRORS:
            self._connecting_fails = True
            raise
        self._connecting_fails = False


def waiting_pool(url: str, *, max_connections: int, wait: float, **kwargs: Any) -> WaitingPool:
    """A `WaitingPool` on `url`; the URL's own `max_connections` and `timeout`
    (redis-py's query parameters) win over the arguments."""
    pool = WaitingPool.from_url(url, max_connections=max_connections, timeout=wait, **kwargs)
    if not isinstance(pool, WaitingPool):
        raise TypeError(f"expected a WaitingPool, got {type(pool).__name__}")
    return pool


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Keys:
    """Key and channel names of one namespace."""

    def __init__(self, namespace: str) -> None:
        if not NAMESPACE_PATTERN.fullmatch(namespace):
            raise ValueError(
                f"invalid Redis namespace {namespace!r}: use 1-64 of A-Z a-z 0-9 _ . -"
            )
        self.namespace = namespace

    def key(self, kind: str, ident: str = "") -> str:
        return f"{self.namespace}:{kind}:{ident}"

    def channel(self, topic: str) -> str:
        return f"{self.namespace}:{topic}"


Arg = str | int | bytes
Entry = tuple[bytes, dict[bytes, bytes]]


class Commands:
    """The few commands the stores use, typed for RESP2 with bytes replies.

    redis-py annotates replies as unions over every protocol and decoding
    mode; the backend always uses RESP2 without decoding, so the replies
    have one shape, stated here once instead of narrowed at every call.
    """

    def __init__(self, client: Redis) -> None:
        self.client = client

    async def hget(self, key: str, field: str) -> bytes | None:
        return cast("bytes | None", await self.client.hget(key, field))

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        return cast("dict[bytes, bytes]", await self.client.hgetall(key))

    async def hgetall_many(self, keys: list[str]) -> list[dict[bytes, bytes]]:
        """HGETALL of each key in one round trip (not atomic)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            return cast("list[dict[bytes, bytes]]", await pipe.execute())

    async def hlen(self, key: str) -> int:
        return int(await self.client.hlen(key))

    async def smembers(self, key: str) -> set[bytes]:
        return cast("set[bytes]", await self.client.smembers(key))

    async def sismember(self, key: str, member: str) -> bool:
        return bool(await self.client.sismember(key, member))

    async def srem(self, key: str, member: str) -> int:
        return int(await self.client.srem(key, member))

    async def scan(self, cursor: int, match: str, count: int) -> tuple[int, list[bytes]]:
        found = await self.client.scan(cursor, match=match, count=count)
        return int(found[0]), cast("list[bytes]", found[1])

    async def zrange_all(self, key: str) -> list[bytes]:
        return cast("list[bytes]", await self.client.zrange(key, 0, -1))

    async def zrangebyscore(self, key: str, low: str, high: str, *, count: int) -> list[bytes]:
        found = await self.client.zrangebyscore(key, low, high, start=0, num=count)
        return cast("list[bytes]", found)

    async def xrange(
        self, key: str, low: str, high: str, *, count: int, reverse: bool = False
    ) -> list[Entry]:
        """Entries with low <= id <= high, newest first if `reverse`."""
        if reverse:
            found = await self.client.xrevrange(key, high, low, count=count)
        else:
            found = await self.client.xrange(key, low, high, count=count)
        return cast("list[Entry]", found)

    async def multi(self, *commands: tuple[Arg, ...]) -> list[Any]:
        """Run the commands as one MULTI/EXEC transaction."""
        async with self.client.pipeline(transaction=True) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute()
            return replies


class Scripts:
    """Lua scripts registered on one client; run through EVALSHA.

    redis-py's `AsyncScript` falls back to EVAL (reloading the script) when
    Redis answers NOSCRIPT, e.g. after a restart emptied its script cache.
    """

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._scripts: dict[str, AsyncScript] = {}

    def register(self, name: str, source: str) -> None:
        self._scripts[name] = self._client.register_script(source)

    async def run(self, name: str, keys: list[str], args: list[Arg]) -> Any:
        return await self._scripts[name](keys=keys, args=args, client=self._client)


class ScriptedStore:
    """A store that reads through `Commands` and changes through Lua scripts:
    `SCRIPTS` (name: source), registered when it is built."""

    SCRIPTS: ClassVar[dict[str, str]] = {}

    def __init__(self, client: Redis, scripts: Scripts, keys: Keys) -> None:
        self._redis = Commands(client)
        self._scripts = scripts
        self._keys = keys
        self._ns = keys.namespace
        for name, source in self.SCRIPTS.items():
            scripts.register(name, source)


# Shared Lua prologue: the namespace, a key builder and the Redis clock, so
# every node computes expiry from the same clock. `now_s` is the exact
# decimal text of `now`: Lua 5.1 formats numbers with %.14g when
# concatenating, which would round a 16-digit microsecond timestamp.
LUA_PROLOGUE = """
local ns = ARGV[1]
local function key(kind, id) return ns .. ':' .. kind .. ':' .. id end
local clock = redis.call('TIME')
local now_s = clock[1] .. string.format('%06d', tonumber(clock[2]))
local now = tonumber(now_s)
"""
