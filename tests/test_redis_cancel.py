"""A task cancelled during a Redis command stays cancelled.

redis-py sends under `asyncio.wait_for`, which up to Python 3.11 returns the
result of a send that finished just before the caller was cancelled, and so
loses the cancellation (backends/redis/cancel_safe.py). Under load this left
a shared execution running for nobody after its last subscriber left, and
that subscriber silent (issue 12). The window is made certain here: the
cancellation is requested from inside the send, as it completes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from backends.redis.common import waiting_pool
from tests.conftest import require_service
from tests.live import TIMEOUT


class CancelledAsTheSendCompletes(Connection):
    """Cancels the task of `victim` (when set) just as its send completes,
    before the waiting caller resumes: the window `wait_for` loses."""

    victim: asyncio.Task[Any] | None = None

    async def _send_packed_command(self, command: Iterable[bytes]) -> None:
        await super()._send_packed_command(command)
        victim = type(self).victim
        if victim is not None:
            asyncio.get_running_loop().call_soon(victim.cancel)


async def test_a_cancellation_as_a_command_completes_is_not_lost() -> None:
    require_service("Redis", 6379)
    pool = waiting_pool(
        "redis://127.0.0.1:6379/0",
        max_connections=1,
        wait=TIMEOUT,
        # With a socket timeout redis-py sends under asyncio.wait_for.
        socket_timeout=TIMEOUT,
        connection_class=CancelledAsTheSendCompletes,
    )
    client = Redis.from_pool(pool)
    went_on = asyncio.Event()

    async def command() -> None:
        await client.ping()
        went_on.set()  # only if the cancellation was lost
        await asyncio.Event().wait()

    try:
        await client.ping()  # connected: the next send is the command's alone
        task = asyncio.create_task(command())
        CancelledAsTheSendCompletes.victim = task
        done, _ = await asyncio.wait([task], timeout=TIMEOUT)
        assert not went_on.is_set(), "the command returned although its task was cancelled"
        assert done and task.cancelled()
    finally:
        CancelledAsTheSendCompletes.victim = None
        await client.aclose()
