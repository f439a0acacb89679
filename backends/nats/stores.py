"""Rooms, channels, presence, typing and rate limits in NATS KV buckets.

Each record that must change atomically is one KV document changed by
compare-and-set (`Bucket.mutate`), so every rule holds across nodes:

    state bucket (no TTL)            live bucket (TTL: idle keys vanish)
    room.<room>    room, members, bans   conns.<user>   connections + expiry
    joined.<user>  rooms joined (quota)  typing.<room>  typists + expiry
    added.<user>   rooms others added the user to (the additions quota)
    chan.<chan>    channel and grants    rate.<key>     sliding window log
    chanby.<user>  channels created
    status.<user>  chosen status, last seen

A room's members and bans live in the room document, so membership changes,
bans and ownership transfers are single atomic writes; the price is that one
document carries the whole member list (fine for rooms up to some thousands
of members; NATS's default 1 MB payload bounds it).

Quotas are per-user documents (`joined.`, `chanby.`) reserved *before* the
room or channel document is written and released after: a crash between the
two leaves a stale reservation, which a quota check at the limit verifies
against the room or channel and drops once it is older than a few seconds.

nats-server 2.9 has no per-key TTL and sends no event when a key expires, so
presence and typing keep their own expiry times (wall clock, UTC) inside the
values and `sweep` removes what expired with a compare-and-set delete: the one
node whose delete succeeds reports it, so each expiry is reported once.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from ..codecs import decode_channel, decode_room, encode_channel, encode_room, require_utc
from ..errors import Conflict, LimitReached, Missing
from ..protocols import is_added_by_other
from ..records import (
    Channel,
    Member,
    PresenceEntry,
    Role,
    Room,
    Status,
    TypingEntry,
    utcnow,
)
from .link import DELETE, KEEP, Bucket, NatsLink, key_token

_STALE_RESERVATION: Final = 10.0
"""Seconds after which a quota reservation without its record is dropped."""


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


async def _reserve(
    bucket: Bucket,
    key: str,
    item: str,
    limit: int | None,
    what: str,
    still_valid: Any,
) -> None:
    """Add `item` to the quota document `key`, or raise LimitReached."""

    async def change(doc: Any) -> tuple[Any, None]:
        held: dict[str, float] = dict(doc or {})
        if item in held:
            return KEEP, None
        if limit is not None and len(held) >= limit:
            now = time.time()
            for other, since in list(held.items()):
                if now - since > _STALE_RESERVATION and not await still_valid(other):
                    del held[other]
            if len(held) >= limit:
                raise LimitReached(what, limit)
        held[item] = time.time()
        return held, None

    await bucket.mutate(key, change)


async def _release(bucket: Bucket, key: str, item: str) -> None:
    async def change(doc: Any) -> tuple[Any, None]:
        if not doc or item not in doc:
            return KEEP, None
        held = dict(doc)
        del held[item]
        return (held if held else DELETE), None

    await bucket.mutate(key, change)


# --- rooms ----------------------------------------------------------------


def _member(room_id: str, user_id: str, raw: list[str]) -> Member:
    return Member(room_id=room_id, user_id=user_id, role=Role(raw[0]), joined_at=_time(raw[1]))


def _members(room_id: str, doc: Any) -> list[Member]:
    members = [_member(room_id, u, raw) for u, raw in doc["members"].items()]
    return sorted(members, key=lambda m: (m.joined_at, m.user_id))


def _room(doc: Any) -> Room:
    return decode_room(orjson.dumps(doc["room"]))


def _room_order(room: Room) -> tuple[datetime, str]:
    return (room.created_at, room.id)


class NatsRoomStore:
    """Rooms with their members and bans, one KV document per room."""

    def __init__(self, link: NatsLink, state: Bucket) -> None:
        self._link = link
        self._kv = state

    @staticmethod
    def _key(room_id: str) -> str:
        return f"room.{key_token(room_id)}"

    @staticmethod
    def _joined_key(user_id: str) -> str:
        return f"joined.{key_token(user_id)}"

    @staticmethod
    def _added_key(user_id: str) -> str:
        return f"added.{key_token(user_id)}"

    def _quota_key(self, user_id: str, *, added: bool) -> str:
        return self._added_key(user_id) if added else self._joined_key(user_id)

    async def _read(self, room_id: str) -> Any:
        doc, _ = await self._kv.read(self._key(room_id))
        return doc

    async def _reserve(
        self, user_id: str, room_id: str, limit: int | None, *, added: bool = False
    ) -> None:
        async def is_member(other: str) -> bool:
            doc = await self._read(other)
            return doc is not None and user_id in doc["members"]

        key = self._quota_key(user_id, added=added)
        what = "room additions" if added else "rooms"
        await _reserve(self._kv, key, room_id, limit, what, is_member)

    async def _release(self, user_id: str, room_id: str, raw_member: list[Any]) -> None:
        """Free the quota slot a member entry (`[role, joined, added?]`) holds."""
        added = len(raw_member) > 2 and bool(raw_member[2])
        await _release(self._kv, self._quota_key(user_id, added=added), room_id)

    async def create(self, room: Room, *, max_rooms_per_user: int | None = None) -> Member:
        async with self._link.guard():
            raw = orjson.loads(encode_room(room))
            key = self._key(room.id)
            current, revision = await self._kv.read(key)
            if current is not None:
                raise Conflict(f"room {room.id!r} already exists")
            await self._reserve(room.owner, room.id, max_rooms_per_user)
            owner = Member(room.id, room.owner, Role.OWNER, _time(raw["created_at"]))
            doc = {
                "room": raw,
                "members": {room.owner: [Role.OWNER.value, raw["created_at"]]},
                "bans": [],
            }
            if await self._kv.write(key, doc, last=revision) is None:
                await _release(self._kv, self._joined_key(room.owner), room.id)
                raise Conflict(f"room {room.id!r} already exists")
            return owner

    async def get(self, room_id: str) -> Room | None:
        async with self._link.guard():
            doc = await self._read(room_id)
            return None if doc is None else _room(doc)

    async def update(self, room: Room) -> None:
        raw = orjson.loads(encode_room(room))

        async def change(doc: Any) -> tuple[Any, None]:
            if doc is None:
                raise Missing(f"room {room.id!r} does not exist")
            raw["owner"], raw["created_at"] = doc["room"]["owner"], doc["room"]["created_at"]
            raw["incarnation"] = _room(doc).incarnation
            return {**doc, "room": raw}, None

        async with self._link.guard():
            await self._kv.mutate(self._key(room.id), change)

    async def delete(self, room_id: str, *, incarnation: str | None = None) -> bool:
        async def change(doc: Any) -> tuple[Any, Any]:
            if doc is None:
                return KEEP, None
            if incarnation is not None and _room(doc).incarnation != incarnation:
                return KEEP, None
            return DELETE, doc

        async with self._link.guard():
            doc = await self._kv.mutate(self._key(room_id), change)
            if doc is None:
                return False
            for user_id, raw_member in doc["members"].items():
                await self._release(user_id, room_id, raw_member)
            return True

    async def list_visible(self, user_id: str) -> list[Room]:
        async with self._link.guard():
            docs = await self._kv.scan("room.")
        rooms = [
            _room(doc)
            for _, doc, _ in docs
            if not doc["room"]["is_private"] or user_id in doc["members"]
        ]
        return sorted(rooms, key=_room_order)

    async def list_joined(self, user_id: str) -> list[Room]:
        async with self._link.guard():
            (held, _), (added, _) = await asyncio.gather(
                self._kv.read(self._joined_key(user_id)), self._kv.read(self._added_key(user_id))
            )
            room_ids = {*(held or {}), *(added or {})}
            docs = await asyncio.gather(*(self._read(r) for r in sorted(room_ids)))
        rooms = [_room(doc) for doc in docs if doc is not None and user_id in doc["members"]]
        return sorted(rooms, key=_room_order)

    async def add_member(
        self,
        member: Member,
        *,
        max_rooms_per_user: int | None = None,
        added_by: str | None = None,
        max_room_additions: int | None = None,
    ) -> tuple[Member, bool]:
        joined_at = _iso(require_utc(member.joined_at, "joined_at"))
        room_id, user_id = member.room_id, member.user_id
        by_other = is_added_by_other(member, added_by)
        entry: list[Any] = [member.role.value, joined_at]
        if by_other:
            entry.append(1)

        async def change(doc: Any) -> tuple[Any, tuple[Member, bool]]:
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
            limit = max_room_additions if by_other else max_rooms_per_user
            await self._reserve(user_id, room_id, limit, added=by_other)
            try:
                return await self._kv.mutate(self._key(room_id), change)
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
            removed = await self._kv.mutate(self._key(room_id), change)
            if removed is not None:
                await self._release(user_id, room_id, removed)
            return removed is not None

    async def get_member(self, room_id: str, user_id: str) -> Member | None:
        async with self._link.guard():
            doc = await self._read(room_id)
        if doc is None or user_id not in doc["members"]:
            return None
        return _member(room_id, user_id, doc["members"][user_id])

    async def members(self, room_id: str) -> list[Member]:
        async with self._link.guard():
            doc = await self._read(room_id)
        return [] if doc is None else _members(room_id, doc)

    async def member_count(self, room_id: str) -> int:
        async with self._link.guard():
            doc = await self._read(room_id)
        return 0 if doc is None else len(doc["members"])

    async def set_role(self, room_id: str, user_id: str, role: Role) -> Member | None:
        async def change(doc: Any) -> tuple[Any, Member | None]:
            if doc is None or user_id not in doc["members"]:
                return KEEP, None
            # The entry's tail ([joined, added?]) stays: it says which quota it holds.
            members = {**doc["members"], user_id: [role.value, *doc["members"][user_id][1:]]}
            return {**doc, "members": members}, _member(room_id, user_id, members[user_id])

        async with self._link.guard():
            return await self._kv.mutate(self._key(room_id), change)

    async def transfer_ownership(self, room_id: str, new_owner: str) -> Member:
        # One document holds the owner field and both roles: one atomic write.
        async def change(doc: Any) -> tuple[Any, Member]:
            if doc is None:
                raise Missing(f"room {room_id!r} does not exist")
            members = dict(doc["members"])
            if new_owner not in members:
                raise Missing(f"{new_owner!r} is not a member of room {room_id!r}")
            old_owner = doc["room"]["owner"]
            if old_owner in members and old_owner != new_owner:
                members[old_owner] = [Role.ADMIN.value, *members[old_owner][1:]]
            members[new_owner] = [Role.OWNER.value, *members[new_owner][1:]]
            room = {**doc["room"], "owner": new_owner}
            promoted = _member(room_id, new_owner, members[new_owner])
            return {**doc, "room": room, "members": members}, promoted

        async with self._link.guard():
            return await self._kv.mutate(self._key(room_id), change)

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
            was = await self._kv.mutate(self._key(room_id), change)
            if was is not None:
                await self._release(user_id, room_id, was)

    async def unban(self, room_id: str, user_id: str) -> bool:
        async def change(doc: Any) -> tuple[Any, bool]:
            if doc is None or user_id not in doc["bans"]:
                return KEEP, False
            return {**doc, "bans": [b for b in doc["bans"] if b != user_id]}, True

        async with self._link.guard():
            return await self._kv.mutate(self._key(room_id), change)

    async def is_banned(self, room_id: str, user_id: str) -> bool:
        async with self._link.guard():
            doc = await self._read(room_id)
        return doc is not None and user_id in doc["bans"]

    async def close(self) -> None:
        return None


# --- channels -------------------------------------------------------------


class NatsChannelStore:
    """Channels with their grants, one KV document per channel."""

    def __init__(self, link: NatsLink, state: Bucket) -> None:
        self._link = link
        self._kv = state

    @staticmethod
    def _key(channel_id: str) -> str:
        return f"chan.{key_token(channel_id)}"

    @staticmethod
    def _by_key(user_id: str) -> str:
        return f"chanby.{key_token(user_id)}"

    async def create(self, channel: Channel, *, max_channels_per_user: int | None = None) -> None:
        raw = orjson.loads(encode_channel(channel))
        key = self._key(channel.id)

        async def still_created(other: str) -> bool:
            doc, _ = await self._kv.read(self._key(other))
            return doc is not None and doc["channel"]["created_by"] == channel.created_by

        async with self._link.guard():
            current, revision = await self._kv.read(key)
            if current is not None:
                raise Conflict(f"channel {channel.id!r} already exists")
            by_key = self._by_key(channel.created_by)
            await _reserve(
                self._kv, by_key, channel.id, max_channels_per_user, "channels", still_created
            )
            if await self._kv.write(key, {"channel": raw, "grants": []}, last=revision) is None:
                await _release(self._kv, by_key, channel.id)
                raise Conflict(f"channel {channel.id!r} already exists")

    async def get(self, channel_id: str) -> Channel | None:
        async with self._link.guard():
            doc, _ = await self._kv.read(self._key(channel_id))
        return None if doc is None else decode_channel(orjson.dumps(doc["channel"]))

    async def delete(self, channel_id: str) -> bool:
        async def change(doc: Any) -> tuple[Any, Any]:
            return (KEEP, None) if doc is None else (DELETE, doc)

        async with self._link.guard():
            doc = await self._kv.mutate(self._key(channel_id), change)
            if doc is None:
                return False
            await _release(self._kv, self._by_key(doc["channel"]["created_by"]), channel_id)
            return True

    async def list_all(self) -> list[Channel]:
        async with self._link.guard():
            docs = await self._kv.scan("chan.")
        channels = [decode_channel(orjson.dumps(doc["channel"])) for _, doc, _ in docs]
        return sorted(channels, key=lambda c: (c.created_at, c.id))

    async def grant(self, channel_id: str, user_id: str) -> None:
        async def change(doc: Any) -> tuple[Any, None]:
            if doc is None:
                raise Missing(f"channel {channel_id!r} does not exist")
            if user_id in doc["grants"]:
                return KEEP, None
            return {**doc, "grants": sorted({*doc["grants"], user_id})}, None

        async with self._link.guard():
            await self._kv.mutate(self._key(channel_id), change)

    async def revoke(self, channel_id: str, user_id: str) -> bool:
        async def change(doc: Any) -> tuple[Any, bool]:
            if doc is None or user_id not in doc["grants"]:
                return KEEP, False
            return {**doc, "grants": [g for g in doc["grants"] if g != user_id]}, True

        async with self._link.guard():
            return await self._kv.mutate(self._key(channel_id), change)

    async def is_granted(self, channel_id: str, user_id: str) -> bool:
        return user_id in await self.grants(channel_id)

    async def grants(self, channel_id: str) -> list[str]:
        async with self._link.guard():
            doc, _ = await self._kv.read(self._key(channel_id))
        return [] if doc is None else list(doc["grants"])

    async def close(self) -> None:
        return None


# --- presence -------------------------------------------------------------


class NatsPresenceStore:
    """Connections per user in `conns.<user>` (live bucket), with expiry
    times inside; the chosen status and last-seen time in `status.<user>`.

    A `conns.` document exists while the user is online or their going
    offline is not yet reported; `sweep` deletes it with compare-and-set
    once every connection expired, and only the node whose delete wins
    reports the user, so each going-offline is reported once cluster-wide.
    """

    def __init__(self, link: NatsLink, state: Bucket, live: Bucket) -> None:
        self._link = link
        self._state = state
        self._live = live

    @staticmethod
    def _conns_key(user_id: str) -> str:
        return f"conns.{key_token(user_id)}"

    @staticmethod
    def _status_key(user_id: str) -> str:
        return f"status.{key_token(user_id)}"

    async def _touch_status(self, user_id: str, seen: datetime) -> None:
        async def change(doc: Any) -> tuple[Any, None]:
            base = doc or {"status": Status.ONLINE.value, "text": None}
            return {**base, "last_seen": _iso(seen)}, None

        await self._state.mutate(self._status_key(user_id), change)

    async def connect(
        self, user_id: str, conn_id: str, *, ttl: float, max_connections: int | None = None
    ) -> bool:
        async def change(doc: Any) -> tuple[Any, bool]:
            now = time.time()
            conns = {k: c for k, c in (doc or {}).get("conns", {}).items() if c["exp"] > now}
            if max_connections is not None:
                live = sum(1 for k, c in conns.items() if not c["closing"] and k != conn_id)
                if live >= max_connections:
                    raise LimitReached("connections", max_connections)
            was_offline = not conns
            conns[conn_id] = {"exp": now + ttl, "closing": False}
            return {"conns": conns, "last_seen": _iso(utcnow())}, was_offline

        async with self._link.guard():
            came_online = await self._live.mutate(self._conns_key(user_id), change)
            await self._touch_status(user_id, utcnow())
            return came_online

    async def heartbeat(self, user_id: str, conn_id: str, *, ttl: float) -> bool:
        async def change(doc: Any) -> tuple[Any, bool]:
            now = time.time()
            conn = (doc or {}).get("conns", {}).get(conn_id)
            if conn is None or conn["closing"] or conn["exp"] <= now:
                return KEEP, False
            conns = {**doc["conns"], conn_id: {"exp": now + ttl, "closing": False}}
            return {"conns": conns, "last_seen": _iso(utcnow())}, True

        async with self._link.guard():
            return await self._live.mutate(self._conns_key(user_id), change)

    async def disconnect(self, user_id: str, conn_id: str, *, grace: float) -> None:
        # The entry stays until it expires so that `sweep` reports the user.
        async def change(doc: Any) -> tuple[Any, None]:
            if doc is None or conn_id not in doc["conns"]:
                return KEEP, None
            conns = {**doc["conns"], conn_id: {"exp": time.time() + grace, "closing": True}}
            return {"conns": conns, "last_seen": _iso(utcnow())}, None

        async with self._link.guard():
            await self._live.mutate(self._conns_key(user_id), change)

    async def _entry(self, user_id: str) -> PresenceEntry | None:
        (status, _), (conns, _) = await asyncio.gather(
            self._state.read(self._status_key(user_id)),
            self._live.read(self._conns_key(user_id)),
        )
        if status is None and conns is None:
            return None
        status = status or {"status": Status.ONLINE.value, "text": None}
        now = time.time()
        online = conns is not None and any(c["exp"] > now for c in conns["conns"].values())
        chosen = Status(status["status"])
        hidden = status.get("hidden")
        return PresenceEntry(
            user_id=user_id,
            status=chosen if online else Status.OFFLINE,
            last_seen=_seen(status, conns) if hidden is None else _time(hidden),
            status_text=status["text"],
        )

    async def set_status(
        self, user_id: str, status: Status, status_text: str | None
    ) -> PresenceEntry:
        async def change(doc: Any) -> tuple[Any, None]:
            seen = (doc or {}).get("last_seen") or _iso(utcnow())
            new = {"status": status.value, "text": status_text, "last_seen": seen}
            if status is Status.OFFLINE:
                # Appearing offline freezes the last seen time shown.
                new["hidden"] = (doc or {}).get("hidden") or _iso(hidden_since)
            return new, None

        async with self._link.guard():
            conns, _ = await self._live.read(self._conns_key(user_id))
            now = time.time()
            online = conns is not None and any(c["exp"] > now for c in conns["conns"].values())
            status_doc, _ = await self._state.read(self._status_key(user_id))
            hidden_since = utcnow() if online else _seen(status_doc, conns)
            await self._state.mutate(self._status_key(user_id), change)
            entry = await self._entry(user_id)
        if entry is None:
            raise RuntimeError("the status document was just written, yet is missing")
        return entry

    async def get(self, user_ids: list[str]) -> list[PresenceEntry]:
        async with self._link.guard():
            entries = await asyncio.gather(*(self._entry(u) for u in user_ids))
        return [e for e in entries if e is not None]

    async def sweep(self) -> list[str]:
        gone: list[str] = []
        async with self._link.guard():
            docs = await self._live.scan("conns.")
            now = time.time()
            for key, doc, revision in docs:
                if any(c["exp"] > now for c in doc["conns"].values()):
                    continue
                # The compare-and-set delete is the claim: one node wins.
                if await self._live.remove(key, last=revision):
                    user_id = _user_of(key)
                    gone.append(user_id)
                    await self._touch_status(user_id, utcnow())
        return gone

    async def close(self) -> None:
        return None


def _seen(status: Any, conns: Any) -> datetime:
    """The last seen time kept in a user's status and connections documents."""
    seen = [_time(d["last_seen"]) for d in (status, conns) if d and "last_seen" in d]
    return max(seen) if seen else utcnow()


def _user_of(key: str) -> str:
    """The user id back from `conns.<token>` (tokens are %XX-escaped as =XX)."""
    token = key.split(".", 1)[1]
    if token == "=":
        return ""
    out = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "=":
            out.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            out.extend(token[i].encode())
            i += 1
    return out.decode()


# --- typing ---------------------------------------------------------------


class NatsTypingStore:
    """Who types in a room: one live-bucket document per room."""

    def __init__(self, link: NatsLink, live: Bucket) -> None:
        self._link = link
        self._kv = live

    @staticmethod
    def _key(room_id: str) -> str:
        return f"typing.{key_token(room_id)}"

    async def start(self, room_id: str, user_id: str, *, ttl: float) -> tuple[TypingEntry, bool]:
        async def change(doc: Any) -> tuple[Any, tuple[TypingEntry, bool]]:
            now = utcnow()
            users = dict((doc or {}).get("users", {}))
            previous = users.get(user_id)
            entry = TypingEntry(room_id, user_id, now + timedelta(seconds=ttl))
            users[user_id] = _iso(entry.expires_at)
            # An expired entry not yet swept counts as "not typing": this start is new.
            started = previous is None or _time(previous) <= now
            return {"room_id": room_id, "users": users}, (entry, started)

        async with self._link.guard():
            return await self._kv.mutate(self._key(room_id), change)

    async def stop(self, room_id: str, user_id: str) -> bool:
        async def change(doc: Any) -> tuple[Any, bool]:
            if doc is None or user_id not in doc["users"]:
                return KEEP, False
            users = {u: e for u, e in doc["users"].items() if u != user_id}
            return ({**doc, "users": users} if users else DELETE), True

        async with self._link.guard():
            return await self._kv.mutate(self._key(room_id), change)

    async def users(self, room_id: str) -> list[str]:
        async with self._link.guard():
            doc, _ = await self._kv.read(self._key(room_id))
        now = utcnow()
        return [u for u, e in (doc or {}).get("users", {}).items() if _time(e) > now]

    async def sweep(self) -> list[TypingEntry]:
        async def change(doc: Any) -> tuple[Any, list[TypingEntry]]:
            if doc is None:
                return KEEP, []
            now = utcnow()
            expired = [
                TypingEntry(doc["room_id"], u, _time(e))
                for u, e in doc["users"].items()
                if _time(e) <= now
            ]
            if not expired:
                return KEEP, []
            users = {u: e for u, e in doc["users"].items() if _time(e) > now}
            return ({**doc, "users": users} if users else DELETE), expired

        swept: list[TypingEntry] = []
        async with self._link.guard():
            now = utcnow()
            for key, doc, _ in await self._kv.scan("typing."):
                if any(_time(e) <= now for e in doc["users"].values()):
                    # Compare-and-set: a concurrent sweep elsewhere takes them
                    # first or this one does, never both.
                    swept.extend(await self._kv.mutate(key, change))
        return swept

    async def close(self) -> None:
        return None


# --- rate limiting --------------------------------------------------------


class NatsRateLimiter:
    """A sliding window log per key in `rate.<key>`, changed by compare-and-set.

    The last document this node wrote is cached with its revision: the next
    call tries to write on top of it at once (one request), and only reads
    the key after another node wrote in between. A refusal decided on the
    cache is sound, since the cache can only miss hits, never invent them.
    """

    _CACHE_LIMIT = 10_000

    def __init__(self, link: NatsLink, live: Bucket) -> None:
        self._link = link
        self._kv = live
        self._cache: dict[str, tuple[list[float], int]] = {}

    async def acquire(self, key: str, *, limit: int, per_seconds: float) -> bool:
        if limit <= 0:
            return False
        kv_key = f"rate.{key_token(key)}"
        async with self._link.guard():
            cached = self._cache.get(kv_key)
            for _ in range(100):
                hits, revision = cached if cached is not None else ([], 0)
                now = time.time()
                hits = [h for h in hits if h > now - per_seconds]
                if len(hits) >= limit:
                    return False
                hits.append(now)
                written = await self._kv.write(kv_key, {"hits": hits}, last=revision)
                if written is not None:
                    if len(self._cache) >= self._CACHE_LIMIT:
                        self._cache.clear()
                    self._cache[kv_key] = (hits, written)
                    return True
                doc, revision = await self._kv.read(kv_key)
                cached = ((doc or {}).get("hits", []), revision)
            raise self._link.unavailable(f"too much contention on rate key {key!r}")

    async def close(self) -> None:
        self._cache.clear()


__all__ = [
    "NatsChannelStore",
    "NatsPresenceStore",
    "NatsRateLimiter",
    "NatsRoomStore",
    "NatsTypingStore",
]
