"""TypingStore contract: start, refresh, stop, expiry reported once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from backends.protocols import TypingStore
from backends.records import TypingEntry

from .conftest import eventually


async def test_start_then_refresh(typing_store: TypingStore) -> None:
    before = datetime.now(UTC)
    entry, new = await typing_store.start("r1", "alice", ttl=5)
    assert new
    assert (entry.room_id, entry.user_id) == ("r1", "alice")
    assert entry.expires_at.utcoffset() == timedelta(0)
    assert (
        before + timedelta(seconds=4) < entry.expires_at <= datetime.now(UTC) + timedelta(seconds=5)
    )
    refreshed, new = await typing_store.start("r1", "alice", ttl=10)
    assert not new
    assert refreshed.expires_at > entry.expires_at
    assert refreshed.expires_at - entry.expires_at > timedelta(seconds=4)
    assert await typing_store.users("r1") == ["alice"]


async def test_users_per_room(typing_store: TypingStore) -> None:
    await typing_store.start("r1", "alice", ttl=5)
    await typing_store.start("r1", "bob", ttl=5)
    await typing_store.start("r2", "carol", ttl=5)
    assert sorted(await typing_store.users("r1")) == ["alice", "bob"]
    assert await typing_store.users("r2") == ["carol"]
    assert await typing_store.users("r3") == []


async def test_stop(typing_store: TypingStore) -> None:
    await typing_store.start("r1", "alice", ttl=5)
    await typing_store.start("r1", "bob", ttl=5)
    assert await typing_store.stop("r1", "alice")
    assert not await typing_store.stop("r1", "alice")
    assert not await typing_store.stop("r2", "bob")
    assert await typing_store.users("r1") == ["bob"]
    _, new = await typing_store.start("r1", "alice", ttl=5)
    assert new


async def test_expiry_is_swept_exactly_once(typing_store: TypingStore) -> None:
    entry, _ = await typing_store.start("r1", "alice", ttl=0.1)
    await typing_store.start("r1", "bob", ttl=30)
    assert await typing_store.sweep() == []
    swept: list[TypingEntry] = []

    async def expired() -> bool:
        swept.extend(await typing_store.sweep())
        return bool(swept)

    await eventually(expired)
    assert swept == [entry]
    assert await typing_store.sweep() == []
    assert await typing_store.users("r1") == ["bob"]
    assert not await typing_store.stop("r1", "alice")


async def test_expired_entries_leave_users_but_still_reach_sweep(
    typing_store: TypingStore,
) -> None:
    entry, _ = await typing_store.start("r1", "alice", ttl=0.1)

    async def gone() -> bool:
        return await typing_store.users("r1") == []

    await eventually(gone)
    assert await typing_store.users("r1") == []
    assert await typing_store.sweep() == [entry]
    assert await typing_store.sweep() == []


async def test_stopped_entries_are_never_swept(typing_store: TypingStore) -> None:
    await typing_store.start("r1", "alice", ttl=0.05)
    await typing_store.start("r1", "bob", ttl=0.05)
    assert await typing_store.stop("r1", "alice")
    swept: list[TypingEntry] = []

    async def bob_expired() -> bool:
        swept.extend(await typing_store.sweep())
        return bool(swept)

    await eventually(bob_expired)
    assert [e.user_id for e in swept] == ["bob"]


async def test_start_after_expiry_is_new_and_replaces_the_old_entry(
    typing_store: TypingStore,
) -> None:
    await typing_store.start("r1", "alice", ttl=0.05)

    async def gone() -> bool:
        return await typing_store.users("r1") == []

    await eventually(gone)
    entry, new = await typing_store.start("r1", "alice", ttl=30)
    assert new
    assert await typing_store.sweep() == []
    assert await typing_store.users("r1") == ["alice"]
    assert entry.expires_at > datetime.now(UTC) + timedelta(seconds=20)
