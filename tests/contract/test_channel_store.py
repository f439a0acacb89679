"""ChannelStore contract: channels, limits, grants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backends.errors import Conflict, LimitReached
from backends.protocols import ChannelStore
from backends.records import Channel

from .conftest import Reopen

T0 = datetime(2024, 3, 1, 12, 0, 0, 654321, tzinfo=UTC)


def channel(
    channel_id: str, *, by: str = "alice", private: bool = False, minute: int = 0
) -> Channel:
    return Channel(
        id=channel_id,
        name=f"Channel {channel_id}",
        created_by=by,
        is_private=private,
        description=f"about {channel_id}",
        created_at=T0 + timedelta(minutes=minute),
    )


async def test_create_and_get_round_trip(channel_store: ChannelStore) -> None:
    c = channel("c1", private=True)
    await channel_store.create(c)
    got = await channel_store.get("c1")
    assert got == c
    assert got is not None and got.created_at.utcoffset() == timedelta(0)
    assert await channel_store.get("missing") is None
    plain = Channel(id="plain", name="Plain", created_by="bob")
    await channel_store.create(plain)
    assert await channel_store.get("plain") == plain


async def test_create_conflicts_on_a_taken_id(channel_store: ChannelStore) -> None:
    await channel_store.create(channel("c1"))
    with pytest.raises(Conflict):
        await channel_store.create(channel("c1", by="bob", minute=5))
    assert await channel_store.get("c1") == channel("c1")


async def test_create_enforces_channels_per_creator(channel_store: ChannelStore) -> None:
    await channel_store.create(channel("a1"), max_channels_per_user=2)
    await channel_store.create(channel("b1", by="bob"), max_channels_per_user=1)
    await channel_store.create(channel("a2"), max_channels_per_user=2)
    with pytest.raises(LimitReached) as info:
        await channel_store.create(channel("a3"), max_channels_per_user=2)
    assert (info.value.what, info.value.limit) == ("channels", 2)
    assert await channel_store.get("a3") is None
    with pytest.raises(LimitReached):
        await channel_store.create(channel("b2", by="bob"), max_channels_per_user=1)
    await channel_store.create(channel("a3"))
    assert await channel_store.delete("a1")
    await channel_store.create(channel("a4"), max_channels_per_user=3)


async def test_delete_and_list_all_oldest_first(channel_store: ChannelStore) -> None:
    await channel_store.create(channel("zeta", minute=0))
    await channel_store.create(channel("beta", minute=2))
    await channel_store.create(channel("alpha", minute=2))
    await channel_store.create(channel("gamma", minute=1))
    assert [c.id for c in await channel_store.list_all()] == ["zeta", "gamma", "alpha", "beta"]
    assert await channel_store.delete("gamma")
    assert not await channel_store.delete("gamma")
    assert await channel_store.get("gamma") is None
    listed = await channel_store.list_all()
    assert listed == [channel("zeta"), channel("alpha", minute=2), channel("beta", minute=2)]


async def test_grants(channel_store: ChannelStore) -> None:
    await channel_store.create(channel("c1", private=True))
    await channel_store.create(channel("c2", private=True))
    assert await channel_store.grants("c1") == []
    await channel_store.grant("c1", "bob")
    await channel_store.grant("c1", "alice")
    await channel_store.grant("c1", "bob")
    assert sorted(await channel_store.grants("c1")) == ["alice", "bob"]
    assert len(await channel_store.grants("c1")) == 2
    assert await channel_store.is_granted("c1", "bob")
    assert not await channel_store.is_granted("c2", "bob")
    assert not await channel_store.is_granted("c1", "carol")
    assert await channel_store.revoke("c1", "bob")
    assert not await channel_store.revoke("c1", "bob")
    assert not await channel_store.revoke("missing", "bob")
    assert not await channel_store.is_granted("c1", "bob")
    assert await channel_store.grants("c1") == ["alice"]


async def test_grants_go_with_the_channel(channel_store: ChannelStore) -> None:
    await channel_store.create(channel("c1", private=True))
    await channel_store.grant("c1", "bob")
    assert await channel_store.delete("c1")
    assert not await channel_store.is_granted("c1", "bob")
    assert await channel_store.grants("c1") == []
    await channel_store.create(channel("c1", private=True))
    assert await channel_store.grants("c1") == []


async def test_grant_on_a_missing_channel_raises(channel_store: ChannelStore) -> None:
    with pytest.raises(LookupError):
        await channel_store.grant("missing", "bob")
    assert not await channel_store.is_granted("missing", "bob")


async def test_channels_survive_a_restart(reopen: Reopen) -> None:
    stores = await reopen()
    await stores.channels.create(channel("c1", private=True))
    await stores.channels.create(channel("c2", by="bob", minute=1))
    await stores.channels.grant("c1", "carol")
    await stores.close()

    stores = await reopen()
    assert await stores.channels.list_all() == [
        channel("c1", private=True),
        channel("c2", by="bob", minute=1),
    ]
    assert await stores.channels.grants("c1") == ["carol"]
    with pytest.raises(LimitReached):
        await stores.channels.create(channel("c3"), max_channels_per_user=1)
