"""The Redis backend: every role on one Redis, for many server nodes at once.

    redis://[[user]:password@]host:6379/0?namespace=forge
    rediss://...?ssl_ca_certs=ca.pem&ssl_certfile=...&ssl_keyfile=...

`namespace` (default "forge") prefixes every key and pub/sub channel, so
several deployments (or test runs) can share one Redis. Other query
parameters go to redis-py's `from_url` (TLS files, timeouts...). One
connection pool serves the stores and publishing; the broker adds one
subscriber connection. The pool holds at most `max_connections` (default
50); a command that finds them all busy waits up to `timeout` seconds
(default 2) for one, then fails with `errors.Overloaded` (see
`common.WaitingPool`). The server sets both from its settings
`redis_max_connections` and `redis_pool_wait` unless the URL names them.

Needs Redis >= 6.2 (ZADD LT, used to index rooms by their oldest message).
Run it with `maxmemory-policy noeviction` and persistence (RDB or AOF):
an evicted or lost stream shows up as a new epoch, never as silent gaps.
Roles and their keys are described in messages, rooms,
ephemeral and broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Collection
from datetime import timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..calls import CallStore
from ..errors import Unavailable
from ..opened import Opened
from .broker import RedisBroker
from .cluster import RedisClusterStore
from .common import CONNECTION_ERRORS, Keys, Scripts, waiting_pool
from .documents import RedisDocuments
from .ephemeral import RedisPresenceStore, RedisRateLimiter, RedisTypingStore
from .messages import RedisMessageStore
from .rooms import RedisChannelStore, RedisRoomStore

__all__ = [
    "MIN_VERSION",
    "check_version",
    "delete_namespace",
    "open_stores",
    "redact",
    "split_url",
]

MIN_VERSION = (6, 2, 0)
DEFAULT_NAMESPACE = "forge"
CONNECT_TIMEOUT = 3.0
SOCKET_TIMEOUT = 2.0
OPEN_TIMEOUT = 5.0
# The pool: Redis runs commands one at a time, so a few dozen connections
# per process keep it busy; many nodes x workers x 50 stay far below Redis's
# default maxclients (10,000). Waiting longer than a couple of seconds for
# a connection helps nobody: the client is better told OVERLOADED.
POOL_SIZE = 50
POOL_WAIT = 2.0


def redact(url: str) -> str:
    """The URL with its password (if any) replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def split_url(url: str) -> tuple[str, str]:
    """(the URL for redis-py, the namespace), taking `namespace` out of the query.

    `protocol` is dropped too: the stores parse RESP2 replies.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a Redis URL: {redact(url)}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    namespace = DEFAULT_NAMESPACE
    kept = []
    for name, value in query:
        if name == "namespace":
            namespace = value
        elif name != "protocol":
            kept.append((name, value))
    Keys(namespace)  # validates it
    return urlunsplit(parts._replace(query=urlencode(kept))), namespace


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3])


def check_version(version: str, where: str = "Redis") -> None:
    """Raise Unavailable if `version` (INFO's redis_version) is below MIN_VERSION."""
    found = parse_version(version)
    if found < MIN_VERSION:
        needed = ".".join(map(str, MIN_VERSION))
        raise Unavailable(
            f"{where} runs Redis {version}; the Redis backend needs Redis {needed} or newer"
            " (ZADD LT)"
        )


async def _check_server(client: Redis, where: str) -> None:
    await client.ping()
    try:
        info = await client.info("server")
    except redis.exceptions.ResponseError:
        return  # INFO disabled (some managed services): PING is all we can check
    version = info.get("redis_version")
    if version is not None:
        check_version(str(version), where)


async def open_stores(url: str, roles: Collection[str], *, retention: timedelta | None) -> Opened:
    """Open one pool on `url` and the stores for `roles` (see `backends.opened`)."""
    where = redact(url)
    client_url, namespace = split_url(url)
    pool = waiting_pool(
        client_url,
        max_connections=POOL_SIZE,
        wait=POOL_WAIT,
        protocol=2,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        # No silent retries: a script that may have run must not run twice, and
        # an outage must surface at once as Unavailable.
        retry=Retry(NoBackoff(), 0),
    )
    client = Redis.from_pool(pool)
    try:
        await asyncio.wait_for(_check_server(client, where), OPEN_TIMEOUT)
    except redis.exceptions.AuthenticationError as exc:
        await client.aclose()
        raise Unavailable(f"Redis at {where}: authentication failed ({exc})") from None
    except redis.exceptions.ResponseError as exc:
        await client.aclose()
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise Unavailable(f"Redis at {where}: authentication failed ({exc})") from None
        raise Unavailable(f"Redis at {where} refused the connection check: {exc}") from None
    except CONNECTION_ERRORS as exc:  # asyncio's TimeoutError included (an OSError)
        await client.aclose()
        raise Unavailable(f"cannot reach Redis at {where}: {exc or 'timed out'}") from None
    except BaseException:
        await client.aclose()
        raise

    keys = Keys(namespace)
    scripts = Scripts(client)
    broker = RedisBroker(client, namespace, where=where) if "broker" in roles else None
    opened = Opened(broker=broker)
    if "messages" in roles:
        opened.messages = RedisMessageStore(
            scripts, client, keys, retention=retention, publishes=broker is not None
        )
    if "rooms" in roles:
        opened.rooms = RedisRoomStore(client, scripts, keys)
    if "channels" in roles:
        opened.channels = RedisChannelStore(client, scripts, keys)
    if "presence" in roles:
        opened.presence = RedisPresenceStore(scripts, keys)
        opened.cluster = RedisClusterStore(client, scripts, keys)
        opened.calls = CallStore(RedisDocuments(client, scripts, keys))
    if "typing" in roles:
        opened.typing = RedisTypingStore(client, scripts, keys)
    if "limits" in roles:
        opened.limits = RedisRateLimiter(scripts, keys)

    async def ping() -> None:
        try:
            await client.ping()
        except CONNECTION_ERRORS as exc:
            raise Unavailable(f"Redis at {where} is unavailable: {exc}") from exc

    async def close() -> None:
        if broker is not None:
            with contextlib.suppress(Exception):
                await broker.disconnect()
        await client.aclose()

    opened.ping = ping
    opened.close = close
    return opened


async def delete_namespace(url: str) -> int:
    """Delete every key of the URL's namespace (SCAN + UNLINK); return how many.

    For tests and for retiring a deployment; pub/sub channels hold no data.
    """
    client_url, namespace = split_url(url)
    client = Redis.from_url(client_url, protocol=2, socket_connect_timeout=CONNECT_TIMEOUT)
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await client.unlink(*batch)
    finally:
        await client.aclose()
    return deleted
