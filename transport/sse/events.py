"""The event stream of the graphql-sse transport (transport/sse/distinct.py,
transport/sse/single.py): event encoding, the response that writes a
client's connection (transport/connection.py) as its body, error answers,
and the stream as a presence connection.

Events go out through the stream's one outbound connection: written straight
to uvicorn's transport as chunks (transport/adapters/uvicorn.py) on the fast
path, as ASGI `http.response.body` chunks otherwise, under one byte budget
(`max_send_buffer`; over it the stream ends), with a keep-alive comment every
`ping_interval`, and aborted when a write stalls longer than `write_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from backends.errors import LimitReached
from resolvers.connection_registry import LocalConnection
from resolvers.presence import close_connection, open_connection
from resolvers.services import Services

from ..adapters.uvicorn import event_stream_outlet
from ..auth import EXPIRED_CODE, EXPIRED_MESSAGE
from ..connection import AsgiOutlet, Connection, Deadlines, HeldOutlet, LoopTimers, Outlet
from ..frames import sse_data, sse_event

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


# --- encoding -----------------------------------------------------------------


def encode_event(event: str, data: object = None, event_id: str | None = None) -> bytes:
    """One SSE event; `data` is JSON (orjson never writes a raw line break)."""
    return event_bytes(event, b"" if data is None else orjson.dumps(data), event_id)


event_bytes = sse_event


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


def stream_connection(services: Services) -> Connection:
    """A client's event stream, holding its events until the response opens."""
    settings = services.settings

    async def overflowed(reason: str) -> None:
        """The connection is closed already: the response ends with it."""

    return Connection(
        HeldOutlet(),
        budget=settings.max_send_buffer,
        write_timeout=settings.write_timeout.total_seconds(),
        deadlines=Deadlines(LoopTimers()),
        on_overflow=overflowed,
        label="SSE client",
    )


class EventStreamResponse(Response):
    """Writes a client's connection as an event stream, with keep-alive
    comments, until it closes or the client goes; then cancels `producer`
    and runs `on_close`, whatever happened. `ends_at` (the token's expiry):
    `expired` runs then."""

    def __init__(
        self,
        connection: Connection,
        *,
        ping_interval: float,
        fast_paths: bool,
        on_close: Callable[[], Awaitable[None]],
        ends_at: float | None = None,
        expired: Callable[[], None] | None = None,
        producer: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.body = b""
        self.raw_headers = [(k.encode(), v.encode()) for k, v in HEADERS.items()]
        self._connection = connection
        self._ping_interval = ping_interval
        self._fast_paths = fast_paths
        self._on_close = on_close
        self._ends_at = ends_at
        self._expired = expired
        self._producer = producer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connection = self._connection
        tasks: list[asyncio.Task[Any]] = []
        started = False
        try:
            async with asyncio.timeout(connection.write_timeout):
                await send(
                    {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                )
            started = True
            outlet: Outlet | None = event_stream_outlet(scope) if self._fast_paths else None
            if outlet is None:

                async def body(chunk: bytes) -> None:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})

                outlet = AsgiOutlet(body, coalesce=True)
            connection.write(_OPENED)
            connection.attach(outlet)
            self._keep_alive()
            if self._ends_at is not None and self._expired is not None:
                connection.expire_at(self._ends_at, self._expired)
            tasks.append(asyncio.create_task(_wait_disconnect(receive)))
            tasks.append(asyncio.create_task(connection.closed.wait()))
            if self._producer is not None:
                tasks.append(asyncio.create_task(self._produce(self._producer)))
            await asyncio.wait(tasks[:2], return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            log.warning("dropping an SSE client whose socket stopped taking data")
        except OSError:
            pass  # the client is gone
        finally:
            connection.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if started:
                await self._end(send)
            connection.stop()
            await self._on_close()

    def _keep_alive(self) -> None:
        """A `: ping` comment when the stream was idle for `ping_interval`."""
        connection = self._connection
        interval = self._ping_interval
        seen = -1

        def written() -> int:
            outlet = connection.outlet
            return outlet.sent() + outlet.unsent()

        def ping() -> None:
            nonlocal seen
            now = written()
            if now == seen and not connection.write(_PING):
                return
            seen = written()
            connection.deadlines.after("keepalive", interval, ping)

        seen = written()
        connection.deadlines.after("keepalive", interval, ping)

    async def _end(self, send: Send) -> None:
        """The end of the body, after what was written (unless it stalls)."""
        with contextlib.suppress(TimeoutError, OSError, RuntimeError):
            async with asyncio.timeout(self._connection.write_timeout):
                await self._connection.drain()
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _produce(self, producer: Callable[[], Awaitable[None]]) -> None:
        try:
            await producer()
        except Exception:
            log.exception("SSE operation failed")
        self._connection.close()


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def end_with_expired_token(connection: Connection, operation_ids: Iterable[str | None]) -> None:
    """End the stream because its token expired: each operation's last event
    is a `next` with an UNAUTHENTICATED error, and no `complete` follows, so a
    graphql-sse client takes the end as a lost connection and retries with
    fresh headers (its `headers` option may be a function)."""
    end_with_error(connection, operation_ids, EXPIRED_MESSAGE, EXPIRED_CODE)


def end_with_error(
    connection: Connection, operation_ids: Iterable[str | None], message: str, code: str
) -> None:
    """End the stream with a `next` carrying the error for each operation."""
    body = orjson.dumps(error_body(message, code))
    for op_id in operation_ids:
        connection.write(sse_event("next", sse_data(op_id).frame(body)))
    connection.close()


# --- presence -------------------------------------------------------------------


class StreamPresence:
    """An open event stream as a presence connection (counted against the
    user's connection limit)."""

    def __init__(self, services: Services, user_id: str) -> None:
        self.services = services
        self.user_id = user_id
        self.conn_id = f"sse-{uuid.uuid4().hex}"
        self._open = False

    async def open(self) -> None:
        """LimitReached if the user has too many connections."""
        await open_connection(self.services, self.user_id, self.conn_id)
        self._open = True

    def register(
        self,
        protocol: str,
        connection: Connection,
        operation_ids: Callable[[], list[str | None]],
    ) -> None:
        """List the open stream among the node's connections (admin API);
        `operation_ids`: its live operations now."""

        def end(reason: str) -> None:
            end_with_error(connection, operation_ids(), reason, "FORBIDDEN")

        self.services.registry.add(
            LocalConnection(
                id=self.conn_id,
                user_id=self.user_id,
                transport="sse",
                protocol=protocol,
                connected_at=datetime.now(UTC),
                live_subscriptions=lambda: len(operation_ids()),
                end=end,
            )
        )

    async def close(self) -> None:
        self.services.registry.remove(self.conn_id)
        if not self._open:
            return
        self._open = False
        try:
            await close_connection(self.services, self.user_id, self.conn_id)
        except Exception:
            log.exception("could not release a closed SSE connection")
