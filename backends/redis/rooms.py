"""Rooms, members, bans and channels in Redis hashes and sets.

Keys (see `common` for the layout):

    room:<room>             HASH  name, owner, private (1/0), description (JSON),
                                  metadata (JSON), created (µs), inc (incarnation;
                                  absent in rooms stored before there were any)
    room-members:<room>     HASH  user -> "<ROLE>|<joined µs>"
    room-bans:<room>        SET   users
    user-rooms:<user>       SET   rooms the user is a member of
    user-added:<user>       SET   those of them others added the user to: the
                                  additions quota; the rest is the rooms quota
    rooms-public:           ZSET  public rooms scored by created µs
    channel:<channel>       HASH  name, created_by, private, description (JSON), created
    channel-grants:<channel> SET  users
    user-channels:<user>    SET   channels the user created (the quota count)
    channels:               ZSET  every channel scored by created µs

Every write that checks something first (existence, a quota, the current
owner) is one Lua script, so it is atomic across nodes. Fields are stored
separately rather than as one JSON document so that a script can change the
owner without decoding JSON in Lua (cjson would corrupt {} and floats).
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from ..codecs import from_micros, to_micros
from ..errors import Conflict, LimitReached, Missing
from ..protocols import member_order
from ..records import NO_QUOTA, Channel, MemberQuota, Room, RoomMember, RoomRole
from .common import ScriptedStore, translated

_ROOM_LUA = """
local ns = ARGV[1]
local function key(kind, id) return ns .. ':' .. kind .. ':' .. id end
local function joined_at(value) return string.match(value, '|(.*)$') end
local function own_rooms(user)
  return redis.call('SCARD', key('user-rooms', user)) - redis.call('SCARD', key('user-added', user))
end
local function forget_membership(room, user)
  redis.call('SREM', key('user-rooms', user), room)
  redis.call('SREM', key('user-added', user), room)
end
"""

# ARGV: ns, room, owner, name, private, description, metadata, created, limit,
#       incarnation
_CREATE_ROOM = (
    _ROOM_LUA
    + """
local room, owner = ARGV[2], ARGV[3]
if redis.call('EXISTS', key('room', room)) == 1 then return 'conflict' end
local joined = key('user-rooms', owner)
local limit = tonumber(ARGV[9])
if limit >= 0 and own_rooms(owner) >= limit then return 'limit' end
redis.call('HSET', key('room', room), 'name', ARGV[4], 'owner', owner, 'private', ARGV[5],
           'description', ARGV[6], 'metadata', ARGV[7], 'created', ARGV[8], 'inc', ARGV[10])
redis.call('DEL', key('room-members', room), key('room-bans', room))
redis.call('HSET', key('room-members', room), owner, 'OWNER|' .. ARGV[8])
redis.call('SADD', joined, room)
if ARGV[5] == '0' then redis.call('ZADD', key('rooms-public', ''), ARGV[8], room) end
return 'ok'
"""
)

# ARGV: ns, room, name, private, description, metadata
_UPDATE_ROOM = (
    _ROOM_LUA
    + """
local room = ARGV[2]
local hash = key('room', room)
if redis.call('EXISTS', hash) == 0 then return 0 end
redis.call('HSET', hash, 'name', ARGV[3], 'private', ARGV[4], 'description', ARGV[5],
           'metadata', ARGV[6])
if ARGV[4] == '0' then
  redis.call('ZADD', key('rooms-public', ''), redis.call('HGET', hash, 'created'), room)
else
  redis.call('ZREM', key('rooms-public', ''), room)
end
return 1
"""
)

# ARGV: ns, room, only this incarnation (1/0), the incarnation
_DELETE_ROOM = (
    _ROOM_LUA
    + """
local room = ARGV[2]
if redis.call('EXISTS', key('room', room)) == 0 then return 0 end
if ARGV[3] == '1' and (redis.call('HGET', key('room', room), 'inc') or '') ~= ARGV[4] then
  return 0
end
for _, user in ipairs(redis.call('HKEYS', key('room-members', room))) do
  forget_membership(room, user)
end
redis.call('DEL', key('room', room), key('room-members', room), key('room-bans', room))
redis.call('ZREM', key('rooms-public', ''), room)
return 1
"""
)

# ARGV: ns, room, user, value ("ROLE|µs"), limit, added by another user (1/0)
_ADD_MEMBER = (
    _ROOM_LUA
    + """
local room, user = ARGV[2], ARGV[3]
if redis.call('EXISTS', key('room', room)) == 0 then return {'missing'} end
local existing = redis.call('HGET', key('room-members', room), user)
if existing then return {'existing', existing} end
local limit = tonumber(ARGV[5])
local by_other = ARGV[6] == '1'
local count = own_rooms(user)
if by_other then count = redis.call('SCARD', key('user-added', user)) end
if limit >= 0 and count >= limit then return {'limit'} end
redis.call('HSET', key('room-members', room), user, ARGV[4])
redis.call('SADD', key('user-rooms', user), room)
if by_other then redis.call('SADD', key('user-added', user), room) end
return {'added', ARGV[4]}
"""
)

# ARGV: ns, room, user
_REMOVE_MEMBER = (
    _ROOM_LUA
    + """
local room, user = ARGV[2], ARGV[3]
if redis.call('HDEL', key('room-members', room), user) == 0 then return 0 end
forget_membership(room, user)
return 1
"""
)

# ARGV: ns, room, user, role
_SET_ROLE = (
    _ROOM_LUA
    + """
local members = key('room-members', ARGV[2])
local current = redis.call('HGET', members, ARGV[3])
if not current then return false end
local value = ARGV[4] .. '|' .. joined_at(current)
redis.call('HSET', members, ARGV[3], value)
return value
"""
)

# ARGV: ns, room, new owner
_TRANSFER = (
    _ROOM_LUA
    + """
local room, new = ARGV[2], ARGV[3]
local hash, members = key('room', room), key('room-members', room)
if redis.call('EXISTS', hash) == 0 then return {'no-room'} end
local current = redis.call('HGET', members, new)
if not current then return {'no-member'} end
local old = redis.call('HGET', hash, 'owner')
if old ~= new then
  local previous = redis.call('HGET', members, old)
  if previous then redis.call('HSET', members, old, 'ADMIN|' .. joined_at(previous)) end
end
local value = 'OWNER|' .. joined_at(current)
redis.call('HSET', members, new, value)
redis.call('HSET', hash, 'owner', new)
return {'ok', value}
"""
)

# ARGV: ns, room, user
_BAN = (
    _ROOM_LUA
    + """
local room, user = ARGV[2], ARGV[3]
if redis.call('EXISTS', key('room', room)) == 0 then return 0 end
redis.call('SADD', key('room-bans', room), user)
if redis.call('HDEL', key('room-members', room), user) == 1 then
  forget_membership(room, user)
end
return 1
"""
)

# ARGV: ns, channel, name, created_by, private, description, created, limit
_CREATE_CHANNEL = (
    _ROOM_LUA
    + """
local channel, by = ARGV[2], ARGV[4]
if redis.call('EXISTS', key('channel', channel)) == 1 then return 'conflict' end
local created = key('user-channels', by)
local limit = tonumber(ARGV[8])
if limit >= 0 and redis.call('SCARD', created) >= limit then return 'limit' end
redis.call('HSET', key('channel', channel), 'name', ARGV[3], 'created_by', by,
           'private', ARGV[5], 'description', ARGV[6], 'created', ARGV[7])
redis.call('DEL', key('channel-grants', channel))
redis.call('ZADD', key('channels', ''), ARGV[7], channel)
redis.call('SADD', created, channel)
return 'ok'
"""
)

# ARGV: ns, channel
_DELETE_CHANNEL = (
    _ROOM_LUA
    + """
local channel = ARGV[2]
local by = redis.call('HGET', key('channel', channel), 'created_by')
if not by then return 0 end
redis.call('SREM', key('user-channels', by), channel)
redis.call('DEL', key('channel', channel), key('channel-grants', channel))
redis.call('ZREM', key('channels', ''), channel)
return 1
"""
)

# ARGV: ns, channel, user
_GRANT = (
    _ROOM_LUA
    + """
if redis.call('EXISTS', key('channel', ARGV[2])) == 0 then return 0 end
redis.call('SADD', key('channel-grants', ARGV[2]), ARGV[3])
return 1
"""
)


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def _member(room_id: str, user_id: str, value: bytes) -> RoomMember:
    role, joined = value.decode().split("|", 1)
    return RoomMember(
        room_id=room_id, user_id=user_id, role=RoomRole(role), joined_at=from_micros(joined)
    )


def _room(room_id: str, fields: dict[bytes, bytes]) -> Room:
    return Room(
        id=room_id,
        name=fields[b"name"].decode(),
        owner=fields[b"owner"].decode(),
        is_private=fields[b"private"] == b"1",
        description=orjson.loads(fields[b"description"]),
        metadata=orjson.loads(fields[b"metadata"]),
        created_at=from_micros(fields[b"created"]),
        incarnation=fields.get(b"inc", b"").decode(),
    )


def _channel(channel_id: str, fields: dict[bytes, bytes]) -> Channel:
    return Channel(
        id=channel_id,
        name=fields[b"name"].decode(),
        created_by=fields[b"created_by"].decode(),
        is_private=fields[b"private"] == b"1",
        description=orjson.loads(fields[b"description"]),
        created_at=from_micros(fields[b"created"]),
    )


def _limit(value: int | None) -> int:
    return -1 if value is None else value


class RedisRoomStore(ScriptedStore):
    """Rooms, members and bans (see the module docstring for the keys)."""

    SCRIPTS: ClassVar[dict[str, str]] = {
        "room-create": _CREATE_ROOM,
        "room-update": _UPDATE_ROOM,
        "room-delete": _DELETE_ROOM,
        "room-add-member": _ADD_MEMBER,
        "room-remove-member": _REMOVE_MEMBER,
        "room-set-role": _SET_ROLE,
        "room-transfer": _TRANSFER,
        "room-ban": _BAN,
    }

    async def _rooms(self, room_ids: list[str]) -> list[Room]:
        """The rooms that still exist, oldest first."""
        found = await self._redis.hgetall_many([self._keys.key("room", r) for r in room_ids])
        rooms = [_room(r, fields) for r, fields in zip(room_ids, found, strict=True) if fields]
        return sorted(rooms, key=lambda r: (r.created_at, r.id))

    @translated
    async def create(self, room: Room, *, max_rooms_per_user: int | None = None) -> RoomMember:
        created = to_micros(room.created_at, "created_at")
        result = await self._scripts.run(
            "room-create",
            [],
            [
                self._ns,
                room.id,
                room.owner,
                room.name,
                "1" if room.is_private else "0",
                _json(room.description),
                _json(room.metadata),
                created,
                _limit(max_rooms_per_user),
                room.incarnation,
            ],
        )
        if result == b"conflict":
            raise Conflict(f"room {room.id!r} already exists")
        if result == b"limit":
            raise LimitReached("rooms", _limit(max_rooms_per_user))
        return RoomMember(
            room_id=room.id, user_id=room.owner, role=RoomRole.OWNER, joined_at=from_micros(created)
        )

    @translated
    async def get(self, room_id: str) -> Room | None:
        fields = await self._redis.hgetall(self._keys.key("room", room_id))
        return _room(room_id, fields) if fields else None

    @translated
    async def update(self, room: Room) -> None:
        found = await self._scripts.run(
            "room-update",
            [],
            [
                self._ns,
                room.id,
                room.name,
                "1" if room.is_private else "0",
                _json(room.description),
                _json(room.metadata),
            ],
        )
        if not found:
            raise Missing(f"room {room.id!r} does not exist")

    @translated
    async def delete(self, room_id: str, *, incarnation: str | None = None) -> bool:
        only = ["0", ""] if incarnation is None else ["1", incarnation]
        return bool(await self._scripts.run("room-delete", [], [self._ns, room_id, *only]))

    @translated
    async def room_id_page(self, cursor: str = "", *, limit: int = 500) -> tuple[list[str], str]:
        # SCAN, not a set of every room kept for this alone: an id may come
        # twice (SCAN's guarantee), which a reindex does not mind.
        prefix = self._keys.key("room")
        glob_safe = "".join("\\" + c if c in "*?[]\\" else c for c in prefix)
        after, ids = int(cursor or 0), []
        # SCAN examines about COUNT keys of the whole database a call: go on
        # until a page is full, so a walk is not thousands of empty pages.
        while True:
            after, keys = await self._redis.scan(after, glob_safe + "*", max(limit, 100) * 10)
            ids += [k.decode()[len(prefix) :] for k in keys]
            if after == 0 or len(ids) >= limit:
                break
        return ids, "" if after == 0 else str(after)

    @translated
    async def list_visible(self, user_id: str) -> list[Room]:
        public = await self._redis.zrange_all(self._keys.key("rooms-public"))
        joined = await self._redis.smembers(self._keys.key("user-rooms", user_id))
        ids = {r.decode() for r in public} | {r.decode() for r in joined}
        return await self._rooms(sorted(ids))

    @translated
    async def list_joined(self, user_id: str) -> list[Room]:
        joined = await self._redis.smembers(self._keys.key("user-rooms", user_id))
        return await self._rooms(sorted(r.decode() for r in joined))

    @translated
    async def add_member(
        self, member: RoomMember, quota: MemberQuota = NO_QUOTA
    ) -> tuple[RoomMember, bool]:
        joined = to_micros(member.joined_at, "joined_at")
        result = await self._scripts.run(
            "room-add-member",
            [],
            [
                self._ns,
                member.room_id,
                member.user_id,
                f"{member.role.value}|{joined}",
                _limit(quota.limit),
                "1" if quota.by_other else "0",
            ],
        )
        status = result[0]
        if status == b"missing":
            raise Missing(f"room {member.room_id!r} does not exist")
        if status == b"limit":
            raise LimitReached(quota.what, _limit(quota.limit))
        return _member(member.room_id, member.user_id, result[1]), status == b"added"

    @translated
    async def remove_member(self, room_id: str, user_id: str) -> bool:
        return bool(await self._scripts.run("room-remove-member", [], [self._ns, room_id, user_id]))

    @translated
    async def get_member(self, room_id: str, user_id: str) -> RoomMember | None:
        value = await self._redis.hget(self._keys.key("room-members", room_id), user_id)
        return None if value is None else _member(room_id, user_id, value)

    @translated
    async def members(self, room_id: str) -> list[RoomMember]:
        found = await self._redis.hgetall(self._keys.key("room-members", room_id))
        members = [_member(room_id, user.decode(), value) for user, value in found.items()]
        return sorted(members, key=member_order)

    @translated
    async def member_count(self, room_id: str) -> int:
        return int(await self._redis.hlen(self._keys.key("room-members", room_id)))

    @translated
    async def set_role(self, room_id: str, user_id: str, role: RoomRole) -> RoomMember | None:
        value = await self._scripts.run(
            "room-set-role", [], [self._ns, room_id, user_id, role.value]
        )
        return None if value is None else _member(room_id, user_id, value)

    @translated
    async def transfer_ownership(self, room_id: str, new_owner: str) -> RoomMember:
        result = await self._scripts.run("room-transfer", [], [self._ns, room_id, new_owner])
        if result[0] == b"no-room":
            raise Missing(f"room {room_id!r} does not exist")
        if result[0] == b"no-member":
            raise Missing(f"{new_owner!r} is not a member of room {room_id!r}")
        return _member(room_id, new_owner, result[1])

    @translated
    async def ban(self, room_id: str, user_id: str) -> None:
        if not await self._scripts.run("room-ban", [], [self._ns, room_id, user_id]):
            raise Missing(f"room {room_id!r} does not exist")

    @translated
    async def unban(self, room_id: str, user_id: str) -> bool:
        return bool(await self._redis.srem(self._keys.key("room-bans", room_id), user_id))

    @translated
    async def is_banned(self, room_id: str, user_id: str) -> bool:
        return bool(await self._redis.sismember(self._keys.key("room-bans", room_id), user_id))

    async def close(self) -> None:
        return None


class RedisChannelStore(ScriptedStore):
    """Channels and grants (see the module docstring for the keys)."""

    SCRIPTS: ClassVar[dict[str, str]] = {
        "channel-create": _CREATE_CHANNEL,
        "channel-delete": _DELETE_CHANNEL,
        "channel-grant": _GRANT,
    }

    @translated
    async def create(self, channel: Channel, *, max_channels_per_user: int | None = None) -> None:
        result = await self._scripts.run(
            "channel-create",
            [],
            [
                self._ns,
                channel.id,
                channel.name,
                channel.created_by,
                "1" if channel.is_private else "0",
                _json(channel.description),
                to_micros(channel.created_at, "created_at"),
                _limit(max_channels_per_user),
            ],
        )
        if result == b"conflict":
            raise Conflict(f"channel {channel.id!r} already exists")
        if result == b"limit":
            raise LimitReached("channels", _limit(max_channels_per_user))

    @translated
    async def get(self, channel_id: str) -> Channel | None:
        fields = await self._redis.hgetall(self._keys.key("channel", channel_id))
        return _channel(channel_id, fields) if fields else None

    @translated
    async def delete(self, channel_id: str) -> bool:
        return bool(await self._scripts.run("channel-delete", [], [self._ns, channel_id]))

    @translated
    async def list_all(self) -> list[Channel]:
        ids = [c.decode() for c in await self._redis.zrange_all(self._keys.key("channels"))]
        found = await self._redis.hgetall_many([self._keys.key("channel", c) for c in ids])
        channels = [_channel(c, f) for c, f in zip(ids, found, strict=True) if f]
        return sorted(channels, key=lambda c: (c.created_at, c.id))

    @translated
    async def grant(self, channel_id: str, user_id: str) -> None:
        if not await self._scripts.run("channel-grant", [], [self._ns, channel_id, user_id]):
            raise Missing(f"channel {channel_id!r} does not exist")

    @translated
    async def revoke(self, channel_id: str, user_id: str) -> bool:
        return bool(await self._redis.srem(self._keys.key("channel-grants", channel_id), user_id))

    @translated
    async def is_granted(self, channel_id: str, user_id: str) -> bool:
        grants = self._keys.key("channel-grants", channel_id)
        return bool(await self._redis.sismember(grants, user_id))

    @translated
    async def grants(self, channel_id: str) -> list[str]:
        found = await self._redis.smembers(self._keys.key("channel-grants", channel_id))
        return sorted(u.decode() for u in found)

    async def close(self) -> None:
        return None
