"""The life of call participants outside the call mutations: connections
that close (grace), the heartbeat that keeps open ones in their calls, the
sweep that removes expired ones (a killed node's included), and members who
lose access to the room.

Below resolvers/calls.py so that presence (connections) and posting (access
changes) can call it without importing the call mutations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from backends import topics
from backends.calls import CallChange, CallParticipant
from backends.errors import BackendError
from backends.events import CallEvent, SessionEvent

from .services import Services

log = logging.getLogger(__name__)


async def publish_changes(services: Services, changes: list[CallChange]) -> None:
    """Tell the room (callEvents) and each removed session (its callSignals ends)."""
    hub = services.backends.hub
    for change in changes:
        await hub.publish(
            topics.room_calls(change.call.room_id),
            CallEvent(change.type, change.call, change.participant),
        )
        gone = [change.participant] if change.participant else list(change.call.participants)
        for p in gone:
            await hub.publish(
                topics.call_session(p.session_id), SessionEvent(p.session_id, 0, None)
            )
            # Nobody may resume it now: its undelivered signals go.
            await services.backends.calls.drop_session(p.session_id)


def track(services: Services, conn_id: str, session_id: str, call_id: str) -> None:
    services.call_sessions.setdefault(conn_id, {})[session_id] = call_id


def untrack(services: Services, session_id: str) -> None:
    for conn_id, sessions in list(services.call_sessions.items()):
        if sessions.pop(session_id, None) is not None and not sessions:
            del services.call_sessions[conn_id]


async def release_connection(services: Services, conn_id: str) -> None:
    """The connection closed: its call sessions leave after `presence_grace`
    unless resumed (joinCall with their sessionId) meanwhile."""
    sessions = services.call_sessions.pop(conn_id, {})
    grace = services.settings.presence_grace.total_seconds()
    for call_id in set(sessions.values()):
        try:
            await services.backends.calls.release(call_id, conn_id, grace=grace)
        except BackendError as exc:
            # Nothing refreshes them any more: they leave after the TTL.
            log.warning("call sessions of %s left to expire: %s", conn_id, exc)


async def refresh_calls(services: Services) -> None:
    """Keep the sessions of this process's open connections in their calls."""
    ttl = services.settings.presence_ttl.total_seconds()
    by_call: dict[str, set[str]] = {}
    for conn_id, sessions in list(services.call_sessions.items()):
        for call_id in sessions.values():
            by_call.setdefault(call_id, set()).add(conn_id)
    for call_id, conn_ids in by_call.items():
        await services.backends.calls.refresh(call_id, conn_ids, ttl=ttl)


async def expire_calls(services: Services) -> None:
    """Remove expired participants cluster-wide; end calls left empty."""
    grace = services.settings.presence_ttl.total_seconds()
    changes = await services.backends.calls.sweep(empty_grace=grace)
    for change in changes:
        if change.participant is not None:
            untrack(services, change.participant.session_id)
    await publish_changes(services, changes)


async def remove_lost_members(services: Services, room_id: str, user_id: str | None) -> None:
    """`user_id` (None: anyone) may have lost access to the room: remove
    those of its call participants who are no longer members."""
    calls = services.backends.calls
    rooms = services.backends.rooms
    live = await calls.live_in_room(room_id)
    if not live:
        return
    room = await rooms.get(room_id)
    members = set() if room is None else {m.user_id for m in await rooms.members(room_id)}
    keep: Callable[[CallParticipant], bool] = lambda p: p.user_id in members  # noqa: E731
    for call in live:
        if room is None:
            ended = await calls.end(call.id)
            changes = [] if ended is None else [CallChange("ended", ended)]
        else:
            changes = await calls.remove(call.id, keep)
        for change in changes:
            if change.participant is not None:
                untrack(services, change.participant.session_id)
        await publish_changes(services, changes)
