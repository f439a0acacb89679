"""What only server admins may do (Viewer.is_admin); acting in rooms as
their owner is decided with the other room permissions (rooms.membership)."""

from __future__ import annotations

from typing import Any

from backends.records import Message, MessageKind, NewMessage
from resolvers.errors import Forbidden, NotFound

from .posting import check_outgoing, post
from .services import Services, Viewer
from .validation import SYSTEM_USER_ID

SYSTEM_BROADCAST_EVENT = "system.broadcast"


def require_admin(viewer: Viewer) -> None:
    """FORBIDDEN unless the viewer is a server admin; checked before anything
    is looked up, so the refusal tells nothing about what was asked for."""
    if not viewer.is_admin:
        raise Forbidden("this needs a server admin")


async def broadcast_system_message(
    services: Services, viewer: Viewer, room_id: str, data: Any
) -> Message:
    """A SYSTEM message in the room, from SYSTEM_USER_ID, stored and
    delivered like any message; its metadata names the admin who sent it."""
    require_admin(viewer)
    services.require("rooms")
    room = await services.backends.rooms.get(room_id)
    if room is None:
        raise NotFound(f"room {room_id!r} not found", roomId=room_id)
    metadata = {"by": viewer.user_id}
    # Bounded and rate-limited like sendMessage, on the admin's own rate.
    await check_outgoing(services, viewer, None, data, metadata)
    message, _ = await post(
        services,
        NewMessage(
            kind=MessageKind.SYSTEM,
            user_id=SYSTEM_USER_ID,
            room_id=room_id,
            event=SYSTEM_BROADCAST_EVENT,
            data=data,
            metadata=metadata,
        ),
        incarnation=room.incarnation,
    )
    return message
