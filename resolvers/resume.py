"""The resume map: where a reconnecting client's roomMessages subscriptions
pick up, sent once per WebSocket connection in its `connection_init` payload.

Stock clients (graphql-ws, Apollo, urql) resubscribe after a reconnect with
the variables they started with, so `after` alone would replay too much or
nothing. Only the client knows what it received: it sends, on every connect,

    "resume": {"version": 1, "roomMessages": [
        {"roomId": "<id>", "threadId": "<id>" (optional), "after": "<cursor>"}, ...]}

and a roomMessages subscription on that connection with the same roomId and
threadId (none for none) starts after that cursor instead of its own `after`,
unless its own is later in the same epoch. Channel messages are not stored,
so only roomMessages resume. The README ("Resuming after a reconnect") is the
public description; a change of shape gets a new version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from serving.errors import BadUserInput

from .cursors import Cursor, parse_cursor
from .validation import check_id

VERSION = 1
# One entry per live roomMessages subscription of a client: far more than
# any client keeps, few enough that checking them costs nothing.
MAX_ENTRIES = 100

ARGUMENT = "connectionParams.resume"


@dataclass(frozen=True, slots=True)
class ResumeMap:
    """Cursors by (roomId, threadId), as the client last received them."""

    room_messages: Mapping[tuple[str, str | None], Cursor] = field(default_factory=dict)

    def after(self, room_id: str, thread_id: str | None, after: str | None) -> str | None:
        """The `after` a roomMessages subscription starts from on this connection."""
        resumed = self.room_messages.get((room_id, thread_id))
        if resumed is None:
            return after
        if after is not None:
            # A malformed `after` stays the subscription's own, for its own error.
            try:
                own = parse_cursor(after, argument="after")
            except BadUserInput:
                return after
            if own.epoch == resumed.epoch and own.offset >= resumed.offset:
                return after
        return str(resumed)


NO_RESUME = ResumeMap()


def _bad(message: str) -> BadUserInput:
    return BadUserInput(f"{ARGUMENT}: {message}", argument=ARGUMENT)


def parse_resume(params: Mapping[str, object] | None, *, history: bool = True) -> ResumeMap:
    """The resume map of a connection_init payload (NO_RESUME without one);
    BAD_USER_INPUT, naming what is wrong, for a malformed one. Without
    `history` (message history disabled) nothing can be replayed: the map is
    checked, then ignored, so a client's helper works on any server."""
    value = (params or {}).get("resume")
    if value is None:
        return NO_RESUME
    if not isinstance(value, dict):
        raise _bad("must be an object")
    version = value.get("version")
    if type(version) is not int or version != VERSION:  # not True, not 1.0
        raise _bad(f"version must be {VERSION}")
    unknown = sorted(str(k)[:40] for k in value if k not in ("version", "roomMessages"))
    if unknown:
        raise _bad(f"unknown key {unknown[0]!r}")
    entries = value.get("roomMessages", [])
    if not isinstance(entries, list):
        raise _bad("roomMessages must be a list")
    if len(entries) > MAX_ENTRIES:
        raise _bad(f"roomMessages has more than {MAX_ENTRIES} entries")
    cursors: dict[tuple[str, str | None], Cursor] = {}
    for index, entry in enumerate(entries):
        where = f"roomMessages[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"roomId", "threadId", "after"}:
            raise _bad(f"{where} must be an object with roomId, after and optional threadId")
        room_id, thread_id, after = entry.get("roomId"), entry.get("threadId"), entry.get("after")
        if not isinstance(room_id, str) or not isinstance(after, str):
            raise _bad(f"{where}: roomId and after must be strings")
        if thread_id is not None and not isinstance(thread_id, str):
            raise _bad(f"{where}: threadId must be a string or null")
        check_id(room_id, f"{ARGUMENT}.{where}.roomId")
        if thread_id is not None:
            check_id(thread_id, f"{ARGUMENT}.{where}.threadId")
        key = (room_id, thread_id)
        if key in cursors:
            raise _bad(f"{where} repeats an earlier entry's roomId and threadId")
        cursors[key] = parse_cursor(after, argument=f"{ARGUMENT}.{where}.after")
    return ResumeMap(MappingProxyType(cursors)) if cursors and history else NO_RESUME
