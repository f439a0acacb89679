"""GraphQL over Server-Sent Events (the graphql-sse protocol) on /graphql.

https://github.com/enisdenjo/graphql-sse/blob/master/PROTOCOL.md

Distinct connections mode: a GET or POST whose Accept header takes
`text/event-stream` (transport/media_types.py: a subscription when the
client accepts a stream at all, a query or mutation only when it prefers one
to JSON) runs one operation and streams `event: next` (data: the
ExecutionResult) per result, then `event: complete`; parse and validation errors arrive as a
`next` with errors. Single connection mode (PUT reservation token, one event
stream per token, operations POSTed with `extensions.operationId`) lives in
`transport/sse_single.py`.

Strawberry 0.341 already runs any operation as a stream (`Schema.stream`)
and, when "graphql-sse" is among its `subscription_protocols`, answers the
distinct mode itself (next/complete events, errors as `next`, a `: ping`
every 15 s that cannot be configured). It has no single connection mode, no
`id:` lines, no presence or per-user connection limit, and no bound on a
write to a client that stopped reading; without the Accept header it runs a
subscription as a query (a masked internal error). So this module reuses
`Schema.stream`, the view's request parsing and result formatting, and writes
the event stream itself (`EventStreamResponse`).

Subscriptions identical to others (same document, variables and operation
name) share one execution with them, over SSE and WebSockets alike
(transport/shared.py): each `next` event carries the shared encoded payload.

Every event stream is a presence connection counted against the per-user
limit. Its outbox is bounded: a producer waits at most `write_timeout` for
room, and a write to the socket may take at most `write_timeout`; otherwise
the client is dropped. A client that closes the connection frees everything
it held at once (subscriptions, tasks, presence).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError, get_operation_ast
from graphql import OperationType as AstOperationType
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from strawberry.exceptions import MissingQueryError
from strawberry.http import GraphQLRequestData
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from backends.errors import LimitReached
from backends.hub import SlowConsumer
from resolvers.presence import close_connection, open_connection
from resolvers.services import Services
from schema import Context

from .media_types import EVENT_STREAM, Accept
from .session_expiry import EXPIRED_CODE, EXPIRED_MESSAGE, SessionExpiry
from .sse_resume import Resumable, prepare

if TYPE_CHECKING:
    from .graphql_view import GraphQLView
    from .sse_single import Reservations

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


# --- operations -------------------------------------------------------------------


class Operation:
    """One parsed GraphQL request, ready to stream with `results()`."""

    def __init__(self, view: GraphQLView, request: Request, data: GraphQLRequestData) -> None:
        self.view = view
        self.request = request
        self.data = data
        self.resumable: Resumable = prepare(
            view.documents,
            data.query,
            data.variables,
            data.operation_name,
            request.headers.get(LAST_EVENT_ID),
        )

    def is_subscription(self) -> bool:
        """Whether the operation to run is a subscription (False for a
        document that does not parse: its errors are a single result)."""
        if not self.data.query:
            return False
        try:
            document = self.view.documents.parse(self.data.query)
        except GraphQLError:
            return False
        operation = get_operation_ast(document, self.data.operation_name)
        return operation is not None and operation.operation is AstOperationType.SUBSCRIPTION

    async def results(self, context: Context) -> AsyncGenerator[tuple[dict[str, Any], str | None]]:
        """(payload, event id) per result, from Strawberry's `Schema.stream`."""
        allowed = OperationType.from_http("GET" if self.request.method == "GET" else "POST")
        stream = await self.view.schema.stream(
            self.resumable.query,
            variable_values=self.resumable.variables,
            context_value=context,
            operation_name=self.data.operation_name,
            operation_extensions=self.data.extensions,
            allowed_operation_types=allowed,
        )
        async with contextlib.aclosing(stream):
            async for result in stream:
                payload: dict[str, Any] = dict(
                    await self.view.process_result(self.request, result)  # type: ignore[arg-type]
                )
                yield payload, self.resumable.event_id(payload)

    async def payloads(self, context: Context) -> AsyncGenerator[tuple[bytes, str | None]]:
        """(encoded payload, event id) per result. A subscription that can
        share an execution with identical ones (transport/shared.py) takes
        its payloads from there; SlowConsumer if it falls too far behind."""
        shared = self.view.shared
        query = self.resumable.query
        plan = (
            None
            if query is None
            else shared.plan(query, self.resumable.variables, self.data.operation_name)
        )
        if plan is not None:
            async with shared.join(plan, context, b"", None) as member:
                if member is not None:
                    async for payload in member:
                        yield self._with_event_id(payload)
                    return
        async for result, event_id in self.results(context):
            yield orjson.dumps(result), event_id

    def _with_event_id(self, payload: bytes) -> tuple[bytes, str | None]:
        if self.resumable.root_key is None:
            return payload, None
        result = orjson.loads(payload)
        event_id = self.resumable.event_id(result)
        return (orjson.dumps(result) if self.resumable.strip_cursor else payload), event_id


async def parse_operation(
    view: GraphQLView, request: Request
) -> tuple[Operation | None, Response | None]:
    """The request's operation, or the 4xx response for a request problem."""
    try:
        data = await view.parse_http_body(view.request_adapter_class(request))
    except HTTPException as exc:
        return None, error_response(exc.status_code, exc.reason, "BAD_USER_INPUT")
    if isinstance(data, list):
        return None, error_response(400, "Batching is not supported for SSE", "BAD_USER_INPUT")
    if not data.query:
        return None, error_response(400, "No GraphQL query found in the request", "BAD_USER_INPUT")
    return Operation(view, request, data), None


# --- dispatch ---------------------------------------------------------------------


class ServerSentEvents:
    """Routes the view's SSE requests; `handle` returns None for plain HTTP."""

    def __init__(self, view: GraphQLView) -> None:
        from .sse_single import Reservations

        self.view = view
        self.reservations: Reservations = Reservations(self)

    async def handle(
        self, request: Request, accept: Accept, user_id: str, services: Services, ends_at: float
    ) -> Response | None:
        """`ends_at`: when the request's token expires, and with it any
        stream this request opens."""
        method = request.method
        if method == "PUT":
            return await self.reservations.reserve(request, user_id, services)
        token = stream_token(request)
        if method == "DELETE":
            return await self.reservations.stop(request, token, user_id)
        if token is not None:
            # The stream is asked for explicitly (the graphql-sse client sends
            # `Accept: text/event-stream`); `*/*` is an operation to execute.
            if accept.prefers_event_stream():
                return await self.reservations.connect(request, token, user_id, services, ends_at)
            return await self.reservations.execute(request, token, user_id, services)
        if not accept.accepts(EVENT_STREAM):
            return None
        preferred = accept.prefers_event_stream()
        operation, problem = await parse_operation(self.view, request)
        if operation is None or problem is not None:
            # The JSON answer's own errors when the client prefers JSON.
            return problem if preferred else None
        # A subscription streams whenever the client takes a stream at all;
        # a single result only when the client prefers one.
        if not preferred and not operation.is_subscription():
            return None
        return await self.distinct(request, operation, user_id, services, ends_at)

    def settings(self, services: Services) -> tuple[int, float, float]:
        s = services.settings
        return (
            s.subscriber_queue_size,
            s.write_timeout.total_seconds(),
            s.ping_interval.total_seconds(),
        )

    async def distinct(
        self,
        request: Request,
        operation: Operation,
        user_id: str,
        services: Services,
        ends_at: float,
    ) -> Response:
        """Distinct connections mode: this request's operation on its own stream,
        until it completes or the token expires."""
        presence = Presence(services, user_id)
        try:
            await presence.open()
        except LimitReached as exc:
            return limit_response(exc)
        capacity, write_timeout, ping = self.settings(services)
        stream = EventStream(capacity, write_timeout)
        context = Context(services=services, user_id=user_id, conn_id=presence.conn_id)

        async def produce() -> None:
            try:
                async with contextlib.aclosing(operation.payloads(context)) as payloads:
                    async for payload, event_id in payloads:
                        await stream.put(event_bytes("next", payload, event_id))
            except SlowConsumer:
                log.info("dropping an SSE client that fell too far behind")
                stream.abort()
                return
            await stream.put(encode_event("complete"))

        async def token_expired() -> None:
            end_with_expired_token(stream, [None])

        expiry = SessionExpiry(ends_at, token_expired)

        async def on_close() -> None:
            await expiry.stop()
            await presence.close()

        return EventStreamResponse(stream, ping_interval=ping, on_close=on_close, producer=produce)


# --- plain HTTP -------------------------------------------------------------------


async def execute_without_stream(
    view: GraphQLView,
    request_adapter: AsyncHTTPRequestAdapter,
    sub_response: Response,
    context: Context,
    request_data: GraphQLRequestData,
) -> ExecutionResult:
    """Strawberry's `execute_single` for plain HTTP, except that a subscription
    gets a 400 saying how to stream it (Strawberry would run it as a query and
    answer a masked internal error)."""
    allowed = OperationType.from_http(request_adapter.method) - {OperationType.SUBSCRIPTION}
    if not view.allow_queries_via_get and request_adapter.method == "GET":
        allowed -= {OperationType.QUERY}
    try:
        return await view.schema.execute(
            request_data.query,
            variable_values=request_data.variables,
            context_value=context,
            operation_name=request_data.operation_name,
            allowed_operation_types=allowed,
            operation_extensions=request_data.extensions,
        )
    except InvalidOperationTypeError as exc:
        if exc.operation_type is not OperationType.SUBSCRIPTION:
            raise HTTPException(400, exc.as_http_error_reason(request_adapter.method)) from exc
        sub_response.status_code = 400
        message = (
            "A subscription needs a stream: send it with `Accept: text/event-stream` "
            "(graphql-sse) or over a WebSocket (graphql-transport-ws)."
        )
        return ExecutionResult(
            data=None, errors=[GraphQLError(message, extensions={"code": "BAD_USER_INPUT"})]
        )
    except CannotGetOperationTypeError as exc:
        raise HTTPException(400, exc.as_http_error_reason()) from exc
    except MissingQueryError as exc:
        raise HTTPException(400, "No GraphQL query found in the request") from exc
