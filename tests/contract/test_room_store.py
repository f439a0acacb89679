"""RoomStore contract: rooms, members and roles, limits, bans, cascades."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from backends.codecs import decode_room, encode_room
from backends.errors import Conflict, LimitReached, Missing
from backends.protocols import RoomStore
from backends.records import LEGACY_INCARNATION, MemberQuota, Room, RoomMember, RoomRole

from .conftest import Reopen

T0 = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def room(room_id: str, *, owner: str = "alice", private: bool = False, minute: int = 0) -> Room:
    return Room(
        id=room_id,
        name=f"Room {room_id}",
        owner=owner,
        is_private=private,
        description=f"about {room_id}",
        metadata={"topic": room_id, "tags": ["a", "b"], "n": 1.5},
        created_at=T0 + timedelta(minutes=minute),
        incarnation=f"{room_id}-first",
    )


def member(
    room_id: str, user_id: str, *, role: RoomRole = RoomRole.MEMBER, minute: int = 0
) -> RoomMember:
    return RoomMember(
        room_id=room_id, user_id=user_id, role=role, joined_at=T0 + timedelta(minutes=minute)
    )


async def test_create_adds_the_owner_and_round_trips_fields(room_store: RoomStore) -> None:
    r = room("r1")
    owner = await room_store.create(r)
    assert owner == RoomMember(room_id="r1", user_id="alice", role=RoomRole.OWNER, joined_at=T0)
    got = await room_store.get("r1")
    assert got == r
    assert got is not None and got.created_at.utcoffset() == timedelta(0)
    assert await room_store.get_member("r1", "alice") == owner
    assert await room_store.members("r1") == [owner]
    assert await room_store.member_count("r1") == 1
    assert await room_store.get("missing") is None


async def test_create_with_null_metadata_and_no_description(room_store: RoomStore) -> None:
    r = Room(id="plain", name="Plain", owner="bob")
    await room_store.create(r)
    got = await room_store.get("plain")
    assert got == r
    assert got is not None and (got.metadata, got.description, got.is_private) == (
        None,
        None,
        False,
    )


async def test_create_conflicts_on_a_taken_id(room_store: RoomStore) -> None:
    await room_store.create(room("r1"))
    with pytest.raises(Conflict):
        await room_store.create(room("r1", owner="bob"))
    assert (await room_store.get("r1")) == room("r1")
    assert await room_store.get_member("r1", "bob") is None
    assert await room_store.list_joined("bob") == []


async def test_create_enforces_rooms_per_user(room_store: RoomStore) -> None:
    await room_store.create(room("r1"), max_rooms_per_user=2)
    await room_store.create(room("r2", owner="bob"))
    await room_store.add_member(member("r2", "alice"))
    with pytest.raises(LimitReached) as info:
        await room_store.create(room("r3"), max_rooms_per_user=2)
    assert (info.value.what, info.value.limit) == ("rooms", 2)
    assert await room_store.get("r3") is None
    # No limit given: no limit applies.
    await room_store.create(room("r4"))
    # Leaving a room frees a slot.
    assert await room_store.remove_member("r2", "alice")
    with pytest.raises(LimitReached):
        await room_store.create(room("r5"), max_rooms_per_user=2)
    await room_store.create(room("r5"), max_rooms_per_user=3)
    assert [r.id for r in await room_store.list_joined("alice")] == ["r1", "r4", "r5"]


async def test_update_replaces_fields_but_not_owner_created_at_or_incarnation(
    room_store: RoomStore,
) -> None:
    await room_store.create(room("r1"))
    update = Room(
        id="r1",
        name="Renamed",
        owner="mallory",
        is_private=True,
        description=None,
        metadata={"x": [1]},
        created_at=T0 + timedelta(days=9),
    )
    await room_store.update(update)
    # The creation's owner, time and incarnation stay; every other field is the update's.
    kept = replace(update, owner="alice", created_at=T0, incarnation="r1-first")
    assert await room_store.get("r1") == kept


async def test_update_of_a_missing_room_raises(room_store: RoomStore) -> None:
    with pytest.raises(LookupError):
        await room_store.update(room("missing"))
    assert await room_store.get("missing") is None


async def test_delete_cascades_members_and_bans(room_store: RoomStore) -> None:
    await room_store.create(room("r1"))
    await room_store.create(room("r2"))
    await room_store.add_member(member("r1", "bob"))
    await room_store.add_member(member("r2", "bob"))
    await room_store.ban("r1", "carol")
    await room_store.ban("r2", "carol")
    assert await room_store.delete("r1")
    assert not await room_store.delete("r1")
    assert await room_store.get("r1") is None
    assert await room_store.members("r1") == []
    assert await room_store.member_count("r1") == 0
    assert await room_store.get_member("r1", "bob") is None
    assert not await room_store.is_banned("r1", "carol")
    assert [r.id for r in await room_store.list_joined("bob")] == ["r2"]
    assert await room_store.is_banned("r2", "carol")
    # The id is free again, with nothing carried over.
    await room_store.create(room("r1", owner="dave"))
    assert [m.user_id for m in await room_store.members("r1")] == ["dave"]
    assert not await room_store.is_banned("r1", "carol")


async def test_delete_frees_the_room_quota(room_store: RoomStore) -> None:
    await room_store.create(room("r1"), max_rooms_per_user=1)
    with pytest.raises(LimitReached):  # the quota is full
        await room_store.create(room("r2"), max_rooms_per_user=1)
    assert await room_store.get("r2") is None
    assert await room_store.delete("r1")
    await room_store.create(room("r2"), max_rooms_per_user=1)
    assert [r.id for r in await room_store.list_joined("alice")] == ["r2"]
    # One room freed one place, no more.
    with pytest.raises(LimitReached):
        await room_store.create(room("r3"), max_rooms_per_user=1)


async def test_lists_are_oldest_first_and_respect_privacy(room_store: RoomStore) -> None:
    await room_store.create(room("c-public", minute=3))
    await room_store.create(room("a-private", owner="bob", private=True, minute=1))
    await room_store.create(room("b-public", owner="bob", minute=1))
    await room_store.create(room("d-private", owner="carol", private=True, minute=0))
    await room_store.add_member(member("a-private", "alice"))

    visible = [r.id for r in await room_store.list_visible("alice")]
    assert visible == ["a-private", "b-public", "c-public"]
    assert [r.id for r in await room_store.list_visible("carol")] == [
        "d-private",
        "b-public",
        "c-public",
    ]
    assert [r.id for r in await room_store.list_visible("nobody")] == ["b-public", "c-public"]
    assert [r.id for r in await room_store.list_joined("alice")] == ["a-private", "c-public"]
    assert [r.id for r in await room_store.list_joined("bob")] == ["a-private", "b-public"]
    assert await room_store.list_joined("nobody") == []
    assert (await room_store.list_joined("alice"))[0] == room(
        "a-private", owner="bob", private=True, minute=1
    )


async def test_add_member_is_idempotent(room_store: RoomStore) -> None:
    await room_store.create(room("r1"))
    added, created = await room_store.add_member(member("r1", "bob", minute=5))
    assert created
    assert added == member("r1", "bob", minute=5)
    again, created = await room_store.add_member(member("r1", "bob", role=RoomRole.ADMIN, minute=9))
    assert not created
    assert again == added
    owner, created = await room_store.add_member(member("r1", "alice"))
    assert not created and owner.role is RoomRole.OWNER
    assert await room_store.member_count("r1") == 2


async def test_add_member_enforces_rooms_per_user(room_store: RoomStore) -> None:
    for i in range(3):
        await room_store.create(room(f"r{i}"))
    await room_store.add_member(member("r0", "bob"), MemberQuota.own(2))
    await room_store.add_member(member("r1", "bob"), MemberQuota.own(2))
    with pytest.raises(LimitReached) as info:
        await room_store.add_member(member("r2", "bob"), MemberQuota.own(2))
    assert (info.value.what, info.value.limit) == ("rooms", 2)
    assert await room_store.get_member("r2", "bob") is None
    # Already a member: returned as is, the limit does not matter.
    existing, created = await room_store.add_member(member("r1", "bob"), MemberQuota.own(2))
    assert not created and existing.user_id == "bob"


async def test_add_member_to_a_missing_room_raises(room_store: RoomStore) -> None:
    with pytest.raises(LookupError):
        await room_store.add_member(member("missing", "bob"))
    assert await room_store.list_joined("bob") == []


async def test_members_in_join_order_and_removal(room_store: RoomStore) -> None:
    await room_store.create(room("r1"))
    await room_store.add_member(member("r1", "zed", minute=2))
    await room_store.add_member(member("r1", "bob", minute=3))
    await room_store.add_member(member("r1", "carl", minute=1))
    assert [m.user_id for m in await room_store.members("r1")] == ["alice", "carl", "zed", "bob"]
    assert await room_store.member_count("r1") == 4
    assert await room_store.remove_member("r1", "zed")
    assert not await room_store.remove_member("r1", "zed")
    assert not await room_store.remove_member("missing", "zed")
    assert await room_store.get_member("r1", "zed") is None
    assert await room_store.member_count("r1") == 3
    assert await room_store.list_joined("zed") == []


async def test_set_role(room_store: RoomStore) -> None:
    await room_store.create(room("r1"))
    await room_store.add_member(member("r1", "bob", minute=1))
    promoted = await room_store.set_role("r1", "bob", RoomRole.ADMIN)
    assert promoted == member("r1", "bob", role=RoomRole.ADMIN, minute=1)
    assert await room_store.get_member("r1", "bob") == promoted
    assert await room_store.set_role("r1", "nobody", RoomRole.ADMIN) is None
    assert await room_store.set_role("missing", "bob", RoomRole.ADMIN) is None
    assert RoomRole.OWNER.rank > RoomRole.ADMIN.rank > RoomRole.MEMBER.rank


async def test_transfer_ownership_is_one_change(room_store: RoomStore) -> None:
    await room_store.create(room("r1"))
    await room_store.add_member(member("r1", "bob", minute=1))
    promoted = await room_store.transfer_ownership("r1", "bob")
    assert promoted == member("r1", "bob", role=RoomRole.OWNER, minute=1)
    got = await room_store.get("r1")
    assert got is not None and got.owner == "bob"
    assert got.name == "Room r1" and got.created_at == T0
    roles = {m.user_id: m.role for m in await room_store.members("r1")}
    assert roles == {"alice": RoomRole.ADMIN, "bob": RoomRole.OWNER}


async def test_transfer_ownership_needs_a_member(room_store: RoomStore) -> None:
    await room_store.create(room("r1"))
    with pytest.raises(Missing):
        await room_store.transfer_ownership("r1", "stranger")
    with pytest.raises(Missing):
        await room_store.transfer_ownership("nope", "alice")
    got = await room_store.get("r1")
    assert got is not None and got.owner == "alice"
    assert [(m.user_id, m.role) for m in await room_store.members("r1")] == [
        ("alice", RoomRole.OWNER)
    ]


async def test_ban_removes_membership_and_sticks(room_store: RoomStore) -> None:
    await room_store.create(room("r1"))
    await room_store.add_member(member("r1", "bob"))
    await room_store.ban("r1", "bob")
    assert await room_store.is_banned("r1", "bob")
    assert await room_store.get_member("r1", "bob") is None
    assert await room_store.member_count("r1") == 1
    assert await room_store.list_joined("bob") == []
    await room_store.ban("r1", "bob")
    await room_store.ban("r1", "stranger")
    assert await room_store.is_banned("r1", "stranger")
    assert not await room_store.is_banned("r1", "alice")
    assert await room_store.unban("r1", "bob")
    assert not await room_store.unban("r1", "bob")
    assert not await room_store.unban("missing", "bob")
    assert not await room_store.is_banned("r1", "bob")
    assert await room_store.get_member("r1", "bob") is None


async def test_ban_frees_the_room_quota(room_store: RoomStore) -> None:
    await room_store.create(room("r1"))
    await room_store.create(room("r2"))
    await room_store.create(room("r3"))
    await room_store.add_member(member("r1", "bob"), MemberQuota.own(1))
    with pytest.raises(LimitReached):  # the quota is full
        await room_store.add_member(member("r2", "bob"), MemberQuota.own(1))
    assert await room_store.get_member("r2", "bob") is None
    await room_store.ban("r1", "bob")
    await room_store.add_member(member("r2", "bob"), MemberQuota.own(1))
    assert await room_store.get_member("r2", "bob") is not None
    assert [r.id for r in await room_store.list_joined("bob")] == ["r2"]
    # One ban freed one place, no more.
    with pytest.raises(LimitReached):
        await room_store.add_member(member("r3", "bob"), MemberQuota.own(1))


async def test_ban_in_a_missing_room_raises(room_store: RoomStore) -> None:
    with pytest.raises(LookupError):
        await room_store.ban("missing", "bob")
    assert not await room_store.is_banned("missing", "bob")


async def test_rooms_survive_a_restart(reopen: Reopen) -> None:
    stores = await reopen()
    await stores.rooms.create(room("r1"))
    await stores.rooms.create(room("r2", owner="bob", private=True, minute=1))
    await stores.rooms.add_member(member("r1", "bob", minute=2))
    await stores.rooms.set_role("r1", "bob", RoomRole.ADMIN)
    await stores.rooms.add_member(member("r1", "carol", minute=3))
    await stores.rooms.ban("r1", "carol")
    await stores.close()

    stores = await reopen()
    assert await stores.rooms.get("r1") == room("r1")
    assert await stores.rooms.get("r2") == room("r2", owner="bob", private=True, minute=1)
    assert await stores.rooms.members("r1") == [
        RoomMember("r1", "alice", RoomRole.OWNER, T0),
        member("r1", "bob", role=RoomRole.ADMIN, minute=2),
    ]
    assert await stores.rooms.is_banned("r1", "carol")
    assert [r.id for r in await stores.rooms.list_joined("bob")] == ["r1", "r2"]
    with pytest.raises(Conflict):
        await stores.rooms.create(room("r1"))


# --- incarnations and the quota of rooms others add you to -------------------------


async def test_delete_of_one_incarnation_only(room_store: RoomStore) -> None:
    await room_store.create(room("r1"))
    assert not await room_store.delete("r1", incarnation="another-life")
    assert await room_store.get("r1") == room("r1")
    assert await room_store.delete("r1", incarnation="r1-first")
    assert await room_store.get("r1") is None
    again = replace(room("r1"), incarnation="r1-second")
    await room_store.create(again)
    assert await room_store.get("r1") == again
    assert not await room_store.delete("r1", incarnation="r1-first")
    assert await room_store.delete("r1")


async def test_rooms_others_add_you_to_count_apart(room_store: RoomStore) -> None:
    for i in range(4):
        await room_store.create(room(f"a{i}"))
    for i in range(3):
        _, added = await room_store.add_member(member(f"a{i}", "bob"), MemberQuota.added(3))
        assert added
    with pytest.raises(LimitReached) as info:
        await room_store.add_member(member("a3", "bob"), MemberQuota.added(3))
    assert (info.value.what, info.value.limit) == ("room additions", 3)
    assert await room_store.get_member("a3", "bob") is None

    # Bob's own quota is untouched by the three additions.
    await room_store.create(room("b0", owner="bob"), max_rooms_per_user=2)
    await room_store.add_member(member("a3", "bob"), MemberQuota.own(2))  # joins himself
    with pytest.raises(LimitReached) as info:
        await room_store.create(room("b1", owner="bob"), max_rooms_per_user=2)
    assert (info.value.what, info.value.limit) == ("rooms", 2)
    # Joining himself (added_by is bob) counts as his own too.
    await room_store.create(room("a4"))
    with pytest.raises(LimitReached):
        await room_store.add_member(
            m := member("a4", "bob"), MemberQuota.of(m, "bob", max_rooms_per_user=2)
        )
    joined = [r.id for r in await room_store.list_joined("bob")]
    assert sorted(joined) == ["a0", "a1", "a2", "a3", "b0"]
    assert {r.id for r in await room_store.list_visible("bob")} >= set(joined)


async def test_leaving_bans_and_deletes_free_an_addition(room_store: RoomStore) -> None:
    for i in range(4):
        await room_store.create(room(f"a{i}"))

    async def add(room_id: str) -> None:
        await room_store.add_member(member(room_id, "bob"), MemberQuota.added(2))

    await add("a0")
    await add("a1")
    with pytest.raises(LimitReached):
        await add("a2")
    # A new role (or ownership) keeps the membership one others made.
    await room_store.set_role("a0", "bob", RoomRole.ADMIN)
    assert await room_store.remove_member("a0", "bob")
    await add("a2")
    await room_store.ban("a1", "bob")
    await add("a3")
    await room_store.transfer_ownership("a3", "bob")
    assert await room_store.delete("a2")
    await add("a0")
    assert sorted(r.id for r in await room_store.list_joined("bob")) == ["a0", "a3"]
    with pytest.raises(LimitReached):
        await add("a1")
    await room_store.unban("a1", "bob")
    assert await room_store.remove_member("a3", "bob")
    await add("a1")
    # Own rooms are still all free.
    await room_store.create(room("b0", owner="bob"), max_rooms_per_user=1)


async def test_rooms_quotas_survive_a_restart(reopen: Reopen) -> None:
    stores = await reopen()
    for i in range(2):
        await stores.rooms.create(room(f"a{i}"))
        await stores.rooms.add_member(member(f"a{i}", "bob"), MemberQuota.added())
    await stores.close()
    stores = await reopen()
    await stores.rooms.create(room("b0", owner="bob"), max_rooms_per_user=1)
    with pytest.raises(LimitReached):
        await stores.rooms.add_member(member("b0", "carol"), MemberQuota.added(0))
    await stores.rooms.create(room("a2"))
    with pytest.raises(LimitReached) as info:
        await stores.rooms.add_member(member("a2", "bob"), MemberQuota.added(2))
    assert info.value.what == "room additions"
    assert (await stores.rooms.get("a0")) == room("a0")
    await stores.close()


async def test_naive_times_are_refused_and_nothing_is_kept(room_store: RoomStore) -> None:
    """Every backend stores times through the shared codecs, which refuse a
    naive datetime before anything is written."""
    naive = datetime(2024, 3, 1, 12, 0)
    with pytest.raises(ValueError, match="created_at must be timezone-aware"):
        await room_store.create(replace(room("r1"), created_at=naive))
    assert await room_store.get("r1") is None
    await room_store.create(room("r2"))
    with pytest.raises(ValueError, match="joined_at must be timezone-aware"):
        await room_store.add_member(replace(member("r2", "bob"), joined_at=naive))
    assert await room_store.get_member("r2", "bob") is None


def test_a_room_document_from_before_incarnations_decodes_as_legacy() -> None:
    """The memory and NATS stores keep rooms as this JSON document."""
    raw = orjson.dumps(
        {k: v for k, v in orjson.loads(encode_room(room("r1"))).items() if k != "incarnation"}
    )
    assert decode_room(raw) == replace(room("r1"), incarnation=LEGACY_INCARNATION)


async def test_room_id_pages_walk_every_room_once_deleted_ones_gone(
    room_store: RoomStore,
) -> None:
    # Private rooms and rooms nobody belongs to any more count too: a reindex
    # walks every history.
    created = {f"walk-{i:02d}" for i in range(7)}
    for i, room_id in enumerate(sorted(created)):
        await room_store.create(room(room_id, owner=f"u{i}", private=i % 2 == 0))
    await room_store.create(room("walk-gone"))
    assert await room_store.delete("walk-gone")
    seen: list[str] = []
    cursor, calls = "", 0
    while True:
        ids, cursor = await room_store.room_id_page(cursor, limit=3)
        seen += ids
        calls += 1
        assert calls < 100, "the walk never ends"
        if not cursor:
            break
    assert set(seen) == created
