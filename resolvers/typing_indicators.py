"""Typing indicators: ephemeral, expiring after `typing_timeout`.

Only transitions are published (started, stopped, expired), so a client that
calls startTyping on every keystroke refreshes the expiry without flooding
the room. Starts are rate-limited (`max_typing_per_second`); a refresh of an
indicator that is on is never refused.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from backends import topics
from backends.events import TypingEvent
from backends.records import TypingEntry
from resolvers.errors import RateLimited

from .event_rates import spend_event_budget
from .rooms import membership, readable_room
from .services import Services, Viewer
from .stream_signals import Signal, hub_stream


async def start_typing(services: Services, viewer: Viewer, room_id: str) -> bool:
    services.require("typing")
    await membership(services, viewer, room_id)
    ttl = services.settings.typing_timeout.total_seconds()
    typing = services.backends.typing
    entry, started = await typing.start(room_id, viewer.user_id, ttl=ttl)
    if started:
        try:
            await spend_event_budget(services, viewer, "typing")
        except RateLimited:
            # Nobody was told it started: take it back without a word.
            await typing.stop(room_id, viewer.user_id)
            raise
        await _publish(services, TypingEvent(room_id, viewer.user_id, True, entry.expires_at))
    return True


async def stop_typing(services: Services, viewer: Viewer, room_id: str) -> bool:
    services.require("typing")
    await readable_room(services, viewer, room_id)
    await end_typing(services, room_id, viewer.user_id)
    return True


async def end_typing(services: Services, room_id: str, user_id: str) -> None:
    """Stop the user's indicator, if on, for a caller that has checked the
    room already (a sent message ends its sender's typing)."""
    if await services.backends.typing.stop(room_id, user_id):
        await _publish(services, TypingEvent(room_id, user_id, False))


async def typing_users(services: Services, viewer: Viewer, room_id: str) -> list[str]:
    services.require("typing")
    await readable_room(services, viewer, room_id)
    return await services.backends.typing.users(room_id)


async def authorize_typing_stream(services: Services, viewer: Viewer, room_id: str) -> None:
    """Raise the error the viewer gets for watching the room's typing, if any."""
    services.require("typing")
    await readable_room(services, viewer, room_id)


def typing_stream(services: Services, room_id: str) -> AsyncGenerator[TypingEvent | Signal, None]:
    """The room's typing changes, for any reader."""
    return hub_stream(
        services.backends.hub,
        topics.room_typing(room_id),
        lambda item: item if isinstance(item, TypingEvent) else None,
    )


async def expire_typing(services: Services) -> None:
    """Publish isTyping: false for every entry that ran out."""
    expired: list[TypingEntry] = await services.backends.typing.sweep()
    for entry in expired:
        await _publish(services, TypingEvent(entry.room_id, entry.user_id, False))


async def _publish(services: Services, event: TypingEvent) -> None:
    await services.backends.hub.publish(topics.room_typing(event.room_id), event)
