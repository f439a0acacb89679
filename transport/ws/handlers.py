"""Strawberry's two WebSocket protocols, hardened.

graphql-transport-ws (https://github.com/enisdenjo/graphql-ws PROTOCOL.md):
every client frame is validated as the reference server's `validateMessage`
does before Strawberry sees it, so a malformed frame of any kind closes the
socket with 4400 and a short reason instead of raising. After the ack the
server sends `{"type": "ping"}` every `ping_interval` and closes with
4499 "Pong timeout" when no `pong` comes back within `pong_timeout`.

Legacy graphql-ws (subscriptions-transport-ws): malformed frames get that
protocol's answers (`connection_error` for a frame that cannot be read,
`error` for a bad or unknown message) and the socket stays open, as in the
reference server; the init timeout is enforced (4408) like on the newer
protocol; a refused init is `connection_error` then close 4403; and queries
and mutations run too (`start` -> `data` -> `complete`).

Both: close reasons are cut to the 123 bytes RFC 6455 allows, and a send to
a socket that is already gone is dropped quietly (the receive loop sees the
disconnect and releases everything the connection held).

Strawberry's undocumented API used here, written for the version
schema/strawberry_adapter.py names (on any other, `handlers_fit` is False and
the view serves WebSockets with Strawberry's own handlers instead): the
handlers' methods `handle_message`, `handle_connection_init`, `handle_pong`,
`handle_invalid_message`, `run_operation`, `cleanup_operation`,
`send_message`, `shutdown`, `handle` (legacy), `handle_start`,
`handle_async_results`, `send_data_message`; their attributes `operations`,
`tasks`, `subscriptions`, `connection_acknowledged`,
`connection_init_received`, `connection_timed_out`,
`connection_init_timeout_task`, `max_subscriptions_per_connection`, `view`;
`Operation.send_operation_message`; and `ASGIWebSocketAdapter.ws`. There is
no public API for a protocol handler: the fallback keeps WebSockets working,
without what these handlers add.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import orjson
from graphql import GraphQLError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.subscriptions.protocols.graphql_transport_ws import types as transport_ws
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_ws import types as legacy_ws
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types.execution import ExecutionResult, PreExecutionError
from strawberry.types.unset import UnsetType

from backends.errors import Overloaded, Unavailable
from resolvers.cluster import DISCONNECTED
from resolvers.connection_registry import LocalConnection
from resolvers.errors import BadUserInput
from schema import Context, ValidDocuments
from schema.resume_map import parse_resume

from ..adapters.starlette import SocketIO
from ..adapters.uvicorn import (
    WebSocketProtocol,
    abort_connection,
    websocket_outlet,
    websocket_protocol,
)
from ..admission import TurnAdmission
from ..auth import EXPIRED_CODE, EXPIRED_MESSAGE, AuthError
from ..connection import AsgiOutlet, Connection, Deadlines, LoopTimers, Outlet
from ..frames import Framing, legacy_ws_data, transport_ws_next
from ..in_flight import ConnectionSlots, ProcessBudget, counted, overloaded_error
from ..revocations import check_not_revoked
from ..shared import SharedSubscriber, SharedSubscriptions

log = logging.getLogger(__name__)

MAX_CLOSE_REASON = 123  # bytes, RFC 6455 section 5.5.1

# Close codes (graphql-transport-ws PROTOCOL.md, and graphql-ws's CloseCode).
BAD_REQUEST = 4400
UNAUTHORIZED = 4401
FORBIDDEN = 4403
INIT_TIMEOUT = 4408
SUBSCRIBER_EXISTS = 4409
TOO_MANY_INITS = 4429
# graphql-ws's own client closes a socket it considers frozen with 4499
# "Terminated" and reconnects on it; 1011 would be fatal (no retry) there.
PONG_TIMEOUT = 4499
INTERNAL_ERROR = 4500
UNAVAILABLE_REASON = "UNAVAILABLE: the backend is unavailable, try again"
_INTERNAL = {"message": "Internal server error", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}
OVERLOADED_REASON = "OVERLOADED: the server is overloaded, try again shortly"


def _outage_reason(exc: Unavailable) -> str:
    """The close reason of a connection a backend fault ended: load or outage."""
    return OVERLOADED_REASON if isinstance(exc, Overloaded) else UNAVAILABLE_REASON


# Our own: the subscriber's bounded buffer of results to send overflowed.
SLOW_CONSUMER = 4008


def close_reason(text: str) -> str:
    """`text` cut to the 123 bytes a close frame allows, on a character boundary."""
    return text.encode()[:MAX_CLOSE_REASON].decode(errors="ignore")


def _short(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel a connection's side task and wait for it; a failure is logged, not raised."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:
        log.exception("WebSocket side task %s failed", task.get_name())


def too_many_operations(limit: int) -> dict[str, object]:
    """The error for an operation over `max_subscriptions_per_connection`."""
    return {
        "message": f"too many operations on this connection ({limit})",
        "extensions": {"code": "LIMIT_EXCEEDED"},
    }


EXPIRED_REASON = f"{EXPIRED_CODE}: {EXPIRED_MESSAGE}"


class OperationBudget:
    """One connection's share of the in-flight bounds (transport/in_flight.py)."""

    def __init__(self, view: object) -> None:
        sharing = cast(_SharingView, view)
        self._documents = sharing.documents
        self._process = sharing.budget
        self._slots = ConnectionSlots(sharing.connection_slots)

    async def take(self, query: str, operation_name: str | None) -> bool | None:
        """None: not counted (a subscription, or a refused document); True:
        a slot is held, give it back with `hold`; False: the process is
        full, refuse the operation with OVERLOADED. At this connection's cap
        it first waits for one of its operations to end, reading nothing."""
        if not counted(self._documents, query, operation_name):
            return None
        await self._slots.room()
        if not self._process.try_take():
            return False
        self._slots.take()
        return True

    def hold(self, task: asyncio.Task[Any] | None) -> None:
        """Give the slot back when `task` ends (now if there is none)."""
        if task is None or task.done():
            self._give_back()
        else:
            task.add_done_callback(lambda _: self._give_back())

    def _give_back(self) -> None:
        self._process.give_back()
        self._slots.give_back()


def overloaded_payload() -> list[dict[str, object]]:
    return [cast("dict[str, object]", overloaded_error().formatted)]


class Rejected(ConnectionRejectionError):
    """A refused connection_init, with the API error code and a reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__({"message": message, "extensions": {"code": code}})
        self.code = code
        self.message = message

    @property
    def close_reason(self) -> str:
        return close_reason(f"{self.code}: {self.message}")


def take_resume(context: Context, payload: Mapping[str, object]) -> str | None:
    """Keep the connection_init payload's resume map in the context; the
    close reason (BAD_USER_INPUT) if it is malformed. After authentication."""
    try:
        history = context.services.settings.enable_message_history
        context.resume = parse_resume(payload, history=history)
    except BadUserInput as exc:
        return close_reason(f"{exc.code}: {exc.message}")
    return None


class WebSocketAdapter(ASGIWebSocketAdapter):
    """Strawberry's ASGI adapter, made safe to use from several tasks, with
    the connection's one outbound path.

    One frame at a time (`receive_json`) so a handler can go on after a bad
    frame; binary frames are told apart by the ASGI message itself; `close`
    is idempotent, goes after the frames written before it and cuts the
    reason to 123 bytes; sending to a closed socket raises
    `WebSocketDisconnected` only. Every frame goes out through `connection`
    (transport/connection.py): straight to uvicorn's transport on the fast
    path, through ASGI otherwise; a slow consumer is closed with 4008.
    """

    def __init__(self, view: Any, request: WebSocket, response: WebSocket) -> None:
        super().__init__(view, request, response)
        sharing = cast(_SharingView, view)
        settings = request.state.services.settings
        fast = sharing.fast_paths
        self.io = SocketIO(request, fast)
        self._gone = False
        direct = websocket_outlet(self.io.raw_receive) if fast else None
        outlet: Outlet = (
            direct
            if direct is not None
            else AsgiOutlet(self._send_frame, abort=self._abort if fast else None)
        )
        self.connection = Connection(
            outlet,
            budget=settings.max_send_buffer,
            write_timeout=settings.write_timeout.total_seconds(),
            deadlines=Deadlines(LoopTimers()),
            on_overflow=self._overflowed,
            label="WebSocket",
        )
        protocol = websocket_protocol(self.io.raw_receive) if fast else None
        if protocol is not None:
            self._keep_alive(
                protocol,
                settings.ping_interval.total_seconds(),
                settings.pong_timeout.total_seconds(),
            )

    def _keep_alive(self, protocol: WebSocketProtocol, interval: float, timeout: float) -> None:
        """WebSocket-level pings on the connection's timer (uvicorn's own,
        moved there): a ping every `interval`; no pong within `timeout`
        closes with 1011 "keepalive ping timeout"."""
        deadlines = self.connection.deadlines

        def ping() -> None:
            if protocol.ping():
                deadlines.after("ws-pong", timeout, late)

        def pong() -> None:
            deadlines.clear("ws-pong")
            deadlines.after("ws-ping", interval, ping)

        def late() -> None:
            protocol.keepalive_timeout()
            self.connection.close()

        protocol.on_pong = pong
        deadlines.after("ws-ping", interval, ping)

    def _abort(self) -> bool:
        return abort_connection(self.io.raw_receive)

    async def _overflowed(self, reason: str) -> None:
        await self.close(SLOW_CONSUMER, f"SLOW_CONSUMER: {reason}")

    @property
    def closed(self) -> bool:
        return self._gone or WebSocketState.DISCONNECTED in (
            self.ws.application_state,
            self.ws.client_state,
        )

    async def receive_json(self) -> object:
        """The next frame, decoded.

        Raises WebSocketDisconnected, NonTextMessageReceived (a binary frame)
        or NonJsonMessageReceived (text that is not JSON).
        """
        if self.closed:
            raise WebSocketDisconnected
        message = await self.io.receive()
        if message["type"] == "websocket.disconnect":
            self._gone = True
            raise WebSocketDisconnected
        # In a burst, a message is decoded and handled only in its turn
        # (transport/admission.py), not queued as work ahead of everyone.
        await cast(_SharingView, self.view).admission.admit()
        text = message.get("text")
        if not isinstance(text, str):
            raise NonTextMessageReceived
        try:
            return self.view.decode_json(text)
        except ValueError as exc:  # json's and orjson's JSONDecodeError
            raise NonJsonMessageReceived from exc

    async def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object]:
        while not self.closed:
            try:
                frame = await self.receive_json()
            except NonJsonMessageReceived:
                if ignore_parsing_errors:
                    continue
                raise
            except WebSocketDisconnected:
                return
            yield frame

    async def send_json(self, message: Mapping[str, object]) -> None:
        # orjson, as the shared path encodes its payloads: a frame is the same
        # bytes whichever path built it.
        await self.send_bytes_frame(orjson.dumps(message))

    async def send_text(self, text: str) -> None:
        await self.send_bytes_frame(text.encode())

    async def send_bytes_frame(self, frame: bytes) -> None:
        """One text message (UTF-8 bytes), after the ones before it."""
        if self.closed or not await self.connection.send(frame):
            raise WebSocketDisconnected

    async def _send_frame(self, frame: bytes) -> None:
        """The ASGI path's one send (AsgiOutlet)."""
        try:
            await self.io.send_text(frame.decode())
        except (OSError, RuntimeError):  # the peer is gone (uvicorn's ClientDisconnected)
            self._gone = True
            self.io.mark_gone()
            raise

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        connection = self.connection
        connection.close()
        # After what was written before it; a close that cannot get out is
        # ended by the connection's stall watch.
        with suppress(WebSocketDisconnect, RuntimeError, OSError):
            await connection.drain()
            if not self.closed:
                await self.ws.close(code=code, reason=close_reason(reason))

    def stop(self) -> None:
        """The connection is over: stop its timer."""
        self.connection.stop()


# --- graphql-transport-ws ---------------------------------------------------------

_NULLABLE_OBJECT = ("variables", "extensions")


def transport_ws_problem(frame: object) -> str | None:
    """Why `frame` is not a valid client message (None when it is), as graphql-ws's
    `validateMessage` decides; the text is a close reason, so it never echoes
    more than a few characters of what the client sent."""
    if not isinstance(frame, dict):
        return f"Message must be a JSON object, got {_kind(frame)}"
    kind = frame.get("type")
    if not kind:
        return "Message is missing the 'type' property"
    if not isinstance(kind, str):
        return f"Message 'type' must be a string, got {_kind(kind)}"
    if kind in ("connection_init", "ping", "pong"):
        payload = frame.get("payload")
        if payload is not None and not isinstance(payload, dict):
            return f"Invalid {kind} payload: expected an object or null, got {_kind(payload)}"
        return None
    if kind in ("subscribe", "complete"):
        op_id = frame.get("id")
        if not isinstance(op_id, str):
            return f"{kind} message 'id' must be a string, got {_kind(op_id)}"
        if not op_id:
            return f"{kind} message requires a non-empty 'id'"
        if kind == "complete":
            return None
        payload = frame.get("payload")
        if not isinstance(payload, dict):
            return f"subscribe 'payload' must be an object, got {_kind(payload)}"
        if not isinstance(payload.get("query"), str):
            return f"subscribe payload 'query' must be a string, got {_kind(payload.get('query'))}"
        for key in _NULLABLE_OBJECT:
            value = payload.get(key)
            if value is not None and not isinstance(value, dict):
                return f"subscribe payload '{key}' must be an object or null, got {_kind(value)}"
        name = payload.get("operationName")
        if name is not None and not isinstance(name, str):
            return f"subscribe payload 'operationName' must be a string, got {_kind(name)}"
        return None
    return f"Unknown message type: {_short(kind)!r}"


class _SharingView(Protocol):
    """What the handlers need of our view (transport/graphql_view.py)."""

    shared: SharedSubscriptions
    fast_paths: bool
    admission: TurnAdmission
    budget: ProcessBudget
    connection_slots: int
    documents: ValidDocuments


_PING = b'{"type":"ping"}'
_KA = b'{"type":"ka"}'


def watch_expiry(
    socket: WebSocketAdapter, context: Context, end: Callable[[], Awaitable[None]]
) -> None:
    """End an authenticated connection with its token (on the connection's timer)."""
    ends_at = context.session_ends_at
    if ends_at is not None:
        connection = socket.connection
        connection.expire_at(ends_at, lambda: connection.run(end()))


class _Initialising(Protocol):
    """What `connection_init` needs of a handler (both protocols' have it)."""

    connection_init_received: bool
    connection_acknowledged: bool
    context: Context

    @property
    def view(self) -> Any: ...

    async def send_message(self, message: Any) -> None: ...

    @property
    def protocol_name(self) -> str: ...

    def live_operations(self) -> int: ...

    def disconnect(self, reason: str) -> None: ...


Refuse = Callable[[int, str, object], Awaitable[None]]


async def connection_init(handler: _Initialising, payload: object, refuse: Refuse) -> bool:
    """Both protocols' `connection_init`, once its timer is stopped: a null
    payload is {}; a second init, a payload that is not an object, a refused
    token and a malformed resume map are refused with `refuse(code, reason,
    error payload or None)` (each protocol its way); True once acknowledged."""
    if handler.connection_init_received:
        await refuse(TOO_MANY_INITS, "Too many initialisation requests", None)
        return False
    payload = {} if payload is None else payload
    if not isinstance(payload, dict):
        await refuse(BAD_REQUEST, "Invalid connection init payload", None)
        return False
    handler.connection_init_received = True
    handler.context.connection_params = payload
    try:
        ack = await handler.view.on_ws_connect(handler.context)
    except Rejected as exc:
        await refuse(FORBIDDEN, exc.close_reason, exc.payload)
        return False
    except ConnectionRejectionError as exc:
        await refuse(FORBIDDEN, "Forbidden", exc.payload)
        return False
    if (bad_resume := take_resume(handler.context, payload)) is not None:
        await refuse(BAD_REQUEST, bad_resume, None)
        return False
    if isinstance(ack, UnsetType) or ack is None:
        await handler.send_message({"type": "connection_ack"})
    else:
        await handler.send_message({"type": "connection_ack", "payload": ack})
    handler.connection_acknowledged = True
    register(handler)
    await close_if_revoked_meanwhile(handler)
    return True


def register(handler: _Initialising) -> None:
    """List the acknowledged connection among the node's connections (admin
    API); the view removes it when the socket ends (GraphQLView._release)."""
    context = handler.context
    if context.user_id is None or context.conn_id is None:
        raise RuntimeError("an acknowledged WebSocket without a user or connection id")
    context.services.registry.add(
        LocalConnection(
            id=context.conn_id,
            user_id=context.user_id,
            transport="websocket",
            protocol=handler.protocol_name,
            connected_at=datetime.now(UTC),
            live_subscriptions=handler.live_operations,
            end=handler.disconnect,
        )
    )


async def close_if_revoked_meanwhile(handler: _Initialising) -> None:
    """Close the socket if its token was revoked between the check in
    `on_ws_connect` and `register`.

    disconnectUser(revokeTokens:) stores the revocation, then has every
    node note it (resolvers/revocations.py) and close the user's registered
    connections. One that arrived while this socket was being acknowledged
    found nothing to close; checking again after registering closes that
    gap: a disconnect handled before `register` is seen here, one handled
    after finds the socket registered. (The window is a few awaits wide and
    cannot be held open from outside the process, so no test causes it.)"""
    context = handler.context
    if context.user_id is None:
        return
    try:
        await check_not_revoked(context.services, context.user_id, context.token_issued_at)
    except AuthError:
        handler.disconnect(f"{DISCONNECTED}: token revoked")
    except Unavailable:
        pass  # the check in on_ws_connect passed; a disconnect will find it registered


async def run_shared(
    view: object,
    context: Context,
    socket: WebSocketAdapter,
    members: dict[str, SharedSubscriber],
    operation_id: str,
    framing: Framing,
    query: str,
    variables: dict[str, Any] | None,
    operation_name: str | None,
) -> bool | None:
    """Run an operation in a shared execution, both protocols' way: None when
    it cannot share one or may not join (the unshared path answers it), True
    when it ran to its end, False when its connection refused a frame (gone,
    or cut off as a slow consumer: the connection closes it)."""
    shared = cast(_SharingView, view).shared
    plan = shared.plan(query, variables, operation_name, context.resume)
    if plan is None:
        return None

    def frame(payload: bytes, event_id: str | None) -> bytes:
        return framing.frame(payload)  # no event ids over WebSockets

    async with shared.join(plan, context, socket.connection, frame) as member:
        if member is None:
            return None
        members[operation_id] = member
        try:
            return await member.ended()
        finally:
            members.pop(operation_id, None)


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with strict frames, server pings and our refusals.

    Override points: `handle_message` validates every frame first (4400) and
    checks duplicate ids itself (4409, with a reason that stays short);
    `handle_connection_init` (`connection_init`, shared with the other
    protocol) closes a refused init with its code and reason, and after the
    ack puts the server's pings on the connection's one timer (`ping`; the
    pong is due within `pong_timeout`, `handle_pong`), as well as the close
    with 4403 `UNAUTHENTICATED: token expired` when the token expires;
    `send_message` drops sends to a socket already gone; `shutdown` also
    stops the connection's timer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = self.context.services.settings
        self.ping_interval = settings.ping_interval.total_seconds()
        self.pong_timeout = settings.pong_timeout.total_seconds()
        self.members: dict[str, SharedSubscriber] = {}
        self.budget = OperationBudget(self.view)

    async def cleanup_operation(self, operation_id: str) -> None:
        # Stop a shared subscription's writes now: its task is only
        # cancelled, and a direct write needs no task to run.
        if (member := self.members.get(operation_id)) is not None:
            member.end()
        await super().cleanup_operation(operation_id)

    async def handle_message(self, message: transport_ws.Message) -> None:
        frame: object = message
        problem = transport_ws_problem(frame)
        if problem is not None:
            await self.handle_invalid_message(problem)
            return
        if message["type"] == "subscribe" and self.connection_acknowledged:
            if message["id"] in self.operations:
                reason = f"Subscriber for {_short(message['id'])} already exists"
                await self.websocket.close(code=SUBSCRIBER_EXISTS, reason=reason)
                return
            limit = self.max_subscriptions_per_connection
            if limit is not None and len(self.operations) >= limit:
                refusal = {"id": message["id"], "type": "error"}
                with suppress(WebSocketDisconnected):
                    await self.websocket.send_json(
                        {**refusal, "payload": [too_many_operations(limit)]}
                    )
                return
            payload = message["payload"]
            taken = await self.budget.take(payload["query"], payload.get("operationName"))
            if taken is False:
                with suppress(WebSocketDisconnected):
                    await self.websocket.send_json(
                        {"id": message["id"], "type": "error", "payload": overloaded_payload()}
                    )
                return
            if taken:
                try:
                    await self.dispatch(message)
                finally:
                    operation = self.operations.get(message["id"])
                    self.budget.hold(None if operation is None else operation.task)
                return
        await self.dispatch(message)

    async def dispatch(self, message: transport_ws.Message) -> None:
        try:
            await super().handle_message(message)
        except Unavailable as exc:  # an outage, not a bug: one line, no traceback
            log.warning("graphql-transport-ws message handling failed: %s", exc)
            await self.websocket.close(code=INTERNAL_ERROR, reason=_outage_reason(exc))
        except Exception:  # a bug of ours: say so, never leave the socket half-dead
            log.exception("graphql-transport-ws message handling failed")
            await self.websocket.close(code=INTERNAL_ERROR, reason="Internal server error")

    async def handle_connection_init(self, message: transport_ws.ConnectionInitMessage) -> None:
        if self.connection_timed_out:
            return
        if self.connection_init_timeout_task:
            self.connection_init_timeout_task.cancel()
            # A cancelled task keeps its exception and traceback: let it go.
            self.connection_init_timeout_task = None

        async def refuse(code: int, reason: str, error: object) -> None:
            await self.websocket.close(code=code, reason=reason)

        if not await connection_init(self, message.get("payload"), refuse):
            return
        self.socket.connection.deadlines.after("ping", self.ping_interval, self.ping)
        watch_expiry(self.socket, self.context, self.token_expired)

    def ping(self) -> None:
        """The server's ping (on the connection's timer); its pong is due in
        `pong_timeout`, or the socket is closed with 4499."""
        connection = self.socket.connection
        if connection.write(_PING):
            connection.deadlines.after("pong", self.pong_timeout, self.pong_late)

    def pong_late(self) -> None:
        self.socket.connection.run(self.websocket.close(code=PONG_TIMEOUT, reason="Pong timeout"))

    async def token_expired(self) -> None:
        await self.websocket.close(code=FORBIDDEN, reason=EXPIRED_REASON)

    @property
    def protocol_name(self) -> str:
        return "graphql-transport-ws"

    def live_operations(self) -> int:
        return len(self.operations)

    def disconnect(self, reason: str) -> None:
        """Closed by an admin (Mutation.disconnectUser): 4403 with the reason."""
        self.socket.connection.run(self.websocket.close(code=FORBIDDEN, reason=reason))

    async def handle_pong(self, message: transport_ws.PongMessage) -> None:
        deadlines = self.socket.connection.deadlines
        if deadlines.pending("pong"):
            deadlines.clear("pong")
            deadlines.after("ping", self.ping_interval, self.ping)

    @property
    def socket(self) -> WebSocketAdapter:
        return cast(WebSocketAdapter, self.websocket)

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        """Join the shared execution when the subscription can share one."""
        try:
            ran = await run_shared(
                self.view,
                self.context,
                self.socket,
                self.members,
                operation.id,
                transport_ws_next(operation.id),
                operation.query,
                operation.variables,
                operation.operation_name,
            )
            if ran is None:  # not shareable, or not allowed: the unshared path says why
                await super().run_operation(operation)
                return
            if not ran:
                return
        except Exception:
            # Never an acknowledged subscriber left with nothing: Strawberry
            # drops what ends this task unseen, so say it here, to the log
            # and to the client, as its own run_operation does.
            log.exception("shared subscription %s failed", _short(operation.id))
            self.operations.pop(operation.id, None)
            with suppress(WebSocketDisconnected):
                error = {"id": operation.id, "type": "error", "payload": [_INTERNAL]}
                await operation.send_operation_message(cast("transport_ws.ErrorMessage", error))
            return
        with suppress(WebSocketDisconnected):
            await operation.send_operation_message({"id": operation.id, "type": "complete"})

    async def send_message(self, message: transport_ws.Message) -> None:
        with suppress(WebSocketDisconnected):
            await self.websocket.send_json(message)
            if message["type"] == "next":
                # An unshared operation's result (a shared one's are written
                # beneath, by transport/shared.py, and counted there).
                self.context.services.metrics.deliveries.inc()

    async def shutdown(self) -> None:
        self.socket.stop()
        await super().shutdown()


# --- legacy graphql-ws (subscriptions-transport-ws) --------------------------------


def _error_payload(message: str) -> dict[str, object]:
    return {"message": message, "extensions": {"code": "BAD_USER_INPUT"}}


def legacy_start_problem(frame: Mapping[str, object]) -> str | None:
    payload = frame.get("payload")
    if not isinstance(payload, dict):
        return f"start 'payload' must be an object, got {_kind(payload)}"
    if not isinstance(payload.get("query"), str):
        return f"start payload 'query' must be a string, got {_kind(payload.get('query'))}"
    variables = payload.get("variables")
    if variables is not None and not isinstance(variables, dict):
        return f"start payload 'variables' must be an object or null, got {_kind(variables)}"
    name = payload.get("operationName")
    if name is not None and not isinstance(name, str):
        return f"start payload 'operationName' must be a string, got {_kind(name)}"
    return None


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """subscriptions-transport-ws, as its reference server answers, and safe.

    Override points: `handle` reads frame by frame (a bad frame gets
    `connection_error` and the socket stays open) and runs the init timeout;
    `handle_message` validates before Strawberry's dispatch;
    `handle_connection_init` (`connection_init`, shared with the other
    protocol) says why in a `connection_error` before each refusal, and
    after the ack puts on the connection's timer the end with its token
    (`connection_error` UNAUTHENTICATED "token expired", then 4403) and a
    `ka` every `legacy_keepalive_interval`; `handle_start` refuses an
    operation over the limit with LIMIT_EXCEEDED; `handle_async_results`
    runs any operation through `schema.stream` (Strawberry's uses
    `schema.subscribe`, subscriptions only); `send_message` drops sends to a
    socket already gone.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection_init_received = False
        self.connection_timed_out = False
        self.init_timeout_task: asyncio.Task[None] | None = None
        self.members: dict[str, SharedSubscriber] = {}
        # `ka` on its own interval: at `ping_interval` (30 s) it came as late
        # as the clients' 30 s timeout, and they dropped the connection.
        # Strawberry's keep-alive task is not used.
        self.keepalive_interval = (
            self.context.services.settings.legacy_keepalive_interval.total_seconds()
        )
        self.budget = OperationBudget(self.view)

    async def cleanup_operation(self, operation_id: str) -> None:
        # As on graphql-transport-ws: no direct write after a stop.
        if (member := self.members.get(operation_id)) is not None:
            member.end()
        await super().cleanup_operation(operation_id)

    @property
    def socket(self) -> WebSocketAdapter:
        return cast("WebSocketAdapter", self.websocket)

    async def handle(self) -> None:
        delay = self.context.services.settings.init_timeout.total_seconds()
        self.init_timeout_task = asyncio.create_task(self.init_timeout(delay), name="ws-init")
        try:
            while not self.socket.closed:
                try:
                    frame = await self.socket.receive_json()
                except NonTextMessageReceived:
                    await self.connection_error("WebSocket message type must be text")
                    continue
                except NonJsonMessageReceived:
                    await self.connection_error("WebSocket message must be valid JSON")
                    continue
                await self.handle_frame(frame)
        except WebSocketDisconnected:
            pass
        finally:
            await stop_task(self.init_timeout_task)
            self.socket.stop()
            await self.cleanup()

    async def init_timeout(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.connection_init_received:
            return
        self.connection_timed_out = True
        reason = "Connection initialisation timeout"
        await self.connection_error(reason)
        await self.websocket.close(code=INIT_TIMEOUT, reason=reason)

    async def connection_error(self, message: str) -> None:
        await self.send_message({"type": "connection_error", "payload": _error_payload(message)})

    async def operation_error(self, op_id: object, message: str) -> None:
        frame: dict[str, object] = {"type": "error", "payload": _error_payload(message)}
        if isinstance(op_id, str):
            frame["id"] = op_id
        await self.send_json(frame)

    async def handle_frame(self, frame: object) -> None:
        if not isinstance(frame, dict):
            await self.connection_error(f"Message must be a JSON object, got {_kind(frame)}")
            return
        try:
            await self.handle_message(cast("legacy_ws.OperationMessage", frame))
        except Unavailable as exc:  # an outage, not a bug: one line, no traceback
            log.warning("graphql-ws message handling failed: %s", exc)
            await self.websocket.close(code=INTERNAL_ERROR, reason=_outage_reason(exc))
        except Exception:  # a bug of ours: say so, never leave the socket half-dead
            log.exception("graphql-ws message handling failed")
            await self.websocket.close(code=INTERNAL_ERROR, reason="Internal server error")

    async def handle_message(self, message: legacy_ws.OperationMessage) -> None:
        frame = cast("dict[str, object]", message)
        kind, op_id = frame.get("type"), frame.get("id")
        if kind == "connection_init":
            await self.handle_connection_init(cast("legacy_ws.ConnectionInitMessage", frame))
        elif kind == "connection_terminate":
            await self.websocket.close(code=1000, reason="")
        elif kind in ("start", "stop"):
            if not isinstance(op_id, str) or not op_id:
                await self.operation_error(op_id, f"{kind} message 'id' must be a non-empty string")
            elif kind == "stop":
                await self.handle_stop(cast("legacy_ws.StopMessage", frame))
            elif (problem := legacy_start_problem(frame)) is not None:
                await self.operation_error(op_id, problem)
            else:
                await self.handle_start(cast("legacy_ws.StartMessage", frame))
        else:
            await self.operation_error(op_id, "Invalid message type")

    async def handle_connection_init(self, message: legacy_ws.ConnectionInitMessage) -> None:
        if self.connection_timed_out:
            return
        if self.init_timeout_task is not None:
            self.init_timeout_task.cancel()
            self.init_timeout_task = None  # and its traceback with it

        async def refuse(code: int, reason: str, error: object) -> None:
            # This protocol says why in a connection_error before the close.
            payload = _error_payload(reason) if error is None else error
            await self.send_message(
                cast(
                    "legacy_ws.ConnectionErrorMessage",
                    {"type": "connection_error", "payload": payload},
                )
            )
            await self.websocket.close(code=code, reason=reason)

        if not await connection_init(self, message.get("payload"), refuse):
            return
        self.send_keep_alive()  # the first at once, as the reference server does
        watch_expiry(self.socket, self.context, self.token_expired)

    def send_keep_alive(self) -> None:
        """A `ka` now and every `legacy_keepalive_interval` (no answer to wait for)."""
        connection = self.socket.connection
        if connection.write(_KA):
            connection.deadlines.after("ping", self.keepalive_interval, self.send_keep_alive)

    async def token_expired(self) -> None:
        error = {"message": EXPIRED_MESSAGE, "extensions": {"code": EXPIRED_CODE}}
        await self.send_json({"type": "connection_error", "payload": error})
        await self.websocket.close(code=FORBIDDEN, reason=EXPIRED_REASON)

    @property
    def protocol_name(self) -> str:
        return "graphql-ws"

    def live_operations(self) -> int:
        return len(self.tasks)

    def disconnect(self, reason: str) -> None:
        """Closed by an admin (Mutation.disconnectUser): a connection_error
        saying why, then 4403 with the reason."""
        self.socket.connection.run(self._disconnected(reason))

    async def _disconnected(self, reason: str) -> None:
        error = {"message": reason, "extensions": {"code": "FORBIDDEN"}}
        await self.send_json({"type": "connection_error", "payload": error})
        await self.websocket.close(code=FORBIDDEN, reason=reason)

    async def handle_start(self, message: legacy_ws.StartMessage) -> None:
        limit = self.max_subscriptions_per_connection
        if (
            self.connection_acknowledged
            and limit is not None
            and message["id"] not in self.tasks
            and len(self.tasks) >= limit
        ):
            await self.send_json(
                {"type": "error", "id": message["id"], "payload": too_many_operations(limit)}
            )
            return
        if not self.connection_acknowledged:
            await super().handle_start(message)  # refused there
            return
        payload = message["payload"]
        taken = await self.budget.take(payload["query"], payload.get("operationName"))
        if taken is False:
            error = overloaded_payload()[0]
            await self.send_json({"type": "error", "id": message["id"], "payload": error})
            return
        try:
            await super().handle_start(message)
        finally:
            if taken:
                self.budget.hold(self.tasks.get(message["id"]))

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        try:
            if await self.run_shared(operation_id, query, operation_name, variables):
                await self.send_message({"type": "complete", "id": operation_id})
                return
            result_source = await self.schema.stream(
                query=query,
                variable_values=variables,
                operation_name=operation_name,
                context_value=self.context,
                root_value=self.root_value,
            )
            self.subscriptions[operation_id] = result_source
            is_first_result = True
            async for result in result_source:
                if is_first_result and isinstance(result, PreExecutionError):
                    if not result.errors:
                        raise RuntimeError("a pre-execution error without errors")
                    await self.send_json(
                        {"type": "error", "id": operation_id, "payload": result.errors[0].formatted}
                    )
                    return
                if not isinstance(result, ExecutionResult):  # @defer / @stream frames
                    error = GraphQLError("Incremental delivery is not supported over graphql-ws")
                    await self.send_json(
                        {"type": "error", "id": operation_id, "payload": error.formatted}
                    )
                    return
                await self.send_data_message(result, operation_id)
                # Counted as transport/shared.py counts a shared one's.
                self.context.services.metrics.deliveries.inc()
                is_first_result = False
            await self.send_message({"type": "complete", "id": operation_id})
        except asyncio.CancelledError:
            await self.send_message({"type": "complete", "id": operation_id})
        finally:
            self.subscriptions.pop(operation_id, None)
            self.tasks.pop(operation_id, None)

    async def run_shared(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> bool:
        """Run the operation in a shared execution if it can; True if it ran
        there to its end (False: not shareable or not allowed, run it alone)."""
        ran = await run_shared(
            self.view,
            self.context,
            self.socket,
            self.members,
            operation_id,
            legacy_ws_data(operation_id),
            query,
            variables,
            operation_name,
        )
        # Ended, gone or cut off: the complete that follows is dropped by
        # send_message if the socket is closed.
        return ran is not None

    async def send_json(self, frame: Mapping[str, object]) -> None:
        with suppress(WebSocketDisconnected):
            await self.websocket.send_json(frame)

    async def send_message(self, message: legacy_ws.OperationMessage) -> None:
        await self.send_json(message)
