"""Pub/sub channels: separate from rooms, not stored, filtered on the server.

A private channel is visible only to its creator and the users granted
access; to everyone else it does not exist (NOT_FOUND).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from backends import topics
from backends.errors import Conflict
from backends.events import AccessEvent, MessageEvent
from backends.records import Channel, Message, MessageKind, utcnow
from resolvers.errors import BadUserInput, Forbidden, NotFound

from .posting import check_outgoing
from .services import Services, Viewer
from .stream_signals import Signal, hub_stream
from .validation import new_id, optional_text, required_text


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """Matches when every given part matches: event in `events`, author in
    `user_ids`, and each key of `metadata` equal in the message's metadata."""

    events: frozenset[str] | None = None
    user_ids: frozenset[str] | None = None
    metadata: dict[str, Any] | None = None

    def matches(self, message: Message) -> bool:
        if self.events is not None and message.event not in self.events:
            return False
        if self.user_ids is not None and message.user_id not in self.user_ids:
            return False
        if self.metadata:
            found = message.metadata if isinstance(message.metadata, dict) else {}
            return all(k in found and found[k] == v for k, v in self.metadata.items())
        return True


async def visible_channel(services: Services, viewer: Viewer, channel_id: str) -> Channel:
    services.require("channels")
    channel = await services.backends.channels.get(channel_id)
    if channel is None or not await _may_see(services, viewer, channel):
        raise NotFound(f"channel {channel_id!r} not found", channelId=channel_id)
    return channel


async def _may_see(services: Services, viewer: Viewer, channel: Channel) -> bool:
    return (
        not channel.is_private
        or channel.created_by == viewer.user_id
        or await services.backends.channels.is_granted(channel.id, viewer.user_id)
    )


async def list_channels(services: Services, viewer: Viewer) -> list[Channel]:
    services.require("channels")
    return [
        c
        for c in await services.backends.channels.list_all()
        if await _may_see(services, viewer, c)
    ]


async def create_channel(
    services: Services,
    viewer: Viewer,
    *,
    channel_id: str | None,
    name: str,
    description: str | None,
    is_private: bool,
) -> Channel:
    services.require("channels")
    channel = Channel(
        id=channel_id if channel_id is not None else new_id(),
        name=required_text(name, "name", max_length=200),
        created_by=viewer.user_id,
        is_private=is_private,
        description=optional_text(description, "description", max_length=2000),
    )
    try:
        await services.backends.channels.create(
            channel, max_channels_per_user=services.settings.max_channels_per_user
        )
    except Conflict as exc:
        raise BadUserInput(f"channel id {channel.id!r} is taken", argument="id") from exc
    return channel


async def _owned_channel(services: Services, viewer: Viewer, channel_id: str) -> Channel:
    channel = await visible_channel(services, viewer, channel_id)
    if channel.created_by != viewer.user_id:
        raise Forbidden("only the channel's creator may do this", channelId=channel_id)
    return channel


async def delete_channel(services: Services, viewer: Viewer, channel_id: str) -> bool:
    await _owned_channel(services, viewer, channel_id)
    deleted = await services.backends.channels.delete(channel_id)
    await revoke_channel_access(services, channel_id, None)
    return deleted


async def grant_channel(services: Services, viewer: Viewer, channel_id: str, user_id: str) -> bool:
    await _owned_channel(services, viewer, channel_id)
    await services.backends.channels.grant(channel_id, user_id)
    return True


async def revoke_channel(services: Services, viewer: Viewer, channel_id: str, user_id: str) -> bool:
    await _owned_channel(services, viewer, channel_id)
    revoked = await services.backends.channels.revoke(channel_id, user_id)
    if revoked:
        await revoke_channel_access(services, channel_id, user_id)
    return revoked


async def publish(
    services: Services,
    viewer: Viewer,
    *,
    channel_id: str,
    event: str | None,
    data: Any,
    metadata: Any,
) -> Message:
    await visible_channel(services, viewer, channel_id)
    event = await check_outgoing(services, viewer, event, data, metadata)
    message = Message(
        id=new_id(),
        kind=MessageKind.MESSAGE,
        user_id=viewer.user_id,
        timestamp=utcnow(),
        channel_id=channel_id,
        event=event,
        data=data,
        metadata=metadata,
    )
    await services.backends.hub.publish(topics.channel_messages(channel_id), MessageEvent(message))
    services.metrics.messages_broadcast.inc()
    return message


async def authorize_channel_stream(services: Services, viewer: Viewer, channel_id: str) -> None:
    """Raise the error the viewer gets for reading the channel live, if any."""
    await visible_channel(services, viewer, channel_id)


def channel_stream(
    services: Services, channel_id: str, message_filter: MessageFilter
) -> AsyncGenerator[Message | Signal, None]:
    """The channel's messages that pass the filter, for any reader."""

    def passing(item: object) -> Message | None:
        if isinstance(item, MessageEvent) and message_filter.matches(item.message):
            return item.message
        return None

    return hub_stream(services.backends.hub, topics.channel_messages(channel_id), passing)


async def revoke_channel_access(services: Services, channel_id: str, user_id: str | None) -> None:
    """Tell live readers of the channel that `user_id` (None: everyone) may
    have lost access: each re-checks (resolvers/subscriptions.py)."""
    await services.backends.hub.publish(
        topics.channel_messages(channel_id), AccessEvent(channel_id, user_id)
    )
