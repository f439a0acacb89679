"""`Server-Timing: app;dur=<ms>` on every HTTP response.

The time from the request's arrival at the app to the start of its response:
for a query or mutation, parsing, validation, execution and encoding, as the
server sees them (no network, no client). Browsers' developer tools show it;
bench/ reads it for the history latency inside the server.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ServerTiming:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                duration = f"app;dur={(time.perf_counter() - started) * 1000:.3f}"
                headers = [*message.get("headers", ()), (b"server-timing", duration.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed)
