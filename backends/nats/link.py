"""The NATS connection shared by every NATS store, and a small KV layer on it.

One `NatsLink` is one nats-py connection (with its JetStream context) for one
`open_stores` call. Every store method runs inside `link.guard()`, which turns
"not connected", timeouts and missing responders into `errors.Unavailable`, so
a caller never hangs on a buffered request while nats-py is reconnecting.

`Bucket` is a KV bucket read and written through plain JetStream calls rather
than nats-py's `KeyValue`: a read returns the key's revision even when the
key is deleted (the delete marker's sequence), so every write can be an exact
compare-and-set (`Nats-Expected-Last-Subject-Sequence`), and reads use direct
get (one request, no base64).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import string
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, StorageType

from ..errors import Unavailable
from ..markers import KEEP, Marker
from ..topics import escape_token

log = logging.getLogger(__name__)

T = TypeVar("T")

REQUEST_TIMEOUT: Final = 3.0
"""Seconds a JetStream request may take before the backend counts as down."""

_WRONG_LAST_SEQUENCE: Final = frozenset({10071, 10164})
_KV_OPERATION: Final = "KV-Operation"
_EXPECTED_LAST: Final = "Nats-Expected-Last-Subject-Sequence"
_MAX_ATTEMPTS: Final = 100

# Failures that mean "the server cannot be reached or does not answer".
TRANSPORT_ERRORS: Final = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    asyncio.TimeoutError,
    ConnectionError,
)


def redact_url(url: str) -> str:
    """The URL with its password (or token) replaced by ***, safe to print."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    credentials, _, host = parts.netloc.rpartition("@")
    user, has_password, _ = credentials.partition(":")
    # A user alone is a token in NATS URLs (nats://TOKEN@host): hide it too.
    shown = f"{user}:***" if has_password else "***"
    return urlunsplit(parts._replace(netloc=f"{shown}@{host}"))


_KEY_SAFE = frozenset(string.ascii_letters + string.digits + "_-")


def key_token(value: str) -> str:
    """An id as one KV key token.

    KV keys allow only [-/_=.A-Za-z0-9]; `topics.escape_token` gives
    [A-Za-z0-9_-%], and "=" never appears in it, so swapping "%" for "="
    keeps the mapping one-to-one and free of "." separators.
    """
    return escape_token(value).replace("%", "=")


def kv_key(kind: str, value: str) -> str:
    """The KV key `<kind>.<token>` of an id (the layout is in the package's
    docstring)."""
    return f"{kind}.{key_token(value)}"


Connect = Callable[[], Awaitable[Client]]
"""Opens a new connection (raising `errors.Unavailable` when it cannot)."""

_MIN_BACKOFF: Final = 0.1
_MAX_BACKOFF: Final = 2.0


class NatsLink:
    """One connection, its JetStream context and the namespace of its data.

    nats-py reconnects by itself after a network failure, but gives up the
    connection for good when the server answers a protocol error (`-ERR`):
    then `connection_closed` opens a new one (with `reopen`, capped backoff)
    and the callbacks given to `on_reopened` run, so nothing a client does
    can leave the node without a backend.
    """

    def __init__(
        self, nc: Client, *, namespace: str, url: str, reopen: Connect | None = None
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=REQUEST_TIMEOUT)
        self.namespace = namespace
        self.shown_url = redact_url(url)
        self._reopen = reopen
        self._reopening: asyncio.Task[None] | None = None
        self._closing = False
        self._reopened: list[Callable[[], Awaitable[None]]] = []

    def unavailable(self, why: str) -> Unavailable:
        return Unavailable(f"NATS at {self.shown_url} is unavailable: {why}")

    def on_reopened(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run `callback` each time a new connection replaced a closed one."""
        self._reopened.append(callback)

    def connection_closed(self) -> None:
        """The connection is closed for good: open a new one, unless we closed it."""
        if self._closing or self._reopen is None or self._reopening is not None:
            return
        log.warning("NATS at %s: connection closed; opening a new one", self.shown_url)
        self._reopening = asyncio.create_task(self._open_again(), name="nats-reopen")

    async def _open_again(self) -> None:
        reopen = self._reopen
        if reopen is None:
            return
        delay = _MIN_BACKOFF
        try:
            while not self._closing:
                try:
                    nc = await reopen()
                except Exception as exc:  # Unavailable, or anything else: retry
                    log.warning("NATS at %s: still unreachable: %s", self.shown_url, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _MAX_BACKOFF)
                    continue
                if self._closing:
                    await nc.close()
                    return
                self.nc = nc
                self.js = nc.jetstream(timeout=REQUEST_TIMEOUT)
                log.warning("NATS at %s: connected again", self.shown_url)
                for callback in self._reopened:
                    try:
                        await callback()
                    except Exception as exc:  # the callback's own fault: one line
                        log.warning("NATS at %s: after reconnecting: %r", self.shown_url, exc)
                return
        finally:
            self._reopening = None
            if self.nc.is_closed and not self._closing:
                # Closed again while the callbacks ran: start over.
                self.connection_closed()

    async def close(self) -> None:
        self._closing = True
        reopening = self._reopening
        if reopening is not None:
            reopening.cancel()
            await asyncio.gather(reopening, return_exceptions=True)
        if not self.nc.is_closed:
            await self.nc.close()

    def check_connected(self) -> None:
        if not self.nc.is_connected:
            if self.nc.is_closed:
                self.connection_closed()
                raise self.unavailable("the connection was closed; opening a new one")
            state = "reconnecting" if self.nc.is_reconnecting else "not connected"
            raise self.unavailable(state)

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Fail fast while disconnected; map transport failures to Unavailable."""
        self.check_connected()
        try:
            yield
        except TRANSPORT_ERRORS as exc:
            raise self.unavailable(f"{type(exc).__name__}: {exc}") from exc

    async def ping(self) -> None:
        async with self.guard():
            await self.nc.flush(timeout=2)

    async def ensure_bucket(self, name: str, *, ttl: float | None = None) -> Bucket:
        """Open the KV bucket, creating it (history 1, direct get) if absent."""
        async with self.guard():
            try:
                await self.js.stream_info(f"KV_{name}")
            except nats.js.errors.NotFoundError:
                with contextlib.suppress(nats.js.errors.BadRequestError):
                    # Another node may create it at the same moment: fine.
                    await self.js.create_key_value(
                        bucket=name,
                        history=1,
                        ttl=ttl,
                        direct=True,
                        storage=StorageType.FILE,
                    )
                await self.js.stream_info(f"KV_{name}")
        return Bucket(self, name)


class Bucket:
    """Compare-and-set access to one KV bucket (see the module docstring)."""

    def __init__(self, link: NatsLink, name: str) -> None:
        self.link = link
        self.name = name
        self.stream = f"KV_{name}"
        self.prefix = f"$KV.{name}."

    async def read(self, key: str) -> tuple[Any, int]:
        """The key's decoded value (None if absent or deleted) and its revision."""
        try:
            msg = await self.link.js.get_msg(self.stream, subject=self.prefix + key, direct=True)
        except nats.js.errors.NotFoundError:
            return None, 0
        headers = msg.headers or {}
        if headers.get(_KV_OPERATION) in ("DEL", "PURGE") or not msg.data:
            return None, msg.seq or 0
        return orjson.loads(msg.data), msg.seq or 0

    async def write(self, key: str, value: Any, *, last: int) -> int | None:
        """Store `value` if the key's revision is still `last`; its new
        revision, or None when someone else wrote first."""
        try:
            ack = await self.link.js.publish(
                self.prefix + key,
                orjson.dumps(value),
                headers={_EXPECTED_LAST: str(last)},
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                return None
            raise
        return ack.seq

    async def remove(self, key: str, *, last: int | None) -> bool:
        """Delete the key if its revision is still `last` (None: whatever it
        is); False if it moved."""
        headers = {_KV_OPERATION: "DEL"}
        if last is not None:
            headers[_EXPECTED_LAST] = str(last)
        try:
            await self.link.js.publish(self.prefix + key, b"", headers=headers)
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                return False
            raise
        return True

    async def mutate(
        self,
        key: str,
        change: Callable[[Any], Awaitable[tuple[Any, T]]],
    ) -> T:
        """Read-change-write with compare-and-set, retried on conflicts.

        `change(current)` returns (new value, result): the new value is
        `KEEP` to write nothing, `DELETE` to delete the key, or the value.
        It may raise to abort; it runs again after a conflict.
        """
        for _ in range(_MAX_ATTEMPTS):
            current, revision = await self.read(key)
            new, result = await change(current)
            if new is KEEP:
                return result
            if new is DELETE:
                if current is None or await self.remove(key, last=revision):
                    return result
            elif await self.write(key, new, last=revision) is not None:
                return result
        raise self.link.unavailable(f"too much contention on key {key!r}")

    async def drop_from_list(self, key: str, field: str, item: str) -> bool:
        """Take `item` out of the list `field` of the document at `key`; False
        if it was not in it (or there is no document)."""

        async def change(doc: Any) -> tuple[Any, bool]:
            if doc is None or item not in doc[field]:
                return KEEP, False
            return {**doc, field: [x for x in doc[field] if x != item]}, True

        return await self.mutate(key, change)

    async def scan(self, prefix: str) -> list[tuple[str, Any, int]]:
        """Every live key under `prefix` (a "a.b." form) with value and revision."""
        try:
            messages = await replay(self.link.js, self.stream, self.prefix + prefix + ">")
        except nats.js.errors.NotFoundError as exc:
            # The bucket was deleted under us: lost data, like an outage, not a bug here.
            raise self.link.unavailable(f"bucket {self.name} is missing") from exc
        found = []
        for msg in messages:
            headers = msg.headers or {}
            if headers.get(_KV_OPERATION) in ("DEL", "PURGE") or not msg.data:
                continue
            key = msg.subject[len(self.prefix) :]
            found.append((key, orjson.loads(msg.data), msg.metadata.sequence.stream))
        return found

    async def purge_prefix(self, prefix: str) -> None:
        """Remove every key under `prefix` with no delete markers left."""
        await self.link.js.purge_stream(self.stream, subject=self.prefix + prefix + ">")


DELETE: Final = Marker("DELETE")


async def replay(
    js: JetStreamContext,
    stream: str,
    subject: str,
    *,
    last_per_subject: bool = True,
    headers_only: bool = False,
) -> list[Msg]:
    """What the stream holds on `subject` now, read by an ordered consumer.

    One consumer streams every message in bulk, which beats one direct get
    per key when the caller wants them all (listings, sweeps, trim).
    """
    sub = await js.subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT if last_per_subject else DeliverPolicy.ALL,
        headers_only=headers_only or None,
        inactive_threshold=5.0,
    )
    messages: list[Msg] = []
    try:
        info = await sub.consumer_info()
        if info.num_pending == 0 and (info.delivered is None or not info.delivered.consumer_seq):
            return messages
        while True:
            msg = await sub.next_msg(timeout=REQUEST_TIMEOUT)
            messages.append(msg)
            if msg.metadata.num_pending == 0:
                return messages
    finally:
        with contextlib.suppress(*TRANSPORT_ERRORS, nats.errors.BadSubscriptionError):
            await sub.unsubscribe()
