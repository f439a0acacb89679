"""PresenceStore contract: connections with TTL and grace, chosen statuses."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from backends.errors import LimitReached
from backends.protocols import PresenceStore
from backends.records import Status

from .conftest import eventually


async def status_of(store: PresenceStore, user_id: str) -> Status:
    [entry] = await store.get([user_id])
    return entry.status


async def first_sweep_with_someone(store: PresenceStore) -> list[str]:
    """Sweep until a sweep reports someone offline; what that sweep reported."""
    swept: list[str] = []

    async def offline() -> bool:
        swept.extend(await store.sweep())
        return bool(swept)

    await eventually(offline)
    return swept


async def test_connect_reports_coming_online_once(presence_store: PresenceStore) -> None:
    before = datetime.now(UTC)
    assert await presence_store.connect("alice", "c1", ttl=30)
    assert not await presence_store.connect("alice", "c2", ttl=30)
    [entry] = await presence_store.get(["alice"])
    assert entry.user_id == "alice"
    assert entry.status is Status.ONLINE
    assert entry.status_text is None
    assert before <= entry.last_seen <= datetime.now(UTC)
    assert entry.last_seen.utcoffset() == timedelta(0)


async def test_get_returns_seen_users_in_the_order_asked(presence_store: PresenceStore) -> None:
    await presence_store.connect("alice", "c1", ttl=30)
    await presence_store.connect("bob", "c2", ttl=30)
    await presence_store.set_status("carol", Status.BUSY, "away from keyboard")
    entries = await presence_store.get(["carol", "nobody", "bob", "alice"])
    assert [e.user_id for e in entries] == ["carol", "bob", "alice"]
    assert [e.status for e in entries] == [Status.OFFLINE, Status.ONLINE, Status.ONLINE]
    assert await presence_store.get([]) == []
    assert await presence_store.get(["nobody"]) == []


async def test_chosen_statuses_apply_while_online(presence_store: PresenceStore) -> None:
    await presence_store.connect("alice", "c1", ttl=30)
    away = await presence_store.set_status("alice", Status.AWAY, "lunch")
    assert (away.user_id, away.status, away.status_text) == ("alice", Status.AWAY, "lunch")
    assert await presence_store.get(["alice"]) == [away]
    busy = await presence_store.set_status("alice", Status.BUSY, None)
    assert (busy.status, busy.status_text) == (Status.BUSY, None)
    invisible = await presence_store.set_status("alice", Status.OFFLINE, "hidden")
    assert (invisible.status, invisible.status_text) == (Status.OFFLINE, "hidden")
    assert await status_of(presence_store, "alice") is Status.OFFLINE
    back = await presence_store.set_status("alice", Status.ONLINE, None)
    assert back.status is Status.ONLINE


async def test_status_set_before_connecting(presence_store: PresenceStore) -> None:
    entry = await presence_store.set_status("alice", Status.AWAY, "brb")
    assert (entry.status, entry.status_text) == (Status.OFFLINE, "brb")
    assert await presence_store.get(["alice"]) == [entry]
    assert await presence_store.connect("alice", "c1", ttl=30)
    [online] = await presence_store.get(["alice"])
    assert (online.status, online.status_text) == (Status.AWAY, "brb")
    assert await presence_store.sweep() == []


async def test_grace_keeps_a_reload_from_flapping(presence_store: PresenceStore) -> None:
    await presence_store.connect("alice", "c1", ttl=30)
    await presence_store.disconnect("alice", "c1", grace=30)
    assert await status_of(presence_store, "alice") is Status.ONLINE
    assert await presence_store.sweep() == []
    # The reload's new connection finds the user still online.
    assert not await presence_store.connect("alice", "c2", ttl=30)
    await presence_store.disconnect("alice", "c2", grace=30)
    assert await status_of(presence_store, "alice") is Status.ONLINE


async def test_grace_ends_in_offline_reported_once(presence_store: PresenceStore) -> None:
    await presence_store.connect("alice", "c1", ttl=30)
    await presence_store.connect("bob", "c1", ttl=30)
    before = datetime.now(UTC)
    await presence_store.disconnect("alice", "c1", grace=0.1)
    assert await first_sweep_with_someone(presence_store) == ["alice"]
    assert await presence_store.sweep() == []
    [alice, bob] = await presence_store.get(["alice", "bob"])
    assert alice.status is Status.OFFLINE
    assert alice.last_seen >= before
    assert bob.status is Status.ONLINE


async def test_disconnect_without_grace_goes_offline_at_once(
    presence_store: PresenceStore,
) -> None:
    await presence_store.connect("alice", "c1", ttl=30)
    await presence_store.disconnect("alice", "c1", grace=0)
    assert await status_of(presence_store, "alice") is Status.OFFLINE
    assert await presence_store.sweep() == ["alice"]
    assert await presence_store.sweep() == []
    assert await presence_store.connect("alice", "c2", ttl=30)


async def test_disconnect_of_unknown_connection_is_harmless(
    presence_store: PresenceStore,
) -> None:
    await presence_store.disconnect("ghost", "c1", grace=1)
    assert await presence_store.get(["ghost"]) == []
    await presence_store.connect("alice", "c1", ttl=30)
    await presence_store.disconnect("alice", "other", grace=0)
    assert await status_of(presence_store, "alice") is Status.ONLINE


async def test_connection_limit_ignores_closing_connections(
    presence_store: PresenceStore,
) -> None:
    await presence_store.connect("alice", "c1", ttl=30, max_connections=2)
    await presence_store.connect("alice", "c2", ttl=30, max_connections=2)
    with pytest.raises(LimitReached) as info:
        await presence_store.connect("alice", "c3", ttl=30, max_connections=2)
    assert (info.value.what, info.value.limit) == ("connections", 2)
    # Another user has their own count; no limit means none.
    await presence_store.connect("bob", "c1", ttl=30, max_connections=2)
    await presence_store.connect("alice", "c3", ttl=30)
    await presence_store.disconnect("alice", "c3", grace=30)
    await presence_store.disconnect("alice", "c2", grace=30)
    assert not await presence_store.connect("alice", "c4", ttl=30, max_connections=2)
    with pytest.raises(LimitReached):
        await presence_store.connect("alice", "c5", ttl=30, max_connections=2)


async def test_ttl_expiry_is_reported_by_sweep_exactly_once(
    presence_store: PresenceStore,
) -> None:
    connected_at = datetime.now(UTC)
    await presence_store.connect("alice", "c1", ttl=0.1)
    await presence_store.connect("bob", "c1", ttl=30)
    assert await presence_store.sweep() == []
    assert await first_sweep_with_someone(presence_store) == ["alice"]
    assert await presence_store.sweep() == []
    [alice] = await presence_store.get(["alice"])
    assert alice.status is Status.OFFLINE
    assert alice.last_seen > connected_at
    assert await presence_store.connect("alice", "c2", ttl=30)


async def test_offline_seen_by_get_is_still_swept_once(presence_store: PresenceStore) -> None:
    await presence_store.connect("alice", "c1", ttl=0.05)

    async def offline() -> bool:
        return await status_of(presence_store, "alice") is Status.OFFLINE

    await eventually(offline)
    assert await presence_store.sweep() == ["alice"]
    assert await presence_store.sweep() == []


async def test_one_expired_connection_of_several_keeps_the_user_online(
    presence_store: PresenceStore,
) -> None:
    await presence_store.connect("alice", "short", ttl=0.05)
    await presence_store.connect("alice", "long", ttl=30)
    await presence_store.disconnect("alice", "short", grace=0.05)
    # Nothing observable happens when "short" expires: wait out its grace.
    await asyncio.sleep(0.1)
    assert await presence_store.sweep() == []
    assert await status_of(presence_store, "alice") is Status.ONLINE
    assert not await presence_store.connect("alice", "third", ttl=30)


async def test_heartbeat_extends_a_live_connection(presence_store: PresenceStore) -> None:
    # A TTL well above one round trip to a loaded backend, outlived twice over.
    await presence_store.connect("alice", "c1", ttl=0.6)
    [first] = await presence_store.get(["alice"])
    keep_until = time.monotonic() + 1.2
    while time.monotonic() < keep_until:
        await presence_store.heartbeat("alice", "c1", ttl=0.6)
        assert await presence_store.sweep() == []
        assert await status_of(presence_store, "alice") is Status.ONLINE
        await asyncio.sleep(0.05)  # pacing between heartbeats, as a client would
    [later] = await presence_store.get(["alice"])
    assert later.last_seen > first.last_seen

    async def offline() -> bool:
        return await presence_store.sweep() == ["alice"]

    await eventually(offline)


async def test_heartbeat_does_not_revive_closed_or_unknown_connections(
    presence_store: PresenceStore,
) -> None:
    await presence_store.heartbeat("ghost", "c1", ttl=30)
    assert await presence_store.get(["ghost"]) == []
    await presence_store.connect("alice", "c1", ttl=30)
    await presence_store.disconnect("alice", "c1", grace=0.05)
    await presence_store.heartbeat("alice", "c1", ttl=30)
    await presence_store.heartbeat("alice", "unknown", ttl=30)

    async def offline() -> bool:
        return await presence_store.sweep() == ["alice"]

    await eventually(offline)
    assert await status_of(presence_store, "alice") is Status.OFFLINE


async def clock_moves_past(moment: datetime) -> None:
    """Wait for the wall clock to pass `moment`, so a new time would differ."""
    ahead = (moment + timedelta(milliseconds=2) - datetime.now(UTC)).total_seconds()
    await asyncio.sleep(max(ahead, 0))  # the clock, not an event, is awaited


async def test_appearing_offline_freezes_last_seen(presence_store: PresenceStore) -> None:
    await presence_store.connect("alice", "c1", ttl=30)
    hidden = await presence_store.set_status("alice", Status.OFFLINE, None)
    assert hidden.status is Status.OFFLINE
    frozen = hidden.last_seen
    # Activity while invisible: heartbeats, another connection, a reload,
    # a status text change, the last connection going away.
    await clock_moves_past(frozen)
    assert await presence_store.heartbeat("alice", "c1", ttl=30)
    await presence_store.connect("alice", "c2", ttl=30)
    await presence_store.disconnect("alice", "c1", grace=0)
    again = await presence_store.set_status("alice", Status.OFFLINE, "still hidden")
    assert again.last_seen == frozen
    assert await presence_store.get(["alice"]) == [again]
    await presence_store.disconnect("alice", "c2", grace=0)
    await presence_store.sweep()
    await presence_store.connect("alice", "c3", ttl=30)
    [seen] = await presence_store.get(["alice"])
    assert (seen.status, seen.last_seen) == (Status.OFFLINE, frozen)

    # Visible again: the real time shows.
    await clock_moves_past(frozen)
    back = await presence_store.set_status("alice", Status.ONLINE, None)
    assert back.status is Status.ONLINE
    assert back.last_seen > frozen


async def test_appearing_offline_while_offline_keeps_the_old_last_seen(
    presence_store: PresenceStore,
) -> None:
    await presence_store.connect("bob", "c1", ttl=30)
    await presence_store.disconnect("bob", "c1", grace=0)
    await presence_store.sweep()
    [gone] = await presence_store.get(["bob"])
    await clock_moves_past(gone.last_seen)
    hidden = await presence_store.set_status("bob", Status.OFFLINE, None)
    assert hidden.last_seen == gone.last_seen
    await presence_store.connect("bob", "c2", ttl=30)
    [seen] = await presence_store.get(["bob"])
    assert (seen.status, seen.last_seen) == (Status.OFFLINE, gone.last_seen)


async def test_expiry_after_a_sweep_that_found_nothing_is_reported(
    presence_store: PresenceStore,
) -> None:
    # A sweep that finds nothing expired must still report what expires
    # later: a connection made after it, and one a heartbeat kept alive
    # past its first expiry.
    await presence_store.connect("alice", "c1", ttl=0.3)
    assert await presence_store.sweep() == []
    await presence_store.connect("bob", "c1", ttl=30)
    await presence_store.connect("carol", "c1", ttl=0.6)
    assert await presence_store.heartbeat("alice", "c1", ttl=2.0)
    swept: list[str] = []

    async def gone(*users: str) -> bool:
        swept.extend(await presence_store.sweep())
        return set(users) <= set(swept)

    await eventually(lambda: gone("carol"), within=5)
    assert "alice" not in swept
    assert await status_of(presence_store, "alice") is Status.ONLINE
    await eventually(lambda: gone("carol", "alice"), within=5)
    assert sorted(swept) == ["alice", "carol"]
    assert await status_of(presence_store, "bob") is Status.ONLINE
