"""Every room, private ones too, for server admins (Query.adminRooms): the
admin page lists rooms its admin is not in, which Query.rooms does not show.

A page walks the store's own pages of room ids (RoomStore.room_id_page, by
id on memory, SQLite, PostgreSQL and NATS, in SCAN order on Redis) and
fetches the records of the ids it returns only. Its cursor is the store's
cursor and how many ids of that store page were already taken, so a page
costs at most `first` record reads, and with `idPrefix` (matched before any
record is read) at most MAX_IDS_EXAMINED ids looked at: a prefix that
matches few rooms gives short pages that go on, never a walk of every room.
A room created or deleted between two pages may be missed or listed twice,
as a SCAN walk may list one twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from backends.records import Room

from .admin import require_admin
from .errors import BadUserInput
from .opaque_cursor import decode_cursor, encode_cursor
from .services import Services, Viewer

# Ids looked at per page at most, matching idPrefix or not.
MAX_IDS_EXAMINED = 2000


@dataclass(frozen=True, slots=True)
class RoomListing:
    rooms: list[Room]
    # Where the next page starts; None at the end.
    end_cursor: str | None


@dataclass(frozen=True, slots=True)
class _Position:
    store_cursor: str  # RoomStore.room_id_page's cursor ("" : the first page)
    taken: int  # ids of that store page already walked


def _encode(position: _Position) -> str:
    return encode_cursor([position.store_cursor, position.taken])


def _is_position(value: list[Any]) -> bool:
    return (
        len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and 0 <= value[1] <= MAX_IDS_EXAMINED * 10
    )


def _decode(after: str) -> _Position:
    store_cursor, taken = decode_cursor(after, _is_position, "adminRooms")
    return _Position(store_cursor, taken)


async def list_all_rooms(
    services: Services,
    viewer: Viewer,
    *,
    first: int | None,
    after: str | None,
    id_prefix: str | None,
) -> RoomListing:
    require_admin(viewer)
    services.require("rooms")
    limit_max = services.settings.max_page_size
    limit = limit_max if first is None else first
    if not 1 <= limit <= limit_max:
        raise BadUserInput(f"first must be between 1 and {limit_max}", argument="first")
    store = services.backends.rooms
    position = _decode(after) if after else _Position("", 0)
    found: list[str] = []
    examined = 0
    while True:
        page, following = await store.room_id_page(position.store_cursor, limit=limit)
        ids = list(dict.fromkeys(page))  # an id may come twice (SCAN)
        taken = position.taken
        while taken < len(ids) and len(found) < limit and examined < MAX_IDS_EXAMINED:
            if id_prefix is None or ids[taken].startswith(id_prefix):
                found.append(ids[taken])
            taken += 1
            examined += 1
        if taken < len(ids):  # full, or enough looked at: stop within this store page
            next_position: _Position | None = _Position(position.store_cursor, taken)
            break
        if not following:
            next_position = None
            break
        position = _Position(following, 0)
        if len(found) == limit or examined >= MAX_IDS_EXAMINED:
            next_position = position
            break
    records = await asyncio.gather(*(store.get(room_id) for room_id in found))
    return RoomListing(
        rooms=[r for r in records if r is not None],  # deleted meanwhile: left out
        end_cursor=None if next_position is None else _encode(next_position),
    )
