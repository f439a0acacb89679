"""A room's history belongs to one incarnation of the room.

Rooms and history may live on different servers (`role_urls`), so no single
store can tell whether the incarnation a history belongs to is still alive:
the RoomStore decides. A MessageStore refuses (ForeignStream) to write to,
or start reading, another incarnation's history; then the room is read
again, and either the caller's incarnation is still the room's (the other
one is dead: its history is dropped and the call tried again) or the
caller's room is gone (NOT_FOUND).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from backends.errors import ForeignStream
from resolvers.errors import NotFound, Unavailable

from .services import Services

T = TypeVar("T")

_ATTEMPTS = 5


async def require_alive(services: Services, room_id: str, incarnation: str) -> None:
    """NOT_FOUND unless `incarnation` is still the room's."""
    room = await services.backends.rooms.get(room_id)
    if room is None or room.incarnation != incarnation:
        raise NotFound(f"room {room_id!r} not found", roomId=room_id)


async def with_own_history(
    services: Services, room_id: str, incarnation: str, action: Callable[[], Awaitable[T]]
) -> T:
    """Run `action` (an append or position of `incarnation`'s history),
    dropping a dead incarnation's history that stands in its way."""
    for _ in range(_ATTEMPTS):
        try:
            return await action()
        except ForeignStream as exc:
            await require_alive(services, room_id, incarnation)
            await services.backends.messages.drop_room(room_id, incarnation=exc.found)
    raise Unavailable(f"the history of room {room_id!r} keeps changing, try again")
