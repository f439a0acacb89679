"""The resume map of a WebSocket's `connection_init` payload, read and
bounded at the edge: what it means is resolvers/resume.py's."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from resolvers.cursors import Cursor, parse_cursor
from resolvers.errors import BadUserInput
from resolvers.resume import NO_RESUME, ResumeMap

from .bounds import Ident

VERSION = 1
# One entry per live roomMessages subscription of a client: far more than
# any client keeps, few enough that checking them costs nothing.
MAX_ENTRIES = 100

ARGUMENT = "connectionParams.resume"

_ID = Ident()


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
        _ID(room_id, f"{ARGUMENT}.{where}.roomId")
        if thread_id is not None:
            _ID(thread_id, f"{ARGUMENT}.{where}.threadId")
        key = (room_id, thread_id)
        if key in cursors:
            raise _bad(f"{where} repeats an earlier entry's roomId and threadId")
        cursors[key] = parse_cursor(after, argument=f"{ARGUMENT}.{where}.after")
    return ResumeMap(MappingProxyType(cursors)) if cursors and history else NO_RESUME
