"""The server's liveness messages on a WebSocket connection: its one timer.

graphql-transport-ws: a ping every `interval`; when its pong is more than
`timeout` late, `late` runs (the handler closes with 4499). Legacy graphql-ws
(subscriptions-transport-ws): a `ka` every `interval`, with no answer to
wait for (`timeout` None), the first one at once after the ack as the
reference server does; its clients drop a connection that has had no `ka`
within their timeout (30 s by default). Timers rather than a task that sleeps:
there is one heartbeat per connection, and an idle connection should cost
as little as it can. Sends run as short tasks, since a send may wait for a
full socket buffer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        interval: float,
        timeout: float | None,
        ping: Callable[[], Awaitable[None]],
        late: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if (timeout is None) != (late is None):
            raise ValueError("a heartbeat that waits for pongs needs both timeout and late")
        self._interval = interval
        self._timeout = timeout
        self._ping = ping
        self._late = late
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting_pong = False
        self._running: set[asyncio.Task[None]] = set()

    def start(self, at_once: bool = False) -> None:
        """Ping every `interval`, the first one now if `at_once`."""
        if at_once:
            self._send_ping()
        else:
            self._schedule(self._interval, self._send_ping)

    def pong(self) -> None:
        if self._awaiting_pong:
            self._awaiting_pong = False
            self._schedule(self._interval, self._send_ping)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    def _schedule(self, delay: float, callback: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _send_ping(self) -> None:
        if self._timeout is None:  # a keep-alive: the next one is due anyway
            self._schedule(self._interval, self._send_ping)
        else:
            self._awaiting_pong = True
            self._schedule(self._timeout, self._pong_late)
        self._run(self._ping())

    def _pong_late(self) -> None:
        self._timer = None
        self._awaiting_pong = False
        if self._late is not None:
            self._run(self._late())

    def _run(self, step: Awaitable[None]) -> None:
        task = asyncio.ensure_future(step)
        self._running.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("heartbeat step failed", exc_info=task.exception())
