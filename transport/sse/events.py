"""The event stream of the graphql-sse transport (transport/sse/distinct.py,
transport/sse/single.py): event encoding, the bounded outbox and its
response, error answers, and the stream as a presence connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from backends.errors import LimitReached
from resolvers.presence import close_connection, open_connection
from resolvers.services import Services

from ..session_expiry import EXPIRED_CODE, EXPIRED_MESSAGE

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-graphql-event-stream-token"
TOKEN_QUERY = "token"
LAST_EVENT_ID = "last-event-id"

HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    # No caching, no compression or buffering by proxies (Nginx honours the last).
    "cache-control": "no-cache, no-transform",
    "x-accel-buffering": "no",
}
_OPENED = b":\n\n"  # flushes the headers; some browsers wait for a first chunk
_PING = b": ping\n\n"
_MAX_WRITE = 64 * 1024  # bytes coalesced into one write


# --- encoding -----------------------------------------------------------------


def encode_event(event: str, data: object = None, event_id: str | None = None) -> bytes:
    """One SSE event; `data` is JSON (orjson never writes a raw line break)."""
    return event_bytes(event, b"" if data is None else orjson.dumps(data), event_id)


def event_bytes(event: str, body: bytes, event_id: str | None = None) -> bytes:
    """One SSE event whose data is `body`, JSON already encoded."""
    head = b"" if event_id is None else b"id: " + event_id.encode() + b"\n"
    return head + b"event: " + event.encode() + b"\ndata: " + body + b"\n\n"


def error_body(message: str, code: str) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": code}}]}


def error_response(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> Response:
    return JSONResponse(error_body(message, code), status_code=status, headers=headers)


def limit_response(exc: LimitReached) -> Response:
    return error_response(
        429, f"too many connections for this user ({exc.limit})", "LIMIT_EXCEEDED"
    )


def stream_token(request: Request) -> str | None:
    """The single connection mode token (header first, then `?token=`)."""
    token = request.headers.get(TOKEN_HEADER)
    if token is None:
        token = request.query_params.get(TOKEN_QUERY)
    return token


# --- the event stream -------------------------------------------------------------


class StreamClosed(Exception):
    """The event stream ended (client gone, dropped, or finished)."""


class EventStream:
    """A bounded outbox of encoded events for one SSE response."""

    def __init__(self, capacity: int, write_timeout: float) -> None:
        self._items: deque[bytes] = deque()
        self._capacity = capacity
        self.write_timeout = write_timeout
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.finished = False  # no more events after the queued ones
        self.aborted = False  # drop the queued events and end now

    @property
    def closed(self) -> bool:
        return self.finished or self.aborted

    async def put(self, event: bytes) -> None:
        """Queue an event, waiting up to `write_timeout` for room."""
        try:
            async with asyncio.timeout(self.write_timeout):
                while len(self._items) >= self._capacity and not self.closed:
                    self._writable.clear()
                    await self._writable.wait()
        except TimeoutError:
            log.warning("dropping an SSE client that stopped reading")
            self.abort()
        if self.closed:
            raise StreamClosed
        self._items.append(event)
        self._readable.set()

    def offer(self, event: bytes) -> None:
        """Queue an event if there is room (a courtesy notice, never waits)."""
        if not self.closed and len(self._items) < self._capacity:
            self._items.append(event)
            self._readable.set()

    def finish(self) -> None:
        self.finished = True
        self._readable.set()
        self._writable.set()

    def abort(self) -> None:
        self.aborted = True
        self._items.clear()
        self._readable.set()
        self._writable.set()

    async def take(self, wait: float) -> bytes | None:
        """Queued events (coalesced), None if nothing came within `wait` seconds;
        StreamClosed when the stream is over."""
        if not self._items and not self.closed:
            self._readable.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._readable.wait()
        if self.aborted or (not self._items and self.finished):
            raise StreamClosed
        if not self._items:
            return None
        chunk = bytearray()
        while self._items and len(chunk) < _MAX_WRITE:
            chunk += self._items.popleft()
        self._writable.set()
        return bytes(chunk)


class EventStreamResponse(Response):
    """Writes an `EventStream` with keep-alive comments until it ends or the
    client goes; then cancels `producer` and runs `on_close`, whatever happened."""

    def __init__(
        self,
        stream: EventStream,
        *,
        ping_interval: float,
        on_close: Callable[[], Awaitable[None]],
        producer: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.body = b""
        self.raw_headers = [(k.encode(), v.encode()) for k, v in HEADERS.items()]
        self._stream = stream
        self._ping_interval = ping_interval
        self._on_close = on_close
        self._producer = producer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tasks: list[asyncio.Task[None]] = []
        try:
            tasks.append(asyncio.create_task(self._write(send)))
            tasks.append(asyncio.create_task(_wait_disconnect(receive)))
            if self._producer is not None:
                tasks.append(asyncio.create_task(self._produce(self._producer)))
            await asyncio.wait(tasks[:2], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._stream.abort()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._on_close()

    async def _produce(self, producer: Callable[[], Awaitable[None]]) -> None:
        try:
            await producer()
        except StreamClosed:
            pass
        except Exception:
            log.exception("SSE operation failed")
        self._stream.finish()

    async def _write(self, send: Send) -> None:
        timeout = self._stream.write_timeout

        async def write(body: bytes, more: bool = True) -> None:
            async with asyncio.timeout(timeout):
                await send({"type": "http.response.body", "body": body, "more_body": more})

        try:
            async with asyncio.timeout(timeout):
                await send(
                    {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                )
            await write(_OPENED)
            while True:
                try:
                    chunk = await self._stream.take(self._ping_interval)
                except StreamClosed:
                    break
                await write(_PING if chunk is None else chunk)
            await write(b"", more=False)
        except TimeoutError:
            log.warning("dropping an SSE client whose socket stopped taking data")
        except OSError:
            pass  # the client is gone


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def end_with_expired_token(stream: EventStream, operation_ids: Iterable[str | None]) -> None:
    """End `stream` because its token expired: each operation's last event is
    a `next` with an UNAUTHENTICATED error, and no `complete` follows, so a
    graphql-sse client takes the end as a lost connection and retries with
    fresh headers (its `headers` option may be a function)."""
    body = orjson.dumps(error_body(EXPIRED_MESSAGE, EXPIRED_CODE))
    for op_id in operation_ids:
        if op_id is None:
            stream.offer(event_bytes("next", body))
        else:
            prefix = b'{"id":' + orjson.dumps(op_id) + b',"payload":'
            stream.offer(event_bytes("next", prefix + body + b"}"))
    stream.finish()


# --- presence -------------------------------------------------------------------


class Presence:
    """An open event stream as a presence connection."""

    def __init__(self, services: Services, user_id: str) -> None:
        self.services = services
        self.user_id = user_id
        self.conn_id = f"sse-{uuid.uuid4().hex}"
        self._open = False

    async def open(self) -> None:
        """LimitReached if the user has too many connections."""
        await open_connection(self.services, self.user_id, self.conn_id)
        self._open = True

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            await close_connection(self.services, self.user_id, self.conn_id)
        except Exception:
            log.exception("could not release a closed SSE connection")


def stream_settings(services: Services) -> tuple[int, float, float]:
    """(outbox capacity, write timeout in s, ping interval in s) of a stream."""
    s = services.settings
    return (
        s.subscriber_queue_size,
        s.write_timeout.total_seconds(),
        s.ping_interval.total_seconds(),
    )
