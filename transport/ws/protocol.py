"""uvicorn's sans-I/O WebSocket protocol, made lighter per connection.

server.py names this class as uvicorn's `ws` protocol (an import string is
uvicorn's way to bring one's own). An idle subscriber is mostly its
connection, and there are thousands, so this changes what each one holds,
not what it does:

- the receive queue and the `writable` event: asyncio.Queue holds three
  deques and an Event, and an Event one more deque, 760 bytes each (about
  3.5 kB a connection) for a queue that seldom holds more than one message.
  Here a list, and waiters made only while someone waits;
- the upgrade response is dropped once sent (its header objects); the ASGI
  scope keeps the request headers the app reads.

And two things it does differently:
- a text message that is not UTF-8 closes the connection with 1007 (RFC 6455
  section 8.1), as uvicorn does, but without logging a traceback for what is
  only a client's mistake;
- once the server itself has closed the connection (a frame it cannot take:
  too large, not UTF-8; or no pong in time), a send from the app is told the
  client is gone (`ClientDisconnected`, as after a disconnect) instead of
  uvicorn's RuntimeError for an app that sends after its own close: the app
  did not close, and learns it only from the disconnect it has not read yet.

It relies on uvicorn's attributes (`queue`, `writable`, `response`, `frames`,
`read_paused`), so uvicorn is pinned in pyproject.toml and server.py names
this class only for that version (transport/http_protocol.py).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import CloseCode


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
