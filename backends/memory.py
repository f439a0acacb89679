"""In-process implementations of every role, for tests and single-node use.

Records cross the same encoding as the other backends (`backends.codecs`),
so a serialization bug shows up in memory-only tests too. Expiry runs on `time.monotonic()`; the
times reported are wall-clock UTC.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from .calls import CallStore, MemoryDocuments
from .codecs import (
    decode_channel,
    decode_message,
    decode_room,
    encode_channel,
    encode_message,
    encode_room,
    require_utc,
)
from .errors import Conflict, ForeignStream, LimitReached, Missing
from .memory_broker import MemoryBroker
from .memory_cluster import MemoryClusterStore
from .memory_search import MemoryMessageSearch
from .opened import Opened
from .protocols import member_order, room_order
from .records import (
    NO_QUOTA,
    Channel,
    HistoryPage,
    HistoryWindow,
    MemberQuota,
    Message,
    NewMessage,
    PresenceEntry,
    Room,
    RoomMember,
    RoomRole,
    Status,
    StreamPosition,
    TypingEntry,
    incarnation_of,
    new_epoch,
    utcnow,
)

__all__ = [
    "MemoryChannelStore",
    "MemoryMessageStore",
    "MemoryPresenceStore",
    "MemoryRateLimiter",
    "MemoryRoomStore",
    "MemoryTypingStore",
]


# --- messages -------------------------------------------------------------


@dataclass(slots=True)
class _Stored:
    offset: int
    timestamp: datetime
    thread_id: str | None
    user_id: str
    client_message_id: str | None
    raw: bytes


@dataclass(slots=True)
class _Stream:
    epoch: str
    last_offset: int = 0
    offsets: list[int] = field(default_factory=list)
    messages: list[_Stored] = field(default_factory=list)
    by_client_id: dict[tuple[str, str], _Stored] = field(default_factory=dict)


class MemoryMessageStore:
    """Room history in lists of encoded messages, one list per room."""

    publishes_on_append = False

    def __init__(
        self, retention: timedelta | None = None, *, search: MemoryMessageSearch | None = None
    ) -> None:
        self._retention = retention
        self._streams: dict[str, _Stream] = {}
        # Opened with the search role: indexed here, with no await in
        # between, so a message is never stored without being searchable.
        self._search = search

    def _stream(self, room_id: str, incarnation: str) -> _Stream:
        """The room's history, started if it has none; ForeignStream if it
        belongs to another incarnation."""
        stream = self._streams.get(room_id)
        if stream is None:
            stream = self._streams[room_id] = _Stream(epoch=new_epoch(incarnation))
        elif incarnation_of(stream.epoch) != incarnation:
            raise ForeignStream(room_id, incarnation_of(stream.epoch))
        return stream

    def _ours(self, room_id: str, incarnation: str) -> _Stream | None:
        stream = self._streams.get(room_id)
        if stream is None or incarnation_of(stream.epoch) != incarnation:
            return None
        return stream

    def _cutoff(self) -> datetime | None:
        return None if self._retention is None else utcnow() - self._retention

    async def append(self, message: NewMessage, *, incarnation: str) -> tuple[Message, bool]:
        if message.room_id is None:
            raise ValueError("a stored message needs a room_id")
        timestamp = require_utc(message.timestamp, "timestamp")
        stream = self._stream(message.room_id, incarnation)
        cid = message.client_message_id
        if cid is not None:
            first = stream.by_client_id.get((message.user_id, cid))
            if first is not None:
                return decode_message(first.raw), False
        stream.last_offset += 1
        stored_message = message.stored(
            timestamp=timestamp, offset=stream.last_offset, epoch=stream.epoch
        )
        raw = encode_message(stored_message)
        stored = _Stored(
            offset=stream.last_offset,
            timestamp=timestamp,
            thread_id=message.thread_id,
            user_id=message.user_id,
            client_message_id=cid,
            raw=raw,
        )
        stream.offsets.append(stored.offset)
        stream.messages.append(stored)
        if cid is not None:
            stream.by_client_id[(message.user_id, cid)] = stored
        appended = decode_message(raw)
        if self._search is not None:
            self._search.add(appended)
        return appended, True

    async def find_client_message(
        self, room_id: str, user_id: str, client_message_id: str, *, incarnation: str
    ) -> Message | None:
        stream = self._ours(room_id, incarnation)
        first = None if stream is None else stream.by_client_id.get((user_id, client_message_id))
        return None if first is None else decode_message(first.raw)

    async def page(self, room_id: str, window: HistoryWindow, *, incarnation: str) -> HistoryPage:
        limit, after, before = window.limit, window.after, window.before
        from_end, thread_id = window.from_end, window.thread_id
        stream = self._ours(room_id, incarnation)
        if stream is None:
            return HistoryPage(messages=[], has_more=False)
        lo = 0 if after is None else bisect.bisect_right(stream.offsets, after)
        hi = len(stream.offsets) if before is None else bisect.bisect_left(stream.offsets, before)
        cutoff = self._cutoff()

        def matches(m: _Stored) -> bool:
            if cutoff is not None and m.timestamp < cutoff:
                return False
            return thread_id is None or m.thread_id == thread_id

        picked: list[_Stored] = []
        has_more = False
        indexes = range(hi - 1, lo - 1, -1) if from_end else range(lo, hi)
        for i in indexes:
            candidate = stream.messages[i]
            if not matches(candidate):
                continue
            if len(picked) == limit:
                has_more = True
                break
            picked.append(candidate)
        if from_end:
            picked.reverse()
        return HistoryPage(messages=[decode_message(m.raw) for m in picked], has_more=has_more)

    async def position(self, room_id: str, *, incarnation: str) -> StreamPosition:
        stream = self._stream(room_id, incarnation)
        cutoff = self._cutoff()
        first = next(
            (m.offset for m in stream.messages if cutoff is None or m.timestamp >= cutoff), 0
        )
        return StreamPosition(
            epoch=stream.epoch, last_offset=stream.last_offset, first_offset=first
        )

    async def trim(self) -> int:
        cutoff = self._cutoff()
        if cutoff is None:
            return 0
        removed = 0
        for stream in self._streams.values():
            kept = [m for m in stream.messages if m.timestamp >= cutoff]
            if len(kept) == len(stream.messages):
                continue
            removed += len(stream.messages) - len(kept)
            stream.messages = kept
            stream.offsets = [m.offset for m in kept]
            stream.by_client_id = {
                (m.user_id, m.client_message_id): m for m in kept if m.client_message_id is not None
            }
        if self._search is not None:
            self._search.forget_before(cutoff)
        return removed

    async def drop_room(self, room_id: str, *, incarnation: str | None = None) -> None:
        stream = self._streams.get(room_id)
        if stream is not None and incarnation in (None, incarnation_of(stream.epoch)):
            del self._streams[room_id]
            if self._search is not None:
                self._search.forget_room(room_id, None)

    async def close(self) -> None:
        return None


# --- rooms ----------------------------------------------------------------


@dataclass(slots=True)
class _RoomState:
    raw: bytes
    members: dict[str, RoomMember] = field(default_factory=dict)
    added: set[str] = field(default_factory=set)  # members others added
    bans: set[str] = field(default_factory=set)


class MemoryRoomStore:
    """Rooms, members and bans in dicts, with per-user indexes of the rooms
    joined and of those among them that others added the user to."""

    def __init__(self) -> None:
        self._rooms: dict[str, _RoomState] = {}
        self._joined: dict[str, set[str]] = {}
        self._added: dict[str, set[str]] = {}

    def _check_room_limit(self, user_id: str, limit: int | None) -> None:
        own = len(self._joined.get(user_id, ())) - len(self._added.get(user_id, ()))
        if limit is not None and own >= limit:
            raise LimitReached("rooms", limit)

    def _check_additions_limit(self, user_id: str, limit: int | None) -> None:
        if limit is not None and len(self._added.get(user_id, ())) >= limit:
            raise LimitReached("room additions", limit)

    def _state(self, room_id: str) -> _RoomState:
        state = self._rooms.get(room_id)
        if state is None:
            raise Missing(f"room {room_id!r} does not exist")
        return state

    def _forget_membership(self, room_id: str, user_id: str) -> None:
        for index in (self._joined, self._added):
            rooms = index.get(user_id)
            if rooms is not None:
                rooms.discard(room_id)
                if not rooms:
                    del index[user_id]

    async def create(self, room: Room, *, max_rooms_per_user: int | None = None) -> RoomMember:
        if room.id in self._rooms:
            raise Conflict(f"room {room.id!r} already exists")
        self._check_room_limit(room.owner, max_rooms_per_user)
        raw = encode_room(room)
        owner = RoomMember(
            room_id=room.id,
            user_id=room.owner,
            role=RoomRole.OWNER,
            joined_at=decode_room(raw).created_at,
        )
        self._rooms[room.id] = _RoomState(raw=raw, members={room.owner: owner})
        self._joined.setdefault(room.owner, set()).add(room.id)
        return owner

    async def get(self, room_id: str) -> Room | None:
        state = self._rooms.get(room_id)
        return None if state is None else decode_room(state.raw)

    async def update(self, room: Room) -> None:
        state = self._state(room.id)
        current = decode_room(state.raw)
        state.raw = encode_room(
            replace(
                room,
                owner=current.owner,
                created_at=current.created_at,
                incarnation=current.incarnation,
            )
        )

    async def delete(self, room_id: str, *, incarnation: str | None = None) -> bool:
        state = self._rooms.get(room_id)
        if state is None:
            return False
        if incarnation is not None and decode_room(state.raw).incarnation != incarnation:
            return False
        del self._rooms[room_id]
        for user_id in state.members:
            self._forget_membership(room_id, user_id)
        return True

    def _sorted_rooms(self, room_ids: set[str] | list[str]) -> list[Room]:
        return sorted((decode_room(self._rooms[r].raw) for r in room_ids), key=room_order)

    async def room_id_page(self, cursor: str = "", *, limit: int = 500) -> tuple[list[str], str]:
        ids = sorted(r for r in self._rooms if r > cursor)[:limit]
        return ids, ids[-1] if len(ids) == limit else ""

    async def list_visible(self, user_id: str) -> list[Room]:
        rooms = (decode_room(s.raw) for s in self._rooms.values())
        joined = self._joined.get(user_id, set())
        return sorted(
            (r for r in rooms if not r.is_private or r.id in joined),
            key=room_order,
        )

    async def list_joined(self, user_id: str) -> list[Room]:
        return self._sorted_rooms(self._joined.get(user_id, set()))

    async def add_member(
        self, member: RoomMember, quota: MemberQuota = NO_QUOTA
    ) -> tuple[RoomMember, bool]:
        state = self._state(member.room_id)
        existing = state.members.get(member.user_id)
        if existing is not None:
            return existing, False
        if quota.by_other:
            self._check_additions_limit(member.user_id, quota.limit)
        else:
            self._check_room_limit(member.user_id, quota.limit)
        stored = replace(member, joined_at=require_utc(member.joined_at, "joined_at"))
        state.members[member.user_id] = stored
        self._joined.setdefault(member.user_id, set()).add(member.room_id)
        if quota.by_other:
            state.added.add(member.user_id)
            self._added.setdefault(member.user_id, set()).add(member.room_id)
        return stored, True

    async def remove_member(self, room_id: str, user_id: str) -> bool:
        state = self._rooms.get(room_id)
        if state is None or state.members.pop(user_id, None) is None:
            return False
        state.added.discard(user_id)
        self._forget_membership(room_id, user_id)
        return True

    async def get_member(self, room_id: str, user_id: str) -> RoomMember | None:
        state = self._rooms.get(room_id)
        return None if state is None else state.members.get(user_id)

    async def members(self, room_id: str) -> list[RoomMember]:
        state = self._rooms.get(room_id)
        if state is None:
            return []
        return sorted(state.members.values(), key=member_order)

    async def member_count(self, room_id: str) -> int:
        state = self._rooms.get(room_id)
        return 0 if state is None else len(state.members)

    async def set_role(self, room_id: str, user_id: str, role: RoomRole) -> RoomMember | None:
        state = self._rooms.get(room_id)
        if state is None or user_id not in state.members:
            return None
        updated = replace(state.members[user_id], role=role)
        state.members[user_id] = updated
        return updated

    async def transfer_ownership(self, room_id: str, new_owner: str) -> RoomMember:
        state = self._state(room_id)
        if new_owner not in state.members:
            raise Missing(f"{new_owner!r} is not a member of room {room_id!r}")
        room = decode_room(state.raw)
        if room.owner in state.members and room.owner != new_owner:
            state.members[room.owner] = replace(state.members[room.owner], role=RoomRole.ADMIN)
        promoted = replace(state.members[new_owner], role=RoomRole.OWNER)
        state.members[new_owner] = promoted
        state.raw = encode_room(replace(room, owner=new_owner))
        return promoted

    async def ban(self, room_id: str, user_id: str) -> None:
        state = self._state(room_id)
        state.bans.add(user_id)
        if state.members.pop(user_id, None) is not None:
            state.added.discard(user_id)
            self._forget_membership(room_id, user_id)

    async def unban(self, room_id: str, user_id: str) -> bool:
        state = self._rooms.get(room_id)
        if state is None or user_id not in state.bans:
            return False
        state.bans.discard(user_id)
        return True

    async def is_banned(self, room_id: str, user_id: str) -> bool:
        state = self._rooms.get(room_id)
        return state is not None and user_id in state.bans

    async def close(self) -> None:
        return None


# --- channels -------------------------------------------------------------


class MemoryChannelStore:
    """Channels and their grants in dicts."""

    def __init__(self) -> None:
        self._channels: dict[str, bytes] = {}
        self._created_by: dict[str, str] = {}
        self._grants: dict[str, set[str]] = {}

    async def create(self, channel: Channel, *, max_channels_per_user: int | None = None) -> None:
        if channel.id in self._channels:
            raise Conflict(f"channel {channel.id!r} already exists")
        if max_channels_per_user is not None:
            count = sum(1 for c in self._created_by.values() if c == channel.created_by)
            if count >= max_channels_per_user:
                raise LimitReached("channels", max_channels_per_user)
        self._channels[channel.id] = encode_channel(channel)
        self._created_by[channel.id] = channel.created_by
        self._grants[channel.id] = set()

    async def get(self, channel_id: str) -> Channel | None:
        raw = self._channels.get(channel_id)
        return None if raw is None else decode_channel(raw)

    async def delete(self, channel_id: str) -> bool:
        if self._channels.pop(channel_id, None) is None:
            return False
        del self._created_by[channel_id]
        del self._grants[channel_id]
        return True

    async def list_all(self) -> list[Channel]:
        channels = (decode_channel(raw) for raw in self._channels.values())
        return sorted(channels, key=lambda c: (c.created_at, c.id))

    async def grant(self, channel_id: str, user_id: str) -> None:
        grants = self._grants.get(channel_id)
        if grants is None:
            raise Missing(f"channel {channel_id!r} does not exist")
        grants.add(user_id)

    async def revoke(self, channel_id: str, user_id: str) -> bool:
        grants = self._grants.get(channel_id)
        if grants is None or user_id not in grants:
            return False
        grants.discard(user_id)
        return True

    async def is_granted(self, channel_id: str, user_id: str) -> bool:
        return user_id in self._grants.get(channel_id, ())

    async def grants(self, channel_id: str) -> list[str]:
        return sorted(self._grants.get(channel_id, ()))

    async def close(self) -> None:
        return None


# --- presence -------------------------------------------------------------


@dataclass(slots=True)
class _Connection:
    expires_at: float
    closing: bool = False


@dataclass(slots=True)
class _Presence:
    last_seen: datetime
    status: Status = Status.ONLINE
    status_text: str | None = None
    connections: dict[str, _Connection] = field(default_factory=dict)
    # Whether the user was last known online, so that sweep reports each
    # going-offline exactly once even if a read pruned the connections first.
    was_online: bool = False
    # The last seen time shown while the user appears offline: frozen when
    # they chose OFFLINE, so their activity does not show through it.
    hidden_since: datetime | None = None


class MemoryPresenceStore:
    """Per-user connection entries with monotonic expiry, pruned on read."""

    def __init__(self) -> None:
        self._users: dict[str, _Presence] = {}
        # No connection expires before this (a lower bound: a heartbeat
        # extends one without raising it). `sweep` walks every user only
        # from then on, not five times a second: with thousands online that
        # walk was a few per cent of the server's CPU.
        self._sweep_from = math.inf

    def _user(self, user_id: str) -> _Presence:
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = _Presence(last_seen=utcnow())
        return user

    @staticmethod
    def _prune(user: _Presence, now: float) -> None:
        had = bool(user.connections)
        user.connections = {k: c for k, c in user.connections.items() if c.expires_at > now}
        if had and not user.connections:
            user.last_seen = utcnow()

    @staticmethod
    def _entry(user_id: str, user: _Presence) -> PresenceEntry:
        online = bool(user.connections) and user.status is not Status.OFFLINE
        return PresenceEntry(
            user_id=user_id,
            status=user.status if online else Status.OFFLINE,
            last_seen=user.last_seen if user.hidden_since is None else user.hidden_since,
            status_text=user.status_text,
        )

    async def connect(
        self, user_id: str, conn_id: str, *, ttl: float, max_connections: int | None = None
    ) -> bool:
        now = time.monotonic()
        user = self._user(user_id)
        self._prune(user, now)
        was_offline = not user.connections
        if max_connections is not None:
            live = sum(1 for k, c in user.connections.items() if not c.closing and k != conn_id)
            if live >= max_connections:
                raise LimitReached("connections", max_connections)
        user.connections[conn_id] = _Connection(expires_at=now + ttl)
        self._sweep_from = min(self._sweep_from, now + ttl)
        user.last_seen = utcnow()
        user.was_online = True
        return was_offline

    async def heartbeat(self, user_id: str, conn_id: str, *, ttl: float) -> bool:
        now = time.monotonic()
        user = self._users.get(user_id)
        if user is None:
            return False
        self._prune(user, now)
        conn = user.connections.get(conn_id)
        if conn is None or conn.closing:
            return False
        conn.expires_at = now + ttl
        user.last_seen = utcnow()
        return True

    async def disconnect(self, user_id: str, conn_id: str, *, grace: float) -> None:
        now = time.monotonic()
        user = self._users.get(user_id)
        if user is None:
            return
        conn = user.connections.get(conn_id)
        if conn is not None:
            conn.closing = True
            conn.expires_at = now + grace
            self._sweep_from = min(self._sweep_from, now + grace)
        user.last_seen = utcnow()
        self._prune(user, now)

    async def set_status(
        self, user_id: str, status: Status, status_text: str | None
    ) -> PresenceEntry:
        user = self._user(user_id)
        self._prune(user, time.monotonic())
        if status is not Status.OFFLINE:
            user.hidden_since = None
        elif user.hidden_since is None:
            # Seen now if online; else when they were last.
            user.hidden_since = utcnow() if user.connections else user.last_seen
        user.status = status
        user.status_text = status_text
        return self._entry(user_id, user)

    async def get(self, user_ids: list[str]) -> list[PresenceEntry]:
        now = time.monotonic()
        entries = []
        for user_id in user_ids:
            user = self._users.get(user_id)
            if user is None:
                continue
            self._prune(user, now)
            entries.append(self._entry(user_id, user))
        return entries

    async def sweep(self) -> list[str]:
        now = time.monotonic()
        if now < self._sweep_from:
            # Nothing expired since the last walk, so nobody went offline:
            # a read prunes only what expired.
            return []
        gone = []
        sweep_from = math.inf
        for user_id, user in self._users.items():
            self._prune(user, now)
            if user.was_online and not user.connections:
                user.was_online = False
                gone.append(user_id)
            for conn in user.connections.values():
                sweep_from = min(sweep_from, conn.expires_at)
        self._sweep_from = sweep_from
        return gone

    async def close(self) -> None:
        return None


# --- typing ---------------------------------------------------------------


@dataclass(slots=True)
class _Typing:
    expires_at: float
    entry: TypingEntry


class MemoryTypingStore:
    """Typing entries keyed by (room, user); expired ones wait for `sweep`."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Typing] = {}

    async def start(self, room_id: str, user_id: str, *, ttl: float) -> tuple[TypingEntry, bool]:
        now = time.monotonic()
        key = (room_id, user_id)
        previous = self._entries.get(key)
        entry = TypingEntry(
            room_id=room_id, user_id=user_id, expires_at=utcnow() + timedelta(seconds=ttl)
        )
        self._entries[key] = _Typing(expires_at=now + ttl, entry=entry)
        # An expired entry not yet swept counts as "not typing": this start is new.
        return entry, previous is None or previous.expires_at <= now

    async def stop(self, room_id: str, user_id: str) -> bool:
        return self._entries.pop((room_id, user_id), None) is not None

    async def users(self, room_id: str) -> list[str]:
        # Expired entries are skipped, not removed, so `sweep` still reports them.
        now = time.monotonic()
        return [
            user_id
            for (room, user_id), typing in self._entries.items()
            if room == room_id and typing.expires_at > now
        ]

    async def sweep(self) -> list[TypingEntry]:
        now = time.monotonic()
        expired = [key for key, typing in self._entries.items() if typing.expires_at <= now]
        return [self._entries.pop(key).entry for key in expired]

    async def close(self) -> None:
        return None


# --- rate limiting --------------------------------------------------------


@dataclass(slots=True)
class _Window:
    per_seconds: float
    hits: deque[float] = field(default_factory=deque)


class MemoryRateLimiter:
    """A sliding window log per key."""

    _PURGE_EVERY = 1024

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        self._calls = 0

    async def acquire(self, key: str, *, limit: int, per_seconds: float) -> bool:
        now = time.monotonic()
        self._calls += 1
        if self._calls % self._PURGE_EVERY == 0:
            self._purge(now)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(per_seconds=per_seconds)
        window.per_seconds = per_seconds
        hits = window.hits
        while hits and hits[0] <= now - per_seconds:
            hits.popleft()
        if len(hits) >= limit:
            return False
        hits.append(now)
        return True

    def _purge(self, now: float) -> None:
        # Keys that fell idle would otherwise be kept forever.
        stale = [
            key
            for key, w in self._windows.items()
            if not w.hits or w.hits[-1] <= now - w.per_seconds
        ]
        for key in stale:
            del self._windows[key]

    async def close(self) -> None:
        return None


async def open_stores(url: str, roles: Collection[str], *, retention: timedelta | None) -> Opened:
    """Everything in this process: one node only (see `backends.opened`)."""
    search = None
    if "search" in roles:
        search = MemoryMessageSearch(retention, on_append="messages" in roles)
    return Opened(
        broker=MemoryBroker() if "broker" in roles else None,
        messages=MemoryMessageStore(retention, search=search if "messages" in roles else None)
        if "messages" in roles
        else None,
        search=search,
        rooms=MemoryRoomStore() if "rooms" in roles else None,
        channels=MemoryChannelStore() if "channels" in roles else None,
        presence=MemoryPresenceStore() if "presence" in roles else None,
        cluster=MemoryClusterStore() if "presence" in roles else None,
        calls=CallStore(MemoryDocuments()) if "presence" in roles else None,
        typing=MemoryTypingStore() if "typing" in roles else None,
        limits=MemoryRateLimiter() if "limits" in roles else None,
    )
