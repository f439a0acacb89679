"""A streaming session ends when the token that opened it expires.

HTTP checks the token on every request; a WebSocket or an event stream is
checked once, when it opens, so without this it would keep the user's rights
for as long as it stays open. One loop timer per session (no task while it
waits: 10,000 idle subscribers must stay cheap), fired when the server would
start refusing the token over HTTP: `exp`, plus the clock leeway that
verification allows (transport/auth.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

__all__ = ["EXPIRED_CODE", "EXPIRED_MESSAGE", "SessionExpiry"]

EXPIRED_CODE = "UNAUTHENTICATED"
EXPIRED_MESSAGE = "token expired"


class SessionExpiry:
    """Runs `end` once at wall-clock time `ends_at` (seconds since the epoch),
    unless `stop` came first."""

    def __init__(self, ends_at: float, end: Callable[[], Awaitable[None]]) -> None:
        self._end = end
        self._task: asyncio.Task[None] | None = None
        delay = max(ends_at - time.time(), 0.0)
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            delay, self._fire
        )

    def _fire(self) -> None:
        self._timer = None
        self._task = asyncio.ensure_future(self._end())
        self._task.add_done_callback(_report)

    async def stop(self) -> None:
        """Cancel the timer; an `end` already running is left to finish (it
        is what closes the session, and may be what called this)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("ending an expired session failed", exc_info=task.exception())
