"""Dropping WebSocket connections whose peer stopped reading.

A connection that makes no progress sending for longer than `write_timeout`
(the peer reads nothing and every buffer between us is full) is ended. One
sweep per process looks at every connection, instead of a timer per send:
sends are the hot path of fan-out.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Protocol

log = logging.getLogger(__name__)


class Writer(Protocol):
    def waiting_since(self, now: float) -> float | None:
        """Loop time since which sending has made no progress, or None.

        `now` is the sweep's time: a writer that can only tell progress by
        comparing two looks uses it to remember when it last saw some."""
        ...

    def abandon(self) -> None:
        """Cut the connection at once."""
        ...


class StalledWriters:
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._writers: weakref.WeakSet[Writer] = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None

    def watch(self, writer: Writer) -> None:
        self._writers.add(writer)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._sweep(), name="stalled-writers")

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while self._writers:
            await asyncio.sleep(min(1.0, max(0.05, self._timeout / 4)))
            now = loop.time()
            for writer in list(self._writers):
                since = writer.waiting_since(now)
                if since is not None and now - since > self._timeout:
                    log.info("dropping a WebSocket whose peer stopped reading")
                    writer.abandon()
