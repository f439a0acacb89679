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
limit. Its events go out through its one outbound connection
(transport/connection.py, transport/sse/events.py): one byte budget, and a
write that stalls longer than `write_timeout` drops the client. A client
that closes the connection frees everything it held at once (subscriptions,
tasks, presence).
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from backends.errors import LimitReached
from resolvers.services import Services
from schema import Context

from ..frames import sse_data
from ..media_types import EVENT_STREAM, Accept
from .events import (
    EventStreamResponse,
    StreamPresence,
    encode_event,
    end_with_expired_token,
    limit_response,
    stream_connection,
    stream_token,
)
from .operation import StreamingView, StreamRequest, parse_operation
from .single import Reservations

log = logging.getLogger(__name__)

# --- dispatch ---------------------------------------------------------------------


class ServerSentEvents:
    """Routes the view's SSE requests; `handle` returns None for plain HTTP."""

    def __init__(self, view: StreamingView) -> None:
        self.view = view
        self.reservations = Reservations(view)

    async def handle(
        self,
        request: Request,
        accept: Accept,
        user_id: str,
        services: Services,
        ends_at: float,
        *,
        admin: bool = False,
    ) -> Response | None:
        """`ends_at`: when the request's token expires, and with it any
        stream this request opens; `admin`: whether its token makes the user
        a server admin."""
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
            return await self.reservations.execute(request, token, user_id, services, admin=admin)
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
        return await self.distinct(request, operation, user_id, services, ends_at, admin=admin)

    async def distinct(
        self,
        request: Request,
        operation: StreamRequest,
        user_id: str,
        services: Services,
        ends_at: float,
        *,
        admin: bool = False,
    ) -> Response:
        """Distinct connections mode: this request's operation on its own stream,
        until it completes or the token expires."""
        presence = StreamPresence(services, user_id)
        try:
            await presence.open()
        except LimitReached as exc:
            return limit_response(exc)
        connection = stream_connection(services)
        presence.register("graphql-sse-distinct", connection, lambda: [None])
        context = Context(services=services, user_id=user_id, conn_id=presence.conn_id, admin=admin)

        async def produce() -> None:
            if await operation.deliver(context, connection, sse_data(None)):
                await connection.send(encode_event("complete"))

        return EventStreamResponse(
            connection,
            ping_interval=services.settings.ping_interval.total_seconds(),
            fast_paths=self.view.fast_paths,
            on_close=presence.close,
            ends_at=ends_at,
            expired=lambda: end_with_expired_token(connection, [None]),
            producer=produce,
        )
