"""The fan-out backend on Redis pub/sub, for `backends.hub.Hub`.

broadcaster's own RedisBackend is not used: with redis-py 8 it drops the
first message of a new subscription (it marks itself ready before Redis has
registered the channel) and its listener dies silently when Redis restarts.
This one keeps a single subscriber connection per process, owned by one
reader task:

- `subscribe` returns only once Redis has confirmed the subscription, so a
  message published after it returns is delivered;
- when the connection drops, the reader reconnects with capped exponential
  backoff, subscribes every wanted channel again, and once Redis has
  confirmed them all, returns an event on `hub.RESYNC_CHANNEL`: every local
  subscriber then catches up from history;
- a watchdog pings an idle connection, so a half-open one (no FIN, e.g. a
  network partition) is noticed too;
- `publish` goes through the shared connection pool and fails with
  `errors.Unavailable` within the socket timeouts; it never waits for the
  subscriber connection to come back.

Channels are `<namespace>:<topic>`; topics are escaped by `backends.topics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable

from broadcaster import BroadcastBackend, Event
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from ..errors import Unavailable
from ..hub import RESYNC_CHANNEL
from .common import CONNECTION_ERRORS

log = logging.getLogger(__name__)


async def _open(conn: AbstractConnection) -> None:
    # redis-py leaves Connection.connect unannotated.
    connect: Callable[[], Awaitable[None]] = conn.connect
    await connect()


class RedisBroker(BroadcastBackend):
    """Redis pub/sub for the hub: confirmed subscriptions, reconnect, resync."""

    def __init__(
        self,
        client: Redis,
        namespace: str,
        *,
        where: str,
        min_backoff: float = 0.1,
        max_backoff: float = 2.0,
        ping_interval: float = 5.0,
        confirm_timeout: float = 5.0,
        queue_size: int = 100_000,
    ) -> None:
        # BroadcastBackend.__init__ only raises NotImplementedError: not called.
        self._client = client
        self._prefix = namespace + ":"
        self._where = where
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._ping_interval = ping_interval
        self._confirm_timeout = confirm_timeout
        self._queue: asyncio.Queue[Event] = asyncio.Queue(queue_size)
        self._wanted: set[str] = set()
        self._confirmations: dict[str, list[asyncio.Future[None]]] = {}
        self._conn: AbstractConnection | None = None
        self._up = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        # Set when a connection that was up is lost; cleared once the
        # subscriptions are back and RESYNC is queued.
        self._lost = False
        self._resync_waiting: set[str] | None = None
        self._last_received = time.monotonic()

    # --- BroadcastBackend ---------------------------------------------------

    async def connect(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._run(), name="redis-broker-reader")
        try:
            await asyncio.wait_for(self._up.wait(), self._confirm_timeout)
        except TimeoutError:
            raise Unavailable(f"cannot subscribe at Redis {self._where}") from None

    async def disconnect(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        for waiters in self._confirmations.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(Unavailable("the Redis broker was closed"))
        self._confirmations.clear()
        self._wanted.clear()

    async def subscribe(self, group: str) -> None:
        channel = self._prefix + group
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirmations.setdefault(channel, []).append(future)
        self._wanted.add(channel)
        conn = self._conn
        if conn is not None:
            # If this fails the reader notices, reconnects and subscribes
            # every wanted channel, this one included.
            with contextlib.suppress(*CONNECTION_ERRORS):
                await conn.send_command("SUBSCRIBE", channel, check_health=False)
        try:
            await asyncio.wait_for(asyncio.shield(future), self._confirm_timeout)
        except TimeoutError:
            self._wanted.discard(channel)
            raise Unavailable(
                f"Redis {self._where} did not confirm the subscription to {group!r}"
            ) from None
        finally:
            waiters = self._confirmations.get(channel, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._confirmations.pop(channel, None)
            if not future.done():
                future.cancel()

    async def unsubscribe(self, group: str) -> None:
        channel = self._prefix + group
        self._wanted.discard(channel)
        conn = self._conn
        if conn is not None:
            # Lost with the connection anyway: a new one subscribes only to _wanted.
            with contextlib.suppress(*CONNECTION_ERRORS):
                await conn.send_command("UNSUBSCRIBE", channel, check_health=False)

    async def publish(self, channel: str, message: str) -> None:
        try:
            await self._client.publish(self._prefix + channel, message)
        except CONNECTION_ERRORS as exc:
            raise Unavailable(f"cannot publish to Redis {self._where}: {exc}") from exc

    async def next_published(self) -> Event:
        return await self._queue.get()

    # --- the reader ---------------------------------------------------------

    def _new_connection(self) -> AbstractConnection:
        # A connection of its own, outside the pool: it stays in subscribed
        # mode, and its lifetime is the reader's business alone.
        pool = self._client.connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    async def _run(self) -> None:
        delay = self._min_backoff
        while True:
            conn = self._new_connection()
            try:
                await _open(conn)
                self._last_received = time.monotonic()
                self._conn = conn
                if self._lost:
                    self._resync_waiting = set(self._wanted)
                    self._maybe_resync()
                if self._wanted:
                    await conn.send_command("SUBSCRIBE", *sorted(self._wanted), check_health=False)
                self._up.set()
                if self._lost:
                    log.info("Redis pub/sub at %s is back", self._where)
                delay = self._min_backoff
                await self._read(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._conn is conn:
                    log.warning("Redis pub/sub at %s lost: %s; reconnecting", self._where, exc)
                    self._lost = True
                else:
                    log.debug("Redis pub/sub at %s still unreachable: %s", self._where, exc)
            finally:
                self._conn = None
                self._up.clear()
                with contextlib.suppress(Exception):
                    await conn.disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_backoff)

    async def _read(self, conn: AbstractConnection) -> None:
        watchdog = asyncio.create_task(self._watch(conn), name="redis-broker-watchdog")
        try:
            while True:
                # math.inf: block without the socket timeout (an idle channel is normal).
                response = await conn.read_response(
                    timeout=math.inf, disconnect_on_error=False, push_request=True
                )
                self._last_received = time.monotonic()
                self._handle(response)
        finally:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)

    async def _watch(self, conn: AbstractConnection) -> None:
        """Ping an idle connection; drop it if nothing comes back."""
        while True:
            await asyncio.sleep(self._ping_interval)
            idle = time.monotonic() - self._last_received
            if idle > 3 * self._ping_interval:
                log.warning("Redis pub/sub at %s silent for %.0fs; reconnecting", self._where, idle)
                await conn.disconnect()
                return
            if idle >= self._ping_interval:
                try:
                    await conn.send_command("PING", check_health=False)
                except Exception:
                    await conn.disconnect()
                    return

    def _handle(self, response: object) -> None:
        if not isinstance(response, list) or len(response) < 3:
            return  # PONG
        kind, channel = response[0], response[1]
        if not isinstance(kind, bytes) or not isinstance(channel, bytes):
            return
        name = channel.decode()
        if kind == b"message":
            data = response[2]
            message = data.decode() if isinstance(data, bytes) else str(data)
            self._put(Event(name[len(self._prefix) :], message))
        elif kind == b"subscribe":
            for future in self._confirmations.get(name, []):
                if not future.done():
                    future.set_result(None)
            if self._resync_waiting is not None:
                self._resync_waiting.discard(name)
                self._maybe_resync()

    def _maybe_resync(self) -> None:
        # Only after every channel is subscribed again: a subscriber that
        # catches up from history then misses nothing published afterwards.
        if self._resync_waiting is not None and not (self._resync_waiting & self._wanted):
            self._resync_waiting = None
            self._lost = False
            self._put(Event(RESYNC_CHANNEL, ""))

    def _put(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            # The hub's listener fell this far behind: drop what is queued and
            # have every subscriber catch up from history instead.
            log.warning("Redis pub/sub queue overflowed; subscribers will resync")
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(Event(RESYNC_CHANNEL, ""))
