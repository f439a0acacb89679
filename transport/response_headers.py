"""ASGI middleware that sets headers on every HTTP response of the app it wraps.

A subclass says which in `headers_for`: it is called as the request arrives and
returns what gives the headers as the response starts, so a header can carry
something known only then (the time taken). Other scopes (WebSocket,
lifespan) pass through untouched.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ResponseHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def headers_for(self, scope: Scope) -> Callable[[], dict[str, str]]:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        at_start = self.headers_for(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A copy: the app may reuse its message.
                message = {**message, "headers": list(message.get("headers", ()))}
                headers = MutableHeaders(scope=message)
                for name, value in at_start().items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
