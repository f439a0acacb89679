"""Typing indicators, with their expiry times inside the values (see
presence.py for why NATS keeps its own expiry)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..codecs import from_iso_utc, to_iso_utc
from ..markers import KEEP
from ..records import TypingEntry, utcnow
from .link import DELETE, Bucket, NatsLink, kv_key


class NatsTypingStore:
    """Who types in a room: one live-bucket document per room."""

    def __init__(self, link: NatsLink, live: Bucket) -> None:
        self._link = link
        self._kv = live

    async def start(self, room_id: str, user_id: str, *, ttl: float) -> tuple[TypingEntry, bool]:
        async def change(doc: Any) -> tuple[Any, tuple[TypingEntry, bool]]:
            now = utcnow()
            users = dict((doc or {}).get("users", {}))
            previous = users.get(user_id)
            entry = TypingEntry(room_id, user_id, now + timedelta(seconds=ttl))
            users[user_id] = to_iso_utc(entry.expires_at)
            # An expired entry not yet swept counts as "not typing": this start is new.
            started = previous is None or from_iso_utc(previous) <= now
            return {"room_id": room_id, "users": users}, (entry, started)

        async with self._link.guard():
            return await self._kv.mutate(kv_key("typing", room_id), change)

    async def stop(self, room_id: str, user_id: str) -> bool:
        async def change(doc: Any) -> tuple[Any, bool]:
            if doc is None or user_id not in doc["users"]:
                return KEEP, False
            users = {u: e for u, e in doc["users"].items() if u != user_id}
            return ({**doc, "users": users} if users else DELETE), True

        async with self._link.guard():
            return await self._kv.mutate(kv_key("typing", room_id), change)

    async def users(self, room_id: str) -> list[str]:
        async with self._link.guard():
            doc, _ = await self._kv.read(kv_key("typing", room_id))
        now = utcnow()
        return [u for u, e in (doc or {}).get("users", {}).items() if from_iso_utc(e) > now]

    async def sweep(self) -> list[TypingEntry]:
        async def change(doc: Any) -> tuple[Any, list[TypingEntry]]:
            if doc is None:
                return KEEP, []
            now = utcnow()
            expired = [
                TypingEntry(doc["room_id"], u, from_iso_utc(e))
                for u, e in doc["users"].items()
                if from_iso_utc(e) <= now
            ]
            if not expired:
                return KEEP, []
            users = {u: e for u, e in doc["users"].items() if from_iso_utc(e) > now}
            return ({**doc, "users": users} if users else DELETE), expired

        swept: list[TypingEntry] = []
        async with self._link.guard():
            now = utcnow()
            for key, doc, _ in await self._kv.scan("typing."):
                if any(from_iso_utc(e) <= now for e in doc["users"].values()):
                    # Compare-and-set: a concurrent sweep elsewhere takes them
                    # first or this one does, never both.
                    swept.extend(await self._kv.mutate(key, change))
        return swept

    async def close(self) -> None:
        return None
