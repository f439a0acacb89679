"""One outbound connection per client: the only way bytes go to a client.

Every frame a client gets (a WebSocket message, an SSE event) goes through
its `Connection`: `write(frame) -> bool` from code that must not wait (the
fan-out of a shared execution writes to thousands of connections per event),
`send(frame)` from code that may wait for room first (Strawberry's handlers,
an unshared subscription's results). False means the connection is closing
or closed: the caller stops.

One byte budget: more than `budget` bytes still unsent when a frame comes is
a slow consumer, cut off one way whatever the transport (the owner's
`on_overflow` says how: WebSocket close 4008 `SLOW_CONSUMER: ...`, SSE stream
ended); the frames not yet handed to the server are dropped, so what the
client still gets is a prefix of what it was sent.

One timer (`Deadlines`): every deadline of a connection (the server's ping
due, its pong late, the WebSocket-level ping and pong on the fast path, a
write stalled longer than `write_timeout`, the token's expiry, the SSE
keep-alive comment) is an entry, and one loop timer waits for the earliest.
A stalled write is found by looking at the bytes the peer took, every
quarter of `write_timeout` while some are unsent (never a timer per write):
no progress for `write_timeout` and the connection is aborted at once (a
close frame cannot pass buffers the peer does not drain).

uvicorn's own WebSocket keepalive ping is off where the fast path runs
(transport/adapters/uvicorn.py): this timer sends the WebSocket ping frame
and closes with 1011 "keepalive ping timeout" as uvicorn did. On the public
path (`fast_paths` false, or another uvicorn) ASGI cannot send a ping frame,
so uvicorn's keepalive stays on there and is the one WebSocket-level ping.

The clock is injectable (`Timers`: loop time and `call_at`; the wall clock
for token expiry), so liveness and expiry can be tested without waiting.

How the bytes leave is an `Outlet`: `AsgiOutlet` (ASGI `websocket.send` or
`http.response.body` from one writer task) here, the direct writes to the
server's transport in transport/adapters/uvicorn.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)

# Bytes an awaited `send` lets pile up before it waits for the peer.
LOW_WATER = 64 * 1024
# Bytes of SSE events coalesced into one ASGI body chunk.
_MAX_CHUNK = 64 * 1024
# Timers that fire this early are on time (the loop's clock resolution).
_EARLY = 0.001


class Handle(Protocol):
    def cancel(self) -> None: ...


class Timers(Protocol):
    """The clock and timer a connection's deadlines run on."""

    def time(self) -> float:
        """Now, in the timer's (monotonic) seconds."""
        ...

    def wall(self) -> float:
        """Now, in seconds since the epoch (token expiry is wall-clock)."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Handle: ...


class LoopTimers:
    """The running loop's clock and timers, and the system's wall clock."""

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop if loop is not None else asyncio.get_running_loop()

    def time(self) -> float:
        return self._loop.time()

    def wall(self) -> float:
        return time.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Handle:
        return self._loop.call_at(when, callback)


class Deadlines:
    """A connection's one timer: named actions due at times, the earliest armed.

    An action runs once; setting a name again moves its deadline."""

    __slots__ = ("_armed_at", "_due", "_handle", "_stopped", "timers")

    def __init__(self, timers: Timers) -> None:
        self.timers = timers
        self._due: dict[str, tuple[float, Callable[[], None]]] = {}
        self._handle: Handle | None = None
        self._armed_at = math.inf
        self._stopped = False

    def now(self) -> float:
        return self.timers.time()

    def set(self, name: str, when: float, action: Callable[[], None]) -> None:
        if self._stopped:
            return
        self._due[name] = (when, action)
        if when < self._armed_at:
            self._arm(when)

    def after(self, name: str, delay: float, action: Callable[[], None]) -> None:
        self.set(name, self.now() + delay, action)

    def clear(self, name: str) -> None:
        # The armed timer stays: firing with nothing due only re-arms it.
        self._due.pop(name, None)

    def pending(self, name: str) -> bool:
        return name in self._due

    def stop(self) -> None:
        self._stopped = True
        self._due.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_at = math.inf

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = when
        self._handle = self.timers.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        now = self.now() + _EARLY
        due = [(name, action) for name, (when, action) in self._due.items() if when <= now]
        for name, _ in due:
            del self._due[name]
        for _, action in due:
            if self._stopped:
                return
            try:
                action()
            except Exception:
                log.exception("a connection deadline failed")
        if self._due and not self._stopped:
            earliest = min(when for when, _ in self._due.values())
            if earliest < self._armed_at:
                self._arm(earliest)


class Outlet(Protocol):
    """How a connection's bytes leave."""

    def push(self, data: bytes) -> None:
        """Hand `data` on, never waiting."""
        ...

    def unsent(self) -> int:
        """Bytes pushed that the peer has not taken yet (as far as we can see)."""
        ...

    def sent(self) -> int:
        """Bytes the peer took so far: progress is this growing."""
        ...

    async def writable(self) -> None:
        """Until more may be pushed without piling up (or the outlet is dead)."""
        ...

    async def drain(self) -> None:
        """Until everything pushed is with the server (or the outlet is dead)."""
        ...

    def discard(self) -> None:
        """Drop what was pushed and not yet handed to the server."""
        ...

    def abort(self) -> bool:
        """Cut the connection at once; False if this outlet cannot."""
        ...


class AsgiOutlet:
    """Frames sent through ASGI, in order, by one writer task while any wait.

    `send` is one ASGI send of one frame (a WebSocket message) or of a chunk
    of several (`coalesce`: SSE events are a byte stream). `abort` cuts the
    connection when the server allows it (transport/adapters/uvicorn.py)."""

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        *,
        coalesce: bool = False,
        abort: Callable[[], bool] | None = None,
    ) -> None:
        self._send = send
        self._coalesce = coalesce
        self._abort = abort
        self._pending: deque[bytes] = deque()
        self._queued = 0  # pending and in flight
        self._sent = 0
        self._task: asyncio.Task[None] | None = None
        self._room: asyncio.Event | None = None
        self._empty: asyncio.Event | None = None
        self.failed = False

    def push(self, data: bytes) -> None:
        if self.failed:
            return
        self._pending.append(data)
        self._queued += len(data)
        if self._task is None:
            self._task = asyncio.ensure_future(self._write())

    def unsent(self) -> int:
        return self._queued

    def sent(self) -> int:
        return self._sent

    async def _write(self) -> None:
        pending = self._pending
        try:
            while pending:
                if self._coalesce and len(pending) > 1:
                    chunk = bytearray()
                    while pending and len(chunk) < _MAX_CHUNK:
                        chunk += pending.popleft()
                    data = bytes(chunk)
                else:
                    data = pending.popleft()
                await self._send(data)
                self._queued -= len(data)
                self._sent += len(data)
                if self._room is not None and self._queued <= LOW_WATER:
                    self._room.set()
        except asyncio.CancelledError:
            self._fail()
            raise
        except Exception:  # the peer is gone: the receive side sees it
            self._fail()
        finally:
            self._task = None
            self._wake()

    def _fail(self) -> None:
        self.failed = True
        self._pending.clear()
        self._queued = 0

    def _wake(self) -> None:
        for event in (self._room, self._empty):
            if event is not None:
                event.set()

    async def writable(self) -> None:
        while self._queued > LOW_WATER and not self.failed and self._task is not None:
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            await self._room.wait()

    async def drain(self) -> None:
        while self._task is not None:
            if self._empty is None:
                self._empty = asyncio.Event()
            self._empty.clear()
            await self._empty.wait()

    def discard(self) -> None:
        dropped = sum(len(data) for data in self._pending)
        self._pending.clear()
        self._queued -= dropped

    def abort(self) -> bool:
        self._fail()
        task = self._task
        if task is not None:
            task.cancel()
        return self._abort() if self._abort is not None else False


class HeldOutlet:
    """Frames held until the client's stream opens (an SSE reservation runs
    operations before it): `Connection.attach` hands them on."""

    def __init__(self) -> None:
        self.held: list[bytes] = []
        self._size = 0

    def push(self, data: bytes) -> None:
        self.held.append(data)
        self._size += len(data)

    def unsent(self) -> int:
        return self._size

    def sent(self) -> int:
        return 0

    async def writable(self) -> None:
        """Never waits: the budget bounds what is held."""

    async def drain(self) -> None:
        """Nothing is being sent."""

    def discard(self) -> None:
        self.held.clear()
        self._size = 0

    def abort(self) -> bool:
        return False


class Connection:
    """One client's outbound side: writes under one byte budget, watched by
    one timer (`deadlines`, shared with the owner's pings and expiry).

    `on_overflow(reason)` ends the connection the transport's way when the
    budget is exceeded; `on_stalled()` when a write makes no progress for
    `write_timeout` and the outlet cannot abort the connection itself.
    `closed` is set once the connection takes no more frames, for whatever
    reason (overflow, stall, `close()`)."""

    def __init__(
        self,
        outlet: Outlet,
        *,
        budget: int,
        write_timeout: float,
        deadlines: Deadlines,
        on_overflow: Callable[[str], Awaitable[None]],
        on_stalled: Callable[[], Awaitable[None]] | None = None,
        label: str = "connection",
    ) -> None:
        self.outlet = outlet
        self.budget = budget
        self.write_timeout = write_timeout
        self.deadlines = deadlines
        self._on_overflow = on_overflow
        self._on_stalled = on_stalled
        self._label = label
        self._look_every = min(1.0, max(0.05, write_timeout / 4))
        self._watching = isinstance(outlet, HeldOutlet)  # nothing to watch yet
        self._seen_sent = 0
        self._progress_at = 0.0
        self._closed: asyncio.Event | None = None
        self.open = True
        self.overflowed = False
        self._tasks: set[asyncio.Task[None]] = set()

    # --- writing ----------------------------------------------------------------

    def write(self, frame: bytes) -> bool:
        """Hand one frame on; False (nothing written) when the connection is
        closing or closed, or is cut off now for being over its budget."""
        if not self.open:
            return False
        outlet = self.outlet
        if outlet.unsent() > self.budget:
            self.cut_off(f"more than {self.budget} bytes waiting to be sent")
            return False
        outlet.push(frame)
        # Watched only while bytes wait: most writes go to the kernel at once.
        if not self._watching and outlet.unsent():
            self._watch()
        return True

    async def send(self, frame: bytes) -> bool:
        """`write`, after waiting for the peer to take what piles up."""
        if self.open and self.outlet.unsent() > LOW_WATER:
            await self.outlet.writable()
        return self.write(frame)

    async def drain(self) -> None:
        """Until what was written is with the server (a close goes after it)."""
        await self.outlet.drain()

    def attach(self, outlet: Outlet) -> None:
        """The client's stream is open: what was held goes out through `outlet`."""
        held = self.outlet
        self.outlet = outlet
        if isinstance(held, HeldOutlet):
            for data in held.held:
                outlet.push(data)
            held.discard()
        self._watching = False
        if outlet.unsent():
            self._watch()

    # --- ending -----------------------------------------------------------------

    @property
    def closed(self) -> asyncio.Event:
        if self._closed is None:
            self._closed = asyncio.Event()
            if not self.open:
                self._closed.set()
        return self._closed

    def close(self) -> None:
        """Take no more frames (those written still go out, watched)."""
        self._stop_taking()

    def stop(self) -> None:
        """The connection is over: no more frames, and its timer stops."""
        self._stop_taking()
        self.deadlines.stop()

    def cut_off(self, reason: str) -> None:
        """The slow-consumer end: drop what waits, end the transport's way."""
        if not self.open:
            return
        self.overflowed = True
        log.info("cutting off a slow %s: %s", self._label, reason)
        self.outlet.discard()
        # The transport's end (a close frame) is a write of its own: it gets
        # `write_timeout` to go out before the connection is aborted.
        self._progress_at = self.deadlines.now()
        self._stop_taking()
        self._spawn(self._on_overflow(reason))

    def abandon(self) -> None:
        """Cut the connection at once (its peer stopped reading)."""
        log.info("dropping a %s whose peer stopped reading", self._label)
        was_open = self.open
        self._stop_taking()
        if not self.outlet.abort() and was_open and self._on_stalled is not None:
            self._spawn(self._on_stalled())

    def _stop_taking(self) -> None:
        self.open = False
        if self._closed is not None:
            self._closed.set()

    def _spawn(self, step: Awaitable[None]) -> None:
        task = asyncio.ensure_future(step)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ending a %s failed", self._label, exc_info=task.exception())

    def run(self, step: Awaitable[None]) -> None:
        """Run an owner's step (a close, say) as a short task, failures logged."""
        self._spawn(step)

    # --- liveness ---------------------------------------------------------------

    def expire_at(self, ends_at: float, action: Callable[[], None]) -> None:
        """Run `action` at wall-clock time `ends_at` (the token's expiry)."""
        deadlines = self.deadlines
        delay = max(ends_at - deadlines.timers.wall(), 0.0)
        deadlines.after("expiry", delay, action)

    def _watch(self) -> None:
        """Look for progress while bytes are unsent (a write that stalls)."""
        self._watching = True
        self._seen_sent = self.outlet.sent()
        self._progress_at = self.deadlines.now()
        self.deadlines.after("stall", self._look_every, self._look)

    def _look(self) -> None:
        outlet = self.outlet
        if not outlet.unsent():
            self._watching = isinstance(outlet, HeldOutlet)  # nothing to watch yet
            return
        now = self.deadlines.now()
        sent = outlet.sent()
        if sent != self._seen_sent:
            self._seen_sent = sent
            self._progress_at = now
        elif now - self._progress_at >= self.write_timeout:
            self._watching = isinstance(outlet, HeldOutlet)  # nothing to watch yet
            self.abandon()
            return
        self.deadlines.set("stall", now + self._look_every, self._look)
