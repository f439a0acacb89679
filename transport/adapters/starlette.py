"""Everything this server uses of Starlette's internals, in one place.

A WebSocket connection waits in `receive` for its whole life, and a frame is
sent per message: Starlette's `WebSocket.receive` and `send` add a frame and
state checks to each, in every one of thousands of connections. With the
Starlette these lines were read from (`SUPPORTED_STARLETTE`, pinned in
pyproject.toml) and `fast_paths` on, the handlers call the ASGI callables
behind them (`WebSocket._receive`, `_send`) and keep the socket's state
(`client_state`, `application_state`) themselves; otherwise they use the
public methods, which keep it (one log line at start says so).
"""

from __future__ import annotations

import logging

import starlette
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketState

log = logging.getLogger(__name__)

SUPPORTED_STARLETTE = "1.10."


def fast_path(version: str = starlette.__version__, enabled: bool = True) -> bool:
    """Whether the internals below may be used; says so once when not."""
    if not enabled:
        return False
    if version.startswith(SUPPORTED_STARLETTE):
        return True
    log.warning(
        "starlette %s is not the version this server was written for (%sx): "
        "WebSockets use its public methods",
        version,
        SUPPORTED_STARLETTE,
    )
    return False


class SocketIO:
    """Receive and send on one WebSocket, the fast way or the public way."""

    __slots__ = ("fast", "ws")

    def __init__(self, ws: WebSocket, fast: bool) -> None:
        self.ws = ws
        self.fast = fast

    @property
    def raw_receive(self) -> object:
        """The server's ASGI `receive` callable (for transport/adapters/uvicorn.py)."""
        return self.ws._receive

    async def receive(self) -> Message:
        if not self.fast:
            return await self.ws.receive()
        message = await self.ws._receive()
        if message["type"] == "websocket.disconnect":
            self.ws.client_state = WebSocketState.DISCONNECTED
        return message

    async def send_text(self, text: str) -> None:
        if self.fast:
            await self.ws._send({"type": "websocket.send", "text": text})
        else:
            await self.ws.send({"type": "websocket.send", "text": text})

    def mark_gone(self) -> None:
        """The peer is gone (a send failed): no more sends."""
        if self.fast:
            self.ws.application_state = WebSocketState.DISCONNECTED
