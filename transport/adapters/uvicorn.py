"""Everything this server uses of uvicorn's internals, in one place.

uvicorn is pinned in pyproject.toml; `protocol_options` names the classes
below only for the uvicorn they were written for (`SUPPORTED_UVICORN`) and
only with `fast_paths` on. Otherwise the server runs uvicorn's own protocols
and every outbound byte goes through ASGI (transport/connection.py's
`AsgiOutlet`); one log line says so.

HTTP (`HttpProtocol`, uvicorn's httptools protocol) adds:
- `header_timeout`: a request's headers must be complete within it, counted
  from the connection or, on a kept-alive one, from the first byte of the
  next request; otherwise 408 and the connection is closed. Bodies have
  their own timeout (transport/request_body.py); WebSockets and SSE
  streams, their own liveness once their headers are in;
- `max_connections`: a connection made while that many are open (of every
  kind, WebSockets and SSE streams included) is answered 503 at once and
  closed, before it can hold anything;
- the request's cycle in its ASGI scope (`CYCLE_KEY`), so that an SSE
  stream can write its events straight to the transport
  (`event_stream_outlet`): a chunk of the chunked encoding per write, under
  the connection's byte budget, instead of an ASGI send per event.
Its settings come from the app's lifespan state (`LIMITS_KEY`), which
uvicorn hands every protocol it makes. uvicorn itself cuts off a kept-alive
connection idle after a response (`timeout_keep_alive`), and answers 503
once `limit_concurrency` connections or tasks are open, but only once a
request's headers are complete, and never for a WebSocket upgrade.

WebSockets (`WebSocketProtocol`, uvicorn's sans-I/O protocol) made lighter
per connection (an idle subscriber is mostly its connection, and there are
thousands): the receive queue and the `writable` event are a list and a
flag instead of asyncio's Queue and Event (about 3.5 kB a connection), and
the upgrade response is dropped once sent. And:
- a text message that is not UTF-8 closes the connection with 1007 (RFC 6455
  section 8.1), as uvicorn does, but without logging a traceback for what is
  only a client's mistake;
- once the server itself has closed the connection (a frame it cannot take,
  or no pong in time), a send from the app is told the client is gone
  (`ClientDisconnected`) instead of uvicorn's RuntimeError for an app that
  sends after its own close;
- its keepalive ping is driven by the connection's one timer
  (transport/connection.py) through `ping`/`keepalive_timeout`, not by
  uvicorn's own timers;
- when no extension was negotiated (no permessage-deflate), frames are
  written straight to the transport (`websocket_outlet`): a server's text
  frame is a header of two to ten bytes and the bytes, unmasked (RFC 6455
  section 5.2).
The protocol object behind a WebSocket is found through the ASGI `receive`
callable (uvicorn's is a bound method of it; middleware wraps `send`, not
`receive`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, cast

import orjson
import uvicorn
from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import CloseCode

log = logging.getLogger(__name__)

LIMITS_KEY = "forge_streaming.connection_limits"
CYCLE_KEY = "forge_streaming.cycle"
SUPPORTED_UVICORN = "0.54."  # the minor version these internals were read from

HTTP_PROTOCOL = "transport.adapters.uvicorn:HttpProtocol"
WS_PROTOCOL = "transport.adapters.uvicorn:WebSocketProtocol"
# uvicorn's own, as named in its settings: what runs with another uvicorn.
FALLBACK_HTTP = "auto"
FALLBACK_WS = "websockets-sansio"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout: float
    max_connections: int


def fast_path(version: str = uvicorn.__version__, enabled: bool = True) -> bool:
    """Whether the classes here may run: `fast_paths` on, and the uvicorn
    they were written for."""
    return enabled and version.startswith(SUPPORTED_UVICORN)


def protocol_options(version: str = uvicorn.__version__, enabled: bool = True) -> tuple[str, str]:
    """uvicorn's `http` and `ws` options: ours with the uvicorn they were
    written for (and `fast_paths` on), uvicorn's own otherwise."""
    if fast_path(version, enabled):
        return HTTP_PROTOCOL, WS_PROTOCOL
    if enabled:
        log.warning(
            "uvicorn %s is not the version this server was written for (%sx): "
            "running its own protocols and the public ASGI path, without the header timeout",
            version,
            SUPPORTED_UVICORN,
        )
    else:
        log.warning(
            "fast_paths is off: running uvicorn's own protocols and the public ASGI path, "
            "without the header timeout"
        )
    return FALLBACK_HTTP, FALLBACK_WS


def _response(status: int, phrase: str, code: str, message: str) -> bytes:
    body = orjson.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


_HEADERS_LATE = _response(
    408, "Request Timeout", "BAD_USER_INPUT", "The request headers did not arrive in time"
)
_TOO_MANY = _response(
    503, "Service Unavailable", "UNAVAILABLE", "Too many connections, try again later"
)


class HttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._headers_timer: asyncio.TimerHandle | None = None

    def _limits(self) -> ConnectionLimits | None:
        limits = self.app_state.get(LIMITS_KEY)
        return limits if isinstance(limits, ConnectionLimits) else None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self._limits()
        if limits is None:
            return
        if len(self.connections) > limits.max_connections:
            self.logger.warning("refused a connection: %d are open", limits.max_connections)
            transport.write(_TOO_MANY)
            transport.close()
            return
        self._expect_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._headers_timer is None:
            self._expect_headers()

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            # For event_stream_outlet: an SSE stream's direct writes.
            self.scope[CYCLE_KEY] = cycle  # type: ignore[literal-required]

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _expect_headers(self) -> None:
        limits = self._limits()
        if limits is not None:
            self._headers_timer = self.loop.call_later(limits.header_timeout, self._headers_late)

    def _stop_waiting(self) -> None:
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None

    def _headers_late(self) -> None:
        self._headers_timer = None
        transport = self.transport
        if transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            transport.write(_HEADERS_LATE)  # nothing else is being answered
        transport.close()


# --- WebSockets -----------------------------------------------------------------


class _Inbox:
    """What uvicorn uses of asyncio.Queue: put_nowait, get (one reader), empty."""

    __slots__ = ("_getter", "_items")

    def __init__(self) -> None:
        self._items: list[ASGIReceiveEvent] = []
        self._getter: asyncio.Future[None] | None = None

    def put_nowait(self, item: ASGIReceiveEvent) -> None:
        self._items.append(item)
        if self._getter is not None and not self._getter.done():
            self._getter.set_result(None)

    async def get(self) -> ASGIReceiveEvent:
        while not self._items:
            self._getter = asyncio.get_running_loop().create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items


class _Flag:
    """What uvicorn uses of asyncio.Event: set, clear, wait; it starts set."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = cast("asyncio.Queue[ASGIReceiveEvent]", _Inbox())
        self.writable = cast(asyncio.Event, _Flag())
        self.failed = False  # closed by the server, not by the app
        self.on_pong: Callable[[], None] | None = None

    def start_keepalive(self) -> None:
        """Not uvicorn's timers: the connection's one timer calls `ping`."""

    def ping(self) -> bool:
        """Send a keepalive ping frame; False when the connection is ending."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return False
        self.pending_ping_payload = struct.pack("!I", random.getrandbits(32))
        self.ping_sent_at = self.loop.time()
        self.conn.send_ping(self.pending_ping_payload)
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    def handle_pong(self, event: Any) -> None:
        waiting = self.pending_ping_payload is not None
        super().handle_pong(event)
        if waiting and self.pending_ping_payload is None and self.on_pong is not None:
            self.on_pong()

    def handle_parser_exception(self) -> None:
        self.failed = True
        super().handle_parser_exception()

    def keepalive_timeout(self) -> None:
        self.failed = True
        super().keepalive_timeout()

    async def send(self, message: ASGISendEvent) -> None:
        if self.failed and message["type"] == "websocket.send":
            raise ClientDisconnected
        await super().send(message)
        if message["type"] == "websocket.accept" and "response" in vars(self):
            del self.response  # read only until the handshake completes

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type != "text" or self.close_sent:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.logger.debug("closing a WebSocket that sent a text message not in UTF-8")
            self.conn.send_close(CloseCode.INVALID_DATA, "invalid UTF-8")
            self.handle_parser_exception()
            return
        self.queue.put_nowait({"type": "websocket.receive", "text": text})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()


def websocket_protocol(receive: object) -> WebSocketProtocol | None:
    """Our protocol object behind an ASGI `receive` callable, if it is ours."""
    protocol = getattr(receive, "__self__", None)
    return protocol if isinstance(protocol, WebSocketProtocol) else None


def abort_connection(receive: object) -> bool:
    """Cut the connection behind an ASGI `receive` at once (no closing
    handshake: it cannot pass buffers the peer does not drain, and asyncio's
    `close()` waits for them); False if the server is not ours."""
    protocol = getattr(receive, "__self__", None)
    transport = getattr(protocol, "transport", None)
    if isinstance(protocol, WebSocketProtocol | RequestResponseCycle) and transport is not None:
        transport.abort()
        return True
    return False


_TEXT_FIN = 0x81  # FIN bit and opcode 1 (text)


def text_frame_header(length: int) -> bytes:
    if length < 126:
        return bytes((_TEXT_FIN, length))
    if length < 1 << 16:
        return struct.pack("!BBH", _TEXT_FIN, 126, length)
    return struct.pack("!BBQ", _TEXT_FIN, 127, length)


def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class TransportOutlet:
    """Bytes written straight to the server's transport: synchronous, in
    call order with what uvicorn writes itself (close frames, the end of a
    response). The transport's buffer is the connection's outgoing buffer.
    This base writes the bytes as they are; subclasses frame them."""

    __slots__ = ("_pushed", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._pushed = 0

    def ending(self) -> bool:
        return self.transport.is_closing()

    def push(self, data: bytes) -> None:
        if not self.ending():
            self._pushed += len(data)
            self.transport.write(data)

    def unsent(self) -> int:
        return self.transport.get_write_buffer_size()

    def sent(self) -> int:
        return self._pushed - self.transport.get_write_buffer_size()

    async def writable(self) -> None:
        """Until uvicorn's flow control lets more be written."""

    async def drain(self) -> None:
        """Nothing waits here: the bytes are in the transport, in order."""

    def discard(self) -> None:
        """Nothing to drop: every byte is in the transport already."""

    def abort(self) -> bool:
        self.transport.abort()
        return True


class WebSocketFrames(TransportOutlet):
    """Text frames written to our WebSocket protocol's transport."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: WebSocketProtocol) -> None:
        super().__init__(protocol.transport)
        self._protocol = protocol

    def ending(self) -> bool:
        protocol = self._protocol
        return protocol.close_sent or protocol.disconnected or self.transport.is_closing()

    def push(self, data: bytes) -> None:
        protocol = self._protocol
        transport = self.transport
        if protocol.close_sent or protocol.disconnected or transport.is_closing():
            return  # no frame may follow a close; the receive side sees the end
        length = len(data)
        header = bytes((_TEXT_FIN, length)) if length < 126 else text_frame_header(length)
        frame = header + data
        self._pushed += len(frame)
        transport.write(frame)

    async def writable(self) -> None:
        if not self.ending():
            await self._protocol.writable.wait()


def websocket_outlet(receive: object) -> WebSocketFrames | None:
    """Direct text frames for the WebSocket behind `receive`, when it is our
    protocol and no extension (permessage-deflate) was negotiated."""
    protocol = websocket_protocol(receive)
    if protocol is None or protocol.conn.extensions:
        return None
    return WebSocketFrames(protocol)


class ResponseChunks(TransportOutlet):
    """An HTTP response body written to the transport, chunked when uvicorn
    chose the chunked encoding for it (as it does for a response without a
    length over HTTP/1.1)."""

    __slots__ = ("_chunked", "_cycle")

    def __init__(self, cycle: RequestResponseCycle) -> None:
        super().__init__(cycle.transport)
        self._cycle = cycle
        self._chunked = bool(cycle.chunked_encoding)

    def ending(self) -> bool:
        cycle = self._cycle
        return cycle.disconnected or cycle.response_complete or self.transport.is_closing()

    def push(self, data: bytes) -> None:
        if self.ending():
            return
        wrapped = http_chunk(data) if self._chunked else data
        self._pushed += len(wrapped)
        self.transport.write(wrapped)

    async def writable(self) -> None:
        if not self.ending():
            await self._cycle.flow.drain()


def event_stream_outlet(scope: MutableMapping[str, Any]) -> ResponseChunks | None:
    """Direct body chunks for the HTTP response of `scope`, once its headers
    were sent through ASGI, when our protocol serves it."""
    cycle = scope.get(CYCLE_KEY)
    if not isinstance(cycle, RequestResponseCycle) or not cycle.response_started:
        return None
    return ResponseChunks(cycle)
