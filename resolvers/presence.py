"""Presence: state you can query, and events when it changes.

Each WebSocket connection is a presence entry that expires unless the
heartbeat refreshes it, so a process that dies leaves no one online. Changes
are published to the user's topic (one of a few shared by all users, see
`topics.user_presence` and presence_watch.py) and to the topic of every room
they are in.

Who may see whose presence: with `presence_visibility: rooms` (the default)
a user sees their own and that of users who share a room with them, and a
room's presence only as its member; with `everyone`, anyone's. A user whose
presence the viewer may not see looks exactly like a user never seen: left
out of `presence(userIds:)`, and never reported by its subscription.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator

from backends import topics
from backends.errors import BackendError
from backends.events import PresenceEvent
from backends.records import PresenceEntry, Status
from resolvers.errors import BadUserInput

from .call_sessions import release_connection
from .event_rates import spend_event_budget
from .rooms import membership, readable_room
from .services import Services, Viewer
from .stream_signals import LIVE, Signal, hub_stream
from .validation import optional_text

log = logging.getLogger(__name__)


async def open_connection(services: Services, user_id: str, conn_id: str) -> None:
    """Count a new connection (WebSocket or event stream) in presence and in
    the metrics; LimitReached if the user has too many."""
    settings = services.settings
    came_online = await services.backends.presence.connect(
        user_id,
        conn_id,
        ttl=settings.presence_ttl.total_seconds(),
        max_connections=settings.max_connections_per_user,
    )
    services.connections[conn_id] = user_id
    services.metrics.connections_total.inc()
    services.metrics.connections_active.inc()
    if came_online and settings.enable_presence:
        try:
            await publish_presence(services, [user_id])
        except BaseException:
            # The caller refuses the connection: count it out again. Left
            # in `services.connections`, the heartbeat would keep a socket
            # that is gone online, and counted against the user's limit,
            # for as long as the process runs.
            await close_connection(services, user_id, conn_id)
            raise


async def close_connection(services: Services, user_id: str, conn_id: str) -> None:
    """Release a connection that `open_connection` counted.

    If the backend cannot take the release now (an outage, or load), the
    entry is left to expire: nothing refreshes it any more, so after
    `presence_ttl` it is gone, as if its process had died."""
    services.connections.pop(conn_id, None)
    services.metrics.connections_active.dec()
    await release_connection(services, conn_id)
    try:
        await services.backends.presence.disconnect(
            user_id, conn_id, grace=services.settings.presence_grace.total_seconds()
        )
    except BackendError as exc:
        log.warning("connection %s left to expire from presence: %s", conn_id, exc)


async def heartbeat(services: Services) -> None:
    """Refresh this process's connections so they outlive the next TTL."""
    ttl = services.settings.presence_ttl.total_seconds()
    presence = services.backends.presence
    for conn_id, user_id in list(services.connections.items()):
        if await presence.heartbeat(user_id, conn_id, ttl=ttl):
            continue
        # The entry expired while this process stalled; the socket is still
        # open, so the user is back online (no limit: it was counted already).
        back = await presence.connect(user_id, conn_id, ttl=ttl)
        if back and services.settings.enable_presence:
            await publish_presence(services, [user_id])


async def expire_presence(services: Services) -> None:
    """Publish OFFLINE for users whose last connection expired."""
    gone = await services.backends.presence.sweep()
    if gone and services.settings.enable_presence:
        await publish_presence(services, gone)


async def set_presence(
    services: Services, viewer: Viewer, status: Status, status_text: str | None
) -> PresenceEntry:
    services.require("presence")
    text = optional_text(status_text, "statusText", max_length=256)
    await spend_event_budget(services, viewer, "presence")
    entry = await services.backends.presence.set_status(viewer.user_id, status, text)
    await _publish_entries(services, [entry])
    return entry


async def presence_of(
    services: Services, viewer: Viewer, user_ids: list[str]
) -> list[PresenceEntry]:
    services.require("presence")
    check_user_ids(services, user_ids)
    visible = await visible_users(services, viewer, user_ids)
    return await services.backends.presence.get([u for u in user_ids if u in visible])


async def room_presence(services: Services, viewer: Viewer, room_id: str) -> list[PresenceEntry]:
    services.require("presence")
    await require_room_presence_access(services, viewer, room_id)
    members = await services.backends.rooms.members(room_id)
    return await services.backends.presence.get([m.user_id for m in members])


async def visible_users(services: Services, viewer: Viewer, user_ids: list[str]) -> set[str]:
    """Those of `user_ids` whose presence the viewer may see."""
    wanted = set(user_ids)
    # A server admin sees everyone's, as it reads every room and its members.
    if services.settings.presence_visibility == "everyone" or viewer.is_admin:
        return wanted
    rooms = services.backends.rooms
    visible = {viewer.user_id} & wanted
    others = list(wanted - visible)
    mine = {room.id for room in await rooms.list_joined(viewer.user_id)} if others else set()
    if not mine:
        return visible
    # One after the other, not gathered: a request that takes more backend
    # connections at once than the pool holds competes with itself, and under
    # load was refused (OVERLOADED) however idle the rest of the server was.
    for user in others:
        if any(room.id in mine for room in await rooms.list_joined(user)):
            visible.add(user)
    return visible


async def require_room_presence_access(services: Services, viewer: Viewer, room_id: str) -> None:
    """Raise unless the viewer may see the presence of the room's members:
    it must be readable, and with `presence_visibility: rooms` the viewer
    must be a member (members share the room; others would not), or a server
    admin (who reads any room and its members)."""
    if services.settings.presence_visibility == "everyone" or viewer.is_admin:
        await readable_room(services, viewer, room_id, act="read")
    else:
        await membership(services, viewer, room_id)


async def admits_presence(
    services: Services, viewer: Viewer, room_id: str | None, entry: PresenceEntry
) -> bool:
    """Whether a change from the presence stream reaches this viewer: a
    room's (whose members they may see, as `authorize` checked), or a
    watched user's they may see now (who shares a room with whom changes)."""
    if room_id is not None:
        return True
    return entry.user_id in await visible_users(services, viewer, [entry.user_id])


async def authorize_presence_stream(
    services: Services, viewer: Viewer, room_id: str | None, user_ids: list[str] | None
) -> None:
    """Raise the error the viewer gets for watching this presence, if any."""
    services.require("presence")
    if room_id is not None and user_ids is None:
        await require_room_presence_access(services, viewer, room_id)
    elif user_ids is not None and room_id is None:
        check_user_ids(services, user_ids)
    else:
        raise BadUserInput("pass exactly one of roomId and userIds", argument="roomId")


def presence_stream(
    services: Services, room_id: str | None, user_ids: list[str] | None
) -> AsyncGenerator[PresenceEntry | Signal, None]:
    """Presence changes of the room's members or of the given users, for any
    reader (who may see which user's: `admits_presence`)."""
    if room_id is None:
        return _watched_users(services, user_ids or [])
    return hub_stream(
        services.backends.hub,
        topics.room_presence(room_id),
        lambda item: item.entry if isinstance(item, PresenceEvent) else None,
    )


async def _watched_users(
    services: Services, user_ids: list[str]
) -> AsyncGenerator[PresenceEntry | Signal, None]:
    watch = services.presence_watch.watch(
        services.backends.hub, user_ids, services.settings.subscriber_queue_size
    )
    async with watch as changes:
        yield LIVE
        async for entry in changes:
            yield entry


async def publish_presence(services: Services, user_ids: list[str]) -> None:
    await _publish_entries(services, await services.backends.presence.get(user_ids))


async def _publish_entries(services: Services, entries: list[PresenceEntry]) -> None:
    backends = services.backends
    for entry in entries:
        event = PresenceEvent(entry)
        await backends.hub.publish(topics.user_presence(entry.user_id), event)
        for room in await backends.rooms.list_joined(entry.user_id):
            await backends.hub.publish(topics.room_presence(room.id), event)
        services.metrics.presence_updates.inc()


def check_user_ids(services: Services, user_ids: list[str]) -> None:
    """BAD_USER_INPUT when more users are asked for than `max_presence_user_ids`."""
    limit = services.settings.max_presence_user_ids
    if len(user_ids) > limit:
        raise BadUserInput(f"at most {limit} userIds", argument="userIds")
