"""Rooms, members, roles and bans.

OWNER > ADMIN > MEMBER. Admins manage members and bans below their own rank;
only the owner deletes the room, changes roles and makes admins. A private
room is invisible (NOT_FOUND) to everyone but its members.

A server admin (Viewer.is_admin) reads any room, and stands in for its
owner in every act that needs a role above MEMBER, member or not; acts of a
member (sending, leaving, typing) still need membership. The two checks
below are the only place this is decided, and each act done on that
authority alone is logged (`admin act`, one JSON line: who, what, which room).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from typing import Any

from backends.errors import Conflict, LimitReached
from backends.records import MemberQuota, MessageKind, NewMessage, Room, RoomMember, RoomRole
from resolvers.errors import BadUserInput, Forbidden, LimitExceeded, NotFound

from .event_rates import spend_event_budget
from .incarnations import require_alive
from .posting import post, revoke_access
from .services import Services, Viewer
from .validation import check_payload_size, new_id, optional_text, required_text

log = logging.getLogger(__name__)

_NAME_MAX = 200
_DESCRIPTION_MAX = 2000
_METADATA_MAX = 16 * 1024


def _admin_act(viewer: Viewer, act: str, room_id: str) -> None:
    """Log an act a server admin may do only as an admin."""
    # JSON: ids are written by users; this keeps them one quoted field each.
    fields = {"admin": viewer.user_id, "act": act, "room": room_id}
    log.info("admin act %s", json.dumps(fields, ensure_ascii=False))


async def readable_room(
    services: Services, viewer: Viewer, room_id: str, *, act: str = "read"
) -> Room:
    """The room if the viewer may read it: public, or private and a member,
    or the viewer is a server admin."""
    room, as_admin = await _readable(services, viewer, room_id)
    if as_admin:
        _admin_act(viewer, act, room_id)
    return room


async def _readable(services: Services, viewer: Viewer, room_id: str) -> tuple[Room, bool]:
    """readable_room's room, and whether only being a server admin let the viewer in."""
    services.require("rooms")
    rooms = services.backends.rooms
    # Both at once: this check comes before every read and send.
    room, banned = await asyncio.gather(
        rooms.get(room_id), rooms.is_banned(room_id, viewer.user_id)
    )
    if room is None:
        raise NotFound(f"room {room_id!r} not found", roomId=room_id)
    if room.is_private or banned:
        member = await services.backends.rooms.get_member(room_id, viewer.user_id)
        if member is None:
            if viewer.is_admin:
                return room, True
            if room.is_private:
                raise NotFound(f"room {room_id!r} not found", roomId=room_id)
            raise Forbidden(f"you are banned from room {room_id!r}", roomId=room_id)
    return room, False


async def membership(
    services: Services,
    viewer: Viewer,
    room_id: str,
    *,
    at_least: RoomRole = RoomRole.MEMBER,
    act: str = "act",
) -> tuple[Room, RoomMember]:
    """The room and the viewer's membership, which must rank at least `at_least`.

    Above MEMBER, a server admin who is not the owner acts as the owner: the
    membership returned is then theirs as OWNER (not stored), and the act is logged.
    """
    # Logged below if at all: one act, one line.
    room, _ = await _readable(services, viewer, room_id)
    member = await services.backends.rooms.get_member(room_id, viewer.user_id)
    # Above MEMBER a server admin stands in for the owner; a member's act
    # (send, leave, type) needs membership, admin or not.
    if (
        viewer.is_admin
        and at_least is not RoomRole.MEMBER
        and (member is None or member.role is not RoomRole.OWNER)
    ):
        if member is None:
            # Deleted since it was read: NOT_FOUND, as for anyone.
            await require_alive(services, room_id, room.incarnation)
        _admin_act(viewer, act, room_id)
        return room, RoomMember(room_id=room_id, user_id=viewer.user_id, role=RoomRole.OWNER)
    if member is None:
        # Deleted since it was read (its members went with it): NOT_FOUND.
        await require_alive(services, room_id, room.incarnation)
        raise Forbidden(f"you are not a member of room {room_id!r}", roomId=room_id)
    if member.role.rank < at_least.rank:
        raise Forbidden(f"this needs the {at_least.value} role in room {room_id!r}", roomId=room_id)
    return room, member


async def my_role(services: Services, viewer: Viewer, room_id: str) -> RoomRole | None:
    member = await services.backends.rooms.get_member(room_id, viewer.user_id)
    return member.role if member else None


async def list_rooms(services: Services, viewer: Viewer, *, mine: bool) -> list[Room]:
    services.require("rooms")
    rooms = services.backends.rooms
    if mine:
        return await rooms.list_joined(viewer.user_id)
    return await rooms.list_visible(viewer.user_id)


async def create_room(
    services: Services,
    viewer: Viewer,
    *,
    name: str,
    description: str | None,
    is_private: bool,
    metadata: Any,
    room_id: str | None,
) -> Room:
    services.require("rooms")
    await spend_event_budget(services, viewer, "rooms")
    check_payload_size(_METADATA_MAX, "metadata", metadata)
    room = Room(
        id=room_id if room_id is not None else new_id(),
        name=required_text(name, "name", max_length=_NAME_MAX),
        description=optional_text(description, "description", max_length=_DESCRIPTION_MAX),
        owner=viewer.user_id,
        is_private=is_private,
        metadata=metadata,
    )
    try:
        owner = await services.backends.rooms.create(
            room, max_rooms_per_user=services.settings.max_rooms_per_user
        )
    except Conflict as exc:
        raise BadUserInput(f"room id {room.id!r} is taken", argument="id") from exc
    await _announce(services, room, MessageKind.JOIN, owner.user_id, "room.created", None)
    services.metrics.rooms_joins.inc()
    return room


async def update_room(
    services: Services, viewer: Viewer, room_id: str, changes: dict[str, Any]
) -> Room:
    await spend_event_budget(services, viewer, "rooms")
    room, me = await membership(
        services, viewer, room_id, at_least=RoomRole.ADMIN, act="updateRoom"
    )
    fields: dict[str, Any] = {}
    if "name" in changes:
        fields["name"] = required_text(changes["name"], "name", max_length=_NAME_MAX)
    if "description" in changes:
        fields["description"] = optional_text(
            changes["description"], "description", max_length=_DESCRIPTION_MAX
        )
    if "metadata" in changes:
        check_payload_size(_METADATA_MAX, "metadata", changes["metadata"])
        fields["metadata"] = changes["metadata"]
    if "is_private" in changes:
        if changes["is_private"] is None:
            raise BadUserInput("isPrivate must not be null", argument="isPrivate")
        if room.is_private and not changes["is_private"] and me.role is not RoomRole.OWNER:
            # It would show the whole history to everyone.
            raise Forbidden("only the owner may make a private room public", roomId=room_id)
        fields["is_private"] = changes["is_private"]
    updated = replace(room, **fields)
    await services.backends.rooms.update(updated)
    await _announce(
        services,
        room,
        MessageKind.SYSTEM,
        viewer.user_id,
        "room.updated",
        {"fields": sorted(_camel(k) for k in fields)},
    )
    if updated.is_private and not room.is_private:
        await revoke_access(services, room_id, None)
    return updated


async def delete_room(services: Services, viewer: Viewer, room_id: str) -> bool:
    await spend_event_budget(services, viewer, "rooms")
    room, _ = await membership(services, viewer, room_id, at_least=RoomRole.OWNER, act="deleteRoom")
    # This incarnation only: the id may have been deleted and made again since.
    deleted = await services.backends.rooms.delete(room_id, incarnation=room.incarnation)
    await services.backends.messages.drop_room(room_id, incarnation=room.incarnation)
    await revoke_access(services, room_id, None)
    return deleted


async def join_room(services: Services, viewer: Viewer, room_id: str) -> Room:
    await spend_event_budget(services, viewer, "rooms")
    room = await readable_room(services, viewer, room_id, act="joinRoom")
    rooms = services.backends.rooms
    if await rooms.get_member(room_id, viewer.user_id) is not None:
        return room
    if await rooms.is_banned(room_id, viewer.user_id) and not viewer.is_admin:
        raise Forbidden(f"you are banned from room {room_id!r}", roomId=room_id)
    if room.is_private and not viewer.is_admin:
        # readable_room let a member through; the viewer is not one
        raise NotFound(f"room {room_id!r} not found", roomId=room_id)
    _, added = await rooms.add_member(
        RoomMember(room_id=room_id, user_id=viewer.user_id, role=RoomRole.MEMBER),
        MemberQuota.own(services.settings.max_rooms_per_user),
    )
    if added:
        services.metrics.rooms_joins.inc()
        await _announce(services, room, MessageKind.JOIN, viewer.user_id, "member.joined", None)
    return room


async def leave_room(services: Services, viewer: Viewer, room_id: str) -> bool:
    await spend_event_budget(services, viewer, "rooms")
    room, member = await membership(services, viewer, room_id)
    if member.role is RoomRole.OWNER:
        raise Forbidden(
            "the owner cannot leave: hand ownership on with setMemberRole(role: OWNER) "
            "or delete the room",
            roomId=room_id,
        )
    await services.backends.rooms.remove_member(room_id, viewer.user_id)
    await _announce(services, room, MessageKind.LEAVE, viewer.user_id, "member.left", None)
    await revoke_access(services, room_id, viewer.user_id)
    return True


async def add_member(
    services: Services, viewer: Viewer, room_id: str, user_id: str, role: RoomRole
) -> RoomMember:
    await spend_event_budget(services, viewer, "rooms")
    room, me = await membership(services, viewer, room_id, at_least=RoomRole.ADMIN, act="addMember")
    if role is RoomRole.OWNER:
        raise BadUserInput(
            "a room has one owner: use setMemberRole(role: OWNER) to hand it on", argument="role"
        )
    if role is RoomRole.ADMIN and me.role is not RoomRole.OWNER:
        raise Forbidden("only the owner makes admins", roomId=room_id)
    rooms = services.backends.rooms
    if await rooms.is_banned(room_id, user_id):
        raise Forbidden(f"{user_id!r} is banned from this room: unban first", roomId=room_id)
    limit = services.settings.max_room_additions_per_user
    try:
        # Others' additions count apart from the user's own rooms, so they
        # can never use up the user's max_rooms_per_user.
        new_member = RoomMember(room_id=room_id, user_id=user_id, role=role)
        member, added = await rooms.add_member(
            new_member, MemberQuota.of(new_member, viewer.user_id, max_room_additions=limit)
        )
    except LimitReached as exc:
        raise LimitExceeded(
            f"{user_id!r} has been added to {limit} rooms by others, the limit"
            " (max_room_additions_per_user): they can still join rooms themselves",
            limit=limit,
            setting="max_room_additions_per_user",
        ) from exc
    if added:
        services.metrics.rooms_joins.inc()
        await _announce(
            services, room, MessageKind.JOIN, user_id, "member.added", {"by": viewer.user_id}
        )
    return member


async def remove_member(services: Services, viewer: Viewer, room_id: str, user_id: str) -> bool:
    await spend_event_budget(services, viewer, "rooms")
    room, me = await membership(
        services, viewer, room_id, at_least=RoomRole.ADMIN, act="removeMember"
    )
    target = await _outranked_member(services, me, room_id, user_id)
    if target is None:
        return False
    await services.backends.rooms.remove_member(room_id, user_id)
    await _announce(
        services, room, MessageKind.LEAVE, user_id, "member.removed", {"by": viewer.user_id}
    )
    await revoke_access(services, room_id, user_id)
    return True


async def set_member_role(
    services: Services, viewer: Viewer, room_id: str, user_id: str, role: RoomRole
) -> RoomMember:
    await spend_event_budget(services, viewer, "rooms")
    room, _ = await membership(
        services, viewer, room_id, at_least=RoomRole.OWNER, act="setMemberRole"
    )
    rooms = services.backends.rooms
    target = await rooms.get_member(room_id, user_id)
    if target is None:
        raise NotFound(f"{user_id!r} is not a member of this room", roomId=room_id)
    if target.role is RoomRole.OWNER:
        if role is RoomRole.OWNER:
            return target
        # The owner on themself, or a server admin standing in for the
        # owner on the owner: either way a room keeps its one owner.
        raise BadUserInput(
            "the owner hands ownership on by making another member OWNER", argument="userId"
        )
    if role is RoomRole.OWNER:
        updated: RoomMember | None = await rooms.transfer_ownership(room_id, user_id)
    else:
        updated = await rooms.set_role(room_id, user_id, role)
    if updated is None:
        raise NotFound(f"{user_id!r} is not a member of this room", roomId=room_id)
    await _announce(
        services,
        room,
        MessageKind.SYSTEM,
        viewer.user_id,
        "member.role",
        {"userId": user_id, "role": role.value},
    )
    await revoke_access(services, room_id, user_id)
    return updated


async def ban_member(services: Services, viewer: Viewer, room_id: str, user_id: str) -> bool:
    await spend_event_budget(services, viewer, "rooms")
    room, me = await membership(services, viewer, room_id, at_least=RoomRole.ADMIN, act="banMember")
    if user_id == viewer.user_id:
        raise BadUserInput("you cannot ban yourself", argument="userId")
    await _outranked_member(services, me, room_id, user_id)
    rooms = services.backends.rooms
    was_member = await rooms.get_member(room_id, user_id) is not None
    await rooms.ban(room_id, user_id)
    if was_member:
        await _announce(
            services, room, MessageKind.LEAVE, user_id, "member.banned", {"by": viewer.user_id}
        )
    await revoke_access(services, room_id, user_id)
    return True


async def unban_member(services: Services, viewer: Viewer, room_id: str, user_id: str) -> bool:
    await membership(services, viewer, room_id, at_least=RoomRole.ADMIN, act="unbanMember")
    return await services.backends.rooms.unban(room_id, user_id)


async def _outranked_member(
    services: Services, me: RoomMember, room_id: str, user_id: str
) -> RoomMember | None:
    """The target member, who must rank below the acting one (None if not a member)."""
    target = await services.backends.rooms.get_member(room_id, user_id)
    if target is not None and target.role.rank >= me.role.rank:
        raise Forbidden(
            f"you cannot act on a member whose role is {target.role.value}", roomId=room_id
        )
    return target


async def _announce(
    services: Services, room: Room, kind: MessageKind, user_id: str, event: str, data: Any
) -> None:
    """Post a room event into the history of the incarnation of `room` (the
    one the caller checked)."""
    await post(
        services,
        NewMessage(kind=kind, user_id=user_id, room_id=room.id, event=event, data=data),
        incarnation=room.incarnation,
    )


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
