"""Errors the backends raise. The resolvers translate them into API errors.

`Unavailable` here is the backend's fact (its service cannot be reached);
schema/errors.py turns it into resolvers/errors.py's `Unavailable`, the API
error a client gets (extensions.code UNAVAILABLE).

BackendError
├── Conflict          the id is taken
├── Missing           the room or channel does not exist (any more)
│   └── ForeignStream the room's history belongs to another incarnation of the room
├── LimitReached      a per-user quota would be exceeded
├── DataCorrupted     stored history does not read back (a damaged compressed block)
└── Unavailable       the backing service cannot be reached
    └── Overloaded    it is up, but no connection to it came free in time
"""


class BackendError(Exception):
    pass


class Conflict(BackendError):
    pass


class Missing(BackendError, LookupError):
    pass


class ForeignStream(Missing):
    """The room's history belongs to another incarnation of the room.

    Only the RoomStore knows whether that incarnation is dead (then the
    caller drops it with `drop_room(room, incarnation=found)` and tries
    again) or newer than the caller's (then the caller's room is gone).
    """

    def __init__(self, room_id: str, found: str) -> None:
        super().__init__(f"room {room_id!r} does not exist")
        self.found = found


class LimitReached(BackendError):
    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} limit of {limit} reached")
        self.what = what
        self.limit = limit


class Unavailable(BackendError):
    pass


class Overloaded(Unavailable):
    """The backing service is up, but this process could not get a connection
    to it within the pool's wait: load, not an outage.

    A subclass of Unavailable so that every place that copes with an outage
    (one log line, no traceback, the request fails) copes with this too; the
    API tells the two apart (OVERLOADED, not UNAVAILABLE)."""


class DataCorrupted(BackendError):
    """Stored history cannot be read back as it was written (a compressed
    block damaged, its dictionary missing): the read fails, never guesses."""

    def __init__(self, room_id: str, block: int, reason: str) -> None:
        super().__init__(f"room {room_id!r} block {block}: {reason}")
        self.room_id = room_id
        self.block = block
