"""GraphQL over Server-Sent Events (the graphql-sse protocol) on /graphql.

https://github.com/enisdenjo/graphql-sse/blob/master/PROTOCOL.md

Distinct connections mode: a GET or POST whose Accept header takes
`text/event-stream` (transport/media_types.py: a subscription when the
client accepts a stream at all, a query or mutation only when it prefers one
to JSON) runs one operation and streams `event: next` (data: the
ExecutionResult) per result, then `event: complete`; parse and validation errors arrive as a
`next` with errors. Single connection mode (PUT reservation token, one event
stream per token, operations POSTed with `extensions.operationId`) lives in
`transport/sse/single.py`.

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
(transport/shared.py): each `next` event carries the shared encoded
payload. The event stream itself is transport/sse/events.py.

Every event stream is a presence connection counted against the per-user
limit. Its outbox is bounded: a producer waits at most `write_timeout` for
room, and a write to the socket may take at most `write_timeout`; otherwise
the client is dropped. A client that closes the connection frees everything
it held at once (subscriptions, tasks, presence).
"""

from __future__ import annotations

import contextlib
import logging

from starlette.requests import Request
from starlette.responses import Response

from backends.errors import LimitReached
from backends.hub import SlowConsumer
from resolvers.services import Services
from schema import Context

from ..media_types import EVENT_STREAM, Accept
from ..session_expiry import SessionExpiry
from .events import (
    EventStream,
    EventStreamResponse,
    Presence,
    encode_event,
    end_with_expired_token,
    event_bytes,
    limit_response,
    stream_settings,
    stream_token,
)
from .operation import Operation, StreamingView, parse_operation
from .single import Reservations

log = logging.getLogger(__name__)

# --- dispatch ---------------------------------------------------------------------


class ServerSentEvents:
    """Routes the view's SSE requests; `handle` returns None for plain HTTP."""

    def __init__(self, view: StreamingView) -> None:
        self.view = view
        self.reservations = Reservations(view)

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
        capacity, write_timeout, ping = stream_settings(services)
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
