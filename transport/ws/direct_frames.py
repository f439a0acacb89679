"""Text frames written straight to the socket, for fan-out.

Through ASGI every frame costs a coroutine, a wait on the server's
`writable` event and websockets' framing, and a shared payload goes to
thousands of sockets per event. So on our uvicorn protocol class
(transport/ws/protocol.py), when no extension was negotiated (no
permessage-deflate), a shared payload's frame is built here instead: a
server's text frame is a header of two to ten bytes and the bytes, unmasked
(RFC 6455 section 5.2), written to the transport synchronously. With any
other server or protocol `DirectFrames.of` is None and frames go through
ASGI.

The transport's buffer is then the connection's outgoing buffer, bounded by
`max_send_buffer`: a write that finds more than that still unsent is refused
and the caller cuts the subscriber off as a slow consumer. Frames written
here and frames sent through ASGI reach the transport in call order; all the
frames of one operation take one of the two paths.
"""

from __future__ import annotations

import asyncio
import struct

from starlette.websockets import WebSocket

from .protocol import WebSocketProtocol

_TEXT_FIN = 0x81  # FIN bit and opcode 1 (text)
_SUFFIX = b"}"


def server_protocol(websocket: WebSocket) -> object | None:
    """The server's protocol object behind a WebSocket, found through the ASGI
    `receive` callable (uvicorn's is a bound method of it; middleware wraps
    `send`, not `receive`)."""
    return getattr(websocket._receive, "__self__", None)


def frame_header(length: int) -> bytes:
    if length < 126:
        return bytes((_TEXT_FIN, length))
    if length < 1 << 16:
        return struct.pack("!BBH", _TEXT_FIN, 126, length)
    return struct.pack("!BBQ", _TEXT_FIN, 127, length)


class DirectFrames:
    """Writes `prefix + payload + }` frames to one connection's transport."""

    def __init__(self, protocol: WebSocketProtocol, limit: int) -> None:
        self._protocol = protocol
        self.limit = limit

    @classmethod
    def of(cls, websocket: WebSocket, limit: int) -> DirectFrames | None:
        protocol = server_protocol(websocket)
        if not isinstance(protocol, WebSocketProtocol) or protocol.conn.extensions:
            return None
        return cls(protocol, limit)

    @property
    def transport(self) -> asyncio.Transport:
        return self._protocol.transport

    def unsent(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        return self.transport.get_write_buffer_size()

    def write(self, prefix: bytes, payload: bytes) -> bool:
        """Write one frame; False (and nothing written) when more than `limit`
        bytes are still unsent."""
        protocol = self._protocol
        transport = protocol.transport
        if protocol.close_sent or protocol.disconnected or transport.is_closing():
            # Ending: no frame may follow a close, and the receive loop is
            # about to release the subscriber.
            return True
        if transport.get_write_buffer_size() > self.limit:
            return False
        length = len(prefix) + len(payload) + len(_SUFFIX)
        transport.write(b"".join((frame_header(length), prefix, payload, _SUFFIX)))
        return True
