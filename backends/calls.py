"""Calls (WebRTC signaling): ephemeral state shared by every node.

A call is one JSON document holding its participants; each participant is a
session (one connection of a user) with an expiry time, refreshed by its
node's heartbeat while the connection is open and set to now + grace when it
closes, so a killed node's participants leave after the TTL. The signals
addressed to a session wait in a bounded per-session buffer until its
`callSignals` delivers them (and acks them), so a connection that comes back
within the grace gets what was sent meanwhile, once each, in order.

The store is written once over `Documents`, a compare-and-set key-value
role: a dict in memory, a Lua CAS on Redis, a KV bucket on NATS. Expiry uses
each node's wall clock (UTC), as the NATS presence store does.

Documents (kind, id):
    call, <call id>       the call, its participants {session: {u, at, conn, exp}}
    room-calls, <room>    {"calls": [ids]} live calls of the room
    calls-index, ""       {call id: room id} of every call not yet forgotten
    signals, <session>    {"seq": last seq given, "items": [[seq, signal], ...]}
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol, TypeVar

import orjson

from .codecs import from_iso_utc, to_iso_utc
from .errors import Conflict, LimitReached, Missing
from .markers import KEEP
from .records import utcnow

T = TypeVar("T")


Change = Callable[[Any], tuple[Any, T]]
"""current value (None: absent) -> (new value, KEEP, or None to delete; result)."""


class Documents(Protocol):
    """JSON documents changed by compare-and-set, one implementation per backend."""

    async def read(self, kind: str, ident: str) -> Any:
        """The decoded document, None if absent."""
        ...

    async def mutate(self, kind: str, ident: str, change: Change[T]) -> T:
        """Apply `change` atomically (retried on a conflict; it may raise to abort)."""
        ...


# Ended calls stay readable this long, so a late signal or join is told the
# call ended rather than that it never existed.
ENDED_KEPT_SECONDS: Final = 60.0


@dataclass(frozen=True, slots=True)
class CallParticipant:
    user_id: str
    session_id: str
    joined_at: datetime
    # The connection the session is bound to (None: none now, it expires).
    conn_id: str | None = None
    expires_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Call:
    id: str
    room_id: str
    started_by: str
    started_at: datetime
    ended_at: datetime | None = None
    metadata: Any = None
    participants: tuple[CallParticipant, ...] = field(default_factory=tuple)

    @property
    def live(self) -> bool:
        return self.ended_at is None

    def participant(self, session_id: str) -> CallParticipant | None:
        return next((p for p in self.participants if p.session_id == session_id), None)


@dataclass(frozen=True, slots=True)
class CallSignal:
    call_id: str
    from_user_id: str
    from_session_id: str
    kind: str
    payload: Any


@dataclass(frozen=True, slots=True)
class CallChange:
    """What `sweep` and the removals found: a participant left, or a call ended."""

    type: str  # "left" or "ended"
    call: Call
    participant: CallParticipant | None = None


def participant_to_dict(p: CallParticipant) -> dict[str, Any]:
    return {
        "u": p.user_id,
        "s": p.session_id,
        "at": to_iso_utc(p.joined_at),
        "conn": p.conn_id,
        "exp": p.expires_at,
    }


def participant_from_dict(d: dict[str, Any]) -> CallParticipant:
    return CallParticipant(
        user_id=d["u"],
        session_id=d["s"],
        joined_at=from_iso_utc(d["at"]),
        conn_id=d["conn"],
        expires_at=d["exp"],
    )


def call_to_dict(c: Call) -> dict[str, Any]:
    return {
        "id": c.id,
        "room": c.room_id,
        "by": c.started_by,
        "at": to_iso_utc(c.started_at),
        "end": None if c.ended_at is None else to_iso_utc(c.ended_at),
        "meta": c.metadata,
        "parts": [participant_to_dict(p) for p in c.participants],
    }


def call_from_dict(d: dict[str, Any]) -> Call:
    return Call(
        id=d["id"],
        room_id=d["room"],
        started_by=d["by"],
        started_at=from_iso_utc(d["at"]),
        ended_at=None if d["end"] is None else from_iso_utc(d["end"]),
        metadata=d["meta"],
        participants=tuple(participant_from_dict(p) for p in d["parts"]),
    )


def signal_to_dict(s: CallSignal) -> dict[str, Any]:
    return {
        "call": s.call_id,
        "u": s.from_user_id,
        "s": s.from_session_id,
        "kind": s.kind,
        "payload": s.payload,
    }


def signal_from_dict(d: dict[str, Any]) -> CallSignal:
    return CallSignal(d["call"], d["u"], d["s"], d["kind"], d["payload"])


def _with_parts(doc: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {**doc, "parts": parts}


class CallStore:
    """Calls, their participants and the per-session signal buffers."""

    def __init__(self, docs: Documents) -> None:
        self._docs = docs

    async def start(self, call: Call) -> Call:
        def create(doc: Any) -> tuple[Any, None]:
            if doc is not None:
                raise Conflict(f"call id {call.id!r} is taken")
            return call_to_dict(call), None

        await self._docs.mutate("call", call.id, create)
        await self._docs.mutate("room-calls", call.room_id, _adding(call.id))
        await self._docs.mutate("calls-index", "", _indexing(call.id, call.room_id))
        return call

    async def get(self, call_id: str) -> Call | None:
        doc = await self._docs.read("call", call_id)
        return None if doc is None else call_from_dict(doc)

    async def live_in_room(self, room_id: str) -> list[Call]:
        doc = await self._docs.read("room-calls", room_id)
        found = []
        for call_id in (doc or {}).get("calls", []):
            call = await self.get(call_id)
            if call is not None and call.live:
                found.append(call)
        return found

    async def join(
        self,
        call_id: str,
        participant: CallParticipant,
        *,
        max_participants: int,
        resume: bool,
    ) -> CallParticipant:
        """Add the session (or, with `resume`, rebind one of the user's);
        Missing if the call is unknown or ended, or the session to resume is
        not the user's; LimitReached when the call is full."""

        def change(doc: Any) -> tuple[Any, CallParticipant]:
            if doc is None or doc["end"] is not None:
                raise Missing(f"call {call_id!r} is not live")
            parts = [p for p in doc["parts"] if p["exp"] > time.time()]
            mine = next((p for p in parts if p["s"] == participant.session_id), None)
            if resume:
                if mine is None or mine["u"] != participant.user_id:
                    raise Missing(f"no session {participant.session_id!r} of yours in the call")
                kept = {**mine, "conn": participant.conn_id, "exp": participant.expires_at}
                others = [p for p in parts if p["s"] != participant.session_id]
                return _with_parts(doc, [*others, kept]), participant_from_dict(kept)
            if len(parts) >= max_participants:
                raise LimitReached("call participants", max_participants)
            return _with_parts(doc, [*parts, participant_to_dict(participant)]), participant

        return await self._docs.mutate("call", call_id, change)

    async def bind(
        self, call_id: str, session_id: str, user_id: str, conn_id: str, *, ttl: float
    ) -> bool:
        """Bind the user's live session to a connection; False if it is not theirs."""

        def change(doc: Any) -> tuple[Any, bool]:
            if doc is None or doc["end"] is not None:
                return KEEP, False
            now = time.time()
            parts = doc["parts"]
            for i, p in enumerate(parts):
                if p["s"] == session_id and p["u"] == user_id and p["exp"] > now:
                    new = [*parts[:i], {**p, "conn": conn_id, "exp": now + ttl}, *parts[i + 1 :]]
                    return _with_parts(doc, new), True
            return KEEP, False

        return await self._docs.mutate("call", call_id, change)

    async def refresh(self, call_id: str, conn_ids: set[str], *, ttl: float) -> None:
        """Extend the expiry of the sessions bound to these connections (a
        node's heartbeat for its open connections)."""

        def change(doc: Any) -> tuple[Any, None]:
            if doc is None or doc["end"] is not None:
                return KEEP, None
            exp = time.time() + ttl
            parts = [{**p, "exp": exp} if p["conn"] in conn_ids else p for p in doc["parts"]]
            return _with_parts(doc, parts), None

        await self._docs.mutate("call", call_id, change)

    async def release(self, call_id: str, conn_id: str, *, grace: float) -> None:
        """The connection closed: its sessions expire after `grace`."""

        def change(doc: Any) -> tuple[Any, None]:
            if doc is None or doc["end"] is not None:
                return KEEP, None
            exp = time.time() + grace
            parts = [
                {**p, "conn": None, "exp": min(p["exp"], exp)} if p["conn"] == conn_id else p
                for p in doc["parts"]
            ]
            return _with_parts(doc, parts), None

        await self._docs.mutate("call", call_id, change)

    async def remove(
        self, call_id: str, keep: Callable[[CallParticipant], bool], *, end_if_empty: bool = True
    ) -> list[CallChange]:
        """Remove the participants `keep` refuses (and the expired ones); end
        the call if none is left. What changed, each reported once."""

        def change(doc: Any) -> tuple[Any, list[CallChange]]:
            if doc is None or doc["end"] is not None:
                return KEEP, []
            now = time.time()
            kept, gone = [], []
            for p in doc["parts"]:
                participant = participant_from_dict(p)
                if p["exp"] > now and keep(participant):
                    kept.append(p)
                else:
                    gone.append(participant)
            if not gone:
                return KEEP, []
            new = _with_parts(doc, kept)
            if not kept and end_if_empty:
                new["end"] = to_iso_utc(utcnow())
            call = call_from_dict(new)
            changes = [CallChange("left", call, p) for p in gone]
            if call.ended_at is not None:
                changes.append(CallChange("ended", call))
            return new, changes

        changes = await self._docs.mutate("call", call_id, change)
        if any(c.type == "ended" for c in changes):
            await self._docs.mutate("room-calls", changes[0].call.room_id, _removing(call_id))
        return changes

    async def end(self, call_id: str) -> Call | None:
        """End the call; the ended call, or None if it was not live."""

        def change(doc: Any) -> tuple[Any, Call | None]:
            if doc is None or doc["end"] is not None:
                return KEEP, None
            new = {**doc, "end": to_iso_utc(utcnow())}
            return new, call_from_dict(new)

        ended = await self._docs.mutate("call", call_id, change)
        if ended is not None:
            await self._docs.mutate("room-calls", ended.room_id, _removing(call_id))
        return ended

    async def sweep(self, *, empty_grace: float) -> list[CallChange]:
        """Remove expired participants, end calls left empty (a call nobody
        joined ends `empty_grace` after it started), forget old ended calls."""
        index = await self._docs.read("calls-index", "") or {}
        changes: list[CallChange] = []
        now = time.time()
        for call_id in list(index):
            call = await self.get(call_id)
            if call is None or (
                call.ended_at is not None and call.ended_at.timestamp() + ENDED_KEPT_SECONDS < now
            ):
                await self._forget(call_id)
                continue
            if not call.live:
                continue
            if not call.participants and call.started_at.timestamp() + empty_grace < now:
                ended = await self.end(call_id)
                if ended is not None:
                    changes.append(CallChange("ended", ended))
            elif any(p.expires_at <= now for p in call.participants):
                changes += await self.remove(call_id, lambda p: True)
        return changes

    async def _forget(self, call_id: str) -> None:
        def drop(doc: Any) -> tuple[Any, None]:
            return None, None

        def unindex(doc: Any) -> tuple[Any, None]:
            if doc is None or call_id not in doc:
                return KEEP, None
            return {k: v for k, v in doc.items() if k != call_id}, None

        await self._docs.mutate("call", call_id, drop)
        await self._docs.mutate("calls-index", "", unindex)

    async def push_signal(self, session_id: str, signal: CallSignal, *, max_buffered: int) -> int:
        """Buffer a signal for the session until delivered; its sequence
        number. LimitReached when the session's buffer is full."""

        def change(doc: Any) -> tuple[Any, int]:
            doc = doc or {"seq": 0, "items": []}
            if len(doc["items"]) >= max_buffered:
                raise LimitReached("undelivered signals", max_buffered)
            seq = doc["seq"] + 1
            return {"seq": seq, "items": [*doc["items"], [seq, signal_to_dict(signal)]]}, seq

        return await self._docs.mutate("signals", session_id, change)

    async def pending(self, session_id: str) -> list[tuple[int, CallSignal]]:
        doc = await self._docs.read("signals", session_id) or {"items": []}
        return [(seq, signal_from_dict(s)) for seq, s in doc["items"]]

    async def ack(self, session_id: str, seq: int) -> None:
        """Drop the session's buffered signals up to `seq`: delivered."""

        def change(doc: Any) -> tuple[Any, None]:
            if doc is None or not any(s <= seq for s, _ in doc["items"]):
                return KEEP, None
            return {**doc, "items": [i for i in doc["items"] if i[0] > seq]}, None

        await self._docs.mutate("signals", session_id, change)

    async def drop_session(self, session_id: str) -> None:
        def drop(doc: Any) -> tuple[Any, None]:
            return (KEEP if doc is None else None), None

        await self._docs.mutate("signals", session_id, drop)


def _adding(call_id: str) -> Change[None]:
    def change(doc: Any) -> tuple[Any, None]:
        calls = (doc or {}).get("calls", [])
        return {"calls": [*calls, call_id]}, None

    return change


def _removing(call_id: str) -> Change[None]:
    def change(doc: Any) -> tuple[Any, None]:
        calls = [c for c in (doc or {}).get("calls", []) if c != call_id]
        return ({"calls": calls} if calls else None), None

    return change


def _indexing(call_id: str, room_id: str) -> Change[None]:
    def change(doc: Any) -> tuple[Any, None]:
        return {**(doc or {}), call_id: room_id}, None

    return change


class MemoryDocuments:
    """`Documents` in a dict of encoded JSON (encoded like every backend's)."""

    def __init__(self) -> None:
        self._docs: dict[tuple[str, str], bytes] = {}

    async def read(self, kind: str, ident: str) -> Any:
        raw = self._docs.get((kind, ident))
        return None if raw is None else orjson.loads(raw)

    async def mutate(self, kind: str, ident: str, change: Change[T]) -> T:
        # One event loop, no await between the read and the write: atomic.
        new, result = change(await self.read(kind, ident))
        if new is None:
            self._docs.pop((kind, ident), None)
        elif new is not KEEP:
            self._docs[(kind, ident)] = orjson.dumps(new)
        return result
