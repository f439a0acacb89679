"""Presence, typing and rate limits in Redis: TTL state shared by every node.

Expiry is computed inside Lua scripts from Redis's own clock (TIME), so all
nodes agree on what has expired whatever their clocks say. Keys (see
`common` for the layout):

    presence:<user>          HASH  status, text (absent = none), seen (µs),
                                   online ("1" while the user was last known online),
                                   hidden (µs: the seen time frozen while OFFLINE is chosen)
    presence-conns:<user>    ZSET  connection id scored by expires-at (µs)
    presence-closing:<user>  SET   connections in their grace period
    presence-due:            ZSET  user scored by when `sweep` must look at them
    typing:<room>            ZSET  user scored by expires-at (µs)
    typing-due:              ZSET  "<len(room)>:<room><user>" scored by expires-at
    rate:<key>               ZSET  one member per counted action, scored by its time

A killed node leaves its connections behind; they expire by their scores and
the next `sweep` on any node reports the user offline. Each going-offline and
each expired typing entry is reported once cluster-wide, because finding and
clearing it happen in the same script.
"""

from __future__ import annotations

from typing import ClassVar

from ..codecs import from_micros
from ..errors import LimitReached
from ..records import PresenceEntry, Status, TypingEntry
from .common import LUA_PROLOGUE, Keys, ScriptedStore, Scripts, translated

_SWEEP_BATCH = 500

_PRESENCE_LUA = (
    LUA_PROLOGUE
    + """
local due = key('presence-due', '')
-- Drop the user's expired connections; when the last one goes, it is "last seen" now.
local function prune(user)
  local conns = key('presence-conns', user)
  local gone = redis.call('ZRANGEBYSCORE', conns, '-inf', now_s)
  if #gone == 0 then return end
  redis.call('ZREMRANGEBYSCORE', conns, '-inf', now_s)
  redis.call('SREM', key('presence-closing', user), unpack(gone))
  if redis.call('ZCARD', conns) == 0 then
    redis.call('HSET', key('presence', user), 'seen', now_s)
  end
end
-- When must sweep look at this user again: at their first expiry, at once
-- if they went offline unreported, or never.
local function reschedule(user)
  local first = redis.call('ZRANGE', key('presence-conns', user), 0, 0, 'WITHSCORES')
  if #first > 0 then
    redis.call('ZADD', due, first[2], user)
  elseif redis.call('HEXISTS', key('presence', user), 'online') == 1 then
    redis.call('ZADD', due, 0, user)
  else
    redis.call('ZREM', due, user)
  end
end
local function entry(user)
  local p = key('presence', user)
  local fields = redis.call('HMGET', p, 'status', 'text', 'seen', 'hidden')
  return {user, fields[1], fields[2], fields[4] or fields[3],
          redis.call('ZCARD', key('presence-conns', user))}
end
"""
)

# ARGV: ns, user, conn, ttl µs, max connections (-1: none)
_CONNECT = (
    _PRESENCE_LUA
    + """
local user, conn = ARGV[2], ARGV[3]
local conns, closing = key('presence-conns', user), key('presence-closing', user)
prune(user)
local was_offline = redis.call('ZCARD', conns) == 0
local limit = tonumber(ARGV[5])
if limit >= 0 then
  local live = redis.call('ZCARD', conns) - redis.call('SCARD', closing)
  if redis.call('ZSCORE', conns, conn) and redis.call('SISMEMBER', closing, conn) == 0 then
    live = live - 1
  end
  if live >= limit then
    reschedule(user)
    return -1
  end
end
redis.call('ZADD', conns, now + tonumber(ARGV[4]), conn)
redis.call('SREM', closing, conn)
local p = key('presence', user)
redis.call('HSETNX', p, 'status', 'ONLINE')
redis.call('HSET', p, 'seen', now_s, 'online', '1')
reschedule(user)
if was_offline then return 1 end
return 0
"""
)

# ARGV: ns, user, conn; a user never seen (no presence hash): return 0 at once.
_SEEN_USER_LUA = (
    _PRESENCE_LUA
    + """
local user, conn = ARGV[2], ARGV[3]
local p = key('presence', user)
if redis.call('EXISTS', p) == 0 then return 0 end
"""
)

# ARGV: ns, user, conn, ttl µs
_HEARTBEAT = (
    _SEEN_USER_LUA
    + """
prune(user)
local conns = key('presence-conns', user)
local alive = 0
if redis.call('ZSCORE', conns, conn)
   and redis.call('SISMEMBER', key('presence-closing', user), conn) == 0 then
  redis.call('ZADD', conns, now + tonumber(ARGV[4]), conn)
  redis.call('HSET', p, 'seen', now_s)
  alive = 1
end
reschedule(user)
return alive
"""
)

# ARGV: ns, user, conn, grace µs
_DISCONNECT = (
    _SEEN_USER_LUA
    + """
local conns = key('presence-conns', user)
if redis.call('ZSCORE', conns, conn) then
  redis.call('ZADD', conns, now + tonumber(ARGV[4]), conn)
  redis.call('SADD', key('presence-closing', user), conn)
end
redis.call('HSET', p, 'seen', now_s)
prune(user)
reschedule(user)
return 1
"""
)

# ARGV: ns, user, status, has text (1/0), text
_SET_STATUS = (
    _PRESENCE_LUA
    + """
local user = ARGV[2]
local p = key('presence', user)
prune(user)
-- Appearing offline freezes the last seen time shown (seen now if online).
if ARGV[3] ~= 'OFFLINE' then
  redis.call('HDEL', p, 'hidden')
elseif redis.call('HEXISTS', p, 'hidden') == 0 then
  local seen = redis.call('HGET', p, 'seen')
  if redis.call('ZCARD', key('presence-conns', user)) > 0 or not seen then seen = now_s end
  redis.call('HSET', p, 'hidden', seen)
end
redis.call('HSET', p, 'status', ARGV[3])
if ARGV[4] == '1' then redis.call('HSET', p, 'text', ARGV[5]) else redis.call('HDEL', p, 'text') end
redis.call('HSETNX', p, 'seen', now_s)
reschedule(user)
return entry(user)
"""
)

# ARGV: ns, user...
_GET = (
    _PRESENCE_LUA
    + """
local found = {}
for i = 2, #ARGV do
  local user = ARGV[i]
  if redis.call('EXISTS', key('presence', user)) == 1 then
    prune(user)
    reschedule(user)
    found[#found + 1] = entry(user)
  end
end
return found
"""
)

# ARGV: ns, batch
_SWEEP = (
    _PRESENCE_LUA
    + """
local users = redis.call('ZRANGEBYSCORE', due, '-inf', now_s, 'LIMIT', 0, tonumber(ARGV[2]))
local offline = {}
for _, user in ipairs(users) do
  prune(user)
  local p = key('presence', user)
  if redis.call('ZCARD', key('presence-conns', user)) == 0
     and redis.call('HEXISTS', p, 'online') == 1 then
    redis.call('HDEL', p, 'online')
    offline[#offline + 1] = user
  end
  reschedule(user)
end
return {#users, offline}
"""
)


def _duration_micros(seconds: float) -> int:
    return max(int(seconds * 1_000_000), 0)


def _presence(row: list[bytes | int | None]) -> PresenceEntry:
    user, status, text, seen, live = row
    if not isinstance(user, bytes) or not isinstance(seen, bytes):
        raise ValueError(f"malformed presence row {row!r}")
    chosen = Status(status.decode()) if isinstance(status, bytes) else Status.ONLINE
    online = bool(live) and chosen is not Status.OFFLINE
    return PresenceEntry(
        user_id=user.decode(),
        status=chosen if online else Status.OFFLINE,
        last_seen=from_micros(seen),
        status_text=text.decode() if isinstance(text, bytes) else None,
    )


class RedisPresenceStore:
    """Connections with TTL per user, a chosen status, and a sweep schedule."""

    def __init__(self, scripts: Scripts, keys: Keys) -> None:
        self._scripts = scripts
        self._ns = keys.namespace
        for name, source in (
            ("presence-connect", _CONNECT),
            ("presence-heartbeat", _HEARTBEAT),
            ("presence-disconnect", _DISCONNECT),
            ("presence-set-status", _SET_STATUS),
            ("presence-get", _GET),
            ("presence-sweep", _SWEEP),
        ):
            scripts.register(name, source)

    @translated
    async def connect(
        self, user_id: str, conn_id: str, *, ttl: float, max_connections: int | None = None
    ) -> bool:
        limit = -1 if max_connections is None else max_connections
        result = await self._scripts.run(
            "presence-connect", [], [self._ns, user_id, conn_id, _duration_micros(ttl), limit]
        )
        if result == -1:
            raise LimitReached("connections", limit)
        return bool(result)

    @translated
    async def heartbeat(self, user_id: str, conn_id: str, *, ttl: float) -> bool:
        result = await self._scripts.run(
            "presence-heartbeat", [], [self._ns, user_id, conn_id, _duration_micros(ttl)]
        )
        return bool(result)

    @translated
    async def disconnect(self, user_id: str, conn_id: str, *, grace: float) -> None:
        await self._scripts.run(
            "presence-disconnect", [], [self._ns, user_id, conn_id, _duration_micros(grace)]
        )

    @translated
    async def set_status(
        self, user_id: str, status: Status, status_text: str | None
    ) -> PresenceEntry:
        row = await self._scripts.run(
            "presence-set-status",
            [],
            [
                self._ns,
                user_id,
                status.value,
                "0" if status_text is None else "1",
                status_text or "",
            ],
        )
        return _presence(row)

    @translated
    async def get(self, user_ids: list[str]) -> list[PresenceEntry]:
        if not user_ids:
            return []
        rows = await self._scripts.run("presence-get", [], [self._ns, *user_ids])
        return [_presence(row) for row in rows]

    @translated
    async def sweep(self) -> list[str]:
        gone: list[str] = []
        while True:
            seen, offline = await self._scripts.run("presence-sweep", [], [self._ns, _SWEEP_BATCH])
            gone.extend(u.decode() for u in offline)
            if int(seen) < _SWEEP_BATCH:
                return gone

    async def close(self) -> None:
        return None


# ARGV: ns, room, user, ttl µs, due member
_TYPING_START = (
    LUA_PROLOGUE
    + """
local room = key('typing', ARGV[2])
local previous = redis.call('ZSCORE', room, ARGV[3])
local expires = now + tonumber(ARGV[4])
redis.call('ZADD', room, expires, ARGV[3])
redis.call('ZADD', key('typing-due', ''), expires, ARGV[5])
local new = 0
if not previous or tonumber(previous) <= now then new = 1 end
return {expires, new}
"""
)

# ARGV: ns, room
_TYPING_USERS = (
    LUA_PROLOGUE
    + """
return redis.call('ZRANGEBYSCORE', key('typing', ARGV[2]), '(' .. now_s, '+inf')
"""
)

# ARGV: ns, batch.  Due members are "<byte length of room>:<room><user>".
_TYPING_SWEEP = (
    LUA_PROLOGUE
    + """
local due = key('typing-due', '')
local expired = redis.call('ZRANGEBYSCORE', due, '-inf', now_s, 'WITHSCORES',
                           'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #expired, 2 do
  local member = expired[i]
  local length, rest = string.match(member, '^(%d+):(.*)$')
  length = tonumber(length)
  redis.call('ZREM', key('typing', string.sub(rest, 1, length)), string.sub(rest, length + 1))
  redis.call('ZREM', due, member)
end
return expired
"""
)


def _typing_member(room_id: str, user_id: str) -> str:
    return f"{len(room_id.encode())}:{room_id}{user_id}"


def _parse_typing_member(member: bytes) -> tuple[str, str]:
    length, rest = member.split(b":", 1)
    n = int(length)
    return rest[:n].decode(), rest[n:].decode()


class RedisTypingStore(ScriptedStore):
    """Typing entries per room with Redis-clock expiry; each expiry swept once."""

    SCRIPTS: ClassVar[dict[str, str]] = {
        "typing-start": _TYPING_START,
        "typing-users": _TYPING_USERS,
        "typing-sweep": _TYPING_SWEEP,
    }

    @translated
    async def start(self, room_id: str, user_id: str, *, ttl: float) -> tuple[TypingEntry, bool]:
        expires, new = await self._scripts.run(
            "typing-start",
            [],
            [self._ns, room_id, user_id, _duration_micros(ttl), _typing_member(room_id, user_id)],
        )
        entry = TypingEntry(room_id=room_id, user_id=user_id, expires_at=from_micros(expires))
        return entry, bool(new)

    @translated
    async def stop(self, room_id: str, user_id: str) -> bool:
        removed, _ = await self._redis.multi(
            ("ZREM", self._keys.key("typing", room_id), user_id),
            ("ZREM", self._keys.key("typing-due"), _typing_member(room_id, user_id)),
        )
        return bool(removed)

    @translated
    async def users(self, room_id: str) -> list[str]:
        found = await self._scripts.run("typing-users", [], [self._ns, room_id])
        return [u.decode() for u in found]

    @translated
    async def sweep(self) -> list[TypingEntry]:
        swept: list[TypingEntry] = []
        while True:
            flat = await self._scripts.run("typing-sweep", [], [self._ns, _SWEEP_BATCH])
            for member, score in zip(flat[::2], flat[1::2], strict=True):
                room_id, user_id = _parse_typing_member(member)
                expires = from_micros(int(float(score)))
                swept.append(TypingEntry(room_id=room_id, user_id=user_id, expires_at=expires))
            if len(flat) < 2 * _SWEEP_BATCH:
                return swept

    async def close(self) -> None:
        return None


# KEYS: the key's window;  ARGV: ns, limit, window µs
_ACQUIRE = (
    LUA_PROLOGUE
    + """
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[2]) then return 0 end
-- Unique per action: actions in the same microsecond see different counts.
redis.call('ZADD', KEYS[1], now, now_s .. '-' .. count)
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1)
return 1
"""
)


class RedisRateLimiter:
    """A sliding-window log per key, counted across every node."""

    def __init__(self, scripts: Scripts, keys: Keys) -> None:
        self._scripts = scripts
        self._keys = keys
        scripts.register("rate-acquire", _ACQUIRE)

    @translated
    async def acquire(self, key: str, *, limit: int, per_seconds: float) -> bool:
        if limit <= 0:
            return False
        allowed = await self._scripts.run(
            "rate-acquire",
            [self._keys.key("rate", key)],
            [self._keys.namespace, limit, _duration_micros(per_seconds)],
        )
        return bool(allowed)

    async def close(self) -> None:
        return None
