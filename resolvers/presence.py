"""Presence: state you can query, and events when it changes.

Each WebSocket connection is a presence entry that expires unless the
heartbeat refreshes it, so a process that dies leaves no one online. Changes
are published to the user's topic and to the topic of every room they are in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from backends import topics
from backends.events import AccessEvent, Event, PresenceEvent
from backends.hub import RESYNC, Subscription
from backends.records import PresenceEntry, Status
from serving.errors import BadUserInput

from .rooms import readable_room
from .services import Services, Viewer
from .stream_signals import LIVE, AccessChange, Signal
from .validation import optional_text

_MAX_WATCHED_USERS = 200


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
        await publish_presence(services, [user_id])


async def close_connection(services: Services, user_id: str, conn_id: str) -> None:
    """Release a connection that `open_connection` counted."""
    services.connections.pop(conn_id, None)
    services.metrics.connections_active.dec()
    await services.backends.presence.disconnect(
        user_id, conn_id, grace=services.settings.presence_grace.total_seconds()
    )


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
    entry = await services.backends.presence.set_status(viewer.user_id, status, text)
    await _publish_entries(services, [entry])
    return entry


async def presence_of(
    services: Services, viewer: Viewer, user_ids: list[str]
) -> list[PresenceEntry]:
    services.require("presence")
    check_user_ids(user_ids)
    return await services.backends.presence.get(user_ids)


async def room_presence(services: Services, viewer: Viewer, room_id: str) -> list[PresenceEntry]:
    services.require("presence")
    await readable_room(services, viewer, room_id)
    members = await services.backends.rooms.members(room_id)
    return await services.backends.presence.get([m.user_id for m in members])


async def authorize_presence_stream(
    services: Services, viewer: Viewer, room_id: str | None, user_ids: list[str] | None
) -> None:
    """Raise the error the viewer gets for watching this presence, if any."""
    services.require("presence")
    if room_id is not None and user_ids is None:
        await readable_room(services, viewer, room_id)
    elif user_ids is not None and room_id is None:
        check_user_ids(user_ids)
    else:
        raise BadUserInput("pass exactly one of roomId and userIds", argument="roomId")


async def presence_stream(
    services: Services, room_id: str | None, user_ids: list[str] | None
) -> AsyncGenerator[PresenceEntry | Signal, None]:
    """Presence changes of the room's members or of the given users, for any reader."""
    if room_id is None:
        async with contextlib.aclosing(_merged_user_streams(services, user_ids or [])) as merged:
            async for entry in merged:
                yield entry
        return
    async with services.backends.hub.subscribe(topics.room_presence(room_id)) as live:
        yield LIVE
        async for item in live:
            if isinstance(item, PresenceEvent):
                yield item.entry
            elif isinstance(item, AccessEvent):
                yield AccessChange(item.user_id)
            elif item is RESYNC:
                yield AccessChange(None)


async def _merged_user_streams(
    services: Services, user_ids: list[str]
) -> AsyncGenerator[PresenceEntry | Signal, None]:
    queue: asyncio.Queue[PresenceEntry | BaseException] = asyncio.Queue(
        maxsize=services.settings.subscriber_queue_size
    )

    async def pump(live: Subscription[Event]) -> None:
        try:
            async for item in live:
                if isinstance(item, PresenceEvent):
                    # Waiting here lets the hub's bounded queue cut off a reader
                    # that stopped reading.
                    await queue.put(item.entry)
        except Exception as exc:  # surfaced to the reader below
            await queue.put(exc)

    async with contextlib.AsyncExitStack() as subscribed:
        hub = services.backends.hub
        subscriptions = [
            await subscribed.enter_async_context(hub.subscribe(topics.user_presence(u)))
            for u in dict.fromkeys(user_ids)
        ]
        yield LIVE
        tasks = [asyncio.create_task(pump(live)) for live in subscriptions]
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


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


def check_user_ids(user_ids: list[str]) -> None:
    """BAD_USER_INPUT when more users are asked for than one stream may watch."""
    if len(user_ids) > _MAX_WATCHED_USERS:
        raise BadUserInput(f"at most {_MAX_WATCHED_USERS} userIds", argument="userIds")
