"""The call store's contract, over every backend with the presence role
(memory, Redis, NATS): its compare-and-set documents keep a call within
`max_participants` under concurrent joins, a released session leaves after
its grace, and a session's signals wait in order until acked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backends.calls import Call, CallParticipant, CallSignal, CallStore
from backends.errors import LimitReached, Missing
from backends.factory import backend_module
from backends.records import utcnow
from tests.conftest import require_service

from .conftest import BACKENDS, backends_with, eventually


@pytest.fixture(params=backends_with("presence"))
async def calls(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CallStore]:
    spec = BACKENDS[request.param]
    if spec.service is not None:
        require_service(*spec.service)
    url = spec.url(tmp_path)
    opened = await backend_module(url).open_stores(url, ["presence"], retention=None)
    assert opened.calls is not None
    yield opened.calls
    await opened.presence.close()
    await opened.close()
    if spec.cleanup is not None:
        await spec.cleanup(url)


def a_call(call_id: str = "c1", room: str = "r1") -> Call:
    return Call(id=call_id, room_id=room, started_by="alice", started_at=utcnow())


def session(user: str, sid: str, *, conn: str | None = "conn", ttl: float = 30) -> CallParticipant:
    return CallParticipant(user, sid, utcnow(), conn, time.time() + ttl)


async def test_a_call_is_live_in_its_room_until_it_ends(calls: CallStore) -> None:
    await calls.start(a_call())
    assert [c.id for c in await calls.live_in_room("r1")] == ["c1"]
    await calls.join("c1", session("alice", "s1"), max_participants=3, resume=False)
    got = await calls.get("c1")
    assert got is not None and [p.session_id for p in got.participants] == ["s1"]
    ended = await calls.end("c1")
    assert ended is not None and ended.ended_at is not None
    assert await calls.end("c1") is None  # once
    assert await calls.live_in_room("r1") == []
    with pytest.raises(Missing):
        await calls.join("c1", session("bob", "s2"), max_participants=3, resume=False)


async def test_concurrent_joins_never_overfill_a_call(calls: CallStore) -> None:
    await calls.start(a_call())
    results = await asyncio.gather(
        *(
            calls.join("c1", session(f"u{i}", f"s{i}"), max_participants=3, resume=False)
            for i in range(8)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, CallParticipant) for r in results) == 3
    assert sum(isinstance(r, LimitReached) for r in results) == 5
    got = await calls.get("c1")
    assert got is not None and len(got.participants) == 3


async def test_only_the_owner_resumes_a_session(calls: CallStore) -> None:
    await calls.start(a_call())
    await calls.join("c1", session("alice", "s1", conn="a"), max_participants=3, resume=False)
    with pytest.raises(Missing):
        await calls.join("c1", session("eve", "s1", conn="e"), max_participants=3, resume=True)
    back = await calls.join("c1", session("alice", "s1", conn="b"), max_participants=3, resume=True)
    assert back.conn_id == "b"


async def test_a_released_session_leaves_after_its_grace_and_the_call_ends(
    calls: CallStore,
) -> None:
    await calls.start(a_call())
    await calls.join("c1", session("alice", "s1", conn="a"), max_participants=3, resume=False)
    await calls.release("c1", "a", grace=0.2)
    assert await calls.sweep(empty_grace=30) == []  # not yet
    changes: list[str] = []

    async def swept() -> bool:
        changes.extend(c.type for c in await calls.sweep(empty_grace=30))
        return bool(changes)

    await eventually(swept, within=5)
    assert changes == ["left", "ended"]
    assert await calls.sweep(empty_grace=30) == []  # reported once


async def test_signals_wait_in_order_until_acked_within_a_bound(calls: CallStore) -> None:
    sent = [CallSignal("c1", "alice", "s1", "ICE_CANDIDATE", {"n": i}) for i in range(3)]
    seqs = [await calls.push_signal("s2", s, max_buffered=3) for s in sent]
    assert seqs == sorted(seqs)
    with pytest.raises(LimitReached):
        await calls.push_signal("s2", sent[0], max_buffered=3)
    assert [s for _, s in await calls.pending("s2")] == sent
    await calls.ack("s2", seqs[1])
    assert [s for _, s in await calls.pending("s2")] == sent[2:]
    await calls.drop_session("s2")
    assert await calls.pending("s2") == []
