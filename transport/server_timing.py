"""`Server-Timing: app;dur=<ms>` on every HTTP response.

The time from the request's arrival at the app to the start of its response:
for a query or mutation, parsing, validation, execution and encoding, as the
server sees them (no network, no client). Browsers' developer tools show it;
bench/ reads it for the history latency inside the server.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import Scope

from .response_headers import ResponseHeaders


class ServerTiming(ResponseHeaders):
    def headers_for(self, scope: Scope) -> Callable[[], dict[str, str]]:
        started = time.perf_counter()
        return lambda: {"Server-Timing": f"app;dur={(time.perf_counter() - started) * 1000:.3f}"}
