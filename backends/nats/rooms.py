"""Rooms with their members and bans, one KV document per room.

A room's members and bans live in the room document, so membership changes,
bans and ownership transfers are single atomic writes; the price is that one
document carries the whole member list (fine for rooms up to some thousands
of members; NATS's default 1 MB payload bounds it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..codecs import from_iso_utc, require_utc, room_from_dict, room_to_dict, to_iso_utc
from ..errors import Conflict, Missing
from ..markers import KEEP
from ..protocols import member_order, room_order
from ..records import NO_QUOTA, MemberQuota, Room, RoomMember, RoomRole
from .link import DELETE, Bucket, NatsLink, kv_key
from .quotas import release_quota, reserve_quota


def _member(room_id: str, user_id: str, raw: list[str]) -> RoomMember:
    return RoomMember(
        room_id=room_id, user_id=user_id, role=RoomRole(raw[0]), joined_at=from_iso_utc(raw[1])
    )


def _members(room_id: str, doc: Any) -> list[RoomMember]:
    members = [_member(room_id, u, raw) for u, raw in doc["members"].items()]
    return sorted(members, key=member_order)


def _room(doc: Any) -> Room:
    return room_from_dict(doc["room"])


class NatsRoomStore:
    """Rooms with their members and bans, one KV document per room."""

    def __init__(self, link: NatsLink, state: Bucket) -> None:
        self._link = link
        self._kv = state

    def _quota_key(self, user_id: str, *, added: bool) -> str:
        return kv_key("added", user_id) if added else kv_key("joined", user_id)

    async def _read(self, room_id: str) -> Any:
        doc, _ = await self._kv.read(kv_key("room", room_id))
        return doc

    async def _reserve(
        self, user_id: str, room_id: str, limit: int | None, *, added: bool = False
    ) -> None:
        async def is_member(other: str) -> bool:
            doc = await self._read(other)
            return doc is not None and user_id in doc["members"]

        key = self._quota_key(user_id, added=added)
        what = "room additions" if added else "rooms"
        await reserve_quota(self._kv, key, room_id, limit, what, is_member)

    async def _release(self, user_id: str, room_id: str, raw_member: list[Any]) -> None:
        """Free the quota slot a member entry (`[role, joined, added?]`) holds."""
        added = len(raw_member) > 2 and bool(raw_member[2])
        await release_quota(self._kv, self._quota_key(user_id, added=added), room_id)

    async def create(self, room: Room, *, max_rooms_per_user: int | None = None) -> RoomMember:
        async with self._link.guard():
            raw = room_to_dict(room)
            key = kv_key("room", room.id)
            current, revision = await self._kv.read(key)
            if current is not None:
                raise Conflict(f"room {room.id!r} already exists")
            await self._reserve(room.owner, room.id, max_rooms_per_user)
            owner = RoomMember(room.id, room.owner, RoomRole.OWNER, from_iso_utc(raw["created_at"]))
            doc = {
                "room": raw,
                "members": {room.owner: [RoomRole.OWNER.value, raw["created_at"]]},
                "bans": [],
            }
            if await self._kv.write(key, doc, last=revision) is None:
                await release_quota(self._kv, kv_key("joined", room.owner), room.id)
                raise Conflict(f"room {room.id!r} already exists")
            return owner

    async def get(self, room_id: str) -> Room | None:
        async with self._link.guard():
            doc = await self._read(room_id)
            return None if doc is None else _room(doc)

    async def update(self, room: Room) -> None:
        raw = room_to_dict(room)

        async def change(doc: Any) -> tuple[Any, None]:
            if doc is None:
                raise Missing(f"room {room.id!r} does not exist")
            raw["owner"], raw["created_at"] = doc["room"]["owner"], doc["room"]["created_at"]
            raw["incarnation"] = _room(doc).incarnation
            return {**doc, "room": raw}, None

        async with self._link.guard():
            await self._kv.mutate(kv_key("room", room.id), change)

    async def delete(self, room_id: str, *, incarnation: str | None = None) -> bool:
        async def change(doc: Any) -> tuple[Any, Any]:
            if doc is None:
                return KEEP, None
            if incarnation is not None and _room(doc).incarnation != incarnation:
                return KEEP, None
            return DELETE, doc

        async with self._link.guard():
            doc = await self._kv.mutate(kv_key("room", room_id), change)
            if doc is None:
                return False
            for user_id, raw_member in doc["members"].items():
                await self._release(user_id, room_id, raw_member)
            return True

    async def room_id_page(self, cursor: str = "", *, limit: int = 500) -> tuple[list[str], str]:
        # The KV bucket replays every key anyway: a page is cut from the
        # sorted ids, as list_visible reads them all.
        async with self._link.guard():
            docs = await self._kv.scan("room.")
        ids = sorted(r for r in (_room(doc).id for _, doc, _ in docs) if r > cursor)[:limit]
        return ids, ids[-1] if len(ids) == limit else ""

    async def list_visible(self, user_id: str) -> list[Room]:
        async with self._link.guard():
            docs = await self._kv.scan("room.")
        rooms = [
            _room(doc)
            for _, doc, _ in docs
            if not doc["room"]["is_private"] or user_id in doc["members"]
        ]
        return sorted(rooms, key=room_order)

    async def list_joined(self, user_id: str) -> list[Room]:
        async with self._link.guard():
            (held, _), (added, _) = await asyncio.gather(
                self._kv.read(kv_key("joined", user_id)), self._kv.read(kv_key("added", user_id))
            )
            room_ids = {*(held or {}), *(added or {})}
            docs = await asyncio.gather(*(self._read(r) for r in sorted(room_ids)))
        rooms = [_room(doc) for doc in docs if doc is not None and user_id in doc["members"]]
        return sorted(rooms, key=room_order)

    async def add_member(
        self, member: RoomMember, quota: MemberQuota = NO_QUOTA
    ) -> tuple[RoomMember, bool]:
        joined_at = to_iso_utc(require_utc(member.joined_at, "joined_at"))
        room_id, user_id = member.room_id, member.user_id
        entry: list[Any] = [member.role.value, joined_at]
        if quota.by_other:
            entry.append(1)

        async def change(doc: Any) -> tuple[Any, tuple[RoomMember, bool]]:
            if doc is None:
                raise Missing(f"room {room_id!r} does not exist")
            if user_id in doc["members"]:
                return KEEP, (_member(room_id, user_id, doc["members"][user_id]), False)
            members = {**doc["members"], user_id: entry}
            added = _member(room_id, user_id, members[user_id])
            return {**doc, "members": members}, (added, True)

        async with self._link.guard():
            doc = await self._read(room_id)
            if doc is None:
                raise Missing(f"room {room_id!r} does not exist")
            if user_id in doc["members"]:
                return _member(room_id, user_id, doc["members"][user_id]), False
            await self._reserve(user_id, room_id, quota.limit, added=quota.by_other)
            try:
                return await self._kv.mutate(kv_key("room", room_id), change)
            except Missing:
                await self._release(user_id, room_id, entry)
                raise

    async def remove_member(self, room_id: str, user_id: str) -> bool:
        async def change(doc: Any) -> tuple[Any, list[Any] | None]:
            if doc is None or user_id not in doc["members"]:
                return KEEP, None
            members = {u: m for u, m in doc["members"].items() if u != user_id}
            return {**doc, "members": members}, doc["members"][user_id]

        async with self._link.guard():
            removed = await self._kv.mutate(kv_key("room", room_id), change)
            if removed is not None:
                await self._release(user_id, room_id, removed)
            return removed is not None

    async def get_member(self, room_id: str, user_id: str) -> RoomMember | None:
        async with self._link.guard():
            doc = await self._read(room_id)
        if doc is None or user_id not in doc["members"]:
            return None
        return _member(room_id, user_id, doc["members"][user_id])

    async def members(self, room_id: str) -> list[RoomMember]:
        async with self._link.guard():
            doc = await self._read(room_id)
        return [] if doc is None else _members(room_id, doc)

    async def member_count(self, room_id: str) -> int:
        async with self._link.guard():
            doc = await self._read(room_id)
        return 0 if doc is None else len(doc["members"])

    async def set_role(self, room_id: str, user_id: str, role: RoomRole) -> RoomMember | None:
        async def change(doc: Any) -> tuple[Any, RoomMember | None]:
            if doc is None or user_id not in doc["members"]:
                return KEEP, None
            # The entry's tail ([joined, added?]) stays: it says which quota it holds.
            members = {**doc["members"], user_id: [role.value, *doc["members"][user_id][1:]]}
            return {**doc, "members": members}, _member(room_id, user_id, members[user_id])

        async with self._link.guard():
            return await self._kv.mutate(kv_key("room", room_id), change)

    async def transfer_ownership(self, room_id: str, new_owner: str) -> RoomMember:
        # One document holds the owner field and both roles: one atomic write.
        async def change(doc: Any) -> tuple[Any, RoomMember]:
            if doc is None:
                raise Missing(f"room {room_id!r} does not exist")
            members = dict(doc["members"])
            if new_owner not in members:
                raise Missing(f"{new_owner!r} is not a member of room {room_id!r}")
            old_owner = doc["room"]["owner"]
            if old_owner in members and old_owner != new_owner:
                members[old_owner] = [RoomRole.ADMIN.value, *members[old_owner][1:]]
            members[new_owner] = [RoomRole.OWNER.value, *members[new_owner][1:]]
            room = {**doc["room"], "owner": new_owner}
            promoted = _member(room_id, new_owner, members[new_owner])
            return {**doc, "room": room, "members": members}, promoted

        async with self._link.guard():
            return await self._kv.mutate(kv_key("room", room_id), change)

    async def ban(self, room_id: str, user_id: str) -> None:
        async def change(doc: Any) -> tuple[Any, list[Any] | None]:
            if doc is None:
                raise Missing(f"room {room_id!r} does not exist")
            was = doc["members"].get(user_id)
            if was is None and user_id in doc["bans"]:
                return KEEP, None
            members = {u: m for u, m in doc["members"].items() if u != user_id}
            bans = sorted({*doc["bans"], user_id})
            return {**doc, "members": members, "bans": bans}, was

        async with self._link.guard():
            was = await self._kv.mutate(kv_key("room", room_id), change)
            if was is not None:
                await self._release(user_id, room_id, was)

    async def unban(self, room_id: str, user_id: str) -> bool:
        async with self._link.guard():
            return await self._kv.drop_from_list(kv_key("room", room_id), "bans", user_id)

    async def is_banned(self, room_id: str, user_id: str) -> bool:
        async with self._link.guard():
            doc = await self._read(room_id)
        return doc is not None and user_id in doc["bans"]

    async def close(self) -> None:
        return None
