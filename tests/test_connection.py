"""The one outbound connection per client (transport/connection.py), on a
clock the test moves: the token's expiry at exp + leeway, one timer for
every deadline, the byte budget and its one slow-consumer end, a write that
stalls, and frames held until a stream opens. Nothing here waits on the
wall clock; the end-to-end behaviour over the wire is in test_sessions.py,
test_ws_protocol.py, test_shared.py and test_sse.py.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

import pytest

from transport.auth import LEEWAY
from transport.connection import (
    AsgiOutlet,
    Connection,
    Deadlines,
    HeldOutlet,
    Outlet,
)

T0 = 1_000.0  # loop time at the start
WALL0 = 1_800_000_000.0  # wall-clock time at the start


class ManualClock:
    """`Timers` on a clock that moves only when told; counts armed timers."""

    def __init__(self) -> None:
        self.now = T0
        self.armed = 0
        self._order = itertools.count()
        self._queue: list[tuple[float, int, _Timer]] = []

    def time(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL0 + (self.now - T0)

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(callback, self)
        self.armed += 1
        heapq.heappush(self._queue, (when, next(self._order), timer))
        return timer

    def live_timers(self) -> int:
        return sum(1 for _, _, timer in self._queue if not timer.cancelled)

    def advance(self, seconds: float) -> None:
        """Move the clock, running every timer due on the way, in order."""
        end = self.now + seconds
        while self._queue and self._queue[0][0] <= end:
            when, _, timer = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            if not timer.cancelled:
                timer.callback()
        self.now = end


class _Timer:
    def __init__(self, callback: Callable[[], None], clock: ManualClock) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTransportOutlet:
    """An outlet whose peer takes bytes only when the test says so."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.buffered = 0
        self.taken = 0
        self.aborted = False

    def push(self, data: bytes) -> None:
        self.written.append(data)
        self.buffered += len(data)

    def unsent(self) -> int:
        return self.buffered

    def sent(self) -> int:
        return self.taken

    def take(self, n: int) -> None:
        n = min(n, self.buffered)
        self.buffered -= n
        self.taken += n

    async def writable(self) -> None:
        return None

    async def drain(self) -> None:
        return None

    def discard(self) -> None:
        return None

    def abort(self) -> bool:
        self.aborted = True
        return True


def make_connection(
    clock: ManualClock,
    outlet: Outlet | None = None,
    *,
    budget: int = 100,
    write_timeout: float = 2.0,
) -> tuple[Connection, list[str]]:
    overflows: list[str] = []

    async def on_overflow(reason: str) -> None:
        overflows.append(reason)

    connection = Connection(
        outlet if outlet is not None else FakeTransportOutlet(),
        budget=budget,
        write_timeout=write_timeout,
        deadlines=Deadlines(clock),
        on_overflow=on_overflow,
    )
    return connection, overflows


# --- token expiry -------------------------------------------------------------------------


async def test_a_session_ends_at_its_tokens_expiry_plus_the_leeway_not_before() -> None:
    clock = ManualClock()
    connection, _ = make_connection(clock)
    exp = WALL0 + 60
    ended: list[float] = []
    connection.expire_at(exp + LEEWAY.total_seconds(), lambda: ended.append(clock.wall()))
    clock.advance(60 + LEEWAY.total_seconds() - 0.01)
    assert ended == []
    clock.advance(0.02)
    assert ended == [pytest.approx(exp + LEEWAY.total_seconds(), abs=0.02)]
    clock.advance(3600)
    assert len(ended) == 1  # once


async def test_an_expired_token_ends_the_session_at_once() -> None:
    clock = ManualClock()
    connection, _ = make_connection(clock)
    ended: list[float] = []
    connection.expire_at(WALL0 - 10, lambda: ended.append(clock.now))
    clock.advance(0)
    assert ended == [T0]


async def test_a_fresh_token_keeps_its_session_when_another_expires() -> None:
    """Each connection has its own timer: one token's expiry ends only its
    own session (the end-to-end version waited out a real token)."""
    clock = ManualClock()
    short, _ = make_connection(clock)
    fresh, _ = make_connection(clock)
    ended: list[str] = []
    short.expire_at(WALL0 + 6, lambda: ended.append("short"))
    fresh.expire_at(WALL0 + 3600, lambda: ended.append("fresh"))
    clock.advance(10)
    assert ended == ["short"]
    assert fresh.write(b"still served")
    clock.advance(3600)
    assert ended == ["short", "fresh"]


async def test_a_stopped_connection_never_expires() -> None:
    clock = ManualClock()
    connection, _ = make_connection(clock)
    ended: list[str] = []
    connection.expire_at(WALL0 + 5, lambda: ended.append("expired"))
    connection.stop()
    clock.advance(60)
    assert ended == []
    assert not connection.write(b"late")


# --- one timer ----------------------------------------------------------------------------


async def test_every_deadline_shares_one_armed_timer() -> None:
    clock = ManualClock()
    deadlines = Deadlines(clock)
    fired: list[tuple[str, float]] = []

    def record(name: str) -> Callable[[], None]:
        return lambda: fired.append((name, clock.now))

    for name, delay in (("expiry", 30.0), ("ping", 10.0), ("pong", 12.0), ("stall", 0.5)):
        deadlines.after(name, delay, record(name))
    assert clock.live_timers() == 1
    clock.advance(40)
    assert fired == [
        ("stall", T0 + 0.5),
        ("ping", T0 + 10),
        ("pong", T0 + 12),
        ("expiry", T0 + 30),
    ]
    assert clock.live_timers() == 0


async def test_a_cleared_deadline_does_not_fire_and_a_moved_one_fires_once() -> None:
    clock = ManualClock()
    deadlines = Deadlines(clock)
    fired: list[str] = []
    deadlines.after("pong", 1, lambda: fired.append("pong"))
    deadlines.after("ping", 5, lambda: fired.append("ping"))
    deadlines.clear("pong")
    deadlines.after("ping", 2, lambda: fired.append("ping moved"))
    clock.advance(10)
    assert fired == ["ping moved"]


# --- the byte budget ----------------------------------------------------------------------


async def test_over_the_budget_the_connection_is_cut_off_once() -> None:
    clock = ManualClock()
    outlet = FakeTransportOutlet()
    connection, overflows = make_connection(clock, outlet, budget=100)
    assert connection.write(b"x" * 60)
    assert connection.write(b"x" * 60)  # 60 unsent: under the budget when it came
    assert not connection.write(b"x")  # 120 unsent: over it
    assert not connection.write(b"x")
    await asyncio.sleep(0)
    assert overflows == ["more than 100 bytes waiting to be sent"]
    assert connection.overflowed
    assert connection.closed.is_set()
    assert len(outlet.written) == 2


async def test_a_reader_that_keeps_up_is_never_cut_off() -> None:
    clock = ManualClock()
    outlet = FakeTransportOutlet()
    connection, overflows = make_connection(clock, outlet, budget=100)
    for _ in range(1000):
        assert connection.write(b"x" * 60)
        outlet.take(60)
    assert overflows == []


async def test_asgi_outlet_drops_what_waits_when_cut_off() -> None:
    """What the client still gets after a cut-off is a prefix of what it was sent."""
    gate = asyncio.Event()
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        await gate.wait()
        sent.append(data)

    clock = ManualClock()
    connection, overflows = make_connection(clock, AsgiOutlet(send), budget=100)
    frames = [bytes([65 + n]) * 40 for n in range(4)]
    assert connection.write(frames[0])
    await asyncio.sleep(0)  # the writer task takes it: in flight
    results = [connection.write(frame) for frame in frames[1:]]
    assert results == [True, True, False]
    gate.set()
    await connection.drain()
    assert sent == frames[:1]  # in flight when it was cut off; the rest dropped
    assert overflows


async def test_asgi_outlet_sends_in_order_and_coalesces_event_streams() -> None:
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    clock = ManualClock()
    connection, _ = make_connection(clock, AsgiOutlet(send, coalesce=True), budget=1 << 20)
    for n in range(5):
        assert connection.write(b"%d;" % n)
    await connection.drain()
    assert b"".join(sent) == b"0;1;2;3;4;"
    assert len(sent) < 5


# --- a stalled write ----------------------------------------------------------------------


async def test_a_write_that_makes_no_progress_for_write_timeout_is_aborted() -> None:
    clock = ManualClock()
    outlet = FakeTransportOutlet()
    connection, _ = make_connection(clock, outlet, write_timeout=2.0)
    connection.write(b"x" * 50)
    clock.advance(1.9)
    assert not outlet.aborted
    clock.advance(1.0)
    assert outlet.aborted
    assert not connection.write(b"more")


async def test_a_slow_reader_that_makes_progress_is_not_aborted() -> None:
    clock = ManualClock()
    outlet = FakeTransportOutlet()
    connection, _ = make_connection(clock, outlet, budget=1 << 20, write_timeout=2.0)
    for _ in range(20):
        connection.write(b"x" * 50)
        clock.advance(1.0)
        outlet.take(10)  # a little, every second
    assert not outlet.aborted


async def test_an_idle_connection_arms_no_stall_timer() -> None:
    clock = ManualClock()
    outlet = FakeTransportOutlet()
    connection, _ = make_connection(clock, outlet)
    connection.write(b"x")
    outlet.take(1)
    clock.advance(5)
    armed = clock.armed
    clock.advance(60)
    assert clock.armed == armed  # nothing unsent: nothing looks


# --- frames held until the stream opens ---------------------------------------------------


async def test_held_frames_go_out_first_when_the_stream_opens() -> None:
    clock = ManualClock()
    connection, _ = make_connection(clock, HeldOutlet(), budget=100)
    assert connection.write(b"early-1;")
    assert connection.write(b"early-2;")
    clock.advance(60)  # held bytes are not a stalled write
    outlet = FakeTransportOutlet()
    connection.attach(outlet)
    assert connection.write(b"live;")
    assert outlet.written == [b"early-1;", b"early-2;", b"live;"]
    assert not outlet.aborted
