"""At most so many requests start their work in one turn of the event loop.

A burst of a thousand requests that arrive together becomes, without this,
a thousand ready steps in the event loop's queue, each reading, decoding
and checking its document in one go (about a millisecond for one refused
over the token limit); a `/health` probe that arrives behind them waits for
all of them, however cheap each one is. `TurnAdmission` lets `per_turn` of
them start in a turn; the others wait, each on a future (no work, no ready
step), in the order they came, and `per_turn` more are let in at every
following turn. So each turn runs a bounded amount of request work and the
loop goes back to its sockets in between: a request that needs no
admission (`/health`, `/ready`) is answered within a turn or two, whatever
the backlog. It bounds when work starts, not how much runs at once: a
request that waits on a backend holds nothing here.

Below `per_turn` arrivals a turn nothing waits and it costs a counter.
"""

from __future__ import annotations

import asyncio
from collections import deque


class TurnAdmission:
    def __init__(self, per_turn: int) -> None:
        if per_turn < 1:
            raise ValueError("per_turn must be at least 1")
        self.per_turn = per_turn
        self._admitted = 0  # in the current turn
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._turn_ends = False  # _next_turn is scheduled

    @property
    def waiting(self) -> int:
        """Requests waiting for a later turn."""
        return sum(1 for waiter in self._waiting if not waiter.done())

    async def admit(self) -> None:
        """Return once this request may start its work: at once while the
        turn has room and nobody is waiting, else at a later turn."""
        loop = asyncio.get_running_loop()
        if self._admitted < self.per_turn and not self._waiting:
            self._admitted += 1
            self._end_turn_soon(loop)
            return
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiting.append(waiter)
        self._end_turn_soon(loop)
        # Cancelled while waiting (the client went, the server stops): the
        # future is cancelled with the task, and _next_turn skips it.
        await waiter

    def _end_turn_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._turn_ends:
            self._turn_ends = True
            # call_soon runs in the next turn, after the loop has polled
            # its sockets again.
            loop.call_soon(self._next_turn, loop)

    def _next_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        self._turn_ends = False
        self._admitted = 0
        while self._waiting and self._admitted < self.per_turn:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._admitted += 1
        if self._admitted:
            self._end_turn_soon(loop)
