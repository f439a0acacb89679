"""Store a room message, then publish it: persisted before it is delivered."""

from __future__ import annotations

from typing import Any

from backends import topics
from backends.events import AccessEvent, MessageEvent
from backends.records import Message, NewMessage
from resolvers.errors import NotFound, RateLimited

from .call_sessions import remove_lost_members
from .incarnations import require_alive, with_own_history
from .services import Services, Viewer
from .validation import check_payload_size, optional_text


async def check_outgoing(
    services: Services, viewer: Viewer, event: str | None, data: Any, metadata: Any
) -> str | None:
    """Check a message's parts and size, then take a slot of the per-user
    message rate (last, so refused input does not use up the rate).

    Returns the event name, trimmed.
    """
    settings = services.settings
    event = optional_text(event, "event", max_length=128)
    check_payload_size(settings.max_message_size, "message", data, metadata, event)
    if not await services.backends.rates.acquire(
        f"messages:{viewer.user_id}", limit=settings.max_messages_per_second, per_seconds=1.0
    ):
        raise RateLimited(
            f"more than {settings.max_messages_per_second} messages per second",
            limit=settings.max_messages_per_second,
        )
    return event


async def post(services: Services, new: NewMessage, *, incarnation: str) -> tuple[Message, bool]:
    """Append to the history of the room's incarnation `incarnation`, then
    publish; a retried `client_message_id` returns the first message.

    The message counts as sent only if that incarnation is still the room's
    after the append: a `deleteRoom` that committed first makes it NOT_FOUND,
    and its history (with this message) is dropped, so a message reported as
    failed is never stored and one reported as sent was stored before the
    room was deleted.
    """
    room_id = new.room_id
    if room_id is None:
        raise ValueError("room messages need a room_id")
    backends = services.backends
    async with services.room_locks.hold(room_id):
        message, created = await with_own_history(
            services,
            room_id,
            incarnation,
            lambda: backends.messages.append(new, incarnation=incarnation),
        )
        try:
            await require_alive(services, room_id, incarnation)
        except NotFound:
            # Deleted (maybe made again) meanwhile: that incarnation is dead,
            # and its history with this message goes.
            await backends.messages.drop_room(room_id, incarnation=incarnation)
            raise
        if created and not backends.messages.publishes_on_append:
            await backends.hub.publish(topics.room_messages(room_id), MessageEvent(message))
    if created:
        services.metrics.messages_broadcast.inc()
    return message, created


async def revoke_access(services: Services, room_id: str, user_id: str | None) -> None:
    """Tell live readers of the room that `user_id` (None: everyone) may have
    lost access: each re-checks (resolvers/subscriptions.py). Every mutation
    that can narrow who reads a room calls this once it has committed."""
    event = AccessEvent(target_id=room_id, user_id=user_id)
    hub = services.backends.hub
    for topic in (
        topics.room_messages(room_id),
        topics.room_typing(room_id),
        topics.room_presence(room_id),
        topics.room_calls(room_id),
    ):
        await hub.publish(topic, event)
    await remove_lost_members(services, room_id, user_id)
