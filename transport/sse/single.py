"""graphql-sse single connection mode: one event stream carries every operation.

    PUT    /graphql                      reserve a stream: 201, the token as text/plain
    GET or POST /graphql  (Accept: text/event-stream, token)
                                         open the one stream of that reservation
    POST (or GET) /graphql  (token, extensions.operationId)
                                         run an operation: 202; its results arrive on
                                         the stream as `next` {id, payload}, then
                                         `complete` {id}
    DELETE /graphql?operationId=  (token)
                                         stop an operation: 200

The token goes in the `x-graphql-event-stream-token` header or `?token=`.
Every request needs `Authorization: Bearer` like any HTTP request (401
otherwise), and a reservation belongs to the user who made it: for anyone
else it does not exist (404), as with an unknown or expired token.

Status codes follow the protocol and its reference server: 409 for a second
stream on one token and for an operation id already running, 404 for an
unknown token, 400 for a missing token or operation id and for a document that
does not parse or validate (other errors, such as permissions, arrive on the
stream as a `next` with errors, then `complete`), 200 for a DELETE even when
the operation is unknown or already over (as the reference server does; the
client wanted it stopped and it is). A reservation not followed by its stream
within `init_timeout` expires; a user may hold at most
`max_connections_per_user` reservations not yet opened (429 LIMIT_EXCEEDED).
When the stream closes, the reservation ends with everything it ran.

Reservations live in this process: with several nodes, the reserve, stream
and operation requests of one client must reach the same node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from backends.errors import LimitReached
from resolvers.services import Services
from schema import Context, ValidDocuments

from ..connection import Connection
from ..frames import sse_data
from ..media_types import Accept
from .events import (
    EventStreamResponse,
    StreamPresence,
    encode_event,
    end_with_expired_token,
    error_response,
    limit_response,
    stream_connection,
)
from .operation import StreamingView, StreamRequest, parse_operation

log = logging.getLogger(__name__)

_MAX_OPERATION_ID = 256


@dataclass(eq=False)
class Reservation:
    token: str
    presence: StreamPresence
    connection: Connection
    operations: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    opened: bool = False
    closed: bool = False
    expiry: asyncio.TimerHandle | None = None

    @property
    def user_id(self) -> str:
        return self.presence.user_id


def _not_found() -> Response:
    return error_response(404, "Stream not found", "NOT_FOUND")


class Reservations:
    def __init__(self, view: StreamingView) -> None:
        self.view = view
        self._by_token: dict[str, Reservation] = {}
        self._background: set[asyncio.Task[None]] = set()

    def _find(self, token: str | None, user_id: str) -> Reservation | Response:
        """The user's reservation under `token`, or the error to answer."""
        if not token:
            return error_response(400, "The stream token is missing", "BAD_USER_INPUT")
        found = self._by_token.get(token)
        if found is None or found.user_id != user_id:
            return _not_found()
        return found

    async def reserve(self, request: Request, user_id: str, services: Services) -> Response:
        if not Accept.parse(request.headers.get("accept")).accepts("text/plain"):
            return error_response(406, "A reservation answers text/plain", "BAD_USER_INPUT")
        limit = services.settings.max_connections_per_user
        pending = sum(1 for r in self._by_token.values() if r.user_id == user_id and not r.opened)
        if pending >= limit:
            return error_response(
                429, f"too many stream reservations for this user ({limit})", "LIMIT_EXCEEDED"
            )
        token = secrets.token_urlsafe(24)
        reservation = Reservation(
            token=token,
            presence=StreamPresence(services, user_id),
            connection=stream_connection(services),
        )
        reservation.expiry = asyncio.get_running_loop().call_later(
            services.settings.init_timeout.total_seconds(), self._expire, reservation
        )
        self._by_token[token] = reservation
        return PlainTextResponse(token, status_code=201)

    def _expire(self, reservation: Reservation) -> None:
        if not reservation.opened:
            task = asyncio.create_task(self._close(reservation))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def connect(
        self, request: Request, token: str, user_id: str, services: Services, ends_at: float
    ) -> Response:
        """Open the reservation's stream; it ends when this request's token expires."""
        reservation = self._find(token, user_id)
        if isinstance(reservation, Response):
            return reservation
        if reservation.opened:
            return error_response(409, "Stream already open", "BAD_USER_INPUT")
        reservation.opened = True
        try:
            await reservation.presence.open()
        except LimitReached as exc:
            reservation.opened = False
            return limit_response(exc)
        if reservation.expiry is not None:
            reservation.expiry.cancel()
        connection = reservation.connection
        operations = reservation.operations
        reservation.presence.register(
            "graphql-sse-single", connection, lambda: list[str | None](operations)
        )

        async def on_close() -> None:
            await self._close(reservation)

        return EventStreamResponse(
            connection,
            ping_interval=services.settings.ping_interval.total_seconds(),
            fast_paths=self.view.fast_paths,
            on_close=on_close,
            ends_at=ends_at,
            expired=lambda: end_with_expired_token(connection, list(reservation.operations)),
        )

    async def execute(
        self, request: Request, token: str, user_id: str, services: Services, *, admin: bool
    ) -> Response:
        reservation = self._find(token, user_id)
        if isinstance(reservation, Response):
            return reservation
        operation, problem = await parse_operation(self.view, request)
        if problem is not None:
            return problem
        if operation is None:
            raise RuntimeError("parse_operation gives an operation or a problem")
        extensions = operation.data.extensions or {}
        op_id = extensions.get("operationId")
        if not isinstance(op_id, str) or not op_id:
            return error_response(
                400, "Operation ID is missing (extensions.operationId)", "BAD_USER_INPUT"
            )
        if len(op_id) > _MAX_OPERATION_ID:
            return error_response(400, "Operation ID is too long", "BAD_USER_INPUT")
        if reservation.closed or self._by_token.get(token) is not reservation:
            return _not_found()
        if op_id in reservation.operations:
            return error_response(409, "Operation with ID already exists", "BAD_USER_INPUT")
        limit = self.view.max_subscriptions_per_connection
        if limit is not None and len(reservation.operations) >= limit:
            return error_response(
                429, f"too many operations on this stream ({limit})", "LIMIT_EXCEEDED"
            )
        errors = _invalid(self.view.documents, operation)
        if errors:
            return JSONResponse({"errors": errors}, status_code=400)
        context = Context(
            services=services,
            user_id=user_id,
            conn_id=reservation.presence.conn_id,
            admin=admin,
        )
        task = asyncio.create_task(self._run(reservation, op_id, operation, context))
        reservation.operations[op_id] = task
        return Response(status_code=202)

    async def _run(
        self, reservation: Reservation, op_id: str, operation: StreamRequest, context: Context
    ) -> None:
        connection = reservation.connection
        try:
            if await operation.deliver(context, connection, sse_data(op_id)):
                await connection.send(encode_event("complete", {"id": op_id}))
        except Exception:
            log.exception("SSE operation failed")
        finally:
            if reservation.operations.get(op_id) is asyncio.current_task():
                del reservation.operations[op_id]

    async def stop(self, request: Request, token: str | None, user_id: str) -> Response:
        reservation = self._find(token, user_id)
        if isinstance(reservation, Response):
            return reservation
        op_id = request.query_params.get("operationId")
        if not op_id:
            return error_response(400, "Operation ID is missing", "BAD_USER_INPUT")
        task = reservation.operations.pop(op_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            reservation.connection.write(encode_event("complete", {"id": op_id}))
        return Response(status_code=200)

    async def _close(self, reservation: Reservation) -> None:
        if reservation.closed:
            return
        reservation.closed = True
        if self._by_token.get(reservation.token) is reservation:
            del self._by_token[reservation.token]
        if reservation.expiry is not None:
            reservation.expiry.cancel()
        reservation.connection.stop()
        tasks = list(reservation.operations.values())
        reservation.operations.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await reservation.presence.close()


def _invalid(documents: ValidDocuments, operation: StreamRequest) -> list[dict[str, Any]]:
    """Why the document is refused (size, tokens, syntax, depth, aliases,
    validation), answered as 400 before the 202; the checks are the ones
    every path runs (schema/document_cache.py), the limits first."""
    checked = documents.check(operation.data.query or "")
    errors: list[GraphQLError] = checked if isinstance(checked, list) else []
    return [
        {**e.formatted, "extensions": {"code": "GRAPHQL_VALIDATION_FAILED", **(e.extensions or {})}}
        for e in errors
    ]
