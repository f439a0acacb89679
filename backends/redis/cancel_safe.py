"""Redis connections that never lose a cancellation.

redis-py sends a command under `asyncio.wait_for(send, socket_timeout)`.
Up to Python 3.11, `wait_for` runs the send as a task of its own, and when
the caller is cancelled after that task finished but before the caller
resumed, it returns the send's result instead of raising: the cancellation
is gone, and the caller goes on as if nobody had asked it to stop (fixed in
3.12, where `wait_for` is built on `asyncio.timeout`).

Under load that window is wide. A shared execution ended by its last
subscriber (transport/shared.py) was cancelled while it asked Redis for the
room's position; the cancellation was lost, the execution went on reading
its room for nobody, and the subscriber, waiting for it to end, was never
answered: acknowledged, subscribed, and silent.

Here a send that returns while a cancellation was requested during it
raises `CancelledError` after all: `Task.cancelling()` counts the requests
not yet withdrawn (`uncancel`), so one that grew across a send that
returned normally was swallowed.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from typing import Any

from redis.asyncio.connection import AbstractConnection

# `wait_for` keeps a cancellation from 3.12 on: nothing to repair there.
NEEDED: bool = sys.version_info < (3, 12)


class _CancelSafeSend(AbstractConnection):
    """Re-raises a cancellation that redis-py's send swallowed."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        task = asyncio.current_task()
        requested = task.cancelling() if task is not None else 0
        await super().send_packed_command(command, check_health)
        if task is not None and task.cancelling() > requested:
            raise asyncio.CancelledError


@functools.cache
def cancel_safe(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """`connection_class` (plain, TLS or Unix socket) whose sends keep a
    cancellation; the class itself where `asyncio.wait_for` already does."""
    if not NEEDED or issubclass(connection_class, _CancelSafeSend):
        return connection_class
    name = f"CancelSafe{connection_class.__name__}"
    return type(name, (_CancelSafeSend, connection_class), {})
