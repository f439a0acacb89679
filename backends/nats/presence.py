"""Presence: connections with their expiry times, and the chosen status.

nats-server 2.9 has no per-key TTL and sends no event when a key expires, so
presence keeps its own expiry times (wall clock, UTC) inside the values and
`sweep` removes what expired with a compare-and-set delete: the one node
whose delete succeeds reports it, so each expiry is reported once.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from ..codecs import from_iso_utc, to_iso_utc
from ..errors import LimitReached
from ..markers import KEEP
from ..records import PresenceEntry, Status, utcnow
from .link import Bucket, NatsLink, kv_key


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

    async def _touch_status(self, user_id: str, seen: datetime) -> None:
        async def change(doc: Any) -> tuple[Any, None]:
            base = doc or {"status": Status.ONLINE.value, "text": None}
            return {**base, "last_seen": to_iso_utc(seen)}, None

        await self._state.mutate(kv_key("status", user_id), change)

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
            return {"conns": conns, "last_seen": to_iso_utc(utcnow())}, was_offline

        async with self._link.guard():
            came_online = await self._live.mutate(kv_key("conns", user_id), change)
            await self._touch_status(user_id, utcnow())
            return came_online

    async def heartbeat(self, user_id: str, conn_id: str, *, ttl: float) -> bool:
        async def change(doc: Any) -> tuple[Any, bool]:
            now = time.time()
            conn = (doc or {}).get("conns", {}).get(conn_id)
            if conn is None or conn["closing"] or conn["exp"] <= now:
                return KEEP, False
            conns = {**doc["conns"], conn_id: {"exp": now + ttl, "closing": False}}
            return {"conns": conns, "last_seen": to_iso_utc(utcnow())}, True

        async with self._link.guard():
            return await self._live.mutate(kv_key("conns", user_id), change)

    async def disconnect(self, user_id: str, conn_id: str, *, grace: float) -> None:
        # The entry stays until it expires so that `sweep` reports the user.
        async def change(doc: Any) -> tuple[Any, None]:
            if doc is None or conn_id not in doc["conns"]:
                return KEEP, None
            conns = {**doc["conns"], conn_id: {"exp": time.time() + grace, "closing": True}}
            return {"conns": conns, "last_seen": to_iso_utc(utcnow())}, None

        async with self._link.guard():
            await self._live.mutate(kv_key("conns", user_id), change)

    async def _entry(self, user_id: str) -> PresenceEntry | None:
        (status, _), (conns, _) = await asyncio.gather(
            self._state.read(kv_key("status", user_id)),
            self._live.read(kv_key("conns", user_id)),
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
            last_seen=_seen(status, conns) if hidden is None else from_iso_utc(hidden),
            status_text=status["text"],
        )

    async def set_status(
        self, user_id: str, status: Status, status_text: str | None
    ) -> PresenceEntry:
        async def change(doc: Any) -> tuple[Any, None]:
            seen = (doc or {}).get("last_seen") or to_iso_utc(utcnow())
            new = {"status": status.value, "text": status_text, "last_seen": seen}
            if status is Status.OFFLINE:
                # Appearing offline freezes the last seen time shown.
                new["hidden"] = (doc or {}).get("hidden") or to_iso_utc(hidden_since)
            return new, None

        async with self._link.guard():
            conns, _ = await self._live.read(kv_key("conns", user_id))
            now = time.time()
            online = conns is not None and any(c["exp"] > now for c in conns["conns"].values())
            status_doc, _ = await self._state.read(kv_key("status", user_id))
            hidden_since = utcnow() if online else _seen(status_doc, conns)
            await self._state.mutate(kv_key("status", user_id), change)
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
    seen = [from_iso_utc(d["last_seen"]) for d in (status, conns) if d and "last_seen" in d]
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
