"""Rooms, their members with roles, and bans; members and bans cascade with
their room (foreign keys ON DELETE CASCADE).

A user's room quotas count `members` rows (`added` tells memberships others
gave them apart), so a check and the insert it allows run under an advisory
lock on the user: two nodes cannot both let the user past the limit. Changes
to one room lock its row (`FOR UPDATE` / `FOR SHARE`) so that a delete
cannot slip between a check and the write that depends on it.
"""

from __future__ import annotations

from dataclasses import replace

import asyncpg
import orjson

from ..codecs import require_utc
from ..errors import Conflict, LimitReached, Missing
from ..records import NO_QUOTA, MemberQuota, Room, RoomMember, RoomRole
from .database import Connection, PostgresDatabase, lock_for_transaction
from .user_lists import UserList

__all__ = ["PostgresRoomStore"]

_ROOM_COLUMNS = (
    "r.id, r.name, r.owner, r.is_private, r.description, r.metadata, r.created_at, r.incarnation"
)
_MEMBER_COLUMNS = "room_id, user_id, role, joined_at"


def _room(row: asyncpg.Record) -> Room:
    return Room(
        id=row[0],
        name=row[1],
        owner=row[2],
        is_private=row[3],
        description=row[4],
        metadata=orjson.loads(row[5]),
        created_at=row[6],
        incarnation=row[7],
    )


def _member(row: asyncpg.Record) -> RoomMember:
    return RoomMember(room_id=row[0], user_id=row[1], role=RoomRole(row[2]), joined_at=row[3])


async def _room_count(conn: Connection, user_id: str, *, added: bool) -> int:
    """Rooms the user created or joined (`added` False), or was added to by others."""
    count = await conn.fetchval(
        "SELECT COUNT(*) FROM members WHERE user_id = $1 AND added = $2", user_id, added
    )
    return int(count or 0)


class PostgresRoomStore:
    """Rooms, members and bans in PostgreSQL (see the module doc)."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db
        self._bans = UserList(db, "bans", "room_id")

    async def _lock_quota(self, conn: Connection, user_id: str) -> None:
        await lock_for_transaction(conn, self._db.schema, "rooms of", user_id)

    async def create(self, room: Room, *, max_rooms_per_user: int | None = None) -> RoomMember:
        created_at = require_utc(room.created_at, "created_at")
        async with self._db.transaction() as conn:
            await self._lock_quota(conn, room.owner)
            if await conn.fetchval("SELECT 1 FROM rooms WHERE id = $1", room.id) is not None:
                raise Conflict(f"room {room.id!r} already exists")
            if (
                max_rooms_per_user is not None
                and await _room_count(conn, room.owner, added=False) >= max_rooms_per_user
            ):
                raise LimitReached("rooms", max_rooms_per_user)
            inserted = await conn.fetchval(
                "INSERT INTO rooms (id, name, owner, is_private, description, metadata,"
                " created_at, incarnation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                " ON CONFLICT (id) DO NOTHING RETURNING 1",
                room.id,
                room.name,
                room.owner,
                room.is_private,
                room.description,
                orjson.dumps(room.metadata).decode(),
                created_at,
                room.incarnation,
            )
            if inserted is None:  # another owner's create won the race
                raise Conflict(f"room {room.id!r} already exists")
            await conn.execute(
                "INSERT INTO members (room_id, user_id, role, joined_at, added)"
                " VALUES ($1, $2, $3, $4, false)",
                room.id,
                room.owner,
                RoomRole.OWNER.value,
                created_at,
            )
        return RoomMember(
            room_id=room.id, user_id=room.owner, role=RoomRole.OWNER, joined_at=created_at
        )

    async def get(self, room_id: str) -> Room | None:
        row = await self._db.fetchrow(
            f"SELECT {_ROOM_COLUMNS} FROM rooms r WHERE r.id = $1", room_id
        )
        return None if row is None else _room(row)

    async def update(self, room: Room) -> None:
        changed = await self._db.execute(
            "UPDATE rooms SET name = $2, is_private = $3, description = $4, metadata = $5"
            " WHERE id = $1",
            room.id,
            room.name,
            room.is_private,
            room.description,
            orjson.dumps(room.metadata).decode(),
        )
        if changed == 0:
            raise Missing(f"room {room.id!r} does not exist")

    async def delete(self, room_id: str, *, incarnation: str | None = None) -> bool:
        if incarnation is None:
            return await self._db.execute("DELETE FROM rooms WHERE id = $1", room_id) > 0
        changed = await self._db.execute(
            "DELETE FROM rooms WHERE id = $1 AND incarnation = $2", room_id, incarnation
        )
        return changed > 0

    async def room_id_page(self, cursor: str = "", *, limit: int = 500) -> tuple[list[str], str]:
        rows = await self._db.fetch(
            "SELECT id FROM rooms WHERE id > $1 ORDER BY id LIMIT $2", cursor, limit
        )
        ids = [str(r[0]) for r in rows]
        return ids, ids[-1] if len(ids) == limit else ""

    async def list_visible(self, user_id: str) -> list[Room]:
        rows = await self._db.fetch(
            f"SELECT {_ROOM_COLUMNS} FROM rooms r WHERE NOT r.is_private OR EXISTS"
            " (SELECT 1 FROM members m WHERE m.room_id = r.id AND m.user_id = $1)"
            " ORDER BY r.created_at, r.id",
            user_id,
        )
        return [_room(r) for r in rows]

    async def list_joined(self, user_id: str) -> list[Room]:
        rows = await self._db.fetch(
            f"SELECT {_ROOM_COLUMNS} FROM rooms r JOIN members m ON m.room_id = r.id"
            " WHERE m.user_id = $1 ORDER BY r.created_at, r.id",
            user_id,
        )
        return [_room(r) for r in rows]

    async def add_member(
        self, member: RoomMember, quota: MemberQuota = NO_QUOTA
    ) -> tuple[RoomMember, bool]:
        joined_at = require_utc(member.joined_at, "joined_at")
        limit, what, added = quota.limit, quota.what, quota.by_other
        async with self._db.transaction() as conn:
            await self._lock_quota(conn, member.user_id)
            room = await conn.fetchval(
                "SELECT 1 FROM rooms WHERE id = $1 FOR SHARE", member.room_id
            )
            if room is None:
                raise Missing(f"room {member.room_id!r} does not exist")
            existing = await conn.fetchrow(
                f"SELECT {_MEMBER_COLUMNS} FROM members WHERE room_id = $1 AND user_id = $2",
                member.room_id,
                member.user_id,
            )
            if existing is not None:
                return _member(existing), False
            if limit is not None and await _room_count(conn, member.user_id, added=added) >= limit:
                raise LimitReached(what, limit)
            await conn.execute(
                "INSERT INTO members (room_id, user_id, role, joined_at, added)"
                " VALUES ($1, $2, $3, $4, $5)",
                member.room_id,
                member.user_id,
                member.role.value,
                joined_at,
                added,
            )
        return replace(member, joined_at=joined_at), True

    async def remove_member(self, room_id: str, user_id: str) -> bool:
        changed = await self._db.execute(
            "DELETE FROM members WHERE room_id = $1 AND user_id = $2", room_id, user_id
        )
        return changed > 0

    async def get_member(self, room_id: str, user_id: str) -> RoomMember | None:
        row = await self._db.fetchrow(
            f"SELECT {_MEMBER_COLUMNS} FROM members WHERE room_id = $1 AND user_id = $2",
            room_id,
            user_id,
        )
        return None if row is None else _member(row)

    async def members(self, room_id: str) -> list[RoomMember]:
        rows = await self._db.fetch(
            f"SELECT {_MEMBER_COLUMNS} FROM members WHERE room_id = $1 ORDER BY joined_at, user_id",
            room_id,
        )
        return [_member(r) for r in rows]

    async def member_count(self, room_id: str) -> int:
        count = await self._db.fetchrow("SELECT COUNT(*) FROM members WHERE room_id = $1", room_id)
        return 0 if count is None else int(count[0])

    async def set_role(self, room_id: str, user_id: str, role: RoomRole) -> RoomMember | None:
        row = await self._db.fetchrow(
            f"UPDATE members SET role = $3 WHERE room_id = $1 AND user_id = $2"
            f" RETURNING {_MEMBER_COLUMNS}",
            room_id,
            user_id,
            role.value,
        )
        return None if row is None else _member(row)

    async def transfer_ownership(self, room_id: str, new_owner: str) -> RoomMember:
        async with self._db.transaction() as conn:
            owner = await conn.fetchval("SELECT owner FROM rooms WHERE id = $1 FOR UPDATE", room_id)
            if owner is None:
                raise Missing(f"room {room_id!r} does not exist")
            promoted = await conn.fetchrow(
                f"UPDATE members SET role = $3 WHERE room_id = $1 AND user_id = $2"
                f" RETURNING {_MEMBER_COLUMNS}",
                room_id,
                new_owner,
                RoomRole.OWNER.value,
            )
            if promoted is None:
                raise Missing(f"{new_owner!r} is not a member of room {room_id!r}")
            if owner != new_owner:
                await conn.execute(
                    "UPDATE members SET role = $3 WHERE room_id = $1 AND user_id = $2",
                    room_id,
                    owner,
                    RoomRole.ADMIN.value,
                )
            await conn.execute("UPDATE rooms SET owner = $2 WHERE id = $1", room_id, new_owner)
        return _member(promoted)

    async def ban(self, room_id: str, user_id: str) -> None:
        async with self._db.transaction() as conn:
            if await conn.fetchval("SELECT 1 FROM rooms WHERE id = $1 FOR SHARE", room_id) is None:
                raise Missing(f"room {room_id!r} does not exist")
            await conn.execute(
                "INSERT INTO bans (room_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                room_id,
                user_id,
            )
            await conn.execute(
                "DELETE FROM members WHERE room_id = $1 AND user_id = $2", room_id, user_id
            )

    async def unban(self, room_id: str, user_id: str) -> bool:
        return await self._bans.remove(room_id, user_id)

    async def is_banned(self, room_id: str, user_id: str) -> bool:
        return await self._bans.contains(room_id, user_id)

    async def close(self) -> None:
        return None
