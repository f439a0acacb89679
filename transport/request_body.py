"""Every HTTP request's bytes bounded, and read in bounded time, before the app.

An ASGI middleware around the whole app: a request whose query string, or
whose body by its `Content-Length`, is over `max_bytes` is answered 413
PAYLOAD_TOO_LARGE without reading anything; a body without a length
(chunked) is counted as it comes and refused the moment it passes the
limit. A body that does not arrive within `timeout` is answered 408. Both
answers close the connection. Before a 413 the body the client is sending
anyway is read and dropped, up to a bound (`_DRAIN_BYTES`, `_DRAIN_SECONDS`):
a socket closed with bytes unread is reset, and the client would lose the
answer with it.

The app gets the body in one `http.request` message, then the server's own
`receive` (an SSE stream waits there for the client to go).

A request that carries a document (a body, or a query string) is read only
once `admission` lets it start (transport/admission.py): in a burst the
others wait their turn, their bytes in uvicorn's bounded buffer and the
socket's (uvicorn stops reading a body nobody consumes), not as work queued
ahead of every other request. A refusal decided from the headers alone
does not wait.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from transport.admission import TurnAdmission


async def _answer(send: Send, status: int, code: str, message: str) -> None:
    body = orjson.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _declared_length(scope: Scope) -> int | None:
    """The Content-Length, -1 for a body of unknown length, None for none."""
    length: int | None = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1  # the server has refused such a request already
        elif name == b"transfer-encoding":
            return -1
    return length


_DRAIN_BYTES = 1 << 20
_DRAIN_SECONDS = 2.0


class _TooLarge(Exception):
    pass


class BoundedBody:
    def __init__(
        self, app: ASGIApp, *, max_bytes: int, timeout: float, admission: TurnAdmission
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _declared_length(scope)
        if len(scope.get("query_string", b"")) > self.max_bytes or (
            length is not None and length > self.max_bytes
        ):
            if length is not None and length <= _DRAIN_BYTES:
                await _drop(receive, _DRAIN_BYTES)
            await self._too_large(send)
            return
        if not length:  # no body: nothing to read first
            if scope.get("query_string"):  # a GET may carry a document
                await self.admission.admit()
            await self.app(scope, receive, send)
            return
        await self.admission.admit()
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._read(receive)
        except _TooLarge:
            await _drop(receive, _DRAIN_BYTES)
            await self._too_large(send)
            return
        except TimeoutError:
            await _answer(send, 408, "BAD_USER_INPUT", "The request body did not arrive in time")
            return
        if body is None:
            return  # the client went away
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, send: Send) -> None:
        message = f"The request is larger than {self.max_bytes} bytes"
        await _answer(send, 413, "PAYLOAD_TOO_LARGE", message)


async def _drop(receive: Receive, limit: int) -> None:
    """Read and forget up to `limit` bytes of body, for a while at most."""
    dropped = 0
    with suppress(TimeoutError):
        async with asyncio.timeout(_DRAIN_SECONDS):
            while dropped <= limit:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                dropped += len(message.get("body", b""))


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
