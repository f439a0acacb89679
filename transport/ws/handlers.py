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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import suppress
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
from backends.hub import SlowConsumer
from resolvers.errors import BadUserInput
from schema import Context
from schema.resume_map import parse_resume

from ..admission import TurnAdmission
from ..session_expiry import EXPIRED_CODE, EXPIRED_MESSAGE, SessionExpiry
from ..shared import Member, SharedSubscriptions
from .direct_frames import DirectFrames, server_protocol
from .heartbeat import Heartbeat
from .stalled_writers import StalledWriters

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


def session_expiry(context: Context, end: Callable[[], Awaitable[None]]) -> SessionExpiry | None:
    """The timer that ends an authenticated connection with its token."""
    if context.session_ends_at is None:
        return None
    return SessionExpiry(context.session_ends_at, end)


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
    """Strawberry's ASGI adapter, made safe to use from several tasks.

    One frame at a time (`receive_json`) so a handler can go on after a bad
    frame; binary frames are told apart by the ASGI message itself; `close`
    is idempotent and cuts the reason to 123 bytes; sending to a closed
    socket raises `WebSocketDisconnected` only. A send that cannot go out
    within `write_timeout` (the peer stopped reading and every buffer is
    full) drops the connection.
    """

    @property
    def closed(self) -> bool:
        return WebSocketState.DISCONNECTED in (self.ws.application_state, self.ws.client_state)

    async def receive_json(self) -> object:
        """The next frame, decoded.

        Raises WebSocketDisconnected, NonTextMessageReceived (a binary frame)
        or NonJsonMessageReceived (text that is not JSON).
        """
        if self.closed:
            raise WebSocketDisconnected
        # The ASGI receive itself: the connection waits here for its whole
        # life, and Starlette's WebSocket.receive would add a frame to every
        # idle connection for the state checks below.
        message = await self.ws._receive()
        if message["type"] == "websocket.disconnect":
            self.ws.client_state = WebSocketState.DISCONNECTED
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
        await self.send_text(orjson.dumps(message).decode())

    def __init__(self, view: Any, request: WebSocket, response: WebSocket) -> None:
        super().__init__(view, request, response)
        sharing = cast(_SharingView, view)
        # Shared payloads are written through this when the server allows it.
        self.direct = DirectFrames.of(request, sharing.max_send_buffer)
        self._sends_waiting = 0
        self._progress_at = 0.0
        self._unsent = 0
        self._unsent_since = 0.0
        sharing.stalled_writers.watch(self)

    def waiting_since(self, now: float) -> float | None:
        if self._sends_waiting:
            return self._progress_at
        if self.direct is None:
            return None
        # Direct writes never wait: the peer makes progress while the bytes
        # it has not taken shrink between two looks.
        unsent, self._unsent = self._unsent, self.direct.unsent()
        if not self._unsent or self._unsent < unsent:
            self._unsent_since = now
        return None if not self._unsent else self._unsent_since

    async def send_text(self, text: str) -> None:
        if self.closed:
            raise WebSocketDisconnected
        # No timer per send (StalledWriters looks at waiting_since()), and
        # the ASGI send itself rather than Starlette's WebSocket.send, whose
        # state checks a text frame does not need.
        try:
            await self._waited(self.ws._send({"type": "websocket.send", "text": text}))
        except OSError as exc:  # the peer is gone (uvicorn's ClientDisconnected)
            self.ws.application_state = WebSocketState.DISCONNECTED
            raise WebSocketDisconnected from exc

    async def _waited(self, sending: Awaitable[None]) -> None:
        """Await a send, counted as waiting for StalledWriters."""
        loop = asyncio.get_running_loop()
        if not self._sends_waiting:
            self._progress_at = loop.time()
        self._sends_waiting += 1
        try:
            await sending
        finally:
            self._sends_waiting -= 1
            if self._sends_waiting:
                self._progress_at = loop.time()

    def abandon(self) -> None:
        """Cut the connection without a closing handshake.

        A close frame cannot get past buffers the peer does not drain, and
        asyncio's `transport.close()` waits for them to drain: only an abort
        ends such a connection. ASGI has no message for it, so this reaches
        the server's transport through the protocol object behind the ASGI
        `receive` callable (uvicorn's; middleware wraps `send`, not `receive`).
        With another server the heartbeat and its keepalive are left to end it.
        """
        protocol = server_protocol(self.ws)
        abort = getattr(getattr(protocol, "transport", None), "abort", None)
        if callable(abort):  # asyncio's or uvloop's transport
            abort()

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        # A close waits for the peer to take what is buffered before it.
        with suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self._waited(self.ws.close(code=code, reason=close_reason(reason)))


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


async def forward(socket: WebSocketAdapter, member: Member) -> bool:
    """Send a shared subscription's frames until it ends (with a direct
    writer they were written as they came: this only waits for the end).

    False when the socket went away or the subscriber was cut off for not
    keeping up (the socket is then closed with SLOW_CONSUMER).
    """
    try:
        async for payload in member:
            await socket.send_text(member.frame(payload))
    except SlowConsumer as exc:
        await socket.close(SLOW_CONSUMER, f"SLOW_CONSUMER: {exc}")
        return False
    except WebSocketDisconnected:
        return False
    return True


class _SharingView(Protocol):
    """What the handlers need of our view (transport/graphql_view.py)."""

    shared: SharedSubscriptions
    stalled_writers: StalledWriters
    max_send_buffer: int
    admission: TurnAdmission


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with strict frames, server pings and our refusals.

    Override points: `handle_message` validates every frame first (4400) and
    checks duplicate ids itself (4409, with a reason that stays short);
    `handle_connection_init` takes a null payload as {} and closes a refused
    init with 4403 and the reason; `handle_pong` feeds the heartbeat that
    starts with the ack, as does the timer that closes the socket with 4403
    `UNAUTHENTICATED: token expired` when the token does; `send_message`
    drops sends to a socket already gone; `shutdown` also stops both timers.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = self.context.services.settings
        self.heartbeat = Heartbeat(
            settings.ping_interval.total_seconds(),
            settings.pong_timeout.total_seconds(),
            ping=lambda: self.send_message({"type": "ping"}),
            late=lambda: self.websocket.close(code=PONG_TIMEOUT, reason="Pong timeout"),
        )
        self.expiry: SessionExpiry | None = None
        self.members: dict[str, Member] = {}

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
        payload = message.get("payload")
        payload = {} if payload is None else payload
        if self.connection_init_received:
            reason = "Too many initialisation requests"
            await self.websocket.close(code=TOO_MANY_INITS, reason=reason)
            return
        self.connection_init_received = True
        self.context.connection_params = payload
        try:
            ack = await self.view.on_ws_connect(self.context)
        except Rejected as exc:
            await self.websocket.close(code=FORBIDDEN, reason=exc.close_reason)
            return
        except ConnectionRejectionError:
            await self.websocket.close(code=FORBIDDEN, reason="Forbidden")
            return
        if (bad_resume := take_resume(self.context, payload)) is not None:
            await self.websocket.close(code=BAD_REQUEST, reason=bad_resume)
            return
        if isinstance(ack, UnsetType) or ack is None:
            await self.send_message({"type": "connection_ack"})
        else:
            await self.send_message({"type": "connection_ack", "payload": ack})
        self.connection_acknowledged = True
        self.heartbeat.start()
        self.expiry = session_expiry(self.context, self.token_expired)

    async def token_expired(self) -> None:
        await self.websocket.close(code=FORBIDDEN, reason=EXPIRED_REASON)

    async def handle_pong(self, message: transport_ws.PongMessage) -> None:
        self.heartbeat.pong()

    @property
    def socket(self) -> WebSocketAdapter:
        return cast(WebSocketAdapter, self.websocket)

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        """Join the shared execution when the subscription can share one."""
        shared = cast(_SharingView, self.view).shared
        plan = shared.plan(
            operation.query, operation.variables, operation.operation_name, self.context.resume
        )
        if plan is None:
            await super().run_operation(operation)
            return
        prefix = b'{"id":' + orjson.dumps(operation.id) + b',"type":"next","payload":'
        try:
            async with shared.join(plan, self.context, prefix, self.socket.direct) as member:
                if member is None:  # not allowed: the unshared path says why
                    await super().run_operation(operation)
                    return
                self.members[operation.id] = member
                try:
                    if not await forward(self.socket, member):
                        return
                finally:
                    self.members.pop(operation.id, None)
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

    async def shutdown(self) -> None:
        await self.heartbeat.stop()
        if self.expiry is not None:
            await self.expiry.stop()
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
    `handle_connection_init` takes a null payload as {}, refuses a second
    init (4429) and closes a refused one with 4403, and after the ack starts
    the timer that ends the connection with its token (`connection_error`
    UNAUTHENTICATED "token expired", then 4403) and the heartbeat that sends
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
        self.expiry: SessionExpiry | None = None
        self.members: dict[str, Member] = {}
        # `ka` on its own interval: at `ping_interval` (30 s) it came as late
        # as the clients' 30 s timeout, and they dropped the connection.
        # Strawberry's keep-alive task is not used.
        self.heartbeat = Heartbeat(
            self.context.services.settings.legacy_keepalive_interval.total_seconds(),
            None,
            ping=lambda: self.send_message({"type": "ka"}),
        )

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
            await self.heartbeat.stop()
            if self.expiry is not None:
                await self.expiry.stop()
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
        if self.connection_init_received:
            await self.refuse(TOO_MANY_INITS, "Too many initialisation requests")
            return
        payload: object = message.get("payload")
        payload = {} if payload is None else payload
        if not isinstance(payload, dict):
            await self.refuse(BAD_REQUEST, "Invalid connection init payload")
            return
        self.connection_init_received = True
        self.context.connection_params = payload
        try:
            ack = await self.view.on_ws_connect(self.context)
        except Rejected as exc:
            await self.send_message({"type": "connection_error", "payload": exc.payload})
            await self.websocket.close(code=FORBIDDEN, reason=exc.close_reason)
            return
        except ConnectionRejectionError as exc:
            await self.send_message({"type": "connection_error", "payload": exc.payload})
            await self.websocket.close(code=FORBIDDEN, reason="Forbidden")
            return
        if (bad_resume := take_resume(self.context, payload)) is not None:
            await self.refuse(BAD_REQUEST, bad_resume)
            return
        if isinstance(ack, UnsetType) or ack is None:
            await self.send_message({"type": "connection_ack"})
        else:
            await self.send_message({"type": "connection_ack", "payload": ack})
        self.connection_acknowledged = True
        self.heartbeat.start(at_once=True)
        self.expiry = session_expiry(self.context, self.token_expired)

    async def token_expired(self) -> None:
        error = {"message": EXPIRED_MESSAGE, "extensions": {"code": EXPIRED_CODE}}
        await self.send_json({"type": "connection_error", "payload": error})
        await self.websocket.close(code=FORBIDDEN, reason=EXPIRED_REASON)

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
        await super().handle_start(message)

    async def refuse(self, code: int, reason: str) -> None:
        await self.connection_error(reason)
        await self.websocket.close(code=code, reason=reason)

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
        shared = cast(_SharingView, self.view).shared
        plan = shared.plan(query, variables, operation_name, self.context.resume)
        if plan is None:
            return False
        prefix = b'{"type":"data","id":' + orjson.dumps(operation_id) + b',"payload":'
        async with shared.join(plan, self.context, prefix, self.socket.direct) as member:
            if member is None:
                return False
            self.members[operation_id] = member
            try:
                # Ended, gone or cut off: the complete that follows is
                # dropped by send_message if the socket is closed.
                await forward(self.socket, member)
            finally:
                self.members.pop(operation_id, None)
        return True

    async def send_json(self, frame: Mapping[str, object]) -> None:
        with suppress(WebSocketDisconnected):
            await self.websocket.send_json(frame)

    async def send_message(self, message: legacy_ws.OperationMessage) -> None:
        await self.send_json(message)
