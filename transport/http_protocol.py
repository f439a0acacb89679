"""uvicorn's HTTP protocol with a header timeout and a cap on connections.

uvicorn cuts off a kept-alive connection that stays idle after a response
(`timeout_keep_alive`, our `idle_timeout`), and answers 503 to a request
once `limit_concurrency` connections or tasks are open. It has no timeout
for the headers themselves: a client that connects and sends nothing, or
half a request line, holds its socket forever, and enough of them exhaust
the server's file descriptors. Its 503 also comes only once a request's
headers are complete, and never for a WebSocket upgrade.

This subclass of uvicorn's httptools protocol (the one uvicorn picks when
httptools is installed, as `uvicorn[standard]` does) adds:
- `header_timeout`: a request's headers must be complete within it, counted
  from the connection or, on a kept-alive one, from the first byte of the
  next request; otherwise 408 and the connection is closed. Bodies have
  their own timeout (transport/request_body.py); WebSockets and SSE
  streams, their own liveness once their headers are in;
- `max_connections`: a connection made while that many are open (of every
  kind, WebSockets and SSE streams included) is answered 503 at once and
  closed, before it can hold anything.

Its settings come from the app's lifespan state (`LIMITS_KEY`), which
uvicorn hands every protocol it makes. It relies on uvicorn's internals
(`connections`, `transport`, `app_state` and the parser callbacks), as
transport/ws/protocol.py does, so `protocol_options` names these
classes only for the uvicorn they were written for; with any other the
server runs uvicorn's own protocols, without the header timeout (a warning
says so) and with `limit_concurrency` as the only cap.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

LIMITS_KEY = "forge_streaming.connection_limits"
SUPPORTED_UVICORN = "0.54."  # the minor version these internals were read from

HTTP_PROTOCOL = "transport.http_protocol:HttpProtocol"
WS_PROTOCOL = "transport.ws.protocol:WebSocketProtocol"
# uvicorn's own, as named in its settings: what runs with another uvicorn.
FALLBACK_HTTP = "auto"
FALLBACK_WS = "websockets-sansio"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout: float
    max_connections: int


def protocol_options(version: str = uvicorn.__version__) -> tuple[str, str]:
    """uvicorn's `http` and `ws` options: ours with the uvicorn they were
    written for, uvicorn's own otherwise."""
    if version.startswith(SUPPORTED_UVICORN):
        return HTTP_PROTOCOL, WS_PROTOCOL
    log.warning(
        "uvicorn %s is not the version this server was written for (%sx): "
        "running its own protocols, without the header timeout",
        version,
        SUPPORTED_UVICORN,
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
